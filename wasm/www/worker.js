// The page's Web Worker: everything heavy runs here (reading files with h5wasm, decoding and
// training through the scdd-wasm module), so the tab never freezes. Messages in:
//   {id, op: 'bundle', bytes, name} | {id, op: 'decode', bytes, name}
//   {id, op: 'test', bytes, name, label, matrix} | {id, op: 'evaluate', evaluator, seed, trainOn}
//   {id, op: 'download', format: 'h5ad' | 'csv'}
// out: {id, progress: text[, fraction]} while working, then {id, ok: result} or {id, error: message}.
import init, { Decoder } from './pkg/scdd_wasm.js';
import * as h5wasm from './vendor/h5wasm/hdf5_hl.js';

let decoder = null;   // the opened generator bundle
let decoded = null;   // { cells: Decoded, name }
let test = null;      // { set: TestSet, name, report }
const ready = Promise.all([init(), h5wasm.ready]);
ready.then(() => postMessage({ ready: true }), (e) => postMessage({ ready: false, error: String((e && e.message) || e) }));
// ?backend=cpu on the page's address decodes on the CPU reference even where WebGPU exists;
// ?backend=webgpu on WebGPU even where its adapter is a software emulation (tests, benchmarks).
const place = new URL(self.location.href).searchParams.get('backend');

const progress = (id, text, fraction) => postMessage({ id, progress: text, fraction });
const ms = (t0) => Math.round(performance.now() - t0);

onmessage = async ({ data: msg }) => {
  const { id } = msg;
  try {
    await ready;
    const result = await ops[msg.op](msg, (text, fraction) => progress(id, text, fraction));
    postMessage({ id, ok: result }, result && result.transfer ? result.transfer : []);
  } catch (e) {
    postMessage({ id, error: String((e && e.message) || e) });
  }
};

const ops = {
  async bundle({ bytes, name }, say) {
    say(`reading ${name} (${(bytes.byteLength / 1e6).toFixed(1)} MB)…`);
    const t0 = performance.now();
    const next = await (place === 'cpu' ? Decoder.openCpu : place === 'webgpu' ? Decoder.openWebGpu : Decoder.open)(new Uint8Array(bytes)).catch((e) => { throw new Error(`${name}: ${e.message || e}`); });
    if (decoder) decoder.free();
    decoder = next;
    decoded = null;
    if (test) { test.set.free(); test = null; }
    return {
      backend: decoder.backend, genes: decoder.genes.length, classes: decoder.classes,
      label: decoder.label_column, id: decoder.generator_id, ms: ms(t0),
    };
  },

  async decode({ bytes, name }, say) {
    if (!decoder) throw new Error('open a generator bundle first');
    const on = decoder.backend.split(' (')[0];
    say(`decoding ${name} on ${on}…`, 0);
    const t0 = performance.now();
    const step = (done, total) => say(`decoding ${name} on ${on}: ${done} of ${total} cells…`, done / total);
    const d = await decoder.decode(new Uint8Array(bytes), step).catch((e) => { throw new Error(`${name}: ${e.message || e}`); });
    const t = ms(t0);
    if (decoded) decoded.cells.free();
    decoded = { cells: d, name };
    say('principal components and top genes…');
    const exploration = JSON.parse(test ? decoder.exploreWithTest(d, test.set, 5) : decoder.explore(d, 5));
    const labels = d.labels;
    const counts = decoder.classes.map((_, c) => labels.filter((l) => l === c).length);
    return { n_cells: d.n_cells, n_genes: d.n_genes, ms: t, cells_per_s: d.n_cells / Math.max(t, 1) * 1000, counts, exploration };
  },

  async test({ bytes, name, label, matrix }, say) {
    if (!decoder) throw new Error('open a generator bundle first');
    say(`reading ${name} (${(bytes.byteLength / 1e6).toFixed(1)} MB) with h5wasm…`);
    const t0 = performance.now();
    const h = readH5ad(new Uint8Array(bytes), name, label || decoder.label_column, matrix || 'X', decoder.space_tag);
    say(`${h.n_rows} cells × ${h.n_cols} genes: normalising and aligning to the model's genes…`);
    const set = h.format === 'dense'
      ? decoder.testSetDense(name, h.n_rows, h.n_cols, h.data, h.genes, h.labels, h.inSpace)
      : (h.format === 'csr' ? decoder.testSetCsr : decoder.testSetCsc).call(decoder, name, h.n_rows, h.n_cols, h.indptr, h.indices, h.data, h.genes, h.labels, h.inSpace);
    if (test) test.set.free();
    test = { set, name, report: JSON.parse(set.report) };
    const exploration = decoded ? JSON.parse(decoder.exploreWithTest(decoded.cells, set, 5)) : null;
    return { report: test.report, label: label || decoder.label_column, ms: ms(t0), exploration };
  },

  async evaluate({ evaluator, seed, trainOn }, say) {
    if (!decoded) throw new Error('decode a code file first');
    if (!test) throw new Error('load test cells (.h5ad) first');
    const what = `training ${evaluator} on ${decoded.cells.n_cells} synthetic cells`;
    say(`${what}…`, 0);
    const t0 = performance.now();
    const step = (f) => say(`${what}: ${Math.round(100 * f)} %…`, f);
    const r = JSON.parse(await decoder.evaluate(decoded.cells, test.set, evaluator, seed || 0, trainOn || 'auto', step));
    r.ms = ms(t0);
    return r;
  },

  async download({ format }, say) {
    if (!decoded) throw new Error('decode a code file first');
    const base = decoded.name.replace(/\.scdd$/, '') + '.synthetic';
    say(`writing ${format}…`);
    const bytes = format === 'csv' ? csv() : writeH5ad();
    return { name: `${base}.${format}`, bytes, mime: format === 'csv' ? 'text/csv' : 'application/x-hdf5', transfer: [bytes.buffer] };
  },
};

