// comet.js: Comet's browser client. An ES2020 module with no dependencies
// and no build step: this file is what gateways serve at /comet.js.
//
// It speaks the client protocol of docs/protocol.md over WebSocket, or over
// SockJS when WebSocket fails (the SockJS build is loaded from beside this
// file only then), or over Socket.IO when asked to (transports: the page
// brings socket.io-client's io, or passes it in the io option). It reconnects by itself, resubscribes every channel from
// the last offset it delivered (kept in localStorage, so a reload resumes
// too), and sends publishes again with the same id until they are
// acknowledged. A handler never sees an offset twice within an epoch. With
// a token, it authenticates every connection with a connect frame and
// refreshes the token before it expires.
// Guide: docs/browser.md. Types: comet.d.ts.

const CHANNEL = /^[A-Za-z0-9_.:/@-]{1,255}$/;
const RETRYABLE = new Set(['unavailable', 'timeout']);
// Close codes after which the next connection goes to another gateway.
const ELSEWHERE = new Set([4001, 4005]);
// The close code of a refused or expired token.
const CLOSE_AUTH = 4006;

/** CometError is an error frame from the gateway, or a call that could not
 * be answered: code "closed" (close() was called), "unavailable" (the
 * connection dropped before a request's response) or "timeout"; or code
 * "token": the token option's function failed (cause: its error). */
export class CometError extends Error {
  constructor(code, message, cause) {
    super(`${code}: ${message}`);
    this.name = 'CometError';
    this.code = code;
    if (cause !== undefined) this.cause = cause; // not Error's option: ES2022
  }
}

/** tokenExpiry returns the exp claim of a JWT in ms since the epoch, read
 * without verifying the token (the gateway does that), or 0 when it has
 * none or is not a JWT. */
export function tokenExpiry(token) {
  const parts = String(token).split('.');
  if (parts.length !== 3) return 0;
  try {
    const b64 = parts[1].replace(/-/g, '+').replace(/_/g, '/').replace(/=+$/, '');
    const exp = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4))).exp;
    return typeof exp === 'number' && exp > 0 && Number.isFinite(exp) ? exp * 1000 : 0;
  } catch {
    return 0;
  }
}

// MAX_TIMER is the longest delay setTimeout honours (2^31-1 ms).
const MAX_TIMER = 2 ** 31 - 1;

// refreshDelay returns in how many ms to refresh a token that expires at
// exp (ms): at 80% of its remaining lifetime; null (never) without exp, or
// when that is less than floor ms away (a race with the expiry; the
// reconnect after it is backed off).
function refreshDelay(now, exp, floor) {
  if (!exp) return null;
  const d = Math.floor((exp - now) * 0.8);
  return d >= Math.max(floor, 1) ? d : null;
}

/** splitFrame decodes a server frame: one or more JSON objects separated by
 * newlines. Lines that are not JSON objects are given to onBad. */
export function splitFrame(text, onBad = () => {}) {
  const out = [];
  for (const line of String(text).split('\n')) {
    const s = line.trim();
    if (!s) continue;
    try {
      const v = JSON.parse(s);
      if (v && typeof v === 'object' && !Array.isArray(v)) out.push(v);
      else onBad(s);
    } catch {
      onBad(s);
    }
  }
  return out;
}

/** Backoff is exponential backoff with full jitter: the delay before retry n
 * (from 0) is random in [0, min(max, min * 2^n)], as in the Go client. */
export class Backoff {
  constructor(min = 100, max = 10000, random = Math.random) {
    Object.assign(this, { min, max, random, attempt: 0 });
  }
  ceiling(n) {
    let d = this.min;
    for (let i = 0; i < n && d < this.max; i++) d *= 2;
    return Math.min(d, this.max);
  }
  next() {
    const c = this.ceiling(this.attempt);
    if (this.ceiling(this.attempt + 1) > c) this.attempt++;
    return Math.floor(this.random() * (c + 1));
  }
  reset() { this.attempt = 0; }
}

/** randomId returns n random bytes in hex (crypto.getRandomValues works
 * outside secure contexts too, unlike randomUUID). */
export function randomId(n = 16) {
  const b = new Uint8Array(n);
  globalThis.crypto.getRandomValues(b);
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

/** socketioUrlFor derives a gateway's Socket.IO endpoint from its WebSocket
 * URL: ws://host/ws -> http://host/socket.io/ (wss -> https), query kept. */
export function socketioUrlFor(wsUrl) {
  const u = new URL(wsUrl, globalThis.location?.href);
  if (!/\/ws$/.test(u.pathname)) throw new Error(`comet: cannot derive a Socket.IO URL from ${wsUrl} (path does not end in /ws): give socketioUrls`);
  u.protocol = u.protocol === 'wss:' ? 'https:' : u.protocol === 'ws:' ? 'http:' : u.protocol;
  u.pathname = u.pathname.replace(/\/ws$/, '/socket.io/');
  return u.href;
}

/** sockjsUrlFor derives a gateway's SockJS URL from its WebSocket URL:
 * ws://host/ws -> http://host/sockjs (wss -> https), query kept. */
export function sockjsUrlFor(wsUrl) {
  const u = new URL(wsUrl);
  if (!/\/ws$/.test(u.pathname)) throw new Error(`comet: cannot derive a SockJS URL from ${wsUrl} (path does not end in /ws): give sockjsUrls`);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = u.pathname.replace(/\/ws$/, '/sockjs');
  return u.toString();
}

/** expandUrls resolves urls against the page (a bare "/ws" works) and
 * expands {workerIndex} into workersCount URLs (0 .. workersCount-1). */
export function expandUrls(urls, workersCount = 1, base = globalThis.location && globalThis.location.href) {
  const out = [];
  for (const pattern of [].concat(urls)) {
    const n = String(pattern).includes('{workerIndex}') ? Math.max(1, workersCount | 0) : 1;
    for (let i = 0; i < n; i++) {
      const u = new URL(String(pattern).replaceAll('{workerIndex}', String(i)), base);
      if (u.protocol === 'http:') u.protocol = 'ws:';
      if (u.protocol === 'https:') u.protocol = 'wss:';
      out.push(u.toString());
    }
  }
  return out;
}

// Emitter: on/once/off/emit. A listener that throws is reported as an
// "error" event and does not stop the others.
class Emitter {
  constructor() { this._ls = new Map(); }
  on(event, fn) {
    if (!this._ls.has(event)) this._ls.set(event, new Set());
    this._ls.get(event).add(fn);
    return () => this.off(event, fn);
  }
  once(event, fn) {
    const off = this.on(event, (...a) => { off(); fn(...a); });
    return off;
  }
  off(event, fn) { this._ls.get(event)?.delete(fn); }
  emit(event, ...args) {
    const ls = this._ls.get(event);
    if (!ls) return;
    for (const fn of [...ls]) {
      try { fn(...args); } catch (err) {
        if (event === 'error') console.error(err); else this.emit('error', err);
      }
    }
  }
}

const realClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (t) => clearTimeout(t),
};

