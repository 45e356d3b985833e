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
