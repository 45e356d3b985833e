//! `scdd train-foundation TRAIN.h5ad -o fm.scddg [--label COL]`: fits the foundation
//! autoencoder and writes a foundation bundle (encoder + decoder) plus `fm.scddg.report.json`.
use crate::foundation::{train_foundation, FoundationConfig, TrainData};
use crate::h5ad::{read_h5ad, ReadOptions};
use crate::train::{Outcome, RunArgs};
use anyhow::{bail, Context, Result};
use scdd_core::graph::Activation;
use scdd_core::preprocess;
use std::path::{Path, PathBuf};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum OutputArg {
    /// ln(1 + eˣ): non-negative, smooth (default).
    Softplus,
    /// max(0, x): non-negative with exact zeros.
    Relu,
    /// No output nonlinearity.
    Identity,
}

impl From<OutputArg> for Activation {
    fn from(o: OutputArg) -> Self {
        match o {
            OutputArg::Softplus => Activation::Softplus,
            OutputArg::Relu => Activation::Relu,
            OutputArg::Identity => Activation::Identity,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Training cells (.h5ad): raw counts or log-normalised values.
    pub data: PathBuf,
    /// Output foundation bundle (.scddg).
    #[arg(long, short = 'o')]
    pub out: PathBuf,
    /// obs column used to stratify the held-out part and for per-class numbers in the report.
    #[arg(long, value_name = "COLUMN")]
    pub label: Option<String>,
    /// Encoder hidden sizes, comma-separated (the decoder mirrors them).
    #[arg(long, value_delimiter = ',', default_values_t = FoundationConfig::default().hidden)]
    pub hidden: Vec<usize>,
    #[arg(long, default_value_t = FoundationConfig::default().latent_dim)]
    pub latent_dim: usize,
    /// Dropout on the encoder input.
    #[arg(long, default_value_t = FoundationConfig::default().input_dropout)]
    pub input_dropout: f32,
    /// Dropout before the other hidden blocks.
    #[arg(long, default_value_t = FoundationConfig::default().dropout)]
    pub dropout: f32,
    /// Decoder output nonlinearity.
    #[arg(long, value_enum, default_value = "softplus")]
    pub output: OutputArg,
    /// Extra loss weight of non-zero entries: (1 + w·[x > 0])·(x̂ − x)².
    #[arg(long, default_value_t = FoundationConfig::default().nonzero_weight)]
    pub nonzero_weight: f32,
    #[arg(long, default_value_t = FoundationConfig::default().lr)]
    pub lr: f64,
    #[arg(long, default_value_t = FoundationConfig::default().weight_decay)]
    pub weight_decay: f64,
    #[arg(long, default_value_t = FoundationConfig::default().batch_size)]
    pub batch_size: usize,
    /// Maximum number of epochs.
    #[arg(long, default_value_t = FoundationConfig::default().max_epochs)]
    pub epochs: usize,
    /// Early stopping: epochs without held-out improvement (0 = never stop early).
    #[arg(long, default_value_t = FoundationConfig::default().patience)]
    pub patience: usize,
    /// Learning-rate factor applied after patience/2 epochs without improvement.
    #[arg(long, default_value_t = FoundationConfig::default().lr_decay)]
    pub lr_decay: f64,
    /// Fraction of cells held out for early stopping and the report.
    #[arg(long, default_value_t = FoundationConfig::default().val_fraction)]
    pub val_fraction: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Drop genes detected in fewer cells from the model's gene list.
    #[arg(long, default_value_t = 3)]
    pub min_cells: u64,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    #[command(flatten)]
    pub run: RunArgs,
}

impl Args {
    pub fn config(&self) -> FoundationConfig {
        FoundationConfig {
            hidden: self.hidden.clone(),
            latent_dim: self.latent_dim,
            input_dropout: self.input_dropout,
            dropout: self.dropout,
            output: self.output.into(),
            nonzero_weight: self.nonzero_weight,
            lr: self.lr,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            max_epochs: self.epochs,
            patience: self.patience,
            val_fraction: self.val_fraction,
            lr_decay: self.lr_decay,
            seed: self.seed,
        }
    }
}

/// Reads a training file as log-normalised cells, drops genes seen in fewer than `min_cells`
/// cells, and resolves the label column.
pub fn load_training_data(path: &Path, opts: &ReadOptions, label: Option<&str>, min_cells: u64) -> Result<TrainData> {
    let mut ds = read_h5ad(path, opts)?;
    let field = format!("{}:{}", path.display(), opts.matrix);
    if ds.n_cells() == 0 {
        bail!("{field}: the training set is empty (0 cells)");
    }
    preprocess::check_non_negative(&ds.x, &field)?;
    preprocess::to_log_normalized(&mut ds.x, 1e4, &field)?;
    if min_cells > 0 {
        let keep: Vec<bool> = ds.x.col_nnz().iter().map(|&n| n >= min_cells).collect();
        if !keep.iter().any(|&k| k) {
            bail!("{field}: no gene is detected in at least {min_cells} cells (--min-cells)");
        }
        ds = ds.select_genes(&keep);
    }
    let labels = match label {
        Some(col) => {
            let l = ds.obs.labels(col).with_context(|| path.display().to_string())?;
            Some((col.to_string(), l.ids, l.classes))
        }
        None => None,
    };
    let name = path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(TrainData { name, x: ds.x, genes: ds.genes, labels })
}

/// `OUT.report.json`.
pub fn report_path(out: &Path) -> PathBuf {
    let mut s = out.as_os_str().to_owned();
    s.push(".report.json");
    PathBuf::from(s)
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.config();
    cfg.validate()?;
    let ctl = a.run.control(&a.out, 500)?;
    let opts = a.matrix.read_options();
    let data = load_training_data(&a.data, &opts, a.label.as_deref(), a.min_cells)?;
    if !a.run.quiet {
        eprintln!("{}: {} cells × {} genes (genes detected in >= {} cells)", a.data.display(), data.x.n_rows(), data.x.n_cols(), a.min_cells);
    }
    match train_foundation(&data, &cfg, &ctl)? {
        Outcome::Interrupted { step } => {
            eprintln!(
                "stopped after step {step}; checkpoint {}; continue with --resume",
                ctl.checkpoint.as_ref().unwrap().display()
            );
        }
        Outcome::Finished(crate::foundation::FoundationRun { bundle, report, .. }) => {
            crate::fsutil::write_atomic(&a.out, &bundle.to_bytes())?;
            let rp = report_path(&a.out);
            crate::fsutil::write_json(&rp, &serde_json::json!({
                "input": a.data.display().to_string(),
                "config": cfg,
                "report": report,
            }))?;
            if let Some(c) = &ctl.checkpoint {
                let _ = std::fs::remove_file(c);
            }
            println!("{}", report.summary());
            println!("wrote {} ({} genes, latent {}) and {}", a.out.display(), bundle.genes.len(), bundle.spec.latent_dim, rp.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, FromArgMatches};

    #[test]
    fn defaults_are_the_config_defaults() {
        let cmd = Args::augment_args(clap::Command::new("t"));
        let m = cmd.try_get_matches_from(["t", "d.h5ad", "-o", "o"]).unwrap();
        let a = Args::from_arg_matches(&m).unwrap();
        assert_eq!(a.config(), FoundationConfig::default());
        let cmd = Args::augment_args(clap::Command::new("t"));
        let m = cmd.try_get_matches_from(["t", "d.h5ad", "-o", "o", "--hidden", "64,32", "--output", "relu"]).unwrap();
        let c = Args::from_arg_matches(&m).unwrap().config();
        assert_eq!((c.hidden, c.output), (vec![64, 32], Activation::Relu));
    }
}