function defaultStorage() {
  try { return globalThis.localStorage || null; } catch { return null; } // sandboxed frames throw
}

// Positions remembers each channel's last offset and epoch, in memory and
// in storage (localStorage by default). Writes are batched: they reach
// storage within saveDelay, and at once when the page is hidden or left.
class Positions {
  constructor(storage, prefix, saveDelay, clock) {
    Object.assign(this, { storage, prefix, saveDelay, clock, mem: new Map(), dirty: new Set(), timer: null });
  }
  key(ch) { return `${this.prefix}pos:${ch}`; }
  load(ch) {
    if (this.mem.has(ch)) return this.mem.get(ch);
    try {
      const p = JSON.parse(this.storage?.getItem(this.key(ch)) || 'null');
      if (p && Number.isSafeInteger(p.offset) && p.offset >= 0) return { offset: p.offset, epoch: String(p.epoch || '') };
    } catch { /* unreadable: start afresh */ }
    return null;
  }
  save(ch, pos) {
    this.mem.set(ch, pos);
    if (!this.storage) return;
    this.dirty.add(ch);
    if (this.timer === null) this.timer = this.clock.setTimeout(() => this.flush(), this.saveDelay);
  }
  forget(ch) {
    this.mem.delete(ch);
    this.dirty.delete(ch);
    try { this.storage?.removeItem(this.key(ch)); } catch { /* ignore */ }
  }
  flush() {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
    for (const ch of this.dirty) {
      try { this.storage.setItem(this.key(ch), JSON.stringify(this.mem.get(ch))); } catch { /* quota: memory still holds it */ }
    }
    this.dirty.clear();
  }
}

// The transports. A transport is {send(text), close(code, reason)}; it
// calls h.open(), h.message(text or one decoded object) and
// h.close(code, reason) (once).
function webSocketTransport(url, h) {
  const WS = globalThis.WebSocket;
  if (typeof WS !== 'function') throw new Error('WebSocket is not available in this page');
  const ws = new WS(url);
  ws.onopen = () => h.open();
  ws.onmessage = (e) => h.message(e.data);
  ws.onclose = (e) => h.close(e.code, e.reason);
  return { send: (s) => ws.send(s), close: (code, reason) => { ws.onclose = null; ws.close(code, reason); } };
}

function sockjsTransport(SockJS, url, h, options) {
  const sock = new SockJS(url, null, options);
  sock.onopen = () => h.open(sock.transport);
  sock.onmessage = (e) => h.message(e.data);
  sock.onclose = (e) => h.close(e.code, e.reason);
  return { send: (s) => sock.send(s), close: (code, reason) => { sock.onclose = null; sock.close(code, reason); } };
}

// socketioTransport speaks to a gateway's /socket.io/ with socket.io-client
// (io): a frame is a "comet" event each way (the gateway sends one object
// per event), and "comet:close" tells the close code before the gateway
// closes. Reconnects are comet.js's own (reconnection: false), each on a
// new Manager (forceNew).
function socketioTransport(io, url, h, options) {
  if (typeof io !== 'function') throw new Error('socket.io-client is not loaded: load its script (it defines io) or pass the io option');
  const u = new URL(url);
  const sock = io(`${u.protocol}//${u.host}/${u.search}`, { transports: ['polling', 'websocket'], ...options, path: u.pathname, reconnection: false, forceNew: true });
  let code = 1006;
  let reason = '';
  let ended = false;
  const end = (why) => {
    if (ended) return;
    ended = true;
    sock.off();
    sock.disconnect();
    h.close(code, reason || why);
  };
  sock.on('connect', () => h.open(sock.io.engine?.transport?.name || null));
  sock.on('comet', (f) => { if (!ended) h.message(f); });
  sock.on('comet:close', (e) => { code = e?.code || code; reason = e?.reason || ''; });
  sock.on('disconnect', (why) => end(String(why)));
  sock.on('connect_error', (err) => end(String(err?.message || err)));
  return { send: (s) => sock.emit('comet', s), close: () => { ended = true; sock.off(); sock.disconnect(); } };
}

let sockjsLoading = null;

/** loadSockJS returns the SockJS constructor: the page's global SockJS, or
 * the build loaded once by a script tag from src (by default sockjs.min.js
 * beside comet.js). */
export function loadSockJS(src = new URL('sockjs.min.js', import.meta.url).href) {
  if (typeof globalThis.SockJS === 'function') return Promise.resolve(globalThis.SockJS);
  if (typeof document === 'undefined') return Promise.reject(new Error('SockJS is not loaded and there is no document to load it into'));
  sockjsLoading ||= new Promise((resolve, reject) => {
    const s = document.createElement('script');
    s.src = src;
    s.async = true;
    s.onload = () => (typeof globalThis.SockJS === 'function' ? resolve(globalThis.SockJS) : reject(new Error(`${src} did not define SockJS`)));
    s.onerror = () => reject(new Error(`could not load ${src}`));
    document.head.appendChild(s);
  }).catch((err) => { sockjsLoading = null; throw err; });
  return sockjsLoading;
}

