//! The JavaScript API (wasm-bindgen), for the page's Web Worker:
//!
//! ```js
//! const dec = await Decoder.open(bundleBytes);      // validates; WebGPU, else the CPU reference
//! dec.backend;                                       // "WebGPU: <adapter>" or "CPU reference (…)"
//! const cells = await dec.decode(codeBytes);         // Decoded: cells (Float32Array), labels, …
//! const test = dec.testSetCsr("test.h5ad", n, g, indptr, indices, data, genes, labels, inSpace);
//! JSON.parse(test.report);                           // values found, shared genes, cells kept
//! JSON.parse(await dec.evaluate(cells, test, "logistic", 0, "auto", (f) => …));  // accuracy, macro-F1, confusion
//! JSON.parse(dec.explore(cells, test));              // PCA scatter, top genes per class
//! ```
//!
//! Errors are `Error`s whose message names the file and the problem, as the native reader's.
use crate::gpu::{Gpu, GpuModel};
use crate::session::{self, EvaluatorKind, TestCells, TrainOn};
use ndarray::Array2;
use scdd_core::bundle::GeneratorBundle;
use scdd_core::codes::LatentCodes;
use scdd_core::matrix::CsrMatrix;
use scdd_core::reference::CpuModel;
use std::rc::Rc;
use wasm_bindgen::prelude::*;

/// The fewest codes decoded between two progress reports.
const PROGRESS_PART: usize = 256;

#[derive(Clone, Copy)]
enum Where {
    Auto,
    Cpu,
    WebGpu,
}

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
    cells: Rc<Vec<f32>>,
    labels: Rc<Vec<u32>>,
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

/// A recipient's test cells, prepared for the model (see [`TestCells`]).
#[wasm_bindgen]
pub struct TestSet {
    inner: Rc<TestCells>,
}

#[wasm_bindgen]
impl TestSet {
    /// What preparing the file found (JSON: values, shared genes, cells kept and dropped).
    #[wasm_bindgen(getter)]
    pub fn report(&self) -> String {
        serde_json::to_string(&self.inner.report).expect("a plain struct serialises")
    }
    #[wasm_bindgen(getter)]
    pub fn n_cells(&self) -> usize {
        self.inner.n_cells()
    }
}

fn offsets(v: &[f64], field: &str) -> Result<Vec<u64>, JsError> {
    v.iter()
        .map(|&o| if o >= 0.0 && o.fract() == 0.0 && o < 9.0e15 { Ok(o as u64) } else { Err(JsError::new(&format!("{field}: offset {o} is not a count"))) })
        .collect()
}

/// Labels from JS: an empty string is a missing label.
fn labels_of(labels: Vec<String>) -> Vec<Option<String>> {
    labels.into_iter().map(|l| if l.is_empty() { None } else { Some(l) }).collect()
}

#[wasm_bindgen]
impl Decoder {
    /// Reads and validates a generator bundle (`.scddg` bytes) and opens WebGPU for it. Without
    /// WebGPU, or when its adapter is a software emulation on the CPU (SwiftShader: decoding
    /// measured 40× slower there than the CPU reference in wasm), decoding runs on the core's
    /// CPU reference and `backend` says why.
    pub async fn open(bundle_bytes: Vec<u8>) -> Result<Decoder, JsError> {
        Self::open_on(bundle_bytes, Where::Auto).await
    }

    /// As [`Decoder::open`], on the CPU reference even where WebGPU is available (the page's
    /// `?backend=cpu`).
    #[wasm_bindgen(js_name = openCpu)]
    pub async fn open_cpu(bundle_bytes: Vec<u8>) -> Result<Decoder, JsError> {
        Self::open_on(bundle_bytes, Where::Cpu).await
    }

    /// As [`Decoder::open`], on WebGPU whatever its adapter (the page's `?backend=webgpu`;
    /// tests and benchmarks of the kernels); the CPU reference only without WebGPU.
    #[wasm_bindgen(js_name = openWebGpu)]
    pub async fn open_webgpu(bundle_bytes: Vec<u8>) -> Result<Decoder, JsError> {
        Self::open_on(bundle_bytes, Where::WebGpu).await
    }

