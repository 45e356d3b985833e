//! `scdd decode`: latent codes → synthetic cells (.h5ad), with the CPU reference generator
//! (see [`crate::synthetic`]).
use crate::io::artifacts::{load_bundle, load_codes};
use crate::io::fs::check_output;
use crate::synthetic::decode_to_file;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Latent-code file (.scdd).
    pub codes: PathBuf,
    /// Generator bundle (.scddg) the codes were distilled with (the encoder may be absent).
    #[arg(long, short = 'g')]
    pub generator: PathBuf,
    /// Output .h5ad (log-normalised synthetic cells).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    check_output("--out", &a.out, &["h5ad"], &[&a.codes, &a.generator])?;
    let codes = load_codes(&a.codes)?;
    let bundle = load_bundle(&a.generator)?;
    let ds = decode_to_file(&codes, &a.codes, &bundle, &a.out)?;
    println!(
        "decoded {} codes ({} classes, SPC {}) into {} × {} cells → {}",
        codes.n_codes(),
        codes.classes.len(),
        codes.spc,
        ds.n_cells(),
        ds.n_genes(),
        a.out.display()
    );
    Ok(())
}
