// Unit tests of comet.js's logic, with a fake clock and fake transports:
// node --test test/unit/
import test from 'node:test';
import assert from 'node:assert/strict';
import { Comet, Backoff, splitFrame, expandUrls, sockjsUrlFor, socketioUrlFor, autoReconnect, tokenExpiry } from '../../comet.js';
import { FakeClock, FakeNet, FakeStorage, settle } from './fakes.mjs';

// newClient returns a client on two fake gateways whose jitter is always
// the longest delay (random close to 1) unless told otherwise.
function newClient(opts = {}) {
  const clock = new FakeClock();
  const net = new FakeNet();
  const storage = opts.storage || new FakeStorage();
  const c = new Comet({
    urls: ['ws://a.test/ws', 'ws://b.test/ws'], clock, random: () => 0, storage,
    createTransport: (n, u, h) => net.create(n, u, h), autoOpen: false, ...opts,
  });
  const events = [];
  for (const ev of ['state', 'open', 'close', 'reconnect', 'lost', 'error', 'auth', 'direct']) c.on(ev, (x) => events.push([ev, x]));
  return { c, clock, net, storage, events };
}

// top is a random source that picks the first URL, then always the
// longest delay of the backoff.
function top() {
  let calls = 0;
  return () => (calls++ === 0 ? 0 : 0.9999999);
}

// connect opens c and lets the gateway say "connected" on the transport.
async function connect(env, id = 'c1') {
  env.c.open();
  await settle();
  const conn = env.net.last();
  conn.connected(id);
  return conn;
}

test('splitFrame splits on newlines and skips blank and bad lines', () => {
  const bad = [];
  const got = splitFrame('{"op":"message","offset":1}\n\n{"op":"message","offset":2}\r\nnot json\n[1]\n', (b) => bad.push(b));
  assert.deepEqual(got.map((f) => f.offset), [1, 2]);
  assert.deepEqual(bad, ['not json', '[1]']);
});

test('Backoff: full jitter under a ceiling that doubles up to max', () => {
  const top = new Backoff(100, 1000, () => 0.9999999);
  assert.deepEqual(Array.from({ length: 7 }, () => top.next()), [100, 200, 400, 800, 1000, 1000, 1000]);
  top.reset();
  assert.equal(top.next(), 100);
  const low = new Backoff(100, 1000, () => 0);
  assert.equal(low.next(), 0);
});

test('URLs: relative, http, {workerIndex} patterns, SockJS derived', () => {
  assert.deepEqual(expandUrls('/ws', 1, 'https://example.com/app/'), ['wss://example.com/ws']);
  assert.deepEqual(expandUrls(['http://h:1/ws?token=x'], 1, undefined), ['ws://h:1/ws?token=x']);
  assert.deepEqual(expandUrls('wss://gw{workerIndex}.example.com/ws', 3), ['wss://gw0.example.com/ws', 'wss://gw1.example.com/ws', 'wss://gw2.example.com/ws']);
  assert.equal(sockjsUrlFor('ws://h:1/ws?token=x'), 'http://h:1/sockjs?token=x');
  assert.equal(sockjsUrlFor('wss://h/app/ws'), 'https://h/app/sockjs');
  assert.throws(() => sockjsUrlFor('ws://h/socket'), /sockjsUrls/);
  assert.equal(socketioUrlFor('ws://h:1/ws?token=x'), 'http://h:1/socket.io/?token=x');
  assert.equal(socketioUrlFor('wss://h/app/ws'), 'https://h/app/socket.io/');
  assert.throws(() => socketioUrlFor('ws://h/socket'), /socketioUrls/);
  const c = new Comet({ urls: 'ws://gw{workerIndex}/ws', workersCount: 2, autoOpen: false, storage: null, createTransport() {} });
  assert.deepEqual(c.sockjsUrls, ['http://gw0/sockjs', 'http://gw1/sockjs']);
});

test('reconnect schedule: backoff with jitter, reset after a stable connection, rotation on 4001', async () => {
  const env = newClient({ random: top(), transports: ['websocket'], minRetry: 100, maxRetry: 800 });
  const { c, clock, net, events } = env;
  let conn = await connect(env);
  assert.equal(c.state, 'open');
  assert.equal(conn.url, 'ws://a.test/ws');
  // A drop: reconnect to the same gateway after at most minRetry.
  conn.drop(1006);
  assert.equal(c.state, 'reconnecting');
  const delays = () => events.filter(([e]) => e === 'reconnect').map(([, x]) => x.delay);
  assert.deepEqual(delays(), [100]);
  clock.tick(99);
  await settle();
  assert.equal(net.conns.length, 1);
  clock.tick(1);
  await settle();
  assert.equal(net.conns.length, 2);
  assert.equal(net.last().url, 'ws://a.test/ws');
  // Failed attempts (no "connected"): the next URL each time, delays
  // doubling up to maxRetry.
  for (let i = 0; i < 4; i++) {
    net.last().drop(1006);
    clock.tick(delays().at(-1));
    await settle();
  }
  assert.deepEqual(delays(), [100, 200, 400, 800, 800]);
  assert.deepEqual(net.conns.map((x) => x.url.slice(5, 6)), ['a', 'a', 'b', 'a', 'b', 'a']);
  // Connected for a while, then a drop: the backoff starts again.
  net.last().connected('c2');
  clock.tick(6000);
  net.last().drop(1006);
  assert.equal(delays().at(-1), 100);
  clock.tick(100);
  await settle();
  // 4001 (shutting down): the next gateway.
  conn = net.last();
  conn.connected('c3');
  conn.drop(4001, 'shutting down');
  clock.tick(200);
  await settle();
  assert.notEqual(net.last().url, conn.url);
  // close() stops reconnecting.
  net.last().drop(1006);
  c.close();
  clock.tick(10000);
  await settle();
  assert.equal(c.state, 'closed');
  assert.equal(net.conns.length, 8);
  assert.deepEqual(events.filter(([e]) => e === 'state').map(([, s]) => s).slice(0, 4), ['connecting', 'open', 'reconnecting', 'open']);
});

