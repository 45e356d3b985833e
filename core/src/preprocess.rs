//! Preprocessing as in the paper (§IV-C) and scanpy: QC filters, `normalize_total`, `log1p`,
//! count-type detection, gene alignment to a reference list, stratified train/test split.
//!
//! Everything works on the sparse matrix; nothing densifies a dataset.
use crate::dataset::Dataset;
use crate::error::{CoreError, Result};
use crate::matrix::CsrMatrix;
use crate::obs::Labels;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;

/// QC thresholds (scanpy `filter_cells(min_counts)` then `filter_genes(min_cells)`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QcParams {
    /// Cells with fewer total counts are dropped.
    pub min_counts: f64,
    /// Genes detected (non-zero) in fewer of the remaining cells are dropped.
    pub min_cells: u64,
}

impl Default for QcParams {
    fn default() -> Self {
        QcParams { min_counts: 10.0, min_cells: 3 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QcReport {
    pub cells_in: usize,
    pub cells_kept: usize,
    pub genes_in: usize,
    pub genes_kept: usize,
}

/// Drops low-count cells, then genes seen in too few of the remaining cells.
/// Returns the filtered dataset, the kept cell rows (into the input) and a report.
/// [`qc_filter_in_place`] does the same without copying the matrix.
pub fn qc_filter(ds: &Dataset, p: &QcParams) -> (Dataset, Vec<usize>, QcReport) {
    let (keep_rows, keep_genes) = qc_masks(&ds.x, p);
    let rows: Vec<usize> = (0..ds.n_cells()).filter(|&r| keep_rows[r]).collect();
    let mut x = ds.x.select_rows(&rows);
    x.retain(&vec![true; rows.len()], &keep_genes);
    let genes = ds.genes.iter().zip(&keep_genes).filter(|(_, &k)| k).map(|(g, _)| g.clone()).collect();
    let out = Dataset { name: ds.name.clone(), x, genes, obs: ds.obs.select(&rows) };
    let report = QcReport {
        cells_in: ds.n_cells(),
        cells_kept: out.n_cells(),
        genes_in: ds.n_genes(),
        genes_kept: out.n_genes(),
    };
    (out, rows, report)
}

/// [`qc_filter`] in place: the matrix is compacted in one pass, never copied, so peak memory
/// stays at one matrix. Returns the kept cell rows (into the input) and a report.
pub fn qc_filter_in_place(ds: &mut Dataset, p: &QcParams) -> (Vec<usize>, QcReport) {
    let (keep_rows, keep_genes) = qc_masks(&ds.x, p);
    let rows: Vec<usize> = (0..ds.n_cells()).filter(|&r| keep_rows[r]).collect();
    let (cells_in, genes_in) = (ds.n_cells(), ds.n_genes());
    ds.x.retain(&keep_rows, &keep_genes);
    let mut k = keep_genes.iter();
    ds.genes.retain(|_| *k.next().unwrap());
    if rows.len() != cells_in {
        ds.obs = ds.obs.select(&rows);
    }
    let report = QcReport { cells_in, cells_kept: ds.n_cells(), genes_in, genes_kept: ds.n_genes() };
    (rows, report)
}

/// Which cells pass `min_counts` (total ≥ threshold, as scanpy's `filter_cells`) and which
/// genes are non-zero in at least `min_cells` of those cells (scanpy's `filter_genes`).
fn qc_masks(x: &CsrMatrix, p: &QcParams) -> (Vec<bool>, Vec<bool>) {
    let mut keep_rows = vec![false; x.n_rows()];
    let mut counts = vec![0u64; x.n_cols()];
    for (r, keep) in keep_rows.iter_mut().enumerate() {
        let (idx, val) = x.row(r);
        let total: f64 = val.iter().map(|&v| v as f64).sum();
        if total >= p.min_counts {
            *keep = true;
            for (&c, &v) in idx.iter().zip(val) {
                if v != 0.0 {
                    counts[c as usize] += 1;
                }
            }
        }
    }
    let keep_genes = counts.iter().map(|&n| n >= p.min_cells).collect();
    (keep_rows, keep_genes)
}

/// Scales every cell to `target_sum` total counts (cells with zero counts are left at zero),
/// as scanpy's `normalize_total(target_sum=…)`.
pub fn normalize_total(x: &mut CsrMatrix, target_sum: f32) {
    let sums = x.row_sums();
    let indptr = x.indptr().to_vec();
    let data = x.data_mut();
    for (r, s) in sums.iter().enumerate() {
        if *s > 0.0 {
            let f = (target_sum as f64 / s) as f32;
            for v in &mut data[indptr[r] as usize..indptr[r + 1] as usize] {
                *v *= f;
            }
        }
    }
}

/// `ln(1 + x)` on the stored values (see [`ln_1p_f32`]).
pub fn log1p(x: &mut CsrMatrix) {
    ln_1p_slice(x.data_mut());
}

/// [`ln_1p_f32`] on every value, in blocks the compiler vectorises: blocks whose values all
/// take the common path run branch-free.
pub fn ln_1p_slice(values: &mut [f32]) {
    let mut blocks = values.chunks_exact_mut(16);
    for b in &mut blocks {
        if b.iter().fold(true, |all, &v| all & ln_1p_common(v)) {
            for v in b.iter_mut() {
                *v = ln_1p_core(*v);
            }
        } else {
            for v in b.iter_mut() {
                *v = ln_1p_f32(*v);
            }
        }
    }
    for v in blocks.into_remainder() {
        *v = ln_1p_f32(*v);
    }
}

/// `ln(1 + x)` for an `f32`, computed in `f64` and rounded once: it agrees with
/// `(x as f64).ln_1p() as f32` (a correctly rounded `log1pf`, which glibc's is not quite).
/// Pure arithmetic without libm on the common path, so about twice as fast as `f32::ln_1p`
/// on large matrices and bit-identical on every platform (native and wasm32).
#[inline]
pub fn ln_1p_f32(x: f32) -> f32 {
    if ln_1p_common(x) {
        return ln_1p_core(x);
    }
    let xd = x as f64;
    if xd.abs() < 1e-4 {
        // ln(1+x) = x − x²/2 + x³/3 − x⁴/4 + …, |x⁵/5| < 2e-21
        return (xd * (1.0 - xd * (0.5 - xd * (1.0 / 3.0 - xd * 0.25)))) as f32;
    }
    x.ln_1p() // ≤ -1 (−inf, NaN), huge, infinite, NaN
}

/// Values [`ln_1p_core`] handles: 1e-4 ≤ |x| < 1e30 and x > −1.
#[inline(always)]
fn ln_1p_common(x: f32) -> bool {
    (1e-4..1e30).contains(&x) | (x <= -1e-4 && x > -1.0)
}

#[inline(always)]
fn ln_1p_core(x: f32) -> f32 {
    // 1 + x is exact in f64 for |x| ≥ 1e-4 (an f32 has 24 significant bits).
    let u = 1.0 + x as f64;
    let bits = u.to_bits();
    let m0 = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000); // [1, 2)
    let big = m0 > std::f64::consts::SQRT_2;
    let m = if big { m0 * 0.5 } else { m0 };
    // the unbiased exponent as f64 without an int → float conversion (vectorises on SSE2)
    let k = f64::from_bits(0x4330_0000_0000_0000 | (bits >> 52)) - (4503599627370496.0 + 1023.0)
        + if big { 1.0 } else { 0.0 };
    // ln m = 2·atanh(s), s = (m − 1)/(m + 1), |s| ≤ 0.1716: s^16/17 < 2e-14 relative.
    let s = (m - 1.0) / (m + 1.0);
    let z = s * s;
    let p = 1.0
        + z * (1.0 / 3.0
            + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0 + z * (1.0 / 11.0 + z * (1.0 / 13.0 + z * (1.0 / 15.0)))))));
    (k * std::f64::consts::LN_2 + 2.0 * s * p) as f32
}

