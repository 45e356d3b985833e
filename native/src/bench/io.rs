//! `scdd bench io`: reading an `.h5ad` and preprocessing it (QC, `normalize_total`, `log1p`)
//! in scdd against anndata + scanpy, on the same synthetic file, in one run.
//!
//! * The file (default 100k cells × 20k genes, 5 % non-zeros, integer counts as float32, CSR)
//!   is generated once from a seed and cached under `--dir`.
//! * Each side runs in its own process so that neither the generation nor the other side
//!   shows in its peak memory: scdd re-executes itself as `scdd bench io --child FILE`, Python
//!   runs `tests/py/bench_io_scanpy.py`. Each reports its step times, its peak RSS (`VmHWM`,
//!   `ru_maxrss`), its RSS before reading (interpreter/libraries) and what is needed to check
//!   that both computed the same thing: shape, name hashes, non-zeros and sums of every row,
//!   and the full contents of evenly spaced sample rows.
use crate::io::h5ad::{self, ReadOptions};
use crate::error::{err, bail, Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scdd_core::dataset::Dataset;
use scdd_core::matrix::CsrMatrix;
use scdd_core::obs::ObsTable;
use scdd_core::preprocess::{log1p, normalize_total, qc_filter_in_place, QcParams};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Bump when the generator changes, so cached files are not reused across versions.
const GENERATOR_VERSION: u32 = 1;

#[derive(Debug, Clone)]
pub struct IoParams {
    /// Where the generated dataset is cached (reused when present).
    pub dir: PathBuf,
    /// Cells (rows) of the generated dataset.
    pub cells: usize,
    /// Genes (columns) of the generated dataset.
    pub genes: usize,
    /// Fraction of non-zero entries.
    pub density: f64,
    /// Who writes the file: `scdd` (contiguous arrays, what scdd's commands write) or
    /// `anndata` (the scdd-generated data re-written by `anndata.write_h5ad`: chunked arrays,
    /// as most files in the wild; needs the Python).
    pub writer: Writer,
    /// Seed of the generated dataset.
    pub seed: u64,
    /// QC: drop cells with fewer total counts.
    pub min_counts: f64,
    /// QC: drop genes detected in fewer cells.
    pub min_cells: u64,
    /// `normalize_total` target.
    pub target_sum: f32,
    /// Run each side this many times (alternating) and report each side's fastest run.
    pub repeat: usize,
    /// Rows whose full contents are compared between the two sides.
    pub sample_rows: usize,
    /// Python with anndata + scanpy [default: $SCDD_PYTHON, else <workspace>/.venv/bin/python].
    pub python: Option<PathBuf>,
    /// Time scdd only.
    pub no_python: bool,
    /// Print JSON instead of a table.
    pub json: bool,
    /// Internal: run the scdd side on FILE and write its result to --child-out.
    pub child: Option<PathBuf>,
    pub child_out: Option<PathBuf>,
    pub spawned_at: Option<f64>,
}

impl IoParams {
    /// The QC thresholds, `--min-counts` checked.
    fn qc(&self) -> Result<QcParams> {
        crate::split::check_qc(self.min_counts)?;
        Ok(QcParams { min_counts: self.min_counts, min_cells: self.min_cells })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Writer {
    Scdd,
    Anndata,
}

impl std::str::FromStr for Writer {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "scdd" => Ok(Writer::Scdd),
            "anndata" => Ok(Writer::Anndata),
            _ => Err(format!("writer {s:?}: use scdd or anndata")),
        }
    }
}

/// What each side reports (the Python script writes the same keys).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SideResult {
    pub tool: String,
    /// From process spawn until ready to read (process start, library loading, imports).
    pub startup_s: f64,
    pub read_s: f64,
    /// QC: `filter_cells` + `filter_genes`.
    pub qc_s: f64,
    pub normalize_s: f64,
    pub log1p_s: f64,
    /// read + QC + normalize + log1p.
    pub total_s: f64,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
    /// Resident memory before reading (runtime, libraries).
    pub baseline_rss_bytes: u64,
    /// Bytes of the input matrix's CSR arrays (data + indices + indptr) as read.
    pub csr_bytes: u64,
    pub n_obs: u64,
    pub n_vars: u64,
    pub nnz: u64,
    pub cells_sha256: String,
    pub genes_sha256: String,
    pub row_nnz: Vec<u64>,
    pub row_sums: Vec<f64>,
    pub sample_rows: Vec<u64>,
    pub sample_indices: Vec<Vec<u32>>,
    pub sample_data: Vec<Vec<f32>>,
}

