//! `scdd split DATA.h5ad --label COL --out DIR`: QC filter, then a stratified train/test split
//! (see [`crate::split`]).
use crate::split::{self, SplitParams};
use crate::params::Check;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The AnnData file (raw counts in X, a layer or raw/X).
    pub data: PathBuf,
    /// The obs column holding the cell-type labels (categorical, or text).
    #[arg(long, value_name = "COLUMN")]
    pub label: String,
    /// Output directory for train.h5ad, test.h5ad and split.json.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Fraction of each class that goes to the test set.
    #[arg(long, default_value_t = SplitParams::DEFAULT_TEST_FRACTION)]
    pub test_fraction: f64,
    /// Seed of the shuffle within each class.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub qc: super::QcArgs,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
}

impl Args {
    pub fn params(&self) -> SplitParams {
        SplitParams {
            label: self.label.clone(),
            test_fraction: self.test_fraction,
            seed: self.seed,
            min_counts: self.qc.min_counts,
            min_cells: self.qc.min_cells,
            matrix: self.matrix.spec(),
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    let s = split::split(&args.data, &args.out, &args.params().check()?)?;
    println!(
        "{}: {} train + {} test cells, {} classes, {} of {} genes after QC -> {}",
        s.input,
        s.n_train,
        s.n_test,
        s.classes.len(),
        s.qc.report.genes_kept,
        s.qc.report.genes_in,
        args.out.display()
    );
    for d in &s.dropped_classes {
        println!("  dropped class {:?} ({} cells after QC; a class needs at least 2)", d.name, d.cells);
    }
    if s.unlabelled > 0 {
        println!("  dropped {} cells without a label", s.unlabelled);
    }
    Ok(())
}
