//! WGSL compute kernels driven through wgpu: WebGPU in the browser, Vulkan (lavapipe on a
//! machine without a GPU) or GL natively. [`Gpu`] owns the device and the compiled kernels;
//! [`GpuModel`] uploads a generator bundle's tensors once and decodes latent codes with them,
//! instantiating the kernels from the bundle's graph spec (the names and roles in
//! `scdd_core::graph`), so it runs whatever the CPU reference runs.
use scdd_core::bundle::GeneratorBundle;
use scdd_core::graph::{layer_param, Activation, BlockNames, GraphSpec, Layer, LinearNames, Stack};
use std::collections::HashMap;
use wgpu::util::DeviceExt;

/// Rows decoded per batch at most (each batch's activations live on the device together).
const MAX_BATCH_ROWS: usize = 4096;

/// The device, its queue and the compiled kernels.
#[derive(Clone)]
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    /// "name (backend, device type)" of the adapter, for the page and the logs.
    pub adapter: String,
    /// The adapter is a CPU (SwiftShader, lavapipe): compute shaders are emulated.
    pub cpu_adapter: bool,
    max_binding: u64,
    /// Use the kernels without shared memory: on CPU adapters (lavapipe, SwiftShader) workgroup
    /// barriers cost more than they save (measured on lavapipe: a 1293 × 300 · 300 × 8 product
    /// 80 ms tiled, 25 ms direct).
    pub(crate) direct: bool,
    linear: wgpu::ComputePipeline,
    linear_direct: wgpu::ComputePipeline,
    linear_direct4: wgpu::ComputePipeline,
    rows: wgpu::ComputePipeline,
    pub(crate) activate: wgpu::ComputePipeline,
    affine: wgpu::ComputePipeline,
    prelu: wgpu::ComputePipeline,
    add: wgpu::ComputePipeline,
    condition: wgpu::ComputePipeline,
    pub(crate) train: TrainKernels,
}

/// The kernels of `train.wgsl`.
#[derive(Clone)]
pub(crate) struct TrainKernels {
    pub matmul: wgpu::ComputePipeline,
    pub matmul_direct: wgpu::ComputePipeline,
    pub matmul_direct4: wgpu::ComputePipeline,
    pub softmax_residual: wgpu::ComputePipeline,
    pub colsum: wgpu::ComputePipeline,
    pub relu_mask: wgpu::ComputePipeline,
    pub adam: wgpu::ComputePipeline,
    pub tick: wgpu::ComputePipeline,
}

/// Dispatches recorded with their bindings, to run once or many times ([`Gpu::run`]).
#[derive(Default)]
pub(crate) struct Program {
    steps: Vec<Recorded>,
}

struct Recorded {
    pipeline: wgpu::ComputePipeline,
    bind: wgpu::BindGroup,
    groups: (u32, u32),
    /// The `dims` uniform the bind group holds.
    _uniform: wgpu::Buffer,
}

/// A device buffer of f32 values and its length.
pub struct DeviceArray {
    buffer: wgpu::Buffer,
    len: usize,
}