/// How the two results compare.
#[derive(Clone, Debug, Serialize)]
pub struct Comparison {
    pub same_cells: bool,
    pub same_genes: bool,
    pub same_row_nnz: bool,
    /// Largest |scdd − scanpy| over the sample rows' values (∞ if their patterns differ).
    pub max_abs_diff: f64,
    /// Largest |Δ row sum| / non-zeros of the row, over all rows.
    pub max_row_sum_diff_per_value: f64,
    pub rows_sampled: usize,
    pub values_sampled: usize,
    /// All of the above within 1e-5.
    pub equal: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub file: String,
    pub file_bytes: u64,
    pub writer: Writer,
    /// Whether scdd read the matrix by direct positioned reads (contiguous arrays) or HDF5.
    pub scdd_direct_reads: bool,
    pub generated: bool,
    pub generate_s: Option<f64>,
    pub cells: usize,
    pub genes: usize,
    pub stored: u64,
    pub qc: QcParams,
    pub target_sum: f32,
    pub scdd: SideResult,
    pub python: Option<SideResult>,
    pub comparison: Option<Comparison>,
    /// python total / scdd total.
    pub speedup: Option<f64>,
    /// scdd peak RSS / CSR bytes.
    pub scdd_peak_over_csr: f64,
    pub targets: BTreeMap<String, bool>,
}

pub fn run(a: IoParams) -> Result<()> {
    if let Some(file) = &a.child {
        let out = a.child_out.as_ref().ok_or_else(|| err!("--child needs --child-out"))?;
        return child(file, out, &a);
    }
    if a.cells == 0 || a.genes == 0 || !(a.density > 0.0 && a.density <= 1.0) {
        bail!("--cells and --genes must be positive and --density in (0, 1]");
    }
    if a.genes > u32::MAX as usize {
        bail!("--genes must be below 2^32");
    }
    std::fs::create_dir_all(&a.dir).with_context(|| format!("creating {}", a.dir.display()))?;
    let stem = format!("scdd-bench-io-v{GENERATOR_VERSION}-{}x{}-d{}-s{}", a.cells, a.genes, a.density, a.seed);
    let scdd_file = a.dir.join(format!("{stem}.h5ad"));
    let file = match a.writer {
        Writer::Scdd => scdd_file.clone(),
        Writer::Anndata => a.dir.join(format!("{stem}-anndata.h5ad")),
    };
    let (generated, generate_s) = if file.exists() {
        (false, None)
    } else {
        let t = Instant::now();
        if !scdd_file.exists() {
            eprintln!(
                "generating {} ({} cells × {} genes, {} % non-zeros) ...",
                scdd_file.display(),
                a.cells,
                a.genes,
                a.density * 100.0
            );
            generate(&scdd_file, &a)?;
        }
        if a.writer == Writer::Anndata {
            eprintln!("re-writing it with anndata as {} ...", file.display());
            rewrite_with_anndata(&scdd_file, &file, &a)?;
        }
        (true, Some(t.elapsed().as_secs_f64()))
    };
    let scdd_direct_reads = h5ad::H5adReader::open(&file, &ReadOptions::default())?.direct_reads();
    let file_bytes = std::fs::metadata(&file)?.len();

    let pid = std::process::id();
    let (scdd_out, py_out) = (a.dir.join(format!(".scdd-side-{pid}.json")), a.dir.join(format!(".python-side-{pid}.json")));
    let fastest = |best: Option<SideResult>, new: SideResult| match best {
        Some(b) if b.total_s <= new.total_s => Some(b),
        _ => Some(new),
    };
    let (mut scdd, mut python): (Option<SideResult>, Option<SideResult>) = (None, None);
    for i in 0..a.repeat.max(1) {
        let run = if a.repeat > 1 { format!(" (run {} of {})", i + 1, a.repeat) } else { String::new() };
        eprintln!("timing scdd{run} ...");
        let s = run_scdd_child(&file, &scdd_out, &a);
        let _ = std::fs::remove_file(&scdd_out);
        scdd = fastest(scdd, s?);
        if !a.no_python {
            eprintln!("timing anndata + scanpy{run} ...");
            let p = run_python(&file, &py_out, &a);
            let _ = std::fs::remove_file(&py_out);
            python = fastest(python, p?);
        }
    }
    let scdd = scdd.expect("at least one run");
    let comparison = python.as_ref().map(|p| compare(&scdd, p));
    let speedup = python.as_ref().map(|p| p.total_s / scdd.total_s);
    let scdd_peak_over_csr = scdd.peak_rss_bytes as f64 / scdd.csr_bytes.max(1) as f64;
    let mut targets = BTreeMap::new();
    if let Some(s) = speedup {
        targets.insert("scdd at least 3x faster than anndata + scanpy".to_string(), s >= 3.0);
    }
    if let Some(c) = &comparison {
        targets.insert("values equal to 1e-5".to_string(), c.equal);
    }
    targets.insert("scdd peak memory at most 1.5x the CSR arrays".to_string(), scdd_peak_over_csr <= 1.5);
    // data + indices are 8 bytes per stored value, indptr 8 bytes per row + 1
    let stored = scdd.csr_bytes.saturating_sub(8 * (a.cells as u64 + 1)) / 8;
    let report = Report {
        file: file.display().to_string(),
        file_bytes,
        writer: a.writer,
        scdd_direct_reads,
        generated,
        generate_s,
        cells: a.cells,
        genes: a.genes,
        stored,
        qc: a.qc()?,
        target_sum: a.target_sum,
        scdd,
        python,
        comparison,
        speedup,
        scdd_peak_over_csr,
        targets,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", table(&report));
    }
    Ok(())
}

