//! The four products of a pass, in fixed-width lanes: the classes still running are taken in
//! groups of at most 16, their weights or residuals laid out 4, 8 or 16 to a gene, so that one
//! input value costs one lane-wide multiply-add.
//!
//! - `Z·Wᵀ` (scores) and `Rᵀ·Z` (the gradient), for a dense `Z` (rows in blocks of 4, the
//!   accumulators in registers) and for the non-zero values of a sparse one.
//! - Each exists twice: plain Rust for any CPU, and AVX2 + FMA intrinsics (`avx`), chosen at run
//!   time (the plugin ships as one binary). Sums run over the cells in order either way, so a
//!   result does not depend on the blocking or the number of classes, only on whether the CPU
//!   fuses the multiply-add.
//! - The per-score exponential and logarithm of the loss, as branch-free polynomials that
//!   vectorise ([`soft_terms`]).
#![allow(clippy::needless_range_loop)] // lanes indexed alike across several arrays
use ndarray::{Array2, ArrayView2};
use std::ops::Range;

#[inline(always)]
fn madd(acc: f32, a: f32, b: f32) -> f32 {
    acc + a * b
}

/// Rows `group` of `m` (classes × genes) transposed into lanes: gene-major, `A` classes each.
fn lanes<const A: usize>(m: ArrayView2<f32>, group: &Range<usize>) -> Vec<[f32; A]> {
    let mut out = vec![[0f32; A]; m.ncols()];
    for (k, c) in group.clone().enumerate() {
        for (lane, &v) in out.iter_mut().zip(m.row(c)) {
            lane[k] = v;
        }
    }
    out
}

/// Columns `group` of `Z·Wᵀ` for the dense rows `z` (row-major, `w.ncols()` each), into the
/// first rows of `out`.
#[inline(always)]
fn dense_times_k<const A: usize>(z: &[f32], w: ArrayView2<f32>, out: &mut Array2<f32>, group: Range<usize>) {
    let d = w.ncols();
    let wt = lanes::<A>(w, &group);
    let n = out.nrows();
    let mut store = |i: usize, acc: &[f32; A]| {
        for (k, c) in group.clone().enumerate() {
            out[[i, c]] = acc[k];
        }
    };
    let mut i = 0;
    while i + 4 <= n {
        let (r0, r1, r2, r3) = (&z[i * d..][..d], &z[(i + 1) * d..][..d], &z[(i + 2) * d..][..d], &z[(i + 3) * d..][..d]);
        let (mut a0, mut a1, mut a2, mut a3) = ([0f32; A], [0f32; A], [0f32; A], [0f32; A]);
        for j in 0..d {
            let wl = &wt[j];
            let (a, b, c, e) = (r0[j], r1[j], r2[j], r3[j]);
            for k in 0..A {
                a0[k] = madd(a0[k], a, wl[k]);
                a1[k] = madd(a1[k], b, wl[k]);
                a2[k] = madd(a2[k], c, wl[k]);
                a3[k] = madd(a3[k], e, wl[k]);
            }
        }
        store(i, &a0);
        store(i + 1, &a1);
        store(i + 2, &a2);
        store(i + 3, &a3);
        i += 4;
    }
    for i in i..n {
        let mut acc = [0f32; A];
        for (wl, &a) in wt.iter().zip(&z[i * d..][..d]) {
            for k in 0..A {
                acc[k] = madd(acc[k], a, wl[k]);
            }
        }
        store(i, &acc);
    }
}