impl DeviceArray {
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The `rows.wgsl` operations.
#[derive(Clone, Copy)]
enum RowOp {
    LayerNorm = 0,
    LayerNormSilu = 1,
    L2Normalize = 2,
}

/// The `activate` kernel's code for [`Layer::Floor`] (its threshold's bits in `pad`).
const FLOOR_CODE: u32 = 6;

fn activation_code(a: Activation) -> u32 {
    match a {
        Activation::Identity => 0,
        Activation::Relu => 1,
        Activation::Silu => 2,
        Activation::Softplus => 3,
        Activation::Tanh => 4,
        Activation::Sigmoid => 5,
    }
}

impl Gpu {
    /// Opens the first adapter wgpu offers (a high-performance one when there is a choice) and
    /// compiles the kernels. Fails with a readable reason when there is none (no WebGPU in this
    /// browser, no Vulkan/GL driver natively).
    pub async fn new() -> Result<Gpu, String> {
        let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
        let adapter = instance
            .request_adapter(&wgpu::RequestAdapterOptions { power_preference: wgpu::PowerPreference::HighPerformance, ..Default::default() })
            .await
            .map_err(|e| format!("no GPU adapter: {e}"))?;
        let info = adapter.get_info();
        let have = adapter.limits();
        // Compute needs storage buffers; ask for the largest bindings the adapter allows so wide
        // layers (genes × hidden weights) fit.
        let limits = wgpu::Limits {
            max_storage_buffer_binding_size: have.max_storage_buffer_binding_size,
            max_buffer_size: have.max_buffer_size,
            ..wgpu::Limits::downlevel_defaults()
        };
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor { label: Some("scdd"), required_limits: limits.clone(), ..Default::default() })
            .await
            .map_err(|e| format!("GPU device refused: {e}"))?;
        let module = |name: &str, src: &str| device.create_shader_module(wgpu::ShaderModuleDescriptor { label: Some(name), source: wgpu::ShaderSource::Wgsl(src.into()) });
        let linear_m = module("linear.wgsl", include_str!("kernels/linear.wgsl"));
        let linear4_m = module("linear4.wgsl", include_str!("kernels/linear4.wgsl"));
        let rows_m = module("rows.wgsl", include_str!("kernels/rows.wgsl"));
        let elem_m = module("elementwise.wgsl", include_str!("kernels/elementwise.wgsl"));
        let train_m = module("train.wgsl", include_str!("kernels/train.wgsl"));
        let train4_m = module("train4.wgsl", include_str!("kernels/train4.wgsl"));
        let pipeline = |m: &wgpu::ShaderModule, entry: &str| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: m,
                entry_point: Some(entry),
                compilation_options: Default::default(),
                cache: None,
            })
        };
        Ok(Gpu {
            adapter: describe_adapter(&info),
            cpu_adapter: info.device_type == wgpu::DeviceType::Cpu,
            max_binding: limits.max_storage_buffer_binding_size.min(limits.max_buffer_size),
            direct: info.device_type == wgpu::DeviceType::Cpu,
            linear: pipeline(&linear_m, "main"),
            linear_direct: pipeline(&linear_m, "direct"),
            linear_direct4: pipeline(&linear4_m, "main"),
            rows: pipeline(&rows_m, "main"),
            activate: pipeline(&elem_m, "activate"),
            affine: pipeline(&elem_m, "affine"),
            prelu: pipeline(&elem_m, "prelu"),
            add: pipeline(&elem_m, "add"),
            condition: pipeline(&elem_m, "condition"),
            train: TrainKernels {
                matmul: pipeline(&train_m, "matmul"),
                matmul_direct: pipeline(&train_m, "matmul_direct"),
                matmul_direct4: pipeline(&train4_m, "main"),
                softmax_residual: pipeline(&train_m, "softmax_residual"),
                colsum: pipeline(&train_m, "colsum"),
                relu_mask: pipeline(&train_m, "relu_mask"),
                adam: pipeline(&train_m, "adam"),
                tick: pipeline(&train_m, "tick"),
            },
            device,
            queue,
        })
    }

    /// Chooses the products without shared memory (`true`) or the tiled ones; the default
    /// follows the adapter (direct on CPU adapters). Both compute the same sums in a different
    /// order.
    pub fn with_direct_products(mut self, direct: bool) -> Gpu {
        self.direct = direct;
        self
    }

    /// The largest buffer a kernel can bind, bytes.
    pub fn max_binding_bytes(&self) -> u64 {
        self.max_binding
    }

    fn check_size(&self, what: &str, len: usize) -> Result<(), String> {
        let bytes = 4 * len as u64;
        if bytes > self.max_binding {
            return Err(format!("{what} needs {bytes} bytes in one GPU buffer; this device binds at most {}", self.max_binding));
        }
        Ok(())
    }

    /// Uploads `data` (a 4-byte placeholder when empty: bindings cannot be empty).
    pub fn upload(&self, what: &str, data: &[f32]) -> Result<DeviceArray, String> {
        self.check_size(what, data.len())?;
        let contents: &[u8] = if data.is_empty() { &[0; 4] } else { bytemuck::cast_slice(data) };
        let buffer = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some(what),
            contents,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
        });
        Ok(DeviceArray { buffer, len: data.len() })
    }

    pub(crate) fn upload_u32(&self, what: &str, data: &[u32]) -> DeviceArray {
        let contents: &[u8] = if data.is_empty() { &[0; 4] } else { bytemuck::cast_slice(data) };
        let buffer = self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor { label: Some(what), contents, usage: wgpu::BufferUsages::STORAGE });
        DeviceArray { buffer, len: data.len() }
    }

    /// An uninitialised (zeroed) array of `len` values.
    pub fn zeros(&self, what: &str, len: usize) -> Result<DeviceArray, String> {
        self.check_size(what, len)?;
        let buffer = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(what),
            size: 4 * len.max(1) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(DeviceArray { buffer, len })
    }

    fn uniform(&self, dims: [u32; 4]) -> wgpu::Buffer {
        self.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("dims"),
            contents: bytemuck::cast_slice(&dims),
            usage: wgpu::BufferUsages::UNIFORM,
        })
    }

    /// Records one dispatch into `p`: binding 0 is the `dims` uniform, then `(binding, array)`
    /// pairs. The uniform and the bind group are made here, once: a program replayed many
    /// times (training steps) costs only the dispatches.
    pub(crate) fn dispatch(&self, p: &mut Program, pipeline: &wgpu::ComputePipeline, dims: [u32; 4], arrays: &[(u32, &DeviceArray)], groups: (u32, u32)) {
        let uniform = self.uniform(dims);
        let mut entries = vec![wgpu::BindGroupEntry { binding: 0, resource: uniform.as_entire_binding() }];
        entries.extend(arrays.iter().map(|(b, a)| wgpu::BindGroupEntry { binding: *b, resource: a.buffer.as_entire_binding() }));
        let bind = self.device.create_bind_group(&wgpu::BindGroupDescriptor { label: None, layout: &pipeline.get_bind_group_layout(0), entries: &entries });
        p.steps.push(Recorded { pipeline: pipeline.clone(), bind, groups, _uniform: uniform });
    }

    /// Runs `p` `times` times over, in one compute pass (dispatches in a pass see each other's
    /// writes, in order), and submits it.
    pub(crate) fn run(&self, p: &Program, times: usize) {
        let mut encoder = self.device.create_command_encoder(&Default::default());
        {
            let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor { label: None, timestamp_writes: None });
            for _ in 0..times {
                for r in &p.steps {
                    pass.set_pipeline(&r.pipeline);
                    pass.set_bind_group(0, &r.bind, &[]);
                    pass.dispatch_workgroups(r.groups.0, r.groups.1, 1);
                }
            }
        }
        self.queue.submit([encoder.finish()]);
    }

    /// A grid of `n` workgroups, two-dimensional past the 65 535 limit of one dimension.
    pub(crate) fn grid(n: usize) -> (u32, u32) {
        let n = n.max(1) as u32;
        let x = n.min(65_535);
        (x, n.div_ceil(x))
    }

    /// `y = x·Wᵀ (+ b) (+ y)` for x rows × inner and W cols × inner.
    pub(crate) fn linear(&self, prog: &mut Program, x: &DeviceArray, (w, b): (&DeviceArray, Option<&DeviceArray>), y: &DeviceArray, (rows, inner, cols): (usize, usize, usize), accumulate: bool) {
        let flags = b.is_some() as u32 | (accumulate as u32) << 1;
        let b = b.unwrap_or(w); // unread when the flag is off
        if self.direct && inner.is_multiple_of(4) {
            self.dispatch(prog, &self.linear_direct4, [rows as u32, inner as u32, cols as u32, flags], &[(1, x), (2, w), (3, b), (4, y)], Self::grid((rows * cols.div_ceil(4)).div_ceil(64)));
            return;
        }
        if self.direct {
            self.dispatch(prog, &self.linear_direct, [rows as u32, inner as u32, cols as u32, flags], &[(1, x), (2, w), (3, b), (4, y)], Self::grid((rows * cols).div_ceil(64)));
            return;
        }
        let groups = (cols.div_ceil(16) as u32, rows.div_ceil(16) as u32);
        self.dispatch(prog, &self.linear, [rows as u32, inner as u32, cols as u32, flags], &[(1, x), (2, w), (3, b), (4, y)], groups);
    }

    fn row_op(&self, prog: &mut Program, x: &DeviceArray, (gamma, beta): (&DeviceArray, &DeviceArray), (rows, dim): (usize, usize), eps: f32, op: RowOp) {
        let dims = [rows as u32, dim as u32, eps.to_bits(), op as u32];
        self.dispatch(prog, &self.rows, dims, &[(1, x), (2, gamma), (3, beta)], Self::grid(rows));
    }

    pub(crate) fn elementwise(&self, prog: &mut Program, pipeline: &wgpu::ComputePipeline, code: u32, arrays: &[(u32, &DeviceArray)], (rows, cols): (usize, usize)) {
        self.dispatch(prog, pipeline, [rows as u32, cols as u32, code, 0], arrays, Self::grid((rows * cols).div_ceil(256)));
    }

    /// Copies a device array back (awaits the GPU).
    pub async fn read(&self, a: &DeviceArray) -> Result<Vec<f32>, String> {
        let size = 4 * a.len.max(1) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&Default::default());
        encoder.copy_buffer_to_buffer(&a.buffer, 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let (tx, rx) = futures_channel::oneshot::channel();
        staging.slice(..).map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        #[cfg(not(target_arch = "wasm32"))]
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| format!("GPU: {e}"))?;
        rx.await.map_err(|_| "GPU: the read-back was dropped".to_string())?.map_err(|e| format!("GPU read-back: {e}"))?;
        let view = staging.slice(..).get_mapped_range().map_err(|e| format!("GPU read-back: {e}"))?;
        let out = bytemuck::cast_slice::<u8, f32>(&view)[..a.len].to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }
}

