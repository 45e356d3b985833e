// Drives the page in headless Chromium (playwright-core, Debian's chromium; WebGPU on
// SwiftShader when the machine has no GPU) through a recipient's session and the bad files.
// node page.mjs URL DIR: DIR holds the files scripts/browser-test.sh made; results.json,
// browser.h5ad, browser.csv and screenshots are written there. Exits 1 on any failed step.
import { chromium } from 'playwright-core';
import fs from 'fs';
import os from 'os';
import path from 'path';

const [url, dir] = process.argv.slice(2);
const file = (name) => path.join(dir, name);
const TIMEOUT = 300_000;
const ctx = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'scdd-chromium-')), {
  executablePath: '/usr/bin/chromium', headless: true, acceptDownloads: true, viewport: { width: 1280, height: 1400 },
  args: ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await ctx.newPage();
const consoleLines = [];
page.on('console', (m) => consoleLines.push(`${m.type()}: ${m.text()}`));
page.on('pageerror', (e) => consoleLines.push(`pageerror: ${e.message}`));
const failures = [];
// The fractions the page showed for one step rise to 1, with at least `least` reports.
function checkProgress(what, fractions, least) {
  results.progress = results.progress || {};
  results.progress[what] = fractions;
  const rising = fractions.every((f, i) => i === 0 || f >= fractions[i - 1]);
  if (fractions.length < least || fractions.at(-1) !== 1 || !rising) failures.push(`${what} progress: ${JSON.stringify(fractions)} (want ${least}+ reports rising to 1)`);
}
const results = { steps: [] };

try {
  await page.goto(`${url}?backend=webgpu`);   // WebGPU even on SwiftShader: the kernels are what is tested
  await page.waitForFunction(() => window.scdd && window.scdd.ready, null, { timeout: 30_000 });

  // Sets a file on an input and waits until the page has finished with it; returns the error
  // message, or null when it succeeded. Also measures how long the main thread took to answer
  // while the worker was busy (a frozen tab would not answer at all).
  async function pick(selector, name) {
    const before = await page.evaluate(() => window.scdd.errors.length + window.scdd.log.length);
    await page.setInputFiles(selector, []);
    const t0 = Date.now();
    await page.setInputFiles(selector, file(name));
    const ping = Date.now();
    await page.evaluate(() => 1);
    const answer = Date.now() - ping;
    await page.waitForFunction((n) => window.scdd.busy === 0 && window.scdd.errors.length + window.scdd.log.length > n, before, { timeout: TIMEOUT });
    const s = await page.evaluate(() => ({ errors: window.scdd.errors, log: window.scdd.log, shown: document.getElementById('error').hidden ? null : document.getElementById('error').textContent }));
    const error = s.errors.length + s.log.length > before && s.errors.length && s.shown ? s.shown : null;
    results.steps.push({ selector, name, ms: Date.now() - t0, main_thread_answer_ms: answer, error });
    return error;
  }
  function expectError(what, got, fragment) {
    if (!got || !got.includes(fragment)) failures.push(`${what}: expected a message containing ${JSON.stringify(fragment)}, got ${JSON.stringify(got)}`);
    results[`error_${what}`] = got;
  }
  function expectOk(what, got) {
    if (got) failures.push(`${what}: ${got}`);
  }

  expectError('corrupted_bundle', await pick('#bundle', 'corrupted.scddg'), 'checksum mismatch');
  expectError('truncated_bundle', await pick('#bundle', 'truncated.scddg'), 'truncated');
  expectError('codes_as_bundle', await pick('#bundle', 'codes.scdd'), 'not a scdd generator bundle');
  expectOk('recipient bundle', await pick('#bundle', 'recipient.scddg'));
  results.bundle = await page.evaluate(() => window.scdd.bundle);
  expectError('other_generator', await pick('#codes', 'other.scdd'), 'made for generator');
  expectOk('decode', await pick('#codes', 'codes.scdd'));
  results.decoded = await page.evaluate(() => { const d = window.scdd.decoded; return { n_cells: d.n_cells, n_genes: d.n_genes, ms: d.ms, cells_per_s: d.cells_per_s }; });
  checkProgress('decode', await page.evaluate(() => window.scdd.fractions), 1);
  await page.evaluate(() => { document.querySelector('details').open = true; });
  await page.fill('#label', 'no_such_column');
  expectError('missing_label', await pick('#test', 'split/test.h5ad'), 'obs has no column "no_such_column"');
  await page.fill('#label', '');
  expectError('few_genes', await pick('#test', 'othergenes.h5ad'), "of the model's");
  expectOk('test cells', await pick('#test', 'split/test.h5ad'));
  results.test = await page.evaluate(() => window.scdd.test.report);

  // The WGSL logistic regression in the browser, the same on the core's CPU solver (wasm), and
  // the MLP where 'auto' puts it (on SwiftShader: the CPU).
  // Trains `evaluator` on `trainOn` from the page's controls; returns the page's evaluation.
  async function train(evaluator, trainOn) {
    await page.selectOption('#evaluator', evaluator);
    await page.selectOption('#train-on', trainOn);
    const n = await page.evaluate(() => window.scdd.log.length);
    await page.click('#train');
    await page.waitForFunction((k) => window.scdd.busy === 0 && (window.scdd.log.length > k || window.scdd.errors.length), n, { timeout: TIMEOUT });
    return page.evaluate(() => window.scdd.evaluation);
  }
  for (const [key, evaluator, trainOn] of [['logistic_webgpu', 'logistic', 'webgpu'], ['logistic_cpu', 'logistic', 'cpu'], ['mlp_auto', 'mlp', 'auto']]) {
    const e = await train(evaluator, trainOn);
    if (!e || e.evaluator !== evaluator) failures.push(`${key}: no evaluation (${JSON.stringify(await page.evaluate(() => window.scdd.errors))})`);
    else results[key] = { accuracy: e.accuracy, macro_f1: e.macro_f1, backend: e.backend, ms: e.ms, train_cells: e.train_cells, test_cells: e.test_cells };
    if (e && e.collapsed) failures.push(`${key}: flagged as collapsed (${JSON.stringify(e.collapsed)})`);
    // The WGSL steps and the MLP report as they go; the L-BFGS at its end.
    checkProgress(key, await page.evaluate(() => window.scdd.fractions), key === 'logistic_cpu' ? 1 : 3);
    if (key === 'logistic_webgpu') await page.screenshot({ path: file('page.png'), fullPage: true });
  }

  for (const [button, name] of [['#dl-h5ad', 'browser.h5ad'], ['#dl-csv', 'browser.csv']]) {
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: TIMEOUT }), page.click(button)]);
    await download.saveAs(file(name));
    results[name] = { suggested: download.suggestedFilename(), bytes: fs.statSync(file(name)).size };
  }

  // A test set of one cell repeated: every call the same class, and the page says so.
  expectOk('one-cell test set', await pick('#test', 'onecell.h5ad'));
  await train('logistic', 'cpu');
  results.collapsed_warning = await page.evaluate(() => document.getElementById('collapsed')?.textContent ?? null);
  if (!results.collapsed_warning || !results.collapsed_warning.includes('Degenerate fit: 100 % of your cells were called')) failures.push(`collapsed fit: no warning on the page (${JSON.stringify(results.collapsed_warning)})`);
} catch (e) {
  failures.push(`the session stopped: ${e.message}`);
  await page.screenshot({ path: file('failure.png'), fullPage: true }).catch(() => {});
}
await ctx.close();
results.failures = failures;
results.console = consoleLines.slice(-40);
fs.writeFileSync(file('results.json'), JSON.stringify(results, null, 2));
console.log(JSON.stringify({ bundle: results.bundle && results.bundle.backend, decoded: results.decoded, logistic_webgpu: results.logistic_webgpu, logistic_cpu: results.logistic_cpu, mlp_auto: results.mlp_auto, failures }, null, 1));
process.exit(failures.length ? 1 : 0);
