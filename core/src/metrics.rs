//! Metrics: classification (accuracy, macro-F1, confusion matrix) and distribution comparisons.
use ndarray::{Array2, ArrayView2};
use serde::{Deserialize, Serialize};

/// Classification results of one evaluator run on a test set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassificationReport {
    pub accuracy: f64,
    pub macro_f1: f64,
    /// Recall of each class (fraction of its test cells predicted correctly); NaN for classes
    /// absent from the test set.
    pub per_class_accuracy: Vec<f64>,
    /// `confusion[true][predicted]` cell counts.
    pub confusion: Vec<Vec<u64>>,
}

/// A degenerate fit: one class takes at least half of the predictions and at least three times
/// its share of the test cells (and the test set has two classes or more). CellTypist's own-set
/// scaler does this on a handful of smooth synthetic cells (pancreas, scDD SPC 1: 84 % of the
/// test cells called Epsilon, which is 4 % of them); any evaluator may.
pub fn collapsed(test: &[u32], pred: &[u32], n_classes: usize) -> Option<(usize, f64, f64)> {
    let n = test.len();
    if n == 0 || pred.len() != n {
        return None;
    }
    let (mut t, mut p) = (vec![0usize; n_classes], vec![0usize; n_classes]);
    for (&a, &b) in test.iter().zip(pred) {
        t[a as usize] += 1;
        p[b as usize] += 1;
    }
    if t.iter().filter(|&&c| c > 0).count() < 2 {
        return None;
    }
    let top = (0..n_classes).max_by_key(|&c| p[c])?;
    let (share, truth) = (p[top] as f64 / n as f64, t[top] as f64 / n as f64);
    (share >= 0.5 && share >= 3.0 * truth).then_some((top, share, truth))
}

/// Scores predictions against the truth for `n_classes` classes.
pub fn classification_report(truth: &[u32], predicted: &[u32], n_classes: usize) -> ClassificationReport {
    assert_eq!(truth.len(), predicted.len(), "truth and predictions differ in length");
    let mut confusion = vec![vec![0u64; n_classes]; n_classes];
    for (&t, &p) in truth.iter().zip(predicted) {
        confusion[t as usize][p as usize] += 1;
    }
    let correct: u64 = (0..n_classes).map(|c| confusion[c][c]).sum();
    let accuracy = if truth.is_empty() { f64::NAN } else { correct as f64 / truth.len() as f64 };
    let mut per_class_accuracy = Vec::with_capacity(n_classes);
    let mut f1s = Vec::new();
    for (c, row) in confusion.iter().enumerate() {
        let tp = row[c] as f64;
        let support: u64 = row.iter().sum();
        let predicted_c: u64 = (0..n_classes).map(|r| confusion[r][c]).sum();
        per_class_accuracy.push(if support == 0 { f64::NAN } else { tp / support as f64 });
        if support > 0 {
            // F1 = 2TP / (2TP + FP + FN); classes absent from the truth are left out (sklearn
            // would count them only if predicted, which says nothing about the test set).
            let denom = 2.0 * tp + (predicted_c as f64 - tp) + (support as f64 - tp);
            f1s.push(if denom == 0.0 { 0.0 } else { 2.0 * tp / denom });
        }
    }
    let macro_f1 = if f1s.is_empty() { f64::NAN } else { f1s.iter().sum::<f64>() / f1s.len() as f64 };
    ClassificationReport { accuracy, macro_f1, per_class_accuracy, confusion }
}

/// Mean and (sample) standard deviation.
pub fn mean_std(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    if values.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let mean = values.iter().sum::<f64>() / n;
    let var = if values.len() > 1 { values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0) } else { 0.0 };
    (mean, var.sqrt())
}

/// Pearson correlation of two equally long vectors (f64 accumulation). NaN when either is
/// constant or they are empty.
pub fn pearson(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "pearson: vectors differ in length");
    let n = a.len() as f64;
    if a.is_empty() {
        return f64::NAN;
    }
    let ma = a.iter().map(|&v| v as f64).sum::<f64>() / n;
    let mb = b.iter().map(|&v| v as f64).sum::<f64>() / n;
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    if saa == 0.0 || sbb == 0.0 {
        return f64::NAN;
    }
    sab / (saa * sbb).sqrt()
}

/// Mean over rows of the Pearson correlation between row `i` of `a` and row `i` of `b`
/// (e.g. each cell against its reconstruction); rows where either side is constant are skipped.
pub fn mean_row_pearson(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    assert_eq!(a.dim(), b.dim(), "mean_row_pearson: shapes differ");
    let vals: Vec<f64> = a
        .rows()
        .into_iter()
        .zip(b.rows())
        .map(|(x, y)| pearson(&x.to_vec(), &y.to_vec()))
        .filter(|v| v.is_finite())
        .collect();
    if vals.is_empty() {
        f64::NAN
    } else {
        vals.iter().sum::<f64>() / vals.len() as f64
    }
}

