// Package raft is a hub's consensus node: hashicorp/raft over TCP (or an
// in-memory transport), its log and stable store, and the FSM that applies
// committed entries to the channel log (package log).
//
// # What it promises
//
//   - An entry is committed only once a quorum has it in its Raft log on
//     disk: every append to the log is written and fdatasynced before Raft
//     hears it succeeded (raft-wal over walFS, see logstore.go and
//     walfs.go). So an acknowledged publish survives kill -9 of any
//     minority, and a restart of every hub.
//   - Every hub applies the same committed entries in the same order, each
//     once: the FSM records the last applied Raft index in the channel log
//     in the same bbolt transaction as the entries' messages, and skips
//     what it already has after a restart or a snapshot restore.
//   - An entry whose bytes do not decode is refused by every hub alike
//     (logged, answered with the error). A committed entry that decodes
//     but cannot be written to the channel log is never skipped, which
//     would make this hub's channels differ from the others': the FSM stops
//     there (see fsm.go for what it does on a full disk).
//   - Every entry carries a CRC-32C, checked whenever it is read (raft-wal
//     checks only the tail's last batch, at open), and the whole log is
//     read once at start: a damaged file fails New with an error wrapping
//     ErrCorruptLog and naming the file; it never reaches the channel log
//     as a different entry. A full disk fails appends (Raft refuses the
//     write), and the log takes appends again once there is room, without
//     a restart (logstore.go).
//   - The Raft log of an earlier release (raft.db and its journal) is moved
//     into raft-wal at the first start, whole or not at all (legacy.go).
//
// # What it costs
//
// An acknowledged entry costs two disk syncs in series (the leader's
// append, then a follower's) plus the network round trip; the FSM's bbolt
// commit is not synced on that path (the Raft log is the durable copy, and
// the FSM catches up from it after a crash). The log holds at most
// TrailingLogs entries after a snapshot, in whole 64 MiB segments, plus
// one spare segment made ahead.
//
// # Concurrency
//
// hashicorp/raft calls the log store from its own goroutines and from the
// transport's; guardedStore lets Close wait for calls in progress and
// parks later ones (Raft would panic on a closed store). Locks, outermost
// first: Node.applyMu (held for reading while an entry is handed to Raft,
// for writing by Close), guardedStore.mu, walStore.mu (held for writing
// only while raft-wal is reopened after a failed segment rotation, see
// logstore.go), raft-wal's own, then walFS.mu.
// The FSM runs on Raft's FSM goroutine only.
package raft