/// A bundle's decoding path on the device: the tensors of the denoiser and the decoder uploaded
/// once (batch norms folded into a scale and a shift).
pub struct GpuModel {
    gpu: Gpu,
    pub spec: GraphSpec,
    params: HashMap<String, DeviceArray>,
    /// Bound where a kernel declares an input the operation does not read.
    unused: DeviceArray,
}

impl GpuModel {
    /// Uploads what decoding needs; the encoder and task head stay behind.
    pub fn new(gpu: Gpu, bundle: &GeneratorBundle) -> Result<GpuModel, String> {
        let spec = bundle.spec.clone();
        let mut params = HashMap::new();
        let tensor = |name: &str| -> Result<Vec<f32>, String> { bundle.tensor_f32(name).map_err(|e| e.to_string()) };
        if let Some(d) = &spec.denoiser {
            for p in d.param_specs() {
                params.insert(p.name.clone(), gpu.upload(&p.name, &tensor(&p.name)?)?);
            }
        }
        let stack = &spec.decoder;
        for (k, layer) in stack.layers.iter().enumerate() {
            let name = |p: &str| layer_param(&stack.prefix, k, p);
            match *layer {
                Layer::BatchNorm1d { eps, .. } => {
                    // Inference batch norm is x·s + t with s = w/√(v+ε), t = b − m·s.
                    let (w, b, m, v) = (tensor(&name("weight"))?, tensor(&name("bias"))?, tensor(&name("running_mean"))?, tensor(&name("running_var"))?);
                    let s: Vec<f32> = w.iter().zip(&v).map(|(w, v)| w / (v + eps).sqrt()).collect();
                    let t: Vec<f32> = b.iter().zip(&m).zip(&s).map(|((b, m), s)| b - m * s).collect();
                    params.insert(name("scale"), gpu.upload(&name("scale"), &s)?);
                    params.insert(name("shift"), gpu.upload(&name("shift"), &t)?);
                }
                _ => {
                    for (p, _) in layer.params() {
                        params.insert(name(p), gpu.upload(&name(p), &tensor(&name(p))?)?);
                    }
                }
            }
        }
        let unused = gpu.zeros("unused", 1)?;
        Ok(GpuModel { gpu, spec, params, unused })
    }