test('offline: waits for the browser to be online, then retries at once', async () => {
  const nav = Object.getOwnPropertyDescriptor(globalThis, 'navigator');
  const win = new EventTarget();
  globalThis.window = win;
  globalThis.document = Object.assign(new EventTarget(), { visibilityState: 'visible' });
  Object.defineProperty(globalThis, 'navigator', { value: { onLine: true }, configurable: true });
  try {
    const env = newClient({ transports: ['websocket'], maxRetry: 30000 });
    const { c, clock, net, events } = env;
    const conn = await connect(env);
    globalThis.navigator.onLine = false;
    conn.drop(1006);
    assert.equal(events.filter(([e]) => e === 'reconnect').at(-1)[1].offline, true);
    clock.tick(5000);
    await settle();
    assert.equal(net.conns.length, 1, 'no attempt while offline');
    globalThis.navigator.onLine = true;
    win.dispatchEvent(new Event('online'));
    await settle();
    assert.equal(net.conns.length, 2, 'an attempt as soon as online');
    net.last().connected('c2');
    assert.equal(c.state, 'open');
    c.close();
  } finally {
    delete globalThis.window;
    delete globalThis.document;
    if (nav) Object.defineProperty(globalThis, 'navigator', nav); else delete globalThis.navigator;
  }
});

test('WebSocket blocked: falls back to SockJS on the same gateway, and keeps using it', async () => {
  const env = newClient({ random: top() });
  const { c, clock, net } = env;
  net.refuse.add('websocket');
  c.open();
  await settle();
  await settle();
  assert.equal(net.last().name, 'sockjs');
  assert.equal(net.last().url, 'http://a.test/sockjs');
  net.last().connected();
  assert.equal(c.transport, 'sockjs');
  net.last().drop(1006);
  clock.tick(100);
  await settle();
  assert.equal(net.last().name, 'sockjs', 'the transport that worked is tried first');
  // A WebSocket that opens but never says "connected" is dropped after
  // connectTimeout and SockJS tried.
  const env2 = newClient({ connectTimeout: 3000 });
  env2.c.open();
  await settle();
  assert.equal(env2.net.last().name, 'websocket');
  env2.clock.tick(3000);
  await settle();
  assert.equal(env2.net.conns[0].closed.code, 4000);
  assert.equal(env2.net.last().name, 'sockjs');
  assert.equal(env2.c.state, 'connecting');
});

test('resume: from the stored position, duplicates dropped, resubscribe after a drop', async () => {
  const storage = new FakeStorage();
  storage.setItem('comet:pos:chat', JSON.stringify({ offset: 4, epoch: 'E1' }));
  const env = newClient({ storage });
  const { c, clock, net } = env;
  const got = [];
  const sub = c.subscribe('chat', (m) => got.push([m.offset, m.replayed]));
  const chatEvents = [];
  c.on('channel:chat', (m) => chatEvents.push(m.offset));
  let conn = await connect(env);
  let [s] = conn.frames('subscribe');
  assert.deepEqual([s.channel, s.from, s.epoch], ['chat', 5, 'E1']);
  conn.push({ op: 'subscribed', id: s.id, channel: 'chat', epoch: 'E1', recovered: true, first: 1, next: 7 },
    { op: 'message', channel: 'chat', offset: 4, data: 'old' }, // at or below the position: dropped
    { op: 'message', channel: 'chat', offset: 5, data: 'a' }, { op: 'message', channel: 'chat', offset: 6, data: 'b' });
  conn.push({ op: 'message', channel: 'chat', offset: 7, data: 'c' }, { op: 'message', channel: 'chat', offset: 6, data: 'b' });
  assert.deepEqual(got, [[5, true], [6, true], [7, false]]);
  assert.deepEqual(chatEvents, [5, 6, 7]);
  assert.equal(sub.last, 7);
  assert.deepEqual((await sub.ready).recovered, true);
  // Saved to storage within saveDelay.
  clock.tick(100);
  assert.deepEqual(JSON.parse(storage.getItem('comet:pos:chat')), { offset: 7, epoch: 'E1' });
  // A drop: resubscribe from 8; a replay that overlaps is cut.
  conn.drop(4002, 'slow consumer');
  clock.tick(1000);
  await settle();
  conn = net.last();
  conn.connected('c2');
  [s] = conn.frames('subscribe');
  assert.deepEqual([s.from, s.epoch], [8, 'E1']);
  conn.push({ op: 'subscribed', id: s.id, channel: 'chat', epoch: 'E1', recovered: true, first: 1, next: 9 },
    { op: 'message', channel: 'chat', offset: 7, data: 'c' }, { op: 'message', channel: 'chat', offset: 8, data: 'd' });
  assert.deepEqual(got.map(([o]) => o), [5, 6, 7, 8]);
  // A new client on the same storage (a page reload) resumes after 8.
  c.close();
  const env2 = newClient({ storage });
  env2.c.subscribe('chat', () => {});
  const conn2 = await connect(env2);
  assert.equal(conn2.frames('subscribe')[0].from, 9);
});

