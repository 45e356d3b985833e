//! `scdd run`: the whole pipeline from a config file — split → train-foundation →
//! train-generator → distill (each method × SPC) → decode → evaluate (plus the full training
//! set as the ceiling) → report.
//!
//! # Content addressing
//!
//! Every stage writes into `out_dir/stages/<stage>-<hash12>/`, where the hash is SHA-256 over
//! the stage name, the scdd version, its parameters (canonical JSON, keys sorted) and the
//! content hashes of its input files. File hashes are computed once and memoised by
//! path + size + mtime in `out_dir/stages/hashes.json`. A stage is complete when its
//! `done.json` is present (written last, atomically); a complete stage is reused, an incomplete
//! directory is cleared and run again. Since a stage's inputs are the previous stages' output
//! files, changing a parameter re-runs exactly the stages downstream of it whose inputs change.
//!
//! The report is not a stage: it is rendered on every run (and alone with `--only-report`)
//! from the stage outputs into `out_dir/report/`.
use crate::cmd;
use crate::cmd::decode::load_bundle;
use crate::distill::Method;
use crate::evaluation::{evaluate_default, EvalSummary, TestSet};
use crate::h5ad::ReadOptions;
use crate::{fsutil, h5ad, prep, report};
use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, ValueEnum};
use ndarray::Array2;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::evaluate::SgdParams;
use scdd_core::reference::CpuModel;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

// ------------------------------------------------------------------------------------------
// Configuration
// ------------------------------------------------------------------------------------------

/// The pipeline's TOML configuration (see `configs/demo.toml`). Relative paths are taken
/// relative to the current directory.
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
    #[serde(default)]
    pub split: SplitSection,
    /// Options of `scdd train-foundation`, passed through as its flags (`max_epochs = 5` →
    /// `--max-epochs 5`).
    #[serde(default)]
    pub foundation: toml::Table,
    /// Options of `scdd train-generator`, passed through likewise.
    #[serde(default)]
    pub generator: toml::Table,
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

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitSection {
    pub test_fraction: f64,
    pub min_counts: f64,
    pub min_cells: u64,
}