// ---- .h5ad in ----

function attr(obj, name) {
  const a = obj && obj.attrs[name];
  return a === undefined ? undefined : a.value;
}

function numbers(v) {
  if (v instanceof BigInt64Array || v instanceof BigUint64Array) return Float64Array.from(v, Number);
  return v;
}

function strings(ds, what) {
  const v = ds.value;
  if (!Array.isArray(v)) throw new Error(`${what} is not a string array`);
  return v.map(String);
}

// Reads X (or raw/X, or layers/NAME), the gene names and one obs column of an .h5ad.
function readH5ad(bytes, name, label, matrix, spaceTag) {
  const path = '/input.h5ad';
  h5wasm.FS.writeFile(path, bytes);
  let f;
  try {
    try { f = new h5wasm.File(path, 'r'); } catch (e) { throw new Error(`${name}: not an HDF5 (.h5ad) file`); }
    if (!f.keys || f.keys().length === 0) throw new Error(`${name}: not an HDF5 (.h5ad) file`);
    const X = f.get(matrix);
    if (!X) throw new Error(`${name}: no ${matrix} matrix`);
    const out = {};
    if (X.type === 'Group') {
      const enc = attr(X, 'encoding-type') || attr(X, 'h5sparse_format') + '_matrix';
      if (enc !== 'csr_matrix' && enc !== 'csc_matrix') throw new Error(`${name}:${matrix}: encoding ${enc} is not a sparse matrix scdd reads`);
      const shape = Array.from(attr(X, 'shape') || attr(X, 'h5sparse_shape'), Number);
      Object.assign(out, {
        format: enc === 'csr_matrix' ? 'csr' : 'csc', n_rows: shape[0], n_cols: shape[1],
        indptr: Float64Array.from(numbers(X.get('indptr').value)),
        indices: Uint32Array.from(numbers(X.get('indices').value)),
        data: Float32Array.from(numbers(X.get('data').value)),
      });
    } else {
      const [r, c] = X.shape;
      if (X.shape.length !== 2) throw new Error(`${name}:${matrix}: shape ${X.shape} is not 2-D`);
      Object.assign(out, { format: 'dense', n_rows: r, n_cols: c, data: Float32Array.from(numbers(X.value)) });
    }
    const varPath = matrix === 'raw/X' ? 'raw/var' : 'var';
    const v = f.get(varPath);
    if (!v) throw new Error(`${name}: no ${varPath}`);
    const index = v.get(attr(v, '_index') || '_index');
    if (!index) throw new Error(`${name}:${varPath}: no gene index`);
    out.genes = strings(index, `${name}:${varPath}/_index`);
    out.labels = readLabels(f, name, label);
    if (out.labels.length !== out.n_rows) throw new Error(`${name}:obs/${label}: ${out.labels.length} values for ${out.n_rows} cells`);
    const uns = f.get('uns/scdd_space');
    out.inSpace = !!uns && uns.value === spaceTag;
    return out;
  } finally {
    if (f) f.close();
    h5wasm.FS.unlink(path);
  }
}