test('resume: recovered:false is told, and the position moves to what exists', async () => {
  const env = newClient();
  const { c, clock, net, events } = env;
  const got = [];
  const infos = [];
  c.subscribe('feed', (m) => got.push(m.offset), { from: 3, epoch: 'E1', onSubscribed: (i) => infos.push(i) });
  let conn = await connect(env);
  let [s] = conn.frames('subscribe');
  assert.deepEqual([s.from, s.epoch], [3, 'E1']);
  // Retention trimmed 3..9.
  conn.push({ op: 'subscribed', id: s.id, channel: 'feed', epoch: 'E1', recovered: false, first: 10, next: 12 },
    { op: 'message', channel: 'feed', offset: 10, data: 1 }, { op: 'message', channel: 'feed', offset: 11, data: 1 });
  assert.deepEqual(got, [10, 11]);
  assert.deepEqual(infos[0].lost, { from: 3, to: 9, epochChanged: false });
  assert.equal(events.filter(([e]) => e === 'lost').length, 1);
  // The channel is reset (new epoch): the replay starts at its first.
  conn.drop(4004, 'resync');
  clock.tick(1000);
  await settle();
  conn = net.last();
  conn.connected();
  [s] = conn.frames('subscribe');
  assert.deepEqual([s.from, s.epoch], [12, 'E1']);
  conn.push({ op: 'subscribed', id: s.id, channel: 'feed', epoch: 'E2', recovered: false, first: 1, next: 3 },
    { op: 'message', channel: 'feed', offset: 1, data: 1 }, { op: 'message', channel: 'feed', offset: 2, data: 1 });
  assert.deepEqual(got, [10, 11, 1, 2]);
  assert.deepEqual(infos[1].lost, { from: 12, to: null, epochChanged: true });
  assert.equal(c.position('feed').epoch, 'E2');
});

test('live-only subscription resumes after a drop from what was next', async () => {
  const env = newClient();
  const { c, clock, net } = env;
  c.subscribe('live', () => {});
  let conn = await connect(env);
  let [s] = conn.frames('subscribe');
  assert.equal(s.from, undefined);
  conn.push({ op: 'subscribed', id: s.id, channel: 'live', epoch: 'E', recovered: true, first: 1, next: 50 });
  conn.drop(1006);
  clock.tick(1000);
  await settle();
  conn = net.last();
  conn.connected();
  [s] = conn.frames('subscribe');
  assert.deepEqual([s.from, s.epoch], [50, 'E']);
});

test('publish: queued until connected, retried with the same id across reconnects and errors, once acknowledged', async () => {
  const env = newClient({ requestTimeout: 5000, random: top() });
  const { c, clock, net } = env;
  const p1 = c.publish('chat', { text: 'hi' }, { id: 'k1' });
  const p2 = c.publish('chat', 'two');
  let conn = await connect(env);
  const sent = conn.frames('publish');
  assert.deepEqual(sent.map((f) => f.id).slice(0, 1), ['k1']);
  assert.equal(sent.length, 2);
  // Dropped before the ack: both sent again, same ids, same order.
  conn.drop(1006);
  clock.tick(100);
  await settle();
  conn = net.last();
  conn.connected('c2');
  assert.deepEqual(conn.frames('publish').map((f) => f.id), sent.map((f) => f.id));
  // unavailable: sent again after a backoff; timeout of the ack: sent again.
  conn.push({ op: 'error', id: 'k1', code: 'unavailable', message: 'no leader' });
  clock.tick(100);
  assert.equal(conn.frames('publish').filter((f) => f.id === 'k1').length, 2);
  conn.push({ op: 'ack', id: 'k1', channel: 'chat', offset: 41, epoch: 'E' });
  conn.push({ op: 'ack', id: 'k1', channel: 'chat', offset: 41, epoch: 'E' }); // a second ack: ignored
  assert.deepEqual(await p1, { channel: 'chat', offset: 41, epoch: 'E', duplicate: false });
  clock.tick(5000);
  assert.equal(conn.frames('publish').filter((f) => f.id === sent[1].id).length, 2, 'resent when no answer in requestTimeout');
  conn.push({ op: 'error', id: sent[1].id, code: 'too_large', message: 'no' });
  await assert.rejects(p2, (e) => e.code === 'too_large');
  // Bad input fails at once; close() fails what is pending.
  await assert.rejects(c.publish('bad name!', 1), /bad channel name/);
  await assert.rejects(c.publish('chat', null), /not null/);
  const p3 = c.publish('chat', 3);
  c.close();
  await assert.rejects(p3, (e) => e.code === 'closed');
});

