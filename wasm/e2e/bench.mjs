// The browser benchmark (scripts/browser-bench.sh): first load (time until the worker has the
// wasm module and h5wasm, bytes fetched), decoding throughput on WebGPU and on the CPU
// reference (?backend=cpu), and evaluator training time, in headless Chromium.
// node bench.mjs URL DIR CASES: DIR holds bundle-G.scddg, codes-G-N.scdd and test-G.h5ad from
// `scdd bench decode` (+ scdd decode); CASES is "G:N,G:N,…". Prints a table, writes
// DIR/browser-bench.json.
import { chromium } from 'playwright-core';
import fs from 'fs';
import os from 'os';
import path from 'path';

const [url, dir, casesArg] = process.argv.slice(2);
const cases = casesArg.split(',').map((c) => c.split(':').map(Number));
// Per step (BENCH_TIMEOUT_MS; the WGSL logistic regression on 14 000 × 10 000 cells under SwiftShader
// takes about an hour).
const TIMEOUT = Number(process.env.BENCH_TIMEOUT_MS || 3_600_000);
// Evaluators are trained on the decoded cells of every case up to this many cells, per backend
// (BENCH_TRAIN_MAX_WEBGPU, BENCH_TRAIN_MAX_CPU; default 10 000).
const trainMax = { webgpu: Number(process.env.BENCH_TRAIN_MAX_WEBGPU || 10000), cpu: Number(process.env.BENCH_TRAIN_MAX_CPU || 10000) };
const rows = [];
// BENCH_BACKENDS: which of them, in order (default webgpu,cpu).
for (const backend of (process.env.BENCH_BACKENDS || 'webgpu,cpu').split(',')) {
  const ctx = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'scdd-bench-')), {
    executablePath: '/usr/bin/chromium', headless: true,
    args: ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await ctx.newPage();
  let bytes = 0;
  page.on('requestfinished', async (r) => { try { bytes += (await r.sizes()).responseBodySize; } catch {} });
  const t0 = Date.now();
  await page.goto(`${url}?backend=${backend}`);
  await page.waitForFunction(() => window.scdd && window.scdd.workerReady, null, { timeout: 60_000 });
  const load = { backend, first_load_ms: Date.now() - t0, bytes };
  const step = async (selector, file) => {
    const n = await page.evaluate(() => window.scdd.log.length + window.scdd.errors.length);
    await page.setInputFiles(selector, []);
    await page.setInputFiles(selector, path.join(dir, file));
    await page.waitForFunction((k) => window.scdd.busy === 0 && window.scdd.log.length + window.scdd.errors.length > k, n, { timeout: TIMEOUT });
    const errors = await page.evaluate(() => window.scdd.errors);
    if (errors.length) throw new Error(`${file}: ${errors.at(-1)}`);
  };
  let openGenes = 0;
  for (const [g, n] of cases) {
    if (openGenes !== g) { await step('#bundle', `bundle-${g}.scddg`); openGenes = g; }
    await step('#codes', `codes-${g}-${n}.scdd`);
    const d = await page.evaluate(() => window.scdd.decoded);
    const row = { ...load, genes: g, cells: n, decode_ms: d.ms, cells_per_s: d.cells_per_s, backend_used: (await page.evaluate(() => window.scdd.bundle.backend)) };
    if (fs.existsSync(path.join(dir, `test-${g}.h5ad`)) && n <= trainMax[backend]) {
      await step('#test', `test-${g}.h5ad`);
      // The WGSL MLP on an emulated (CPU) adapter takes minutes (608 s on 1 000 × 2 000: its
      // full-batch products at SwiftShader's 0.5 GMAC/s): skipped, as the page's 'auto' would
      // train it on the CPU.
      const cpuAdapter = row.backend_used.includes('CPU device');
      // BENCH_WEBGPU_MLP=1 times it there anyway.
      const skipMlp = backend === 'webgpu' && cpuAdapter && !process.env.BENCH_WEBGPU_MLP;
      for (const evaluator of skipMlp ? ['logistic'] : ['logistic', 'mlp']) {
        await page.selectOption('#evaluator', evaluator);
        await page.selectOption('#train-on', backend);
        const k = await page.evaluate(() => window.scdd.log.length);
        await page.click('#train');
        await page.waitForFunction((m) => window.scdd.busy === 0 && (window.scdd.log.length > m || window.scdd.errors.length), k, { timeout: TIMEOUT });
        const e = await page.evaluate(() => window.scdd.evaluation);
        row[`${evaluator}_ms`] = e ? e.ms : null;
      }
    }
    rows.push(row);
    console.error(JSON.stringify(row));
  }
  await ctx.close();
}
fs.writeFileSync(path.join(dir, 'browser-bench.json'), JSON.stringify(rows, null, 2));
console.log('| backend | genes | cells | decode cells/s | logistic s | MLP s | first load s | bytes fetched |');
console.log('|---|---:|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  const s = (ms) => (ms == null ? '–' : (ms / 1000).toFixed(1));
  console.log(`| ${r.backend_used} | ${r.genes} | ${r.cells} | ${Math.round(r.cells_per_s)} | ${s(r.logistic_ms)} | ${s(r.mlp_ms)} | ${(r.first_load_ms / 1000).toFixed(2)} | ${(r.bytes / 1e6).toFixed(2)} MB |`);
}
