// A Comet client over socket.io-client, for the end-to-end test
// (e2e/socketio_test.go) and as the example of docs/socketio.md: it
// subscribes to a channel from a position, resumes from the last offset it
// saw after every reconnect, publishes with ids until acknowledged, and
// sends requests.
//
// Usage: node client.mjs URL CHANNEL FROM [TRANSPORTS]
// Commands on stdin, one a line: "pub ID JSON", "req ID ROUTE JSON", "quit".
// Prints one JSON object a line: connected, subscribed, msg, ack, resp,
// error, bad (an offset out of order), closed.
import { io } from 'socket.io-client';
import readline from 'node:readline';

const [url, channel, fromArg, transports = 'polling,websocket'] = process.argv.slice(2);
const out = (o) => process.stdout.write(JSON.stringify(o) + '\n');

let last = Number(fromArg) - 1; // the last offset seen
let epoch = '';
const unacked = new Map(); // publish id -> frame, sent again after a reconnect

const socket = io(url, { transports: transports.split(',') });
socket.on('comet', (f) => {
  switch (f.op) {
    case 'connected':
      out({ ev: 'connected', transport: socket.io.engine.transport.name });
      // Resume: from the offset after the last one seen, in its epoch.
      socket.emit('comet', { op: 'subscribe', channel, from: last + 1, ...(epoch && { epoch }) });
      for (const p of unacked.values()) socket.emit('comet', p);
      break;
    case 'subscribed':
      if (!f.recovered) out({ ev: 'bad', why: 'not recovered', f });
      epoch = f.epoch;
      out({ ev: 'subscribed', next: f.next });
      break;
    case 'message':
      if (f.offset <= last) break; // seen already (cannot happen on one connection)
      if (f.offset !== last + 1) out({ ev: 'bad', why: `offset ${f.offset} after ${last}` });
      last = f.offset;
      out({ ev: 'msg', offset: f.offset, data: f.data });
      break;
    case 'ack':
      unacked.delete(f.id);
      out({ ev: 'ack', id: f.id, offset: f.offset });
      break;
    case 'response':
      out({ ev: 'resp', id: f.id, data: f.data });
      break;
    case 'error':
      out({ ev: 'error', id: f.id, code: f.code, message: f.message });
      break;
  }
});
socket.on('comet:close', (c) => out({ ev: 'closed', code: c.code, reason: c.reason }));
socket.on('disconnect', (why) => out({ ev: 'disconnect', why }));

readline.createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, id, ...rest] = line.split(' ');
  if (cmd === 'pub') {
    const frame = { op: 'publish', channel, id, data: JSON.parse(rest.join(' ')) };
    unacked.set(id, frame);
    socket.emit('comet', frame);
  } else if (cmd === 'req') {
    socket.emit('comet', { op: 'request', id, route: rest[0], data: JSON.parse(rest.slice(1).join(' ') || 'null') });
  } else if (cmd === 'quit') {
    socket.close();
    process.exit(0);
  }
});
