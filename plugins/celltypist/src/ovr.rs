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
use crate::kernels;
use std::ops::Range;
use std::sync::{mpsc, Arc};
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

/// The training matrix after one pass over it: each gene's sum (f64) and, while under
/// [`SPARSE_BELOW`] of the values are non-zero, those values in compressed rows (the pass stops
/// collecting them once the fraction is exceeded).
pub struct Scan {
    pub sums: Vec<f64>,
    /// `(indptr, indices, values)` of the non-zero inputs, all genes.
    csr: Option<(Vec<usize>, Vec<u32>, Vec<f32>)>,
}

impl Scan {
    pub fn new(x: ArrayView2<f32>) -> Scan {
        let (n, g) = x.dim();
        let limit = (SPARSE_BELOW * (n * g) as f64) as usize;
        let mut sums = vec![0f64; g];
        let mut csr = Some((vec![0usize], Vec::new(), Vec::new()));
        let x = x.as_standard_layout();
        for row in x.as_slice().expect("standard layout").chunks_exact(g.max(1)) {
            match &mut csr {
                Some((indptr, indices, values)) => {
                    // Branch-free compaction: every value is written, the end advances past
                    // the non-zero ones only.
                    let start = indices.len();
                    indices.resize(start + g, 0);
                    values.resize(start + g, 0.0);
                    let (ix, vs) = (&mut indices[start..], &mut values[start..]);
                    let mut k = 0;
                    for (j, &v) in row.iter().enumerate() {
                        ix[k] = j as u32;
                        vs[k] = v;
                        k += (v != 0.0) as usize;
                    }
                    let end = start + k;
                    indices.truncate(end);
                    values.truncate(end);
                    for (&j, &v) in indices[start..].iter().zip(&values[start..]) {
                        sums[j as usize] += v as f64;
                    }
                    indptr.push(end);
                    // Stop collecting past the limit, or early when the first rows are clearly dense.
                    if end > limit || (indptr.len() == 65 && end as f64 > 2.0 * SPARSE_BELOW * (64 * g) as f64) {
                        csr = None;
                    }
                }
                None => sums.iter_mut().zip(row).for_each(|(s, &v)| *s += v as f64),
            }
        }
        Scan { sums, csr }
    }

    /// Population variances of the genes `cols` around `means` (all genes): from the
    /// non-zero values when they were kept, else a second pass over `x`.
    pub fn variances(&self, x: ArrayView2<f32>, cols: &[usize], means: &[f64]) -> Vec<f64> {
        let n = x.nrows() as f64;
        let g = x.ncols();
        let squares = match &self.csr {
            Some((_, indices, values)) => {
                let mut squares = vec![0f64; g];
                let mut nnz = vec![0usize; g];
                for (&j, &v) in indices.iter().zip(values) {
                    squares[j as usize] += (v as f64 - means[j as usize]).powi(2);
                    nnz[j as usize] += 1;
                }
                // Each zero input adds m².
                squares.iter_mut().zip(&nnz).zip(means).for_each(|((s, &k), m)| *s += (n - k as f64) * m * m);
                squares
            }
            None => {
                let mut squares = vec![0f64; g];
                for row in x.rows() {
                    squares.iter_mut().zip(row).zip(means).for_each(|((s, &v), m)| *s += (v as f64 - m).powi(2));
                }
                squares
            }
        };
        cols.iter().map(|&c| squares[c] / n).collect()
    }

    /// The design of [`Design::new`] (the same values), built from the kept non-zero inputs
    /// when there are any and the sparse form is exact, else by [`Design::new`].
    pub fn design(&self, x: ArrayView2<f32>, cols: &[usize], mean: &Array1<f32>, scale: &Array1<f32>) -> Design {
        let offset: Vec<f32> = (0..cols.len()).map(|j| mean[j] / scale[j]).collect();
        let exact = offset.iter().all(|&m| -m < 10.0);
        let Some((indptr, indices, values)) = &self.csr else {
            // The scan found the input dense.
            return Design::dense(x, cols, mean, scale);
        };
        if !exact || (values.len() as f64) >= SPARSE_BELOW * (x.nrows() * cols.len()).max(1) as f64 {
            return Design::new(x, cols, mean, scale);
        }
        let mut to = vec![u32::MAX; x.ncols()];
        for (j, &c) in cols.iter().enumerate() {
            to[c] = j as u32;
        }
        let (mut ip, mut ix, mut vs) = (Vec::with_capacity(indptr.len()), Vec::with_capacity(values.len()), Vec::with_capacity(values.len()));
        ip.push(0);
        for i in 0..x.nrows() {
            for p in indptr[i]..indptr[i + 1] {
                let j = to[indices[p] as usize];
                if j != u32::MAX {
                    let j = j as usize;
                    ix.push(j as u32);
                    vs.push(((values[p] - mean[j]) / scale[j]).min(10.0) + offset[j]);
                }
            }
            ip.push(ix.len());
        }
        Design::Sparse { n: x.nrows(), d: cols.len(), indptr: ip, indices: ix, values: vs, offset }
    }
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
            return Design::dense(x, cols, mean, scale);
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