/// Column means of a (cells × features) matrix.
pub fn column_means(x: ArrayView2<f32>) -> Vec<f32> {
    let n = x.nrows().max(1) as f64;
    let mut acc = vec![0f64; x.ncols()];
    for row in x.rows() {
        for (a, &v) in acc.iter_mut().zip(row.iter()) {
            *a += v as f64;
        }
    }
    acc.into_iter().map(|v| (v / n) as f32).collect()
}

/// Pearson correlation between the feature (gene) means of two sets of cells.
pub fn mean_pearson(a: ArrayView2<f32>, b: ArrayView2<f32>) -> f64 {
    pearson(&column_means(a), &column_means(b))
}

fn sq_dists(a: ArrayView2<f32>, b: ArrayView2<f32>) -> Array2<f64> {
    let a64 = a.mapv(|v| v as f64);
    let b64 = b.mapv(|v| v as f64);
    let na: Vec<f64> = a64.rows().into_iter().map(|r| r.dot(&r)).collect();
    let nb: Vec<f64> = b64.rows().into_iter().map(|r| r.dot(&r)).collect();
    let mut d = a64.dot(&b64.t());
    for ((i, j), v) in d.indexed_iter_mut() {
        *v = (na[i] + nb[j] - 2.0 * *v).max(0.0);
    }
    d
}

