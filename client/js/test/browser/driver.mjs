// driver.mjs drives headless Chromium for e2e/browser_test.go: it reads one
// JSON command per line on stdin and answers each with one JSON line on
// stdout: {"id":N,"ok":true,"value":...} or {"id":N,"ok":false,"error":"..."}.
// What the pages log goes to stderr.
//
// Commands ("page" names a page; each page has its own browser context, so
// its own localStorage, like another user):
//   {"op":"open","page":"a","url":"...","noWebSocket":true}  new page; noWebSocket removes window.WebSocket
//   {"op":"goto","page":"a","url":"..."}   {"op":"reload","page":"a"}
//   {"op":"eval","page":"a","expr":"..."}  the value of a JS expression (awaited)
//   {"op":"wait","page":"a","expr":"...","timeout":ms}  until the expression is truthy; its value
//   {"op":"click","page":"a","selector":"..."}  {"op":"fill","page":"a","selector":"...","text":"..."}
//   {"op":"screenshot","page":"a","path":"...","width":w,"height":h}
//   {"op":"errors","page":"a"}  the page's console errors and uncaught exceptions so far
//   {"op":"quit"}
//
// Environment: COMET_CHROMIUM (default /usr/bin/chromium).
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const browser = await chromium.launch({
  executablePath: process.env.COMET_CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const pages = new Map();
const errors = new Map(); // page name -> console errors and uncaught exceptions

function page(name) {
  const p = pages.get(name);
  if (!p) throw new Error(`no page ${name}`);
  return p;
}

const ops = {
  async open({ page: name, url, noWebSocket, width = 1280, height = 800 }) {
    const ctx = await browser.newContext({ viewport: { width, height } });
    const p = await ctx.newPage();
    p.setDefaultTimeout(20000);
    if (noWebSocket) {
      // As on a network whose proxy blocks WebSocket: comet.js (and the
      // SockJS client) must do without.
      await p.addInitScript(() => { delete window.WebSocket; });
    }
    const errs = [];
    errors.set(name, errs);
    p.on('console', (m) => {
      process.stderr.write(`[${name} console.${m.type()}] ${m.text()}\n`);
      if (m.type() === 'error') errs.push(`console.error: ${m.text()}`);
    });
    p.on('pageerror', (e) => {
      process.stderr.write(`[${name} pageerror] ${e.stack || e}\n`);
      errs.push(`uncaught: ${e.message || e}`);
    });
    pages.set(name, p);
    await p.goto(url, { waitUntil: 'load' });
    return true;
  },
  async goto({ page: name, url }) { await page(name).goto(url, { waitUntil: 'load' }); return true; },
  async reload({ page: name }) { await page(name).reload({ waitUntil: 'load' }); return true; },
  async eval({ page: name, expr }) { return page(name).evaluate(`(async () => (${expr}))()`); },
  async wait({ page: name, expr, timeout = 20000 }) {
    const h = await page(name).waitForFunction(`(${expr})`, null, { timeout, polling: 50 });
    return h.jsonValue();
  },
  async click({ page: name, selector }) { await page(name).click(selector); return true; },
  async fill({ page: name, selector, text }) { await page(name).fill(selector, text); return true; },
  async screenshot({ page: name, path, width, height }) {
    const p = page(name);
    if (width && height) await p.setViewportSize({ width, height });
    await p.screenshot({ path });
    return path;
  },
  async errors({ page: name }) { page(name); return errors.get(name); },
  async quit() { await browser.close(); process.exit(0); },
};

const rl = createInterface({ input: process.stdin });
// Commands run one at a time, in order.
let chain = Promise.resolve();
rl.on('line', (line) => {
  chain = chain.then(async () => {
    let cmd = {};
    try {
      cmd = JSON.parse(line);
      const fn = ops[cmd.op];
      if (!fn) throw new Error(`unknown op ${cmd.op}`);
      const value = await fn(cmd);
      process.stdout.write(JSON.stringify({ id: cmd.id, ok: true, value: value === undefined ? null : value }) + '\n');
    } catch (err) {
      process.stdout.write(JSON.stringify({ id: cmd.id, ok: false, error: String(err && err.message || err) }) + '\n');
    }
  });
});
rl.on('close', () => chain.then(() => browser.close()).then(() => process.exit(0)));
process.stdout.write(JSON.stringify({ id: 0, ok: true, value: 'ready' }) + '\n');
