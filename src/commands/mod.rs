//! One module per subcommand.

pub mod generate;
pub mod inspect;
pub mod optimize;
pub mod rules;
pub mod run;
