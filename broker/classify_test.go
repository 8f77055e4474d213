package broker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"

	"github.com/comethq/comet/log"
	"github.com/comethq/comet/raft"
	"github.com/comethq/comet/wire"
)

// TestClassify: each error a request can meet has its status and code.
// "timeout" tells a client its publish may be stored; "unavailable" is for
// what was certainly not stored too (raft.ErrTimeout: Raft never took the
// entry).
func TestClassify(t *testing.T) {
	for _, tc := range []struct {
		err    error
		status int
		code   string
	}{
		{fmt.Errorf("publish: %w", raft.ErrTimeout), http.StatusServiceUnavailable, wire.CodeUnavailable},
		{fmt.Errorf("publish: %w", context.DeadlineExceeded), http.StatusGatewayTimeout, wire.CodeTimeout},
		{raft.ErrNotLeader, http.StatusServiceUnavailable, wire.CodeUnavailable},
		{raft.ErrUnknownOutcome, http.StatusServiceUnavailable, wire.CodeUnavailable},
		{raft.ErrClosed, http.StatusServiceUnavailable, wire.CodeUnavailable},
		{ErrNoLeader, http.StatusServiceUnavailable, wire.CodeUnavailable},
		{fmt.Errorf("join: %w", raft.ErrIDInUse), http.StatusConflict, wire.CodeBadRequest},
		{fmt.Errorf("join: %w", raft.ErrAddrInUse), http.StatusBadRequest, wire.CodeBadRequest},
		{log.ErrBadChannel, http.StatusBadRequest, wire.CodeBadRequest},
		{ErrTooLarge, http.StatusRequestEntityTooLarge, wire.CodeTooLarge},
		{errors.New("something else"), http.StatusInternalServerError, wire.CodeUnavailable},
	} {
		status, code, _ := classify(tc.err)
		if status != tc.status || code != tc.code {
			t.Errorf("%v: %d %s, want %d %s", tc.err, status, code, tc.status, tc.code)
		}
		if got := ErrorCode(tc.err); got != tc.code {
			t.Errorf("ErrorCode(%v) = %s, want %s", tc.err, got, tc.code)
		}
	}
}
