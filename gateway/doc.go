// Package gateway holds client connections (WebSocket at /ws, SockJS at
// /sockjs) and delivers channel messages to their subscriptions. It keeps no
// durable state: it follows the hubs' commit stream, reads channels from the
// hubs with range reads, and reaches the hubs only through Hub (over HTTP,
// HTTPHubs; in process, `comet standalone`).
//
// # What it promises
//
// A subscription gets every message of its channel from the offset it asks
// for (or, without one, from the channel's next offset when it subscribes),
// each once and in offset order: first a replay of what is already committed
// (from the channel's cache or the hubs), then live messages, with no gap
// and no duplicate between them. When it cannot keep that promise it does
// not send less: it closes the connection with a code (4002 slow consumer,
// 4004 resync, 4005 hubs unavailable), and the client resubscribes from its
// last offset and is told in subscribed what was lost, if anything
// (docs/protocol.md).
//
// # How
//
// A channel followed (one with subscribers, or lingering after the last
// left) knows its epoch, first and next offset and caches recent messages.
// Its state is one range read, reflecting every entry up to the Raft index
// the answering hub had applied (asOf), plus the messages of later entries
// from the commit stream: lines of the channel received while it reads
// (syncs) are held, then applied by offset; lines at or below asOf are
// already in the read; a line past next or of another epoch (a gap, a reset
// channel) starts a sync whose read must reflect that line's index.
//
// The stream has a position, done: every entry up to it was received whole.
// After a failover the gateway asks the next hub for done+1 and drops by
// offset what it gets twice. Without a position (at start, after a reset,
// and while no stream has given a line) a stream is opened from now, and the
// hub's first line, sent at once, says where it starts: a heartbeat whose
// Applied is the index the stream starts after (Server.position). Entries up
// to that index are not on the stream, and a channel's read made before the
// line came may not hold them all, so every channel must cover it: a sync
// under way reads until its read reflects it, a live channel whose read did
// not is read again, and every sync started later requires it too
// (channel.coverLocked, channel.startSyncLocked). This is what makes "no
// gap" hold for a quiet channel: without it, a message committed between a
// channel's first read and the stream's start would wait for the channel's
// next message.
//
// A subscription registers at the channel's next offset N under the
// channel's lock, replays up to N-1 while live messages for it are held in a
// bounded pending list, then, under the channel's lock again, sends the
// pending messages after where the replay ended and goes live (sub.run).
//
// # Costs
//
// Each connection has a bounded queue (Config.QueueMessages,
// Config.QueueBytes), each channel a bounded cache and hold list, each
// subscription a bounded pending list: overflowing one disconnects a slow
// client or makes the channel read again, never blocks the stream. Syncs
// are queued and run by at most Config.MaxSyncReads workers, one read each
// at a time (after a stream reset every channel followed is read again);
// new channels go first, and a channel whose read failed or brought nothing
// waits out its backoff (exponential, with jitter) in the queue, holding no
// worker (syncQueue).
//
// # Lock order
//
// Locks are taken in this order, never the other way:
//
//	conn.mu -> Server.mu -> channel.mu -> conn.qmu
//	                        channel.mu -> syncQueue.mu -> Server.goMu
//
// and, for a WebSocket's writes:
//
//	conn.wmu -> wsSocket.mu -> conn.qmu
//	conn.wmu -> gorilla's write lock -> wsSocket.mu
//
// (the fan-out's direct write, conn.flush, takes the first two with
// TryLock and runs after the channel's lock is released; the writer and
// the close handler hold wmu around gorilla's writes, and gorilla's reader
// takes its write lock, then the socket's, for the close frame of a
// protocol error).
//
// (subscribing holds the connection's lock while Server.acquire takes the
// server's and the channel's; fan-out and resets take connections' queue
// locks under a channel's; starting a sync queues the channel, and maybe
// starts a worker, under the channel's lock). Sync workers take the queue's
// lock and a channel's one after the other, never together. The stream
// reader holds no lock while it reads, and takes a channel's lock only
// after releasing the server's.
//
// # Caveats
//
// Hubs of an older build do not send the first line at once: the stream's
// first line of any kind (a message, or the heartbeat after a quiet second)
// positions it instead, which is as exact, only later.
package gateway
