// y = x · Wᵀ (+ b) (+ y) as linear.wgsl, for CPU implementations of WebGPU (SwiftShader,
// lavapipe): no shared memory, each invocation one row × four output columns, the inner
// dimension read as vec4 (it must be a multiple of 4). Fewer, longer invocations and a quarter
// of the loads: on SwiftShader each invocation and each load has a fixed cost.
struct Dims {
    rows: u32,
    inner: u32,
    cols: u32,
    // bit 0: add the bias b; bit 1: add to what y holds (y += x·Wᵀ).
    flags: u32,
}

@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read> b: array<f32>;
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let quads = (dims.cols + 3u) / 4u;
    let i = g.y * nw.x * 64u + g.x;
    if (i >= dims.rows * quads) {
        return;
    }
    let r = i / quads;
    let c0 = (i % quads) * 4u;
    let k4 = dims.inner / 4u;
    // Columns past the end read the last row of W (valid memory) and are not written.
    let last = dims.cols - 1u;
    let w0 = min(c0, last) * k4;
    let w1 = min(c0 + 1u, last) * k4;
    let w2 = min(c0 + 2u, last) * k4;
    let w3 = min(c0 + 3u, last) * k4;
    let xb = r * k4;
    var acc = vec4<f32>(0.0);
    for (var k = 0u; k < k4; k = k + 1u) {
        let xv = x[xb + k];
        acc = acc + vec4<f32>(dot(xv, w[w0 + k]), dot(xv, w[w1 + k]), dot(xv, w[w2 + k]), dot(xv, w[w3 + k]));
    }
    for (var j = 0u; j < 4u; j = j + 1u) {
        let c = c0 + j;
        if (c < dims.cols) {
            var v = acc[j];
            if ((dims.flags & 1u) != 0u) {
                v = v + b[c];
            }
            let at = r * dims.cols + c;
            if ((dims.flags & 2u) != 0u) {
                v = v + y[at];
            }
            y[at] = v;
        }
    }
}
