//! `scdd plugin-worker PLUGIN DIR` (hidden): the subprocess in which one plugin fit + predict
//! runs, started by the plugin host (see [`crate::evaluate::worker`]); `--probe PLUGIN` checks a
//! plugin's descriptor in isolation for discovery.
use anyhow::{anyhow, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only load the plugin, check its descriptor and print it as JSON (isolated discovery).
    #[arg(long)]
    pub probe: bool,
    pub plugin: PathBuf,
    #[arg(required_unless_present = "probe")]
    pub job_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> Result<()> {
    use crate::evaluate::worker::{probe_main, worker_main};
    match (&args.job_dir, args.probe) {
        (_, true) => {
            println!("{}", probe_main(&args.plugin).map_err(|e| anyhow!(e))?);
            Ok(())
        }
        (Some(dir), false) => worker_main(&args.plugin, dir).map_err(|e| anyhow!(e)),
        (None, false) => unreachable!("clap requires the job directory"),
    }
}
