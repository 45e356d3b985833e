// The page's main thread: file pickers, status, drawing. All computation is in worker.js.
// window.scdd mirrors the state for people poking at the console and for the browser tests.
const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL(`./worker.js${location.search}`, import.meta.url), { type: 'module' });
const state = (window.scdd = { busy: 0, fractions: [], bundle: null, decoded: null, test: null, evaluation: null, errors: [], log: [] });
let nextId = 1;
const waiting = new Map();

worker.onmessage = ({ data }) => {
  if ('ready' in data) {
    state.workerReady = data.ready;
    state.loadMs = performance.now();
    if (!data.ready) fail(new Error(`the page could not start: ${data.error}`));
    return;
  }
  const w = waiting.get(data.id);
  if (!w) return;
  if ('progress' in data) return status(data.progress, 'busy', data.fraction);
  waiting.delete(data.id);
  if ('error' in data) w.reject(new Error(data.error));
  else w.resolve(data.ok);
};
worker.onerror = (e) => fail(new Error(`the worker stopped: ${e.message || 'unknown error'} (reload the page)`));

function call(op, args = {}, transfer = []) {
  const id = nextId++;
  return new Promise((resolve, reject) => {
    waiting.set(id, { resolve, reject });
    worker.postMessage({ id, op, ...args }, transfer);
  });
}

let t0 = 0;
let busyText = '';
// While busy the status line counts the seconds (a long step with no news is still alive) and,
// when the worker says how far it is, fills a progress bar.
setInterval(() => { if (state.busy) status(busyText, 'busy'); }, 500);
function status(text, kind = 'done', fraction) {
  const el = $('status');
  el.className = `status ${kind}`;
  const bar = $('status-progress');
  if (kind === 'busy') {
    if (text !== busyText) bar.hidden = true;
    busyText = text;
    if (typeof fraction === 'number') { bar.hidden = false; bar.value = fraction; state.fractions.push(fraction); }
  } else {
    bar.hidden = true;
  }
  $('status-text').textContent = kind === 'busy' ? `${text} (${((performance.now() - t0) / 1000).toFixed(1)} s)` : text;
}

function fail(e) {
  const msg = String(e.message || e);
  state.errors.push(msg);
  $('error').hidden = false;
  $('error').textContent = msg;
  status('Stopped: see the message below.', 'done');
}

async function run(what, fn) {
  state.busy++;
  state.fractions = []; // what the worker reported of this step (tests read it)
  $('error').hidden = true;
  t0 = performance.now();
  status(what, 'busy');
  try {
    const text = await fn();
    status(text, 'done');
    state.log.push(text);
  } catch (e) {
    fail(e);
  } finally {
    state.busy--;
  }
}

const read = (file) => file.arrayBuffer();

async function openBundle(file) {
  await run(`Opening ${file.name}…`, async () => {
    const bytes = await read(file);
    const b = await call('bundle', { bytes, name: file.name }, [bytes]);
    state.bundle = b;
    state.decoded = state.test = state.evaluation = null;
    ['synthetic', 'test-section', 'evaluate'].forEach((s) => ($(s).hidden = true));
    $('codes').disabled = $('test').disabled = false;
    $('label').placeholder = b.label;
    const fallback = b.backend.startsWith('CPU') ? ' — the same numbers as on a GPU, computed in WebAssembly' : '';
    $('bundle-info').textContent = `${file.name}: generator ${b.id.slice(0, 12)}, ${b.genes} genes, ${b.classes.length} classes (${b.classes.join(', ')}); label column "${b.label}". Decoding on ${b.backend}${fallback}.`;
    return `Generator bundle open (${b.ms} ms). Now pick a latent-code file.`;
  });
}

async function decode(file) {
  await run(`Decoding ${file.name}…`, async () => {
    const bytes = await read(file);
    const d = await call('decode', { bytes, name: file.name }, [bytes]);
    state.decoded = d;
    state.evaluation = null;
    $('synthetic').hidden = false;
    const per = state.bundle.classes.map((c, i) => `${c} ${d.counts[i]}`).filter((_, i) => d.counts[i] > 0).join(', ');
    $('decode-info').textContent = `${d.n_cells} synthetic cells × ${d.n_genes} genes decoded in ${d.ms} ms (${Math.round(d.cells_per_s)} cells/s). Per class: ${per}. Values: log1p of counts normalised per cell.`;
    drawExploration(d.exploration);
    $('evaluate').hidden = !state.test;
    return `Decoded ${d.n_cells} cells.${state.test ? '' : ' Add your test cells (.h5ad) to train classifiers on them.'}`;
  });
}

