// Per-row reductions, one workgroup of 64 per row: LayerNorm (two passes: mean, then variance,
// as the CPU reference) optionally followed by SiLU, and L2 normalisation.
struct Dims {
    rows: u32,
    dim: u32,
    eps: f32,
    // 0: LayerNorm; 1: LayerNorm then SiLU; 2: L2 normalisation (gamma, beta unused).
    op: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read_write> x: array<f32>;
@group(0) @binding(2) var<storage, read> gamma: array<f32>;
@group(0) @binding(3) var<storage, read> beta: array<f32>;

const W: u32 = 64u;
var<workgroup> part: array<f32, 64>;

fn row_sum(l: u32, v: f32) -> f32 {
    part[l] = v;
    workgroupBarrier();
    for (var s = W / 2u; s > 0u; s = s / 2u) {
        if (l < s) {
            part[l] = part[l] + part[l + s];
        }
        workgroupBarrier();
    }
    let total = part[0];
    workgroupBarrier();
    return total;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let r = wg.y * nw.x + wg.x;
    if (r >= dims.rows) {
        return;
    }
    let l = lid.x;
    let base = r * dims.dim;
    let n = f32(dims.dim);
    if (dims.op == 2u) {
        var sq = 0.0;
        for (var j = l; j < dims.dim; j = j + W) {
            sq = sq + x[base + j] * x[base + j];
        }
        let norm = max(sqrt(row_sum(l, sq)), dims.eps);
        for (var j = l; j < dims.dim; j = j + W) {
            x[base + j] = x[base + j] / norm;
        }
        return;
    }
    var s = 0.0;
    for (var j = l; j < dims.dim; j = j + W) {
        s = s + x[base + j];
    }
    let mean = row_sum(l, s) / n;
    var v = 0.0;
    for (var j = l; j < dims.dim; j = j + W) {
        let d = x[base + j] - mean;
        v = v + d * d;
    }
    let inv = 1.0 / sqrt(row_sum(l, v) / n + dims.eps);
    for (var j = l; j < dims.dim; j = j + W) {
        var o = (x[base + j] - mean) * inv * gamma[j] + beta[j];
        if (dims.op == 1u) {
            o = o / (1.0 + exp(-o));
        }
        x[base + j] = o;
    }
}
