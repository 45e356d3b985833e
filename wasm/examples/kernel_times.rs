//! Times the training kernels on the native adapter: cargo run --release -p scdd-wasm --example kernel_times
use scdd_wasm::gpu::Gpu;
use scdd_wasm::train::{GpuClassifier, TrainSettings};

fn main() {
    let gpu = pollster::block_on(Gpu::new()).unwrap();
    eprintln!("{}", gpu.adapter);
    let (n, d, k) = (1293, 300, 8);
    let x: Vec<f32> = (0..n * d).map(|i| ((i * 7919) % 1000) as f32 / 300.0).collect();
    let y: Vec<u32> = (0..n as u32).map(|i| i % k as u32).collect();
    for steps in [1, 11, 51] {
        let t = std::time::Instant::now();
        let m = pollster::block_on(GpuClassifier::fit(&gpu, &x, (n, d), &y, k, &TrainSettings { steps, ..TrainSettings::logistic(n) })).unwrap();
        let _ = m;
        eprintln!("logistic, {steps} steps: {:.3} s", t.elapsed().as_secs_f64());
    }
}
