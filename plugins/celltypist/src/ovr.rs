//! One-vs-rest L2 logistic regression by L-BFGS, as scikit-learn's
//! `LogisticRegression(multi_class="ovr")` fits it: each class against the rest, with its own
//! L-BFGS memory, line search and stop. The classes still running share each pass over the
//! cells (one matrix product serves them all), and a class that has converged stops costing
//! anything.
//!
//! The scaled matrix `Z` is held dense, or — when most input values are zero, as in count data —
//! sparse: a zero input scales to the same value `−m_j` in every cell of gene `j` (it is below
//! the clip), so `Z = S − 1mᵀ` exactly, with `S` holding only the cells where the input is
//! non-zero. Products with `Z` then cost in proportion to the non-zero values.
use ndarray::{Array1, Array2, ArrayView2, Axis};
use scdd_core::evaluate::Lbfgs;

/// Below this fraction of non-zero values the sparse form is used (a sparse product costs a few
/// times more per value than a dense one).
const SPARSE_BELOW: f64 = 0.25;

/// The z-scaled, clipped training matrix, cells × genes.
pub enum Design {
    Dense(Array2<f32>),
    /// `Z = S − 1·offsetᵀ`, `S` in compressed rows.
    Sparse { n: usize, d: usize, indptr: Vec<usize>, indices: Vec<u32>, values: Vec<f32>, offset: Vec<f32> },
}

impl Design {
    /// Columns `cols` of `x`, z-scaled with `mean` / `scale` and clipped above at 10, in the form
    /// that is cheaper to multiply.
    pub fn new(x: ArrayView2<f32>, cols: &[usize], mean: &Array1<f32>, scale: &Array1<f32>) -> Design {
        let nnz: usize = x.rows().into_iter().map(|row| cols.iter().filter(|&&c| row[c] != 0.0).count()).sum();
        let offset: Vec<f32> = (0..cols.len()).map(|j| mean[j] / scale[j]).collect();
        // A zero input must scale below the clip for the sparse form to be exact.
        let exact = offset.iter().all(|&m| -m < 10.0);
        let z = |v: f32, j: usize| ((v - mean[j]) / scale[j]).min(10.0);
        if !exact || (nnz as f64) >= SPARSE_BELOW * (x.nrows() * cols.len()).max(1) as f64 {
            let mut out = Array2::<f32>::zeros((x.nrows(), cols.len()));
            for (mut o, row) in out.rows_mut().into_iter().zip(x.rows()) {
                for (j, &c) in cols.iter().enumerate() {
                    o[j] = z(row[c], j);
                }
            }
            return Design::Dense(out);
        }
        let (mut indptr, mut indices, mut values) = (Vec::with_capacity(x.nrows() + 1), Vec::with_capacity(nnz), Vec::with_capacity(nnz));
        indptr.push(0);
        for row in x.rows() {
            for (j, &c) in cols.iter().enumerate() {
                let v = row[c];
                if v != 0.0 {
                    indices.push(j as u32);
                    values.push(z(v, j) + offset[j]);
                }
            }
            indptr.push(indices.len());
        }
        Design::Sparse { n: x.nrows(), d: cols.len(), indptr, indices, values, offset }
    }

    pub fn n(&self) -> usize {
        match self {
            Design::Dense(z) => z.nrows(),
            Design::Sparse { n, .. } => *n,
        }
    }

    pub fn d(&self) -> usize {
        match self {
            Design::Dense(z) => z.ncols(),
            Design::Sparse { d, .. } => *d,
        }
    }

    /// The matrix itself (for per-cell SGD updates).
    pub fn to_dense(&self) -> Array2<f32> {
        match self {
            Design::Dense(z) => z.clone(),
            Design::Sparse { n, d, indptr, indices, values, offset } => {
                let mut z = Array2::from_shape_fn((*n, *d), |(_, j)| -offset[j]);
                for i in 0..*n {
                    for p in indptr[i]..indptr[i + 1] {
                        z[[i, indices[p] as usize]] += values[p];
                    }
                }
                z
            }
        }
    }

    /// The columns `keep` (ascending), in the same form.
    pub fn select(&self, keep: &[usize]) -> Design {
        match self {
            Design::Dense(z) => Design::Dense(z.select(Axis(1), keep)),
            Design::Sparse { n, indptr, indices, values, offset, .. } => {
                let mut new_col = vec![u32::MAX; offset.len()];
                for (to, &from) in keep.iter().enumerate() {
                    new_col[from] = to as u32;
                }
                let (mut ip, mut ix, mut vs) = (vec![0], Vec::new(), Vec::new());
                for i in 0..*n {
                    for p in indptr[i]..indptr[i + 1] {
                        let c = new_col[indices[p] as usize];
                        if c != u32::MAX {
                            ix.push(c);
                            vs.push(values[p]);
                        }
                    }
                    ip.push(ix.len());
                }
                Design::Sparse { n: *n, d: keep.len(), indptr: ip, indices: ix, values: vs, offset: keep.iter().map(|&j| offset[j]).collect() }
            }
        }
    }