/// Rows `group` of `Rᵀ·Z` for the dense rows `z` (row-major, `g.ncols()` each) and their
/// residuals `r` (same rows), added into `g` (classes × genes).
#[inline(always)]
fn dense_residuals_k<const A: usize>(z: &[f32], r: ArrayView2<f32>, g: &mut Array2<f32>, group: Range<usize>) {
    let d = g.ncols();
    let n = r.nrows();
    let mut gt = vec![[0f32; A]; d];
    let row = |i: usize| {
        let mut l = [0f32; A];
        for (k, c) in group.clone().enumerate() {
            l[k] = r[[i, c]];
        }
        l
    };
    let mut i = 0;
    while i + 4 <= n {
        let (l0, l1, l2, l3) = (row(i), row(i + 1), row(i + 2), row(i + 3));
        let (r0, r1, r2, r3) = (&z[i * d..][..d], &z[(i + 1) * d..][..d], &z[(i + 2) * d..][..d], &z[(i + 3) * d..][..d]);
        for ((((gl, &a), &b), &c), &e) in gt.iter_mut().zip(r0).zip(r1).zip(r2).zip(r3) {
            for k in 0..A {
                // The cells in order, as one at a time would add them.
                gl[k] = madd(madd(madd(madd(gl[k], a, l0[k]), b, l1[k]), c, l2[k]), e, l3[k]);
            }
        }
        i += 4;
    }
    for i in i..n {
        let l = row(i);
        for (gl, &a) in gt.iter_mut().zip(&z[i * d..][..d]) {
            for k in 0..A {
                gl[k] = madd(gl[k], a, l[k]);
            }
        }
    }
    for (k, c) in group.enumerate() {
        for (dst, lane) in g.row_mut(c).iter_mut().zip(&gt) {
            *dst += lane[k];
        }
    }
}

/// Columns `group` of `S·Wᵀ − 1·shiftᵀ` over the sparse cells `rows`, into `out` (rows relative
/// to `rows.start`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn sparse_times_k<const A: usize>(
    indptr: &[usize],
    indices: &[u32],
    values: &[f32],
    w: ArrayView2<f32>,
    shift: &[f32],
    rows: Range<usize>,
    out: &mut Array2<f32>,
    group: Range<usize>,
) {
    let wt = lanes::<A>(w, &group);
    let mut start = [0f32; A];
    for (k, c) in group.clone().enumerate() {
        start[k] = -shift[c];
    }
    let first = rows.start;
    for i in rows {
        let mut acc = start;
        for p in indptr[i]..indptr[i + 1] {
            let (v, lane) = (values[p], &wt[indices[p] as usize]);
            for k in 0..A {
                acc[k] = madd(acc[k], v, lane[k]);
            }
        }
        for (k, c) in group.clone().enumerate() {
            out[[i - first, c]] = acc[k];
        }
    }
}

/// Rows `group` of `Rᵀ·S` over the sparse cells `rows` (residual rows indexed from
/// `rows.start`), added into `g` (classes × genes).
#[inline(always)]
fn sparse_residuals_k<const A: usize>(
    indptr: &[usize],
    indices: &[u32],
    values: &[f32],
    r: ArrayView2<f32>,
    rows: Range<usize>,
    g: &mut Array2<f32>,
    group: Range<usize>,
) {
    let mut gt = vec![[0f32; A]; g.ncols()];
    let first = rows.start;
    for i in rows {
        let mut ri = [0f32; A];
        for (k, c) in group.clone().enumerate() {
            ri[k] = r[[i - first, c]];
        }
        for p in indptr[i]..indptr[i + 1] {
            let (v, lane) = (values[p], &mut gt[indices[p] as usize]);
            for k in 0..A {
                lane[k] = madd(lane[k], v, ri[k]);
            }
        }
    }
    for (k, c) in group.enumerate() {
        for (dst, lane) in g.row_mut(c).iter_mut().zip(&gt) {
            *dst += lane[k];
        }
    }
}

