//! `scdd run`: the whole pipeline from a config file — split → train-foundation →
//! train-generator → distill (each method × SPC) → decode → evaluate (plus the full training
//! set as the ceiling) → report.
//!
//! Each stage calls the library directly with a typed parameter struct built from the
//! [`Config`] ([`config`]); the stage's cache key is the canonical JSON of that struct plus the
//! content of its input files ([`store`]). Since a stage's inputs are the previous stages'
//! output files, changing a parameter re-runs exactly the stages downstream of it whose inputs
//! change. The report is not a stage: it is rendered on every run (and alone with
//! `--only-report`) from the stage outputs into `out_dir/report/`.
pub mod config;
pub mod store;

pub use config::{Config, DatasetEntry};
pub use store::{canonical_json, StageStore};

use crate::distill::output::{distill_to_file, log_path, DistillIo};
use crate::error::{bail, Result};
use crate::evaluate::input::{model_matrix, read_test_features, synthetic_matrix, write_test_features};
use crate::evaluate::{evaluate, EvalParams, TestSet};
use crate::generator::data::GeneratorFiles;
use crate::io::artifacts::{load_bundle, load_codes};
use crate::io::fs;
use crate::nn::device::DeviceArg;
use crate::params::{Check, Checked};
use crate::report::{self, fmt_secs, DatasetInfo, DatasetRun, MethodRun, ReportConfig, StageRecord};
use crate::train::TrainControl;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::reference::CpuModel;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Instant;
use store::StageId;

/// How to run besides the config.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Run nothing; render the report from complete stages.
    pub only_report: bool,
}

/// The outcome of `scdd run`.
pub struct PipelineRun {
    pub stages: Vec<StageRecord>,
    pub datasets: Vec<DatasetRun>,
    pub report_dir: PathBuf,
    /// The accuracy table (markdown), also printed.
    pub table: String,
    pub seconds: f64,
}

impl PipelineRun {
    /// Stages that ran in this invocation.
    pub fn ran(&self) -> Vec<&StageRecord> {
        self.stages.iter().filter(|s| s.ran).collect()
    }
}

/// The report's settings for this config.
pub fn report_config(cfg: &Config) -> Result<ReportConfig> {
    Ok(ReportConfig {
        out_dir: cfg.out_dir.clone(),
        seed: cfg.seed,
        device: cfg.device.clone(),
        methods: cfg.methods()?,
        main: cfg.main_method()?,
        spc: cfg.distill.spc.clone(),
        evaluate: cfg.eval_params()?,
        report: cfg.report.clone(),
        config: serde_json::to_value(cfg)?,
    })
}

/// Runs the pipeline described by `cfg`.
pub fn run(cfg: &Config, opts: &RunOptions) -> Result<PipelineRun> {
    cfg.validate()?;
    if let Some(n) = cfg.threads {
        tch::set_num_threads(n);
    }
    let t0 = Instant::now();
    let mut store = StageStore::open(&cfg.out_dir.join("stages"), opts.only_report, &cfg.device)?;
    let mut datasets = Vec::new();
    for entry in &cfg.datasets {
        println!("== dataset {} ({}, label {})", entry.name, entry.path.display(), entry.label);
        datasets.push(run_dataset(cfg, entry, &mut store)?);
    }
    println!("== report");
    let report_dir = cfg.out_dir.join("report");
    let table = report::write_report(&report_config(cfg)?, &datasets, &store.records, &report_dir)?;
    let seconds = t0.elapsed().as_secs_f64();
    let ran = store.records.iter().filter(|s| s.ran).count();
    println!("\n{} stages ran, {} reused; report in {} ({})\n", ran, store.records.len() - ran, report_dir.display(), fmt_secs(seconds));
    println!("{table}");
    Ok(PipelineRun { stages: store.records, datasets, report_dir, table, seconds })
}