test('request: the protocol frame, times out, fails when the connection drops', async () => {
  const env = newClient({ requestTimeout: 2000 });
  const { c, clock } = env;
  const conn = await connect(env);
  const r1 = c.request('todo.add', { title: 'x' });
  const [f] = conn.frames('request');
  assert.deepEqual(Object.keys(f).sort(), ['data', 'id', 'op', 'route']);
  assert.deepEqual([f.route, f.data.title], ['todo.add', 'x']);
  conn.push({ op: 'response', id: f.id, data: { ok: true } });
  assert.deepEqual(await r1, { ok: true });
  const r2 = c.request('slow', 1);
  clock.tick(2000);
  await assert.rejects(r2, (e) => e.code === 'timeout');
  const r3 = c.request('x', 1);
  const r4 = c.request('y', 1);
  const id4 = conn.frames('request').at(-1).id;
  conn.push({ op: 'error', id: id4, code: 'not_found', message: 'no worker serves y' });
  await assert.rejects(r4, (e) => e.code === 'not_found');
  conn.drop(1006);
  await assert.rejects(r3, (e) => e.code === 'unavailable');
  c.close();
});

test('events: beforeSend may change frames; message sees every object; first frame must be connected', async () => {
  const env = newClient();
  const { c, net } = env;
  c.on('beforeSend', (f) => { if (f.op === 'subscribe') f.token = 't'; });
  const seen = [];
  c.on('message', (f) => seen.push(f.op));
  c.subscribe('a', () => {});
  const conn = await connect(env);
  assert.equal(conn.frames('subscribe')[0].token, 't');
  conn.push({ op: 'pong' }, { op: 'unknown' });
  assert.deepEqual(seen, ['connected', 'pong', 'unknown']);
  // A gateway that does not start with connected is dropped.
  conn.drop(1006);
  env.clock.tick(1000);
  await settle();
  net.last().push({ op: 'message', channel: 'a', offset: 1 });
  assert.equal(net.last().closed.code, 4000);
  c.close();
});

test('reconnect(): drops and resumes; unsubscribe; plugins are installed on open and torn down on close', async () => {
  const calls = [];
  const plugin = { name: 'spy', install(comet) { calls.push('install'); const off = comet.on('open', () => calls.push('open')); return () => { off(); calls.push('teardown'); }; } };
  const env = newClient({ plugins: [plugin] });
  const { c, clock, net } = env;
  const sub = c.subscribe('x', () => {});
  let conn = await connect(env);
  conn.push({ op: 'subscribed', id: conn.frames('subscribe')[0].id, channel: 'x', epoch: 'E', recovered: true, first: 1, next: 1 },
    { op: 'message', channel: 'x', offset: 1, data: 1 });
  c.reconnect({ delay: 2000 });
  assert.equal(conn.closed.code, 4000);
  clock.tick(1999);
  await settle();
  assert.equal(net.conns.length, 1, 'waits the delay asked');
  clock.tick(1);
  await settle();
  conn = net.last();
  conn.connected('c2');
  assert.equal(conn.frames('subscribe')[0].from, 2);
  const un = sub.unsubscribe();
  const [u] = conn.frames('unsubscribe');
  conn.push({ op: 'unsubscribed', id: u.id, channel: 'x' });
  await un;
  c.close();
  assert.deepEqual(calls, ['install', 'open', 'open', 'teardown']);
  assert.equal(typeof autoReconnect().install, 'function');
});

test('keep-alive: pings, and drops a connection that does not answer between two pings', async () => {
  const env = newClient({ pingInterval: 25000, transports: ['websocket'] });
  const { c, clock, net } = env;
  const conn = await connect(env);
  clock.tick(25000);
  assert.equal(conn.frames('ping').length, 1);
  conn.push({ op: 'pong' });
  clock.tick(25000);
  assert.equal(conn.frames('ping').length, 2);
  assert.equal(conn.closed, null, 'answered: still up');
  clock.tick(25000);
  assert.equal(conn.closed.code, 4000, 'no answer: dropped');
  assert.equal(c.state, 'reconnecting');
  clock.tick(100);
  await settle();
  assert.equal(net.conns.length, 2);
  c.close();
});

// jwt returns an unsigned JWT for sub, expiring at exp (seconds; none if
// undefined).
const b64u = (s) => Buffer.from(s).toString('base64url');
const jwt = (sub, exp) => `${b64u('{"alg":"HS256","typ":"JWT"}')}.${b64u(JSON.stringify(exp === undefined ? { sub } : { sub, exp }))}.sig`;
const of = (events, name) => events.filter(([e]) => e === name).map(([, x]) => x);

test('tokenExpiry reads exp without verifying', () => {
  assert.equal(tokenExpiry(jwt('a', 1732540000.25)), 1732540000250);
  assert.equal(tokenExpiry(jwt('a')), 0);
  assert.equal(tokenExpiry('opaque'), 0);
  assert.equal(tokenExpiry('a.%%%.c'), 0);
  assert.equal(tokenExpiry(`a.${b64u('{"exp":"soon"}')}.c`), 0);
  assert.equal(tokenExpiry(`a.${Buffer.from('{"exp":1}').toString('base64')}.c`), 1000);
});

