//! The command layer: one module per subcommand, each `flags → checked parameters → one
//! library call → print`. clap and anyhow live here (and in `main.rs`) and nowhere below.
pub mod bench;
pub mod decode;
pub mod distill;
pub mod evaluate;
pub mod generate;
pub mod import_scimilarity;
pub mod inspect;
pub mod plugin_worker;
pub mod plugins;
pub mod recipient_bundle;
pub mod run;
pub mod serve;
pub mod split;
pub mod train_foundation;
pub mod train_generator;

use crate::io::h5ad::MatrixSpec;
use crate::nn::device::DeviceArg;
use crate::train::TrainControl;
use anyhow::Result;
use std::path::Path;

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
    pub fn spec(&self) -> MatrixSpec {
        MatrixSpec { layer: self.layer.clone(), raw: self.raw, gene_symbols: self.gene_symbols.clone() }
    }
}

/// QC thresholds as flags (scanpy `filter_cells(min_counts)`, then `filter_genes(min_cells)`);
/// flattened into the commands that filter cells and genes.
#[derive(clap::Args, Debug, Clone)]
pub struct QcArgs {
    /// QC: drop cells with fewer total counts.
    #[arg(long, default_value_t = crate::split::SplitParams::DEFAULT_MIN_COUNTS)]
    pub min_counts: f64,
    /// QC: drop genes detected in fewer cells (after the cell filter).
    #[arg(long, default_value_t = crate::split::SplitParams::DEFAULT_MIN_CELLS)]
    pub min_cells: u64,
}

/// The run-control flags every long-running command shares (training and distillation).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// auto | cpu | cuda | cuda:N (auto takes CUDA when present).
    #[arg(long, default_value = "auto")]
    pub device: DeviceArg,
    /// Write a checkpoint (OUT.ckpt) every N optimisation steps (0 = never). It is removed
    /// when the run finishes.
    #[arg(long, value_name = "N")]
    pub checkpoint_every: Option<u64>,
    /// Continue from OUT.ckpt (same data and settings); ends with the result an uninterrupted
    /// run would have produced.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps in total, leaving a checkpoint for --resume (exit status 3).
    #[arg(long, value_name = "STEPS")]
    pub stop_after: Option<u64>,
    /// No progress bar or per-epoch lines.
    #[arg(long)]
    pub quiet: bool,
    /// CPU threads for libtorch (default: libtorch's choice, usually all cores).
    #[arg(long)]
    pub threads: Option<i32>,
}

impl RunArgs {
    /// The control for a run writing `out`; `default_every` applies without --checkpoint-every.
    pub fn control(&self, out: &Path, default_every: u64) -> Result<TrainControl> {
        Ok(TrainControl::for_output(
            out,
            self.device,
            self.checkpoint_every.unwrap_or(default_every),
            self.resume,
            self.stop_after,
            !self.quiet,
            self.threads,
        )?)
    }
}
