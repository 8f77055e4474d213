// Package broker is the hub service: it publishes messages through Raft
// with group commit, serves range reads from the local channel log, keeps
// cluster metadata (each hub's API address) in the replicated state, and
// serves the hub HTTP API of CONTRACT.md.
//
// A publish is acknowledged only after its entry is committed by a Raft
// quorum (each member fsyncs its Raft log before answering) and applied to
// the leader's channel log. Concurrent publishes are coalesced into one Raft
// entry, up to Config.BatchMaxMessages or Config.BatchMaxBytes; while
// Config.MaxInflight entries are being committed, the next batch forms, so
// throughput grows with concurrency rather than paying one fsync per
// message.
//
// Followers forward writes (publish, join, remove) to the leader's API.
// Reads are served by whichever hub receives them, from its own log: a
// follower may lag the leader by the entries it has not applied yet.
//
// # Caveats
//
// When leadership is lost while an entry is in flight, its outcome is
// unknown: the publish is answered "unavailable" and may still have been
// stored. Clients retry with the same id (guarantee 4) to be safe.
package broker
