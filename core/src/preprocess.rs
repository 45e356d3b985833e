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
pub fn qc_filter(ds: &Dataset, p: &QcParams) -> (Dataset, Vec<usize>, QcReport) {
    let sums = ds.x.row_sums();
    let rows: Vec<usize> = (0..ds.n_cells()).filter(|&r| sums[r] >= p.min_counts).collect();
    let cells = ds.select_cells(&rows);
    let keep: Vec<bool> = cells.x.col_nnz().iter().map(|&n| n >= p.min_cells).collect();
    let out = cells.select_genes(&keep);
    let report = QcReport {
        cells_in: ds.n_cells(),
        cells_kept: out.n_cells(),
        genes_in: ds.n_genes(),
        genes_kept: out.n_genes(),
    };
    (out, rows, report)
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

/// `ln(1 + x)` on the stored values.
pub fn log1p(x: &mut CsrMatrix) {
    for v in x.data_mut() {
        *v = v.ln_1p();
    }
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
    match &kind {
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
    Ok(kind)
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