/// Per-dataset lazily loaded models and test features (shared by every evaluation).
struct Lazy {
    generator: PathBuf,
    /// The test split and its label column (read when a gene-space evaluator runs).
    test_cells: PathBuf,
    label: String,
    gene_space: bool,
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
    fn load(&mut self) -> Result<()> {
        self.bundle()?;
        if self.cpu.is_none() {
            self.cpu = Some(CpuModel::from_bundle(self.bundle.as_ref().unwrap())?);
        }
        Ok(())
    }
    fn load_test(&mut self) -> Result<()> {
        self.load()?;
        if self.test.is_none() {
            let Some(dir) = self.test_features.clone() else { bail!("test features not computed") };
            let mut test = read_test_features(&dir)?.0;
            if self.gene_space {
                let (x, labels) = model_matrix(&self.test_cells, self.bundle.as_ref().unwrap(), &self.label)?;
                if labels != test.labels {
                    bail!("{}: labels differ from the stored test features; remove the test-features stage", self.test_cells.display());
                }
                test.genes = Some(x);
            }
            self.test = Some(test);
        }
        Ok(())
    }
}

fn stage_id<'a>(kind: &'a str, dataset: &'a str, what: String) -> StageId<'a> {
    StageId { kind, dataset, label: format!("{dataset}: {what}") }
}

