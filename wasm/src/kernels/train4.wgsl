// train.wgsl's matmul for CPU implementations of WebGPU: y (rows × cols) = a · b, or aᵀ · b when
// dims.w is 1, for b inner × cols with cols a multiple of 4. No shared memory; each invocation
// one row × four adjacent columns, b and y read and written as vec4 (a quarter of the loads and
// invocations of matmul_direct). dims: rows, inner, cols, transposed.

@group(0) @binding(0) var<uniform> dims: vec4<u32>;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) g: vec3<u32>, @builtin(num_workgroups) nw: vec3<u32>) {
    let rows = dims.x;
    let inner = dims.y;
    let quads = dims.z / 4u;
    let i = g.y * nw.x * 64u + g.x;
    if (i >= rows * quads) {
        return;
    }
    let r = i / quads;
    let q = i % quads;
    var acc = vec4<f32>(0.0);
    if (dims.w == 1u) {
        for (var k = 0u; k < inner; k = k + 1u) {
            acc = acc + a[k * rows + r] * b[k * quads + q];
        }
    } else {
        let base = r * inner;
        for (var k = 0u; k < inner; k = k + 1u) {
            acc = acc + a[base + k] * b[k * quads + q];
        }
    }
    y[i] = acc;
}