// One obs column as strings ('' where missing): categorical (anndata ≥ 0.8 or the older
// __categories layout), strings or numbers.
function readLabels(f, name, label) {
  const obs = f.get('obs');
  if (!obs) throw new Error(`${name}: no obs`);
  const col = obs.get(label);
  if (!col) {
    const cols = obs.keys().filter((k) => k !== '_index' && k !== '__categories');
    throw new Error(`${name}: obs has no column "${label}" (columns: ${cols.join(', ') || 'none'})`);
  }
  if (col.type === 'Group') {
    const codes = numbers(col.get('codes').value);
    const cats = strings(col.get('categories'), `${name}:obs/${label}/categories`);
    return Array.from(codes, (c) => (c >= 0 && c < cats.length ? cats[c] : ''));
  }
  const old = f.get(`obs/__categories/${label}`);
  if (old) {
    const cats = strings(old, `${name}:obs/__categories/${label}`);
    return Array.from(numbers(col.value), (c) => (c >= 0 && c < cats.length ? cats[c] : ''));
  }
  const v = col.value;
  return Array.from(v, (x) => (x === null || x === undefined || (typeof x === 'number' && Number.isNaN(x)) ? '' : String(x)));
}

// ---- synthetic cells out ----

function cellNames(labels, classes) {
  const seen = new Array(classes.length).fill(0);
  return Array.from(labels, (l) => `syn_${classes[l].replaceAll(' ', '_')}_${seen[l]++}`);
}

function csv() {
  const d = decoded.cells, classes = decoder.classes, genes = decoder.genes;
  const cells = d.cells, labels = d.labels, g = d.n_genes;
  const q = (s) => (/[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s);
  const names = cellNames(labels, classes);
  const lines = [['cell', decoder.label_column, ...genes].map(q).join(',')];
  for (let i = 0; i < d.n_cells; i++) {
    const row = Array.from(cells.subarray(i * g, (i + 1) * g), (v) => (v === 0 ? '0' : v.toPrecision(6)));
    lines.push([q(names[i]), q(classes[labels[i]]), ...row].join(','));
  }
  return new TextEncoder().encode(lines.join('\n') + '\n');
}

function writeH5ad() {
  const d = decoded.cells, classes = decoder.classes, genes = decoder.genes;
  const n = d.n_cells, g = d.n_genes, cells = d.cells, labels = d.labels;
  const path = '/synthetic.h5ad';
  const f = new h5wasm.File(path, 'w');
  const enc = (o, t, v) => { o.create_attribute('encoding-type', t); o.create_attribute('encoding-version', v); };
  const strs = (grp, key, values) => enc(grp.create_dataset({ name: key, data: values }), 'string-array', '0.2.0');
  try {
    enc(f, 'anndata', '0.1.0');
    enc(f.create_dataset({ name: 'X', data: cells, shape: [n, g], dtype: '<f' }), 'array', '0.2.0');
    const obs = f.create_group('obs');
    enc(obs, 'dataframe', '0.2.0');
    obs.create_attribute('_index', '_index');
    obs.create_attribute('column-order', [decoder.label_column]);
    strs(obs, '_index', cellNames(labels, classes));
    const cat = obs.create_group(decoder.label_column);
    enc(cat, 'categorical', '0.2.0');
    cat.create_attribute('ordered', 0, null, '<b');
    enc(cat.create_dataset({ name: 'codes', data: Int32Array.from(labels), shape: [n], dtype: '<i' }), 'array', '0.2.0');
    strs(cat, 'categories', classes);
    // anndata needs a non-empty column order on var: the mean of each gene over the cells.
    const v = f.create_group('var');
    enc(v, 'dataframe', '0.2.0');
    v.create_attribute('_index', '_index');
    v.create_attribute('column-order', ['synthetic_mean']);
    strs(v, '_index', genes);
    const mean = new Float32Array(g);
    for (let i = 0; i < n; i++) for (let j = 0; j < g; j++) mean[j] += cells[i * g + j] / n;
    enc(v.create_dataset({ name: 'synthetic_mean', data: mean, shape: [g], dtype: '<f' }), 'array', '0.2.0');
    const uns = f.create_group('uns');
    enc(uns, 'dict', '0.1.0');
    const note = {
      scdd_space: decoder.space_tag,
      scdd_values: `log1p of counts normalised per cell (${decoder.space_tag})`,
      scdd_method: 'decoded in the browser (scdd-wasm)',
      scdd_source: decoded.name,
      scdd_generator_id: decoder.generator_id,
    };
    for (const [k, val] of Object.entries(note)) enc(uns.create_dataset({ name: k, data: val }), 'string', '0.2.0');
    for (const k of ['obsm', 'varm', 'obsp', 'varp', 'layers']) enc(f.create_group(k), 'dict', '0.1.0');
  } finally {
    f.close();
  }
  const bytes = h5wasm.FS.readFile(path);
  h5wasm.FS.unlink(path);
  return bytes;
}
