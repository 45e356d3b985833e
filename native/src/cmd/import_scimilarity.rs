//! `scdd import-scimilarity DIR --out fm.scddg`: a SCimilarity model folder → foundation bundle.
//!
//! Reads `encoder.ckpt` and `decoder.ckpt` (PyTorch `torch.save` files, zip or legacy format,
//! read natively: no Python or libtorch needed), `layer_sizes.json`, `gene_order.tsv` and, if
//! present, `hyperparameters.json`; see [`crate::import::scimilarity`] for the module mapping.
use crate::io::fs;
use crate::import::scimilarity;
use anyhow::{Context, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// SCimilarity model folder: encoder.ckpt, decoder.ckpt, layer_sizes.json, gene_order.tsv.
    pub dir: PathBuf,
    /// Output foundation bundle (.scddg): encoder + decoder, genes in gene_order.tsv's order,
    /// inputs log1p of counts normalised to 1e4 per cell.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
}

pub fn run(a: Args) -> Result<()> {
    fs::check_output("--out", &a.out, &["scddg"], &[&a.dir])?;
    let bundle = scimilarity::import_dir(&a.dir)?;
    let bytes = bundle.to_bytes();
    fs::write_atomic(&a.out, &bytes).with_context(|| format!("writing {}", a.out.display()))?;
    let enc = bundle.spec.encoder.as_ref().map(|e| e.params().len()).unwrap_or(0);
    println!(
        "imported SCimilarity model {}: {} genes → latent {} ({} encoder + {} decoder tensors) → {} ({:.1} MB)",
        a.dir.display(),
        bundle.spec.n_genes,
        bundle.spec.latent_dim,
        enc,
        bundle.spec.decoder.params().len(),
        a.out.display(),
        bytes.len() as f64 / 1e6
    );
    if let Some(arch) = bundle.metadata.get("scimilarity.architecture") {
        println!("  {arch}");
    }
    Ok(())
}
