//! Cell-level baselines: per-class means of random parts of each class (`class-mean`). The
//! `random` baseline is the plan's initial rows themselves ([`super::Plan`]).
use super::real::{self, CellSource};
use crate::error::Result;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

/// Per class, the means of `spc` random, disjoint, near-equal parts of its cells (streamed in
/// chunks, so a class never has to fit in memory).
pub fn class_means(
    source: &CellSource,
    class_rows: &[Vec<usize>],
    present: &[u32],
    spc: usize,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<f32>, usize)> {
    let mut out = Vec::new();
    let mut genes = 0;
    for &c in present {
        let mut rows = class_rows[c as usize].clone();
        rows.shuffle(rng);
        for part in 0..spc {
            // part k takes rows k, k+spc, ... (all rows when the class is smaller than spc)
            let mine: Vec<usize> = if rows.len() >= spc {
                rows.iter().skip(part).step_by(spc).copied().collect()
            } else {
                rows.clone()
            };
            let mut sum: Vec<f64> = Vec::new();
            for chunk in mine.chunks(real::CHUNK_ROWS) {
                let x = source.rows(chunk)?;
                genes = x.n_cols();
                if sum.is_empty() {
                    sum = vec![0.0; genes];
                }
                for r in 0..x.n_rows() {
                    let (idx, val) = x.row(r);
                    for (&j, &v) in idx.iter().zip(val) {
                        sum[j as usize] += v as f64;
                    }
                }
            }
            out.extend(sum.iter().map(|s| (s / mine.len() as f64) as f32));
        }
    }
    Ok((out, genes))
}
