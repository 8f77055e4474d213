package js

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"
)

// needNode returns the node binary, or skips the test when there is none;
// with COMET_BROWSER_TESTS=1 (as in CI) it fails instead.
func needNode(t *testing.T) string {
	t.Helper()
	node, err := exec.LookPath("node")
	if err != nil {
		if os.Getenv("COMET_BROWSER_TESTS") == "1" {
			t.Fatalf("COMET_BROWSER_TESTS=1 but node is not installed: %v", err)
		}
		t.Skipf("node is not installed: %v", err)
	}
	return node
}

// TestJSUnit runs the unit tests of comet.js (Node's test runner, no npm
// packages needed): reconnect schedule, frame splitting, resume
// bookkeeping, publish retry.
func TestJSUnit(t *testing.T) {
	node := needNode(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "test/unit/")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test test/unit/: %v\n%s", err, out)
	}
	if m := regexp.MustCompile(`(?m)^# pass (\d+)$`).FindSubmatch(out); m == nil || string(m[1]) == "0" {
		t.Fatalf("node --test ran no test:\n%s", out)
	}
	t.Logf("%s", bytes.TrimSpace(out[bytes.LastIndex(out, []byte("# tests")):]))
}

// TestJSFiles checks what gateways serve: the files are embedded, the
// npm versions are pinned exactly, and vendor/sockjs.min.js is the pinned
// sockjs-client's build (compared with node_modules when installed).
func TestJSFiles(t *testing.T) {
	for _, name := range []string{"comet.js", "vendor/sockjs.min.js", "demo/index.html"} {
		if b, err := fs.ReadFile(Files, name); err != nil || len(b) == 0 {
			t.Errorf("%s is not embedded: %v", name, err)
		}
	}
	raw, err := os.ReadFile("package.json")
	if err != nil {
		t.Fatal(err)
	}
	var pkg struct {
		DevDependencies map[string]string `json:"devDependencies"`
	}
	if err := json.Unmarshal(raw, &pkg); err != nil {
		t.Fatal(err)
	}
	exact := regexp.MustCompile(`^\d+\.\d+\.\d+$`)
	for name, v := range pkg.DevDependencies {
		if !exact.MatchString(v) {
			t.Errorf("package.json: %s is %q, want an exact version", name, v)
		}
	}
	version := pkg.DevDependencies["sockjs-client"]
	vendored, _ := fs.ReadFile(Files, "vendor/sockjs.min.js")
	if header := "/* sockjs-client v" + version + " "; !bytes.HasPrefix(vendored, []byte(header)) {
		t.Errorf("vendor/sockjs.min.js does not start with %q (the licence header of the pinned version)", header)
	}
	dist, err := os.ReadFile("node_modules/sockjs-client/dist/sockjs.min.js")
	if err != nil {
		t.Logf("node_modules not installed (npm ci): not compared with the npm package")
		return
	}
	// The copy drops only the sourceMappingURL line (the map is not served).
	var kept []string
	for _, line := range strings.SplitAfter(string(dist), "\n") {
		if !strings.HasPrefix(line, "//# sourceMappingURL=") {
			kept = append(kept, line)
		}
	}
	if strings.Join(kept, "") != string(vendored) {
		t.Errorf("vendor/sockjs.min.js differs from node_modules/sockjs-client/dist/sockjs.min.js: run npm run vendor")
	}
}
