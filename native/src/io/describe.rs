//! What a file holds, as a table or JSON (`scdd inspect`). An `.h5ad`: shape, sparsity, count
//! type, obs columns (with class counts for categoricals) and a sample of gene names. A
//! latent-code file (`.scdd`) or generator bundle (`.scddg`), recognised by its magic number
//! (or, when the header is damaged, its extension): what it was made from and what it needs or
//! decodes.
use crate::error::{bail, Context, Result};
use crate::io::artifacts::{load_bundle, load_codes};
use crate::io::h5ad::{H5adReader, MatrixSpec};
use scdd_core::bundle::{self, GeneratorBundle};
use scdd_core::codes::{self, LatentCodes, Provenance};
use scdd_core::format::FileKind;
use scdd_core::dataset::Dataset;
use scdd_core::obs::Column;
use scdd_core::preprocess::detect_count_type;
use serde::Serialize;
use std::path::Path;

/// Categories listed per categorical column before "… N more".
const TOP_CLASSES: usize = 10;
/// Gene names shown.
const GENE_SAMPLE: usize = 10;

/// A class and its number of cells.
#[derive(Debug, Serialize)]
pub struct ClassCount {
    pub name: String,
    pub cells: usize,
}

/// Everything `inspect` reports (the `--json` output).
#[derive(Debug, Serialize)]
pub struct Report {
    pub file: String,
    /// HDF5 path of the matrix read.
    pub matrix: String,
    /// `csr`, `csc` or `dense`.
    pub format: String,
    /// On-disk dtype of the values.
    pub dtype: String,
    pub n_cells: usize,
    pub n_genes: usize,
    pub nnz: usize,
    /// Fraction of zero entries.
    pub sparsity: f64,
    pub count_type: String,
    pub min_value: f32,
    pub max_value: f32,
    pub negative_values: usize,
    pub layers: Vec<String>,
    pub has_raw: bool,
    pub obs: Vec<ColumnSummary>,
    pub genes_sample: Vec<String>,
}

