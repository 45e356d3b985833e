//! The plugin host, running half: each plugin fit + predict runs in a worker subprocess
//! (`scdd plugin-worker`), so an error, a panic, an abort, a segfault or a hang costs only that
//! evaluator's result. The host writes the job into a scratch directory (`job.json` plus raw
//! little-endian arrays), starts the worker, waits up to a time limit (then kills it), and
//! checks what comes back: one class id in range per test cell and finite probabilities whose
//! rows sum to 1.

use super::plugins::open;
use scdd_plugin_api::{ScddFitInput, ScddMatrix, ScddPredictInput, ScddPredictOutput, SCDD_OK};
use serde::{Deserialize, Serialize};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What one plugin run needs.
pub struct PluginJob<'a> {
    pub config_json: &'a str,
    pub seed: u64,
    pub class_names: &'a [String],
    pub genes: &'a [String],
    /// Training cells, row-major `n_train × genes.len()`.
    pub train: &'a [f32],
    pub labels: &'a [u32],
    /// Test cells, row-major `n_test × genes.len()`.
    pub test: &'a [f32],
    /// Whether the cells are `log1p` values (then a plugin that needs counts gets `expm1(x)`;
    /// otherwise the values themselves).
    pub log1p: bool,
}

/// A plugin's predictions for the test cells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub labels: Vec<u32>,
    /// `n_test × n_classes`, row-major.
    pub probs: Vec<f32>,
    /// Seconds inside the plugin's `create` + `fit` and its `predict` (the worker's clock; not
    /// the process start or the job files). Absent from Python evaluators.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit_seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predict_seconds: Option<f64>,
}

#[derive(Serialize, Deserialize)]
struct JobHeader {
    config_json: String,
    seed: u64,
    class_names: Vec<String>,
    genes: Vec<String>,
    n_train: usize,
    n_test: usize,
    log1p: bool,
}

static JOB_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn write_f32(path: &Path, v: &[f32]) -> std::io::Result<()> {
    std::fs::write(path, v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>())
}

