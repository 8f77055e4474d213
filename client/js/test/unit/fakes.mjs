// Fakes for the unit tests of comet.js: a clock driven by the test, a
// storage, and a network of fake transports standing for gateways.

// FakeClock runs timers when the test advances time with tick(ms).
export class FakeClock {
  constructor() { this.t = 0; this.timers = new Map(); this.seq = 0; }
  now() { return this.t; }
  // As browsers and Node, a delay over 2^31-1 ms fires at once (1 ms).
  setTimeout(fn, ms) {
    const id = ++this.seq;
    const d = ms > 2 ** 31 - 1 ? 1 : Math.max(0, ms || 0);
    this.timers.set(id, { at: this.t + d, fn });
    return id;
  }
  clearTimeout(id) { this.timers.delete(id); }
  // tick advances time by ms, running every timer due on the way, in order.
  tick(ms) {
    const end = this.t + ms;
    for (;;) {
      let next = null;
      for (const [id, tm] of this.timers) if (tm.at <= end && (!next || tm.at < next[1].at || (tm.at === next[1].at && id < next[0]))) next = [id, tm];
      if (!next) break;
      this.timers.delete(next[0]);
      this.t = next[1].at;
      next[1].fn();
    }
    this.t = end;
  }
  // pending returns the delays from now of the timers set.
  pending() { return [...this.timers.values()].map((tm) => tm.at - this.t).sort((a, b) => a - b); }
}

export class FakeStorage {
  constructor() { this.m = new Map(); }
  getItem(k) { return this.m.has(k) ? this.m.get(k) : null; }
  setItem(k, v) { this.m.set(k, String(v)); }
  removeItem(k) { this.m.delete(k); }
}

// FakeConn is one transport the client opened.
export class FakeConn {
  constructor(name, url, h) { Object.assign(this, { name, url, h, sent: [], closed: null }); }
  send(text) { if (this.closed) throw new Error('send on a closed transport'); this.sent.push(text); }
  close(code, reason) { this.closed = { code, reason, by: 'client' }; }
  frames(op) { return this.sent.map((s) => JSON.parse(s)).filter((f) => !op || f.op === op); }
  // server side
  open(detail) { this.h.open(detail); }
  // connected answers the client's connect frame, if it sent one.
  connected(id = 'c1', user) { this.push({ op: 'connected', connection: id, user, id: this.frames('connect').at(-1)?.id }); }
  push(...objs) { this.h.message(objs.map((o) => (typeof o === 'string' ? o : JSON.stringify(o))).join('\n')); }
  drop(code = 1006, reason = '') { this.closed = { code, reason, by: 'server' }; this.h.close(code, reason); }
}

export class FakeNet {
  constructor() { this.conns = []; this.refuse = new Set(); }
  create(name, url, h) {
    if (this.refuse.has(name)) throw new Error(`${name} blocked`);
    const c = new FakeConn(name, url, h);
    this.conns.push(c);
    return c;
  }
  last() { return this.conns[this.conns.length - 1]; }
}

// settle lets promise callbacks (transport creation, resolutions) run.
export const settle = () => new Promise((r) => setImmediate(r));
