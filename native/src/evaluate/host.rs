//! Plugin evaluators next to the built-in ones: what an `--evaluators` entry (or the pipeline's
//! `[evaluate] evaluators`) names, and running a resolved plugin over seeds.
//!
//! An entry is a built-in name (`default`, `lr`, `mlp`), a Python file (`.py`, defining
//! `fit(X, y, genes, seed)` and `predict(X)`; run by `$SCDD_PYTHON` or `python3` in its own
//! process), a plugin's path (anything with a path separator or the platform's shared-library
//! extension), or a plugin's name as its descriptor states it, looked up on `SCDD_PLUGIN_PATH`
//! and in the built-in folder. A name that is none of
//! these is a typo and stops the command before any work. A plugin that exists but cannot be
//! used — not a library, no descriptor, another ABI, a missing resource file — is resolved
//! as *refused*: the run goes on and that evaluator's result is the reason.
use super::plugins::{discover, probe_in_worker, Info};
use super::worker::{run_in_worker, run_python, self_worker, PluginJob};
use super::{EvaluatorKind, TestSet};
use crate::error::{bail, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// One evaluator to run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum EvaluatorSpec {
    BuiltIn(EvaluatorKind),
    Plugin(Box<PluginSpec>),
}

impl EvaluatorSpec {
    /// The name results are filed under.
    pub fn name(&self) -> &str {
        match self {
            EvaluatorSpec::BuiltIn(k) => k.name(),
            EvaluatorSpec::Plugin(p) => &p.name,
        }
    }
    /// Reads gene values (every plugin does; the `default` evaluator reads encoder features).
    pub fn gene_space(&self) -> bool {
        match self {
            EvaluatorSpec::BuiltIn(k) => k.gene_space(),
            EvaluatorSpec::Plugin(_) => true,
        }
    }
}

impl From<EvaluatorKind> for EvaluatorSpec {
    fn from(k: EvaluatorKind) -> Self {
        EvaluatorSpec::BuiltIn(k)
    }
}

/// A plugin evaluator as resolved: where it is, what it said about itself, its config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PluginSpec {
    /// The descriptor's name (the file's stem when refused).
    pub name: String,
    pub path: PathBuf,
    /// Passed to the plugin's `create` as JSON (an object; `{}` when none was given).
    pub config: serde_json::Value,
    /// Version and needs, when the descriptor was accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub info: Option<Info>,
    /// Why it cannot run: its result is this message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
    /// For a Python evaluator (a `.py` file defining `fit` and `predict`): the interpreter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python: Option<PathBuf>,
}

/// The interpreter for Python evaluators: `$SCDD_PYTHON`, else `python3` on the PATH.
pub fn python_interpreter() -> PathBuf {
    match std::env::var_os("SCDD_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from("python3"),
    }
}

/// A Python evaluator file as a plugin spec: refused when the interpreter cannot import numpy.
fn python_spec(path: PathBuf, config: serde_json::Value) -> PluginSpec {
    let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let python = python_interpreter();
    let check = std::process::Command::new(&python).args(["-c", "import numpy"]).output();
    let refused = match check {
        Ok(o) if o.status.success() => None,
        Ok(_) => Some(format!("the Python interpreter {} cannot import numpy (set SCDD_PYTHON)", python.display())),
        Err(e) => Some(format!("cannot run the Python interpreter {} ({e}; set SCDD_PYTHON)", python.display())),
    };
    let info = Info {
        name: name.clone(),
        version: "python file".into(),
        abi: "python".into(),
        needs: vec!["log-normalised".into(), "gene-names".into()],
        resources: vec![],
    };
    PluginSpec { name, path, config, info: Some(info), refused, python: Some(python) }
}

/// Whether an entry names a file rather than a plugin by name.
fn looks_like_path(entry: &str) -> bool {
    entry.contains('/') || entry.contains(std::path::MAIN_SEPARATOR) || Path::new(entry).extension().is_some_and(|e| e == std::env::consts::DLL_EXTENSION)
}

/// Resolves `entries` (see the module docs). `configs` maps an entry, or a plugin's name, to its
/// JSON config object; a key that names none of the plugins is an error (a typo would otherwise
/// run the plugin with its defaults). Descriptors are read in worker subprocesses.
pub fn resolve(entries: &[String], configs: &BTreeMap<String, serde_json::Value>) -> Result<Vec<EvaluatorSpec>> {
    let worker = self_worker().map_err(crate::Error::msg)?;
    resolve_with(entries, configs, &worker)
}

