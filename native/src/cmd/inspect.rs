//! `scdd inspect DATA.h5ad`: what a file holds — shape, sparsity, count type, obs columns
//! (with class counts for categoricals) and a sample of gene names — as a table or JSON.
use crate::h5ad::H5adReader;
use anyhow::Result;
use scdd_core::dataset::Dataset;
use scdd_core::obs::Column;
use scdd_core::preprocess::detect_count_type;
use serde::Serialize;
use std::path::PathBuf;

/// Categories listed per categorical column before "… N more".
const TOP_CLASSES: usize = 10;
/// Gene names shown.
const GENE_SAMPLE: usize = 10;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The AnnData file.
    pub data: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub matrix: super::MatrixArgs,
}

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

pub fn run(args: Args) -> Result<()> {
    let report = inspect(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render(&report));
    }
    Ok(())
}

/// Reads the file and builds the report.
pub fn inspect(args: &Args) -> Result<Report> {
    let opts = args.matrix.read_options();
    let reader = H5adReader::open(&args.data, &opts)?;
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
        file: args.data.display().to_string(),
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
