// Package log is Comet's durable channel store on bbolt.
//
// Each channel is an ordered stream of messages with dense offsets: 1 for
// the first message, then +1 with no gaps. Retention trims the oldest
// messages (by count and by age, per channel pattern) and never renumbers.
// Each channel has an epoch, a string that changes only when its history is
// reset (a deleted channel); a channel that never existed reports the
// cluster epoch, so that a client that subscribed before the first publish
// resumes without a false alarm.
//
// Every change goes through Update, which runs in one bbolt transaction and
// records the index of the Raft entry it applies in that same transaction.
// A restart therefore neither loses an applied entry nor applies one twice:
// Update skips indexes at or below Applied. Commits are fsynced (bbolt's
// default), or, with Config.DeferSync, left to the page cache and guarded by
// a boot marker: a file that was not closed cleanly in an earlier boot (a
// power loss) is moved aside and the log starts empty, to be rebuilt by
// Raft from its last snapshot and its log. That is what hubs use: the
// Raft log, fsynced before every acknowledgement, is what makes a message
// durable, and the channel log is a view of it.
//
// Everything that an Update does is deterministic in its inputs: time comes
// from the caller (the Raft leader stamps each entry), never from the clock,
// and random values (epochs) come in the entry too. The same entries applied
// to two stores give the same contents.
//
// The package knows nothing of Raft or the network.
//
// # Caveats
//
// Age retention runs when a channel is written to and when Sweep is applied;
// a channel that receives nothing keeps expired messages until the next
// Sweep. Snapshots are whole bbolt files; a long snapshot holds a read
// transaction, during which bbolt cannot reuse freed pages, and, once the
// file outgrows the 1 GiB mapped up front, an Update that grows it waits
// until the snapshot is released.
package log