fn run_dataset(cfg: &Config, entry: &DatasetEntry, store: &mut StageStore) -> Result<DatasetRun> {
    let name = entry.name.as_str();
    if !entry.path.exists() {
        bail!("[[dataset]] {name}: {} does not exist", entry.path.display());
    }
    let device: DeviceArg = cfg.device.parse().map_err(crate::Error::msg)?;
    let control = |out: &Path, every: u64| TrainControl::for_output(out, device, every, false, None, true, cfg.threads);

    // ---- split
    let split_params = cfg.split_params(entry).check()?;
    let split_dir = store.stage(stage_id("split", name, "split".into()), &*split_params, std::slice::from_ref(&entry.path), |dir| {
        let s = crate::split::split(&entry.path, dir, &split_params)?;
        println!("    {} train + {} test cells, {} classes", s.n_train, s.n_test, s.classes.len());
        Ok(())
    })?;
    let train = split_dir.join("train.h5ad");
    let test = split_dir.join("test.h5ad");

    // ---- foundation
    let f_params = cfg.foundation_params().check()?;
    let f_key = json!({ "config": &*f_params, "label": entry.label });
    let f_dir = store.stage(stage_id("foundation", name, "train-foundation".into()), &f_key, std::slice::from_ref(&train), |dir| {
        let out = dir.join("foundation.scddg");
        let run = crate::foundation::data::train_to_file(&train, &Default::default(), Some(&entry.label), &out, &f_params, &control(&out, 500)?)?;
        println!("    {}", run.report.summary());
        Ok(())
    })?;
    let foundation = f_dir.join("foundation.scddg");

    // ---- generator
    let g_params = cfg.generator_params().check()?;
    let g_key = json!({ "config": &*g_params, "label": entry.label });
    let g_dir = store.stage(
        stage_id("generator", name, "train-generator".into()),
        &g_key,
        &[train.clone(), foundation.clone()],
        |dir| {
            let out = dir.join("generator.scddg");
            let files = GeneratorFiles {
                data: &train,
                matrix: &Default::default(),
                label: &entry.label,
                foundation: &foundation,
                out: &out,
                keep_encoder: true,
            };
            let run = crate::generator::data::train_to_file(&files, &g_params, &control(&out, 1000)?)?;
            if let Some(q) = &run.quality {
                println!("{}", q.table());
            }
            Ok(())
        },
    )?;
    let generator = g_dir.join("generator.scddg");
    let plan: Checked<EvalParams> = cfg.eval_params()?.check()?;
    let mut lazy = Lazy {
        generator: generator.clone(),
        test_cells: test.clone(),
        label: entry.label.clone(),
        gene_space: plan.gene_space(),
        test_features: None,
        bundle: None,
        cpu: None,
        test: None,
    };

    // ---- test features (once per dataset, shared by every evaluation and the report)
    let tf_dir = store.stage(
        stage_id("test-features", name, "test features".into()),
        &json!({ "label": entry.label }),
        &[test.clone(), generator.clone()],
        |dir| {
            lazy.load()?;
            let meta = write_test_features(&test, lazy.bundle.as_ref().unwrap(), lazy.cpu.as_ref().unwrap(), &entry.label, dir)?;
            println!("    {} test cells encoded ({} left out: class not in the model)", meta.n, meta.skipped);
            Ok(())
        },
    )?;
    lazy.test_features = Some(tf_dir.clone());
    let tf_inputs = [tf_dir.join("features.f32"), tf_dir.join("meta.json")];

    let eval_key = json!({ "label": entry.label, "plan": &*plan });
    let evaluate = |store: &mut StageStore, lazy: &mut Lazy, what: &str, cells: &Path, synthetic: bool| -> Result<PathBuf> {
        let mut inputs = vec![cells.to_path_buf(), tf_inputs[0].clone(), tf_inputs[1].clone(), generator.clone()];
        // A rebuilt plugin re-runs its evaluations.
        inputs.extend(crate::evaluate::host::plugin_files(&plan.evaluators));
        let dir = store.stage(stage_id("evaluate", name, format!("evaluate {what}")), &eval_key, &inputs, |dir| {
            lazy.load_test()?;
            let (bundle, model, test) = (lazy.bundle.as_ref().unwrap(), lazy.cpu.as_ref().unwrap(), lazy.test.as_ref().unwrap());
            let (x, labels) = if synthetic { synthetic_matrix(cells, bundle, &entry.label)? } else { model_matrix(cells, bundle, &entry.label)? };
            let r = evaluate(Some(model), x.view(), &labels, &bundle.classes, &bundle.genes, test, &plan)?;
            let scores: Vec<String> = r
                .results
                .iter()
                .chain(r.headline().as_ref())
                .map(|s| format!("{} {:.2} ± {:.2}", s.evaluator, 100.0 * s.accuracy_mean, 100.0 * s.accuracy_std))
                .chain(r.failures.iter().map(|f| format!("{} failed", f.evaluator)))
                .collect();
            println!("    accuracy % ({} training cells): {}", x.nrows(), scores.join(" · "));
            fs::write_json(&dir.join("eval.json"), &r)
        })?;
        Ok(dir.join("eval.json"))
    };

    // ---- distill → decode → evaluate, for each SPC and method
    let mut runs = Vec::new();
    for &spc in &cfg.distill.spc {
        for method in cfg.methods()? {
            let params = cfg.distill_params(method, spc).check()?;
            // The key sees only what the method uses, so e.g. changing `steps` keeps the baselines.
            let key = json!({ "label": entry.label, "config": params.relevant(), "decode": scdd_core::reference::DECODE_VERSION });
            let what = format!("{} SPC {spc}", method.name());
            let out_name = format!("synthetic.{}", method.extension());
            let d_dir = store.stage(stage_id("distill", name, format!("distill {what}")), &key, &[train.clone(), generator.clone()], |dir| {
                let io = DistillIo {
                    label: Some(entry.label.clone()),
                    device,
                    progress: true,
                    ..DistillIo::new(train.clone(), generator.clone(), dir.join(&out_name))
                };
                let log = distill_to_file(&params, &io, lazy.bundle()?)?;
                if let Some(l) = log.history.last() {
                    println!("    final loss {:.4} after {} steps ({:.1} steps/s)", l.loss, log.history.len(), log.steps_per_s);
                }
                Ok(())
            })?;
            let distill_out = d_dir.join(&out_name);
            let cells = if method.produces_codes() {
                let dec = store.stage(
                    stage_id("decode", name, format!("decode {what}")),
                    &json!({ "decode": scdd_core::reference::DECODE_VERSION }),
                    &[distill_out.clone(), generator.clone()],
                    |dir| {
                        let codes = load_codes(&distill_out)?;
                        crate::synthetic::decode_to_file(&codes, &distill_out, lazy.bundle()?, &dir.join("synthetic.h5ad"))?;
                        Ok(())
                    },
                )?;
                dec.join("synthetic.h5ad")
            } else {
                distill_out.clone()
            };
            let eval = evaluate(store, &mut lazy, &what, &cells, true)?;
            runs.push(MethodRun { method, spc, log: log_path(&distill_out), distill_out, cells, eval });
        }
    }
    let full_eval = if cfg.evaluate.full_training_set { Some(evaluate(store, &mut lazy, "full training set", &train, false)?) } else { None };
    Ok(DatasetRun {
        entry: DatasetInfo { name: entry.name.clone(), path: entry.path.clone(), label: entry.label.clone() },
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