/// What kind of values a matrix holds, judged from its stored values.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum CountType {
    /// Non-negative integers: raw UMI/read counts.
    RawCounts,
    /// `log1p` of per-cell normalised counts. `target_sum` is the mean per-cell total of the
    /// `expm1` values: the normalisation target when the file holds every gene it was
    /// normalised over, less when genes were dropped afterwards (e.g. scanpy's `raw` after
    /// gene filtering), in which case the totals also vary from cell to cell.
    LogNormalized { target_sum: f64 },
    /// Per-cell normalised, not logged; `target_sum` as for `LogNormalized`.
    Normalized { target_sum: f64 },
    /// Negative values present: scaled / centred data, not usable as expression.
    Scaled,
    /// Non-negative, non-integer, without constant row sums.
    Other,
}

impl fmt::Display for CountType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CountType::RawCounts => write!(f, "raw counts (non-negative integers)"),
            CountType::LogNormalized { target_sum } => {
                write!(f, "log1p of per-cell normalised counts (mean total {target_sum:.0} per cell)")
            }
            CountType::Normalized { target_sum } => {
                write!(f, "per-cell normalised counts, not logged (mean total {target_sum:.0} per cell)")
            }
            CountType::Scaled => write!(f, "scaled values (negative entries present)"),
            CountType::Other => write!(f, "non-integer non-negative values of unknown normalisation"),
        }
    }
}