async function loadTest(file) {
  await run(`Reading ${file.name}…`, async () => {
    const bytes = await read(file);
    const t = await call('test', { bytes, name: file.name, label: $('label').value.trim(), matrix: $('matrix').value }, [bytes]);
    state.test = t;
    const r = t.report;
    const dropped = [r.unlabelled ? `${r.unlabelled} without a label` : '', r.unknown_class ? `${r.unknown_class} of classes the model does not know (${r.unknown_classes.slice(0, 6).join(', ')})` : ''].filter(Boolean).join('; ');
    $('test-section').hidden = false;
    $('test-info').textContent = `${file.name}: ${r.cells_kept} of ${r.cells_in_file} cells kept${dropped ? ` (left out: ${dropped})` : ''}, label column "${t.label}". Values: ${r.values}. Genes: ${r.shared_genes} of the model's ${r.model_genes} found among the file's ${r.genes_in_file} (minimum ${r.min_shared_genes}; missing ones count as zero).`;
    if (t.exploration) drawExploration(t.exploration);
    $('evaluate').hidden = !state.decoded;
    return `Test cells ready (${t.ms} ms).${state.decoded ? ' Train a classifier below.' : ''}`;
  });
}

async function train() {
  const evaluator = $('evaluator').value;
  const seed = Number($('seed').value);
  if (!Number.isInteger(seed) || seed < 0 || seed > 4294967295) return fail(new Error(`seed ${$('seed').value}: a whole number from 0 to 4294967295`));
  $('train').disabled = true;
  await run(`Training ${evaluator}…`, async () => {
    const r = await call('evaluate', { evaluator, seed, trainOn: $('train-on').value });
    state.evaluation = r;
    showEvaluation(r);
    return `Trained and tested ${evaluator} in ${(r.ms / 1000).toFixed(1)} s.`;
  });
  $('train').disabled = false;
}

async function download(format) {
  await run(`Writing ${format}…`, async () => {
    const f = await call('download', { format });
    const url = URL.createObjectURL(new Blob([f.bytes], { type: f.mime }));
    const a = Object.assign(document.createElement('a'), { href: url, download: f.name });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60000);
    return `Saved ${f.name} (${(f.bytes.byteLength / 1e6).toFixed(2)} MB).`;
  });
}

// ---- drawing ----

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf', '#393b79', '#ad494a', '#637939', '#8c6d31', '#843c39', '#7b4173', '#3182bd', '#e6550d', '#31a354', '#756bb1'];
const colour = (c) => PALETTE[c % PALETTE.length];

function drawExploration(e) {
  const cv = $('pca');
  const ctx = cv.getContext('2d');
  const W = cv.width, H = cv.height, pad = 28;
  ctx.clearRect(0, 0, W, H);
  const all = e.synthetic.concat(e.test);
  const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const sx = (x) => pad + ((x - x0) / (x1 - x0 || 1)) * (W - 2 * pad);
  const sy = (y) => H - pad - ((y - y0) / (y1 - y0 || 1)) * (H - 2 * pad);
  ctx.globalAlpha = 0.35;
  e.test.forEach((p, i) => { ctx.fillStyle = colour(e.test_labels[i]); ctx.fillRect(sx(p[0]) - 1.5, sy(p[1]) - 1.5, 3, 3); });
  ctx.globalAlpha = 1;
  e.synthetic.forEach((p, i) => {
    ctx.beginPath();
    ctx.arc(sx(p[0]), sy(p[1]), 5, 0, 2 * Math.PI);
    ctx.fillStyle = colour(e.synthetic_labels[i]);
    ctx.fill();
    ctx.lineWidth = 1.2;
    ctx.strokeStyle = '#000';
    ctx.stroke();
  });
  ctx.fillStyle = '#5b6576';
  ctx.font = '12px system-ui';
  const pct = (i) => (e.variance_ratio[i] !== undefined ? ` (${(100 * e.variance_ratio[i]).toFixed(1)} %)` : '');
  ctx.fillText(`PC1${pct(0)}`, W / 2 - 30, H - 8);
  ctx.save(); ctx.translate(12, H / 2 + 30); ctx.rotate(-Math.PI / 2); ctx.fillText(`PC2${pct(1)}`, 0, 0); ctx.restore();
  $('pca-caption').textContent = `Principal components fit on the ${e.fitted_on}. Large outlined dots: synthetic cells${e.test.length ? `; small faint dots: ${e.test.length} test cells` : ''}. Colour: class.`;
  $('legend').replaceChildren(...state.bundle.classes.map((c, i) => Object.assign(document.createElement('li'), { innerHTML: `<i style="background:${colour(i)}"></i>${escape(c)}` })));
  const rows = e.markers.filter((m) => m.cells > 0).map((m) => `<tr><th>${escape(m.class)}</th><td>${m.genes.map((g) => `${escape(g[0])} <small>${g[1].toFixed(2)} vs ${g[2].toFixed(2)}</small>`).join(', ')}</td></tr>`);
  $('markers').innerHTML = `<tr><th>class</th><th>genes (mean log-expression in class vs other cells)</th></tr>${rows.join('')}`;
}

