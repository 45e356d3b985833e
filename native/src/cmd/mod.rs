//! One module per subcommand: its clap `Args` and `run`.
pub mod bench;
pub mod decode;
pub mod distill;
pub mod evaluate;
pub mod generate;
pub mod import_scimilarity;
pub mod inspect;
pub mod run;
pub mod split;
pub mod train_foundation;
pub mod train_generator;

use crate::h5ad::{MatrixSource, ReadOptions};
use scdd_core::preprocess::QcParams;

/// Which matrix of an `.h5ad` a command reads and where its gene names come from; flattened
/// into every command that reads cells.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MatrixArgs {
    /// Read `layers/NAME` instead of X.
    #[arg(long, value_name = "NAME", conflicts_with = "raw")]
    pub layer: Option<String>,
    /// Read `raw/X` instead of X (gene names from raw/var).
    #[arg(long)]
    pub raw: bool,
    /// Take gene names from this var column instead of the var index.
    #[arg(long, value_name = "COLUMN")]
    pub gene_symbols: Option<String>,
}

impl MatrixArgs {
    pub fn source(&self) -> MatrixSource {
        MatrixSource::from_flags(self.layer.as_deref(), self.raw)
    }

    pub fn read_options(&self) -> ReadOptions {
        ReadOptions { matrix: self.source(), gene_symbols: self.gene_symbols.clone() }
    }
}

/// QC thresholds as flags (scanpy `filter_cells(min_counts)`, then `filter_genes(min_cells)`);
/// flattened into the commands that filter cells and genes.
#[derive(clap::Args, Debug, Clone)]
pub struct QcArgs {
    /// QC: drop cells with fewer total counts.
    #[arg(long, default_value_t = 10.0)]
    pub min_counts: f64,
    /// QC: drop genes detected in fewer cells (after the cell filter).
    #[arg(long, default_value_t = 3)]
    pub min_cells: u64,
}

impl QcArgs {
    /// The thresholds, refusing a negative or NaN `--min-counts`.
    pub fn params(&self) -> anyhow::Result<QcParams> {
        if self.min_counts.is_nan() || self.min_counts < 0.0 {
            anyhow::bail!("--min-counts {}: must be >= 0", self.min_counts);
        }
        Ok(QcParams { min_counts: self.min_counts, min_cells: self.min_cells })
    }
}
