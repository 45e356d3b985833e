// Kernels for training classifiers on the device (full-batch gradient steps with Adam).
// `dims` is four u32 words; floats travel as their bits (bitcast).

@group(0) @binding(0) var<uniform> dims: vec4<u32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;
@group(0) @binding(5) var<storage, read> labels: array<u32>;
// Adam's first moments, then its second moments (2·n values; one binding, so that adam stays
// within the 4 storage buffers a downlevel device binds per stage).
@group(0) @binding(6) var<storage, read_write> moments: array<f32>;
@group(0) @binding(8) var<storage, read_write> counter: array<u32>;

const T: u32 = 16u;
var<workgroup> at: array<array<f32, 16>, 16>;
var<workgroup> bt: array<array<f32, 16>, 16>;

// Element (row r, inner index k) of the left factor: a is rows × inner, or inner × rows when
// dims.w is 1 (then the product is aᵀ·b).
fn left(r: u32, k: u32) -> f32 {
    if (dims.w == 1u) {
        return a[k * dims.x + r];
    }
    return a[r * dims.y + k];
}

// y (rows × cols) = a · b, or aᵀ · b (see `left`), for b (inner × cols). dims: rows, inner,
// cols, transposed. 16 × 16 output tiles staged through shared memory.
@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let rows = dims.x;
    let inner = dims.y;
    let cols = dims.z;
    let r = wg.y * T + l.y;
    let c = wg.x * T + l.x;
    var acc = 0.0;
    for (var t = 0u; t < (inner + T - 1u) / T; t = t + 1u) {
        let ka = t * T + l.x;
        var av = 0.0;
        if (r < rows && ka < inner) {
            av = left(r, ka);
        }
        at[l.y][l.x] = av;
        let kb = t * T + l.y;
        var bv = 0.0;
        if (kb < inner && c < cols) {
            bv = b[kb * cols + c];
        }
        bt[l.y][l.x] = bv;
        workgroupBarrier();
        for (var i = 0u; i < T; i = i + 1u) {
            acc = acc + at[l.y][i] * bt[i][l.x];
        }
        workgroupBarrier();
    }
    if (r < rows && c < cols) {
        y[r * cols + c] = acc;
    }
}

// The same product without shared memory: one invocation per output, a plain loop over the
// inner dimension (faster on CPU implementations, where workgroup barriers are expensive).
@compute @workgroup_size(64)
fn matmul_direct(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 64u + g.x;
    if (i >= dims.x * dims.z) {
        return;
    }
    let r = i / dims.z;
    let c = i % dims.z;
    var acc = 0.0;
    for (var k = 0u; k < dims.y; k = k + 1u) {
        acc = acc + left(r, k) * b[k * dims.z + c];
    }
    y[i] = acc;
}

// Per row of y (rows × cols logits): y = (softmax(y) − onehot(label)) / rows, the gradient of
// the mean cross-entropy with respect to the logits. dims: rows, cols.
@compute @workgroup_size(64)
fn softmax_residual(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let r = g.y * nw.x * 64u + g.x;
    let rows = dims.x;
    let cols = dims.y;
    if (r >= rows) {
        return;
    }
    let base = r * cols;
    var top = y[base];
    for (var c = 1u; c < cols; c = c + 1u) {
        top = max(top, y[base + c]);
    }
    var s = 0.0;
    for (var c = 0u; c < cols; c = c + 1u) {
        let e = exp(y[base + c] - top);
        y[base + c] = e;
        s = s + e;
    }
    let inv_n = 1.0 / f32(rows);
    for (var c = 0u; c < cols; c = c + 1u) {
        var v = y[base + c] / s;
        if (c == labels[r]) {
            v = v - 1.0;
        }
        y[base + c] = v * inv_n;
    }
}

// y[c] = Σ_r a[r, c] (bias gradients). dims: rows, cols.
@compute @workgroup_size(64)
fn colsum(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let c = g.y * nw.x * 64u + g.x;
    if (c >= dims.y) {
        return;
    }
    var s = 0.0;
    for (var r = 0u; r < dims.x; r = r + 1u) {
        s = s + a[r * dims.y + c];
    }
    y[c] = s;
}

// y = y where a > 0, else 0 (back through a ReLU whose output is a). dims: n.
@compute @workgroup_size(256)
fn relu_mask(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    if (i < dims.x) {
        y[i] = select(0.0, y[i], a[i] > 0.0);
    }
}

// Advances the step counter that `adam` reads by dims.x (1: one invocation per training step,
// so a recorded step replays without new uniforms).
@compute @workgroup_size(1)
fn tick() {
    counter[0] = counter[0] + dims.x;
}

// One Adam step on parameters y with gradient a + λ·y (an L2 penalty λ/2‖y‖²), `moments`;
// the step number (from 1) is counter[0]. dims: n, unused, bits of the learning rate, bits of λ.
@compute @workgroup_size(256)
fn adam(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 256u + g.x;
    if (i >= dims.x) {
        return;
    }
    let b1 = 0.9;
    let b2 = 0.999;
    let t = f32(counter[0]);
    let lr = bitcast<f32>(dims.z);
    let lambda = bitcast<f32>(dims.w);
    let grad = a[i] + lambda * y[i];
    let n = dims.x;
    let m = b1 * moments[i] + (1.0 - b1) * grad;
    let v = b2 * moments[n + i] + (1.0 - b2) * grad * grad;
    moments[i] = m;
    moments[n + i] = v;
    let mh = m / (1.0 - pow(b1, t));
    let vh = v / (1.0 - pow(b2, t));
    y[i] = y[i] - lr * mh / (sqrt(vh) + 1e-8);
}
