package gateway

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/comethq/comet/auth"
	"github.com/comethq/comet/wire"
)

// Authentication of a connection (docs/protocol.md, "Authentication"):
//
//   - a token in the URL (?token=) is checked before anything is sent:
//     refused, the client gets an error frame and close 4006; accepted, the
//     connected frame names the user;
//   - without one, an anonymous connection is let in at once where
//     Config.AllowAnonymous; elsewhere the gateway waits up to
//     Config.AuthTimeout for a connect frame and refuses anything else;
//   - a connect frame on an open connection authenticates an anonymous one,
//     or refreshes the token of the same user;
//   - when the token expires and no fresh one came, the connection gets an
//     error frame "token expired" and close 4006.
//
// Clients are told only "token required", "invalid token" or "token
// expired", never why a token was refused: that goes to the gateway's log.

// Messages of refused connections.
const (
	msgTokenRequired = "token required: connect with ?token= or send {\"op\":\"connect\",\"token\":...} first"
	msgNoTokens      = "this gateway accepts no tokens (no token key is configured)"
	msgOtherUser     = "a connection cannot change user: open a new connection"
)

// verify checks a token; the error is what the client may be told.
func (s *Server) verify(token string) (auth.Identity, error) {
	if s.cfg.Tokens == nil {
		return auth.Identity{}, errors.New(msgNoTokens)
	}
	id, err := s.cfg.Tokens.Verify(token, time.Now())
	if err != nil {
		s.log.Debug("token refused", "err", err)
		if errors.Is(err, auth.ErrExpired) {
			return auth.Identity{}, auth.ErrExpired
		}
		return auth.Identity{}, auth.ErrInvalid
	}
	return id, nil
}

// admit lets the connection in as id: the connected frame (answering
// frame frameID, if any), the expiry timer, the connected event.
func (c *conn) admit(id auth.Identity, frameID string) {
	c.mu.Lock()
	first := !c.admitted
	c.admitted, c.ident = true, id
	c.expiry++
	gen := c.expiry
	if c.expireTimer != nil {
		c.expireTimer.Stop()
		c.expireTimer = nil
	}
	if !id.Expires.IsZero() {
		c.expireTimer = time.AfterFunc(time.Until(id.Expires), func() { c.expire(gen) })
	}
	c.mu.Unlock()
	c.send(wire.Connected{Op: wire.OpConnected, ID: frameID, Connection: c.id, User: id.User})
	if first {
		c.s.event(Event{Type: EventConnected, Conn: c.id, User: id.User})
	}
}

// expire ends the connection when its token expired and was not replaced
// since (gen is the admission it was set for).
func (c *conn) expire(gen uint64) {
	c.mu.Lock()
	current := c.expiry == gen
	c.mu.Unlock()
	if !current {
		return
	}
	c.s.m.authFailures.WithLabelValues("expired").Inc()
	c.refuse("", auth.ErrExpired.Error())
}

// refuse sends a forbidden error frame and closes with 4006.
func (c *conn) refuse(frameID, msg string) {
	c.sendError(frameID, wire.CodeForbidden, msg)
	c.close(wire.CloseAuth, msg)
}

// connect handles a connect frame: the first authentication of a
// connection, an anonymous one becoming a user, or a user's fresh token.
// MaxInfoBytes bounds the info a client sends in its connect frame.
const MaxInfoBytes = 1024

func (c *conn) connect(f wire.ClientFrame) {
	if len(f.Info) > 0 {
		if len(f.Info) > MaxInfoBytes || f.Info[0] != '{' {
			c.sendError(f.ID, wire.CodeBadRequest, fmt.Sprintf("info must be a JSON object of at most %d bytes", MaxInfoBytes))
			return
		}
		c.mu.Lock()
		c.info = slices.Clone(f.Info)
		c.mu.Unlock()
	}
	if f.Token == "" {
		// Info alone: the connection stays who it is (anonymous, or the
		// user of its URL's token), if it was let in.
		c.mu.Lock()
		id, admitted := c.ident, c.admitted
		c.mu.Unlock()
		if !admitted {
			c.s.m.authFailures.WithLabelValues("missing").Inc()
			c.refuse(f.ID, msgTokenRequired)
			return
		}
		c.send(wire.Connected{Op: wire.OpConnected, ID: f.ID, Connection: c.id, User: id.User})
		return
	}
	id, err := c.s.verify(f.Token)
	if err != nil {
		c.s.m.authFailures.WithLabelValues(authFailure(err)).Inc()
		c.refuse(f.ID, err.Error())
		return
	}
	c.mu.Lock()
	prev, admitted := c.ident, c.admitted
	c.mu.Unlock()
	if admitted && !prev.Anonymous() && prev.User != id.User {
		c.sendError(f.ID, wire.CodeForbidden, msgOtherUser)
		return
	}
	c.admit(id, f.ID)
}

func authFailure(err error) string {
	switch {
	case errors.Is(err, auth.ErrExpired):
		return "expired"
	case errors.Is(err, auth.ErrInvalid):
		return "invalid"
	default:
		return "no_key"
	}
}