/// The median heuristic for an RBF bandwidth: the median Euclidean distance between distinct
/// rows of `x` (at most the first 1000 rows are used). 1.0 when `x` has fewer than two rows or
/// all rows coincide.
pub fn median_distance(x: ArrayView2<f32>) -> f64 {
    let x = x.slice(ndarray::s![..x.nrows().min(1000), ..]);
    let d = sq_dists(x, x);
    let mut v: Vec<f64> = Vec::new();
    for i in 0..d.nrows() {
        for j in (i + 1)..d.ncols() {
            v.push(d[[i, j]].sqrt());
        }
    }
    if v.is_empty() {
        return 1.0;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let m = v[v.len() / 2];
    if m > 0.0 { m } else { 1.0 }
}

/// Squared maximum mean discrepancy between the rows of `x` and `y` under the Gaussian kernel
/// `k(a, b) = exp(−‖a − b‖² / (2σ²))`: the biased (V-statistic) estimate
/// `mean k(x,x') + mean k(y,y') − 2 mean k(x,y)`, which is ≥ 0 and 0 for identical sets.
/// Pass the same `sigma` (e.g. [`median_distance`] of the reference set) when comparing several
/// candidate sets against one reference. NaN when either set is empty.
pub fn mmd_rbf(x: ArrayView2<f32>, y: ArrayView2<f32>, sigma: f64) -> f64 {
    assert_eq!(x.ncols(), y.ncols(), "mmd_rbf: feature counts differ");
    if x.nrows() == 0 || y.nrows() == 0 {
        return f64::NAN;
    }
    let g = 1.0 / (2.0 * sigma * sigma);
    let mean_k = |a: ArrayView2<f32>, b: ArrayView2<f32>| -> f64 {
        let d = sq_dists(a, b);
        d.iter().map(|&v| (-g * v).exp()).sum::<f64>() / d.len() as f64
    };
    (mean_k(x, x) + mean_k(y, y) - 2.0 * mean_k(x, y)).max(0.0)
}

/// The unbiased (U-statistic) estimate of MMD² under the same kernel as [`mmd_rbf`]:
/// self-pairs are left out of the within-set means, so two samples of one distribution score
/// ≈ 0 whatever their size (the estimate can be slightly negative). Falls back to [`mmd_rbf`]
/// when a set has fewer than two rows.
pub fn mmd_rbf_unbiased(x: ArrayView2<f32>, y: ArrayView2<f32>, sigma: f64) -> f64 {
    assert_eq!(x.ncols(), y.ncols(), "mmd_rbf_unbiased: feature counts differ");
    if x.nrows() < 2 || y.nrows() < 2 {
        return mmd_rbf(x, y, sigma);
    }
    let g = 1.0 / (2.0 * sigma * sigma);
    let within = |a: ArrayView2<f32>| -> f64 {
        let d = sq_dists(a, a);
        let n = a.nrows();
        let mut s = 0.0;
        for i in 0..n {
            for j in 0..n {
                if i != j {
                    s += (-g * d[[i, j]]).exp();
                }
            }
        }
        s / (n * (n - 1)) as f64
    };
    let d = sq_dists(x, y);
    let cross = d.iter().map(|&v| (-g * v).exp()).sum::<f64>() / d.len() as f64;
    within(x) + within(y) - 2.0 * cross
}

#[cfg(test)]
mod distribution_tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn pearson_basics() {
        assert!((pearson(&[1., 2., 3.], &[2., 4., 6.]) - 1.0).abs() < 1e-12);
        assert!((pearson(&[1., 2., 3.], &[3., 2., 1.]) + 1.0).abs() < 1e-12);
        assert!(pearson(&[1., 1., 1.], &[1., 2., 3.]).is_nan());
        let a = array![[1f32, 2., 3.], [0., 1., 0.]];
        let b = array![[2f32, 4., 6.], [1., 1., 1.]];
        // second row is constant in b: skipped
        assert!((mean_row_pearson(a.view(), b.view()) - 1.0).abs() < 1e-12);
        assert!((mean_pearson(a.view(), (&a * 2.0).view()) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn mmd_is_zero_for_equal_sets_and_grows_with_shift() {
        let x = array![[0f32, 0.], [1., 0.], [0., 1.], [1., 1.]];
        let s = median_distance(x.view());
        assert!((s - 1.0).abs() < 1e-12, "{s}");
        assert!(mmd_rbf(x.view(), x.view(), s).abs() < 1e-12);
        let near = &x + 0.1;
        let far = &x + 3.0;
        let (a, b) = (mmd_rbf(x.view(), near.view(), s), mmd_rbf(x.view(), far.view(), s));
        assert!(a > 0.0 && b > a, "{a} {b}");
        // closed form for single points: 2 − 2·exp(−d²/2σ²)
        let p = array![[0f32, 0.]];
        let q = array![[3f32, 4.]];
        assert!((mmd_rbf(p.view(), q.view(), 5.0) - (2.0 - 2.0 * (-0.5f64).exp())).abs() < 1e-12);
        // unbiased: identical sets of distinct points score below the biased estimate
        let u = mmd_rbf_unbiased(x.view(), x.view(), s);
        assert!(u < 0.0 && u > -1.0, "{u}");
        assert!(mmd_rbf_unbiased(x.view(), far.view(), s) > mmd_rbf_unbiased(x.view(), near.view(), s));
        assert_eq!(mmd_rbf_unbiased(p.view(), q.view(), 5.0), mmd_rbf(p.view(), q.view(), 5.0));
    }
}

#[cfg(test)]
mod classification_tests {
    use super::*;

    #[test]
    fn report_counts_and_f1() {
        // truth: 0 0 1 1 ; predicted: 0 1 1 1
        let r = classification_report(&[0, 0, 1, 1], &[0, 1, 1, 1], 3);
        assert_eq!(r.accuracy, 0.75);
        assert_eq!(r.confusion, vec![vec![1, 1, 0], vec![0, 2, 0], vec![0, 0, 0]]);
        assert_eq!(r.per_class_accuracy[0], 0.5);
        assert!(r.per_class_accuracy[2].is_nan());
        // class 0: P=1, R=.5, F1=2/3; class 1: P=2/3, R=1, F1=.8
        assert!((r.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12);
        let (m, s) = mean_std(&[1.0, 3.0]);
        assert_eq!((m, s), (2.0, 2f64.sqrt()));
    }
}

#[cfg(test)]
mod collapse_tests {
    use super::collapsed;

    #[test]
    fn a_collapsed_fit_is_flagged_and_a_skewed_test_set_is_not() {
        let test = [0, 0, 1, 1, 2, 2, 2, 2, 1, 0];
        assert_eq!(collapsed(&test, &[1; 10], 3), Some((1, 1.0, 0.3)));
        let mut six = [1u32; 10];
        six[..4].copy_from_slice(&[0, 2, 0, 2]);
        assert!(collapsed(&test, &six, 3).is_none(), "60 % where the truth is 30 %: over-called, not collapsed");
        let mut many = [2u32; 10];
        many[0] = 0;
        assert!(collapsed(&[0, 0, 1, 1, 1, 1, 1, 1, 1, 2], &many, 3).is_some(), "90 % where the truth is 10 %");
        assert_eq!(collapsed(&test, &test, 3), None);
        // A class that really is most of the test set may take most predictions.
        let skewed = [0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert_eq!(collapsed(&skewed, &[0; 10], 2), None);
        // One class in the test set: nothing to collapse from.
        assert_eq!(collapsed(&[2; 4], &[1; 4], 3), None);
    }
}
