//! The `kiln` command line: composes the frontends, the IR, the passes and the code generator.
//! Every error is printed as one line on stderr and exits with code 2.

mod commands;
mod compiled;
mod generation;
mod inputs;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// kiln: an ahead-of-time compiler and kernel autotuner for transformer graphs.
#[derive(Parser)]
#[command(name = "kiln", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model (compiled, or on the reference interpreter) and write each output as .npy.
    Run(commands::run::RunArgs),
    /// Compare the compiled model with the reference interpreter (exit 1 over tolerance).
    Check(commands::check::CheckArgs),
    /// Compile a model ahead of time: shared library of kernels, graph, weights, C header.
    Compile(commands::compile::CompileArgs),
    /// Time the compiled model: median and min latency, compile time, peak memory.
    Bench(commands::bench::BenchArgs),
    /// Print a model's inputs and outputs, op histogram and parameter count.
    Inspect(commands::inspect::InspectArgs),
    /// Optimise a model with the rewrite rules and write the graph in the IR's text form.
    Optimize(commands::optimize::OptimizeArgs),
    /// Show what the rewrite rules do to a model: rules fired, fusions, e-graph size, cost.
    Explain(commands::optimize::ExplainArgs),
    /// Generate text from a causal checkpoint: prompt, chat template, sampling, streaming.
    Generate(commands::generate::GenerateArgs),
    /// Encode text into token ids, or decode ids into text, with a checkpoint's tokenizer.
    Tokenize(commands::tokenize::TokenizeArgs),
    /// Work with rule files (`kiln rules check FILE`).
    Rules(commands::rules::RulesArgs),
    /// The plan cache of compiled models (`kiln cache stats`, `kiln cache clear`).
    Cache(commands::cache::CacheArgs),
}

fn main() -> ExitCode {
    // Output piped into a reader that stops early (`kiln inspect m | head`) ends the process
    // quietly, as for any Unix tool, instead of a failed write to stdout.
    // SAFETY: restoring the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version, and bare `kiln` (help on stderr, exit 2).
        Err(e)
            if !e.use_stderr()
                || e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand =>
        {
            e.exit()
        }
        Err(e) => {
            let text = e.to_string();
            let first = text
                .split("\n\n")
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            let first = first.strip_prefix("error: ").unwrap_or(&first);
            eprintln!("error: {first} (try `kiln --help`)");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Rules(args) => match commands::rules::rules(&args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Check(args) => match commands::check::check(&args) {
            Ok(code) => return code,
            Err(e) => Err(e),
        },
        Command::Run(args) => commands::run::run(&args),
        Command::Bench(args) => commands::bench::bench(&args),
        Command::Compile(args) => commands::compile::compile(&args),
        Command::Inspect(args) => commands::inspect::inspect(&args),
        Command::Generate(args) => commands::generate::generate(&args),
        Command::Tokenize(args) => commands::tokenize::tokenize(&args),
        Command::Optimize(args) => commands::optimize::optimize_cmd(&args),
        Command::Explain(args) => commands::optimize::explain(&args),
        Command::Cache(args) => commands::cache::cache(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Names from model files may hold line breaks; the error stays on one line.
            eprintln!("error: {}", e.replace('\n', "\\n").replace('\r', "\\r"));
            ExitCode::from(2)
        }
    }
}
