//! k-means of one class's encoder features: where `--init kmeans` starts the codes. k-means++
//! seeding from a seeded stream, then Lloyd iterations; deterministic for a seed.
use crate::nn::rng;
use rand::Rng;

/// `k` centroids of the rows of `x` (`n × dim`, row-major) and the cluster of every row. With
/// `n ≤ k` the rows themselves (repeated cyclically; row i in cluster i). Each centroid is
/// scaled to the mean norm of its members, so that centroids of features on a sphere stay on it.
pub fn kmeans(x: &[f32], dim: usize, k: usize, seed: u64, tag: u64) -> (Vec<f32>, Vec<usize>) {
    let n = x.len() / dim;
    let row = |i: usize| &x[i * dim..(i + 1) * dim];
    if n == 0 || k == 0 {
        return (vec![], vec![]);
    }
    if n <= k {
        return ((0..k).flat_map(|j| row(j % n).to_vec()).collect(), (0..n).collect());
    }
    let d2 = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(p, q)| ((p - q) as f64).powi(2)).sum::<f64>();
    let mut r = rng::stream(seed, "distill/kmeans", tag);
    // k-means++ seeding.
    let mut c: Vec<Vec<f32>> = vec![row(r.gen_range(0..n)).to_vec()];
    let mut best: Vec<f64> = (0..n).map(|i| d2(row(i), &c[0])).collect();
    while c.len() < k {
        let total: f64 = best.iter().sum();
        let pick = if total > 0.0 {
            let mut u = r.gen_range(0.0..total);
            let mut pick = n - 1;
            for (i, b) in best.iter().enumerate() {
                if u < *b {
                    pick = i;
                    break;
                }
                u -= b;
            }
            pick
        } else {
            r.gen_range(0..n)
        };
        c.push(row(pick).to_vec());
        for (i, b) in best.iter_mut().enumerate() {
            *b = b.min(d2(row(i), c.last().unwrap()));
        }
    }
    let mut assign = vec![usize::MAX; n];
    for _ in 0..50 {
        let mut changed = false;
        for (i, a) in assign.iter_mut().enumerate() {
            let j = (0..k).min_by(|&p, &q| d2(row(i), &c[p]).total_cmp(&d2(row(i), &c[q]))).unwrap();
            if *a != j {
                *a = j;
                changed = true;
            }
        }
        let mut sum = vec![vec![0f64; dim]; k];
        let mut count = vec![0usize; k];
        for (i, &a) in assign.iter().enumerate() {
            count[a] += 1;
            for (s, v) in sum[a].iter_mut().zip(row(i)) {
                *s += *v as f64;
            }
        }
        for j in 0..k {
            if count[j] == 0 {
                // An empty cluster takes the point farthest from its centroid.
                let far = (0..n).max_by(|&p, &q| d2(row(p), &c[assign[p]]).total_cmp(&d2(row(q), &c[assign[q]]))).unwrap();
                c[j] = row(far).to_vec();
                assign[far] = j;
                changed = true;
            } else {
                c[j] = sum[j].iter().map(|s| (s / count[j] as f64) as f32).collect();
            }
        }
        if !changed {
            break;
        }
    }
    // Scale each centroid to its members' mean norm.
    let norm = |v: &[f32]| v.iter().map(|a| (*a as f64).powi(2)).sum::<f64>().sqrt();
    for (j, cj) in c.iter_mut().enumerate() {
        let members: Vec<f64> = (0..n).filter(|&i| assign[i] == j).map(|i| norm(row(i))).collect();
        let (target, own) = (members.iter().sum::<f64>() / members.len().max(1) as f64, norm(cj));
        if own > 0.0 && target > 0.0 {
            let s = (target / own) as f32;
            cj.iter_mut().for_each(|v| *v *= s);
        }
    }
    (c.concat(), assign)
}

/// The centroids of [`kmeans`].
pub fn centroids(x: &[f32], dim: usize, k: usize, seed: u64, tag: u64) -> Vec<f32> {
    kmeans(x, dim, k, seed, tag).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_separated_clusters_on_the_sphere() {
        // Two tight groups of unit vectors around e0 and e1.
        let mut x = Vec::new();
        for i in 0..20 {
            let e = (i % 5) as f32 * 0.01;
            if i % 2 == 0 {
                x.extend([1.0 - e, e, 0.0]);
            } else {
                x.extend([e, 1.0 - e, 0.0]);
            }
        }
        let c = centroids(&x, 3, 2, 1, 0);
        let mut firsts: Vec<bool> = c.chunks(3).map(|v| v[0] > v[1]).collect();
        firsts.sort();
        assert_eq!(firsts, [false, true], "{c:?}");
        for v in c.chunks(3) {
            let n: f32 = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            assert!((n - 0.99).abs() < 0.02, "centroid norm {n}");
        }
        assert_eq!(c, centroids(&x, 3, 2, 1, 0), "deterministic");
        // One cluster: the mean direction.
        let m = centroids(&x, 3, 1, 1, 0);
        assert!((m[0] - m[1]).abs() < 1e-5);
        // Fewer rows than clusters: the rows, cycled.
        assert_eq!(centroids(&x[..6], 3, 3, 1, 0), [&x[..6], &x[..3]].concat());
    }
}
