//! scdd-wasm: the browser build (decode latent codes on WebGPU, train evaluators in WGSL).
//! For now it only proves that the core builds and links for wasm32: the browser issue fills
//! in the wasm-bindgen surface.

/// Reads a latent-code file and returns the number of codes, or 0 when the bytes are not one.
pub fn count_codes(bytes: &[u8]) -> usize {
    scdd_core::codes::LatentCodes::from_bytes(bytes).map(|c| c.n_codes()).unwrap_or(0)
}