/// [`resolve`] with an explicit worker binary (the scdd executable).
pub fn resolve_with(entries: &[String], configs: &BTreeMap<String, serde_json::Value>, worker: &Path) -> Result<Vec<EvaluatorSpec>> {
    let mut out: Vec<EvaluatorSpec> = Vec::new();
    let mut used_keys: Vec<String> = Vec::new();
    let mut found: Option<Vec<super::plugins::Candidate>> = None;
    // The config given for the entry as written, or for the plugin's name; `{}` when none.
    let mut config_for = |entry: &str, name: &str| -> Result<serde_json::Value> {
        let Some(k) = [entry, name].into_iter().find(|k| configs.contains_key(*k)) else { return Ok(serde_json::json!({})) };
        used_keys.push(k.to_string());
        let config = configs[k].clone();
        if !config.is_object() {
            bail!("config of evaluator '{name}': must be a JSON object, got {config}");
        }
        Ok(config)
    };
    for raw in entries {
        let entry = raw.trim();
        if entry.is_empty() {
            bail!("--evaluators: an empty entry");
        }
        let spec = if let Ok(k) = entry.parse::<EvaluatorKind>() {
            EvaluatorSpec::BuiltIn(k)
        } else if entry.ends_with(".py") {
            let path = PathBuf::from(entry);
            if !path.is_file() {
                bail!("--evaluators: {entry}: no such file");
            }
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            let config = config_for(entry, &stem)?;
            if stem.parse::<EvaluatorKind>().is_ok() {
                bail!("--evaluators: {entry} is named like a built-in evaluator; rename the file");
            }
            EvaluatorSpec::Plugin(Box::new(python_spec(path, config)))
        } else {
            let (path, verdict) = if looks_like_path(entry) {
                let path = PathBuf::from(entry);
                if !path.exists() {
                    bail!("--evaluators: {entry}: no such file");
                }
                let verdict = probe_in_worker(worker, &path);
                (path, verdict)
            } else {
                let list = found.get_or_insert_with(|| discover(&[], Some(worker)));
                match list.iter().find(|c| c.info.as_ref().is_some_and(|i| i.name == entry)) {
                    Some(c) => (c.path.clone(), Ok(c.info.clone().unwrap())),
                    None => {
                        let names: Vec<&str> = list.iter().filter_map(|c| c.info.as_ref().map(|i| i.name.as_str())).collect();
                        bail!(
                            "--evaluators: unknown evaluator '{entry}' (built in: {}; plugins found: {}; or give a plugin file's path)",
                            EvaluatorKind::ALL.map(|k| k.name()).join(", "),
                            if names.is_empty() { "none".to_string() } else { names.join(", ") }
                        );
                    }
                }
            };
            let name = match &verdict {
                Ok(info) => info.name.clone(),
                Err(_) => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| entry.to_string()),
            };
            let config = config_for(entry, &name)?;
            let (info, mut refused) = match verdict {
                Ok(info) => (Some(info), None),
                Err(why) => (None, Some(why)),
            };
            if let Some(i) = &info {
                if i.name.parse::<EvaluatorKind>().is_ok() {
                    bail!("--evaluators: the plugin {} calls itself '{}', the name of a built-in evaluator", path.display(), i.name);
                }
                refused = refused.or_else(|| missing_resource(i, &config));
            }
            EvaluatorSpec::Plugin(Box::new(PluginSpec { name, path, config, info, refused, python: None }))
        };
        if out.iter().any(|e| e.name() == spec.name()) {
            bail!("--evaluators: '{}' given twice", spec.name());
        }
        out.push(spec);
    }
    if let Some(k) = configs.keys().find(|k| !used_keys.contains(k)) {
        bail!("plugin config for '{k}': no plugin of that name or path among the evaluators");
    }
    Ok(out)
}

/// A resource the plugin declares that its config points to a file that does not exist.
fn missing_resource(info: &Info, config: &serde_json::Value) -> Option<String> {
    info.resources.iter().find_map(|r| {
        let p = config.get(r)?.as_str()?;
        (!Path::new(p).is_file()).then(|| format!("config `{r}`: {p} does not exist"))
    })
}

