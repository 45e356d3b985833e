//! `scdd plugin-worker PLUGIN DIR` (hidden): the subprocess in which one plugin fit + predict
//! runs, started by the plugin host (see [`crate::evaluate::worker`]).
use anyhow::{anyhow, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub plugin: PathBuf,
    pub job_dir: PathBuf,
}

pub fn run(args: Args) -> Result<()> {
    crate::evaluate::worker::worker_main(&args.plugin, &args.job_dir).map_err(|e| anyhow!(e))
}
