//! One module per subcommand.

pub mod bench;
pub mod cache;
pub mod check;
pub mod compile;
pub mod generate;
pub mod inspect;
pub mod optimize;
pub mod rules;
pub mod run;
pub mod tokenize;