impl Default for SplitSection {
    fn default() -> Self {
        SplitSection { test_fraction: 0.3, min_counts: 10.0, min_cells: 3 }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistillSection {
    /// Methods as `scdd distill --method` names: dm+dc, dm, dc, none, random, class-mean,
    /// dm-data, dc-data.
    pub methods: Vec<String>,
    /// Synthetic cells per class; each value is one run per method.
    pub spc: Vec<usize>,
    pub steps: usize,
    pub lr: Option<f64>,
    pub timestep: Option<u32>,
    pub real_batch: Option<usize>,
    /// The method shown in the embedding and heatmap plots (default: the first scDD method).
    pub main_method: Option<String>,
}

impl Default for DistillSection {
    fn default() -> Self {
        DistillSection {
            methods: vec!["dm+dc".into(), "dm".into(), "random".into(), "class-mean".into()],
            spc: vec![1, 10],
            steps: crate::distill::DistillConfig::default().steps,
            lr: None,
            timestep: None,
            real_batch: None,
            main_method: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvaluateSection {
    /// Fresh initialisations of the evaluator per synthetic set.
    pub repeats: usize,
    /// SGD steps of the linear head.
    pub steps: usize,
    pub lr: f32,
    /// Also evaluate on the whole training set (the ceiling row).
    pub full_training_set: bool,
}

impl Default for EvaluateSection {
    fn default() -> Self {
        EvaluateSection { repeats: 10, steps: SgdParams::default().steps, lr: SgdParams::default().lr, full_training_set: true }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReportSection {
    /// Marker genes per class in the heatmap.
    pub genes_per_class: usize,
    /// At most this many real test cells in the embedding plot (evenly subsampled).
    pub max_embedding_cells: usize,
}

impl Default for ReportSection {
    fn default() -> Self {
        ReportSection { genes_per_class: 5, max_embedding_cells: 4000 }
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
        let cfg: Config = toml::from_str(text).map_err(|e| anyhow!("{}", e.to_string().trim_end()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
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
        }
        self.methods()?;
        if self.distill.spc.is_empty() || self.distill.spc.contains(&0) {
            bail!("[distill] spc = {:?}: give one or more values, each at least 1", self.distill.spc);
        }
        if self.evaluate.repeats == 0 {
            bail!("[evaluate] repeats must be at least 1");
        }
        if !(self.split.test_fraction > 0.0 && self.split.test_fraction < 1.0) {
            bail!("[split] test_fraction = {}: must be between 0 and 1", self.split.test_fraction);
        }
        self.device.parse::<crate::device::DeviceArg>().map_err(|e| anyhow!("device: {e}"))?;
        self.main_method()?;
        // The pass-through tables must be flags the trainers know: check before any work.
        let f = table_to_flags("foundation", &self.foundation, FOUNDATION_RESERVED)?;
        let argv: Vec<String> = ["x.h5ad", "--out", "x.scddg"].iter().map(|s| s.to_string()).chain(f).collect();
        parse_args::<cmd::train_foundation::Args>("foundation", &argv)?;
        let g = table_to_flags("generator", &self.generator, GENERATOR_RESERVED)?;
        let argv: Vec<String> = ["x.h5ad", "--foundation", "f.scddg", "--label", "l", "--out", "x.scddg"]
            .iter()
            .map(|s| s.to_string())
            .chain(g)
            .collect();
        parse_args::<cmd::train_generator::Args>("generator", &argv)?;
        Ok(())
    }

    /// `[distill] methods` as methods (in config order, duplicates removed).
    pub fn methods(&self) -> Result<Vec<Method>> {
        if self.distill.methods.is_empty() {
            bail!("[distill] methods is empty");
        }
        let mut out = Vec::new();
        for m in &self.distill.methods {
            let method = parse_method(m).context("[distill] methods")?;
            if !out.contains(&method) {
                out.push(method);
            }
        }
        Ok(out)
    }

    /// The method shown in the embedding and heatmap plots.
    pub fn main_method(&self) -> Result<Method> {
        let methods = self.methods()?;
        if let Some(m) = &self.distill.main_method {
            let m = parse_method(m).context("[distill] main_method")?;
            if !methods.contains(&m) {
                bail!("[distill] main_method = {:?} is not among [distill] methods", m.name());
            }
            return Ok(m);
        }
        let pref = [Method::DmDc, Method::Dm, Method::Dc, Method::None];
        Ok(pref.iter().copied().find(|m| methods.contains(m)).unwrap_or(methods[0]))
    }
}

/// Flags the pipeline sets itself (not allowed in `[foundation]` / `[generator]`).
const FOUNDATION_RESERVED: &[&str] = &["out", "seed", "device", "label"];
const GENERATOR_RESERVED: &[&str] = &["out", "seed", "device", "foundation", "label"];

fn parse_method(s: &str) -> Result<Method> {
    Method::from_str(s, true).map_err(|_| {
        let names: Vec<&str> = Method::all().iter().map(|m| m.name()).collect();
        anyhow!("unknown method {s:?}; choose from {}", names.join(", "))
    })
}

/// Turns a pass-through table into command-line flags: `key = v` → `--key v` (underscores
/// become dashes), `true` → `--key`, `false` → nothing, arrays → comma-joined.
pub fn table_to_flags(section: &str, table: &toml::Table, reserved: &[&str]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for (k, v) in table {
        let flag = k.replace('_', "-");
        if reserved.contains(&flag.as_str()) {
            bail!("[{section}] {k}: set by the pipeline, remove it from the config");
        }
        let scalar = |v: &toml::Value| -> Result<String> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => bail!("[{section}] {k}: unsupported value {other}"),
            })
        };
        match v {
            toml::Value::Boolean(true) => out.push(format!("--{flag}")),
            toml::Value::Boolean(false) => {}
            toml::Value::Array(a) => {
                let parts: Result<Vec<String>> = a.iter().map(scalar).collect();
                out.push(format!("--{flag}={}", parts?.join(",")));
            }
            v => out.push(format!("--{flag}={}", scalar(v)?)),
        }
    }
    Ok(out)
}

/// Parses `argv` as the flags of subcommand `Args` type `A`, naming the config section on error.
fn parse_args<A: clap::Args>(section: &str, argv: &[String]) -> Result<A> {
    #[derive(Parser)]
    #[command(no_binary_name = true)]
    struct Wrap<A: clap::Args> {
        #[command(flatten)]
        args: A,
    }
    match Wrap::<A>::try_parse_from(argv) {
        Ok(w) => Ok(w.args),
        Err(e) => {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("").trim_start_matches("error: ").to_string();
            let command = match section {
                "foundation" => "train-foundation",
                "generator" => "train-generator",
                s => s,
            };
            bail!("[{section}]: {first} (the keys of this section are the flags of `scdd {command}`; see `scdd {command} --help`)")
        }
    }
}

// ------------------------------------------------------------------------------------------
// Content-addressed stages
// ------------------------------------------------------------------------------------------

/// One stage of this run: ran now, or reused from an earlier run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StageRecord {
    /// `split`, `foundation`, `generator`, `test-features`, `distill`, `decode`, `evaluate`.
    pub kind: String,
    /// What it was, for people: `pancreas: distill dm+dc SPC 1`.
    pub label: String,
    pub dataset: String,
    pub hash: String,
    pub dir: PathBuf,
    pub ran: bool,
    /// Wall time of the run that produced the outputs (this one, or the earlier one).
    pub seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
struct MemoEntry {
    size: u64,
    mtime_ns: u64,
    sha256: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct DoneMarker {
    kind: String,
    label: String,
    hash: String,
    scdd_version: String,
    params: Value,
    inputs: Vec<InputRef>,
    finished: String,
    seconds: f64,
    device: String,
}

/// An input file of a stage with its content hash.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InputRef {
    pub path: String,
    pub sha256: String,
}

/// The stage directory tree under `out_dir/stages`.
pub struct Store {
    root: PathBuf,
    memo: BTreeMap<String, MemoEntry>,
    /// Refuse to run anything (`--only-report`).
    pub read_only: bool,
    pub device: String,
    pub records: Vec<StageRecord>,
}

impl Store {
    pub fn open(root: &Path, read_only: bool, device: &str) -> Result<Store> {
        std::fs::create_dir_all(root).with_context(|| format!("{}: cannot create directory", root.display()))?;
        let memo_path = root.join("hashes.json");
        let memo = match std::fs::read(&memo_path) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_default(), // a damaged memo is only a cache
            Err(_) => BTreeMap::new(),
        };
        Ok(Store { root: root.to_path_buf(), memo, read_only, device: device.into(), records: vec![] })
    }

    /// SHA-256 of a file's content, memoised by path + size + mtime.
    pub fn file_hash(&mut self, path: &Path) -> Result<String> {
        let key = std::fs::canonicalize(path)
            .with_context(|| format!("{}: cannot open", path.display()))?
            .display()
            .to_string();
        let meta = std::fs::metadata(path).with_context(|| format!("{}: cannot stat", path.display()))?;
        let mtime_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        if let Some(e) = self.memo.get(&key) {
            if e.size == meta.len() && e.mtime_ns == mtime_ns {
                return Ok(e.sha256.clone());
            }
        }
        let mut f = std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).with_context(|| format!("{}: reading", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let sha = hex(&h.finalize());
        self.memo.insert(key, MemoEntry { size: meta.len(), mtime_ns, sha256: sha.clone() });
        fsutil::write_json(&self.root.join("hashes.json"), &self.memo)?;
        Ok(sha)
    }

    /// The stage's hash: name, version, parameters and input contents.
    pub fn stage_hash(&mut self, kind: &str, params: &Value, inputs: &[PathBuf]) -> Result<(String, Vec<InputRef>)> {
        let mut refs = Vec::new();
        for p in inputs {
            refs.push(InputRef { path: p.display().to_string(), sha256: self.file_hash(p)? });
        }
        let key = json!({
            "stage": kind,
            "scdd_version": scdd_core::SCDD_VERSION,
            "params": params,
            "inputs": refs.iter().map(|r| r.sha256.clone()).collect::<Vec<_>>(),
        });
        Ok((hex(&Sha256::digest(canonical_json(&key).as_bytes())), refs))
    }

    /// Runs `run(dir)` unless the stage with this hash is complete; returns its directory.
    pub fn stage(
        &mut self,
        kind: &str,
        dataset: &str,
        label: &str,
        params: Value,
        inputs: &[PathBuf],
        run: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let (hash, refs) = self.stage_hash(kind, &params, inputs)?;
        let dir = self.root.join(format!("{kind}-{}", &hash[..12]));
        let marker = dir.join("done.json");
        let reused = marker.exists();
        let seconds = if reused {
            println!("  reused  {label}  [{}]", short(&dir));
            std::fs::read(&marker)
                .ok()
                .and_then(|b| serde_json::from_slice::<DoneMarker>(&b).ok())
                .map(|m| m.seconds)
                .unwrap_or(f64::NAN)
        } else {
            if self.read_only {
                bail!("{label}: stage {} has not run yet (--only-report runs nothing; run without it first)", short(&dir));
            }
            println!("▶ {label}  [{}]", short(&dir));
            if dir.exists() {
                std::fs::remove_dir_all(&dir).with_context(|| format!("{}: cannot clear an incomplete stage", dir.display()))?;
            }
            std::fs::create_dir_all(&dir).with_context(|| format!("{}: cannot create directory", dir.display()))?;
            let t0 = Instant::now();
            run(&dir).with_context(|| label.to_string())?;
            let seconds = t0.elapsed().as_secs_f64();
            let done = DoneMarker {
                kind: kind.into(),
                label: label.into(),
                hash: hash.clone(),
                scdd_version: scdd_core::SCDD_VERSION.into(),
                params,
                inputs: refs,
                finished: fsutil::now_rfc3339(),
                seconds,
                device: self.device.clone(),
            };
            fsutil::write_json(&marker, &done)?;
            println!("  done    {label} in {}", fmt_secs(seconds));
            seconds
        };
        self.records.push(StageRecord {
            kind: kind.into(),
            label: label.into(),
            dataset: dataset.into(),
            hash,
            dir: dir.clone(),
            ran: !reused,
            seconds,
        });
        Ok(dir)
    }
}

fn short(dir: &Path) -> String {
    let n = dir.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    format!("stages/{n}")
}

pub fn fmt_secs(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.1} s")
    } else {
        format!("{}m{:02.0}s", (s / 60.0).floor(), s % 60.0)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// JSON with object keys sorted at every level: a stable text to hash.
pub fn canonical_json(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> =
                keys.iter().map(|k| format!("{}:{}", Value::String((*k).clone()), canonical_json(&m[k.as_str()]))).collect();
            format!("{{{}}}", parts.join(","))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(canonical_json).collect::<Vec<_>>().join(",")),
        other => other.to_string(),
    }
}

fn toml_to_json(t: &toml::Table) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

// ------------------------------------------------------------------------------------------
// The run
// ------------------------------------------------------------------------------------------

/// How to run besides the config.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Run nothing; render the report from complete stages.
    pub only_report: bool,
}

/// One distilled set of one dataset.
#[derive(Clone, Debug)]
pub struct MethodRun {
    pub method: Method,
    pub spc: usize,
    /// The distillation output (.scdd or .h5ad) and its `.log.json`.
    pub distill_out: PathBuf,
    pub log: PathBuf,
    /// The synthetic cells (.h5ad; decoded for code methods).
    pub cells: PathBuf,
    /// `eval.json` (an [`EvalSummary`]).
    pub eval: PathBuf,
}

/// What one dataset's stages produced: the report's input.
#[derive(Clone, Debug)]
pub struct DatasetRun {
    pub entry: DatasetEntry,
    pub train: PathBuf,
    pub test: PathBuf,
    pub split_json: PathBuf,
    pub foundation: PathBuf,
    pub generator: PathBuf,
    pub test_features: PathBuf,
    pub runs: Vec<MethodRun>,
    /// `eval.json` of the full training set.
    pub full_eval: Option<PathBuf>,
}

/// The outcome of `scdd run`.
pub struct Outcome {
    pub stages: Vec<StageRecord>,
    pub datasets: Vec<DatasetRun>,
    pub report_dir: PathBuf,
    /// The accuracy table (markdown), also printed.
    pub table: String,
    pub seconds: f64,
}

impl Outcome {
    /// Stages that ran in this invocation.
    pub fn ran(&self) -> Vec<&StageRecord> {
        self.stages.iter().filter(|s| s.ran).collect()
    }
}

/// Runs the pipeline described by `cfg`.
pub fn run(cfg: &Config, opts: &RunOptions) -> Result<Outcome> {
    cfg.validate()?;
    let t0 = Instant::now();
    let mut store = Store::open(&cfg.out_dir.join("stages"), opts.only_report, &cfg.device)?;
    let mut datasets = Vec::new();
    for entry in &cfg.datasets {
        println!("== dataset {} ({}, label {})", entry.name, entry.path.display(), entry.label);
        datasets.push(run_dataset(cfg, entry, &mut store)?);
    }
    println!("== report");
    let report_dir = cfg.out_dir.join("report");
    let table = report::write_report(cfg, &datasets, &store.records, &report_dir)?;
    let seconds = t0.elapsed().as_secs_f64();
    let ran = store.records.iter().filter(|s| s.ran).count();
    println!(
        "\n{} stages ran, {} reused; report in {} ({})\n",
        ran,
        store.records.len() - ran,
        report_dir.display(),
        fmt_secs(seconds)
    );
    println!("{table}");
    Ok(Outcome { stages: store.records, datasets, report_dir, table, seconds })
}

/// Per-dataset lazily loaded models and test features (shared by every evaluation).
struct Lazy {
    generator: PathBuf,
    test_features: Option<PathBuf>,
    bundle: Option<GeneratorBundle>,
    cpu: Option<CpuModel>,
    test: Option<TestSet>,
}

impl Lazy {
    fn bundle(&mut self) -> Result<&GeneratorBundle> {
        if self.bundle.is_none() {
            self.bundle = Some(load_bundle(&self.generator)?);
        }
        Ok(self.bundle.as_ref().unwrap())
    }
    fn cpu(&mut self) -> Result<&CpuModel> {
        if self.cpu.is_none() {
            let m = CpuModel::from_bundle(self.bundle()?)?;
            self.cpu = Some(m);
        }
        Ok(self.cpu.as_ref().unwrap())
    }
    fn test(&mut self) -> Result<&TestSet> {
        if self.test.is_none() {
            let dir = self.test_features.clone().context("test features not computed")?;
            self.test = Some(read_test_features(&dir)?.0);
        }
        Ok(self.test.as_ref().unwrap())
    }
    /// Bundle and CPU model together.
    fn model(&mut self) -> Result<(&GeneratorBundle, &CpuModel)> {
        self.cpu()?;
        Ok((self.bundle.as_ref().unwrap(), self.cpu.as_ref().unwrap()))
    }
}

/// `test-features` stage output: `features.f32` (row-major, little-endian) and `meta.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TestFeaturesMeta {
    pub n: usize,
    pub dim: usize,
    pub labels: Vec<u32>,
    pub classes: Vec<String>,
    /// Test cells whose label is not among the model's classes (left out).
    pub skipped: usize,
}

pub fn read_test_features(dir: &Path) -> Result<(TestSet, TestFeaturesMeta)> {
    let meta: TestFeaturesMeta = serde_json::from_slice(&fsutil::read(&dir.join("meta.json"))?)
        .with_context(|| format!("{}: unreadable", dir.join("meta.json").display()))?;
    let bytes = fsutil::read(&dir.join("features.f32"))?;
    if bytes.len() != meta.n * meta.dim * 4 {
        bail!("{}: {} bytes for {} × {} features", dir.join("features.f32").display(), bytes.len(), meta.n, meta.dim);
    }
    let v: Vec<f32> = bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    let features = Array2::from_shape_vec((meta.n, meta.dim), v)?;
    Ok((TestSet { features, labels: meta.labels.clone() }, meta))
}

/// Cells of an `.h5ad` as model input: dense log-normalised rows in the bundle's gene order
/// with class ids; cells of other classes are left out.
pub fn model_matrix(path: &Path, bundle: &GeneratorBundle, label: &str) -> Result<(Array2<f32>, Vec<u32>)> {
    let input = prep::load_model_input(path, &ReadOptions::default(), &bundle.genes, &bundle.spec.space)?;
    let ids = prep::labels_for_classes(&input.data, label, &bundle.classes, &path.display().to_string())?;
    let rows: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_some()).collect();
    let labels = rows.iter().map(|&i| ids[i].unwrap()).collect();
    Ok((input.data.x.dense_rows(&rows), labels))
}