/** autoReconnect is the built-in plugin that reconnects after a drop, after
 * an exponential backoff with full jitter between minRetry and maxRetry
 * (ms). The backoff starts again after a connection that stayed up for
 * stableAfter ms. While the browser says it is offline it waits for the
 * "online" event; when the page comes back online or into view it retries
 * at once, and checks a connection it believes open with a ping. */
export function autoReconnect({ minRetry = 100, maxRetry = 10000, stableAfter = 5000, probeTimeout = 5000 } = {}) {
  return {
    name: 'autoReconnect',
    reconnects: true,
    install(comet) {
      const clock = comet.clock;
      const backoff = new Backoff(minRetry, maxRetry, comet.random);
      let timer = null;
      const cancel = () => { if (timer !== null) clock.clearTimeout(timer); timer = null; };
      const retryNow = () => {
        if (comet.state !== 'reconnecting') return;
        cancel();
        backoff.reset();
        comet.open();
      };
      const probe = () => {
        if (comet.state === 'open') comet.ping({ timeout: probeTimeout }).catch(() => comet.state === 'open' && comet.reconnect());
        else retryNow();
      };
      const offs = [
        comet.on('open', cancel),
        comet.on('close', (info) => {
          cancel();
          if (comet.state !== 'reconnecting') return;
          if (info.openFor >= stableAfter) backoff.reset();
          const offline = globalThis.navigator?.onLine === false;
          // Offline: wait for "online", but not forever (onLine can be wrong).
          const delay = info.retryIn ?? (offline ? maxRetry : backoff.next());
          timer = clock.setTimeout(() => { timer = null; comet.open(); }, delay);
          comet.emit('reconnect', { delay, offline });
        }),
      ];
      const win = typeof window !== 'undefined' && window.addEventListener ? window : null;
      const onVisible = () => { if (document.visibilityState === 'visible') probe(); };
      win?.addEventListener('online', probe);
      if (win && typeof document !== 'undefined') document.addEventListener('visibilitychange', onVisible);
      return () => {
        cancel();
        offs.forEach((off) => off());
        win?.removeEventListener('online', probe);
        if (win && typeof document !== 'undefined') document.removeEventListener('visibilitychange', onVisible);
      };
    },
  };
}

/** Subscription is one channel of a Comet client; it lives across
 * reconnects until unsubscribe(). */
export class Subscription {
  constructor(comet, channel, handler, opts) {
    Object.assign(this, { comet, channel, handler, opts });
    this.state = 'subscribing'; // subscribed | unsubscribed
    // last: the last offset delivered (or skipped as gone), when hasPos;
    // next: from the last "subscribed".
    Object.assign(this, { hasPos: false, last: 0, epoch: '', next: 0 });
    // Where the subscribe stands on this connection: wire is idle, sent,
    // active or retry (refused as unavailable: again after a backoff).
    Object.assign(this, { wire: 'idle', subId: '', attempts: 0, timer: null, askedFrom: 0, askedEpoch: '' });
    this.ready = new Promise((res, rej) => { this._res = res; this._rej = rej; });
    this.ready.catch(() => {}); // a refusal is also an "error" event
  }
  /** unsubscribe ends the subscription; the promise resolves once the
   * gateway confirmed (or at once when not connected). */
  unsubscribe() { return this.comet._unsubscribe(this); }
}

const DEFAULTS = {
  transports: ['websocket', 'sockjs'], workersCount: 1, autoOpen: true, autoReconnect: true,
  minRetry: 100, maxRetry: 10000, requestTimeout: 10000, connectTimeout: 10000, pingInterval: 25000,
  maxPublishesInFlight: 256,
  storagePrefix: 'comet:', saveDelay: 100, sockjsOptions: {},
};

/** Comet is a connection to Comet gateways that survives reconnects. */
export class Comet extends Emitter {
  constructor(options = {}) {
    super();
    const o = (this.options = { ...DEFAULTS, ...options });
    this.clock = o.clock || realClock;
    this.random = o.random || Math.random;
    this.urls = expandUrls(o.urls || '/ws', o.workersCount);
    if (!this.urls.length) throw new Error('comet: no gateway URL');
    if (!(Number.isInteger(o.maxPublishesInFlight) && o.maxPublishesInFlight > 0)) throw new Error(`comet: maxPublishesInFlight must be a positive integer, not ${o.maxPublishesInFlight}`);
    this.transports = [].concat(o.transports).filter((t) => t === 'websocket' || t === 'sockjs' || t === 'socketio');
    if (!this.transports.length) throw new Error('comet: transports must list websocket, sockjs and/or socketio');
    this.sockjsUrls = this.transports.includes('sockjs')
      ? (o.sockjsUrls ? expandUrls(o.sockjsUrls, o.workersCount).map((u) => u.replace(/^ws/, 'http')) : this.urls.map(sockjsUrlFor))
      : [];
    if (this.sockjsUrls.length && this.sockjsUrls.length !== this.urls.length) throw new Error('comet: sockjsUrls must match urls one to one');
    this.socketioUrls = this.transports.includes('socketio')
      ? (o.socketioUrls ? expandUrls(o.socketioUrls, o.workersCount).map((u) => u.replace(/^ws/, 'http')) : this.urls.map(socketioUrlFor))
      : [];
    if (this.socketioUrls.length && this.socketioUrls.length !== this.urls.length) throw new Error('comet: socketioUrls must match urls one to one');
    const storage = o.storage === undefined ? defaultStorage() : o.storage || null;
    this.positions = new Positions(storage, o.storagePrefix, o.saveDelay, this.clock);
    this.state = 'closed'; // connecting | open | reconnecting | closed
    this.transport = null; // "websocket", "sockjs" or "socketio" while open
    this.url = null;
    this.connection = null; // the gateway's connection id
    this.user = null; // the connection's user (the token's sub); null when anonymous
    this._urlIndex = Math.floor(this.random() * this.urls.length);
    this._startTransport = 0; // the transport that last worked is tried first
    this._tried = 0; // transports tried in this round on this URL
    this._conn = null;
    this._wanted = false;
    this._everOpen = false;
    this._seq = 0;
    this._prefix = randomId(4) + '.';
    this._subs = new Map(); // by channel
    this._pubs = new Map(); // by id, in the order of the publish() calls
    // The publishes not sent on this connection yet, in call order (from
    // _pubHead on), and how many were sent and not answered: at most
    // maxPublishesInFlight.
    this._pubQueue = [];
    this._pubHead = 0;
    this._inflight = 0;
    this._reqs = new Map(); // by id
    this._unsubs = new Map(); // by id
    this._plugins = [];
    this._teardowns = null; // installed plugins' teardowns; null when not installed
    if (o.autoReconnect) this.use(autoReconnect({ minRetry: o.minRetry, maxRetry: o.maxRetry, ...(o.autoReconnect === true ? {} : o.autoReconnect) }));
    for (const p of o.plugins || []) this.use(p);
    if (typeof window !== 'undefined' && window.addEventListener) {
      const flush = () => this.positions.flush();
      window.addEventListener('pagehide', flush);
      document.addEventListener?.('visibilitychange', () => document.visibilityState === 'hidden' && flush());
    }
    this._autoOpen = !!o.autoOpen;
    if (this._autoOpen) queueMicrotask(() => this._autoOpen && this.open());
  }

