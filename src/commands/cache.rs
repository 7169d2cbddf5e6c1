//! `kiln cache`: what the plan cache holds, and emptying it.

use clap::{Args, Subcommand};
use kiln::cache::PlanCache;

/// Arguments of `kiln cache`.
#[derive(Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Print where the cache is, how many compiled models it holds and their size.
    Stats,
    /// Remove every compiled model from the cache.
    Clear,
}

/// Runs `kiln cache stats|clear`.
pub fn cache(args: &CacheArgs) -> Result<(), String> {
    let cache =
        PlanCache::user().ok_or("no cache directory: neither XDG_CACHE_HOME nor HOME is set")?;
    match args.action {
        Action::Stats => {
            let s = cache.stats();
            println!(
                "{}: {} compiled models, {:.1} MiB",
                cache.dir().display(),
                s.entries,
                s.bytes as f64 / (1024.0 * 1024.0)
            );
        }
        Action::Clear => {
            let s = cache.clear()?;
            println!(
                "{}: removed {} compiled models, {:.1} MiB",
                cache.dir().display(),
                s.entries,
                s.bytes as f64 / (1024.0 * 1024.0)
            );
        }
    }
    Ok(())
}