function showEvaluation(r) {
  const k = r.classes.length;
  const present = r.classes.map((_, i) => r.confusion[i].some((v) => v > 0) || r.confusion.some((row) => row[i] > 0));
  const idx = r.classes.map((_, i) => i).filter((i) => present[i]);
  const head = `<tr><th>true \\ predicted</th>${idx.map((j) => `<th>${escape(r.classes[j])}</th>`).join('')}<th>recall</th></tr>`;
  const body = idx.map((i) => {
    const total = r.confusion[i].reduce((a, b) => a + b, 0) || 1;
    const cells = idx.map((j) => {
      const v = r.confusion[i][j], f = v / total;
      const bg = i === j ? `rgba(47,111,222,${f})` : `rgba(179,38,30,${f})`;
      return `<td style="background:${bg};color:${f > 0.55 ? '#fff' : 'inherit'}">${v}</td>`;
    });
    const rec = r.per_class_accuracy[i];
    return `<tr><th>${escape(r.classes[i])}</th>${cells.join('')}<td class="num">${rec === null ? '–' : (100 * rec).toFixed(1) + ' %'}</td></tr>`;
  });
  $('results').innerHTML = `
    <div class="scores"><div>accuracy<b id="accuracy">${(100 * r.accuracy).toFixed(2)} %</b></div><div>macro-F1<b id="macro-f1">${(100 * r.macro_f1).toFixed(2)} %</b></div>
    <div>trained on<b>${r.train_cells}</b>synthetic cells</div><div>tested on<b>${r.test_cells}</b>of your cells</div></div>
    <p class="info">${escape(r.evaluator)} on ${escape(r.backend)}, ${(r.ms / 1000).toFixed(1)} s. ${k} classes.</p>
    ${r.collapsed ? `<p class="warn" id="collapsed">⚠ Degenerate fit: ${(100 * r.collapsed.share).toFixed(0)} % of your cells were called ${escape(r.collapsed.class)}, which is ${(100 * r.collapsed.truth).toFixed(0)} % of them. Per-gene z-scaling fitted on a few smooth synthetic cells can magnify their tiny differences into this.</p>` : ''}
    <table class="confusion">${head}${body.join('')}</table>`;
}

function escape(s) {
  return String(s).replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]);
}

// ---- inputs ----

$('bundle').onchange = (e) => e.target.files[0] && openBundle(e.target.files[0]);
$('codes').onchange = (e) => e.target.files[0] && decode(e.target.files[0]);
$('test').onchange = (e) => e.target.files[0] && loadTest(e.target.files[0]);
$('train').onclick = train;
$('dl-h5ad').onclick = () => download('h5ad');
$('dl-csv').onclick = () => download('csv');

document.addEventListener('dragover', (e) => { e.preventDefault(); document.body.classList.add('dragging'); });
document.addEventListener('dragleave', () => document.body.classList.remove('dragging'));
document.addEventListener('drop', async (e) => {
  e.preventDefault();
  document.body.classList.remove('dragging');
  const files = [...e.dataTransfer.files];
  const by = (ext) => files.find((f) => f.name.toLowerCase().endsWith(ext));
  if (by('.scddg')) await openBundle(by('.scddg'));
  if (by('.scdd')) await (state.bundle ? decode(by('.scdd')) : fail(new Error('drop the generator bundle (.scddg) first, or with the codes')));
  const h = by('.h5ad') || by('.h5');
  if (h) await (state.bundle ? loadTest(h) : fail(new Error('drop the generator bundle (.scddg) first')));
  const other = files.filter((f) => !/\.(scddg|scdd|h5ad|h5)$/i.test(f.name));
  if (other.length) fail(new Error(`${other[0].name}: not a file this page reads (.scddg, .scdd, .h5ad)`));
});
state.ready = true;