  /** use adds a plugin: {name, install(comet) -> teardown?, reconnects?}.
   * Plugins are installed by open() and torn down by close(). */
  use(plugin) {
    this._plugins.push(plugin);
    if (this._teardowns) this._teardowns.push(plugin.install(this));
    return this;
  }

  /** open connects (or, while reconnecting, tries again now). */
  open() {
    this._autoOpen = false;
    if (!this._teardowns) this._teardowns = this._plugins.map((p) => p.install(this));
    this._wanted = true;
    if (!this._conn) this._dial();
    return this;
  }

  /** close stops the client: it closes the connection, stops reconnecting,
   * and fails pending publishes and requests with code "closed".
   * Subscriptions stay: open() subscribes them again, from where they were. */
  close() {
    this._autoOpen = false;
    this._wanted = false;
    this._everOpen = false;
    const conn = this._conn;
    if (conn) {
      conn.t?.close(1000, 'client closed');
      this._dropped(conn, 1000, 'client closed');
    } else this._setState('closed');
    for (const p of [...this._pubs.values()]) this._finishPub(p, null, new CometError('closed', 'client closed'));
    Object.assign(this, { _pubQueue: [], _pubHead: 0 });
    for (const [id, r] of this._reqs) { this._reqs.delete(id); this.clock.clearTimeout(r.timer); r.reject(new CometError('closed', 'client closed')); }
    this.positions.flush();
    (this._teardowns || []).forEach((td) => typeof td === 'function' && td());
    this._teardowns = null;
    return this;
  }

  /** reconnect drops the connection as a network failure would; the client
   * then connects again (after delay ms if given, else as the reconnect
   * plugin decides) and resumes every channel. While waiting to reconnect,
   * it tries again now. */
  reconnect({ delay } = {}) {
    const conn = this._conn;
    if (!conn) return this.state === 'reconnecting' ? this.open() : this;
    conn.t?.close(4000, 'reconnect');
    this._dropped(conn, 4000, 'dropped by the application', delay ?? (this._reconnects() ? undefined : 0));
    return this;
  }

  /** subscribe delivers channel's messages to handler, in offset order, each
   * offset once. It starts at opts.from (1: all retained history) if given,
   * else after the position remembered for the channel, else with the
   * newest opts.last messages (a rewind: last 1 is "the latest value"), else
   * with live messages only. */
  subscribe(channel, handler = null, opts = {}) {
    checkChannel(channel);
    if (this._subs.has(channel)) throw new Error(`comet: already subscribed to ${channel}`);
    const s = new Subscription(this, channel, handler, opts);
    const pos = opts.from !== undefined ? { offset: Math.max(1, opts.from) - 1, epoch: opts.epoch || '' } : this.positions.load(channel);
    if (pos) Object.assign(s, { hasPos: true, last: pos.offset, epoch: pos.epoch });
    s.seq = ++this._seq;
    this._subs.set(channel, s);
    if (this._ready()) this._sendSubscribe(s);
    return s;
  }

  /** position returns what the client remembers of channel: {offset, epoch}
   * (offset = the last one delivered), or null. forget drops it. */
  position(channel) { return this.positions.load(channel); }
  forget(channel) { this.positions.forget(channel); }

  /** publish sends data (any JSON value but null) to channel; the promise
   * resolves with {channel, offset, epoch, duplicate} once the message is
   * stored. Many publishes may be in flight at once: up to
   * maxPublishesInFlight are sent and wait for their acks, the others wait
   * their turn. They are sent in the order of the calls; after a reconnect
   * those not acknowledged are sent again, with the same ids, in that
   * order, before any new one. duplicate is true when the message had
   * already been stored under this id (a retry): offset is then the first
   * one's. */
  publish(channel, data, { id = randomId(), timeout = 0 } = {}) {
    try {
      checkChannel(channel);
      if (data === undefined || data === null) throw new Error('comet: publish needs data (not null)');
      if (this._pubs.has(id)) throw new Error(`comet: a publish with id ${id} is in flight`);
    } catch (err) { return Promise.reject(err); }
    return new Promise((resolve, reject) => {
      const p = { id, channel, frame: { op: 'publish', channel, data, id }, seq: ++this._seq, attempts: 0, timer: null,
        deadline: null, sent: false, done: false, resolve, reject };
      this._pubs.set(id, p);
      if (timeout > 0) {
        p.deadline = this.clock.setTimeout(() => this._finishPub(p, null,
          new CometError('timeout', `no ack within ${timeout} ms; it may be stored: publish again with id ${id} to know`)), timeout);
      }
      this._pubQueue.push(p);
      this._pumpPublishes();
    });
  }