/// Looks at up to 2000 evenly spaced rows and classifies the values.
pub fn detect_count_type(x: &CsrMatrix) -> CountType {
    let n = x.n_rows();
    let step = (n / 2000).max(1);
    let rows: Vec<usize> = (0..n).step_by(step).collect();
    let mut integer = true;
    for &r in &rows {
        for &v in x.row(r).1 {
            if v < 0.0 {
                return CountType::Scaled;
            }
            if (v - v.round()).abs() > 1e-4 {
                integer = false;
            }
        }
    }
    if integer {
        return CountType::RawCounts;
    }
    let constant = |sums: &[f64]| -> Option<f64> {
        let nz: Vec<f64> = sums.iter().copied().filter(|s| *s > 0.0).collect();
        if nz.is_empty() {
            return None;
        }
        let mean = nz.iter().sum::<f64>() / nz.len() as f64;
        // expm1 of non-logged values overflows to inf: inf - inf is NaN, which f64::max
        // would skip, so an infinite mean must be refused explicitly.
        if !mean.is_finite() {
            return None;
        }
        let max_dev = nz.iter().map(|s| (s - mean).abs()).fold(0.0, f64::max);
        (max_dev <= 1e-2 * mean).then_some(mean)
    };
    let expm1_sums: Vec<f64> = rows.iter().map(|&r| x.row(r).1.iter().map(|&v| (v as f64).exp_m1()).sum()).collect();
    if let Some(t) = constant(&expm1_sums) {
        return CountType::LogNormalized { target_sum: t };
    }
    let sums: Vec<f64> = rows.iter().map(|&r| x.row(r).1.iter().map(|&v| v as f64).sum()).collect();
    if let Some(t) = constant(&sums) {
        return CountType::Normalized { target_sum: t };
    }
    // Totals vary: genes may have been dropped after normalising. Normalised counts are
    // still integer multiples of a per-cell unit (the value of one count).
    let mean_nz = |sums: &[f64]| {
        let nz: Vec<f64> = sums.iter().copied().filter(|s| *s > 0.0).collect();
        nz.iter().sum::<f64>() / nz.len().max(1) as f64
    };
    let log_sum = mean_nz(&expm1_sums);
    if log_sum.is_finite() && on_count_lattice(x, &rows, true) {
        return CountType::LogNormalized { target_sum: log_sum };
    }
    if on_count_lattice(x, &rows, false) {
        return CountType::Normalized { target_sum: mean_nz(&sums) };
    }
    CountType::Other
}