test('token: a connect frame first, nothing else before connected, the user, refreshed before it expires', async () => {
  let calls = 0;
  const env = newClient({ pingInterval: 1e9, token: async () => { calls++; return jwt('alice', (env.clock.now() + 60000) / 1000); } });
  const { c, clock, net, events } = env;
  c.subscribe('chat', () => {});
  const p1 = c.publish('chat', 1, { id: 'k1' });
  c.open();
  await settle();
  const conn = net.last();
  assert.equal(conn.url, 'ws://a.test/ws', 'no token in the URL');
  assert.deepEqual(conn.sent, [], 'nothing before the transport is open');
  conn.open();
  assert.deepEqual(conn.frames().map((f) => f.op), ['connect']);
  assert.equal(tokenExpiry(conn.frames()[0].token), 60000);
  assert.ok(conn.frames()[0].id);
  clock.tick(5000);
  // A gateway that lets anonymous clients in says connected at once: not
  // the answer to the token.
  conn.push({ op: 'connected', connection: 'c1' });
  assert.equal(c.state, 'connecting');
  assert.deepEqual(conn.frames().map((f) => f.op), ['connect'], 'still nothing before the answer');
  conn.connected('c1', 'alice');
  assert.deepEqual(conn.frames().map((f) => f.op), ['connect', 'subscribe', 'publish']);
  assert.equal(c.user, 'alice');
  assert.equal(of(events, 'open')[0].user, 'alice');
  conn.push({ op: 'ack', id: 'k1', channel: 'chat', offset: 1 });
  await p1;
  // At 80% of the remaining lifetime (55 s left at 5 s: at 49 s), a fresh
  // token on the same connection.
  clock.tick(43999);
  await settle();
  assert.equal(calls, 1);
  clock.tick(1);
  await settle();
  assert.equal(calls, 2);
  const [, fresh] = conn.frames('connect');
  assert.equal(tokenExpiry(fresh.token), 109000);
  assert.ok(fresh.id);
  conn.push({ op: 'connected', id: fresh.id, connection: 'c1', user: 'alice' });
  assert.equal(conn.closed, null);
  assert.equal(c.state, 'open');
  // And again at 80% of the new token's lifetime.
  clock.tick(48000);
  await settle();
  assert.equal(conn.frames('connect').length, 3);
  assert.deepEqual(of(events, 'auth'), []);
  // A refused refresh: the error answers it, then the close.
  conn.push({ op: 'error', id: conn.frames('connect')[2].id, code: 'forbidden', message: 'invalid token' });
  conn.drop(4006, 'invalid token');
  assert.equal(of(events, 'auth')[0].message, 'forbidden: invalid token');
  assert.equal(c.user, null);
  c.close();
});

test('token refused: the auth event, no SockJS fallback, the same gateway after a backoff, a new token', async () => {
  const tokens = ['bad', jwt('bob')];
  let calls = 0;
  const env = newClient({ random: top(), token: () => tokens[calls++] });
  const { c, clock, net, events } = env;
  c.open();
  await settle();
  let conn = net.last();
  conn.open();
  assert.equal(conn.frames('connect')[0].token, 'bad');
  conn.push({ op: 'error', code: 'forbidden', message: 'invalid token' });
  assert.equal(conn.closed, null, 'an error frame before connected waits for the close');
  conn.drop(4006, 'invalid token');
  const [auth] = of(events, 'auth');
  assert.deepEqual([auth.code, auth.message], ['forbidden', 'forbidden: invalid token']);
  assert.equal(of(events, 'error')[0].code, 'forbidden');
  assert.equal(net.conns.length, 1, 'no SockJS attempt: the transport worked');
  assert.deepEqual(of(events, 'reconnect').map((x) => x.delay), [100]);
  clock.tick(100);
  await settle();
  conn = net.last();
  assert.deepEqual([conn.name, conn.url, calls], ['websocket', 'ws://a.test/ws', 2]);
  conn.open();
  conn.connected('c2', 'bob');
  assert.equal(c.state, 'open');
  assert.equal(c.user, 'bob');
  c.close();
});

test('token function failing: error and auth events, retried with backoff, no transport meanwhile', async () => {
  let calls = 0;
  const boom = new Error('auth server down');
  const env = newClient({ random: top(), token: async () => { if (++calls <= 3) throw boom; return 'tok'; } });
  const { c, clock, net, events } = env;
  c.open();
  await settle();
  for (const delay of [100, 200, 400]) {
    assert.equal(of(events, 'reconnect').at(-1).delay, delay);
    clock.tick(delay);
    await settle();
  }
  assert.equal(calls, 4);
  assert.equal(net.conns.length, 1, 'a transport only once there is a token');
  assert.equal(net.last().url, 'ws://a.test/ws', 'not a gateway failure: the same URL');
  const auths = of(events, 'auth');
  assert.equal(auths.length, 3);
  assert.deepEqual([auths[0].code, auths[0].cause], ['token', boom]);
  assert.equal(of(events, 'error').length, 3);
  net.last().open();
  assert.equal(net.last().frames('connect')[0].token, 'tok');
  net.last().connected();
  assert.equal(c.state, 'open');
  assert.equal(c.user, null, 'no user in connected');
  c.close();
});

test('token: a token living longer than setTimeout can wait (24.8 days) is not refreshed in a loop', async () => {
  const day = 24 * 3600 * 1000;
  let calls = 0;
  const env = newClient({ pingInterval: 3600 * 1000, token: async () => { calls++; return jwt('alice', (env.clock.now() + 60 * day) / 1000); } });
  const { c, clock, net } = env;
  c.open();
  await settle();
  const conn = net.last();
  conn.open();
  conn.connected('c1', 'alice');
  for (let i = 0; i < 50; i++) { clock.tick(10); await settle(); }
  assert.equal(calls, 1, 'no refresh long before 80% of 60 days');
  assert.equal(conn.frames('connect').length, 1);
  // At 80% (48 days), one refresh. The gateway answers every hourly ping.
  for (let h = 0; h < 48 * 24; h++) {
    clock.tick(3600 * 1000);
    conn.push({ op: 'pong' });
    await settle();
  }
  assert.equal(conn.closed, null);
  assert.equal(calls, 2);
  assert.equal(conn.frames('connect').length, 2);
});