    async fn open_on(bundle_bytes: Vec<u8>, place: Where) -> Result<Decoder, JsError> {
        let bundle = GeneratorBundle::from_bytes(&bundle_bytes).map_err(|e| err("generator bundle", e))?;
        bundle.validate().map_err(|e| err("generator bundle", e))?;
        if bundle.spec.denoiser.is_none() {
            return Err(err("generator bundle", "has no denoiser (a foundation-only bundle): it cannot decode latent codes"));
        }
        let gpu = match place {
            Where::Cpu => Err("asked for the CPU".to_string()),
            Where::WebGpu => Gpu::new().await,
            Where::Auto => match Gpu::new().await {
                Ok(g) if g.cpu_adapter => Err(format!("the WebGPU adapter, {}, emulates a GPU on the CPU, which is slower than this", g.adapter)),
                other => other,
            },
        };
        let (backend, description) = match gpu {
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

    /// The `uns/scdd_space` value of files already in the model's space.
    #[wasm_bindgen(getter)]
    pub fn space_tag(&self) -> String {
        self.inner.bundle.spec.space.tag()
    }

    /// The generator's content id (the code files name it).
    #[wasm_bindgen(getter)]
    pub fn generator_id(&self) -> String {
        self.inner.bundle.generator_id()
    }

    #[wasm_bindgen(getter)]
    pub fn label_column(&self) -> String {
        self.inner.bundle.label_column.clone()
    }

    /// Decodes a latent-code file (`.scdd` bytes) into cells; resolves to a [`Decoded`].
    /// `on_progress(done, total)`, when given, is called after each part of the codes (about a
    /// twentieth, at least 256 codes) is decoded.
    pub fn decode(&self, code_bytes: Vec<u8>, on_progress: Option<js_sys::Function>) -> js_sys::Promise {
        let inner = self.inner.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            let codes = LatentCodes::from_bytes(&code_bytes).map_err(|e| err("latent codes", e))?;
            codes.validate().map_err(|e| err("latent codes", e))?;
            codes.compatibility(&inner.bundle).map_err(|e| err("latent codes", e))?;
            let (n, latent) = (codes.n_codes(), codes.latent_dim());
            let z = codes.codes.to_f32().map_err(|e| err("latent codes", e))?;
            let mut genes = inner.bundle.genes.len();
            let mut cells: Vec<f32> = Vec::with_capacity(n * genes);
            let part = n.div_ceil(20).max(PROGRESS_PART);
            for start in (0..n).step_by(part) {
                let rows = part.min(n - start);
                let (zp, cp) = (&z[start * latent..(start + rows) * latent], &codes.labels[start..start + rows]);
                let x = match &inner.backend {
                    Backend::Gpu(m) => m.generate(zp, rows, codes.timestep, cp).await.map_err(|e| err("decoding", e))?,
                    Backend::Cpu(m) => {
                        let zp = Array2::from_shape_vec((rows, latent), zp.to_vec()).map_err(|e| err("latent codes", e))?;
                        m.generate(&zp, codes.timestep, cp).map_err(|e| err("decoding", e))?
                    }
                };
                genes = x.ncols();
                cells.extend(x.into_raw_vec_and_offset().0);
                if let Some(f) = &on_progress {
                    f.call2(&JsValue::NULL, &JsValue::from((start + rows) as f64), &JsValue::from(n as f64))?;
                }
            }
            Ok(JsValue::from(Decoded { cells: Rc::new(cells), labels: Rc::new(codes.labels.clone()), n_cells: n, n_genes: genes }))
        })
    }

    fn test_set(&self, file: &str, x: Result<CsrMatrix, scdd_core::CoreError>, genes: Vec<String>, labels: Vec<String>, in_space: bool) -> Result<TestSet, JsError> {
        let x = x.map_err(|e| JsError::new(&e.to_string()))?;
        let cells = TestCells::prepare(file, x, genes, &labels_of(labels), in_space, &self.inner.bundle).map_err(|e| JsError::new(&e))?;
        Ok(TestSet { inner: Rc::new(cells) })
    }

    /// Test cells from an `.h5ad`'s CSR matrix (`indptr` as numbers), gene names, a label per
    /// cell ("" when missing) and whether the file marks its values as already in a model's
    /// space (`uns/scdd_space`). Normalised and aligned to the model's genes as the native
    /// reader does; too few shared genes, or no cell of the model's classes, is an error.
    #[allow(clippy::too_many_arguments)]
    #[wasm_bindgen(js_name = testSetCsr)]
    pub fn test_set_csr(&self, file: &str, n_rows: usize, n_cols: usize, indptr: Vec<f64>, indices: Vec<u32>, data: Vec<f32>, genes: Vec<String>, labels: Vec<String>, in_space: bool) -> Result<TestSet, JsError> {
        let x = CsrMatrix::new(n_rows, n_cols, offsets(&indptr, &format!("{file}:X/indptr"))?, indices, data, &format!("{file}:X"));
        self.test_set(file, x, genes, labels, in_space)
    }