/// Whether most rows look like `u·c` (or `ln(1 + u·c)` when `logged`) for a per-row unit `u`
/// and small integers `c`: the signature of per-cell normalised counts whatever genes were
/// kept. The unit is the row's smallest value (a gene seen once). Only values of 2 to 8
/// units are tested (there the lattice is coarse enough to tell), with a tolerance that
/// allows values rounded to 3 decimals, as some published files are.
fn on_count_lattice(x: &CsrMatrix, rows: &[usize], logged: bool) -> bool {
    let (mut tested, mut passed) = (0usize, 0usize);
    for &r in rows {
        let vals = x.row(r).1;
        if vals.len() < 10 {
            continue;
        }
        let unit_of = |v: f32| if logged { (v as f64).exp_m1() } else { v as f64 };
        let u = vals.iter().map(|&v| unit_of(v)).filter(|&w| w > 0.0).fold(f64::INFINITY, f64::min);
        if !u.is_finite() {
            continue;
        }
        let (mut n, mut ok) = (0usize, 0usize);
        for &v in vals {
            let w = unit_of(v);
            let c = (w / u).round();
            // c = 1 is the unit itself: it proves nothing.
            if !(2.0..=8.0).contains(&c) {
                continue;
            }
            n += 1;
            // Rounding to 3 decimals moves a value by 5e-4 and the unit by up to c times that
            // (after mapping through ln_1p); never allow more than a tenth of the lattice
            // spacing, or any values would pass.
            let (back, tol) = if logged {
                let spacing = ((c + 1.0) * u).ln_1p() - (c * u).ln_1p();
                ((c * u).ln_1p(), (6e-4 * (1.0 + c * (1.0 + u) / (1.0 + c * u))).min(0.1 * spacing))
            } else {
                (c * u, (6e-4 * (1.0 + c) + 1e-6 * c * u).min(0.1 * u))
            };
            if (v as f64 - back).abs() <= tol {
                ok += 1;
            }
        }
        // Rows whose smallest value is not one count (rare) fail; that is fine.
        if n >= 3 {
            tested += 1;
            if ok as f64 >= 0.98 * n as f64 {
                passed += 1;
            }
        }
    }
    tested >= 3 && passed as f64 >= 0.8 * tested as f64
}

/// Turns the matrix into the model's input space (normalised to `target_sum`, log1p), whatever
/// the input holds, without normalising twice. Returns what was found. Refuses scaled data and
/// values of unknown normalisation, naming `field`.
pub fn to_log_normalized(x: &mut CsrMatrix, target_sum: f32, field: &str) -> Result<CountType> {
    let kind = detect_count_type(x);
    to_log_normalized_as(x, &kind, target_sum, field)?;
    Ok(kind)
}

/// As [`to_log_normalized`] with the kind of values already known, e.g. detected once on a
/// sample of a whole file and then applied to each chunk or row subset read from it (detection
/// on a handful of rows is unreliable).
pub fn to_log_normalized_as(x: &mut CsrMatrix, kind: &CountType, target_sum: f32, field: &str) -> Result<()> {
    match kind {
        CountType::RawCounts => {
            normalize_total(x, target_sum);
            log1p(x);
        }
        CountType::LogNormalized { .. } => {
            // Left alone only when every cell already totals target_sum (the detected mean
            // can match while gene-subset cells vary).
            let t = target_sum as f64;
            let off = (0..x.n_rows()).any(|r| {
                let s: f64 = x.row(r).1.iter().map(|&v| (v as f64).exp_m1()).sum();
                s > 0.0 && (s - t).abs() > 1e-2 * t
            });
            if off {
                rescale_log_normalized(x, target_sum);
            }
        }
        CountType::Normalized { .. } => {
            normalize_total(x, target_sum);
            log1p(x);
        }
        CountType::Scaled | CountType::Other => {
            return Err(CoreError::data(
                field,
                format!("holds {kind}; scdd needs raw counts or log-normalised values (try --raw or --layer)"),
            ))
        }
    }
    Ok(())
}

fn rescale_log_normalized(x: &mut CsrMatrix, target_sum: f32) {
    for v in x.data_mut() {
        *v = v.exp_m1();
    }
    normalize_total(x, target_sum);
    log1p(x);
}

/// Errors on the first negative value, naming its row and column.
pub fn check_non_negative(x: &CsrMatrix, field: &str) -> Result<()> {
    for r in 0..x.n_rows() {
        let (idx, val) = x.row(r);
        if let Some(k) = val.iter().position(|&v| v < 0.0) {
            return Err(CoreError::data(
                field,
                format!("negative value {} at row {r}, column {}; expression values must be >= 0", val[k], idx[k]),
            ));
        }
    }
    Ok(())
}

/// How a dataset's genes map onto a reference gene list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GeneAlignment {
    pub n_reference: usize,
    pub n_data: usize,
    /// Reference genes found in the data.
    pub overlap: usize,
    /// Up to 20 reference genes absent from the data (filled with zeros).
    pub missing_sample: Vec<String>,
}

/// Fewer shared genes than this (or than half the model's genes, whichever is smaller) is
/// refused: the native reader and the browser apply the same rule.
pub const DEFAULT_MIN_OVERLAP: usize = 5000;