    /// The dense form of [`Design::new`].
    fn dense(x: ArrayView2<f32>, cols: &[usize], mean: &Array1<f32>, scale: &Array1<f32>) -> Design {
        let mut out = Array2::<f32>::zeros((x.nrows(), cols.len()));
        let (mean, scale) = (mean.as_slice().expect("contiguous"), scale.as_slice().expect("contiguous"));
        for (mut o, row) in out.rows_mut().into_iter().zip(x.rows()) {
            let o = o.as_slice_mut().expect("standard layout");
            match row.as_slice() {
                // Every gene kept (`cols` ascending): straight runs, which vectorise.
                Some(row) if cols.len() == row.len() => {
                    for (((o, &v), m), s) in o.iter_mut().zip(row).zip(mean).zip(scale) {
                        *o = ((v - m) / s).min(10.0);
                    }
                }
                _ => {
                    for (j, &c) in cols.iter().enumerate() {
                        o[j] = ((row[c] - mean[j]) / scale[j]).min(10.0);
                    }
                }
            }
        }
        Design::Dense(out)
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
            Design::Dense(z) => Design::Dense(z.select(Axis(1), keep).as_standard_layout().into_owned()),
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
        // Sharing a pass costs a thread start; measured on 2 cores, it pays from about a
        // quarter of a million values, dense or sparse (pbmc68k_reduced's 0.37 M dense: about 1 ms of a
        // 19 ms fit; onek1k's 0.63 M sparse: 84 → 68 ms of solver, the machine idle).
        let shared = match self {
            Design::Dense(z) => z.len() >= 1 << 18,
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
    #[cfg(test)]
    fn residuals_times(&self, r: ArrayView2<f32>, threads: usize) -> Array2<f32> {
        let mut parts = self.shared(threads, |c| self.residuals_times_rows(r.slice(ndarray::s![c.clone(), ..]), c)).into_iter();
        let mut total = parts.next().expect("one part at least");
        for p in parts {
            total += &p;
        }
        total
    }

    /// Rows `rows` of `Z·Wᵀ`.
    fn times_weights_rows(&self, w: ArrayView2<f32>, rows: std::ops::Range<usize>) -> Array2<f32> {
        let mut out = Array2::<f32>::zeros((rows.len(), w.nrows()));
        match self {
            Design::Dense(z) => {
                let d = z.ncols();
                let z = z.as_slice().expect("a dense design is held in standard layout");
                kernels::dense_times(&z[rows.start * d..rows.end * d], w, &mut out);
            }
            Design::Sparse { indptr, indices, values, offset, .. } => {
                let shift: Vec<f32> = w.rows().into_iter().map(|r| r.iter().zip(offset).map(|(x, m)| x * m).sum()).collect();
                kernels::sparse_times(indptr, indices, values, w, &shift, rows, &mut out);
            }
        }
        out
    }

    /// `Rᵀ·Z` over the cells `rows` only, `r` holding those cells' residuals.
    fn residuals_times_rows(&self, r: ArrayView2<f32>, rows: std::ops::Range<usize>) -> Array2<f32> {
        let mut g = Array2::<f32>::zeros((r.ncols(), self.d()));
        match self {
            Design::Dense(z) => {
                let d = z.ncols();
                let z = z.as_slice().expect("a dense design is held in standard layout");
                kernels::dense_residuals(&z[rows.start * d..rows.end * d], r, &mut g);
            }
            Design::Sparse { indptr, indices, values, offset, .. } => {
                kernels::sparse_residuals(indptr, indices, values, r, rows, &mut g);
                let sums = r.sum_axis(Axis(0));
                for (mut row, s) in g.rows_mut().into_iter().zip(sums.iter()) {
                    row.iter_mut().zip(offset).for_each(|(v, m)| *v -= s * m);
                }
            }
        }
        g
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

/// One worker's share of a pass: per-class loss sums, residual sums (the intercepts' gradient)
/// and `Rᵀ·Z` over its cells.
type Share = (Vec<f64>, Array1<f32>, Array2<f32>);

/// The work of one pass over a range of cells.
type Job<'a> = Arc<dyn Fn(Range<usize>) -> Share + Send + Sync + 'a>;

/// Worker threads kept for all the passes of a fit, one per cell range after the first (which
/// the calling thread takes). A pass is a few hundred microseconds on a small matrix; starting
/// threads for each cost a sizeable part of it, and a new thread may start on a core whose
/// cache does not hold its cells.
struct Crew<'a> {
    ranges: Vec<Range<usize>>,
    jobs: Vec<mpsc::Sender<Job<'a>>>,
    shares: mpsc::Receiver<(usize, Share)>,
}

impl<'a> Crew<'a> {
    /// Workers for the cell ranges of [`Design::chunks`], started in `scope`.
    fn new<'s>(scope: &'s std::thread::Scope<'s, 'a>, z: &Design, threads: usize) -> Crew<'a> {
        let ranges = z.chunks(threads);
        let (done, shares) = mpsc::channel();
        let jobs = (1..ranges.len())
            .map(|idx| {
                let (tx, rx) = mpsc::channel::<Job<'a>>();
                let (range, done) = (ranges[idx].clone(), done.clone());
                scope.spawn(move || {
                    while let Ok(job) = spin_recv(&rx) {
                        if done.send((idx, job(range.clone()))).is_err() {
                            break;
                        }
                    }
                });
                tx
            })
            .collect();
        Crew { ranges, jobs, shares }
    }

    /// `job` over every range, the shares in range order.
    fn run(&self, job: Job<'a>) -> Vec<Share> {
        for tx in &self.jobs {
            tx.send(job.clone()).expect("a worker of the fit stopped");
        }
        let first = job(self.ranges[0].clone());
        let mut rest: Vec<(usize, Share)> = (0..self.jobs.len()).map(|_| spin_recv(&self.shares).expect("a worker of the fit stopped")).collect();
        rest.sort_by_key(|(idx, _)| *idx);
        std::iter::once(first).chain(rest.into_iter().map(|(_, s)| s)).collect()
    }
}

/// The next message, polled a thousand times (spin-loop hints) before sleeping: between
/// two passes the workers wait for the L-BFGS steps (tens of microseconds), and waking a
/// sleeping thread costs as much.
fn spin_recv<T>(rx: &mpsc::Receiver<T>) -> Result<T, mpsc::RecvError> {
    for _ in 0..1000 {
        match rx.try_recv() {
            Ok(v) => return Ok(v),
            Err(mpsc::TryRecvError::Disconnected) => return Err(mpsc::RecvError),
            Err(mpsc::TryRecvError::Empty) => std::hint::spin_loop(),
        }
    }
    rx.recv()
}

/// Objectives and gradients (`[w, b]`) of the binary problems of `classes` at `thetas`: class `c`
/// against the rest, `mean_i log(1 + e^{−s_i(w·z_i + b)}) + λ/2‖w‖²`.
fn evaluate<'a>(z: &'a Design, labels: &'a [u32], lambda: f64, classes: &[usize], thetas: &[&[f32]], crew: &Crew<'a>) -> Vec<(f64, Vec<f32>)> {
    let (n, d, a) = (z.n(), z.d(), classes.len());
    let mut w = Array2::<f32>::zeros((a, d));
    for (mut row, t) in w.rows_mut().into_iter().zip(thetas) {
        row.assign(&ndarray::ArrayView1::from(&t[..d]));
    }
    let intercepts: Vec<f32> = thetas.iter().map(|t| t[d]).collect();
    let classes = classes.to_vec();
    // Each worker takes its cells through scores, losses, residuals and their share of the
    // gradient; the shares are added in range order.
    let job: Job<'a> = Arc::new(move |rows: Range<usize>| {
        let mut r = z.times_weights_rows(w.view(), rows.clone());
        let m = r.len();
        let mut s = vec![0f64; m];
        for (s, (v, b)) in s.iter_mut().zip(r.iter().zip(intercepts.iter().cycle())) {
            *s = (v + b) as f64;
        }
        // One exponential and one logarithm serve the loss and σ(s): with e = e^{−|s|},
        // log(1 + e^{∓s}) = max(∓s, 0) + ln(1 + e) and σ(s) = 1/(1 + e) or e/(1 + e).
        let (mut e, mut l) = (vec![0f64; m], vec![0f64; m]);
        kernels::soft_terms(&s, &mut e, &mut l);
        let mut loss = vec![0f64; a];
        let rr = r.as_slice_mut().expect("standard layout");
        for (i, &y) in labels[rows.clone()].iter().enumerate() {
            for (j, &c) in classes.iter().enumerate() {
                let (s, e, l) = (s[i * a + j], e[i * a + j], l[i * a + j]);
                let pos = c == y as usize;
                loss[j] += (if pos { -s } else { s }).max(0.0) + l;
                let p = if s >= 0.0 { 1.0 / (1.0 + e) } else { e / (1.0 + e) };
                rr[i * a + j] = ((p - if pos { 1.0 } else { 0.0 }) / n as f64) as f32;
            }
        }
        (loss, r.sum_axis(Axis(0)), z.residuals_times_rows(r.view(), rows))
    });
    let mut parts = crew.run(job).into_iter();
    let (mut loss, mut gb, mut gw) = parts.next().expect("one part at least");
    for (l, b, g) in parts {
        loss.iter_mut().zip(l).for_each(|(x, y)| *x += y);
        gb += &b;
        gw += &g;
    }
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
    std::thread::scope(|scope| {
        let crew = Crew::new(scope, z, threads);
        let (n, d) = (z.n(), z.d());
        let lambda = 1.0 / (c * n as f64);
        let all: Vec<usize> = (0..k).collect();
        let zero = vec![0f32; d + 1];
        let start = evaluate(z, labels, lambda, &all, &vec![zero.as_slice(); k], &crew);
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
            for (c, (f, g)) in running.iter().zip(evaluate(z, labels, lambda, &running, &views, &crew)) {
                states[*c].report(f, g);
            }
            passes += 1;
        }
        // Dropping the crew ends its workers; the scope waits for them.
        drop(crew);
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
    })
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
        let close = |p: &Array2<f32>, q: &Array2<f32>| p.iter().zip(q).all(|(a, b)| (a - b).abs() < 1e-3 * (1.0 + b.abs()));
        let dd = Design::Dense(dense.clone());
        // Every lane width of the sparse kernels, and more classes than one group holds.
        for classes in [2, 6, 11, 20] {
            let w = Array2::from_shape_fn((classes, 30), |(a, j)| ((a * 7 + j * 3) % 5) as f32 - 2.0);
            let r = Array2::from_shape_fn((200, classes), |(i, a)| ((i + a) % 4) as f32 * 0.1 - 0.15);
            assert!(close(&sparse.times_weights(w.view(), 1), &dd.times_weights(w.view(), 1)), "{classes} classes");
            assert!(close(&sparse.residuals_times(r.view(), 1), &dd.residuals_times(r.view(), 1)), "{classes} classes");
        }
        let w = Array2::from_shape_fn((2, 30), |(a, j)| ((a * 7 + j * 3) % 5) as f32 - 2.0);
        let r = Array2::from_shape_fn((200, 2), |(i, a)| ((i + a) % 4) as f32 * 0.1 - 0.15);
        // Shared among workers (row ranges), the products are the same.
        for t in [2, 3] {
            assert_eq!(dd.chunks(t).len(), 1, "too small to share");
        }
        let part = |rows: std::ops::Range<usize>| dd.residuals_times_rows(r.slice(ndarray::s![rows.clone(), ..]), rows);
        let whole = part(0..200);
        let split = part(0..77) + part(77..200);
        assert!(close(&whole, &split));
        let top = sparse.times_weights_rows(w.view(), 0..77);
        assert!(close(&top, &sparse.times_weights(w.view(), 1).slice(ndarray::s![0..77, ..]).to_owned()));
        let keep = [1, 4, 20];
        assert!(close(&sparse.select(&keep).to_dense(), &dense.select(Axis(1), &keep)));
    }

    #[test]
    fn one_scan_gives_the_scaler_and_design_of_the_direct_computation() {
        let dense_data = Array2::from_shape_fn((150, 20), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.3 + 0.1);
        let (sparse_data, _) = sparse_data(200, 30, 3);
        // Dense from the first rows on; sparse throughout; sparse rows then dense ones (the
        // collection stops at the limit).
        let mut mixed = sparse_data.clone();
        mixed.slice_mut(ndarray::s![120.., ..]).fill(1.5);
        for (x, kept) in [(dense_data, false), (sparse_data, true), (mixed, false)] {
            let scan = Scan::new(x.view());
            assert_eq!(scan.csr.is_some(), kept);
            let (cols, mean, scale) = scaler(&x);
            let sums = x.map(|&v| v as f64).sum_axis(Axis(0));
            assert!(scan.sums.iter().zip(&sums).all(|(a, b)| (a - b).abs() < 1e-9 * (1.0 + b.abs())));
            let means: Vec<f64> = scan.sums.iter().map(|s| s / x.nrows() as f64).collect();
            let var = scan.variances(x.view(), &cols, &means);
            assert!(var.iter().zip(&scale).all(|(v, s)| (v.sqrt() as f32 - s).abs() < 1e-5 || (*v == 0.0 && *s == 1.0)));
            let want = Design::new(x.view(), &cols, &mean, &scale);
            let got = scan.design(x.view(), &cols, &mean, &scale);
            assert_eq!(matches!(got, Design::Sparse { .. }), matches!(want, Design::Sparse { .. }));
            assert_eq!(got.to_dense(), want.to_dense());
        }
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
