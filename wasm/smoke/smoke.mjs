// Headless Chromium (WebGPU on SwiftShader) decodes codes.scdd with bundle.scddg through the
// wasm build and compares the cells with the native decode (native.f32, row-major f32).
// node smoke.mjs URL DIR   (DIR holds native.f32 and receives smoke.png)
import { chromium } from 'playwright-core';
import fs from 'fs';
import os from 'os';
import path from 'path';
const [url, dir] = process.argv.slice(2);
const ctx = await chromium.launchPersistentContext(fs.mkdtempSync(path.join(os.tmpdir(), 'scdd-chromium-')), {
  executablePath: '/usr/bin/chromium', headless: true,
  args: ['--enable-unsafe-webgpu', '--no-sandbox', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await ctx.newPage();
page.on('console', (m) => console.error('console:', m.text()));
await page.goto(url);
await page.waitForFunction(() => window.result !== undefined, null, { timeout: 240000 });
const r = await page.evaluate(() => window.result);
await page.screenshot({ path: path.join(dir, 'smoke.png') });
await ctx.close();
if (r.error) { console.log('ERROR', r.error); process.exit(1); }
const raw = fs.readFileSync(path.join(dir, 'native.f32'));
const native = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);
let worst = 0;
for (let i = 0; i < native.length; i++) worst = Math.max(worst, Math.abs(native[i] - r.cells[i]));
console.log(JSON.stringify({ backend: r.backend, n: r.n, g: r.g, ms: r.ms, worst, bad: r.bad }));
if (native.length !== r.cells.length || !(worst <= 1e-4) || !r.bad.includes('not a scdd generator bundle')) process.exit(1);
