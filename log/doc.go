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
// to two stores give the same contents; grouped differently into Updates
// (with times stamped through Tx.Tick), they give the same messages, offsets
// and answers, in records cut differently.
//
// Messages that one Update appends to a channel are written as one record, a
// chunk (up to 4,096 messages or about 1 MiB; more make more chunks), keyed
// by its first offset: the cost of an Update is per channel, not per message.
// Retention deletes the chunks wholly below a channel's first offset; a chunk
// partly below it stays, and reads skip what it holds below.
//
// Publish ids are stored in their message's chunk and, for one window, in
// records of their own (one per channel per Update), from which Open and
// Restore rebuild an in-memory index that answers duplicate lookups. The
// window slides with entry times (the latest a committed Update saw), never
// the clock, and an Update's changes to the index are undone if bbolt does
// not commit it, so a hub that restarted answers like one that did not.
// HeldIDs reports its size. The index costs about 150 bytes of memory per id
// of 16 bytes on a channel of 12 (its key bytes, a 24-byte record header and
// a hash-map slot; BenchmarkIDMemory), none of it scanned by the garbage
// collector: 10 minutes at 1,000 ids/s is about 90 MB, at 100,000 ids/s it
// would be 9 GB. So it is bounded: it holds at most MaxIDs ids (replicated,
// Tx.SetMaxIDs; DefaultMaxIDs), and Append refuses a new id while it holds
// that many ids of the window (ErrTooManyIDs), as of the entry's time, the
// same however entries are grouped into Updates: every hub refuses the
// same publishes. No id is forgotten before the window ends.
//
// Stored bytes are checked: every chunk carries a CRC-32C, verified on
// every read, and Open walks the file's page tree before bbolt does (bbolt
// panics on a damaged page). Damage is ErrCorrupt naming the file, channel
// and offsets, never wrong or empty messages; Fault keeps the first found.
// A log opened with DeferSync (its caller rebuilds it) moves a damaged file
// aside at Open (PATH.damaged) and starts empty. An Update whose commit
// fails for want of space returns ErrNoSpace, stores nothing, and can be
// tried again; Fault reports it until an Update commits.
//
// The package knows nothing of Raft or the network.
//
// # Caveats
//
// The idempotency index costs about 125-135 bytes of memory per id it holds,
// plus the id (about 150 bytes per 16-byte id, measured), and it holds every
// id published in the last 10 minutes of entry time, up to MaxIDs: 1,000
// publishes a second with ids is 600,000 ids, about 90 MB. Past MaxIDs, new
// ids are refused, not stored: the steady rate of publishes with ids is at
// most MaxIDs per IdempotencyWindow. Open and Restore read the window's
// records to rebuild it. Ids outlive their messages: an id whose message
// retention deleted is still a duplicate within the window. When entry
// times go backwards within one Update (entries not stamped through
// Tx.Tick), a full index forgets expired ids only at the commit, so its
// refusals may then depend on the grouping.
//
// Chunks written before layout 4 have no checksum and are read unchecked
// until retention deletes them; the idempotency and meta records have none.
//
// Age retention runs when a channel is written to and when Sweep is applied;
// a channel that receives nothing keeps expired messages until the next
// Sweep. A chunk stays on disk until all of its messages are trimmed, so a
// channel may hold up to one chunk of trimmed messages beyond its retention.
// Snapshots are whole bbolt files; a long snapshot holds a read
// transaction, during which bbolt cannot reuse freed pages, and, once the
// file outgrows the 1 GiB mapped up front, an Update that grows it waits
// until the snapshot is released.
package log