    /// As [`Decoder::test_set_csr`] for a CSC matrix (`indptr` over the genes).
    #[allow(clippy::too_many_arguments)]
    #[wasm_bindgen(js_name = testSetCsc)]
    pub fn test_set_csc(&self, file: &str, n_rows: usize, n_cols: usize, indptr: Vec<f64>, indices: Vec<u32>, data: Vec<f32>, genes: Vec<String>, labels: Vec<String>, in_space: bool) -> Result<TestSet, JsError> {
        let x = CsrMatrix::from_csc(n_rows, n_cols, &offsets(&indptr, &format!("{file}:X/indptr"))?, &indices, &data, &format!("{file}:X"));
        self.test_set(file, x, genes, labels, in_space)
    }

    /// As [`Decoder::test_set_csr`] for a dense row-major matrix.
    #[allow(clippy::too_many_arguments)]
    #[wasm_bindgen(js_name = testSetDense)]
    pub fn test_set_dense(&self, file: &str, n_rows: usize, n_cols: usize, data: Vec<f32>, genes: Vec<String>, labels: Vec<String>, in_space: bool) -> Result<TestSet, JsError> {
        let x = CsrMatrix::from_dense(n_rows, n_cols, &data, &format!("{file}:X"));
        self.test_set(file, x, genes, labels, in_space)
    }

    /// Trains `evaluator` ("logistic": CellTypist-style; "mlp") on the decoded cells and scores
    /// it on `test`. `train_on`: "webgpu" (WGSL), "cpu" (the core's solvers) or "auto" (WGSL on a
    /// GPU, the CPU when the WebGPU adapter is itself a CPU). Resolves to JSON: accuracy,
    /// macro_f1, per-class recall, confusion, backend. `on_progress(fraction)`, when given, hears
    /// how much of the training is done.
    pub fn evaluate(&self, decoded: &Decoded, test: &TestSet, evaluator: &str, seed: u32, train_on: &str, on_progress: Option<js_sys::Function>) -> js_sys::Promise {
        let (inner, cells, labels, test) = (self.inner.clone(), decoded.cells.clone(), decoded.labels.clone(), test.inner.clone());
        let kind = EvaluatorKind::parse(evaluator);
        let train_on = TrainOn::parse(train_on);
        wasm_bindgen_futures::future_to_promise(async move {
            let kind = kind.map_err(|e| err("evaluator", e))?;
            let gpu = match &inner.backend {
                Backend::Gpu(m) => Some(m.gpu()),
                Backend::Cpu(_) => None,
            };
            let gpu = train_on.and_then(|t| t.pick(gpu)).map_err(|e| err("evaluator", e))?;
            let mut progress = |f: f64| {
                if let Some(cb) = &on_progress {
                    // A listener that throws does not stop the training.
                    let _ = cb.call1(&JsValue::NULL, &JsValue::from(f));
                }
            };
            let e = session::evaluate(gpu, &cells, &labels, &inner.bundle.classes, &test, kind, seed as u64, &mut progress).await.map_err(|e| err("evaluation", e))?;
            Ok(JsValue::from(serde_json::to_string(&e).map_err(|e| err("evaluation", e))?))
        })
    }

    /// The decoded cells in the plane of their first two principal components, and the top
    /// `n_top` genes of each class (JSON).
    pub fn explore(&self, decoded: &Decoded, n_top: usize) -> Result<String, JsError> {
        self.exploration(decoded, None, n_top)
    }

    /// As [`Decoder::explore`], the components fit on the test cells, which are drawn too.
    #[wasm_bindgen(js_name = exploreWithTest)]
    pub fn explore_with_test(&self, decoded: &Decoded, test: &TestSet, n_top: usize) -> Result<String, JsError> {
        self.exploration(decoded, Some(&test.inner), n_top)
    }

    fn exploration(&self, decoded: &Decoded, test: Option<&TestCells>, n_top: usize) -> Result<String, JsError> {
        let e = session::explore(&decoded.cells, &decoded.labels, &self.inner.bundle, test, n_top).map_err(|e| err("exploration", e))?;
        serde_json::to_string(&e).map_err(|e| err("exploration", e))
    }
}