    /// Cell ranges for `threads` workers (one range when the matrix is too small to share).
    fn chunks(&self, threads: usize) -> Vec<std::ops::Range<usize>> {
        let n = self.n();
        // Sharing a pass costs two thread starts; measured on 2 cores, it pays from about a
        // million dense values (pancreas' 3.9 M: 0.40 → 0.26 s a fit; not pbmc68k_reduced's
        // 0.37 M: 17 → 21 ms) and a quarter of a million sparse ones (onek1k's 0.63 M: 84 →
        // 68 ms of solver, the machine idle).
        let shared = match self {
            Design::Dense(z) => z.len() >= 1 << 20,
            Design::Sparse { values, .. } => values.len() >= 1 << 18,
        };
        let t = if shared { threads.clamp(1, n.max(1)) } else { 1 };
        let step = n.div_ceil(t).max(1);
        (0..n).step_by(step).map(|s| s..(s + step).min(n)).collect()
    }

    /// `f` over the cell ranges of [`Design::chunks`], one scoped thread each (in this
    /// thread when there is one range); results in range order.
    fn shared<T: Send>(&self, threads: usize, f: impl Fn(std::ops::Range<usize>) -> T + Sync) -> Vec<T> {
        let chunks = self.chunks(threads);
        if chunks.len() <= 1 {
            return vec![f(0..self.n())];
        }
        std::thread::scope(|s| {
            let handles: Vec<_> = chunks.into_iter().map(|r| s.spawn(|| f(r))).collect();
            handles.into_iter().map(|h| h.join().expect("worker thread")).collect()
        })
    }

    /// `Z·Wᵀ` for weights `w` (a × d): cells × a, the cells shared among `threads` workers.
    pub(crate) fn times_weights(&self, w: ArrayView2<f32>, threads: usize) -> Array2<f32> {
        let mut parts = self.shared(threads, |r| self.times_weights_rows(w, r));
        if parts.len() == 1 {
            return parts.pop().expect("one part");
        }
        let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
        ndarray::concatenate(Axis(0), &views).expect("same widths")
    }

    /// `Rᵀ·Z` for per-cell residuals `r` (cells × a): a × d, partial sums per worker added in
    /// a fixed order.
    fn residuals_times(&self, r: ArrayView2<f32>, threads: usize) -> Array2<f32> {
        let mut parts = self.shared(threads, |c| self.residuals_times_rows(r, c)).into_iter();
        let mut total = parts.next().expect("one part at least");
        for p in parts {
            total += &p;
        }
        total
    }

    /// Rows `rows` of `Z·Wᵀ`.
    fn times_weights_rows(&self, w: ArrayView2<f32>, rows: std::ops::Range<usize>) -> Array2<f32> {
        match self {
            Design::Dense(z) => z.slice(ndarray::s![rows, ..]).dot(&w.t()),
            Design::Sparse { indptr, indices, values, offset, .. } => {
                let a = w.nrows();
                let wt = w.t().as_standard_layout().into_owned(); // d × a
                let wt = wt.as_slice().expect("standard layout");
                let shift: Vec<f32> = w.rows().into_iter().map(|r| r.iter().zip(offset).map(|(x, m)| x * m).sum()).collect();
                let mut out = Array2::<f32>::zeros((rows.len(), a));
                for (i, mut o) in rows.zip(out.rows_mut()) {
                    let o = o.as_slice_mut().expect("standard layout");
                    o.iter_mut().zip(&shift).for_each(|(v, s)| *v = -s);
                    for p in indptr[i]..indptr[i + 1] {
                        let (v, row) = (values[p], &wt[indices[p] as usize * a..][..a]);
                        o.iter_mut().zip(row).for_each(|(acc, x)| *acc += v * x);
                    }
                }
                out
            }
        }
    }

    /// `Rᵀ·Z` over the cells `rows` only.
    fn residuals_times_rows(&self, r: ArrayView2<f32>, rows: std::ops::Range<usize>) -> Array2<f32> {
        let r = r.slice(ndarray::s![rows.clone(), ..]);
        match self {
            Design::Dense(z) => r.t().dot(&z.slice(ndarray::s![rows, ..])),
            Design::Sparse { d, indptr, indices, values, offset, .. } => {
                let a = r.ncols();
                let mut gt = vec![0f32; d * a]; // d × a
                for (i, ri) in rows.zip(r.rows()) {
                    let ri = ri.to_slice().expect("standard layout");
                    for p in indptr[i]..indptr[i + 1] {
                        let v = values[p];
                        gt[indices[p] as usize * a..][..a].iter_mut().zip(ri).for_each(|(acc, x)| *acc += v * x);
                    }
                }
                let sums = r.sum_axis(Axis(0));
                let mut g = Array2::from_shape_vec((*d, a), gt).expect("d × a").reversed_axes().as_standard_layout().into_owned();
                for (mut row, s) in g.rows_mut().into_iter().zip(sums.iter()) {
                    row.iter_mut().zip(offset).for_each(|(v, m)| *v -= s * m);
                }
                g
            }
        }
    }
}