/// Synthetic cells written by `distill` or `decode`: already log-normalised in the bundle's
/// gene order, so taken as they are (decoded cells are not on any count lattice, so detecting
/// their normalisation would fail). Files with other genes go through [`model_matrix`].
pub fn synthetic_matrix(path: &Path, bundle: &GeneratorBundle, label: &str) -> Result<(Array2<f32>, Vec<u32>)> {
    let ds = h5ad::read_h5ad(path, &ReadOptions::default())?;
    if ds.genes != bundle.genes {
        return model_matrix(path, bundle, label);
    }
    scdd_core::preprocess::check_non_negative(&ds.x, &format!("{}:X", path.display()))?;
    let ids = prep::labels_for_classes(&ds, label, &bundle.classes, &path.display().to_string())?;
    let rows: Vec<usize> = (0..ids.len()).filter(|&i| ids[i].is_some()).collect();
    let labels = rows.iter().map(|&i| ids[i].unwrap()).collect();
    Ok((ds.x.dense_rows(&rows), labels))
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

fn run_dataset(cfg: &Config, entry: &DatasetEntry, store: &mut Store) -> Result<DatasetRun> {
    let name = entry.name.as_str();
    if !entry.path.exists() {
        bail!("[[dataset]] {name}: {} does not exist", entry.path.display());
    }
    // ---- split
    let mut argv = vec![
        path_arg(&entry.path),
        "--label".into(),
        entry.label.clone(),
        "--test-fraction".into(),
        cfg.split.test_fraction.to_string(),
        "--seed".into(),
        cfg.seed.to_string(),
        "--min-counts".into(),
        cfg.split.min_counts.to_string(),
        "--min-cells".into(),
        cfg.split.min_cells.to_string(),
    ];
    if let Some(l) = &entry.layer {
        argv.extend(["--layer".into(), l.clone()]);
    }
    if entry.raw {
        argv.push("--raw".into());
    }
    if let Some(g) = &entry.gene_symbols {
        argv.extend(["--gene-symbols".into(), g.clone()]);
    }
    let split_params = json!({
        "label": entry.label, "test_fraction": cfg.split.test_fraction, "seed": cfg.seed,
        "min_counts": cfg.split.min_counts, "min_cells": cfg.split.min_cells,
        "layer": entry.layer, "raw": entry.raw, "gene_symbols": entry.gene_symbols,
    });
    let split_dir = store.stage("split", name, &format!("{name}: split"), split_params, std::slice::from_ref(&entry.path), |dir| {
        let mut argv = argv.clone();
        argv.extend(["--out".into(), path_arg(dir)]);
        let a: cmd::split::Args = parse_args("split", &argv)?;
        let s = cmd::split::split(&a)?;
        println!("    {} train + {} test cells, {} classes", s.n_train, s.n_test, s.classes.len());
        Ok(())
    })?;
    let train = split_dir.join("train.h5ad");
    let test = split_dir.join("test.h5ad");

    // ---- foundation
    let flags = table_to_flags("foundation", &cfg.foundation, FOUNDATION_RESERVED)?;
    let f_params = json!({ "options": toml_to_json(&cfg.foundation), "seed": cfg.seed, "label": entry.label });
    let f_dir = store.stage("foundation", name, &format!("{name}: train-foundation"), f_params, std::slice::from_ref(&train), |dir| {
        let out = dir.join("foundation.scddg");
        let mut argv = vec![path_arg(&train), "--out".into(), path_arg(&out), "--seed".into(), cfg.seed.to_string()];
        argv.extend(["--label".into(), entry.label.clone(), "--device".into(), cfg.device.clone()]);
        argv.extend(flags.iter().cloned());
        let a: cmd::train_foundation::Args = parse_args("foundation", &argv)?;
        cmd::train_foundation::run(a)?;
        expect_output(&out)
    })?;
    let foundation = f_dir.join("foundation.scddg");

    // ---- generator
    let flags = table_to_flags("generator", &cfg.generator, GENERATOR_RESERVED)?;
    let g_params = json!({ "options": toml_to_json(&cfg.generator), "seed": cfg.seed, "label": entry.label });
    let g_dir = store.stage(
        "generator",
        name,
        &format!("{name}: train-generator"),
        g_params,
        &[train.clone(), foundation.clone()],
        |dir| {
            let out = dir.join("generator.scddg");
            let mut argv = vec![
                path_arg(&train),
                "--foundation".into(),
                path_arg(&foundation),
                "--label".into(),
                entry.label.clone(),
                "--out".into(),
                path_arg(&out),
                "--seed".into(),
                cfg.seed.to_string(),
                "--device".into(),
                cfg.device.clone(),
            ];
            argv.extend(flags.iter().cloned());
            let a: cmd::train_generator::Args = parse_args("generator", &argv)?;
            cmd::train_generator::run(a)?;
            expect_output(&out)
        },
    )?;
    let generator = g_dir.join("generator.scddg");
    let mut lazy = Lazy { generator: generator.clone(), test_features: None, bundle: None, cpu: None, test: None };

    // ---- test features (once per dataset, shared by every evaluation and the report)
    let tf_dir = store.stage(
        "test-features",
        name,
        &format!("{name}: test features"),
        json!({ "label": entry.label }),
        &[test.clone(), generator.clone()],
        |dir| {
            let (bundle, model) = lazy.model()?;
            let (x, labels) = model_matrix(&test, bundle, &entry.label)?;
            let total = h5ad::H5adReader::open(&test, &ReadOptions::default())?.n_rows();
            let mut feats = Vec::new();
            for chunk in x.axis_chunks_iter(ndarray::Axis(0), 2048) {
                feats.push(TestSet::new(model, chunk, vec![])?.features);
            }
            let views: Vec<_> = feats.iter().map(|f| f.view()).collect();
            let features = ndarray::concatenate(ndarray::Axis(0), &views)?;
            let meta = TestFeaturesMeta {
                n: features.nrows(),
                dim: features.ncols(),
                skipped: total - labels.len(),
                labels,
                classes: bundle.classes.clone(),
            };
            let bytes: Vec<u8> = features.iter().flat_map(|v| v.to_le_bytes()).collect();
            fsutil::write_atomic(&dir.join("features.f32"), &bytes)?;
            fsutil::write_json(&dir.join("meta.json"), &meta)?;
            println!("    {} test cells encoded ({} left out: class not in the model)", meta.n, meta.skipped);
            Ok(())
        },
    )?;
    lazy.test_features = Some(tf_dir.clone());
    let tf_inputs = [tf_dir.join("features.f32"), tf_dir.join("meta.json")];

    let sgd = SgdParams { steps: cfg.evaluate.steps, lr: cfg.evaluate.lr, ..SgdParams::default() };
    let eval_params = json!({ "label": entry.label, "repeats": cfg.evaluate.repeats, "seed": cfg.seed, "sgd": sgd });
    let evaluate = |store: &mut Store, lazy: &mut Lazy, what: &str, cells: &Path, synthetic: bool| -> Result<PathBuf> {
        let inputs = vec![cells.to_path_buf(), tf_inputs[0].clone(), tf_inputs[1].clone(), generator.clone()];
        let dir = store.stage("evaluate", name, &format!("{name}: evaluate {what}"), eval_params.clone(), &inputs, |dir| {
            lazy.test()?;
            lazy.cpu()?;
            let (bundle, model, test) =
                (lazy.bundle.as_ref().unwrap(), lazy.cpu.as_ref().unwrap(), lazy.test.as_ref().unwrap());
            let (x, labels) = if synthetic {
                synthetic_matrix(cells, bundle, &entry.label)?
            } else {
                model_matrix(cells, bundle, &entry.label)?
            };
            let s = evaluate_default(model, x.view(), &labels, &bundle.classes, test, cfg.evaluate.repeats, cfg.seed, &sgd)?;
            println!(
                "    accuracy {:.2} ± {:.2} %, macro-F1 {:.2} % ({} training cells)",
                100.0 * s.accuracy_mean,
                100.0 * s.accuracy_std,
                100.0 * s.macro_f1_mean,
                s.n_train
            );
            fsutil::write_json(&dir.join("eval.json"), &s)
        })?;
        Ok(dir.join("eval.json"))
    };

    // ---- distill → decode → evaluate, for each SPC and method
    let methods = cfg.methods()?;
    let device = cfg.device.clone();
    let mut runs = Vec::new();
    for &spc in &cfg.distill.spc {
        for &method in &methods {
            let ext = if method.produces_codes() { "scdd" } else { "h5ad" };
            let mut argv = vec![
                path_arg(&train),
                "--generator".into(),
                path_arg(&generator),
                "--label".into(),
                entry.label.clone(),
                "--method".into(),
                method.name().into(),
                "--spc".into(),
                spc.to_string(),
                "--steps".into(),
                cfg.distill.steps.to_string(),
                "--seed".into(),
                cfg.seed.to_string(),
                "--device".into(),
                device.clone(),
            ];
            if let Some(v) = cfg.distill.lr {
                argv.extend(["--lr".into(), v.to_string()]);
            }
            if let Some(v) = cfg.distill.timestep {
                argv.extend(["--timestep".into(), v.to_string()]);
            }
            if let Some(v) = cfg.distill.real_batch {
                argv.extend(["--real-batch".into(), v.to_string()]);
            }
            // The hash sees only what the method uses, so e.g. changing `steps` keeps the baselines.
            let probe: cmd::distill::Args = parse_args("distill", &[argv.clone(), vec!["--out".into(), "x".into()]].concat())?;
            let params = json!({ "label": entry.label, "config": relevant_config(&probe.config()) });
            let what = format!("{} SPC {spc}", method.name());
            let d_dir = store.stage(
                "distill",
                name,
                &format!("{name}: distill {what}"),
                params,
                &[train.clone(), generator.clone()],
                |dir| {
                    let out = dir.join(format!("synthetic.{ext}"));
                    let mut argv = argv.clone();
                    argv.extend(["--out".into(), path_arg(&out)]);
                    let a: cmd::distill::Args = parse_args("distill", &argv)?;
                    let log = cmd::distill::distill_to_file(&a, lazy.bundle()?)?;
                    if let Some(l) = log.history.last() {
                        println!("    final loss {:.4} after {} steps ({:.1} steps/s)", l.loss, log.history.len(), log.steps_per_s);
                    }
                    Ok(())
                },
            )?;
            let distill_out = d_dir.join(format!("synthetic.{ext}"));
            let log = cmd::distill::log_path(&distill_out);
            let cells = if method.produces_codes() {
                let dec = store.stage(
                    "decode",
                    name,
                    &format!("{name}: decode {what}"),
                    json!({}),
                    &[distill_out.clone(), generator.clone()],
                    |dir| {
                        let codes = cmd::decode::load_codes(&distill_out)?;
                        let bundle = lazy.bundle()?;
                        let ds = cmd::decode::decode(&codes, bundle, &distill_out)?;
                        let mut uns = BTreeMap::new();
                        uns.insert(
                            "scdd_values".into(),
                            format!("log1p of counts normalised to {} per cell", bundle.spec.space.target_sum),
                        );
                        uns.insert("scdd_method".into(), codes.provenance.method.clone());
                        uns.insert("scdd_generator_id".into(), codes.generator_id.clone());
                        h5ad::write_h5ad(&dir.join("synthetic.h5ad"), &ds, &uns)
                    },
                )?;
                dec.join("synthetic.h5ad")
            } else {
                distill_out.clone()
            };
            let eval = evaluate(store, &mut lazy, &what, &cells, true)?;
            runs.push(MethodRun { method, spc, distill_out, log, cells, eval });
        }
    }
    let full_eval = if cfg.evaluate.full_training_set {
        Some(evaluate(store, &mut lazy, "full training set", &train, false)?)
    } else {
        None
    };
    Ok(DatasetRun {
        entry: entry.clone(),
        split_json: split_dir.join("split.json"),
        train,
        test,
        foundation,
        generator,
        test_features: tf_dir,
        runs,
        full_eval,
    })
}

/// A stage that returned without its output (a trainer stopped early on purpose) is an error.
fn expect_output(path: &Path) -> Result<()> {
    if !path.exists() {
        bail!("{} was not written (was the run stopped early, e.g. by stop_after?)", path.display());
    }
    Ok(())
}

/// The distillation settings a method actually uses (the rest reset to defaults), so a
/// baseline's stage hash does not change with, say, the number of optimisation steps.
fn relevant_config(c: &crate::distill::DistillConfig) -> crate::distill::DistillConfig {
    use crate::distill::DistillConfig;
    let d = DistillConfig::default();
    let mut c = c.clone();
    c.checkpoint_every = d.checkpoint_every;
    let optimises = matches!(c.method, Method::Dm | Method::Dc | Method::DmDc | Method::DmData | Method::DcData);
    let uses_dc = matches!(c.method, Method::Dc | Method::DmDc | Method::DcData);
    if !optimises {
        c.steps = 0;
        c.lr = d.lr;
    }
    if !uses_dc {
        c.real_batch = d.real_batch;
        c.head_reset = d.head_reset;
        c.head_steps = d.head_steps;
        c.head_lr = d.head_lr;
    }
    if !c.method.produces_codes() {
        c.timestep = d.timestep;
    }
    c
}

/// Reads an `eval.json`.
pub fn read_eval(path: &Path) -> Result<EvalSummary> {
    serde_json::from_slice(&fsutil::read(path)?).with_context(|| format!("{}: unreadable evaluation", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_errors() {
        let c = Config::parse("[[dataset]]\nname = \"a\"\npath = \"x.h5ad\"\nlabel = \"cell_type\"\n").unwrap();
        assert_eq!(c.distill.spc, vec![1, 10]);
        assert_eq!(c.evaluate.repeats, 10);
        assert_eq!(c.main_method().unwrap(), Method::DmDc);
        let e = Config::parse("[[dataset]]\nname = \"a\"\npath = \"x\"\nlabel = \"l\"\n[distill]\nstpes = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("stpes"), "{e:#}");
        let e = Config::parse("[[dataset]]\nname = \"a\"\npath = \"x\"\nlabel = \"l\"\n[distill]\nmethods = [\"dn\"]\n")
            .unwrap_err();
        assert!(format!("{e:#}").contains("methods") && format!("{e:#}").contains("dn"), "{e:#}");
        let e = Config::parse("out_dir = \"x\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("[[dataset]]"), "{e:#}");
    }

    #[test]
    fn flags_from_tables() {
        let t: toml::Table = toml::from_str("max_epochs = 3\nhidden = [64, 32]\nquiet = true\nx = false\nlr = 0.5").unwrap();
        let f = table_to_flags("foundation", &t, &[]).unwrap();
        assert!(f.contains(&"--max-epochs=3".to_string()));
        assert!(f.contains(&"--hidden=64,32".to_string()));
        assert!(f.contains(&"--quiet".to_string()));
        assert!(f.contains(&"--lr=0.5".to_string()));
        assert_eq!(f.len(), 4);
        let t: toml::Table = toml::from_str("out = \"a\"").unwrap();
        assert!(table_to_flags("foundation", &t, &["out"]).is_err());
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let a = json!({"b": 1, "a": {"d": [1, 2], "c": null}});
        assert_eq!(canonical_json(&a), r#"{"a":{"c":null,"d":[1,2]},"b":1}"#);
    }

    #[test]
    fn baselines_ignore_steps() {
        let mut c = crate::distill::DistillConfig { method: Method::Random, steps: 5, ..Default::default() };
        let a = relevant_config(&c);
        c.steps = 50;
        assert_eq!(relevant_config(&c), a);
        c.method = Method::Dm;
        let b = relevant_config(&c);
        c.steps = 5;
        assert_ne!(relevant_config(&c), b);
    }
}
