//! `scdd evaluate`: train the default evaluator on a synthetic set, test on real cells
//! (see [`crate::evaluate`]).
use crate::evaluate::input::evaluate_files;
use crate::evaluate::{render, EvalParams};
use crate::io::fs;
use crate::params::Check;
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The training set: a latent-code file (.scdd, decoded with --model) or cells (.h5ad).
    pub synthetic: PathBuf,
    /// Real test cells (.h5ad, raw counts or log-normalised).
    #[arg(long)]
    pub test: PathBuf,
    /// Bundle with the foundation encoder (and the generator, to decode .scdd codes).
    #[arg(long, short = 'm')]
    pub model: PathBuf,
    /// Label column (default: the code file's, or the generator's).
    #[arg(long)]
    pub label: Option<String>,
    /// Fresh initialisations of the evaluator.
    #[arg(long, default_value_t = EvalParams::default().repeats)]
    pub repeats: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SGD steps of the linear head.
    #[arg(long, default_value_t = EvalParams::default().steps)]
    pub steps: usize,
    /// Learning rate of the linear head.
    #[arg(long, default_value_t = EvalParams::default().lr)]
    pub lr: f32,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let plan = EvalParams { repeats: a.repeats, seed: a.seed, steps: a.steps, lr: a.lr }.check()?;
    if let Some(p) = &a.json {
        fs::check_output("--json", p, &["json"], &[&a.synthetic, &a.test, &a.model])?;
    }
    let summary = evaluate_files(&a.synthetic, &a.test, &a.matrix.spec(), &a.model, a.label.as_deref(), &plan)?;
    println!("{}", render(&summary));
    if let Some(p) = &a.json {
        fs::write_json(p, &summary)?;
    }
    Ok(())
}