/// Whether the AVX2 + FMA kernels run on this CPU.
pub fn wide() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Runs the plain kernel `$plain` at the narrowest lane width that holds `$group`, or, when
/// `$fast`, the AVX2 one `$avx` in one or two 8-wide vectors.
macro_rules! at_width {
    ($fast:expr, $group:expr, $plain:ident, $avx:ident, ($($arg:expr),*)) => {{
        let group: Range<usize> = $group;
        match (group.len(), $fast) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `wide()` found AVX2 and FMA on this CPU.
            (0..=8, true) => unsafe { avx::$avx::<1>($($arg,)* group) },
            #[cfg(target_arch = "x86_64")]
            (_, true) => unsafe { avx::$avx::<2>($($arg,)* group) },
            (0..=4, _) => $plain::<4>($($arg,)* group),
            (5..=8, _) => $plain::<8>($($arg,)* group),
            _ => $plain::<16>($($arg,)* group),
        }
    }};
}

/// The classes in groups of at most 16.
fn groups(a: usize) -> impl Iterator<Item = Range<usize>> {
    (0..a).step_by(16).map(move |c0| c0..(c0 + 16).min(a))
}

/// `Z·Wᵀ` for the dense rows `z` (row-major, `w.ncols()` values each): `out` (rows × classes).
pub fn dense_times(z: &[f32], w: ArrayView2<f32>, out: &mut Array2<f32>) {
    let fast = wide();
    for group in groups(w.nrows()) {
        at_width!(fast, group, dense_times_k, dense_times, (z, w, out));
    }
}

/// `Rᵀ·Z` for the dense rows `z` (row-major, `g.ncols()` values each) and their residuals `r`,
/// added into `g` (classes × genes).
pub fn dense_residuals(z: &[f32], r: ArrayView2<f32>, g: &mut Array2<f32>) {
    let fast = wide();
    for group in groups(r.ncols()) {
        at_width!(fast, group, dense_residuals_k, dense_residuals, (z, r, g));
    }
}

/// `S·Wᵀ − 1·shiftᵀ` over the sparse cells `rows`: `out` (rows relative to `rows.start`).
pub fn sparse_times(indptr: &[usize], indices: &[u32], values: &[f32], w: ArrayView2<f32>, shift: &[f32], rows: Range<usize>, out: &mut Array2<f32>) {
    let fast = wide();
    for group in groups(w.nrows()) {
        at_width!(fast, group, sparse_times_k, sparse_times, (indptr, indices, values, w, shift, rows.clone(), out));
    }
}

/// `Rᵀ·S` over the sparse cells `rows` (residual rows indexed from `rows.start`), added into
/// `g` (classes × genes).
pub fn sparse_residuals(indptr: &[usize], indices: &[u32], values: &[f32], r: ArrayView2<f32>, rows: Range<usize>, g: &mut Array2<f32>) {
    let fast = wide();
    for group in groups(r.ncols()) {
        at_width!(fast, group, sparse_residuals_k, sparse_residuals, (indptr, indices, values, r, rows.clone(), g));
    }
}

/// `e^x` for `x ≤ 0` (0 below −708), within 2 ulp: `2^k·e^r` with `|r| ≤ ln2/2` and a
/// degree-12 Taylor polynomial. Branch-free, so that a loop of it vectorises (glibc's `exp` is a
/// call per value).
#[inline(always)]
fn exp_nonpositive(x: f64) -> f64 {
    const LN2_HI: f64 = 0.693_147_180_369_123_8;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    // 1.5·2^52: adding it rounds to an integer, which then sits in the low bits.
    const ROUND: f64 = 6_755_399_441_055_744.0;
    let x = x.max(-708.0);
    let t = x * std::f64::consts::LOG2_E + ROUND;
    let k = t - ROUND;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0 / 479_001_600.0;
    for c in [39_916_800.0, 3_628_800.0, 362_880.0, 40_320.0, 5_040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0] {
        p = p * r + 1.0 / c;
    }
    // 2^k from k's bits: (k + 1023) in the exponent field.
    let two_k = f64::from_bits((t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(1023)) << 52);
    p * two_k
}