/// One obs column.
#[derive(Debug, Serialize)]
pub struct ColumnSummary {
    pub name: String,
    /// `categorical`, `numeric` or `text`.
    pub kind: String,
    /// Categorical: the number of categories that occur; text: distinct values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub n_classes: Option<usize>,
    /// Categorical: the most frequent classes, at most 10, most frequent first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_classes: Vec<ClassCount>,
    /// Categorical/text: missing values; numeric: NaN count.
    pub missing: usize,
    /// Numeric: minimum and maximum of the finite values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

/// `scdd inspect` as a library call: the description of `path` as text or JSON.
pub fn describe(path: &Path, matrix: &MatrixSpec, json: bool) -> Result<String> {
    if let Some(kind) = scdd_file_kind(path) {
        if matrix.layer.is_some() || matrix.raw || matrix.gene_symbols.is_some() {
            bail!("{}: --layer, --raw and --gene-symbols apply to .h5ad files, not to a {}", path.display(), kind.name);
        }
        let file = path.display().to_string();
        let bytes = std::fs::metadata(path).with_context(|| file.clone())?.len() as usize;
        return Ok(if kind.magic == codes::KIND.magic {
            let r = codes_report(&file, &load_codes(path)?, bytes);
            if json { serde_json::to_string_pretty(&r)? + "\n" } else { render_codes(&r) }
        } else {
            let r = bundle_report(&file, &load_bundle(path)?, bytes);
            if json { serde_json::to_string_pretty(&r)? + "\n" } else { render_bundle(&r) }
        });
    }
    matrix.check()?;
    let report = inspect(path, matrix)?;
    Ok(if json { serde_json::to_string_pretty(&report)? + "\n" } else { render(&report) })
}

/// Reads an `.h5ad` and builds its report.
pub fn inspect(path: &Path, matrix: &MatrixSpec) -> Result<Report> {
    let opts = matrix.read_options();
    let reader = H5adReader::open(path, &opts)?;
    let ds = reader.read_dataset()?;
    let info = reader.info();
    let data = ds.x.data();
    let min_value = data.iter().copied().fold(f32::INFINITY, f32::min);
    let max_value = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    // Implicit zeros count towards min/max when the matrix is not fully stored.
    let has_zeros = (ds.x.nnz() as f64) < ds.n_cells() as f64 * ds.n_genes() as f64 || data.contains(&0.0);
    let (min_value, max_value) = match (data.is_empty(), has_zeros) {
        (true, _) => (0.0, 0.0),
        (false, true) => (min_value.min(0.0), max_value.max(0.0)),
        (false, false) => (min_value, max_value),
    };
    Ok(Report {
        file: path.display().to_string(),
        matrix: info.path.clone(),
        format: info.format.to_string(),
        dtype: info.dtype.clone(),
        n_cells: ds.n_cells(),
        n_genes: ds.n_genes(),
        nnz: ds.x.nnz(),
        sparsity: ds.x.sparsity(),
        count_type: detect_count_type(&ds.x).to_string(),
        min_value,
        max_value,
        negative_values: data.iter().filter(|&&v| v < 0.0).count(),
        layers: reader.layer_names(),
        has_raw: reader.has_raw(),
        obs: summarize_obs(&ds),
        genes_sample: ds.genes.iter().take(GENE_SAMPLE).cloned().collect(),
    })
}

fn summarize_obs(ds: &Dataset) -> Vec<ColumnSummary> {
    ds.obs
        .columns
        .iter()
        .map(|(name, col)| {
            let mut s = ColumnSummary {
                name: name.clone(),
                kind: col.kind().to_string(),
                n_classes: None,
                top_classes: Vec::new(),
                missing: 0,
                min: None,
                max: None,
            };
            match col {
                Column::Categorical { codes, categories, .. } => {
                    let mut counts = vec![0usize; categories.len()];
                    for &c in codes {
                        match usize::try_from(c).ok().and_then(|c| counts.get_mut(c)) {
                            Some(n) => *n += 1,
                            None => s.missing += 1,
                        }
                    }
                    let mut order: Vec<(String, usize)> =
                        categories.iter().cloned().zip(counts).filter(|(_, n)| *n > 0).collect();
                    order.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
                    s.n_classes = Some(order.len());
                    s.top_classes =
                        order.into_iter().take(TOP_CLASSES).map(|(name, cells)| ClassCount { name, cells }).collect();
                }
                Column::Numeric(v) => {
                    s.missing = v.iter().filter(|x| x.is_nan()).count();
                    let finite = v.iter().copied().filter(|x| x.is_finite());
                    s.min = finite.clone().reduce(f64::min);
                    s.max = finite.reduce(f64::max);
                }
                Column::Text(v) => {
                    s.missing = v.iter().filter(|x| x.is_empty()).count();
                    let mut distinct: Vec<&str> = v.iter().map(String::as_str).collect();
                    distinct.sort_unstable();
                    distinct.dedup();
                    s.n_classes = Some(distinct.len());
                }
            }
            s
        })
        .collect()
}

/// The human-readable table.
pub fn render(r: &Report) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "file        {}", r.file);
    let _ = writeln!(o, "matrix      {} ({}, {})", r.matrix, r.format, r.dtype);
    let _ = writeln!(o, "shape       {} cells × {} genes", r.n_cells, r.n_genes);
    let _ = writeln!(o, "non-zeros   {} stored values, sparsity {:.2} %", r.nnz, 100.0 * r.sparsity);
    let _ = writeln!(o, "count type  {}", r.count_type);
    let neg = if r.negative_values > 0 { format!(", {} negative values", r.negative_values) } else { String::new() };
    let _ = writeln!(o, "values      min {}, max {}{neg}", num(r.min_value as f64), num(r.max_value as f64));
    let layers = if r.layers.is_empty() { "(none)".to_string() } else { r.layers.join(", ") };
    let _ = writeln!(o, "layers      {layers}");
    let _ = writeln!(o, "raw         {}", if r.has_raw { "yes (use --raw)" } else { "no" });
    let _ = writeln!(o, "obs         {} columns", r.obs.len());
    let width = r.obs.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    for c in &r.obs {
        let detail = match c.kind.as_str() {
            "categorical" => {
                let n = c.n_classes.unwrap_or(0);
                let mut parts: Vec<String> = c.top_classes.iter().map(|k| format!("{}={}", k.name, k.cells)).collect();
                if n > c.top_classes.len() {
                    parts.push(format!("… {} more", n - c.top_classes.len()));
                }
                let missing = if c.missing > 0 { format!(" ({} missing)", c.missing) } else { String::new() };
                format!("{n} classes{missing}: {}", parts.join(", "))
            }
            "numeric" => {
                let range = match (c.min, c.max) {
                    (Some(a), Some(b)) => format!("min {}, max {}", num(a), num(b)),
                    _ => "no finite values".to_string(),
                };
                if c.missing > 0 {
                    format!("{range}, {} NaN", c.missing)
                } else {
                    range
                }
            }
            _ => format!("{} distinct values", c.n_classes.unwrap_or(0)),
        };
        let _ = writeln!(o, "  {:<width$}  {:<11}  {detail}", c.name, c.kind);
    }
    let more = r.n_genes.saturating_sub(r.genes_sample.len());
    let tail = if more > 0 { format!(", … {more} more") } else { String::new() };
    let _ = writeln!(o, "genes       {}{tail}", r.genes_sample.join(", "));
    o
}

