//! `kiln rules check FILE`: prove each exact rule on random inputs, or show a counterexample.

use clap::{Args, Subcommand};
use kiln_passes::check::{check_rules, CheckOutcome};
use kiln_passes::rules::{builtin_rules, load_rule_file, Exactness};
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
    /// (exit 1). A rule the checker cannot instantiate (multi-pattern rules, variables feeding
    /// shape inputs, ...) is listed as unchecked with the reason; an unchecked exact rule also
    /// makes the command exit 1, unless --allow-unchecked is given. Approximate rules are listed
    /// as unchecked but never fail the run. Without FILE, checks the built-in rules. The last
    /// line counts the rules checked, wrong and unchecked.
    Check {
        /// The rule file to check.
        file: Option<PathBuf>,
        /// Random trials per rule.
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// Seed of the random shapes and values.
        #[arg(long, default_value_t = 0x5eed)]
        seed: u64,
        /// Exit 0 even if some exact rules could not be checked (they are still listed).
        #[arg(long)]
        allow_unchecked: bool,
    },
}

/// Runs `kiln rules ...`; `Ok(ExitCode)` is 1 when a rule is wrong, or when an exact rule is
/// unchecked without `--allow-unchecked`.
pub fn rules(args: &RulesArgs) -> Result<ExitCode, String> {
    let RulesCommand::Check {
        file,
        trials,
        seed,
        allow_unchecked,
    } = &args.command;
    let rules = match file {
        Some(f) => load_rule_file(f)?,
        None => builtin_rules(),
    };
    let (mut checked, mut wrong, mut unchecked_exact, mut unchecked_approx) = (0, 0, 0, 0);
    for (rule, (name, outcome)) in rules.iter().zip(check_rules(&rules, *seed, *trials)) {
        match outcome {
            CheckOutcome::Passed { trials } => {
                checked += 1;
                println!("ok       {name} ({trials} trials)");
            }
            CheckOutcome::Unchecked { reason } => {
                if rule.exactness == Exactness::Exact {
                    unchecked_exact += 1;
                } else {
                    unchecked_approx += 1;
                }
                println!("UNCHECKED {name} ({}): {reason}", rule.origin);
            }
            CheckOutcome::Failed { counterexample } => {
                checked += 1;
                wrong += 1;
                println!("WRONG    {name} ({})\n{counterexample}", rule.origin);
            }
        }
    }
    println!(
        "{} rules: {checked} checked, {wrong} wrong, {} unchecked ({unchecked_exact} exact, {unchecked_approx} approximate)",
        rules.len(),
        unchecked_exact + unchecked_approx
    );
    let fail = wrong > 0 || (unchecked_exact > 0 && !allow_unchecked);
    if unchecked_exact > 0 && !allow_unchecked {
        println!(
            "{unchecked_exact} exact rules are not known to be right; pass --allow-unchecked to accept them"
        );
    }
    Ok(if fail {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