test('token expiry: a string token is never refreshed; a failed refresh is retried until expiry; 4006 reconnects', async () => {
  const env = newClient({ random: top(), token: jwt('carol', 30) });
  const { c, clock, net, events } = env;
  c.subscribe('chat', () => {});
  c.open();
  await settle();
  let conn = net.last();
  conn.open();
  conn.connected('c1', 'carol');
  const [s] = conn.frames('subscribe');
  conn.push({ op: 'subscribed', id: s.id, channel: 'chat', epoch: 'E', recovered: true, first: 1, next: 3 });
  clock.tick(29999);
  await settle();
  assert.equal(conn.frames('connect').length, 1, 'a string cannot be refreshed');
  conn.push({ op: 'error', code: 'forbidden', message: 'token expired' });
  conn.drop(4006, 'token expired');
  assert.equal(of(events, 'auth')[0].message, 'forbidden: token expired');
  assert.equal(c.user, null);
  clock.tick(100);
  await settle();
  conn = net.last();
  conn.open();
  conn.connected('c2', 'carol');
  assert.equal(conn.frames('connect')[0].token, jwt('carol', 30));
  assert.deepEqual(conn.frames('subscribe')[0].from, 3, 'resumed');
  c.close();

  // A token function that fails to refresh: retried with backoff, but not
  // past the expiry.
  let calls = 0;
  const env2 = newClient({ random: top(), pingInterval: 1e9, token: async () => { if (calls++) throw new Error('down'); return jwt('dave', 10); } });
  env2.c.open();
  await settle();
  env2.net.last().open();
  env2.net.last().connected('c1', 'dave');
  for (let t = 0; t < 10000; t += 50) {
    env2.clock.tick(50);
    await settle();
  }
  // At 8 s, then after 100, 200, 400 and 800 ms; the next, 1600 ms later,
  // would be past the expiry at 10 s.
  assert.equal(calls, 6);
  assert.equal(env2.clock.pending().length, 1, 'only the ping timer is left');
  assert.ok(of(env2.events, 'error').every((e) => e.code === 'token'));
  assert.equal(env2.net.last().frames('connect').length, 1);
  env2.c.close();
});

test('direct messages: the direct event, without channel or offset', async () => {
  const env = newClient();
  const { c, events } = env;
  const got = [];
  c.subscribe('chat', (m) => got.push(m));
  const conn = await connect(env);
  conn.push({ op: 'message', data: { text: 'for you' } });
  assert.deepEqual(of(events, 'direct'), [{ text: 'for you' }]);
  assert.deepEqual(got, []);
  assert.deepEqual(of(events, 'error'), []);
  c.close();
});

// ids returns the ids of conn's publish frames, in order.
const pubIds = (conn) => conn.frames('publish').map((f) => f.id);
const idRange = (from, to) => Array.from({ length: to - from }, (_, i) => `id-${from + i}`);

test('publish window: 1,000 in flight with a window of 64, sent in call order, never more than 64 unanswered', async () => {
  const env = newClient({ maxPublishesInFlight: 64 });
  const conn = await connect(env);
  const { c } = env;
  const results = new Map();
  const all = Array.from({ length: 1000 }, (_, i) => c.publish('chat', { n: i }, { id: `id-${i}` })
    .then((ack) => { assert.ok(!results.has(i), 'settled twice'); results.set(i, ack); }));
  assert.deepEqual(pubIds(conn), idRange(0, 64));
  // Ack the outstanding ones a few at a time, in a scrambled order.
  const acked = new Set();
  let offset = 0;
  for (let round = 0; round < 1000 && acked.size < 1000; round++) {
    const out = pubIds(conn).filter((id) => !acked.has(id));
    assert.ok(out.length <= 64, `${out.length} publishes unanswered`);
    assert.ok(out.length > 0);
    const pick = out.filter((_, i) => i % 3 === round % 3).slice(0, 7);
    for (const id of (pick.length ? pick : out.slice(0, 1))) {
      acked.add(id);
      conn.push({ op: 'ack', id, channel: 'chat', offset: ++offset });
    }
  }
  await Promise.all(all);
  assert.equal(results.size, 1000);
  assert.deepEqual(pubIds(conn), idRange(0, 1000), 'every publish sent once, in call order');
  assert.deepEqual(conn.frames('publish').slice(0, 3).map((f) => f.data.n), [0, 1, 2]);
});