/// `ln(1 + e^x)` without overflow.
pub fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// What [`fit`] found: weights (classes × genes), intercepts, and each class's L-BFGS iterations.
pub struct OvrFit {
    pub w: Array2<f32>,
    pub b: Array1<f32>,
    pub iterations: Vec<usize>,
    /// Passes over the cells (each serving every class still running).
    pub passes: usize,
}

/// Objectives and gradients (`[w, b]`) of the binary problems of `classes` at `thetas`: class `c`
/// against the rest, `mean_i log(1 + e^{−s_i(w·z_i + b)}) + λ/2‖w‖²`.
fn evaluate(z: &Design, labels: &[u32], lambda: f64, classes: &[usize], thetas: &[&[f32]], threads: usize) -> Vec<(f64, Vec<f32>)> {
    let (n, d, a) = (z.n(), z.d(), classes.len());
    let mut w = Array2::<f32>::zeros((a, d));
    for (mut row, t) in w.rows_mut().into_iter().zip(thetas) {
        row.assign(&ndarray::ArrayView1::from(&t[..d]));
    }
    let mut r = z.times_weights(w.view(), threads);
    let mut loss = vec![0f64; a];
    for (mut row, &y) in r.rows_mut().into_iter().zip(labels) {
        for (j, v) in row.iter_mut().enumerate() {
            let s = (*v + thetas[j][d]) as f64;
            let pos = classes[j] == y as usize;
            loss[j] += softplus(if pos { -s } else { s });
            *v = ((sigmoid(s) - if pos { 1.0 } else { 0.0 }) / n as f64) as f32;
        }
    }
    let gw = z.residuals_times(r.view(), threads);
    let gb = r.sum_axis(Axis(0));
    (0..a)
        .map(|j| {
            let wj = &thetas[j][..d];
            let reg = 0.5 * lambda * wj.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
            let mut g: Vec<f32> = gw.row(j).iter().zip(wj).map(|(g, w)| g + lambda as f32 * w).collect();
            g.push(gb[j]);
            (loss[j] / n as f64 + reg, g)
        })
        .collect()
}

