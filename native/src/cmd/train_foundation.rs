//! `scdd train-foundation TRAIN.h5ad -o fm.scddg [--label COL]`: fits the foundation
//! autoencoder and writes a foundation bundle (encoder + decoder) plus `fm.scddg.report.json`.
use crate::foundation::data::{report_path, train_to_file};
use crate::foundation::{parse_output, FoundationConfig};
use crate::params::Check;
use anyhow::Result;
use scdd_core::graph::Activation;
use std::path::PathBuf;

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
    /// Decoder output nonlinearity: softplus (non-negative, smooth), relu (exact zeros) or
    /// identity.
    #[arg(long, default_value = "softplus", value_parser = parse_output)]
    pub output: Activation,
    /// Extra loss weight of non-zero entries: (1 + w·[x > 0])·(x̂ − x)².
    #[arg(long, default_value_t = FoundationConfig::default().nonzero_weight)]
    pub nonzero_weight: f32,
    /// Fraction of each batch replaced by cells pulled towards their class mean (`u·x + (1−u)·μ`,
    /// u uniform), so the decoder reaches class and cluster means; needs --label
    #[arg(long, default_value_t = FoundationConfig::default().mix)]
    pub mix: f32,
    /// Decoded values below this become 0 (0: none). 0.1 suits CellTypist-style evaluators
    /// (per-gene z-scaling) but removes the small class means of shallow data
    #[arg(long, default_value_t = FoundationConfig::default().floor)]
    pub floor: f32,
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
    #[arg(long, default_value_t = FoundationConfig::default().min_cells)]
    pub min_cells: u64,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    #[command(flatten)]
    pub run: super::RunArgs,
}

impl Args {
    pub fn config(&self) -> FoundationConfig {
        FoundationConfig {
            hidden: self.hidden.clone(),
            latent_dim: self.latent_dim,
            input_dropout: self.input_dropout,
            dropout: self.dropout,
            output: self.output,
            nonzero_weight: self.nonzero_weight,
            mix: self.mix,
            floor: self.floor,
            lr: self.lr,
            weight_decay: self.weight_decay,
            batch_size: self.batch_size,
            max_epochs: self.epochs,
            patience: self.patience,
            val_fraction: self.val_fraction,
            lr_decay: self.lr_decay,
            seed: self.seed,
            min_cells: self.min_cells,
        }
    }
}

pub fn run(a: Args) -> Result<()> {
    let cfg = a.config().check()?;
    let ctl = a.run.control(&a.out, 500)?;
    let run = train_to_file(&a.data, &a.matrix.spec(), a.label.as_deref(), &a.out, &cfg, &ctl)?;
    println!("{}", run.report.summary());
    println!(
        "wrote {} ({} genes, latent {}) and {}",
        a.out.display(),
        run.bundle.genes.len(),
        run.bundle.spec.latent_dim,
        report_path(&a.out).display()
    );
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