/// The minimum overlap used for a model with `n_genes` genes.
pub fn min_overlap(n_genes: usize) -> usize {
    DEFAULT_MIN_OVERLAP.min(n_genes.div_ceil(2))
}

/// Reorders the data's genes to `reference` (missing genes → 0, extra genes dropped).
/// Errors when fewer than `min_overlap` reference genes are present.
pub fn align_genes(ds: &Dataset, reference: &[String], min_overlap: usize) -> Result<(Dataset, GeneAlignment)> {
    let pos: std::collections::HashMap<&str, u32> =
        reference.iter().enumerate().map(|(i, g)| (g.as_str(), i as u32)).collect();
    let map: Vec<u32> = ds.genes.iter().map(|g| pos.get(g.as_str()).copied().unwrap_or(u32::MAX)).collect();
    let mut present = vec![false; reference.len()];
    for &m in &map {
        if m != u32::MAX {
            present[m as usize] = true;
        }
    }
    let overlap = present.iter().filter(|&&p| p).count();
    let missing_sample =
        reference.iter().zip(&present).filter(|(_, &p)| !p).take(20).map(|(g, _)| g.clone()).collect();
    let report = GeneAlignment { n_reference: reference.len(), n_data: ds.n_genes(), overlap, missing_sample };
    if overlap < min_overlap {
        return Err(CoreError::data(
            format!("{}:var", ds.name),
            format!(
                "only {overlap} of the model's {} genes are in the data (minimum {min_overlap}); are the gene names of the same kind (symbols vs Ensembl ids)?",
                reference.len()
            ),
        ));
    }
    let x = ds.x.remap_cols(&map, reference.len());
    let out = Dataset { name: ds.name.clone(), x, genes: reference.to_vec(), obs: ds.obs.clone() };
    Ok((out, report))
}

/// Parameters of [`stratified_split`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitParams {
    pub test_fraction: f64,
    pub seed: u64,
}

impl Default for SplitParams {
    fn default() -> Self {
        SplitParams { test_fraction: 0.3, seed: 0 }
    }
}

/// A stratified split of cell rows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
    /// Classes kept, in label order.
    pub classes: Vec<String>,
    /// Classes with fewer than two cells (name, cells): dropped.
    pub dropped_classes: Vec<(String, usize)>,
    /// Cells without a label: dropped.
    pub unlabelled: usize,
}