/// A number in at most 6 significant digits, without trailing zeros.
fn num(x: f64) -> String {
    if x == x.trunc() && x.abs() < 1e15 {
        return format!("{x:.0}");
    }
    let digits = (5 - x.abs().log10().floor() as i32).clamp(0, 12) as usize;
    let s = format!("{x:.digits$}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The kind of scdd file `path` starts with (by its magic number), or `None` for anything else,
/// also an unreadable file (the `.h5ad` reader then names the problem).
fn scdd_file_kind(path: &Path) -> Option<FileKind> {
    use std::io::Read;
    let mut magic = [0u8; 8];
    let n = std::fs::File::open(path).and_then(|mut f| f.read(&mut magic)).ok()?;
    let by_magic = [codes::KIND, bundle::KIND].into_iter().find(|k| n == 8 && magic == k.magic);
    // A damaged header still gets its own format's error, chosen by the extension.
    by_magic.or_else(|| match path.extension().and_then(|e| e.to_str()) {
        Some("scdd") => Some(codes::KIND),
        Some("scddg") => Some(bundle::KIND),
        _ => None,
    })
}

/// `scdd inspect codes.scdd --json`.
#[derive(Debug, Serialize)]
pub struct CodesReport {
    pub file: String,
    pub bytes: usize,
    pub n_codes: usize,
    pub latent_dim: usize,
    /// `f32` or `f16`.
    pub dtype: String,
    pub spc: u32,
    pub timestep: u32,
    pub label_column: String,
    /// Codes per class, for the classes that have any.
    pub classes: Vec<ClassCount>,
    /// The generator's classes without codes in this file (a shard of a larger distillation).
    pub classes_without_codes: Vec<String>,
    pub generator_id: String,
    pub provenance: Provenance,
}

pub fn codes_report(file: &str, c: &LatentCodes, bytes: usize) -> CodesReport {
    let mut counts = vec![0usize; c.classes.len()];
    for &l in &c.labels {
        counts[l as usize] += 1;
    }
    let (with, without): (Vec<_>, Vec<_>) = c.classes.iter().cloned().zip(counts).partition(|(_, n)| *n > 0);
    CodesReport {
        file: file.to_string(),
        bytes,
        n_codes: c.n_codes(),
        latent_dim: c.latent_dim(),
        dtype: format!("{:?}", c.codes.dtype).to_lowercase(),
        spc: c.spc,
        timestep: c.timestep,
        label_column: c.label_column.clone(),
        classes: with.into_iter().map(|(name, cells)| ClassCount { name, cells }).collect(),
        classes_without_codes: without.into_iter().map(|(name, _)| name).collect(),
        generator_id: c.generator_id.clone(),
        provenance: c.provenance.clone(),
    }
}

pub fn render_codes(r: &CodesReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let p = &r.provenance;
    let _ = writeln!(o, "file        {} (scdd latent codes, {} bytes)", r.file, r.bytes);
    let _ = writeln!(o, "codes       {} × {} ({}), {} per class, decoded at timestep {}", r.n_codes, r.latent_dim, r.dtype, r.spc, r.timestep);
    let parts: Vec<String> = r.classes.iter().map(|k| format!("{}={}", k.name, k.cells)).collect();
    let _ = writeln!(o, "classes     {} of obs/{}: {}", r.classes.len(), r.label_column, parts.join(", "));
    if !r.classes_without_codes.is_empty() {
        let _ = writeln!(o, "no codes    {}", r.classes_without_codes.join(", "));
    }
    let _ = writeln!(o, "generator   {} (decode with the bundle of this id)", r.generator_id);
    let _ = writeln!(o, "method      {}, seed {}", p.method, p.seed);
    let params: Vec<String> = p.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !params.is_empty() {
        let _ = writeln!(o, "parameters  {}", params.join(", "));
    }
    let _ = writeln!(o, "source      {} ({} cells × {} genes)", p.source_name, p.source_shape.0, p.source_shape.1);
    let _ = writeln!(o, "made by     scdd {} at {}", p.scdd_version, p.created);
    o
}

/// `scdd inspect gen.scddg --json`.
#[derive(Debug, Serialize)]
pub struct BundleReport {
    pub file: String,
    pub bytes: usize,
    /// What latent codes are tied to (covers decoder, denoiser, schedule, genes, classes).
    pub generator_id: String,
    pub n_genes: usize,
    pub genes_sample: Vec<String>,
    pub latent_dim: usize,
    /// Input/output space: cells scaled to this total, then log1p.
    pub target_sum: f32,
    pub log1p: bool,
    pub encoder: Option<String>,
    pub decoder: String,
    /// `None`: a foundation-only bundle (no generator).
    pub denoiser: Option<String>,
    pub schedule: String,
    pub task_head: Option<String>,
    pub label_column: String,
    pub classes: Vec<String>,
    pub parameters: usize,
    pub metadata_keys: Vec<String>,
}

pub fn bundle_report(file: &str, b: &GeneratorBundle, bytes: usize) -> BundleReport {
    let s = &b.spec;
    let sch = &s.schedule;
    BundleReport {
        file: file.to_string(),
        bytes,
        generator_id: b.generator_id(),
        n_genes: s.n_genes,
        genes_sample: b.genes.iter().take(GENE_SAMPLE).cloned().collect(),
        latent_dim: s.latent_dim,
        target_sum: s.space.target_sum,
        log1p: s.space.log1p,
        encoder: s.encoder.as_ref().map(|e| e.summary()),
        decoder: s.decoder.summary(),
        denoiser: s.denoiser.as_ref().map(|d| {
            let hidden: Vec<String> = d.hidden.iter().map(|h| h.to_string()).collect();
            format!("{} → [{}] → {}, time/class embedding {}, {} classes", d.latent_dim, hidden.join(", "), d.latent_dim, d.emb_dim, d.n_classes)
        }),
        schedule: format!("linear β {}…{}, T = {}", sch.beta_min, sch.beta_max, sch.steps),
        task_head: s.task_head.as_ref().map(|h| h.summary()),
        label_column: b.label_column.clone(),
        classes: b.classes.clone(),
        parameters: b.tensors.values().map(|t| t.numel()).sum(),
        metadata_keys: b.metadata.keys().cloned().collect(),
    }
}

pub fn render_bundle(r: &BundleReport) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let kind = if r.denoiser.is_some() { "generator bundle" } else { "foundation model (no generator)" };
    let _ = writeln!(o, "file        {} (scdd {kind}, {} bytes, {} parameters)", r.file, r.bytes, r.parameters);
    let _ = writeln!(o, "id          {}", r.generator_id);
    let more = r.n_genes.saturating_sub(r.genes_sample.len());
    let more = if more > 0 { format!(", … {more} more") } else { String::new() };
    let _ = writeln!(o, "genes       {}: {}{more}", r.n_genes, r.genes_sample.join(", "));
    let space = if r.log1p { format!("log1p of counts per {} per cell", num(r.target_sum as f64)) } else { format!("counts per {} per cell", num(r.target_sum as f64)) };
    let _ = writeln!(o, "expression  {space}");
    let _ = writeln!(o, "encoder     {}", r.encoder.as_deref().unwrap_or("(none: decoding only)"));
    let _ = writeln!(o, "decoder     {}", r.decoder);
    if let Some(d) = &r.denoiser {
        let _ = writeln!(o, "denoiser    {d}");
        let _ = writeln!(o, "schedule    {}", r.schedule);
    }
    if let Some(h) = &r.task_head {
        let _ = writeln!(o, "task head   {h}");
    }
    if !r.classes.is_empty() {
        let _ = writeln!(o, "classes     {} of obs/{}: {}", r.classes.len(), r.label_column, r.classes.join(", "));
    }
    if !r.metadata_keys.is_empty() {
        let _ = writeln!(o, "metadata    {}", r.metadata_keys.join(", "));
    }
    o
}
