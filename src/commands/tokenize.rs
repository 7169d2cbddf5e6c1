//! `kiln tokenize`: the checkpoint's tokenizer on its own — text to ids, or ids to text — so
//! that what `kiln generate` feeds the model can be seen and compared with other tools.

use crate::generation::text::TextTokenizer;
use clap::Args;
use std::path::PathBuf;

/// Arguments of `kiln tokenize`.
#[derive(Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["text", "decode"]))]
pub struct TokenizeArgs {
    /// The checkpoint directory (or `kiln compile` output) holding tokenizer.json.
    checkpoint: PathBuf,
    /// The text to encode (it may begin with `-`); prints its ids, comma-separated.
    #[arg(allow_hyphen_values = true)]
    text: Option<String>,
    /// With TEXT: apply the tokenizer's post-processor (a BOS token, for models that add one).
    #[arg(long, requires = "text")]
    add_special: bool,
    /// Comma-separated ids to decode; prints their text.
    #[arg(long, value_delimiter = ',', allow_negative_numbers = true)]
    decode: Option<Vec<i64>>,
    /// With --decode: leave out special tokens (`<|im_end|>`, `</s>`, ...).
    #[arg(long, requires = "decode")]
    skip_special: bool,
}

/// Encodes or decodes and prints the result.
pub fn tokenize(args: &TokenizeArgs) -> Result<(), String> {
    let tokenizer = TextTokenizer::require(&args.checkpoint, "kiln tokenize")?;
    match (&args.text, &args.decode) {
        (Some(text), _) => {
            let ids = tokenizer.encode(text, args.add_special)?;
            let ids: Vec<String> = ids.iter().map(i64::to_string).collect();
            println!("{}", ids.join(","));
        }
        (None, Some(ids)) => {
            let vocab = tokenizer.vocab_size() as i64;
            if let Some(bad) = ids.iter().find(|&&id| id < 0 || id >= vocab) {
                return Err(format!(
                    "--decode: token {bad} is outside {}'s vocabulary (0..{vocab})",
                    tokenizer.path().display()
                ));
            }
            println!("{}", tokenizer.decode(ids, args.skip_special)?);
        }
        (None, None) => unreachable!("clap requires TEXT or --decode"),
    }
    Ok(())
}
