//! Text generation around a causal model's prefill and decode entry points, as `kiln generate`
//! does it: text in through the checkpoint's tokenizer and chat template, token ids through
//! the model in a padded batch, each new token chosen by a seeded sampler, text out streamed
//! as it is decoded, and each prompt stopped by its end tokens or stop strings.
//!
//! One module per job: [`model_files`] reads what the checkpoint says about its special tokens,
//! [`text`] owns the tokenizer and the streaming of decoded text, [`chat`] renders the chat
//! template, [`sampling`] picks tokens from logits, and [`session`] runs the decode loop.

pub mod chat;
pub mod model_files;
pub mod sampling;
pub mod session;
pub mod text;
