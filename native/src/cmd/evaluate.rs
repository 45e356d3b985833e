//! `scdd evaluate`: train the built-in evaluators on a synthetic set, test on real cells
//! (see [`crate::evaluate`]).
use crate::evaluate::input::evaluate_files;
use crate::evaluate::host::{parse_config_arg, resolve};
use crate::evaluate::{render, EvalParams};
use std::collections::BTreeMap;
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
    /// The generator bundle: decodes .scdd codes, and the default evaluator needs its foundation
    /// encoder. Optional for cells (.h5ad) scored by gene-space evaluators only (lr, mlp,
    /// plugins): the genes are then the training file's.
    #[arg(long, short = 'm')]
    pub model: Option<PathBuf>,
    /// Label column (default: the code file's, or the generator's).
    #[arg(long)]
    pub label: Option<String>,
    /// Evaluators, comma-separated: default (foundation encoder + linear head, the paper's),
    /// lr (logistic regression on genes), mlp (one hidden layer on genes), and plugins by name
    /// (found on SCDD_PLUGIN_PATH or next to scdd; see `scdd plugins`) or by path.
    #[arg(long, value_delimiter = ',', default_values_t = EvalParams::default().evaluators.iter().map(|e| e.name().to_string()).collect::<Vec<_>>())]
    pub evaluators: Vec<String>,
    /// Fresh initialisations of each evaluator (lr, being convex, runs once).
    #[arg(long, default_value_t = EvalParams::default().repeats)]
    pub repeats: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// SGD steps of the default evaluator's linear head.
    #[arg(long, default_value_t = EvalParams::default().steps)]
    pub steps: usize,
    /// Learning rate of the default evaluator's linear head.
    #[arg(long, default_value_t = EvalParams::default().lr)]
    pub lr: f32,
    /// A plugin's JSON config: NAME=JSON or NAME=@FILE.json (repeatable; NAME as in --evaluators).
    #[arg(long = "plugin-config", value_name = "NAME=JSON")]
    pub plugin_config: Vec<String>,
    /// Time limit of one plugin fit + predict, seconds (the worker is stopped after it).
    #[arg(long = "plugin-time-limit", default_value_t = EvalParams::default().plugin_time_limit_s)]
    pub plugin_time_limit: u64,
    /// Repeats of each plugin evaluator [default: --repeats].
    #[arg(long = "plugin-repeats")]
    pub plugin_repeats: Option<usize>,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
    /// Also write the results as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<()> {
    let configs = a.plugin_config.iter().map(|c| parse_config_arg(c)).collect::<crate::error::Result<BTreeMap<_, _>>>()?;
    let evaluators = resolve(&a.evaluators, &configs)?;
    let plan = EvalParams {
        repeats: a.repeats,
        seed: a.seed,
        steps: a.steps,
        lr: a.lr,
        evaluators,
        plugin_time_limit_s: a.plugin_time_limit,
        plugin_repeats: a.plugin_repeats,
    }
    .check()?;
    if let Some(p) = &a.json {
        let mut inputs = vec![a.synthetic.as_path(), a.test.as_path()];
        inputs.extend(a.model.as_deref());
        fs::check_output("--json", p, &["json"], &inputs)?;
    }
    let summary = evaluate_files(&a.synthetic, &a.test, &a.matrix.spec(), a.model.as_deref(), a.label.as_deref(), &plan)?;
    println!("{}", render(&summary));
    if let Some(p) = &a.json {
        fs::write_json(p, &summary)?;
    }
    Ok(())
}
