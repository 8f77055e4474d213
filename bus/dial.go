package bus

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// ErrNoHubs is returned by a HubDialer given no hub addresses.
var ErrNoHubs = errors.New("no hub addresses")

// HubDialer returns a function that opens a session Link to the leader of
// the hubs at API addresses hubs (host:port): it dials ws://HUB/v1/bus (or
// wss://, verifying the hubs' certificates with tlsConfig, when it is not
// nil),
// starting with the hub that worked last, goes to the leader a follower
// names (421), and otherwise moves on to the next hub, trying each hub at
// most twice per call. With a secret, the handshake carries
// "Authorization: Bearer <secret>". Waiting between calls is the caller's
// business.
func HubDialer(hubs []string, secret string, tlsConfig *tls.Config, logger *slog.Logger) func(ctx context.Context) (Link, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	hubs = append([]string(nil), hubs...)
	header := http.Header{}
	if secret != "" {
		header.Set("Authorization", "Bearer "+secret)
	}
	var (
		mu   sync.Mutex
		last string // the address that worked last, maybe a leader outside hubs
		next int    // where to start in hubs otherwise
		// A hub whose session was given up as stalled, and until when it
		// is not dialed for a hint: the others still name it as leader
		// until they elect another.
		stalledAddr  string
		stalledUntil time.Time
	)
	return func(ctx context.Context) (Link, error) {
		if len(hubs) == 0 {
			return nil, ErrNoHubs
		}
		mu.Lock()
		addr, start := last, next
		avoid := ""
		if time.Now().Before(stalledUntil) {
			avoid = stalledAddr
		}
		mu.Unlock()
		if addr == "" {
			addr = hubs[start%len(hubs)]
		}
		var errs []error
		tried := map[string]int{}
		if avoid != "" && len(hubs) > 1 {
			tried[avoid] = 2 // not dialed by this call
			if addr == avoid {
				addr = hubs[(start+1)%len(hubs)]
			}
		}
		// Every hub twice, plus the hints: the bound of the loop.
		for attempt := 0; attempt < 3*len(hubs)+2 && ctx.Err() == nil; attempt++ {
			tried[addr]++
			link, hint, err := dialHub(ctx, addr, header, tlsConfig)
			if err == nil {
				mu.Lock()
				last = addr
				mu.Unlock()
				// A session given up as stalled (a paused hub) sends the
				// next dial elsewhere first.
				stalled := func() {
					mu.Lock()
					if last == addr {
						last = ""
						if i := slices.Index(hubs, addr); i >= 0 {
							next = i + 1
						}
					}
					stalledAddr, stalledUntil = addr, time.Now().Add(stallAvoid)
					mu.Unlock()
				}
				return &hubLink{Link: link, stalled: stalled}, nil
			}
			logger.Debug("bus dial failed", "hub", addr, "err", err)
			errs = append(errs, err)
			if hint != "" && hint != avoid && tried[hint] < 2 {
				addr = hint
				continue
			}
			// The next hub in the list not tried twice yet.
			found := false
			for i := range hubs {
				cand := hubs[(start+1+i)%len(hubs)]
				if tried[cand] < 2 {
					start = (start + 1 + i) % len(hubs)
					addr, found = cand, true
					break
				}
			}
			if !found {
				break
			}
		}
		mu.Lock()
		last, next = "", start+1
		mu.Unlock()
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
		}
		return nil, fmt.Errorf("no hub took the bus session: %w", errors.Join(errs...))
	}
}

// dialHub dials one hub; hint is the leader it names when it refuses.
func dialHub(ctx context.Context, addr string, header http.Header, tlsConfig *tls.Config) (Link, string, error) {
	scheme := "ws://"
	if tlsConfig != nil {
		scheme = "wss://"
	}
	link, resp, err := Dial(ctx, scheme+addr+BusPath, header, tlsConfig)
	if err == nil {
		return link, "", nil
	}
	if resp == nil || !errors.Is(err, websocket.ErrBadHandshake) {
		return nil, "", fmt.Errorf("%s: %w", addr, err)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	var e wire.Error
	if json.Unmarshal(body, &e) != nil || e.Code == "" {
		e = wire.Error{Code: wire.CodeUnavailable, Message: fmt.Sprintf("%s: %s %.200s", addr, resp.Status, body)}
	}
	if resp.StatusCode == http.StatusMisdirectedRequest && e.Leader != "" && e.Leader != addr {
		return nil, e.Leader, fmt.Errorf("%s: %w", addr, &e)
	}
	return nil, "", fmt.Errorf("%s: %d: %w", addr, resp.StatusCode, &e)
}

// stallAvoid is how long a HubDialer does not follow hints to a hub whose
// session was given up as stalled: about an election's time.
const stallAvoid = 5 * time.Second

// hubLink is a Link a HubDialer made: Stalled tells the dialer to try
// other hubs first next time.
type hubLink struct {
	Link
	stalled func()
}

func (l *hubLink) Stalled() { l.stalled() }

// stallNoter is a Link that wants to know its session was given up as
// stalled.
type stallNoter interface{ Stalled() }
