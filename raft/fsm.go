package raft

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/comethq/comet/log"
	hraft "github.com/hashicorp/raft"
)

// Event is one message as it was committed and applied, for the commit
// stream that feeds gateways.
type Event struct {
	Index   uint64
	Channel string
	Offset  uint64
	Epoch   string
	Time    time.Time
	Data    []byte
}

// Observer hears about applied entries, in index order, on the FSM's
// goroutine: it must not block. Applied is called after every batch that
// applied entries first..last (entries a restart replays but the log
// already held are not reported), with the events of its published
// messages (duplicates excluded), a slice it may not keep: the next batch
// reuses it. Restored is called after a snapshot replaced the log.
type Observer interface {
	Applied(first, last uint64, events []Event)
	Restored(index uint64)
}

// fsm applies committed entries to the channel log. Whole batches of entries
// go into one bbolt transaction; entries at or below the log's applied index
// are skipped, so replay after a restart applies nothing twice.
type fsm struct {
	log      *log.Log
	observer Observer
	logger   *slog.Logger
	events   []Event // for the next batch, to spare allocating it each time
}

// maxKeptEvents bounds the events slice an fsm keeps between batches.
const maxKeptEvents = 1 << 16

var _ hraft.BatchingFSM = (*fsm)(nil)

func (f *fsm) Apply(l *hraft.Log) interface{} {
	return f.ApplyBatch([]*hraft.Log{l})[0]
}

func (f *fsm) ApplyBatch(logs []*hraft.Log) []interface{} {
	resp := make([]interface{}, len(logs))
	if len(logs) == 0 {
		return resp
	}
	events := f.events[:0]
	last := logs[len(logs)-1].Index
	first := logs[0].Index
	applied, err := f.log.Update(last, func(tx *log.Tx) error {
		// Entries between the stored index and this batch never reach the
		// FSM (no-ops, barriers) and carry no messages: count them in.
		first = tx.Applied() + 1
		for i, l := range logs {
			if l.Index <= tx.Applied() || l.Type != hraft.LogCommand {
				continue
			}
			cmd, err := DecodeCommand(l.Data)
			if err != nil {
				// Deterministic: every hub refuses the same bytes.
				f.logger.Error("skip undecodable entry", "index", l.Index, "err", err)
				resp[i] = err
				continue
			}
			r, evs, err := apply(tx, l.Index, cmd, events)
			if err != nil {
				return fmt.Errorf("apply entry %d: %w", l.Index, err)
			}
			resp[i] = r
			events = evs
		}
		return nil
	})
	if err != nil {
		// The disk failed under a committed entry: this hub cannot go on
		// without diverging from the others. Stop here; a restart replays
		// the entry from the Raft log.
		panic(fmt.Sprintf("comet: cannot apply committed entries up to %d: %v", last, err))
	}
	if f.observer != nil && applied {
		f.observer.Applied(first, last, events)
	}
	clear(events) // let the messages go
	if cap(events) <= maxKeptEvents {
		f.events = events[:0]
	}
	return resp
}

// apply applies one entry and returns its response, and events with the
// events of the messages it published appended.
func apply(tx *log.Tx, index uint64, c *Command, events []Event) (*Response, []Event, error) {
	now := tx.Tick(c.Time)
	if err := tx.InitEpoch(c.Epoch); err != nil {
		return nil, nil, err
	}
	r := &Response{Index: index}
	if len(c.Publish) > 0 {
		r.Results = make([]log.Result, len(c.Publish))
	}
	for i, p := range c.Publish {
		res, err := tx.Append(p.Channel, p.ID, p.Data, now)
		if err != nil {
			return nil, nil, err
		}
		r.Results[i] = res
		if res.Err == nil && !res.Duplicate {
			events = append(events, Event{Index: index, Channel: p.Channel, Offset: res.Offset,
				Epoch: res.Epoch, Time: now, Data: p.Data})
		}
	}
	if c.Retention != nil {
		if err := tx.SetRetention(c.Retention); err != nil {
			return nil, nil, err
		}
	}
	for _, ch := range c.Delete {
		if err := tx.DeleteChannel(ch, c.Epoch); err != nil {
			return nil, nil, err
		}
	}
	for _, kv := range c.Put {
		if err := tx.Put(kv.Key, kv.Value); errors.Is(err, log.ErrBadKey) {
			// Refused the same way on every hub: not a storage failure.
			r.Err = err
		} else if err != nil {
			return nil, nil, err
		}
	}
	if c.Sweep {
		if err := tx.Sweep(now); err != nil {
			return nil, nil, err
		}
	}
	return r, events, nil
}

func (f *fsm) Snapshot() (hraft.FSMSnapshot, error) {
	s, err := f.log.Snapshot()
	if err != nil {
		return nil, err
	}
	return &snapshot{s: s}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := f.log.Restore(rc); err != nil {
		return err
	}
	if f.observer != nil {
		f.observer.Restored(f.log.Applied())
	}
	return nil
}

type snapshot struct {
	s *log.Snapshot
}

func (s *snapshot) Persist(sink hraft.SnapshotSink) error {
	if _, err := s.s.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("persist snapshot: %w", err)
	}
	return sink.Close()
}

func (s *snapshot) Release() { s.s.Release() }