// ------------------------------------------------------------------------------------------
// The synthetic dataset
// ------------------------------------------------------------------------------------------

/// Integer counts with some structure for QC to act on: 1 % of cells are near-empty
/// (dropped by `min_counts = 10`), 3 % of genes are rare (seen in about 2 cells, mostly
/// dropped by `min_cells = 3`), the other genes come in two expression tiers and cells vary
/// ±50 % in depth. Non-zeros are drawn with geometric gaps (O(non-zeros)), values are
/// `1 + Geometric(0.5)`.
pub fn generate_matrix(cells: usize, genes: usize, density: f64, seed: u64) -> Result<CsrMatrix> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let n_rare = (genes * 3 / 100).min(genes.saturating_sub(1));
    let common = genes - n_rare;
    let tier = common / 2;
    // (start, end, probability) of each gene block, before the per-cell depth factor.
    let base = (density * genes as f64 / common.max(1) as f64).min(1.0);
    let blocks = [(0, tier, (1.5 * base).min(1.0)), (tier, common, 0.5 * base), (common, genes, (2.0 / cells as f64).min(1.0))];
    let expected = (cells as f64 * genes as f64 * density * 1.02) as usize + 1024;
    let mut indptr = Vec::with_capacity(cells + 1);
    let mut indices: Vec<u32> = Vec::with_capacity(expected);
    let mut data: Vec<f32> = Vec::with_capacity(expected);
    indptr.push(0u64);
    for _ in 0..cells {
        let depth = if rng.gen_bool(0.01) { 1e-4 } else { rng.gen_range(0.5..1.5) };
        for &(a, b, p) in &blocks {
            let p = (p * depth).min(1.0);
            if p <= 0.0 || a >= b {
                continue;
            }
            let ln_q = (1.0 - p).ln();
            let mut g = a;
            loop {
                // next success after a geometric number of failures
                let gap = if p >= 1.0 { 0 } else { (rng.gen::<f64>().max(f64::MIN_POSITIVE).ln() / ln_q) as usize };
                g = g.saturating_add(gap);
                if g >= b {
                    break;
                }
                let mut v = 1u32;
                while v < 1000 && rng.gen_bool(0.5) {
                    v += 1;
                }
                indices.push(g as u32);
                data.push(v as f32);
                g += 1;
            }
        }
        indptr.push(indices.len() as u64);
    }
    Ok(CsrMatrix::new(cells, genes, indptr, indices, data, "generated")?)
}

