//! Looking at cells: a principal-component projection and the top genes of each class — what the
//! browser page and the report draw (a PCA scatter of synthetic and real cells, marker lists).
use crate::error::{CoreError, Result};
use ndarray::{s, Array1, Array2, ArrayView2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Principal components of a cells × genes matrix (centred, not scaled).
#[derive(Clone, Debug, PartialEq)]
pub struct Pca {
    pub mean: Vec<f32>,
    /// components × genes, orthonormal rows, by decreasing variance.
    pub components: Array2<f32>,
    /// Variance along each component, and the fraction of the total it is.
    pub variance: Vec<f64>,
    pub variance_ratio: Vec<f64>,
}

impl Pca {
    /// The `k` leading components, found by subspace iteration (a few extra vectors, at most
    /// 200 sweeps, stopping when the variances change by < 1e-7 relatively) and a final
    /// Rayleigh–Ritz rotation. It touches `x` only through products, so it needs no genes ×
    /// genes matrix (14 000 genes cost the same per cell as 2 000 do per gene). Seeded; each
    /// component's sign makes its largest loading positive.
    pub fn fit(x: ArrayView2<f32>, k: usize, seed: u64) -> Result<Pca> {
        let (n, g) = x.dim();
        if n < 2 || k == 0 || k > g.min(n) {
            return Err(CoreError::data("pca", format!("{k} components of {n} cells × {g} genes")));
        }
        if x.iter().any(|v| !v.is_finite()) {
            return Err(CoreError::data("pca", "the cells hold a non-finite value"));
        }
        let mean = x.mean_axis(Axis(0)).expect("n ≥ 2");
        let xc = &x - &mean;
        let total: f64 = xc.iter().map(|&v| v as f64 * v as f64).sum::<f64>() / (n - 1) as f64;
        let b = (k + 4).min(g).min(n);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x9ca);
        let mut q = Array2::from_shape_fn((g, b), |_| rng.gen_range(-1.0f32..1.0));
        orthonormalise(&mut q);
        let mut last = vec![0.0f64; b];
        for _ in 0..200 {
            let y = xc.t().dot(&xc.dot(&q));
            let norms: Vec<f64> = y.axis_iter(Axis(1)).map(|c| c.iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt()).collect();
            q = y;
            orthonormalise(&mut q);
            let done = norms.iter().zip(&last).take(k).all(|(a, b)| (a - b).abs() <= 1e-7 * a.max(1e-30));
            last = norms;
            if done {
                break;
            }
        }
        // Rayleigh–Ritz: the small matrix (XQ)ᵀ(XQ) / (n − 1), diagonalised.
        let p = xc.dot(&q);
        let small = p.t().dot(&p).mapv(|v| v as f64 / (n - 1) as f64);
        let (values, vectors) = jacobi_eigen(small);
        let mut order: Vec<usize> = (0..b).collect();
        order.sort_by(|&i, &j| values[j].total_cmp(&values[i]));
        let mut components = Array2::zeros((k, g));
        let mut variance = Vec::with_capacity(k);
        for (row, &i) in order.iter().take(k).enumerate() {
            let v = vectors.column(i).mapv(|v| v as f32);
            let mut c = q.dot(&v);
            let big = c.iter().fold(0.0f32, |m, &v| if v.abs() > m.abs() { v } else { m });
            if big < 0.0 {
                c.mapv_inplace(|v| -v);
            }
            components.row_mut(row).assign(&c);
            variance.push(values[i].max(0.0));
        }
        let variance_ratio = variance.iter().map(|v| if total > 0.0 { v / total } else { 0.0 }).collect();
        Ok(Pca { mean: mean.to_vec(), components, variance, variance_ratio })
    }

    /// Coordinates of `x`'s cells (same gene order as the fit).
    pub fn transform(&self, x: ArrayView2<f32>) -> Result<Array2<f32>> {
        if x.ncols() != self.mean.len() {
            return Err(CoreError::data("pca", format!("{} genes, fitted on {}", x.ncols(), self.mean.len())));
        }
        let mean = Array1::from(self.mean.clone());
        Ok((&x - &mean).dot(&self.components.t()))
    }
}

