//! What the native (`kernels.rs`) and the in-browser (`browser.rs`) kernel tests share.
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::graph::{Activation, DenoiserSpec, ExpressionSpace, GraphSpec, Layer, NoiseSchedule, Stack};
use scdd_core::tensor::Tensor;
use std::collections::BTreeMap;

/// A generator whose decoder uses every layer kind the graph spec has, with random weights of
/// the scale training gives (fan-in scaled), and odd widths that do not fill the 16 × 16 tiles.
pub fn bundle(n_genes: usize) -> GeneratorBundle {
    let latent = 20;
    let decoder = Stack {
        prefix: "decoder".into(),
        layers: vec![
            Layer::Dropout { p: 0.1 },
            Layer::Linear { in_dim: latent, out_dim: 67, bias: true },
            Layer::BatchNorm1d { dim: 67, eps: 1e-5 },
            Layer::PRelu { num_parameters: 1 },
            Layer::Linear { in_dim: 67, out_dim: 45, bias: false },
            Layer::LayerNorm { dim: 45, eps: 1e-5 },
            Layer::PRelu { num_parameters: 45 },
            Layer::Act(Activation::Tanh),
            Layer::Linear { in_dim: 45, out_dim: 33, bias: true },
            Layer::Act(Activation::Silu),
            Layer::Act(Activation::Sigmoid),
            Layer::L2Normalize { eps: 1e-8 },
            Layer::Linear { in_dim: 33, out_dim: 50, bias: true },
            Layer::Act(Activation::Relu),
            Layer::Act(Activation::Identity),
            Layer::Linear { in_dim: 50, out_dim: n_genes, bias: true },
            Layer::Act(Activation::Softplus),
            Layer::Floor { below: 0.3 },
        ],
    };
    let spec = GraphSpec {
        n_genes,
        latent_dim: latent,
        space: ExpressionSpace::default(),
        encoder: None,
        decoder,
        denoiser: Some(DenoiserSpec { latent_dim: latent, hidden: vec![40, 24, 17], emb_dim: 32, n_classes: 3, norm_eps: 1e-5 }),
        schedule: NoiseSchedule::default(),
        task_head: None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut tensors = BTreeMap::new();
    for p in spec.param_specs() {
        let n: usize = p.shape.iter().product();
        let fan_in = if p.shape.len() == 2 { p.shape[1] as f32 } else { 1.0 };
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let u: f32 = rng.gen_range(-1.0..1.0);
                if p.name.ends_with("running_var") {
                    0.5 + u.abs()
                } else if p.shape.len() == 2 {
                    u * (3.0 / fan_in).sqrt()
                } else {
                    0.3 * u + if p.name.ends_with("weight") { 1.0 } else { 0.0 }
                }
            })
            .collect();
        tensors.insert(p.name.clone(), Tensor::from_f32(p.shape.clone(), &values).unwrap());
    }
    GeneratorBundle {
        spec,
        genes: (0..n_genes).map(|g| format!("g{g}")).collect(),
        label_column: "cell_type".into(),
        classes: vec!["a".into(), "b".into(), "c".into()],
        tensors,
        metadata: BTreeMap::new(),
    }
}

/// Seeded codes and classes for `bundle`.
#[allow(dead_code)]
pub fn codes(n: usize, latent: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ((0..n * latent).map(|_| rng.gen_range(-1.0f32..1.0)).collect(), (0..n as u32).map(|i| i % 3).collect())
}

/// Three Gaussian blobs in `d` dimensions (`n` points), labels 0..3: a problem any classifier
/// separates.
#[allow(dead_code)]
pub fn blobs(n: usize, d: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let x = labels.iter().flat_map(|&c| (0..d).map(move |j| (c as usize == j % 3) as u8 as f32 * 2.0).collect::<Vec<_>>()).map(|v| v + rng.gen_range(-1.0f32..1.0)).collect();
    (x, labels)
}