test('publish window: a drop mid-window sends the unacknowledged ones again, in order, same ids, before any new one', async () => {
  const env = newClient({ maxPublishesInFlight: 64, random: top() });
  const { c, clock, net } = env;
  let conn = await connect(env);
  const settled = new Map();
  const all = Array.from({ length: 200 }, (_, i) => c.publish('chat', i, { id: `id-${i}` })
    .then((ack) => { assert.ok(!settled.has(i), 'settled twice'); settled.set(i, ack); }));
  for (let i = 0; i < 20; i++) conn.push({ op: 'ack', id: `id-${i}`, channel: 'chat', offset: i + 1 });
  assert.deepEqual(pubIds(conn), idRange(0, 84));
  await settle();
  assert.equal(settled.size, 20);
  conn.drop(1006);
  const late = c.publish('chat', 'late', { id: 'late' }); // made while disconnected: after the others
  clock.tick(100);
  await settle();
  conn = net.last();
  conn.connected('c2');
  assert.deepEqual(pubIds(conn), idRange(20, 84), 'exactly the unacknowledged ones, in call order');
  // The gateway had stored them: their acks say duplicate.
  for (let i = 20; i < 84; i++) conn.push({ op: 'ack', id: `id-${i}`, channel: 'chat', offset: i + 1, duplicate: true });
  for (let i = 84; i < 200; i++) conn.push({ op: 'ack', id: `id-${i}`, channel: 'chat', offset: i + 1 });
  assert.deepEqual(pubIds(conn), [...idRange(20, 200), 'late']);
  conn.push({ op: 'ack', id: 'late', channel: 'chat', offset: 201 });
  await Promise.all(all);
  assert.deepEqual(await late, { channel: 'chat', offset: 201, epoch: '', duplicate: false });
  for (let i = 0; i < 200; i++) {
    assert.deepEqual(settled.get(i), { channel: 'chat', offset: i + 1, epoch: '', duplicate: i >= 20 && i < 84 });
  }
});

test('publish window: a retried or timed-out publish keeps the count right; close fails the queued ones', async () => {
  const env = newClient({ maxPublishesInFlight: 2, requestTimeout: 5000, random: top() });
  const { c, clock } = env;
  const conn = await connect(env);
  const p1 = c.publish('chat', 1, { id: 'a' });
  const p2 = c.publish('chat', 2, { id: 'b' });
  const p3 = c.publish('chat', 3, { id: 'c', timeout: 1000 });
  const p4 = c.publish('chat', 4, { id: 'd' });
  assert.deepEqual(pubIds(conn), ['a', 'b']);
  // unavailable: still in flight, sent again after a backoff; nothing new goes.
  conn.push({ op: 'error', id: 'a', code: 'unavailable', message: 'no leader' });
  clock.tick(100);
  assert.deepEqual(pubIds(conn), ['a', 'b', 'a']);
  // c times out while waiting its turn: it is never sent.
  clock.tick(900);
  await assert.rejects(p3, (e) => e.code === 'timeout');
  conn.push({ op: 'error', id: 'b', code: 'forbidden', message: 'no' });
  await assert.rejects(p2, (e) => e.code === 'forbidden');
  assert.deepEqual(pubIds(conn), ['a', 'b', 'a', 'd']);
  conn.push({ op: 'ack', id: 'a', channel: 'chat', offset: 1 });
  assert.equal((await p1).offset, 1);
  const p5 = c.publish('chat', 5, { id: 'e' });
  const p6 = c.publish('chat', 6, { id: 'f' });
  assert.deepEqual(pubIds(conn), ['a', 'b', 'a', 'd', 'e']);
  c.close();
  for (const p of [p4, p5, p6]) await assert.rejects(p, (e) => e.code === 'closed');
  assert.throws(() => new Comet({ urls: 'ws://a.test/ws', autoOpen: false, storage: null, maxPublishesInFlight: 0 }), /maxPublishesInFlight/);
});

test('history: the protocol frame, the page, asked again after a reconnect', async () => {
  const env = newClient({ requestTimeout: 5000 });
  const { c, clock, net } = env;
  let conn = await connect(env);
  const h1 = c.history('chat', { limit: 2, before: 10, reverse: true, sinceTime: new Date(Date.UTC(2026, 11, 7)) });
  let [f] = conn.frames('history');
  assert.deepEqual(Object.keys(f).sort(), ['before', 'channel', 'id', 'limit', 'op', 'reverse', 'since_time']);
  assert.deepEqual([f.channel, f.limit, f.before, f.reverse, f.since_time], ['chat', 2, 10, true, '2026-12-07T00:00:00.000Z']);
  conn.push({ op: 'history', id: f.id, channel: 'chat', epoch: 'E', first: 1, next: 12,
    messages: [{ offset: 9, data: { n: 9 }, time: 't9' }, { offset: 8, data: { n: 8 }, time: 't8' }] });
  const page = await h1;
  assert.deepEqual([page.epoch, page.first, page.next, page.messages.map((m) => m.offset)], ['E', 1, 12, [9, 8]]);
  // A read whose connection drops is asked again on the next one.
  const h2 = c.history('chat', { since: 3 });
  [f] = conn.frames('history').slice(-1);
  assert.deepEqual([f.since, f.limit, f.reverse], [3, undefined, undefined]);
  conn.drop(1006);
  clock.tick(1000);
  await settle();
  conn = net.last();
  conn.connected();
  const [again] = conn.frames('history');
  assert.equal(again.since, 3);
  conn.push({ op: 'history', id: again.id, channel: 'chat', epoch: 'E', first: 1, next: 5, messages: [{ offset: 4, data: 1, time: 't' }] });
  assert.deepEqual((await h2).messages.map((m) => m.offset), [4]);
  await assert.rejects(c.history('bad name'), /bad channel/);
  const h3 = c.history('chat');
  conn.push({ op: 'error', id: conn.frames('history').at(-1).id, code: 'forbidden', message: 'no' });
  await assert.rejects(h3, (e) => e.code === 'forbidden');
  c.close();
});

