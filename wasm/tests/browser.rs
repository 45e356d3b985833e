//! The kernels in a real browser: wasm-bindgen-test in headless Chromium (WebGPU; SwiftShader on
//! a machine without a GPU), against the core's CPU reference compiled to the same wasm.
//! Run by `scripts/wasm-test.sh` (part of the test command).
#![cfg(target_arch = "wasm32")]
use ndarray::Array2;
use scdd_core::evaluate::{Evaluator, LogRegParams, LogisticRegression, TrainingSet};
use scdd_core::reference::CpuModel;
use scdd_wasm::gpu::{Gpu, GpuModel};
use scdd_wasm::train::{GpuClassifier, Scaler, TrainSettings};
use wasm_bindgen_test::*;

mod shared;

wasm_bindgen_test_configure!(run_in_browser);

async fn gpu() -> Gpu {
    Gpu::new().await.unwrap_or_else(|e| panic!("no WebGPU in this browser: {e} (Chromium needs --enable-unsafe-webgpu, see wasm/webdriver.json)"))
}

#[wasm_bindgen_test]
async fn decoding_on_webgpu_matches_the_cpu_reference() {
    let b = shared::bundle(301);
    let cpu = CpuModel::from_bundle(&b).unwrap();
    let model = GpuModel::new(gpu().await, &b).unwrap();
    let n = 37;
    let (z, classes) = shared::codes(n, b.spec.latent_dim, 3);
    for t in [1, 250, 999] {
        let got = model.generate(&z, n, t, &classes).await.unwrap();
        let want = cpu.generate(&Array2::from_shape_vec((n, b.spec.latent_dim), z.clone()).unwrap(), t, &classes).unwrap();
        let worst = got.iter().zip(want.iter()).fold(0f32, |m, (a, b)| m.max((a - b).abs()));
        assert!(worst <= 1e-4, "t = {t}: {worst} on {}", model.adapter());
    }
    // Bad input is refused before any work.
    assert!(model.generate(&z[..5], 1, 1, &[0]).await.unwrap_err().contains("values"));
    assert!(model.generate(&z[..b.spec.latent_dim], 1, 1, &[3]).await.unwrap_err().contains("class id 3"));
}

#[wasm_bindgen_test]
async fn the_wgsl_logistic_regression_agrees_with_the_reference_solver() {
    let g = gpu().await;
    let (n, d, k) = (60, 12, 3);
    let (x, labels) = shared::blobs(n, d, 5);
    let m = GpuClassifier::fit(&g, &x, (n, d), &labels, k, &TrainSettings::logistic(n)).await.unwrap();
    let (xt, yt) = shared::blobs(90, d, 6);
    let pred = m.predict(&g, &xt, 90).await.unwrap();
    let scaler = Scaler::fit(&x, n, d);
    let z = Array2::from_shape_vec((n, d), scaler.apply(&x)).unwrap();
    let zt = Array2::from_shape_vec((90, d), scaler.apply(&xt)).unwrap();
    let mut reference = LogisticRegression::new(LogRegParams::default());
    reference.fit(&TrainingSet { x: z.view(), labels: &labels, n_classes: k, genes: &[] }, 0).unwrap();
    let want = reference.predict(zt.view()).unwrap();
    let same = pred.iter().zip(&want).filter(|(a, b)| a == b).count();
    let right = pred.iter().zip(&yt).filter(|(a, b)| a == b).count();
    assert!(same >= 88, "{same} of 90 calls agree with the reference");
    assert!(right >= 80, "{right} of 90 right");
}
