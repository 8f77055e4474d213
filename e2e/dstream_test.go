package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// The Durable Streams tests run the protocol's own conformance suite
// (npm @durable-streams/server-conformance-tests, pinned in
// e2e/dstream/package.json) and its TypeScript client against real comet
// processes. Like the browser tests they skip when node or the npm
// packages are missing, unless COMET_BROWSER_TESTS=1 (as in CI): then they
// fail.

// needDurableSuite returns e2e/dstream's directory, with its packages
// installed (npm ci there).
func needDurableSuite(t *testing.T) string {
	t.Helper()
	needNode(t)
	dir, err := filepath.Abs("dstream")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"vitest", "@durable-streams/server-conformance-tests", "@durable-streams/client"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", p)); err != nil {
			missingTool(t, "%s is not installed (npm ci in e2e/dstream): %v", p, err)
		}
	}
	return dir
}

var suiteCounts = regexp.MustCompile(`Tests\s+(.*\(\d+\))`)

// runConformance runs the suite against base and returns its counts line.
func runConformance(t *testing.T, dir, base string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(dir, "node_modules", ".bin", "vitest"), "run", "conformance.test.mjs",
		"--reporter=default", "--no-color")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CONFORMANCE_TEST_URL="+base, "LONG_POLL_MS=2000", "NO_COLOR=1", "CI=1")
	out, err := cmd.CombinedOutput()
	text := regexp.MustCompile("\x1b\\[[0-9;]*m").ReplaceAllString(string(out), "")
	m := suiteCounts.FindStringSubmatch(text)
	if err != nil || m == nil || strings.Contains(m[1], "failed") {
		t.Fatalf("conformance suite against %s: %v\n%s", base, err, tail(text, 150))
	}
	return m[1]
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

func TestDurableStreamsConformance(t *testing.T) {
	dir := needDurableSuite(t)
	t.Run("standalone", func(t *testing.T) {
		c := newCluster(t)
		s := c.startStandalone(filepath.Join(c.dir, "data"), true, "--stream-long-poll", "2s")
		t.Logf("standalone: %s", runConformance(t, dir, "http://"+s.api))
	})
	t.Run("cluster", func(t *testing.T) {
		c := startCluster(t, 3)
		g := c.startGateway("g1", "--allow-anonymous", "--stream-long-poll", "2s")
		t.Logf("3 hubs and a gateway: %s", runConformance(t, dir, "http://"+g.api))
	})
}
