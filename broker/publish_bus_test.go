package broker_test

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/bus"
	"github.com/comethq/comet/wire"
)

// TestBusPublishOrderAcrossLeaderChange: publishes sent over a gateway's
// bus session, many in flight, are each acknowledged once with their
// offset, and those of one sender to one channel are stored in the order
// sent, also across a change of leader in the middle; nothing is stored
// twice or lost.
func TestBusPublishOrderAcrossLeaderChange(t *testing.T) {
	c := newCluster3(t)
	l := c.leader()
	f := c.followers(l)[0]
	g, _ := startGateway(t, "gw1", hubDial(append([]*hub{f}, c.followers(f)...)...))

	const (
		senders = 8
		each    = 250
		window  = 64
	)
	type ack struct {
		res wire.PublishResponse
		err error
	}
	var (
		mu      sync.Mutex
		acks    = map[string][]ack{}
		wg      sync.WaitGroup
		halfway sync.WaitGroup
	)
	halfway.Add(senders)
	deadline := time.Now().Add(2 * time.Minute)
	for k := range senders {
		wg.Go(func() {
			room := make(chan struct{}, window)
			var done sync.WaitGroup
			for i := range each {
				if i == each/2 {
					halfway.Done()
				}
				room <- struct{}{}
				key := fmt.Sprintf("s%d-%d", k, i)
				data := json.RawMessage(fmt.Sprintf(`{"s":%d,"n":%d}`, k, i))
				done.Add(1)
				err := g.Publish(context.Background(), bus.Publish{Channel: "order", Key: key, Data: data, Deadline: deadline},
					func(res wire.PublishResponse, err error) {
						mu.Lock()
						acks[key] = append(acks[key], ack{res, err})
						mu.Unlock()
						<-room
						done.Done()
					})
				if err != nil {
					t.Errorf("Publish %s: %v", key, err)
					done.Done()
					<-room
				}
			}
			done.Wait()
		})
	}
	halfway.Wait()
	if err := l.node.TransferLeadership(); err != nil {
		t.Logf("leadership transfer: %v", err)
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	offsets := map[uint64]string{}
	dups := 0
	for key, as := range acks {
		if len(as) != 1 {
			t.Fatalf("%s answered %d times: %+v", key, len(as), as)
		}
		a := as[0]
		if a.err != nil {
			t.Fatalf("%s: %v", key, a.err)
		}
		if prev, ok := offsets[a.res.Offset]; ok {
			t.Fatalf("offset %d acknowledged for %s and %s", a.res.Offset, prev, key)
		}
		offsets[a.res.Offset] = key
		if a.res.Duplicate {
			dups++
		}
	}
	if len(offsets) != senders*each {
		t.Fatalf("%d acks, want %d", len(offsets), senders*each)
	}
	t.Logf("%d publishes acknowledged, %d of them as duplicates (sent again after the leader changed); leader now %s", len(offsets), dups, c.leader().id)

	var got wire.MessagesResponse
	eventually(t, 10*time.Second, func() error {
		var err error
		got, err = c.readAll(c.leader().api, "order")
		if err == nil && len(got.Messages) != senders*each {
			err = fmt.Errorf("%d messages, want %d", len(got.Messages), senders*each)
		}
		return err
	})
	checkDense(t, "leader", got.Messages, 1, senders*each)
	next := make([]int, senders)
	for _, m := range got.Messages {
		var d struct{ S, N int }
		if err := json.Unmarshal(m.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.N != next[d.S] {
			t.Fatalf("offset %d holds sender %d's message %d; want its message %d (stored out of order, twice or with a gap)", m.Offset, d.S, d.N, next[d.S])
		}
		next[d.S]++
		if key := fmt.Sprintf("s%d-%d", d.S, d.N); offsets[m.Offset] != key {
			t.Fatalf("offset %d holds %s but was acknowledged to %s", m.Offset, key, offsets[m.Offset])
		}
	}
}