test('subscribe last: a rewind while there is no position, then resume from it', async () => {
  const env = newClient();
  const { c, clock, net } = env;
  const got = [];
  c.subscribe('ticker', (m) => got.push(m.offset), { last: 2 });
  let conn = await connect(env);
  let [s] = conn.frames('subscribe');
  assert.deepEqual([s.last, s.from], [2, undefined]);
  conn.push({ op: 'subscribed', id: s.id, channel: 'ticker', epoch: 'E', recovered: true, first: 1, next: 11 },
    { op: 'message', channel: 'ticker', offset: 9, data: 1 }, { op: 'message', channel: 'ticker', offset: 10, data: 1 });
  assert.deepEqual(got, [9, 10]);
  conn.drop(1006);
  clock.tick(1000);
  await settle();
  conn = net.last();
  conn.connected();
  [s] = conn.frames('subscribe');
  assert.deepEqual([s.from, s.last], [11, undefined]);
  c.close();
});

test('presence: pages until after is empty; presence_stats', async () => {
  const env = newClient();
  const { c } = env;
  const conn = await connect(env);
  const p = c.presence('room', { limit: 2 });
  await settle();
  let [f] = conn.frames('presence');
  assert.deepEqual([f.channel, f.limit, f.after], ['room', 2, undefined]);
  conn.push({ op: 'presence', id: f.id, channel: 'room', presence: [{ conn: 'g1-a', user: 'alice' }, { conn: 'g1-b' }], after: 'g1-b' });
  await settle();
  [, f] = conn.frames('presence');
  assert.equal(f.after, 'g1-b');
  conn.push({ op: 'presence', id: f.id, channel: 'room', presence: [{ conn: 'g2-a', user: 'bob' }] });
  assert.deepEqual((await p).map((e) => e.conn), ['g1-a', 'g1-b', 'g2-a']);
  const st = c.presenceStats('room');
  const [sf] = conn.frames('presence_stats');
  conn.push({ op: 'presence_stats', id: sf.id, channel: 'room', connections: 3, users: 2 });
  assert.deepEqual(await st, { connections: 3, users: 2 });
  c.close();
});

// fakeIO stands for socket.io-client's io: it records the sockets made.
function fakeIO() {
  const sockets = [];
  const io = (url, opts) => {
    const handlers = new Map();
    const sock = {
      url, opts, sent: [], disconnected: false,
      io: { engine: { transport: { name: 'polling' } } },
      on(ev, fn) { handlers.set(ev, fn); return sock; },
      off() { handlers.clear(); return sock; },
      emit(ev, arg) { sock.sent.push([ev, arg]); return sock; },
      disconnect() { sock.disconnected = true; return sock; },
      fire(ev, arg) { handlers.get(ev)?.(arg); },
    };
    sockets.push(sock);
    return sock;
  };
  return { io, sockets };
}

test('socketio: io from the options, the endpoint derived, frames as events, the close code of comet:close', async () => {
  const clock = new FakeClock();
  const { io, sockets } = fakeIO();
  const events = [];
  const c = new Comet({ urls: ['ws://a.test/ws?x=1', 'ws://b.test/ws'], transports: ['socketio'], io, clock, random: () => 0,
    storage: new FakeStorage(), autoOpen: false, socketioOptions: { transports: ['websocket'] } });
  for (const ev of ['open', 'close', 'error']) c.on(ev, (x) => events.push([ev, x]));
  const got = [];
  c.subscribe('ch', (m) => got.push(m.offset));
  c.open();
  await settle();
  const s = sockets[0];
  assert.equal(s.url, 'http://a.test/?x=1');
  assert.deepEqual(s.opts, { transports: ['websocket'], path: '/socket.io/', reconnection: false, forceNew: true });
  s.fire('connect');
  s.fire('comet', { op: 'connected', connection: 'k1' });
  assert.equal(c.transport, 'socketio');
  const sub = JSON.parse(s.sent.find(([ev, f]) => ev === 'comet' && JSON.parse(f).op === 'subscribe')[1]);
  assert.equal(sub.channel, 'ch');
  s.fire('comet', { op: 'subscribed', channel: 'ch', id: sub.id, epoch: 'e', recovered: true, first: 1, next: 1 });
  s.fire('comet', { op: 'message', channel: 'ch', offset: 1, data: 1 });
  assert.deepEqual(got, [1]);
  // The gateway's close code reaches the close event: 4001 moves on to the
  // next gateway.
  s.fire('comet:close', { code: 4001, reason: 'shutting down' });
  s.fire('disconnect', 'transport close');
  assert.deepEqual(events.at(-1)[1].code, 4001);
  assert.equal(s.disconnected, true);
  clock.tick(100);
  await settle();
  assert.deepEqual(sockets.map((x) => x.url), ['http://a.test/?x=1', 'http://b.test/'], JSON.stringify(events));
  // Without io (none passed, no global io): an error, and the attempt
  // fails (the next transport would be tried).
  const c2 = new Comet({ urls: 'ws://a.test/ws', transports: ['socketio'], clock: new FakeClock(), storage: new FakeStorage(), autoOpen: false, autoReconnect: false });
  const seen = [];
  c2.on('error', (e) => seen.push(e.message));
  c2.on('close', (e) => seen.push(`close ${e.code}`));
  c2.open();
  await settle();
  await settle();
  assert.match(seen[0], /socket.io-client is not loaded/);
  assert.equal(seen[1], 'close 0');
});