/// Modified Gram–Schmidt on the columns (in place); a column that vanishes is replaced by a unit
/// vector orthogonal to the ones before it.
fn orthonormalise(q: &mut Array2<f32>) {
    let (rows, cols) = q.dim();
    for j in 0..cols {
        for _ in 0..2 {
            for i in 0..j {
                let d: f64 = q.column(i).iter().zip(q.column(j)).map(|(&a, &b)| a as f64 * b as f64).sum();
                let ci = q.column(i).to_owned();
                q.column_mut(j).scaled_add(-(d as f32), &ci);
            }
        }
        let norm = q.column(j).iter().map(|&v| v as f64 * v as f64).sum::<f64>().sqrt();
        if norm > 1e-20 {
            q.column_mut(j).mapv_inplace(|v| (v as f64 / norm) as f32);
        } else {
            q.column_mut(j).fill(0.0);
            q[[j % rows, j]] = 1.0;
        }
    }
}

/// Eigen-decomposition of a small symmetric matrix by cyclic Jacobi rotations: the eigenvalues
/// and the eigenvectors as columns.
fn jacobi_eigen(mut a: Array2<f64>) -> (Vec<f64>, Array2<f64>) {
    let n = a.nrows();
    let mut v = Array2::eye(n);
    for _ in 0..100 {
        let off: f64 = (0..n).flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j))).map(|(i, j)| a[[i, j]].powi(2)).sum();
        if off < 1e-22 * a.iter().map(|x| x * x).sum::<f64>().max(1e-300) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if a[[p, q]].abs() < 1e-300 {
                    continue;
                }
                let theta = (a[[q, q]] - a[[p, p]]) / (2.0 * a[[p, q]]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                for k in 0..n {
                    let (akp, akq) = (a[[k, p]], a[[k, q]]);
                    a[[k, p]] = c * akp - s * akq;
                    a[[k, q]] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[[p, k]], a[[q, k]]);
                    a[[p, k]] = c * apk - s * aqk;
                    a[[q, k]] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[[k, p]], v[[k, q]]);
                    v[[k, p]] = c * vkp - s * vkq;
                    v[[k, q]] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[[i, i]]).collect(), v)
}

/// A class's most over-expressed genes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMarkers {
    pub class: String,
    pub cells: usize,
    /// (gene, mean in the class, mean in the other cells), largest difference first.
    pub genes: Vec<(String, f32, f32)>,
}

