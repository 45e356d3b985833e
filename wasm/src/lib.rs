//! scdd-wasm: the browser build (decode latent codes on WebGPU, train evaluators in WGSL). The
//! kernels (`src/kernels/*.wgsl`) run through wgpu, so the same code runs natively (Vulkan;
//! lavapipe on a machine without a GPU), which is how the tests check them against the core's
//! CPU reference.
pub mod gpu;
pub mod session;
pub mod train;
#[cfg(target_arch = "wasm32")]
pub mod web;

/// Reads a latent-code file and returns the number of codes, or 0 when the bytes are not one.
pub fn count_codes(bytes: &[u8]) -> usize {
    scdd_core::codes::LatentCodes::from_bytes(bytes).map(|c| c.n_codes()).unwrap_or(0)
}