/// Splits each class at random (seeded): `round(n·test_fraction)` cells, at least one and at
/// most `n − 1`, go to the test set. Classes with fewer than two cells are dropped and listed.
pub fn stratified_split(labels: &Labels, p: &SplitParams) -> Result<Split> {
    if !(p.test_fraction > 0.0 && p.test_fraction < 1.0) {
        return Err(CoreError::param("test_fraction", p.test_fraction, "must be in (0, 1)"));
    }
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); labels.classes.len()];
    let mut unlabelled = 0;
    for (i, id) in labels.ids.iter().enumerate() {
        match id {
            Some(c) => by_class[*c as usize].push(i),
            None => unlabelled += 1,
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(p.seed);
    let (mut train, mut test, mut classes, mut dropped) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (c, mut rows) in by_class.into_iter().enumerate() {
        let name = &labels.classes[c];
        if rows.len() < 2 {
            dropped.push((name.clone(), rows.len()));
            continue;
        }
        classes.push(name.clone());
        rows.shuffle(&mut rng);
        let n_test = ((rows.len() as f64 * p.test_fraction).round() as usize).clamp(1, rows.len() - 1);
        test.extend_from_slice(&rows[..n_test]);
        train.extend_from_slice(&rows[n_test..]);
    }
    if classes.is_empty() {
        return Err(CoreError::data(
            format!("obs/{}", labels.column),
            "no class has at least two cells; nothing to split",
        ));
    }
    train.sort_unstable();
    test.sort_unstable();
    Ok(Split { train, test, classes, dropped_classes: dropped, unlabelled })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::obs::{Column, ObsTable};

    fn ds() -> Dataset {
        // 4 cells × 3 genes; cell 3 has 5 counts (dropped at min_counts 10); gene 2 seen once.
        let x = CsrMatrix::from_dense(
            4,
            3,
            &[10., 5., 0., 4., 8., 0., 6., 6., 3., 2., 3., 0.],
            "t",
        )
        .unwrap();
        let obs = ObsTable { index: (0..4).map(|i| format!("c{i}")).collect(), columns: vec![] };
        Dataset::new("t", x, vec!["A".into(), "B".into(), "C".into()], obs).unwrap()
    }

    #[test]
    fn qc_then_normalize_log1p() {
        let (f, rows, rep) = qc_filter(&ds(), &QcParams { min_counts: 10.0, min_cells: 2 });
        assert_eq!(rows, vec![0, 1, 2]);
        assert_eq!((rep.cells_kept, rep.genes_kept), (3, 2));
        let mut x = f.x.clone();
        assert_eq!(detect_count_type(&x), CountType::RawCounts);
        normalize_total(&mut x, 1e4);
        log1p(&mut x);
        let d = x.to_dense();
        assert!((d[[0, 0]] - (1e4f32 * 10. / 15.).ln_1p()).abs() < 1e-5);
        assert!(matches!(detect_count_type(&x), CountType::LogNormalized { target_sum } if (target_sum - 1e4).abs() < 1.0));
        // already log-normalised: left alone
        let before = x.clone();
        to_log_normalized(&mut x, 1e4, "X").unwrap();
        assert_eq!(x, before);
    }

    /// Counts-like rows (seeded), normalised to 1e4 over 200 genes, then only the first 120
    /// genes kept, as scanpy's `raw` often is after gene filtering.
    fn subset_normalised(logged: bool, round3: bool) -> CsrMatrix {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        use rand::Rng;
        let (n, g, keep) = (40, 200, 120);
        let mut dense = vec![0f32; n * keep];
        for r in 0..n {
            let counts: Vec<f64> =
                (0..g).map(|_| if rng.gen_bool(0.3) { rng.gen_range(1..6) as f64 } else { 0.0 }).collect();
            let total: f64 = counts.iter().sum();
            for c in 0..keep {
                if counts[c] > 0.0 {
                    let v = counts[c] * 1e4 / total;
                    let mut v = if logged { v.ln_1p() } else { v };
                    if round3 {
                        v = (v * 1000.0).round() / 1000.0;
                    }
                    dense[r * keep + c] = v as f32;
                }
            }
        }
        CsrMatrix::from_dense(n, keep, &dense, "t").unwrap()
    }

    #[test]
    fn gene_subset_normalised_data_is_recognised() {
        for round3 in [false, true] {
            let x = subset_normalised(true, round3);
            let t = detect_count_type(&x);
            assert!(matches!(t, CountType::LogNormalized { target_sum } if target_sum < 1e4 && target_sum > 3e3), "{t:?}");
            let n = detect_count_type(&subset_normalised(false, round3));
            assert!(matches!(n, CountType::Normalized { .. }), "{round3} {n:?}");
        }
        // normalised counts large enough for expm1 to overflow are not "log-normalised to inf"
        let mut big = CsrMatrix::from_dense(2, 3, &[900., 100., 0., 0., 500., 500.], "t").unwrap();
        assert!(matches!(detect_count_type(&big), CountType::RawCounts));
        big.data_mut()[0] = 900.5;
        big.data_mut()[1] = 99.5;
        assert_eq!(detect_count_type(&big), CountType::Normalized { target_sum: 1000.0 });
        // to_log_normalized rescales such data to the target over the genes present
        let mut x = subset_normalised(true, false);
        to_log_normalized(&mut x, 1e4, "X").unwrap();
        for r in 0..x.n_rows() {
            let s: f64 = x.row(r).1.iter().map(|&v| (v as f64).exp_m1()).sum();
            assert!((s - 1e4).abs() < 1.0, "row {r}: {s}");
        }
        // Non-negative values without that structure stay unknown.
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        use rand::Rng;
        let dense: Vec<f32> =
            (0..40 * 50).map(|_| if rng.gen_bool(0.5) { rng.gen_range(0.01f32..5.0) } else { 0.0 }).collect();
        let other = CsrMatrix::from_dense(40, 50, &dense, "t").unwrap();
        assert_eq!(detect_count_type(&other), CountType::Other);
        let rounded: Vec<f32> = dense.iter().map(|v| (v * 1000.0).round() / 1000.0).collect();
        assert_eq!(detect_count_type(&CsrMatrix::from_dense(40, 50, &rounded, "t").unwrap()), CountType::Other);
    }

    #[test]
    fn qc_in_place_matches_copying_qc() {
        for p in [QcParams { min_counts: 10.0, min_cells: 2 }, QcParams { min_counts: 0.0, min_cells: 0 }, QcParams { min_counts: 1e9, min_cells: 0 }] {
            let (out, rows, rep) = qc_filter(&ds(), &p);
            let mut d = ds();
            let (rows2, rep2) = qc_filter_in_place(&mut d, &p);
            assert_eq!((rows, rep), (rows2, rep2));
            assert_eq!(d, out);
        }
    }

    #[test]
    fn fast_ln_1p_matches_f64_rounded_once() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        use rand::Rng;
        let mut xs: Vec<f32> = vec![
            0.0, -0.0, 1e-4, -1e-4, 9.99e-5, 1.0, 2.0, -0.5, -0.9999999, -1.0, -2.0, 1e30, 3e38, f32::INFINITY,
            f32::NEG_INFINITY, f32::NAN, f32::MIN_POSITIVE, 1e-45, 0.41421356,
        ];
        for _ in 0..300_000 {
            let e: f32 = rng.gen_range(-30.0..30.0);
            xs.push(2f32.powf(e));
            xs.push(-(2f32.powf(e.min(-0.001))));
            xs.push(rng.gen_range(0.0f32..20000.0));
        }
        let mut sliced = xs.clone();
        ln_1p_slice(&mut sliced);
        let mut differ = 0;
        for (&x, &got) in xs.iter().zip(&sliced) {
            assert_eq!(got.to_bits(), ln_1p_f32(x).to_bits(), "slice and scalar differ at {x}");
            let want = (x as f64).ln_1p() as f32;
            if want.is_nan() {
                assert!(got.is_nan(), "{x}");
            } else if got != want {
                differ += 1;
                // a tie between two f32s: one ulp at most
                let ulp = f32::from_bits(want.abs().to_bits() + 1) - want.abs();
                assert!((got - want).abs() <= ulp, "ln_1p_f32({x}) = {got}, want {want}");
            }
        }
        assert!(differ <= xs.len() / 100_000, "{differ} of {} differ by an ulp", xs.len());
    }

    #[test]
    fn scaled_data_is_refused() {
        let mut x = CsrMatrix::from_dense(1, 2, &[-0.5, 1.2], "t").unwrap();
        let e = to_log_normalized(&mut x, 1e4, "f.h5ad:X").unwrap_err().to_string();
        assert!(e.contains("f.h5ad:X") && e.contains("scaled"), "{e}");
    }

    #[test]
    fn gene_alignment_fills_missing_with_zero() {
        let reference: Vec<String> = ["C", "Z", "A"].iter().map(|s| s.to_string()).collect();
        let (a, rep) = align_genes(&ds(), &reference, 2).unwrap();
        assert_eq!(rep.overlap, 2);
        assert_eq!(rep.missing_sample, vec!["Z".to_string()]);
        assert_eq!(a.x.to_dense().row(0).to_vec(), vec![0., 0., 10.]);
        assert!(align_genes(&ds(), &reference, 3).unwrap_err().to_string().contains("only 2"));
    }

    #[test]
    fn split_is_stratified_seeded_and_drops_singletons() {
        let labels_txt: Vec<String> =
            (0..100).map(|i| if i < 70 { "a" } else if i < 99 { "b" } else { "lonely" }.to_string()).collect();
        let mut obs = ObsTable { index: labels_txt.clone(), columns: vec![] };
        obs.set("ct", Column::categorical_from_labels(&labels_txt)).unwrap();
        let l = obs.labels("ct").unwrap();
        let s = stratified_split(&l, &SplitParams { test_fraction: 0.3, seed: 7 }).unwrap();
        assert_eq!(s.test.len(), 21 + 9);
        assert_eq!(s.train.len(), 49 + 20);
        assert_eq!(s.dropped_classes, vec![("lonely".to_string(), 1)]);
        assert_eq!(s, stratified_split(&l, &SplitParams { test_fraction: 0.3, seed: 7 }).unwrap());
        assert_ne!(s.test, stratified_split(&l, &SplitParams { test_fraction: 0.3, seed: 8 }).unwrap().test);
    }
}