/// The `n_top` genes of each class with the largest difference between the class's mean and the
/// other cells' mean (log-normalised input: a log fold change of means). Classes without cells
/// get an empty list; with one class only, "the other cells" are none and the means rank alone.
pub fn top_genes(x: ArrayView2<f32>, labels: &[u32], classes: &[String], genes: &[String], n_top: usize) -> Result<Vec<ClassMarkers>> {
    let (n, g) = x.dim();
    if labels.len() != n || genes.len() != g {
        return Err(CoreError::data("top genes", format!("{n} cells × {g} genes with {} labels and {} gene names", labels.len(), genes.len())));
    }
    let k = classes.len();
    if let Some(&c) = labels.iter().find(|&&c| c as usize >= k) {
        return Err(CoreError::data("top genes", format!("label {c} but {k} classes")));
    }
    let mut sums = Array2::<f64>::zeros((k, g));
    let mut counts = vec![0usize; k];
    for (row, &c) in x.outer_iter().zip(labels) {
        counts[c as usize] += 1;
        sums.row_mut(c as usize).zip_mut_with(&row, |s, &v| *s += v as f64);
    }
    let all = sums.sum_axis(Axis(0));
    Ok((0..k)
        .map(|c| {
            if counts[c] == 0 {
                return ClassMarkers { class: classes[c].clone(), cells: 0, genes: Vec::new() };
            }
            let inside = sums.slice(s![c, ..]).mapv(|v| v / counts[c] as f64);
            let rest = n - counts[c];
            let outside: Vec<f64> = (0..g).map(|j| if rest == 0 { 0.0 } else { (all[j] - sums[[c, j]]) / rest as f64 }).collect();
            let mut order: Vec<usize> = (0..g).collect();
            order.sort_by(|&a, &b| (inside[b] - outside[b]).total_cmp(&(inside[a] - outside[a])).then(a.cmp(&b)));
            let genes = order.iter().take(n_top).map(|&j| (genes[j].clone(), inside[j] as f32, outside[j] as f32)).collect();
            ClassMarkers { class: classes[c].clone(), cells: counts[c], genes }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pca_finds_the_directions_of_largest_variance() {
        // Cells spread along (1, 1, 0, 0)/√2 (sd 3) and (0, 0, 1, 0) (sd 1), a little noise.
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let n = 400;
        let x = Array2::from_shape_fn((n, 4), |_| 0.0f32);
        let mut x = x;
        for mut row in x.outer_iter_mut() {
            let (a, b): (f32, f32) = (rng.gen_range(-1.0..1.0) * 3.0 * 3f32.sqrt(), rng.gen_range(-1.0..1.0) * 3f32.sqrt());
            row[0] = 5.0 + a / 2f32.sqrt() + rng.gen_range(-0.01..0.01);
            row[1] = -2.0 + a / 2f32.sqrt();
            row[2] = b;
            row[3] = rng.gen_range(-0.01..0.01);
        }
        let p = Pca::fit(x.view(), 2, 0).unwrap();
        let c0 = p.components.row(0);
        assert!((c0[0] - c0[1]).abs() < 1e-3 && (c0[0] - 0.5f32.sqrt()).abs() < 1e-3, "{c0}");
        assert!((p.components[[1, 2]].abs() - 1.0).abs() < 1e-3, "{}", p.components.row(1));
        assert!((p.variance[0] - 9.0).abs() < 1.5 && (p.variance[1] - 1.0).abs() < 0.2, "{:?}", p.variance);
        assert!(p.variance_ratio[0] > 0.85 && p.variance_ratio.iter().sum::<f64>() > 0.99);
        // Projections of centred cells have the fitted variance; the same seed, the same result.
        let t = p.transform(x.view()).unwrap();
        let v0 = t.column(0).iter().map(|&v| v as f64 * v as f64).sum::<f64>() / (n - 1) as f64;
        assert!((v0 - p.variance[0]).abs() < 1e-3 * v0);
        assert_eq!(Pca::fit(x.view(), 2, 0).unwrap(), p);
        assert!(p.transform(Array2::zeros((1, 3)).view()).is_err());
        assert!(Pca::fit(x.view(), 5, 0).is_err());
    }

    #[test]
    fn top_genes_rank_by_difference_of_means() {
        let x = ndarray::arr2(&[[5.0f32, 0.0, 1.0], [3.0, 0.0, 1.0], [0.0, 4.0, 1.0], [0.0, 2.0, 3.0]]);
        let names: Vec<String> = ["A", "B", "C"].iter().map(|s| s.to_string()).collect();
        let classes: Vec<String> = ["a", "b", "empty"].iter().map(|s| s.to_string()).collect();
        let m = top_genes(x.view(), &[0, 0, 1, 1], &classes, &names, 2).unwrap();
        assert_eq!(m[0].genes[0], ("A".to_string(), 4.0, 0.0));
        assert_eq!(m[0].genes[1].0, "C");
        assert_eq!(m[1].genes[0], ("B".to_string(), 3.0, 0.0));
        assert_eq!((m[1].cells, m[2].cells, m[2].genes.len()), (2, 0, 0));
        assert!(top_genes(x.view(), &[0, 0, 1, 3], &classes, &names, 2).is_err());
    }
}