  /** request sends data to the worker serving route; the promise resolves
   * with its response. Sent once; fails with code "timeout" after
   * opts.timeout (default requestTimeout), "unavailable" if the
   * connection drops first. */
  request(route, data, { timeout = this.options.requestTimeout } = {}) {
    if (!route) return Promise.reject(new Error('comet: request needs a route'));
    const frame = { op: 'request', route };
    if (data !== undefined) frame.data = data;
    return this._call(frame, timeout);
  }

  /** history reads a page of channel's history from the hubs' log: the
   * promise resolves with {channel, epoch, first, next, messages}, each
   * message {offset, data, time}. opts: limit (default 100, at most 1000),
   * since (messages after this offset: page forwards with the last offset
   * seen), before (messages before this offset: page backwards with
   * reverse and the oldest seen), sinceTime (a Date or RFC 3339 string),
   * reverse (newest first), timeout. The page holds at least every message
   * this connection was sent or had acknowledged on the channel. A read
   * whose connection drops is asked again on the next one. */
  history(channel, { limit, since, before, sinceTime, reverse = false, timeout = this.options.requestTimeout } = {}) {
    try { checkChannel(channel); } catch (err) { return Promise.reject(err); }
    const frame = { op: 'history', channel };
    if (limit !== undefined) frame.limit = limit;
    if (since) frame.since = since;
    if (before) frame.before = before;
    if (sinceTime) frame.since_time = sinceTime instanceof Date ? sinceTime.toISOString() : String(sinceTime);
    if (reverse) frame.reverse = true;
    return this._call(frame, timeout, true).then((f) => ({
      channel, epoch: f.epoch, first: f.first || 0, next: f.next || 0, messages: f.messages || [],
    }));
  }

  /** presence resolves with who is subscribed to channel on every gateway:
   * [{conn, user}] in connection id order (user absent when anonymous),
   * asked page after page (opts.limit each, default 1000). It needs the
   * right to subscribe to the channel. */
  async presence(channel, { limit, timeout = this.options.requestTimeout } = {}) {
    checkChannel(channel);
    const out = [];
    let after = '';
    for (;;) {
      const frame = { op: 'presence', channel };
      if (limit !== undefined) frame.limit = limit;
      if (after) frame.after = after;
      const f = await this._call(frame, timeout, true);
      out.push(...(f.presence || []));
      if (!f.after || f.after <= after) return out;
      after = f.after;
    }
  }

  /** presenceStats resolves with {connections, users}: how many
   * connections are subscribed to channel, and how many distinct users. */
  presenceStats(channel, { timeout = this.options.requestTimeout } = {}) {
    try { checkChannel(channel); } catch (err) { return Promise.reject(err); }
    return this._call({ op: 'presence_stats', channel }, timeout, true)
      .then((f) => ({ connections: f.connections || 0, users: f.users || 0 }));
  }

  /** ping asks the gateway for a pong; it fails like request. */
  ping({ timeout = this.options.requestTimeout } = {}) { return this._call({ op: 'ping' }, timeout); }

  // _call sends frame with an id and settles with its answer; again: sent
  // again on the next connection if this one drops first (a read).
  _call(frame, timeout, again = false) {
    return new Promise((resolve, reject) => {
      const id = this._nextId('r');
      const r = { frame: { ...frame, id }, seq: ++this._seq, sent: false, again, resolve, reject };
      r.timer = this.clock.setTimeout(() => {
        if (this._reqs.delete(id)) reject(new CometError('timeout', `no answer within ${timeout} ms`));
      }, timeout);
      this._reqs.set(id, r);
      if (this._ready()) { r.sent = true; this._send(r.frame); }
    });
  }

  // ---- connections -------------------------------------------------------

  _ready() { return this._conn?.ready ? this._conn : null; }
  _nextId(kind) { return `${this._prefix}${kind}${++this._seq}`; }

  _setState(state) {
    if (this.state === state) return;
    const prev = this.state;
    this.state = state;
    this.emit('state', state, prev);
  }

  _send(frame, conn = this._conn) {
    const f = { ...frame };
    this.emit('beforeSend', f);
    try { conn.t.send(JSON.stringify(f)); } catch (err) { this.emit('error', err); }
  }

  // _dial starts one connection attempt with the next transport of this
  // round on the current URL.
  _dial() {
    const name = this.transports[(this._startTransport + this._tried) % this.transports.length];
    const url = name === 'sockjs' ? this.sockjsUrls[this._urlIndex] : name === 'socketio' ? this.socketioUrls[this._urlIndex] : this.urls[this._urlIndex];
    // token: for the connect frame ('' when anonymous); authError: why the
    // token could not be had (a CometError with code "token").
    const conn = { name, url, t: null, ready: false, openedAt: 0, timer: null, token: '', authError: null, refreshTimer: null };
    this._conn = conn;
    this._setState(this._everOpen ? 'reconnecting' : 'connecting');
    const h = {
      open: (detail) => { conn.detail = detail || null; conn.opened = true; this._hello(conn); },
      message: (text) => this._onFrame(conn, text),
      close: (code, reason) => this._dropped(conn, code, reason),
    };
    conn.timer = this.clock.setTimeout(() => {
      conn.t?.close(4000, 'connect timeout');
      // A token function that does not answer is no transport's fault.
      if (conn.fetching) conn.authError = new CometError('token', `no token within ${this.options.connectTimeout} ms`);
      this._dropped(conn, 4000, 'no "connected" in time');
    }, this.options.connectTimeout);
    const create = () => (this.options.createTransport
      ? this.options.createTransport(name, url, h)
      : name === 'websocket'
        ? webSocketTransport(url, h)
        : name === 'socketio'
          ? socketioTransport(this.options.io || globalThis.io, url, h, this.options.socketioOptions)
          : (this.options.SockJS ? Promise.resolve(this.options.SockJS) : loadSockJS(this.options.sockjsScript))
          .then((SockJS) => sockjsTransport(SockJS, url, h, this.options.sockjsOptions)));
    // The token first, so that no socket waits open for it.
    const make = this._token(conn).then(() => (this._conn === conn ? create() : null));
    make.then((t) => {
      if (!t) return;
      if (this._conn !== conn) { t.close(1000, 'not needed'); return; }
      conn.t = t;
      this._hello(conn);
    }, (err) => {
      this.emit('error', err);
      this._dropped(conn, 0, String(err.message || err));
    });
  }

