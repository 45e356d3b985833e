//! Seeded randomness for training and sampling, independent of torch's global generator.
//!
//! Every random draw (weight init, batch order, dropout masks, diffusion timesteps and noise,
//! sampling noise) comes from a ChaCha8 stream keyed by `(seed, purpose, index)`. The state at
//! any step is therefore a pure function of the seed and the step number: a resumed run makes
//! exactly the draws an uninterrupted one would, results do not depend on which device runs
//! the maths, and tests running in parallel threads cannot disturb each other.
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// SplitMix64 finaliser: a well-mixed 64-bit hash step.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seed derived from `seed`, a purpose tag and an index (step, epoch, chunk...).
pub fn derive(seed: u64, tag: &str, index: u64) -> u64 {
    let mut h = mix(seed);
    for b in tag.bytes() {
        h = mix(h ^ b as u64);
    }
    mix(h ^ mix(index))
}

/// The ChaCha8 stream for `(seed, tag, index)`.
pub fn stream(seed: u64, tag: &str, index: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(derive(seed, tag, index))
}

/// `n` standard normal draws (Box–Muller).
pub fn normals(rng: &mut impl RngCore, n: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        // u1 in (0, 1] so ln(u1) is finite.
        let u1 = 1.0 - rng.gen::<f64>();
        let u2 = rng.gen::<f64>();
        let r = (-2.0 * u1.ln()).sqrt();
        let a = std::f64::consts::TAU * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

/// `n` uniform draws from `[lo, hi)`.
pub fn uniforms(rng: &mut impl RngCore, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| lo + (hi - lo) * rng.gen::<f32>()).collect()
}

/// A random permutation of `0..n`.
pub fn permutation(rng: &mut impl RngCore, n: usize) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut v: Vec<usize> = (0..n).collect();
    v.shuffle(rng);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_keyed_and_normals_look_normal() {
        assert_eq!(derive(1, "a", 2), derive(1, "a", 2));
        assert_ne!(derive(1, "a", 2), derive(1, "a", 3));
        assert_ne!(derive(1, "a", 2), derive(1, "b", 2));
        let v = normals(&mut stream(0, "n", 0), 20001);
        assert_eq!(v.len(), 20001);
        let m = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - m).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(m.abs() < 0.03 && (var - 1.0).abs() < 0.05, "{m} {var}");
        let mut p = permutation(&mut stream(0, "p", 0), 10);
        p.sort();
        assert_eq!(p, (0..10).collect::<Vec<_>>());
    }
}