fn read_f32(path: &Path) -> std::io::Result<Vec<f32>> {
    Ok(std::fs::read(path)?.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

/// Runs `plugin` on `job` in a worker subprocess (`worker` is the scdd binary) and checks the
/// result. The error is one line naming what failed: the plugin's own message, a crash with
/// its signal, the time limit, or an invalid result.
pub fn run_in_worker(worker: &Path, plugin: &Path, job: &PluginJob, limit: Duration) -> Result<Prediction, String> {
    run_job(job, limit, |dir| {
        let mut cmd = std::process::Command::new(worker);
        cmd.arg("plugin-worker").arg(plugin).arg(dir);
        Ok(cmd)
    })
}

/// The Python adapter's side, run by the user's interpreter: loads the user's file, calls its
/// `fit(X, y, genes, seed)` (and `config=` when its `fit` takes it) and `predict(X)` (class
/// ids, or per-class probabilities), writes `result.json`.
const PYTHON_RUNNER: &str = include_str!("python_runner.py");

/// Runs the evaluator defined in the Python file `script` (functions `fit(X, y, genes, seed)` and
/// `predict(X)`) on `job` with the interpreter `python`, in its own process under `limit`; the
/// result is checked as a plugin's.
pub fn run_python(python: &Path, script: &Path, job: &PluginJob, limit: Duration) -> Result<Prediction, String> {
    run_job(job, limit, |dir| {
        let runner = dir.join("scdd_runner.py");
        std::fs::write(&runner, PYTHON_RUNNER).map_err(|e| format!("{}: {e}", runner.display()))?;
        let mut cmd = std::process::Command::new(python);
        cmd.arg(&runner).arg(dir).arg(script);
        Ok(cmd)
    })
}

/// Writes `job` to a scratch directory, runs the command `make` builds for it under `limit`, and
/// reads and checks `result.json`.
fn run_job(job: &PluginJob, limit: Duration, make: impl FnOnce(&Path) -> Result<std::process::Command, String>) -> Result<Prediction, String> {
    let g = job.genes.len();
    let (n_train, n_test) = (job.labels.len(), job.test.len().checked_div(g).unwrap_or(0));
    if g == 0 || job.train.len() != n_train * g || job.test.len() != n_test * g {
        return Err(format!("job: {} training and {} test values for {g} genes", job.train.len(), job.test.len()));
    }
    let dir = std::env::temp_dir().join(format!(
        "scdd-plugin-{}-{}",
        std::process::id(),
        JOB_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = (|| {
        let header = JobHeader {
            config_json: job.config_json.to_string(),
            seed: job.seed,
            class_names: job.class_names.to_vec(),
            genes: job.genes.to_vec(),
            n_train,
            n_test,
            log1p: job.log1p,
        };
        let io = |e: std::io::Error| format!("writing the job to {}: {e}", dir.display());
        std::fs::write(dir.join("job.json"), serde_json::to_vec(&header).map_err(|e| e.to_string())?).map_err(io)?;
        write_f32(&dir.join("train.f32"), job.train).map_err(io)?;
        std::fs::write(dir.join("labels.u32"), job.labels.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()).map_err(io)?;
        write_f32(&dir.join("test.f32"), job.test).map_err(io)?;
        let mut cmd = make(&dir)?;
        let out = run_limited(&mut cmd, limit)?;
        if !out.status.success() {
            return Err(describe_exit(out.status, &out.last_stderr_line));
        }
        let p: Prediction = serde_json::from_slice(&std::fs::read(dir.join("result.json")).map_err(|e| format!("no result: {e}"))?)
            .map_err(|e| format!("unreadable result: {e}"))?;
        check_prediction(&p, n_test, job.class_names.len())?;
        Ok(p)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// What a subprocess run under [`run_limited`] left.
pub struct LimitedOutput {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    /// Its last non-empty line on stderr (trimmed).
    pub last_stderr_line: String,
}

/// Runs `cmd` with stdin closed, waiting at most `limit` (then kills it: an error naming the
/// limit). stdout and stderr go to scratch files, not pipes: a pipe read only after exit would
/// block a chatty child once full, and that would look like a hang.
pub fn run_limited(cmd: &mut std::process::Command, limit: Duration) -> Result<LimitedOutput, String> {
    let stem = std::env::temp_dir().join(format!(
        "scdd-worker-{}-{}",
        std::process::id(),
        JOB_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let (out_path, err_path) = (stem.with_extension("out"), stem.with_extension("err"));
    let result = (|| {
        let file = |p: &Path| std::fs::File::create(p).map_err(|e| format!("{}: {e}", p.display()));
        let mut child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(file(&out_path)?)
            .stderr(file(&err_path)?)
            .spawn()
            .map_err(|e| format!("cannot start the worker {}: {e}", cmd.get_program().to_string_lossy()))?;
        let start = Instant::now();
        let status = loop {
            if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
                break s;
            }
            if start.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("exceeded the time limit of {:.0} s and was stopped", limit.as_secs_f64()));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = String::from_utf8_lossy(&std::fs::read(&err_path).unwrap_or_default()).into_owned();
        let last_stderr_line = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim().to_string();
        Ok(LimitedOutput { status, stdout: std::fs::read(&out_path).unwrap_or_default(), last_stderr_line })
    })();
    let _ = std::fs::remove_file(&out_path);
    let _ = std::fs::remove_file(&err_path);
    result
}

/// One line for a worker that did not succeed: the signal that killed it, or its last error line.
pub fn describe_exit(status: std::process::ExitStatus, last: &str) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            let name = match sig {
                6 => " (SIGABRT: the plugin aborted)",
                11 => " (SIGSEGV: the plugin crashed)",
                7 => " (SIGBUS)",
                8 => " (SIGFPE)",
                9 => " (SIGKILL)",
                _ => "",
            };
            return format!("worker killed by signal {sig}{name}");
        }
    }
    if last.is_empty() {
        format!("worker failed ({status})")
    } else {
        last.trim_start_matches("error: ").to_string()
    }
}

/// One id in range per test cell; probabilities finite, in [0, 1], rows summing to 1.
pub fn check_prediction(p: &Prediction, n_test: usize, n_classes: usize) -> Result<(), String> {
    if p.labels.len() != n_test || p.probs.len() != n_test * n_classes {
        return Err(format!("returned {} ids and {} probabilities for {n_test} cells × {n_classes} classes", p.labels.len(), p.probs.len()));
    }
    if let Some((i, &c)) = p.labels.iter().enumerate().find(|(_, &c)| c as usize >= n_classes) {
        return Err(format!("returned class id {c} for cell {i}, out of range (0..{n_classes})"));
    }
    for (i, row) in p.probs.chunks(n_classes.max(1)).enumerate() {
        if let Some(v) = row.iter().find(|v| !v.is_finite() || **v < 0.0 || **v > 1.0 + 1e-4) {
            return Err(format!("returned probability {v} for cell {i}"));
        }
        let s: f32 = row.iter().sum();
        if (s - 1.0).abs() > 1e-3 {
            return Err(format!("returned probabilities summing to {s} for cell {i}"));
        }
    }
    Ok(())
}

/// The worker's side of a probe (`scdd plugin-worker --probe PLUGIN`): the checked descriptor
/// as JSON.
pub fn probe_main(plugin: &Path) -> Result<String, String> {
    let info: super::plugins::Info = super::plugins::probe(plugin)?.into();
    serde_json::to_string(&info).map_err(|e| e.to_string())
}

/// The worker's side (`scdd plugin-worker PLUGIN DIR`): load, check, create, fit, predict, write
/// `DIR/result.json`. Runs in its own process; any failure is the returned error.
pub fn worker_main(plugin: &Path, dir: &Path) -> Result<(), String> {
    let loaded = open(plugin).map_err(|e| format!("{}: {e}", plugin.display()))?;
    let header: JobHeader = serde_json::from_slice(&std::fs::read(dir.join("job.json")).map_err(|e| e.to_string())?)
        .map_err(|e| format!("job.json: {e}"))?;
    let g = header.genes.len();
    let train = read_f32(&dir.join("train.f32")).map_err(|e| e.to_string())?;
    let test = read_f32(&dir.join("test.f32")).map_err(|e| e.to_string())?;
    let labels: Vec<u32> = std::fs::read(dir.join("labels.u32"))
        .map_err(|e| e.to_string())?
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if train.len() != header.n_train * g || test.len() != header.n_test * g || labels.len() != header.n_train {
        return Err("job files do not match job.json".into());
    }
    let k = header.class_names.len();
    let cstrings = |v: &[String]| -> Result<Vec<CString>, String> {
        v.iter().map(|s| CString::new(s.as_str()).map_err(|_| format!("name {s:?} holds a NUL byte"))).collect()
    };
    let (class_c, gene_c) = (cstrings(&header.class_names)?, cstrings(&header.genes)?);
    let class_p: Vec<_> = class_c.iter().map(|s| s.as_ptr()).collect();
    let gene_p: Vec<_> = gene_c.iter().map(|s| s.as_ptr()).collect();
    let config = CString::new(header.config_json.as_str()).map_err(|_| "config holds a NUL byte".to_string())?;
    let mut out = Prediction { labels: vec![0; header.n_test], probs: vec![0.0; header.n_test * k], fit_seconds: None, predict_seconds: None };
    // Counts at the cells' normalised total: synthetic cells have no sequencing depth, so every
    // cell, real or synthetic, is given on the same scale.
    let wants_counts = loaded.info.needs & scdd_plugin_api::SCDD_NEEDS_COUNTS != 0;
    let to_counts = |v: &[f32]| -> Vec<f32> {
        match (wants_counts, header.log1p) {
            (false, _) => Vec::new(),
            (true, true) => v.iter().map(|x| x.exp_m1()).collect(),
            (true, false) => v.to_vec(),
        }
    };
    let (train_counts, test_counts) = (to_counts(&train), to_counts(&test));
    // SAFETY: the descriptor was checked by `open` and lives as long as `loaded`; every pointer
    // passed below outlives the call it is passed to, and the output buffers have the sizes the
    // ABI states.
    unsafe {
        let d = &*loaded.descriptor;
        let err = |m: *const scdd_plugin_api::ScddModel| {
            let p = (d.last_error)(m);
            if p.is_null() {
                String::from("(no message)")
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        let t_fit = Instant::now();
        let model = (d.create)(config.as_ptr(), header.seed);
        if model.is_null() {
            return Err(format!("create: {}", err(std::ptr::null())));
        }
        let matrix = |v: &[f32], n: usize| ScddMatrix { data: v.as_ptr(), n_cells: n as u64, n_genes: g as u64 };
        let none = ScddMatrix { data: std::ptr::null(), n_cells: 0, n_genes: 0 };
        let fit = ScddFitInput {
            x: matrix(&train, header.n_train),
            counts: if wants_counts { matrix(&train_counts, header.n_train) } else { none },
            labels: labels.as_ptr(),
            n_classes: k as u32,
            class_names: class_p.as_ptr(),
            gene_names: gene_p.as_ptr(),
        };
        let r = (d.fit)(model, &fit);
        out.fit_seconds = Some(t_fit.elapsed().as_secs_f64());
        if r != SCDD_OK {
            let m = err(model);
            (d.free)(model);
            return Err(format!("fit: {m}"));
        }
        let input = ScddPredictInput {
            x: matrix(&test, header.n_test),
            counts: if wants_counts { matrix(&test_counts, header.n_test) } else { none },
        };
        let mut output = ScddPredictOutput { labels: out.labels.as_mut_ptr(), probs: out.probs.as_mut_ptr() };
        let t_predict = Instant::now();
        let r = (d.predict)(model, &input, &mut output);
        out.predict_seconds = Some(t_predict.elapsed().as_secs_f64());
        if r != SCDD_OK {
            let m = err(model);
            (d.free)(model);
            return Err(format!("predict: {m}"));
        }
        (d.free)(model);
    }
    drop(loaded);
    // Checked here too: JSON has no NaN, so a non-finite value must be named before writing.
    check_prediction(&out, header.n_test, k)?;
    let tmp = dir.join("result.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&out).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, dir.join("result.json")).map_err(|e| e.to_string())?;
    Ok(())
}

/// The scdd binary to start as the worker: this process's own executable. On Linux that is
/// `/proc/self/exe`, which keeps naming the running binary even after a rebuild replaced the
/// file on disk (the path would then be "… (deleted)").
pub fn self_worker() -> Result<PathBuf, String> {
    let proc_exe = Path::new("/proc/self/exe");
    if cfg!(target_os = "linux") && proc_exe.exists() {
        return Ok(proc_exe.to_path_buf());
    }
    std::env::current_exe().map_err(|e| format!("cannot locate the scdd binary: {e}"))
}