  // _token gets conn's token from the token option: a string, or a function
  // that returns one or a promise of one. '' is anonymous.
  _token(conn) {
    const opt = this.options.token;
    if (!opt) return Promise.resolve();
    conn.fetching = true;
    return Promise.resolve().then(() => (typeof opt === 'function' ? opt() : opt)).then((t) => {
      conn.fetching = false;
      conn.token = t ? String(t) : '';
    }, (cause) => {
      conn.fetching = false;
      conn.authError = new CometError('token', `the token function failed: ${cause?.message || cause}`, cause);
      throw conn.authError;
    });
  }

  // _hello sends the connect frame, the first frame of conn, once conn is
  // open and has a token. Nothing else is sent before the gateway answers
  // it with "connected".
  _hello(conn) {
    const info = this.options.info;
    if (!conn.opened || !conn.t || !(conn.token || info) || conn.hello || this._conn !== conn) return;
    conn.hello = this._nextId('c');
    const f = { op: 'connect', id: conn.hello };
    if (conn.token) f.token = conn.token;
    if (info) f.info = info;
    this._send(f, conn);
  }

  // _scheduleRefresh has conn's token, from the token function, replaced at
  // 80% of its remaining lifetime.
  _scheduleRefresh(conn, token) {
    const exp = tokenExpiry(token);
    const delay = refreshDelay(this.clock.now(), exp, this.options.minRetry);
    if (delay === null) return;
    const at = this.clock.now() + delay;
    // setTimeout takes at most 2^31-1 ms (24.8 days) and fires at once
    // beyond: a longer wait is made of several.
    const wait = () => {
      const left = at - this.clock.now();
      conn.refreshTimer = left > MAX_TIMER
        ? this.clock.setTimeout(wait, MAX_TIMER)
        : this.clock.setTimeout(() => this._refresh(conn, exp, 1), left);
    };
    wait();
  }

  // _refresh sends a fresh token on conn (the gateway answers "connected").
  // A failure is an "error" event, retried with backoff until the token
  // expires; the gateway then closes conn with 4006 and the client
  // reconnects with a new token.
  _refresh(conn, exp, attempt) {
    conn.refreshTimer = null;
    Promise.resolve().then(() => this.options.token()).then((t) => {
      if (!t) throw new Error('it returned no token');
      if (this._conn !== conn) return;
      this._send({ op: 'connect', token: String(t), id: this._nextId('c') }, conn);
      this._scheduleRefresh(conn, String(t));
    }).catch((cause) => {
      if (this._conn !== conn) return;
      this.emit('error', new CometError('token', `could not refresh the token: ${cause?.message || cause}`, cause));
      const delay = this._jitter(attempt);
      if (this.clock.now() + delay < exp) conn.refreshTimer = this.clock.setTimeout(() => this._refresh(conn, exp, attempt + 1), delay);
    });
  }

  _onFrame(conn, text) {
    if (this._conn !== conn) return;
    conn.heardSincePing = true;
    const frames = typeof text === 'string' || !text || typeof text !== 'object' || Array.isArray(text)
      ? splitFrame(text, (bad) => this.emit('error', new Error(`undecodable server frame: ${bad.slice(0, 200)}`)))
      : [text]; // an object: Socket.IO's
    for (const f of frames) {
      if (this._conn !== conn) return; // a handler closed or cut the connection
      this.emit('message', f);
      if (!conn.ready) {
        if (f.op === 'error') {
          // A refused token: the close (4006) follows.
          const err = new CometError(f.code, f.message);
          if (f.code === 'forbidden') conn.refused = err;
          this.emit('error', err);
          continue;
        }
        // With a token, the answer to the connect frame (its id echoed, or a
        // user named by a gateway that does not echo it), not the admission
        // as anonymous that a gateway letting anonymous clients in may send
        // before.
        if (f.op === 'connected' && conn.hello && f.id !== conn.hello && (f.id || !f.user)) continue;
        if (f.op !== 'connected') {
          conn.t?.close(4000, 'protocol error');
          this._dropped(conn, 4000, `first frame was ${f.op}, not connected`);
          return;
        }
        this._attach(conn, f);
        continue;
      }
      this._dispatch(conn, f);
    }
  }

  // _attach makes conn the ready connection and sends, in this order, every
  // subscription, the unacknowledged publishes (in call order, as many as
  // the window takes) and every unsent request.
  _attach(conn, f) {
    Object.assign(conn, { ready: true, openedAt: this.clock.now() });
    Object.assign(this, { transport: conn.name, url: conn.url, connection: f.connection, user: f.user || null, _everOpen: true, _tried: 0 });
    this._startTransport = this.transports.indexOf(conn.name);
    // Keep-alive: a ping every pingInterval; a connection from which
    // nothing was heard since the last ping is dead. (Not a deadline since
    // the last frame: background tabs run timers late.)
    const ping = () => {
      if (this._conn !== conn) return;
      if (conn.pinged && !conn.heardSincePing) {
        conn.t?.close(4000, 'no pong');
        this._dropped(conn, 4000, `no answer to a ping in ${this.options.pingInterval} ms`);
        return;
      }
      Object.assign(conn, { pinged: true, heardSincePing: false });
      this._send({ op: 'ping' }, conn);
      conn.timer = this.clock.setTimeout(ping, this.options.pingInterval);
    };
    this.clock.clearTimeout(conn.timer); // the connect timeout
    conn.timer = this.clock.setTimeout(ping, this.options.pingInterval);
    if (typeof this.options.token === 'function') this._scheduleRefresh(conn, conn.token);
    this._setState('open');
    this.emit('open', { transport: conn.name, detail: conn.detail, url: conn.url, connection: f.connection, user: this.user });
    if (this._conn !== conn) return;
    const bySeq = (a, b) => a.seq - b.seq;
    for (const s of [...this._subs.values()].sort(bySeq)) this._sendSubscribe(s);
    this._pumpPublishes(); // all of them wait their turn again, in call order (see _dropped)
    for (const r of [...this._reqs.values()].sort(bySeq)) { r.sent = true; this._send(r.frame); }
  }

