//! The JavaScript API (wasm-bindgen), for the page's Web Worker:
//!
//! ```js
//! const dec = await Decoder.open(bundleBytes);      // validates; WebGPU, else the CPU reference
//! dec.backend;                                       // "WebGPU: <adapter>" or "CPU reference (…)"
//! const cells = await dec.decode(codeBytes);         // Decoded: cells (Float32Array), labels, …
//! ```
//!
//! Errors are `Error`s whose message names the file and the problem, as the native reader's.
use crate::gpu::{Gpu, GpuModel};
use ndarray::Array2;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::codes::LatentCodes;
use scdd_core::reference::CpuModel;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

enum Backend {
    Gpu(GpuModel),
    Cpu(CpuModel),
}

struct Inner {
    bundle: GeneratorBundle,
    backend: Backend,
    description: String,
}

/// A generator bundle opened for decoding.
#[wasm_bindgen]
pub struct Decoder {
    inner: Rc<Inner>,
}

/// Decoded cells: `n_cells × n_genes` values (log-normalised, row-major), a class id per cell.
#[wasm_bindgen]
pub struct Decoded {
    cells: Vec<f32>,
    labels: Vec<u32>,
    n_cells: usize,
    n_genes: usize,
}

#[wasm_bindgen]
impl Decoded {
    /// Copied straight into a new JS array (no second copy on the Rust side).
    #[wasm_bindgen(getter)]
    pub fn cells(&self) -> js_sys::Float32Array {
        js_sys::Float32Array::from(&self.cells[..])
    }
    #[wasm_bindgen(getter)]
    pub fn labels(&self) -> js_sys::Uint32Array {
        js_sys::Uint32Array::from(&self.labels[..])
    }
    #[wasm_bindgen(getter)]
    pub fn n_cells(&self) -> usize {
        self.n_cells
    }
    #[wasm_bindgen(getter)]
    pub fn n_genes(&self) -> usize {
        self.n_genes
    }
}

fn err(file: &str, e: impl std::fmt::Display) -> JsError {
    JsError::new(&format!("{file}: {e}"))
}

#[wasm_bindgen]
impl Decoder {
    /// Reads and validates a generator bundle (`.scddg` bytes) and opens WebGPU for it; without
    /// WebGPU, decoding runs on the core's CPU reference and `backend` says why.
    pub async fn open(bundle_bytes: Vec<u8>) -> Result<Decoder, JsError> {
        let bundle = GeneratorBundle::from_bytes(&bundle_bytes).map_err(|e| err("generator bundle", e))?;
        bundle.validate().map_err(|e| err("generator bundle", e))?;
        if bundle.spec.denoiser.is_none() {
            return Err(err("generator bundle", "has no denoiser (a foundation-only bundle): it cannot decode latent codes"));
        }
        let (backend, description) = match Gpu::new().await {
            Ok(gpu) => {
                let name = gpu.adapter.clone();
                let model = GpuModel::new(gpu, &bundle).map_err(|e| err("generator bundle", e))?;
                (Backend::Gpu(model), format!("WebGPU: {name}"))
            }
            Err(why) => {
                let model = CpuModel::from_bundle(&bundle).map_err(|e| err("generator bundle", e))?;
                (Backend::Cpu(model), format!("CPU reference ({why})"))
            }
        };
        Ok(Decoder { inner: Rc::new(Inner { bundle, backend, description }) })
    }

    /// Where decoding runs.
    #[wasm_bindgen(getter)]
    pub fn backend(&self) -> String {
        self.inner.description.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn genes(&self) -> Vec<String> {
        self.inner.bundle.genes.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn classes(&self) -> Vec<String> {
        self.inner.bundle.classes.clone()
    }

    #[wasm_bindgen(getter)]
    pub fn label_column(&self) -> String {
        self.inner.bundle.label_column.clone()
    }

    /// Decodes a latent-code file (`.scdd` bytes) into cells; resolves to a [`Decoded`].
    pub fn decode(&self, code_bytes: Vec<u8>) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let codes = LatentCodes::from_bytes(&code_bytes).map_err(|e| err("latent codes", e))?;
            codes.validate().map_err(|e| err("latent codes", e))?;
            codes.compatibility(&inner.bundle).map_err(|e| err("latent codes", e))?;
            let n = codes.n_codes();
            let z = codes.codes.to_f32().map_err(|e| err("latent codes", e))?;
            let cells = match &inner.backend {
                Backend::Gpu(m) => m.generate(&z, n, codes.timestep, &codes.labels).await.map_err(|e| err("decoding", e))?,
                Backend::Cpu(m) => {
                    let z = Array2::from_shape_vec((n, codes.latent_dim()), z).map_err(|e| err("latent codes", e))?;
                    m.generate(&z, codes.timestep, &codes.labels).map_err(|e| err("decoding", e))?
                }
            };
            let n_genes = cells.ncols();
            Ok(JsValue::from(Decoded { cells: cells.into_raw_vec_and_offset().0, labels: codes.labels.clone(), n_cells: n, n_genes }))
        })
    }
}
