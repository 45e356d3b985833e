//! Metrics: classification (accuracy, macro-F1, confusion matrix) and distribution comparisons.
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
    for c in 0..n_classes {
        let tp = confusion[c][c] as f64;
        let support: u64 = confusion[c].iter().sum();
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
