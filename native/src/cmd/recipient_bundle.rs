//! `scdd recipient-bundle`: the decoder-only copy of a generator bundle that recipients of
//! latent codes download (see [`crate::synthetic::recipient_bundle`]).
use crate::io::artifacts::{load_bundle, load_codes};
use crate::io::fs::check_output;
use crate::synthetic::recipient_bundle;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The generator bundle (.scddg) the codes were distilled with.
    pub bundle: PathBuf,
    /// Output .scddg: no encoder, no task head.
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// Store the weights in half precision (half the bytes; decoded values move by f16
    /// rounding — pass --check to measure by how much).
    #[arg(long)]
    pub f16: bool,
    /// A code file to decode with both bundles, reporting the largest difference.
    #[arg(long, value_name = "CODES")]
    pub check: Option<PathBuf>,
    /// Print JSON instead of a sentence.
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<()> {
    let mut inputs = vec![a.bundle.as_path()];
    if let Some(c) = &a.check {
        inputs.push(c.as_path());
    }
    check_output("--out", &a.out, &["scddg"], &inputs)?;
    let bundle = load_bundle(&a.bundle)?;
    let codes = a.check.as_ref().map(|p| load_codes(p)).transpose()?;
    let r = recipient_bundle(&bundle, a.f16, codes.as_ref().zip(a.check.as_deref()), &a.out)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let mb = |b: usize| b as f64 / 1e6;
    println!(
        "{} → {}: {:.2} MB → {:.2} MB ({} tensors left out{}); codes of generator {} decode with it{}",
        a.bundle.display(),
        a.out.display(),
        mb(r.bytes_before),
        mb(r.bytes_after),
        r.tensors_dropped,
        if a.f16 { ", weights in f16" } else { "" },
        &r.f16_of.as_deref().unwrap_or(&r.generator_id)[..12],
        r.max_abs_diff.map(|d| format!(" (checked: largest difference {d:.2e})")).unwrap_or_default()
    );
    Ok(())
}