/// `ln(1 + e)` for `0 ≤ e ≤ 1`, within 2 ulp: `2·atanh(t)`, `t = e/(2 + e) ≤ 1/3`, by its series
/// to `t^33`. Branch-free, as [`exp_nonpositive`].
#[inline(always)]
fn ln_1p_unit(e: f64) -> f64 {
    let t = e / (2.0 + e);
    let t2 = t * t;
    let mut p = 1.0 / 33.0;
    for k in (0..16).rev() {
        p = p * t2 + 1.0 / (2 * k + 1) as f64;
    }
    2.0 * t * p
}

/// For scores `s`: `e = e^{−|s|}` and `l = ln(1 + e)`, from which a logistic loss
/// `ln(1 + e^{∓s}) = max(∓s, 0) + l` and `σ(s)` follow (one exponential and one logarithm per
/// score, in vector registers).
#[inline(always)]
fn soft_terms_k(s: &[f64], e: &mut [f64], l: &mut [f64]) {
    for ((&s, e), l) in s.iter().zip(e.iter_mut()).zip(l.iter_mut()) {
        *e = exp_nonpositive(-s.abs());
        *l = ln_1p_unit(*e);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn soft_terms_avx(s: &[f64], e: &mut [f64], l: &mut [f64]) {
    soft_terms_k(s, e, l)
}

/// [`soft_terms_k`] over all of `s`, in AVX2 registers where the CPU has them (the same
/// operations either way: no fused multiply-add, so the same values).
pub fn soft_terms(s: &[f64], e: &mut [f64], l: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if wide() {
        // SAFETY: `wide()` found AVX2 and FMA on this CPU.
        return unsafe { soft_terms_avx(s, e, l) };
    }
    soft_terms_k(s, e, l)
}

/// The kernels in AVX2 + FMA intrinsics, `V` 8-wide vectors to a lane (up to `8V` classes):
/// the same loops and the same order of additions as the plain ones, each multiply-add fused.
#[cfg(target_arch = "x86_64")]
mod avx {
    use ndarray::{Array2, ArrayView2};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// Rows `group` of `m` (classes × genes), gene-major, `8V` values a gene (zero-padded).
    fn lanes<const V: usize>(m: ArrayView2<f32>, group: &Range<usize>) -> Vec<f32> {
        let mut out = vec![0f32; m.ncols() * 8 * V];
        for (k, c) in group.clone().enumerate() {
            for (j, &v) in m.row(c).iter().enumerate() {
                out[j * 8 * V + k] = v;
            }
        }
        out
    }

    /// Row `i` of `r`, columns `group`, zero-padded to `8V`.
    #[inline(always)]
    unsafe fn row<const V: usize>(r: ArrayView2<f32>, i: usize, group: &Range<usize>) -> [__m256; V] {
        let mut l = [0f32; 16];
        for (k, c) in group.clone().enumerate() {
            l[k] = r[[i, c]];
        }
        std::array::from_fn(|v| _mm256_loadu_ps(l.as_ptr().add(8 * v)))
    }

    #[inline(always)]
    unsafe fn store<const V: usize>(acc: &[__m256; V], out: &mut Array2<f32>, i: usize, group: &Range<usize>) {
        let mut l = [0f32; 16];
        for (v, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(l.as_mut_ptr().add(8 * v), *a);
        }
        for (k, c) in group.clone().enumerate() {
            out[[i, c]] = l[k];
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dense_times<const V: usize>(z: &[f32], w: ArrayView2<f32>, out: &mut Array2<f32>, group: Range<usize>) {
        let d = w.ncols();
        let wt = lanes::<V>(w, &group);
        let n = out.nrows();
        assert!(z.len() >= n * d);
        let (zp, wp) = (z.as_ptr(), wt.as_ptr());
        let mut i = 0;
        while i + 4 <= n {
            let mut acc = [[_mm256_setzero_ps(); V]; 4];
            for j in 0..d {
                let wv: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(wp.add((j * V + v) * 8)));
                for (q, a) in acc.iter_mut().enumerate() {
                    let b = _mm256_broadcast_ss(&*zp.add((i + q) * d + j));
                    for v in 0..V {
                        a[v] = _mm256_fmadd_ps(b, wv[v], a[v]);
                    }
                }
            }
            for (q, a) in acc.iter().enumerate() {
                store(a, out, i + q, &group);
            }
            i += 4;
        }
        for i in i..n {
            let mut a = [_mm256_setzero_ps(); V];
            for j in 0..d {
                let b = _mm256_broadcast_ss(&*zp.add(i * d + j));
                for v in 0..V {
                    a[v] = _mm256_fmadd_ps(b, _mm256_loadu_ps(wp.add((j * V + v) * 8)), a[v]);
                }
            }
            store(&a, out, i, &group);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn dense_residuals<const V: usize>(z: &[f32], r: ArrayView2<f32>, g: &mut Array2<f32>, group: Range<usize>) {
        let d = g.ncols();
        let n = r.nrows();
        assert!(z.len() >= n * d);
        let mut gt = vec![0f32; d * 8 * V];
        let (zp, gp) = (z.as_ptr(), gt.as_mut_ptr());
        let mut i = 0;
        while i + 4 <= n {
            let l: [[__m256; V]; 4] = std::array::from_fn(|q| row::<V>(r, i + q, &group));
            for j in 0..d {
                let b: [__m256; 4] = std::array::from_fn(|q| _mm256_broadcast_ss(&*zp.add((i + q) * d + j)));
                for v in 0..V {
                    let p = gp.add((j * V + v) * 8);
                    let mut a = _mm256_loadu_ps(p);
                    for q in 0..4 {
                        a = _mm256_fmadd_ps(b[q], l[q][v], a);
                    }
                    _mm256_storeu_ps(p, a);
                }
            }
            i += 4;
        }
        for i in i..n {
            let l = row::<V>(r, i, &group);
            for j in 0..d {
                let b = _mm256_broadcast_ss(&*zp.add(i * d + j));
                for v in 0..V {
                    let p = gp.add((j * V + v) * 8);
                    _mm256_storeu_ps(p, _mm256_fmadd_ps(b, l[v], _mm256_loadu_ps(p)));
                }
            }
        }
        for (k, c) in group.enumerate() {
            for (j, dst) in g.row_mut(c).iter_mut().enumerate() {
                *dst += gt[j * 8 * V + k];
            }
        }
    }

    #[target_feature(enable = "avx2,fma")]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn sparse_times<const V: usize>(
        indptr: &[usize],
        indices: &[u32],
        values: &[f32],
        w: ArrayView2<f32>,
        shift: &[f32],
        rows: Range<usize>,
        out: &mut Array2<f32>,
        group: Range<usize>,
    ) {
        let wt = lanes::<V>(w, &group);
        let wp = wt.as_ptr();
        let mut start = [0f32; 16];
        for (k, c) in group.clone().enumerate() {
            start[k] = -shift[c];
        }
        let first = rows.start;
        for i in rows {
            let mut a: [__m256; V] = std::array::from_fn(|v| _mm256_loadu_ps(start.as_ptr().add(8 * v)));
            for p in indptr[i]..indptr[i + 1] {
                let j = indices[p] as usize;
                assert!(j < w.ncols());
                let b = _mm256_set1_ps(values[p]);
                for v in 0..V {
                    a[v] = _mm256_fmadd_ps(b, _mm256_loadu_ps(wp.add((j * V + v) * 8)), a[v]);
                }
            }
            store(&a, out, i - first, &group);
        }
    }

    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn sparse_residuals<const V: usize>(
        indptr: &[usize],
        indices: &[u32],
        values: &[f32],
        r: ArrayView2<f32>,
        rows: Range<usize>,
        g: &mut Array2<f32>,
        group: Range<usize>,
    ) {
        let d = g.ncols();
        let mut gt = vec![0f32; d * 8 * V];
        let gp = gt.as_mut_ptr();
        let first = rows.start;
        for i in rows {
            let l = row::<V>(r, i - first, &group);
            for p in indptr[i]..indptr[i + 1] {
                let j = indices[p] as usize;
                assert!(j < d);
                let b = _mm256_set1_ps(values[p]);
                for v in 0..V {
                    let q = gp.add((j * V + v) * 8);
                    _mm256_storeu_ps(q, _mm256_fmadd_ps(b, l[v], _mm256_loadu_ps(q)));
                }
            }
        }
        for (k, c) in group.enumerate() {
            for (j, dst) in g.row_mut(c).iter_mut().enumerate() {
                *dst += gt[j * 8 * V + k];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_polynomial_exp_and_log_match_the_library_ones() {
        let mut worst = (0f64, 0f64);
        for i in 0..=200_000 {
            let x = -(i as f64) * 0.004; // 0 … −800
            let (want, got) = (x.exp(), exp_nonpositive(x));
            if want > 1e-300 {
                worst.0 = worst.0.max(((got - want) / want).abs());
            } else {
                assert!(got < 1e-300, "e^{x} = {got}");
            }
            let e = (i as f64) / 200_000.0;
            let (want, got) = (e.ln_1p(), ln_1p_unit(e));
            worst.1 = worst.1.max(if want > 0.0 { ((got - want) / want).abs() } else { got.abs() });
        }
        assert!(worst.0 < 5e-16 && worst.1 < 5e-16, "relative errors {worst:?}");
        let s: Vec<f64> = (0..37).map(|i| i as f64 * 0.7 - 12.0).collect();
        let (mut e, mut l) = (vec![0.0; 37], vec![0.0; 37]);
        soft_terms(&s, &mut e, &mut l);
        for ((s, e), l) in s.iter().zip(&e).zip(&l) {
            assert!((e - (-s.abs()).exp()).abs() < 1e-15 && (l - e.ln_1p()).abs() < 1e-15);
        }
    }

    /// Every lane width, both builds, row counts off the blocks of 4: the products equal a
    /// direct f64 computation.
    #[test]
    fn the_products_in_lanes_are_the_matrix_products() {
        let (n, d) = (11, 37);
        let z = Array2::from_shape_fn((n, d), |(i, j)| ((i * 7 + j * 3) % 11) as f32 * 0.3 - 1.0);
        let zs = z.as_slice().unwrap();
        let close = |p: &Array2<f32>, q: &Array2<f64>| p.iter().zip(q).all(|(a, b)| (*a as f64 - b).abs() < 1e-4 * (1.0 + b.abs()));
        let zd = z.mapv(|v| v as f64);
        for a in [1, 3, 8, 9, 16, 20] {
            let w = Array2::from_shape_fn((a, d), |(c, j)| ((c * 5 + j) % 7) as f32 * 0.1 - 0.3);
            let r = Array2::from_shape_fn((n, a), |(i, c)| ((i + 2 * c) % 5) as f32 * 0.1 - 0.2);
            let want_s = zd.dot(&w.mapv(|v| v as f64).t());
            let want_g = r.mapv(|v| v as f64).t().dot(&zd);
            let mut s = Array2::zeros((n, a));
            dense_times(zs, w.view(), &mut s);
            assert!(close(&s, &want_s), "{a} classes, dense scores");
            let mut g = Array2::zeros((a, d));
            dense_residuals(zs, r.view(), &mut g);
            assert!(close(&g, &want_g), "{a} classes, dense gradient");
            // The plain build too (the dispatch takes the AVX2 one where the CPU has it).
            let (mut s, mut g) = (Array2::zeros((n, a)), Array2::zeros((a, d)));
            for group in groups(a) {
                dense_times_k::<16>(zs, w.view(), &mut s, group.clone());
                dense_residuals_k::<16>(zs, r.view(), &mut g, group);
            }
            assert!(close(&s, &want_s) && close(&g, &want_g), "{a} classes, plain build");
        }
    }
}
