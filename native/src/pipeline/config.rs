//! The pipeline's TOML configuration (see `configs/demo.toml`): plain serde structs whose
//! sections are the library's own parameter structs (`[foundation]` is a
//! [`FoundationConfig`], `[generator]` a [`GeneratorConfig`]), checked once by
//! [`Config::validate`] before any stage runs.
use crate::distill::{DistillParams, Init, Method};
use crate::error::{bail, Context, Result};
use crate::evaluate::EvalParams;
use std::collections::BTreeMap;
use crate::foundation::FoundationConfig;
use crate::generator::GeneratorConfig;
use crate::io::h5ad::MatrixSpec;
use crate::params::Check;
use crate::report::ReportSection;
use crate::split::SplitParams;
use crate::Error;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Relative paths are taken relative to the current directory.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[[dataset]]` tables: one per dataset.
    #[serde(rename = "dataset", default)]
    pub datasets: Vec<DatasetEntry>,
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// Seed of the split, the trainers, distillation and evaluation.
    #[serde(default)]
    pub seed: u64,
    /// auto | cpu | cuda | cuda:N (not part of any stage hash).
    #[serde(default = "default_device")]
    pub device: String,
    /// CPU threads for libtorch (default: libtorch's choice; not part of any stage hash).
    #[serde(default)]
    pub threads: Option<i32>,
    #[serde(default)]
    pub split: SplitSection,
    /// `scdd train-foundation`'s settings, by flag name (`epochs = 5`, `hidden = [256]`).
    #[serde(default)]
    pub foundation: FoundationConfig,
    /// `scdd train-generator`'s settings, by flag name.
    #[serde(default)]
    pub generator: GeneratorConfig,
    #[serde(default)]
    pub distill: DistillSection,
    #[serde(default)]
    pub evaluate: EvaluateSection,
    #[serde(default)]
    pub report: ReportSection,
}

fn default_out_dir() -> PathBuf {
    PathBuf::from("runs/scdd")
}
fn default_device() -> String {
    "auto".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetEntry {
    /// Short name used in the report and in file names (letters, digits, `-`, `_`, `.`).
    pub name: String,
    /// The `.h5ad` file (raw counts).
    pub path: PathBuf,
    /// The obs column with the class labels.
    pub label: String,
    /// Read `layers/NAME` instead of X.
    #[serde(default)]
    pub layer: Option<String>,
    /// Read `raw/X` instead of X.
    #[serde(default)]
    pub raw: bool,
    /// Gene names from this var column instead of the var index.
    #[serde(default)]
    pub gene_symbols: Option<String>,
}

impl DatasetEntry {
    pub fn matrix(&self) -> MatrixSpec {
        MatrixSpec { layer: self.layer.clone(), raw: self.raw, gene_symbols: self.gene_symbols.clone() }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitSection {
    pub test_fraction: f64,
    pub min_counts: f64,
    pub min_cells: u64,
}

impl Default for SplitSection {
    fn default() -> Self {
        SplitSection {
            test_fraction: SplitParams::DEFAULT_TEST_FRACTION,
            min_counts: SplitParams::DEFAULT_MIN_COUNTS,
            min_cells: SplitParams::DEFAULT_MIN_CELLS,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSection {
    /// Methods by `scdd distill --method` name.
    pub methods: Vec<Method>,
    /// Synthetic cells per class; each value is one run per method.
    pub spc: Vec<usize>,
    pub steps: usize,
    pub lr: Option<f64>,
    pub timestep: Option<u32>,
    pub real_batch: Option<usize>,
    /// Where codes start: "random" or "kmeans" (see `scdd distill --init`).
    pub init: Option<Init>,
    /// Weight of gene-space matching (see `scdd distill --gene-weight`).
    pub gene_weight: Option<f64>,
    /// Weight and ridge of the KIP term (see `scdd distill --kip-weight`, `--kip-ridge`).
    pub kip_weight: Option<f64>,
    pub kip_ridge: Option<f64>,
    /// The method shown in the embedding and heatmap plots (default: the first scDD method).
    pub main_method: Option<Method>,
}

impl Default for DistillSection {
    fn default() -> Self {
        DistillSection {
            methods: vec![Method::DmDc, Method::Dm, Method::Random, Method::ClassMean],
            spc: vec![1, 10],
            steps: DistillParams::default().steps,
            lr: None,
            timestep: None,
            real_batch: None,
            init: None,
            gene_weight: None,
            kip_weight: None,
            kip_ridge: None,
            main_method: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluateSection {
    /// Evaluators: default (foundation encoder + linear head), lr, mlp (on genes), and plugins
    /// by name or path (as `scdd evaluate --evaluators`).
    pub evaluators: Vec<String>,
    /// Each plugin's JSON config, by the name used in `evaluators`:
    /// `[evaluate.plugin_config.celltypist]` then its keys.
    pub plugin_config: BTreeMap<String, serde_json::Value>,
    /// Time limit of one plugin fit + predict, seconds.
    pub plugin_time_limit_s: u64,
    /// Repeats of each plugin evaluator (default: `repeats`).
    pub plugin_repeats: Option<usize>,
    /// Fresh initialisations of each evaluator per synthetic set.
    pub repeats: usize,
    /// SGD steps of the default evaluator's linear head.
    pub steps: usize,
    pub lr: f32,
    /// Also evaluate on the whole training set (the ceiling row).
    pub full_training_set: bool,
}

impl Default for EvaluateSection {
    fn default() -> Self {
        let e = EvalParams::default();
        EvaluateSection {
            evaluators: e.evaluators.iter().map(|e| e.name().to_string()).collect(),
            plugin_config: BTreeMap::new(),
            plugin_time_limit_s: e.plugin_time_limit_s,
            plugin_repeats: None,
            repeats: e.repeats,
            steps: e.steps,
            lr: e.lr,
            full_training_set: true,
        }
    }
}

impl Config {
    /// Parses and checks a config file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).with_context(|| format!("{}: cannot read", path.display()))?;
        Self::parse(&text).with_context(|| format!("config {}", path.display()))
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Config> {
        let cfg: Config = toml::from_str(text).map_err(|e| toml_error(text, &e))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Every check that can be made before any stage runs.
    pub fn validate(&self) -> Result<()> {
        if let Some(n) = self.threads {
            if !(1..=4096).contains(&n) {
                return Err(Error::param("threads", n, "must be between 1 and 4096"));
            }
        }
        if self.datasets.is_empty() {
            bail!("no [[dataset]] given: add at least one table with name, path and label");
        }
        let mut seen = std::collections::HashSet::new();
        for d in &self.datasets {
            if d.name.is_empty() || !d.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
                bail!("[[dataset]] name {:?}: use letters, digits, '-', '_' or '.'", d.name);
            }
            if !seen.insert(d.name.as_str()) {
                bail!("[[dataset]] name {:?} is used twice", d.name);
            }
            if d.raw && d.layer.is_some() {
                bail!("[[dataset]] {}: give either layer or raw = true, not both", d.name);
            }
            self.split_params(d).check().with_context(|| format!("[split] for dataset {}", d.name))?;
        }
        self.methods()?;
        if self.distill.spc.is_empty() {
            bail!("[distill] spc = []: give one or more values, each at least 1");
        }
        self.device.parse::<crate::nn::device::DeviceArg>().map_err(|e| Error::msg(format!("device: {e}")))?;
        self.main_method()?;
        for (section, seed) in [("foundation", self.foundation.seed), ("generator", self.generator.seed)] {
            if seed != 0 {
                bail!("[{section}] seed: set by the pipeline (the top-level seed); remove it");
            }
        }
        self.foundation_params().check().context("[foundation]")?;
        self.generator_params().check().context("[generator]")?;
        self.eval_params().and_then(|p| p.check()).context("[evaluate]")?;
        for &spc in &self.distill.spc {
            for &m in &self.methods()? {
                let p = self.distill_params(m, spc);
                p.clone().check().context("[distill]")?;
                if m.produces_codes() && p.timestep > self.generator.timesteps {
                    bail!(
                        "[distill] timestep = {} is beyond the generator's {} diffusion steps ([generator] timesteps)",
                        p.timestep,
                        self.generator.timesteps
                    );
                }
            }
        }
        Ok(())
    }

    /// `[distill] methods`, in config order, duplicates removed.
    pub fn methods(&self) -> Result<Vec<Method>> {
        if self.distill.methods.is_empty() {
            bail!("[distill] methods is empty");
        }
        let mut out = Vec::new();
        for &m in &self.distill.methods {
            if !out.contains(&m) {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// The method shown in the embedding and heatmap plots.
    pub fn main_method(&self) -> Result<Method> {
        let methods = self.methods()?;
        if let Some(m) = self.distill.main_method {
            if !methods.contains(&m) {
                bail!("[distill] main_method = {:?} is not among [distill] methods", m.name());
            }
            return Ok(m);
        }
        let pref = [Method::DmDc, Method::Dm, Method::Dc, Method::None];
        Ok(pref.iter().copied().find(|m| methods.contains(m)).unwrap_or(methods[0]))
    }

    pub fn split_params(&self, d: &DatasetEntry) -> SplitParams {
        SplitParams {
            label: d.label.clone(),
            test_fraction: self.split.test_fraction,
            seed: self.seed,
            min_counts: self.split.min_counts,
            min_cells: self.split.min_cells,
            matrix: d.matrix(),
        }
    }

    pub fn foundation_params(&self) -> FoundationConfig {
        FoundationConfig { seed: self.seed, ..self.foundation.clone() }
    }

    pub fn generator_params(&self) -> GeneratorConfig {
        GeneratorConfig { seed: self.seed, ..self.generator.clone() }
    }

    pub fn distill_params(&self, method: Method, spc: usize) -> DistillParams {
        let d = DistillParams::default();
        DistillParams {
            method,
            spc,
            steps: self.distill.steps,
            lr: self.distill.lr.unwrap_or(d.lr),
            timestep: self.distill.timestep.unwrap_or(d.timestep),
            real_batch: self.distill.real_batch.unwrap_or(d.real_batch),
            init: self.distill.init.unwrap_or(d.init),
            gene_weight: self.distill.gene_weight.unwrap_or(d.gene_weight),
            kip_weight: self.distill.kip_weight.unwrap_or(d.kip_weight),
            kip_ridge: self.distill.kip_ridge.unwrap_or(d.kip_ridge),
            seed: self.seed,
            ..d
        }
    }

    /// `[evaluate]` with its evaluators resolved (plugins found and their descriptors read, in
    /// worker subprocesses; see [`crate::evaluate::host::resolve`]).
    pub fn eval_params(&self) -> Result<EvalParams> {
        Ok(EvalParams {
            repeats: self.evaluate.repeats,
            seed: self.seed,
            steps: self.evaluate.steps,
            lr: self.evaluate.lr,
            evaluators: crate::evaluate::host::resolve(&self.evaluate.evaluators, &self.evaluate.plugin_config)?,
            plugin_time_limit_s: self.evaluate.plugin_time_limit_s,
            plugin_repeats: self.evaluate.plugin_repeats,
        })
    }
}

/// A TOML error as one line naming the section and the line: `[foundation] line 6: unknown
/// field `epochz`, expected one of ...`.
fn toml_error(text: &str, e: &toml::de::Error) -> Error {
    let Some(span) = e.span() else { return Error::msg(e.message()) };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let section = before
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| format!("{} ", l.rfind(']').map_or(l, |k| &l[..=k])))
        .unwrap_or_default();
    Error::msg(format!("{section}line {line}: {}", e.message().trim_end().replace('\n', " ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = "[[dataset]]\nname = \"a\"\npath = \"x.h5ad\"\nlabel = \"cell_type\"\n";

    #[test]
    fn config_defaults_and_errors() {
        let c = Config::parse(ONE).unwrap();
        assert_eq!(c.distill.spc, vec![1, 10]);
        assert_eq!(c.evaluate.repeats, 10);
        assert_eq!(c.main_method().unwrap(), Method::DmDc);
        let err = |extra: &str| format!("{:#}", Config::parse(&format!("{ONE}{extra}")).unwrap_err());
        assert!(err("[distill]\nstpes = 3\n").contains("stpes"));
        let e = err("[foundation]\nepochz = 3\n");
        assert!(e.contains("[foundation] line 6: unknown field `epochz`"), "{e}");
        assert!(format!("{:#}", Config::parse(&format!("threads = 0\n{ONE}")).unwrap_err()).contains("threads 0"));
        let e = err("[distill]\nmethods = [\"dn\"]\n");
        assert!(e.contains("dn"), "{e}");
        assert!(format!("{:#}", Config::parse("out_dir = \"x\"\n").unwrap_err()).contains("[[dataset]]"));
        assert!(err("[foundation]\nepochs = 0\n").contains("--epochs 0"));
        assert!(err("[foundation]\nout = \"x\"\n").contains("out"));
        assert!(err("[foundation]\nseed = 3\n").contains("set by the pipeline"));
        assert!(err("[generator]\nlr = -1\n").contains("--lr -1"));
        assert!(err("[evaluate]\nrepeats = 0\n").contains("--repeats 0"));
        assert!(err("[distill]\nlr = inf\n").contains("--lr inf"));
        assert!(err("[distill]\ntimestep = 60\n[generator]\ntimesteps = 50\n").contains("beyond the generator's 50"));
    }

    #[test]
    fn sections_are_the_commands_settings() {
        let c = Config::parse(&format!("{ONE}[foundation]\nepochs = 3\nhidden = [64, 32]\noutput = \"relu\"\n[generator]\nlatent_scale = 2.5\nreport_sampler = \"ddim:9\"\n")).unwrap();
        assert_eq!(c.foundation.max_epochs, 3);
        assert_eq!(c.foundation.hidden, vec![64, 32]);
        assert_eq!(c.foundation.output, scdd_core::graph::Activation::Relu);
        assert_eq!(c.generator.latent_scale.0, Some(2.5));
        assert_eq!(c.generator.report_sampler, crate::generator::Sampler::Ddim { steps: 9 });
    }
}