/// `anndata.read_h5ad(src).write_h5ad(dst)`, atomically.
fn rewrite_with_anndata(src: &Path, dst: &Path, a: &IoParams) -> Result<()> {
    let py = a.python.clone().unwrap_or_else(super::default_python);
    if !py.exists() {
        bail!("{}: no such Python; --writer anndata needs one (--python, SCDD_PYTHON, scripts/setup.sh)", py.display());
    }
    crate::io::fs::with_atomic(dst, |tmp| {
        let status = Command::new(&py)
            .arg("-c")
            .arg("import sys, warnings; warnings.filterwarnings('ignore'); import anndata as ad; ad.read_h5ad(sys.argv[1]).write_h5ad(sys.argv[2])")
            .arg(src)
            .arg(tmp)
            .status()
            .with_context(|| format!("running {}", py.display()))?;
        if !status.success() {
            bail!("anndata could not re-write {}: {status}", src.display());
        }
        Ok(())
    })
}

fn generate(path: &Path, a: &IoParams) -> Result<()> {
    let x = generate_matrix(a.cells, a.genes, a.density, a.seed)?;
    let obs = ObsTable { index: (0..a.cells).map(|i| format!("cell{i}")).collect(), columns: vec![] };
    let genes = (0..a.genes).map(|g| format!("gene{g}")).collect();
    let ds = Dataset::new("bench", x, genes, obs)?;
    let mut uns = BTreeMap::new();
    uns.insert("scdd_bench".to_string(), format!("generator v{GENERATOR_VERSION}, seed {}", a.seed));
    h5ad::write_h5ad(path, &ds, &uns)
}

// ------------------------------------------------------------------------------------------
// The two sides
// ------------------------------------------------------------------------------------------

fn epoch_now() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// A `/proc/self/status` entry (`VmRSS`, `VmHWM`) in bytes; 0 where unavailable.
pub fn proc_status_bytes(key: &str) -> u64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else { return 0 };
    s.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
        .and_then(|r| r.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

fn run_scdd_child(file: &Path, out: &Path, a: &IoParams) -> Result<SideResult> {
    let exe = std::env::current_exe().context("locating the scdd executable")?;
    let status = Command::new(&exe)
        .args(["bench", "io", "--child"])
        .arg(file)
        .arg("--child-out")
        .arg(out)
        .args(["--min-counts", &a.min_counts.to_string(), "--min-cells", &a.min_cells.to_string()])
        .args(["--target-sum", &a.target_sum.to_string(), "--sample-rows", &a.sample_rows.to_string()])
        .args(["--spawned-at", &format!("{:.6}", epoch_now())])
        .status()
        .with_context(|| format!("running {}", exe.display()))?;
    if !status.success() {
        bail!("the scdd side ({} bench io --child) failed: {status}", exe.display());
    }
    read_side(out)
}


fn run_python(file: &Path, out: &Path, a: &IoParams) -> Result<SideResult> {
    let py = a.python.clone().unwrap_or_else(super::default_python);
    if !py.exists() {
        bail!("{}: no such Python; pass --python, set SCDD_PYTHON or run scripts/setup.sh (or use --no-python)", py.display());
    }
    let script = super::workspace_root().join("tests/py/bench_io_scanpy.py");
    if !script.exists() {
        bail!("{}: the Python side of the benchmark is missing", script.display());
    }
    let status = Command::new(&py)
        .arg(&script)
        .arg(file)
        .arg(out)
        .args(["--min-counts", &a.min_counts.to_string(), "--min-cells", &a.min_cells.to_string()])
        .args(["--target-sum", &a.target_sum.to_string(), "--sample-rows", &a.sample_rows.to_string()])
        .args(["--spawned-at", &format!("{:.6}", epoch_now())])
        .status()
        .with_context(|| format!("running {}", py.display()))?;
    if !status.success() {
        bail!("the Python side ({} {}) failed: {status}", py.display(), script.display());
    }
    read_side(out)
}

fn read_side(path: &Path) -> Result<SideResult> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: the benchmark side wrote no result", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{}: unreadable result", path.display()))
}

