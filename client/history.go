package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/comethq/comet/wire"
)

// HistoryOptions selects a page of a channel's history. The zero value
// asks for the oldest 100 messages held.
type HistoryOptions struct {
	// Limit is the most messages returned (0: the gateway's default, 100;
	// at most 1,000).
	Limit int
	// Since returns messages after this offset (paging forwards: the last
	// offset of the previous page).
	Since uint64
	// Before returns messages before this offset (paging backwards with
	// Reverse: the oldest offset of the previous page). 0: no bound.
	Before uint64
	// SinceTime returns messages stored at or after this time.
	SinceTime time.Time
	// Reverse returns the newest messages of the window first.
	Reverse bool
}

// HistoryPage is a page of a channel's history.
type HistoryPage struct {
	Channel string
	// Epoch is the channel's epoch; First the oldest offset held and Next
	// the offset the next message will get.
	Epoch       string
	First, Next uint64
	// Messages are in offset order, or newest first with Reverse.
	Messages []HistoryMessage
}

// HistoryMessage is one message of a history page.
type HistoryMessage struct {
	Offset uint64
	Time   time.Time
	// Data is the message's data, exactly as published.
	Data []byte
}

// History reads a page of channel's history from the hubs' log, through
// the gateway. The page holds at least every message this client's
// connection was sent or had acknowledged on the channel. If the
// connection is lost before the answer, it is asked again on the next
// one. It gives up with an *Error of code timeout after
// Config.RequestTimeout, or with ctx's error.
func (c *Client) History(ctx context.Context, channel string, opts HistoryOptions) (HistoryPage, error) {
	if err := wire.CheckChannel(channel); err != nil {
		return HistoryPage{}, fmt.Errorf("history: %w", err)
	}
	if opts.Limit < 0 {
		return HistoryPage{}, fmt.Errorf("history %s: negative limit", channel)
	}
	f := wire.ClientFrame{Op: wire.OpHistory, Channel: channel, Reverse: opts.Reverse}
	if opts.Limit > 0 {
		n := uint64(opts.Limit)
		f.Limit = &n
	}
	if opts.Since > 0 {
		f.Since = &opts.Since
	}
	if opts.Before > 0 {
		f.Before = &opts.Before
	}
	if !opts.SinceTime.IsZero() {
		f.SinceTime = opts.SinceTime.UTC().Format(time.RFC3339Nano)
	}
	r, err := c.ask(ctx, f, true)
	if err != nil {
		if errors.Is(err, ErrClosed) {
			return HistoryPage{}, ErrClosed
		}
		return HistoryPage{}, fmt.Errorf("history %s: %w", channel, err)
	}
	h := r.reply
	page := HistoryPage{Channel: channel, Epoch: h.Epoch, First: h.First, Next: h.Next,
		Messages: make([]HistoryMessage, len(h.Messages))}
	for i, m := range h.Messages {
		page.Messages[i] = HistoryMessage{Offset: m.Offset, Time: m.Time, Data: m.Data}
	}
	return page, nil
}