  _reconnects() { return this._plugins.some((p) => p.reconnects); }

  // _dropped handles the end of conn, whatever ended it: it chooses where
  // to connect next, resets what was in flight, and emits "close" unless
  // the round of transports goes on, then "auth" if it ended for want of
  // a valid token. retryIn (ms), when given, is when to connect again,
  // whatever the reconnect plugin would do.
  _dropped(conn, code, reason, retryIn) {
    if (this._conn !== conn) return;
    this._conn = null;
    this.clock.clearTimeout(conn.timer);
    this.clock.clearTimeout(conn.refreshTimer);
    const wasOpen = conn.ready;
    const openFor = wasOpen ? this.clock.now() - conn.openedAt : 0;
    // A refused or expired token, or none to be had: neither the
    // transport's fault nor the gateway's.
    const auth = conn.authError || (code === CLOSE_AUTH ? conn.refused || new CometError('forbidden', reason || 'token refused') : null);
    Object.assign(this, { transport: null, connection: null, user: null });
    for (const s of this._subs.values()) { this.clock.clearTimeout(s.timer); Object.assign(s, { wire: 'idle', subId: '' }); }
    // Every publish not acknowledged waits its turn again, in call order.
    for (const p of this._pubs.values()) { this.clock.clearTimeout(p.timer); Object.assign(p, { timer: null, sent: false }); }
    Object.assign(this, { _pubQueue: [...this._pubs.values()], _pubHead: 0, _inflight: 0 });
    for (const [id, r] of this._reqs) {
      if (r.again) r.sent = false; // asked again on the next connection
      if (!r.sent) continue;
      this._reqs.delete(id);
      this.clock.clearTimeout(r.timer);
      r.reject(new CometError('unavailable', 'connection lost before the answer'));
    }
    for (const [id, done] of this._unsubs) { this._unsubs.delete(id); done(); }
    if (!wasOpen && this._wanted && retryIn === undefined && !auth) {
      // A failed attempt: the next transport on this URL, at once; after
      // all of them, the next URL, after a backoff.
      if (++this._tried < this.transports.length) { this._dial(); return; }
      this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    } else if (ELSEWHERE.has(code)) {
      this._urlIndex = (this._urlIndex + 1) % this.urls.length;
    }
    this._tried = 0;
    if (this._wanted && retryIn !== undefined && !this._reconnects()) {
      const t = this.clock.setTimeout(() => this._wanted && !this._conn && this._dial(), retryIn);
      this.once('open', () => this.clock.clearTimeout(t));
    } else if (!this._reconnects()) this._wanted = false;
    this._setState(this._wanted ? 'reconnecting' : 'closed');
    this.emit('close', { code, reason, wasOpen, openFor, transport: conn.name, url: conn.url, retryIn });
    if (auth) this.emit('auth', auth);
  }

  _dispatch(conn, f) {
    switch (f.op) {
      case 'message': return this._onMessage(f);
      case 'subscribed': return this._onSubscribed(f);
      case 'unsubscribed': { const done = this._unsubs.get(f.id); if (done) { this._unsubs.delete(f.id); done(); } return; }
      case 'ack': {
        const p = this._pubs.get(f.id);
        if (!p || !f.id) return; // a second ack of a publish sent twice
        return this._finishPub(p, { channel: f.channel, offset: f.offset, epoch: f.epoch || '', duplicate: f.duplicate === true });
      }
      case 'response': case 'pong': {
        const r = this._reqs.get(f.id);
        if (!r) return;
        this._reqs.delete(f.id);
        this.clock.clearTimeout(r.timer);
        return r.resolve(f.data);
      }
      case 'history': case 'presence': case 'presence_stats': {
        const r = this._reqs.get(f.id);
        if (!r) return;
        this._reqs.delete(f.id);
        this.clock.clearTimeout(r.timer);
        return r.resolve(f);
      }
      case 'join': case 'leave': {
        const s = this._subs.get(f.channel);
        const ev = { channel: f.channel, conn: f.conn, user: f.user || null };
        const cb = s && (f.op === 'join' ? s.opts.onJoin : s.opts.onLeave);
        if (cb) { try { cb(ev); } catch (err) { this.emit('error', err); } }
        this.emit(f.op, ev);
        return;
      }
      case 'error': return this._onError(conn, f);
      case 'connected': this.user = f.user || null; return; // the answer to a fresh token
    }
  }

  _onError(conn, f) {
    const err = new CometError(f.code, f.message);
    const p = f.id && this._pubs.get(f.id);
    if (p) {
      this.clock.clearTimeout(p.timer);
      if (RETRYABLE.has(f.code)) {
        // Still in flight: sent again after a backoff.
        p.timer = this.clock.setTimeout(() => this._ready() && this._sendPublish(p), this._jitter(++p.attempts));
        return;
      }
      return this._finishPub(p, null, err);
    }
    const r = f.id && this._reqs.get(f.id);
    if (r) {
      this._reqs.delete(f.id);
      this.clock.clearTimeout(r.timer);
      return r.reject(err);
    }
    const done = f.id && this._unsubs.get(f.id);
    if (done) { this._unsubs.delete(f.id); return done(); }
    const s = f.id && [...this._subs.values()].find((x) => x.subId === f.id && x.wire === 'sent');
    if (s) {
      if (RETRYABLE.has(f.code)) {
        Object.assign(s, { wire: 'retry', subId: '' });
        s.timer = this.clock.setTimeout(() => this._ready() && this._sendSubscribe(s), this._jitter(++s.attempts));
        return;
      }
      this._subs.delete(s.channel);
      s.state = 'unsubscribed';
      s._rej(err);
    }
    // An expired or refused token: the close (4006) follows.
    if (f.code === 'forbidden' && (!f.id || f.id.startsWith(`${this._prefix}c`))) conn.refused = err;
    err.channel = s?.channel;
    this.emit('error', err);
  }

