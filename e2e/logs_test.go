package e2e

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestCleanStartLogs: the logs of a healthy start of three hubs, a gateway
// and a standalone hold no warning and no error, no unformatted value
// (raft's servers= showed a literal %+v), no key twice on a line
// (component=bus component=bus), and one INFO line that says the process
// is ready and where.
func TestCleanStartLogs(t *testing.T) {
	c := startCluster(t, 3)
	g := c.startGateway("g1")
	s := c.startStandalone(filepath.Join(c.dir, "standalone"), false)

	type proc struct {
		h     *hub
		ready []string // what its ready line must hold
	}
	procs := []proc{{g, []string{`msg="gateway ready"`, "ws=ws://" + g.api + "/ws", "sockjs=http://" + g.api + "/sockjs", "version="}},
		{s, []string{`msg="comet standalone ready: a single-node hub and a gateway"`, "ws=ws://" + s.api + "/ws", "hub_api=http://" + s.api + "/v1/", "version="}}}
	for _, h := range c.hubs {
		procs = append(procs, proc{h, []string{`msg="hub ready"`, "node=" + h.id, "api=http://" + h.api + "/v1/", "raft=" + h.raft, "leader=h", "version="}})
	}
	readyLine := regexp.MustCompile(`msg="[^"]*ready\b`)
	keyValue := regexp.MustCompile(`(?:^| )([a-z_.-]+)=`)
	for _, p := range procs {
		waitFor(t, 10*time.Second, p.h.id+"'s ready line", func() bool { return p.h.logContains(p.ready[0]) })
		raw, err := os.ReadFile(p.h.logPath)
		if err != nil {
			t.Fatal(err)
		}
		var ready []string
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			if strings.HasPrefix(line, "=== e2e:") {
				continue // the harness's
			}
			if !strings.Contains(line, "level=INFO") {
				t.Errorf("%s: not INFO on a healthy start: %s", p.h.id, line)
			}
			if strings.Contains(line, "%+v") || strings.Contains(line, "%!") {
				t.Errorf("%s: an unformatted value: %s", p.h.id, line)
			}
			seen := map[string]bool{}
			for _, m := range keyValue.FindAllStringSubmatch(line, -1) {
				if seen[m[1]] {
					t.Errorf("%s: %s= twice: %s", p.h.id, m[1], line)
				}
				seen[m[1]] = true
			}
			if readyLine.MatchString(line) {
				ready = append(ready, line)
			}
		}
		if len(ready) != 1 {
			t.Errorf("%s: %d ready lines, want 1: %q", p.h.id, len(ready), ready)
			continue
		}
		for _, want := range p.ready {
			if !strings.Contains(ready[0], want) {
				t.Errorf("%s: the ready line does not say %s: %s", p.h.id, want, ready[0])
			}
		}
	}
}
