//! The WGSL kernels, run natively through wgpu (Vulkan; lavapipe on a machine without a GPU,
//! installed by scripts/setup.sh), against the core's CPU reference forward pass. The same
//! checks run in Chromium on WebGPU in `browser.rs`.
#![cfg(not(target_arch = "wasm32"))]
use ndarray::Array2;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use scdd_core::graph::{DenoiserSpec, Stack};
use scdd_core::reference::CpuModel;
use scdd_core::tensor::Tensor;
use scdd_wasm::gpu::{Gpu, GpuModel};

mod shared;
use shared::bundle;

fn gpu() -> Gpu {
    pollster::block_on(Gpu::new()).unwrap_or_else(|e| panic!("{e}: install a Vulkan driver (scripts/setup.sh installs mesa-vulkan-drivers, i.e. lavapipe)"))
}

#[test]
fn decoding_on_the_gpu_matches_the_cpu_reference() {
    let b = bundle(301);
    let cpu = CpuModel::from_bundle(&b).unwrap();
    for direct in [false, true] {
    let model = GpuModel::new(gpu().with_direct_products(direct), &b).unwrap();
    eprintln!("adapter: {}, direct products: {direct}", model.adapter());
    let n = 37;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let z: Vec<f32> = (0..n * 20).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let classes: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    for t in [1, 250, 1000] {
        let za = Array2::from_shape_vec((n, 20), z.clone()).unwrap();
        let want = cpu.generate(&za, t, &classes).unwrap();
        let got = pollster::block_on(model.generate(&z, n, t, &classes)).unwrap();
        let worst = want.iter().zip(got.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let top = want.iter().cloned().fold(0f32, f32::max);
        eprintln!("t = {t}: largest difference {worst:.2e} (values up to {top:.2})");
        assert!(worst <= 1e-4, "t = {t}: largest difference {worst} (values up to {top})");
        // Also before the projection: the network alone.
        let net = pollster::block_on(model.network(&z, n, t, &classes)).unwrap();
        let want_net = cpu.decode(cpu.denoise(&za, &vec![t; n], &classes).unwrap());
        let worst = want_net.iter().zip(&net).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-4, "t = {t}: network output differs by {worst}");
    }
    }
}

#[test]
fn bad_input_is_refused_before_any_work() {
    let b = bundle(50);
    let model = GpuModel::new(gpu(), &b).unwrap();
    let e = pollster::block_on(model.generate(&[0.0; 20], 1, 1, &[3])).unwrap_err();
    assert!(e.contains("class id 3"), "{e}");
    let e = pollster::block_on(model.generate(&[0.0; 19], 1, 1, &[0])).unwrap_err();
    assert!(e.contains("width 20"), "{e}");
}

#[test]
fn decoding_at_the_reference_sizes_matches_the_cpu_reference() {
    // The reference denoiser (hidden 512, 512, 256, 128; embedding 512) and a SCimilarity-style
    // decoder 128 → 1024 → 1024 → 2000 genes: long dot products, where summation order shows.
    let latent = 128;
    let mut b = bundle(10);
    b.spec.latent_dim = latent;
    b.spec.n_genes = 2000;
    b.spec.decoder = Stack::mlp("decoder", latent, &[1024, 1024], 2000, 0.0, 0.0, vec![]);
    b.spec.denoiser = Some(DenoiserSpec::reference(latent, 3));
    b.genes = (0..2000).map(|g| format!("g{g}")).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    b.tensors.clear();
    for p in b.spec.param_specs() {
        let n: usize = p.shape.iter().product();
        let fan_in = if p.shape.len() == 2 { p.shape[1] as f32 } else { 1.0 };
        let values: Vec<f32> = (0..n)
            .map(|_| {
                let u: f32 = rng.gen_range(-1.0..1.0);
                if p.name.ends_with("running_var") { 0.5 + u.abs() } else if p.shape.len() == 2 { u * (3.0 / fan_in).sqrt() } else { 0.1 * u + if p.name.ends_with("weight") { 1.0 } else { 0.0 } }
            })
            .collect();
        b.tensors.insert(p.name.clone(), Tensor::from_f32(p.shape.clone(), &values).unwrap());
    }
    let cpu = CpuModel::from_bundle(&b).unwrap();
    let model = GpuModel::new(gpu().with_direct_products(false), &b).unwrap();
    let n = 50;
    let z: Vec<f32> = (0..n * latent).map(|_| rng.gen_range(-2.0..2.0)).collect();
    let classes: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
    let za = Array2::from_shape_vec((n, latent), z.clone()).unwrap();
    let want = cpu.generate(&za, 500, &classes).unwrap();
    let got = pollster::block_on(model.generate(&z, n, 500, &classes)).unwrap();
    let worst = want.iter().zip(got.iter()).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    let top = want.iter().cloned().fold(0f32, f32::max);
    eprintln!("reference sizes: largest difference {worst:.2e} (values up to {top:.2})");
    assert!(worst <= 1e-4, "largest difference {worst} (values up to {top})");
}

#[test]
fn tiled_and_direct_products_train_the_same_classifiers() {
    use scdd_wasm::train::{GpuClassifier, TrainSettings};
    // Three classes marked by a few genes each; widths that do not fill the 16 × 16 tiles.
    // 37 genes: the scalar direct products; 40: the four-column ones.
    for d in [37, 40] {
        let (n, k) = (70, 3);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let labels: Vec<u32> = (0..n as u32).map(|i| i % 3).collect();
        let x: Vec<f32> = (0..n * d).map(|i| (if (i % d) % 3 == labels[i / d] as usize && i % d < 9 { 1.5 } else { 0.0 }) + rng.gen_range(0.0f32..1.0)).collect();
        let mut outputs = Vec::new();
        for direct in [false, true] {
            let g = gpu().with_direct_products(direct);
            for settings in [TrainSettings { steps: 60, ..TrainSettings::logistic(n) }, TrainSettings { hidden: 20, steps: 60, lr: 0.01, ..TrainSettings::mlp(3) }] {
                let m = pollster::block_on(GpuClassifier::fit(&g, &x, (n, d), &labels, k, &settings)).unwrap();
                let pred = pollster::block_on(m.predict(&g, &x, n)).unwrap();
                let acc = pred.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / n as f64;
                assert!(acc > 0.9, "direct {direct}, hidden {}: training accuracy {acc}", settings.hidden);
                outputs.push(pred);
            }
        }
        assert_eq!(outputs[0], outputs[2], "{d} genes: logistic regression: tiled and direct products disagree");
        assert_eq!(outputs[1], outputs[3], "{d} genes: perceptron: tiled and direct products disagree");
    }
}
