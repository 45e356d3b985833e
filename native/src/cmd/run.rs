//! `scdd run CONFIG.toml`: the whole pipeline (see [`crate::pipeline`]), or one dataset from
//! flags (`scdd run --data X.h5ad --label cell_type`).
use crate::distill::Method;
use crate::pipeline::{self, Config, DatasetEntry, RunOptions};
use anyhow::{bail, Result};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pipeline config (TOML; see configs/demo.toml). Without it, --data and --label
    /// describe a single dataset and every other setting has its default.
    pub config: Option<PathBuf>,
    /// Output directory (overrides the config's out_dir).
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Run no stage; render the report from the stages already complete.
    #[arg(long)]
    pub only_report: bool,
    /// A dataset to run without a config file (or added to the config's).
    #[arg(long, value_name = "H5AD", requires = "label")]
    pub data: Option<PathBuf>,
    /// Label column of --data.
    #[arg(long, value_name = "COLUMN", requires = "data")]
    pub label: Option<String>,
    /// Distillation methods (comma-separated; overrides [distill] methods).
    #[arg(long, value_delimiter = ',')]
    pub methods: Option<Vec<Method>>,
    /// Synthetic cells per class (comma-separated; overrides [distill] spc).
    #[arg(long, value_delimiter = ',')]
    pub spc: Option<Vec<usize>>,
    /// Distillation steps (overrides [distill] steps).
    #[arg(long)]
    pub steps: Option<usize>,
    /// auto | cpu | cuda | cuda:N (overrides the config's device).
    #[arg(long)]
    pub device: Option<String>,
    /// Seed (overrides the config's seed).
    #[arg(long)]
    pub seed: Option<u64>,
}

/// The config the arguments describe.
pub fn config(a: &Args) -> Result<Config> {
    let mut cfg = match &a.config {
        Some(p) => Config::load(p)?,
        None => {
            if a.data.is_none() {
                bail!("give a config file (scdd run configs/demo.toml) or --data FILE --label COLUMN");
            }
            toml::from_str::<Config>("")?
        }
    };
    if let (Some(data), Some(label)) = (&a.data, &a.label) {
        let name = data.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "data".into());
        let name: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect();
        cfg.datasets.push(DatasetEntry { name, path: data.clone(), label: label.clone(), layer: None, raw: false, gene_symbols: None });
    }
    if let Some(d) = &a.out_dir {
        cfg.out_dir = d.clone();
    }
    if let Some(m) = &a.methods {
        cfg.distill.methods = m.clone();
        if cfg.distill.main_method.is_some_and(|mm| !m.contains(&mm)) {
            cfg.distill.main_method = None;
        }
    }
    if let Some(s) = &a.spc {
        cfg.distill.spc = s.clone();
    }
    if let Some(s) = a.steps {
        cfg.distill.steps = s;
    }
    if let Some(d) = &a.device {
        cfg.device = d.clone();
    }
    if let Some(s) = a.seed {
        cfg.seed = s;
    }
    cfg.validate()?;
    Ok(cfg)
}

pub fn run(a: Args) -> Result<()> {
    let cfg = config(&a)?;
    pipeline::run(&cfg, &RunOptions { only_report: a.only_report })?;
    Ok(())
}
