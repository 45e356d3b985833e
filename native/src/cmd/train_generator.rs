//! `scdd train-generator` (being written).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`scdd train-generator` is not available in this build yet")
}
