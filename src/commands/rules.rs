//! `kiln rules check FILE`: prove each exact rule on random inputs, or show a counterexample.

use clap::{Args, Subcommand};
use kiln_passes::check::{check_rules, CheckOutcome};
use kiln_passes::rules::{builtin_rules, load_rule_file};
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `kiln rules`.
#[derive(Args)]
pub struct RulesArgs {
    #[command(subcommand)]
    command: RulesCommand,
}

#[derive(Subcommand)]
enum RulesCommand {
    /// Instantiate the left side of every exact rule on random shapes and values, evaluate both
    /// sides on the reference interpreter, and print a counterexample for any rule that is wrong
    /// (exit 1). Without FILE, checks the built-in rules.
    Check {
        /// The rule file to check.
        file: Option<PathBuf>,
        /// Random trials per rule.
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// Seed of the random shapes and values.
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
    },
}

/// Runs `kiln rules ...`; `Ok(ExitCode)` is 1 when a rule is wrong.
pub fn rules(args: &RulesArgs) -> Result<ExitCode, String> {
    let RulesCommand::Check { file, trials, seed } = &args.command;
    let rules = match file {
        Some(f) => load_rule_file(f)?,
        None => builtin_rules(),
    };
    let mut wrong = 0;
    for (name, outcome) in check_rules(&rules, *seed, *trials) {
        match outcome {
            CheckOutcome::Passed { trials } => println!("ok       {name} ({trials} trials)"),
            CheckOutcome::Skipped { reason } => println!("skipped  {name}: {reason}"),
            CheckOutcome::Failed { counterexample } => {
                wrong += 1;
                println!("WRONG    {name}\n{counterexample}");
            }
        }
    }
    println!("{} rules, {wrong} wrong", rules.len());
    Ok(if wrong > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
