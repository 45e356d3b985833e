//! `scdd inspect FILE`: what a file holds, as a table or JSON (see [`crate::io::describe`]).
use crate::io::describe::describe;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// An AnnData file (.h5ad), a latent-code file (.scdd) or a generator bundle (.scddg).
    pub data: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
}

pub fn run(args: Args) -> Result<()> {
    print!("{}", describe(&args.data, &args.matrix.spec(), args.json)?);
    Ok(())
}