/// One-vs-rest fit of `k` classes: for each, L-BFGS from zero on `C·Σ loss + ½‖w‖²` (in its
/// per-cell mean form, the same minimiser; the intercept not penalised), at most `max_iter`
/// iterations, stopping when the largest gradient component is at most `tol` — scikit-learn's
/// criterion. A class with no training cell gets the all-negative problem like any other.
/// `threads` workers share each pass over the cells.
pub fn fit(z: &Design, labels: &[u32], k: usize, c: f64, max_iter: usize, tol: f64, threads: usize) -> OvrFit {
    let (n, d) = (z.n(), z.d());
    let lambda = 1.0 / (c * n as f64);
    let all: Vec<usize> = (0..k).collect();
    let zero = vec![0f32; d + 1];
    let start = evaluate(z, labels, lambda, &all, &vec![zero.as_slice(); k], threads);
    let mut states: Vec<Lbfgs> = start.into_iter().map(|(f, g)| Lbfgs::new(zero.clone(), f, g, max_iter, tol)).collect();
    let mut passes = 1;
    loop {
        let mut running = Vec::new();
        let mut trials = Vec::new();
        for (c, s) in states.iter_mut().enumerate() {
            if let Some(t) = s.trial() {
                running.push(c);
                trials.push(t.to_vec());
            }
        }
        if running.is_empty() {
            break;
        }
        let views: Vec<&[f32]> = trials.iter().map(|t| t.as_slice()).collect();
        for (c, (f, g)) in running.iter().zip(evaluate(z, labels, lambda, &running, &views, threads)) {
            states[*c].report(f, g);
        }
        passes += 1;
    }
    let mut w = Array2::<f32>::zeros((k, d));
    let mut b = Array1::<f32>::zeros(k);
    let mut iterations = Vec::with_capacity(k);
    for (c, s) in states.into_iter().enumerate() {
        let r = s.result();
        w.row_mut(c).assign(&ndarray::ArrayView1::from(&r.theta[..d]));
        b[c] = r.theta[d];
        iterations.push(r.iterations);
    }
    OvrFit { w, b, iterations, passes }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Count-like data: mostly zeros, a few class-marked genes.
    fn sparse_data(n: usize, g: usize, seed: u64) -> (Array2<f32>, Vec<u32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let x = Array2::from_shape_fn((n, g), |(i, j)| {
            let p = if j % 3 == labels[i] as usize && j < 9 { 0.8 } else { 0.08 };
            if rng.gen::<f64>() < p { rng.gen_range(0.5f32..3.0) } else { 0.0 }
        });
        (x, labels)
    }

    fn scaler(x: &Array2<f32>) -> (Vec<usize>, Array1<f32>, Array1<f32>) {
        let cols: Vec<usize> = (0..x.ncols()).collect();
        let mean = x.mean_axis(Axis(0)).unwrap();
        let scale = x.std_axis(Axis(0), 0.0).mapv(|v| if v > 0.0 { v } else { 1.0 });
        (cols, mean, scale)
    }

    #[test]
    fn the_sparse_form_is_the_dense_matrix_and_multiplies_the_same() {
        let (mut x, _) = sparse_data(200, 30, 1);
        x[[3, 4]] = 50.0; // clipped at 10 after scaling
        let (cols, mean, scale) = scaler(&x);
        let sparse = Design::new(x.view(), &cols, &mean, &scale);
        assert!(matches!(sparse, Design::Sparse { .. }), "about 10 % non-zero");
        let dense = sparse.to_dense();
        assert_eq!(dense[[3, 4]], 10.0);
        for (i, j) in [(0, 0), (3, 4), (17, 11), (199, 29)] {
            let want = ((x[[i, j]] - mean[j]) / scale[j]).min(10.0);
            assert!((dense[[i, j]] - want).abs() < 1e-5, "z[{i},{j}] = {} not {want}", dense[[i, j]]);
        }
        let w = Array2::from_shape_fn((2, 30), |(a, j)| ((a * 7 + j * 3) % 5) as f32 - 2.0);
        let r = Array2::from_shape_fn((200, 2), |(i, a)| ((i + a) % 4) as f32 * 0.1 - 0.15);
        let close = |p: &Array2<f32>, q: &Array2<f32>| p.iter().zip(q).all(|(a, b)| (a - b).abs() < 1e-3 * (1.0 + b.abs()));
        let dd = Design::Dense(dense.clone());
        assert!(close(&sparse.times_weights(w.view(), 1), &dd.times_weights(w.view(), 1)));
        assert!(close(&sparse.residuals_times(r.view(), 1), &dd.residuals_times(r.view(), 1)));
        // Shared among workers (row ranges), the products are the same.
        for t in [2, 3] {
            assert_eq!(dd.chunks(t).len(), 1, "too small to share");
        }
        let whole = dd.residuals_times_rows(r.view(), 0..200);
        let split = dd.residuals_times_rows(r.view(), 0..77) + dd.residuals_times_rows(r.view(), 77..200);
        assert!(close(&whole, &split));
        let top = sparse.times_weights_rows(w.view(), 0..77);
        assert!(close(&top, &sparse.times_weights(w.view(), 1).slice(ndarray::s![0..77, ..]).to_owned()));
        let keep = [1, 4, 20];
        assert!(close(&sparse.select(&keep).to_dense(), &dense.select(Axis(1), &keep)));
    }

    #[test]
    fn each_class_stops_at_its_own_stationary_point_in_either_form() {
        let (x, y) = sparse_data(90, 24, 2);
        let (cols, mean, scale) = scaler(&x);
        let sparse = Design::new(x.view(), &cols, &mean, &scale);
        let dense = Design::Dense(sparse.to_dense());
        let fs = fit(&sparse, &y, 3, 1.0, 1000, 1e-6, 1);
        let fd = fit(&dense, &y, 3, 1.0, 1000, 1e-6, 1);
        assert!(fs.w.iter().zip(&fd.w).all(|(a, b)| (a - b).abs() < 1e-3), "the two forms agree");
        // Class 1's own gradient, computed independently, vanishes.
        let z = dense.to_dense();
        let n = z.nrows() as f64;
        let mut gw = vec![0f64; z.ncols()];
        for (i, row) in z.rows().into_iter().enumerate() {
            let s: f64 = row.iter().zip(fd.w.row(1)).map(|(a, b)| (a * b) as f64).sum::<f64>() + fd.b[1] as f64;
            let r = (sigmoid(s) - if y[i] == 1 { 1.0 } else { 0.0 }) / n;
            for (g, v) in gw.iter_mut().zip(row) {
                *g += r * *v as f64;
            }
        }
        let gmax = gw.iter().zip(fd.w.row(1)).map(|(g, w)| (g + *w as f64 / n).abs()).fold(0f64, f64::max);
        assert!(gmax < 5e-5, "gradient {gmax}");
        // The classes ran their own number of iterations, and the passes cover the longest.
        assert!(fd.passes > *fd.iterations.iter().max().unwrap());
    }
}
