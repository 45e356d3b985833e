// y = x · Wᵀ (+ b) (+ y): x rows × inner, W cols × inner (torch's nn.Linear layout), y rows × cols.
// 16 × 16 output tiles; each workgroup stages a 16-wide slice of x and of W in shared memory.
struct Dims {
    rows: u32,
    inner: u32,
    cols: u32,
    // bit 0: add the bias b; bit 1: add to what y holds (y += x·Wᵀ).
    flags: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

const T: u32 = 16u;
var<workgroup> xs: array<array<f32, 16>, 16>;
var<workgroup> ws: array<array<f32, 16>, 16>;

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_id) l: vec3<u32>) {
    let r = wg.y * T + l.y;
    let c = wg.x * T + l.x;
    // The W row this invocation stages: output column wg.x·T + l.y.
    let wc = wg.x * T + l.y;
    var acc = 0.0;
    let tiles = (dims.inner + T - 1u) / T;
    for (var t = 0u; t < tiles; t = t + 1u) {
        let k = t * T + l.x;
        var xv = 0.0;
        if (r < dims.rows && k < dims.inner) {
            xv = x[r * dims.inner + k];
        }
        xs[l.y][l.x] = xv;
        var wv = 0.0;
        if (wc < dims.cols && k < dims.inner) {
            wv = w[wc * dims.inner + k];
        }
        ws[l.y][l.x] = wv;
        workgroupBarrier();
        for (var i = 0u; i < T; i = i + 1u) {
            acc = acc + xs[l.y][i] * ws[l.x][i];
        }
        workgroupBarrier();
    }
    if (r < dims.rows && c < dims.cols) {
        let at = r * dims.cols + c;
        if ((dims.flags & 1u) != 0u) {
            acc = acc + b[c];
        }
        if ((dims.flags & 2u) != 0u) {
            acc = acc + y[at];
        }
        y[at] = acc;
    }
}

// The same product without shared memory: one invocation per output, a plain loop over the
// inner dimension (faster where workgroup barriers are expensive, as on CPU implementations).
@compute @workgroup_size(64)
fn direct(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let i = g.y * nw.x * 64u + g.x;
    if (i >= dims.rows * dims.cols) {
        return;
    }
    let r = i / dims.cols;
    let c = i % dims.cols;
    var acc = 0.0;
    let xb = r * dims.inner;
    let wb = c * dims.inner;
    for (var k = 0u; k < dims.inner; k = k + 1u) {
        acc = acc + x[xb + k] * w[wb + k];
    }
    if ((dims.flags & 1u) != 0u) {
        acc = acc + b[c];
    }
    let at = r * dims.cols + c;
    if ((dims.flags & 2u) != 0u) {
        acc = acc + y[at];
    }
    y[at] = acc;
}