/// The scdd side, in its own process: read, QC in place, normalize, log1p.
fn child(file: &Path, out: &Path, a: &IoParams) -> Result<()> {
    let startup_s = a.spawned_at.map(|t| (epoch_now() - t).max(0.0)).unwrap_or(0.0);
    let baseline = proc_status_bytes("VmRSS");
    let t0 = Instant::now();
    let mut ds = h5ad::read_h5ad(file, &ReadOptions::default())?;
    let t1 = Instant::now();
    let csr_bytes = ds.x.heap_bytes() as u64;
    qc_filter_in_place(&mut ds, &a.qc()?);
    let t2 = Instant::now();
    normalize_total(&mut ds.x, a.target_sum);
    let t3 = Instant::now();
    log1p(&mut ds.x);
    let t4 = Instant::now();
    let peak = proc_status_bytes("VmHWM");

    let x = &ds.x;
    let n = x.n_rows();
    let s = a.sample_rows.min(n);
    let rows: Vec<usize> = (0..s).map(|i| i * n / s).collect();
    let secs = |a: Instant, b: Instant| (b - a).as_secs_f64();
    let result = SideResult {
        tool: format!("scdd {}", scdd_core::SCDD_VERSION),
        startup_s,
        read_s: secs(t0, t1),
        qc_s: secs(t1, t2),
        normalize_s: secs(t2, t3),
        log1p_s: secs(t3, t4),
        total_s: secs(t0, t4),
        peak_rss_bytes: peak,
        baseline_rss_bytes: baseline,
        csr_bytes,
        n_obs: n as u64,
        n_vars: x.n_cols() as u64,
        nnz: x.nnz() as u64,
        cells_sha256: names_sha256(&ds.obs.index),
        genes_sha256: names_sha256(&ds.genes),
        row_nnz: x.indptr().windows(2).map(|w| w[1] - w[0]).collect(),
        row_sums: x.row_sums(),
        sample_rows: rows.iter().map(|&r| r as u64).collect(),
        sample_indices: rows.iter().map(|&r| x.row(r).0.to_vec()).collect(),
        sample_data: rows.iter().map(|&r| x.row(r).1.to_vec()).collect(),
    };
    std::fs::write(out, serde_json::to_vec(&result)?).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

fn names_sha256(names: &[String]) -> String {
    let mut buf = Vec::with_capacity(names.iter().map(|n| n.len() + 1).sum());
    for n in names {
        buf.extend_from_slice(n.as_bytes());
        buf.push(b'\n');
    }
    scdd_core::format::sha256_hex(&buf)
}

pub fn compare(s: &SideResult, p: &SideResult) -> Comparison {
    let same_shape = (s.n_obs, s.n_vars, s.nnz) == (p.n_obs, p.n_vars, p.nnz);
    let same_row_nnz = s.row_nnz == p.row_nnz;
    let mut max_abs_diff = 0f64;
    let mut values_sampled = 0;
    if s.sample_rows != p.sample_rows || s.sample_indices != p.sample_indices {
        max_abs_diff = f64::INFINITY;
    } else {
        for (a, b) in s.sample_data.iter().zip(&p.sample_data) {
            if a.len() != b.len() {
                max_abs_diff = f64::INFINITY;
                continue;
            }
            values_sampled += a.len();
            for (x, y) in a.iter().zip(b) {
                let d = (*x as f64 - *y as f64).abs();
                if d.is_nan() || d > max_abs_diff {
                    max_abs_diff = if d.is_nan() { f64::INFINITY } else { d };
                }
            }
        }
    }
    let max_row_sum_diff_per_value = if s.row_sums.len() == p.row_sums.len() && same_row_nnz {
        s.row_sums
            .iter()
            .zip(&p.row_sums)
            .zip(&s.row_nnz)
            .map(|((a, b), &k)| (a - b).abs() / k.max(1) as f64)
            .fold(0.0, f64::max)
    } else {
        f64::INFINITY
    };
    let same_cells = s.cells_sha256 == p.cells_sha256;
    let same_genes = s.genes_sha256 == p.genes_sha256;
    let equal = same_shape
        && same_cells
        && same_genes
        && same_row_nnz
        && max_abs_diff <= 1e-5
        && max_row_sum_diff_per_value <= 1e-5
        && !s.sample_rows.is_empty();
    Comparison {
        same_cells,
        same_genes,
        same_row_nnz,
        max_abs_diff,
        max_row_sum_diff_per_value,
        rows_sampled: s.sample_rows.len(),
        values_sampled,
        equal,
    }
}

// ------------------------------------------------------------------------------------------
// Output
// ------------------------------------------------------------------------------------------

fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / 1e6)
}