    pub fn adapter(&self) -> &str {
        &self.gpu.adapter
    }

    /// The device it decodes on (the page trains its evaluators there too).
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }

    fn p(&self, name: &str) -> &DeviceArray {
        &self.params[name]
    }

    fn linear(&self, prog: &mut Program, x: &DeviceArray, l: &LinearNames, rows: usize, y: &DeviceArray, accumulate: bool) {
        self.gpu.linear(prog, x, (self.p(&l.weight), Some(self.p(&l.bias))), y, (rows, l.in_dim, l.out_dim), accumulate);
    }

    /// Runs `stack` on `x` (rows × its input width) in place where it can; returns the output.
    fn run_stack(&self, prog: &mut Program, stack: &Stack, x: DeviceArray, rows: usize) -> Result<DeviceArray, String> {
        let g = &self.gpu;
        let mut x = x;
        let mut width = stack.in_dim().unwrap_or(0);
        for (k, layer) in stack.layers.iter().enumerate() {
            let name = |p: &str| layer_param(&stack.prefix, k, p);
            match *layer {
                Layer::Linear { in_dim, out_dim, bias } => {
                    let y = g.zeros(&name("out"), rows * out_dim)?;
                    let b = bias.then(|| self.p(&name("bias")));
                    g.linear(prog, &x, (self.p(&name("weight")), b), &y, (rows, in_dim, out_dim), false);
                    (x, width) = (y, out_dim);
                }
                Layer::BatchNorm1d { .. } => {
                    g.elementwise(prog, &g.affine, 0, &[(1, &x), (2, self.p(&name("scale"))), (3, self.p(&name("shift")))], (rows, width));
                }
                Layer::LayerNorm { eps, .. } => g.row_op(prog, &x, (self.p(&name("weight")), self.p(&name("bias"))), (rows, width), eps, RowOp::LayerNorm),
                Layer::PRelu { num_parameters } => {
                    g.elementwise(prog, &g.prelu, (num_parameters > 1) as u32, &[(1, &x), (2, self.p(&name("weight")))], (rows, width));
                }
                Layer::Act(a) => g.elementwise(prog, &g.activate, activation_code(a), &[(1, &x)], (rows, width)),
                Layer::Dropout { .. } => {}
                Layer::L2Normalize { eps } => g.row_op(prog, &x, (&self.unused, &self.unused), (rows, width), eps, RowOp::L2Normalize),
                Layer::Floor { below } => {
                    g.dispatch(prog, &g.activate, [rows as u32, width as u32, FLOOR_CODE, below.to_bits()], &[(1, &x)], Gpu::grid((rows * width).div_ceil(256)))
                }
            }
        }
        Ok(x)
    }

    /// The denoiser's `z_0` estimate for `z` (rows × latent) at timestep `t`, classes per row.
    fn denoise(&self, prog: &mut Program, z: DeviceArray, rows: usize, t: u32, classes: &DeviceArray) -> Result<DeviceArray, String> {
        let g = &self.gpu;
        let d = self.spec.denoiser.as_ref().ok_or("this bundle has no denoiser")?;
        let n = d.names();
        let e = d.emb_dim;
        // The time embedding is the same for every row: one row through the time MLP.
        let sinusoid = scdd_core::reference::sinusoidal(&[t as f32], e);
        let temb = g.upload("sinusoid", sinusoid.as_slice().expect("standard layout"))?;
        let h = g.zeros("time.0", e)?;
        self.linear(prog, &temb, &n.time[0], 1, &h, false);
        g.elementwise(prog, &g.activate, activation_code(Activation::Silu), &[(1, &h)], (1, e));
        let time = g.zeros("time.2", e)?;
        self.linear(prog, &h, &n.time[1], 1, &time, false);
        // SiLU(time + class_table[c]) per row.
        let cond = g.zeros("condition", rows * e)?;
        g.elementwise(prog, &g.condition, 0, &[(1, &cond), (2, &time), (3, self.p(&n.class_table)), (4, classes)], (rows, e));
        let block = |prog: &mut Program, b: &BlockNames, h: &DeviceArray| -> Result<DeviceArray, String> {
            let y = g.zeros(&b.linear.weight, rows * b.linear.out_dim)?;
            self.linear(prog, h, &b.linear, rows, &y, false);
            self.linear(prog, &cond, &b.emb, rows, &y, true);
            g.row_op(prog, &y, (self.p(&b.norm.weight), self.p(&b.norm.bias)), (rows, b.norm.dim), d.norm_eps, RowOp::LayerNormSilu);
            Ok(y)
        };
        // Block outputs are never written after they are made, so each down block's output
        // serves as the next block's input and as its skip connection.
        let mut skips: Vec<DeviceArray> = Vec::with_capacity(n.down.len());
        for b in &n.down {
            let y = block(prog, b, skips.last().unwrap_or(&z))?;
            skips.push(y);
        }
        let mut up: Option<DeviceArray> = None;
        for j in (0..n.up.len()).rev() {
            let y = block(prog, &n.up[j], up.as_ref().or(skips.last()).unwrap_or(&z))?;
            g.elementwise(prog, &g.add, 0, &[(1, &y), (2, &skips[j])], (rows, n.up[j].norm.dim));
            up = Some(y);
        }
        let h = up.as_ref().or(skips.last()).unwrap_or(&z);
        let out = g.zeros("denoiser.out", rows * d.latent_dim)?;
        self.linear(prog, h, &n.out, rows, &out, false);
        Ok(out)
    }

    /// The network part of `G(z) = P(D(U(z, t, c)))` for `n` codes (rows of `z`), on the device;
    /// the projection `P` runs on the CPU afterwards ([`GpuModel::generate`]).
    pub async fn network(&self, z: &[f32], n: usize, t: u32, classes: &[u32]) -> Result<Vec<f32>, String> {
        let latent = self.spec.latent_dim;
        let genes = self.spec.n_genes;
        if z.len() != n * latent || classes.len() != n {
            return Err(format!("{} values and {} classes for {n} codes of width {latent}", z.len(), classes.len()));
        }
        let d = self.spec.denoiser.as_ref().ok_or("this bundle has no denoiser")?;
        if let Some(&c) = classes.iter().find(|&&c| c as usize >= d.n_classes) {
            return Err(format!("class id {c} but the denoiser has {} classes", d.n_classes));
        }
        let widest = self.spec.decoder.layers.iter().filter_map(|l| if let Layer::Linear { out_dim, .. } = l { Some(*out_dim) } else { None }).chain(d.hidden.iter().copied()).max().unwrap_or(genes).max(genes);
        let batch = (self.gpu.max_binding / (4 * widest as u64)).clamp(1, MAX_BATCH_ROWS as u64) as usize;
        let mut out = Vec::with_capacity(n * genes);
        for start in (0..n).step_by(batch) {
            let rows = batch.min(n - start);
            let mut prog = Program::default();
            let zb = self.gpu.upload("codes", &z[start * latent..(start + rows) * latent])?;
            let cb = self.gpu.upload_u32("classes", &classes[start..start + rows]);
            let z0 = self.denoise(&mut prog, zb, rows, t, &cb)?;
            let x = self.run_stack(&mut prog, &self.spec.decoder, z0, rows)?;
            self.gpu.run(&prog, 1);
            out.extend(self.gpu.read(&x).await?);
        }
        Ok(out)
    }

    /// Decodes `n` codes: the network on the device, then the projection onto valid cells
    /// (`scdd_core::graph::ExpressionSpace::project`, f64 per cell) on the CPU. Cells × genes.
    pub async fn generate(&self, z: &[f32], n: usize, t: u32, classes: &[u32]) -> Result<ndarray::Array2<f32>, String> {
        let x = self.network(z, n, t, classes).await?;
        let mut x = ndarray::Array2::from_shape_vec((n, self.spec.n_genes), x).map_err(|e| e.to_string())?;
        self.spec.space.project(&mut x);
        Ok(x)
    }
}

/// "name (backend, device type)"; browsers often hide the name (then the vendor or driver).
fn describe_adapter(info: &wgpu::AdapterInfo) -> String {
    let name = [&info.name, &info.driver, &info.driver_info].into_iter().find(|s| !s.trim().is_empty()).cloned().unwrap_or_else(|| "unnamed adapter".into());
    let device = match info.device_type {
        wgpu::DeviceType::Cpu => "CPU device",
        wgpu::DeviceType::DiscreteGpu => "discrete GPU",
        wgpu::DeviceType::IntegratedGpu => "integrated GPU",
        wgpu::DeviceType::VirtualGpu => "virtual GPU",
        wgpu::DeviceType::Other => "device of unknown kind",
    };
    format!("{name} ({:?}, {device})", info.backend)
}
