// Element-wise operations on a rows × cols matrix x, one invocation per element (the grid may
// be two-dimensional when there are more than 65 535 workgroups).
struct Dims {
    rows: u32,
    cols: u32,
    // activate: 0 identity, 1 ReLU, 2 SiLU, 3 softplus (threshold 20), 4 tanh, 5 sigmoid,
    // 6 floor (values below bitcast<f32>(pad) become 0).
    // per_column (affine, prelu): 1 when the parameter has one value per column, 0 for one value.
    code: u32,
    pad: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> p: array<f32>;
@group(0) @binding(3) var<storage, read> q: array<f32>;

fn index(wg: vec3<u32>, nw: vec3<u32>, lid: vec3<u32>) -> u32 {
    return (wg.y * nw.x + wg.x) * 256u + lid.x;
}

fn act(code: u32, v: f32) -> f32 {
    switch code {
        case 1u: { return max(v, 0.0); }
        case 2u: { return v / (1.0 + exp(-v)); }
        case 3u: {
            if (v > 20.0) {
                return v;
            }
            // log1p(e^v) accurately for small e^v.
            let e = exp(v);
            let u = 1.0 + e;
            if (u == 1.0) {
                return e;
            }
            return log(u) * e / (u - 1.0);
        }
        case 4u: { return tanh(v); }
        case 5u: { return 1.0 / (1.0 + exp(-v)); }
        default: { return v; }
    }
}

// x = act(x).
@compute @workgroup_size(256)
fn activate(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wg, nw, lid);
    if (i < dims.rows * dims.cols) {
        let v = x[i];
        if (dims.code == 6u) {
            x[i] = select(v, 0.0, v < bitcast<f32>(dims.pad));
        } else {
            x[i] = act(dims.code, v);
        }
    }
}

// x = x · p[col] + q[col] (batch norm with running statistics, folded).
@compute @workgroup_size(256)
fn affine(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wg, nw, lid);
    if (i < dims.rows * dims.cols) {
        let c = i % dims.cols;
        x[i] = x[i] * p[c] + q[c];
    }
}

// x = x < 0 ? p[col or 0] · x : x.
@compute @workgroup_size(256)
fn prelu(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wg, nw, lid);
    if (i < dims.rows * dims.cols) {
        var a = p[0];
        if (dims.code == 1u) {
            a = p[i % dims.cols];
        }
        let v = x[i];
        x[i] = select(v, a * v, v < 0.0);
    }
}

// x = x + p (skip connections).
@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wg, nw, lid);
    if (i < dims.rows * dims.cols) {
        x[i] = x[i] + p[i];
    }
}

// x[r, c] = SiLU(p[c] + q[classes[r]·cols + c]): the conditioning embedding, time part p (one
// row) plus the class table q. The class ids ride in the uniform-free binding below.
@group(0) @binding(4) var<storage, read> classes: array<u32>;

@compute @workgroup_size(256)
fn condition(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let i = index(wg, nw, lid);
    if (i < dims.rows * dims.cols) {
        let r = i / dims.cols;
        let c = i % dims.cols;
        let v = p[c] + q[classes[r] * dims.cols + c];
        x[i] = v / (1.0 + exp(-v));
    }
}