fn table(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let s = &r.scdd;
    let _ = writeln!(
        o,
        "scdd bench io: {} cells × {} genes, {} stored values ({:.2} % non-zeros), CSR arrays {}",
        r.cells,
        r.genes,
        r.stored,
        100.0 * r.stored as f64 / (r.cells as f64 * r.genes as f64),
        mb(s.csr_bytes)
    );
    let _ = writeln!(
        o,
        "file {} ({}, written by {}: {} arrays, scdd reads them {}; {})",
        r.file,
        mb(r.file_bytes),
        match r.writer {
            Writer::Scdd => "scdd",
            Writer::Anndata => "anndata",
        },
        if r.scdd_direct_reads { "contiguous" } else { "chunked or filtered" },
        if r.scdd_direct_reads { "directly on two threads" } else { "through HDF5" },
        match r.generate_s {
            Some(t) => format!("generated in {t:.1} s"),
            None => "reused".into(),
        }
    );
    let _ = writeln!(
        o,
        "QC min_counts={} min_cells={} -> {} cells × {} genes; normalize_total({}); log1p",
        r.qc.min_counts, r.qc.min_cells, s.n_obs, s.n_vars, r.target_sum
    );
    let _ = writeln!(o);
    let p = r.python.as_ref();
    let py_name = p.map(|p| p.tool.clone()).unwrap_or_else(|| "(not run)".into());
    let _ = writeln!(o, "{:<24} {:>12} {:>14}   {:>7}    [{} | {}]", "step", "scdd", "python", "ratio", s.tool, py_name);
    let row = |o: &mut String, name: &str, a: f64, b: Option<f64>| {
        let (bs, ratio) = match b {
            Some(b) => (format!("{b:.3} s"), format!("{:.1}×", b / a.max(1e-9))),
            None => ("-".into(), "-".into()),
        };
        let _ = writeln!(o, "{:<24} {:>12} {:>14}   {:>7}", name, format!("{a:.3} s"), bs, ratio);
    };
    row(&mut o, "read_h5ad", s.read_s, p.map(|p| p.read_s));
    row(&mut o, "QC (cells, genes)", s.qc_s, p.map(|p| p.qc_s));
    row(&mut o, "normalize_total", s.normalize_s, p.map(|p| p.normalize_s));
    row(&mut o, "log1p", s.log1p_s, p.map(|p| p.log1p_s));
    row(&mut o, "total", s.total_s, p.map(|p| p.total_s));
    row(&mut o, "startup (not in total)", s.startup_s, p.map(|p| p.startup_s));
    let _ = writeln!(o);
    let mem = |o: &mut String, name: &str, a: String, b: Option<String>| {
        let _ = writeln!(o, "{:<24} {:>12} {:>14}", name, a, b.unwrap_or_else(|| "-".into()));
    };
    mem(&mut o, "peak RSS", mb(s.peak_rss_bytes), p.map(|p| mb(p.peak_rss_bytes)));
    mem(&mut o, "  before reading", mb(s.baseline_rss_bytes), p.map(|p| mb(p.baseline_rss_bytes)));
    let over = |x: &SideResult| format!("{:.2}×", x.peak_rss_bytes as f64 / x.csr_bytes.max(1) as f64);
    let over_base = |x: &SideResult| {
        format!("{:.2}×", x.peak_rss_bytes.saturating_sub(x.baseline_rss_bytes) as f64 / x.csr_bytes.max(1) as f64)
    };
    mem(&mut o, "peak / CSR arrays", over(s), p.map(over));
    mem(&mut o, "(peak - before) / CSR", over_base(s), p.map(over_base));
    let _ = writeln!(o);
    match &r.comparison {
        Some(c) => {
            let _ = writeln!(
                o,
                "values: {} (cells {}, genes {}, non-zeros per row {}; max |diff| {:.2e} over {} values in {} sampled rows; max row-sum diff per value {:.2e} over all rows)",
                if c.equal { "equal to 1e-5" } else { "DIFFERENT" },
                if c.same_cells { "same" } else { "differ" },
                if c.same_genes { "same" } else { "differ" },
                if c.same_row_nnz { "same" } else { "differ" },
                c.max_abs_diff,
                c.values_sampled,
                c.rows_sampled,
                c.max_row_sum_diff_per_value
            );
        }
        None => {
            let _ = writeln!(o, "values: not compared (--no-python)");
        }
    }
    for (t, ok) in &r.targets {
        let _ = writeln!(o, "target: {t}: {}", if *ok { "met" } else { "NOT met" });
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_matrix_is_seeded_and_has_work_for_qc() {
        let m = generate_matrix(4000, 600, 0.05, 7).unwrap();
        assert_eq!(m, generate_matrix(4000, 600, 0.05, 7).unwrap());
        assert_ne!(m, generate_matrix(4000, 600, 0.05, 8).unwrap());
        let density = m.nnz() as f64 / (4000.0 * 600.0);
        assert!((density - 0.05).abs() < 0.005, "{density}");
        assert!(m.data().iter().all(|&v| v >= 1.0 && v.fract() == 0.0));
        let empty_cells = m.row_sums().iter().filter(|&&s| s < 10.0).count();
        assert!((10..=100).contains(&empty_cells), "{empty_cells} near-empty cells");
        let rare_genes = m.col_nnz().iter().filter(|&&n| n < 3).count();
        assert!(rare_genes >= 5, "{rare_genes} rare genes");
    }

    fn side(values: Vec<f32>) -> SideResult {
        SideResult {
            tool: "t".into(),
            startup_s: 0.0,
            read_s: 0.0,
            qc_s: 0.0,
            normalize_s: 0.0,
            log1p_s: 0.0,
            total_s: 1.0,
            peak_rss_bytes: 0,
            baseline_rss_bytes: 0,
            csr_bytes: 0,
            n_obs: 1,
            n_vars: 3,
            nnz: values.len() as u64,
            cells_sha256: "c".into(),
            genes_sha256: "g".into(),
            row_nnz: vec![values.len() as u64],
            row_sums: vec![values.iter().map(|&v| v as f64).sum()],
            sample_rows: vec![0],
            sample_indices: vec![(0..values.len() as u32).collect()],
            sample_data: vec![values],
        }
    }

    #[test]
    fn comparison_flags_differences() {
        let a = side(vec![1.0, 2.0, 3.0]);
        let c = compare(&a, &side(vec![1.0, 2.000001, 3.0]));
        assert!(c.equal && c.max_abs_diff > 0.0 && c.values_sampled == 3, "{c:?}");
        assert!(!compare(&a, &side(vec![1.0, 2.001, 3.0])).equal);
        assert!(!compare(&a, &side(vec![1.0, 2.0])).equal);
        let mut other_cells = side(vec![1.0, 2.0, 3.0]);
        other_cells.cells_sha256 = "x".into();
        assert!(!compare(&a, &other_cells).equal);
    }

    #[test]
    fn proc_status_is_read() {
        if cfg!(target_os = "linux") {
            // (other test threads allocate concurrently: only check that both are read)
            assert!(proc_status_bytes("VmHWM") > 0 && proc_status_bytes("VmRSS") > 0);
        }
        assert_eq!(proc_status_bytes("NoSuchKey"), 0);
    }
}