/// Fits `plugin` `repeats` times (seeds `seed..seed+repeats`), each fit + predict in its own
/// worker under `limit`, and returns each repeat's predicted test labels. The first failure
/// ends it: the error names that repeat's seed and the reason.
#[allow(clippy::too_many_arguments)]
pub fn run_plugin(
    plugin: &PluginSpec,
    x: ndarray::ArrayView2<f32>,
    labels: &[u32],
    classes: &[String],
    genes: &[String],
    test: &TestSet,
    log1p: bool,
    (seed, repeats, limit): (u64, usize, Duration),
) -> std::result::Result<Vec<Vec<u32>>, String> {
    if let Some(why) = &plugin.refused {
        return Err(why.clone());
    }
    let Some(test_x) = &test.genes else { return Err("the test cells' genes are not loaded".into()) };
    if genes.len() != x.ncols() || test_x.ncols() != x.ncols() {
        return Err(format!("{} gene names for {} training and {} test columns", genes.len(), x.ncols(), test_x.ncols()));
    }
    let train: Vec<f32> = x.iter().copied().collect();
    let test_v: Vec<f32> = test_x.iter().copied().collect();
    let worker = self_worker()?;
    let config = plugin.config.to_string();
    let mut preds = Vec::with_capacity(repeats);
    for r in 0..repeats {
        let s = seed + r as u64;
        let job = PluginJob { config_json: &config, seed: s, class_names: classes, genes, train: &train, labels, test: &test_v, log1p };
        let p = match &plugin.python {
            Some(python) => run_python(python, &plugin.path, &job, limit),
            None => run_in_worker(&worker, &plugin.path, &job, limit),
        }
        .map_err(|e| if repeats > 1 { format!("seed {s}: {e}") } else { e })?;
        preds.push(p.labels);
    }
    Ok(preds)
}

/// Failure of one evaluator: what `eval.json` records instead of its scores.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalFailure {
    pub evaluator: String,
    pub error: String,
}

/// `NAME=JSON` or `NAME=@FILE.json` (`--plugin-config`) as a map entry.
pub fn parse_config_arg(arg: &str) -> Result<(String, serde_json::Value)> {
    let Some((name, value)) = arg.split_once('=') else { bail!("--plugin-config {arg}: expected NAME=JSON or NAME=@FILE.json") };
    let (text, origin) = match value.strip_prefix('@') {
        Some(file) => (
            std::fs::read_to_string(file).map_err(|e| crate::Error::msg(format!("--plugin-config {name}: {file}: {e}")))?,
            file.to_string(),
        ),
        None => (value.to_string(), "the argument".to_string()),
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| crate::Error::msg(format!("--plugin-config {name}: invalid JSON in {origin} ({e})")))?;
    if !v.is_object() {
        bail!("--plugin-config {name}: must be a JSON object, got {v}");
    }
    Ok((name.trim().to_string(), v))
}

/// Plugin files the specs name (the pipeline hashes them into its cache keys).
pub fn plugin_files(specs: &[EvaluatorSpec]) -> Vec<PathBuf> {
    specs
        .iter()
        .filter_map(|e| match e {
            EvaluatorSpec::Plugin(p) if p.path.is_file() => Some(p.path.clone()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_arguments_are_checked() {
        let (n, v) = parse_config_arg(r#"celltypist={"feature_selection": true}"#).unwrap();
        assert_eq!((n.as_str(), v["feature_selection"].as_bool()), ("celltypist", Some(true)));
        assert!(parse_config_arg("celltypist").unwrap_err().to_string().contains("NAME=JSON"));
        assert!(parse_config_arg("x={oops").unwrap_err().to_string().contains("invalid JSON"));
        assert!(parse_config_arg("x=[1]").unwrap_err().to_string().contains("JSON object"));
        assert!(parse_config_arg("x=@/no/such.json").unwrap_err().to_string().contains("/no/such.json"));
    }

    #[test]
    fn entries_resolve_to_built_ins_or_fail_by_name() {
        let worker = Path::new("/nonexistent-scdd");
        let none = BTreeMap::new();
        let specs = resolve_with(&["lr".into(), "mlp".into()], &none, worker).unwrap();
        assert_eq!(specs, vec![EvaluatorSpec::BuiltIn(EvaluatorKind::Lr), EvaluatorSpec::BuiltIn(EvaluatorKind::Mlp)]);
        assert!(resolve_with(&["lr".into(), "lr".into()], &none, worker).unwrap_err().to_string().contains("given twice"));
        let e = resolve_with(&["celltypst".into()], &none, worker).unwrap_err().to_string();
        assert!(e.contains("unknown evaluator 'celltypst'") && e.contains("built in: default, lr, mlp"), "{e}");
        assert!(resolve_with(&["/no/such/libx.so".into()], &none, worker).unwrap_err().to_string().contains("no such file"));
        // A file that cannot be probed is refused, not fatal: the run goes on without it.
        let file = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
        let specs = resolve_with(&[file.into()], &none, worker).unwrap();
        let EvaluatorSpec::Plugin(p) = &specs[0] else { panic!() };
        assert_eq!(p.name, "Cargo");
        assert!(p.refused.as_deref().unwrap().contains("cannot start the worker"), "{p:?}");
        // A config for no listed plugin is a typo.
        let cfg = BTreeMap::from([("celltypist".to_string(), serde_json::json!({}))]);
        assert!(resolve_with(&["lr".into()], &cfg, worker).unwrap_err().to_string().contains("no plugin of that name"));
    }
}