  _jitter(attempt) {
    const b = new Backoff(this.options.minRetry, this.options.maxRetry, this.random);
    b.attempt = attempt - 1;
    return b.next();
  }

  // ---- subscriptions and publishes ----------------------------------------

  _sendSubscribe(s) {
    Object.assign(s, { subId: this._nextId('s'), wire: 'sent', askedFrom: 0, askedEpoch: '' });
    const f = { op: 'subscribe', channel: s.channel, id: s.subId };
    if (s.hasPos) {
      f.from = s.last + 1;
      if (s.epoch) f.epoch = s.epoch;
      Object.assign(s, { askedFrom: f.from, askedEpoch: s.epoch });
    } else if (s.opts.last > 0) {
      f.last = s.opts.last;
    }
    this._send(f);
  }

  // _pumpPublishes sends the publishes waiting their turn, in call order,
  // while fewer than maxPublishesInFlight wait for their acks.
  _pumpPublishes() {
    if (!this._ready()) return;
    const q = this._pubQueue;
    while (this._pubHead < q.length && this._inflight < this.options.maxPublishesInFlight) {
      const p = q[this._pubHead++];
      if (p.done) continue;
      p.sent = true;
      this._inflight++;
      this._sendPublish(p);
    }
    if (this._pubHead > 1024 && this._pubHead * 2 > q.length) {
      this._pubQueue = q.slice(this._pubHead);
      this._pubHead = 0;
    }
  }

  // _finishPub settles p once, with ack or err, and lets the next one go.
  _finishPub(p, ack, err) {
    if (p.done) return;
    p.done = true;
    this._pubs.delete(p.id);
    this.clock.clearTimeout(p.timer);
    this.clock.clearTimeout(p.deadline);
    if (p.sent) { p.sent = false; this._inflight--; }
    if (err) p.reject(err); else p.resolve(ack);
    this._pumpPublishes();
  }

  _sendPublish(p) {
    this._send(p.frame);
    this.clock.clearTimeout(p.timer);
    // No answer in time: send it again with the same id (stored once).
    p.timer = this.clock.setTimeout(() => this._ready() && this._sendPublish(p), this.options.requestTimeout);
  }

  _unsubscribe(s) {
    if (this._subs.get(s.channel) !== s) return Promise.resolve();
    this._subs.delete(s.channel);
    this.clock.clearTimeout(s.timer);
    s.state = 'unsubscribed';
    s._rej(new CometError('closed', 'unsubscribed'));
    if (!this._ready() || (s.wire !== 'sent' && s.wire !== 'active')) return Promise.resolve();
    const id = this._nextId('u');
    this._send({ op: 'unsubscribe', channel: s.channel, id });
    return new Promise((resolve) => this._unsubs.set(id, resolve));
  }

  // _onSubscribed moves the position to what the gateway holds and tells the
  // application, as the Go client does (client/subscribe.go).
  _onSubscribed(f) {
    const s = this._subs.get(f.channel);
    if (!s || s.wire !== 'sent' || (f.id && f.id !== s.subId)) return;
    Object.assign(s, { wire: 'active', attempts: 0, subId: '' });
    const first = f.first || 0, next = f.next || 0;
    const info = { channel: f.channel, epoch: f.epoch, recovered: f.recovered !== false, first, next, from: s.askedFrom, fromEpoch: s.askedEpoch };
    const rewind = s.opts.last > 0 ? Math.min(s.opts.last, Math.max(next, 1) - 1) : 0;
    if (!s.hasPos) s.last = Math.max(next - rewind, first, 1) - 1; // live only (or a rewind): resume later from here
    else if (s.epoch && s.epoch !== f.epoch) s.last = Math.max(first, 1) - 1; // a new history: replay from first
    else if (!info.recovered && first > 0 && s.last < first - 1) s.last = first - 1; // trimmed: gone for good
    Object.assign(s, { hasPos: true, epoch: f.epoch, next, state: 'subscribed' });
    this.positions.save(s.channel, { offset: s.last, epoch: s.epoch });
    if (!info.recovered) {
      // What the client asked for and will never get.
      const epochChanged = !!(info.fromEpoch && info.fromEpoch !== f.epoch);
      info.lost = { from: info.from, to: epochChanged ? null : first - 1, epochChanged };
    }
    s._res(info);
    if (s.opts.onSubscribed) { try { s.opts.onSubscribed(info); } catch (err) { this.emit('error', err); } }
    this.emit('subscribed', info);
    if (!info.recovered) this.emit('lost', info);
  }

  _onMessage(f) {
    if (f.channel == null) { this.emit('direct', f.data); return; } // to this connection alone
    const s = this._subs.get(f.channel);
    if (!s || s.wire !== 'active' || !(f.offset > s.last)) return; // not ours now, or a duplicate
    const m = { channel: f.channel, offset: f.offset, epoch: s.epoch, data: f.data, replayed: f.offset < s.next };
    s.last = f.offset;
    this.positions.save(s.channel, { offset: s.last, epoch: s.epoch });
    if (s.handler) { try { s.handler(m); } catch (err) { this.emit('error', err); } }
    this.emit('channel', m);
    this.emit(`channel:${f.channel}`, m);
  }
}

function checkChannel(ch) {
  if (typeof ch !== 'string' || !CHANNEL.test(ch)) throw new Error(`comet: bad channel name ${JSON.stringify(ch)}: 1-255 characters of A-Z a-z 0-9 _ . : / @ -`);
}

export default Comet;
