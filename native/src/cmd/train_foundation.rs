//! `scdd train-foundation` (being written).

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`scdd train-foundation` is not available in this build yet")
}
