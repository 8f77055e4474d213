package client

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/comethq/comet/wire"
	"github.com/gorilla/websocket"
)

// token asks Config.Token for a token, within RequestTimeout; "" means
// anonymous.
func (c *Client) token(ctx context.Context) (string, error) {
	if c.cfg.Token == nil {
		return "", nil
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.RequestTimeout)
	defer cancel()
	t, err := c.cfg.Token(ctx)
	if err != nil {
		return "", fmt.Errorf("get token: %w", err)
	}
	return t, nil
}

// refresh keeps cn's token fresh: at 80% of its remaining lifetime it gets
// a new one and sends it in a connect frame (the gateway answers
// "connected"), and so on for each new token, until ctx ends (cn ended). A
// failed Token call is retried with backoff until the token expires; the
// gateway then closes cn with 4006 and the client reconnects with a new
// token.
func (c *Client) refresh(ctx context.Context, cn *conn, token string) {
	exp := tokenExpiry(token)
	at := refreshTime(time.Now(), exp, c.cfg.MinBackoff)
	if at.IsZero() {
		return
	}
	timer := time.NewTimer(time.Until(at))
	defer timer.Stop()
	// Each turn waits for the timer; a new token's refresh time comes
	// earlier than its expiry, a retry's before the old token's expiry, and
	// refreshTime gives up within MinBackoff of an expiry: the loop ends.
	for attempts := 0; ; {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		t, err := c.token(ctx)
		if err == nil && t == "" {
			err = errors.New("get token: Token returned an empty token to refresh a connection's")
		}
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			attempts++
			at = time.Now().Add(c.jitter(attempts))
			c.log.Warn("token refresh failed", "err", err, "expires", exp)
			if !at.Before(exp) {
				return
			}
			timer.Reset(time.Until(at))
			continue
		}
		attempts = 0
		c.mu.Lock()
		if c.conn == cn && cn.ready {
			cn.enqueue(encode(wire.ClientFrame{Op: wire.OpConnect, ID: c.nextID("c"), Token: t}))
		}
		c.mu.Unlock()
		exp = tokenExpiry(t)
		if at = refreshTime(time.Now(), exp, c.cfg.MinBackoff); at.IsZero() {
			return
		}
		timer.Reset(time.Until(at))
	}
}

// refreshTime returns when to refresh a token that expires at exp: at 80%
// of its remaining lifetime. It is zero (never) when exp is zero, or when
// that would be less than floor from now: refreshing then would be a race
// with the expiry, and the reconnect after it is backed off.
func refreshTime(now, exp time.Time, floor time.Duration) time.Time {
	if exp.IsZero() {
		return time.Time{}
	}
	d := exp.Sub(now) * 4 / 5
	if d < max(floor, time.Millisecond) {
		return time.Time{}
	}
	return now.Add(d)
}

// tokenExpiry returns the exp claim of a JWT, read without verifying the
// token (the gateway does that): zero when it has none, or is not a JWT.
func tokenExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}
	}
	var claims struct {
		Exp *float64 `json:"exp"` // NumericDate: seconds, maybe with a fraction
	}
	if json.Unmarshal(payload, &claims) != nil || claims.Exp == nil || *claims.Exp <= 0 || *claims.Exp > 1e12 {
		return time.Time{}
	}
	sec, frac := math.Modf(*claims.Exp)
	return time.Unix(int64(sec), int64(frac*1e9))
}

// authError returns err, the end of a connection, wrapped with ErrAuth and
// the gateway's explanation (refused, may be nil) when the gateway closed
// the connection with 4006.
func authError(err error, refused *Error) error {
	var ce *websocket.CloseError
	if !errors.As(err, &ce) || ce.Code != wire.CloseAuth {
		return err
	}
	if refused != nil {
		return fmt.Errorf("%w: %w (%w)", ErrAuth, refused, err)
	}
	return fmt.Errorf("%w (%w)", ErrAuth, err)
}
