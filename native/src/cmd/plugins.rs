//! `scdd plugins [PATH ...]`: the evaluator plugins scdd finds, and why any was refused.
use crate::evaluate::plugins::{discover, render};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Plugin files to check besides those on SCDD_PLUGIN_PATH and in the built-in folder.
    pub paths: Vec<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> Result<()> {
    let worker = crate::evaluate::worker::self_worker().map_err(anyhow::Error::msg)?;
    let found = discover(&args.paths, Some(&worker));
    if args.json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else {
        print!("{}", render(&found));
    }
    Ok(())
}
