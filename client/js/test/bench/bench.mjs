// bench.mjs measures how many messages/s one page receives, in headless
// Chromium, from a running comet, while publish.go publishes at a steady
// rate. Not part of the tests; the figures go in docs/benchmarks.md.
//
//   node client/js/test/bench/bench.mjs --url http://127.0.0.1:8080 --mode demo --rate 2000
//   node client/js/test/bench/bench.mjs --url http://127.0.0.1:8080 --mode client --rate 10000
//
// --mode demo: the demo page itself, subscribed to the channel: it receives
//   and renders (a list of the last 300 messages, drawn once per frame).
// --mode client: comet.js alone in a page: a subscription whose handler
//   counts messages and reads each one's send time; nothing is rendered.
// --mode cpu: no server traffic: comet.js in the page is fed 200,000
//   message frames of --size bytes through a fake transport (one message
//   per frame, then 100 per frame, as a gateway batches a burst), to time
//   the client's own work per message. No publisher.
// Run from the repository root (publish.go runs with `go run`).
import { spawn } from 'node:child_process';
import { chromium } from 'playwright-core';
import { parseArgs } from 'node:util';

const { values: a } = parseArgs({
  options: {
    url: { type: 'string', default: 'http://127.0.0.1:8080' },
    mode: { type: 'string', default: 'client' },
    rate: { type: 'string', default: '10000' },
    size: { type: 'string', default: '128' },
    seconds: { type: 'string', default: '10' },
    transport: { type: 'string', default: 'websocket' },
  },
});
const channel = `bench:${a.mode}:${Date.now()}`;
const total = Number(a.rate) * Number(a.seconds);

const browser = await chromium.launch({
  executablePath: process.env.COMET_CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
page.on('pageerror', (e) => console.error('pageerror', e));
if (a.mode === 'cpu') {
  await page.goto(`${a.url}/?channel=demo:idle`);
  const res = await page.evaluate(async (size) => {
    const { Comet } = await import('/comet.js');
    const out = {};
    for (const perFrame of [1, 100]) {
      let h;
      const c = new Comet({ urls: ['ws://fake/ws'], storage: null, createTransport: (n, u, hh) => { h = hh; return { send() {}, close() {} }; } });
      let n = 0;
      c.subscribe('bench', () => { n++; }, { from: 1 });
      await new Promise((r) => setTimeout(r, 10));
      h.message('{"op":"connected","connection":"x"}');
      h.message('{"op":"subscribed","channel":"bench","epoch":"e","recovered":true,"first":1,"next":1}');
      const pad = 'x'.repeat(Math.max(0, size - 40));
      const total = 200000;
      const frames = [];
      for (let i = 1; i <= total; i += perFrame) {
        const lines = [];
        for (let j = i; j < i + perFrame && j <= total; j++) lines.push(`{"op":"message","channel":"bench","offset":${j},"data":{"t":1700000000000,"n":${j},"pad":"${pad}"}}`);
        frames.push(lines.join('\n'));
      }
      const t0 = performance.now();
      for (const f of frames) h.message(f);
      const ms = performance.now() - t0;
      c.close();
      out[`per_frame_${perFrame}`] = { messages: n, ms: Math.round(ms), msgs_per_sec: Math.round(n / ms * 1000), us_per_msg: +(ms * 1000 / n).toFixed(2) };
    }
    return out;
  }, Number(a.size));
  console.log(JSON.stringify({ mode: 'cpu', size: Number(a.size), ...res }));
  await browser.close();
  process.exit(0);
}
if (a.mode === 'demo') {
  await page.goto(`${a.url}/?channel=${channel}&transports=${a.transport}`);
  await page.waitForFunction((ch) => window.cometDemo?.subscribed[ch], channel);
  // The demo's handler keeps counts; read send times from its list too.
  await page.evaluate((ch) => {
    window.bench = { lat: [], frames: 0 };
    const frame = () => { bench.frames++; requestAnimationFrame(frame); };
    requestAnimationFrame(frame);
    cometDemo.comet.on(`channel:${ch}`, (m) => { if (m.offset % 10 === 0) bench.lat.push(Date.now() - m.data.t); });
  }, channel);
} else {
  await page.goto(`${a.url}/?channel=demo:idle`);
  await page.evaluate(async ({ ch, transport }) => {
    const { Comet } = await import('/comet.js');
    const c = new Comet({ urls: ['/ws'], storage: null, transports: [transport] });
    window.bench = { n: 0, bytes: 0, lat: [], last: 0, gaps: 0 };
    const sub = c.subscribe(ch, (m) => {
      bench.n++;
      if (m.offset !== bench.last + 1 && bench.last) bench.gaps++;
      bench.last = m.offset;
      if (m.offset % 10 === 0) bench.lat.push(Date.now() - m.data.t);
    });
    await sub.ready;
  }, { ch: channel, transport: a.transport });
}
const count = a.mode === 'demo'
  ? () => page.evaluate(() => ({ n: cometDemo.stats.received, rendered: cometDemo.stats.rendered }))
  : () => page.evaluate(() => ({ n: bench.n }));

const wsUrl = a.url.replace(/^http/, 'ws') + '/ws';
const pub = spawn('go', ['run', './client/js/test/bench/publish.go', '--url', wsUrl, '--channel', channel,
  '--rate', a.rate, '--size', a.size, '--duration', `${a.seconds}s`], { stdio: ['ignore', 'pipe', 'inherit'] });
let pubOut = '';
pub.stdout.on('data', (d) => { pubOut += d; });
const pubDone = new Promise((r) => pub.on('exit', r));

// Sample the page's count every second until it has everything (or stalls).
const samples = [];
let first = null;
let stalled = 0;
for (;;) {
  await new Promise((r) => setTimeout(r, 1000));
  const s = { at: Date.now(), ...(await count()) };
  samples.push(s);
  if (!first && s.n > 0) first = samples.at(-2) || s;
  if (s.n >= total) break;
  stalled = samples.length > 1 && s.n === samples.at(-2).n ? stalled + 1 : 0;
  if (stalled >= 10) break;
}
await pubDone;
const last = samples.at(-1);
const lat = (await page.evaluate(() => bench.lat)).sort((x, y) => x - y);
const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
const extra = a.mode === 'client' ? await page.evaluate(() => ({ gaps: bench.gaps }))
  : { rendered: last.rendered, fps: Math.round((await page.evaluate(() => bench.frames)) / ((last.at - samples[0].at) / 1000 + 1)) };
const perSecond = samples.slice(1).map((s, i) => s.n - samples[i].n);
console.log(JSON.stringify({
  mode: a.mode, transport: a.transport, offered_rate: Number(a.rate), size: Number(a.size), seconds: Number(a.seconds),
  publisher: JSON.parse(pubOut || '{}'), received: last.n, expected: total, ...extra,
  receive_rate: Math.round((last.n - (first?.n || 0)) / ((last.at - (first?.at || last.at)) / 1000 || 1)),
  per_second: perSecond, latency_ms: { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: lat.at(-1) },
}));
await browser.close();
