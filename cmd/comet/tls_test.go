package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/comethq/comet/internal/testca"
)

// TestTLSFlagErrors: TLS flags given wrong are usage errors (exit 2) with
// a message that says what to do, before anything starts.
func TestTLSFlagErrors(t *testing.T) {
	ca := testca.New(t, "flags")
	dir := t.TempDir()
	cert, key := ca.Issue(t, "h1").Write(t, dir, "h1")
	hub := []string{"hub", "--id", "h1", "--data", t.TempDir(), "--raft", "127.0.0.1:1", "--api", "127.0.0.1:2",
		"--peers", "h1=127.0.0.1:1"}
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"hub cert without key", append(hub[:len(hub):len(hub)], "--tls-cert", cert), "--tls-cert and --tls-key go together"},
		{"hub key without cert", append(hub[:len(hub):len(hub)], "--tls-key", key), "--tls-cert and --tls-key go together"},
		{"hub CA without cert", append(hub[:len(hub):len(hub)], "--tls-ca", ca.File), "--tls-ca is for hubs with TLS"},
		{"hub bad CA", append(hub[:len(hub):len(hub)], "--tls-cert", cert, "--tls-key", key, "--tls-ca", key), "no PEM certificate"},
		{"hub key that does not match", append(hub[:len(hub):len(hub)], "--tls-cert", cert, "--tls-key", ca.File), "--tls-key"},
		{"gateway cert without key", []string{"gateway", "--hubs", "127.0.0.1:1", "--tls-cert", cert}, "--tls-cert and --tls-key go together"},
		{"gateway mixed hubs", []string{"gateway", "--hubs", "https://127.0.0.1:1,http://127.0.0.1:2"}, "mix https and http"},
		{"standalone key without cert", []string{"standalone", "--data", t.TempDir(), "--listen", "127.0.0.1:0", "--tls-key", key}, "--tls-cert and --tls-key go together"},
		{"cluster status bad CA", []string{"cluster", "status", "--api", "127.0.0.1:1", "--tls-ca", key}, "no PEM certificate"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if code := run(tc.args, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), tc.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 2 saying %q", code, errOut.String(), tc.want)
			}
		})
	}
}
