package js

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
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

// TestNPMPackage packs comet.js as npm would publish it (npm pack), then
// installs the tarball into a project of its own, with no registry, and
// imports the package there by name: its exports, its types entry, and
// the SockJS build beside comet.js where loadSockJS looks for it.
func TestNPMPackage(t *testing.T) {
	node := needNode(t)
	npm, err := exec.LookPath("npm")
	if err != nil {
		if os.Getenv("COMET_BROWSER_TESTS") == "1" {
			t.Fatalf("COMET_BROWSER_TESTS=1 but npm is not installed: %v", err)
		}
		t.Skipf("npm is not installed: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	run := func(wd, name string, args ...string) []byte {
		t.Helper()
		cmd := exec.CommandContext(ctx, name, args...)
		cmd.Dir = wd
		cmd.Env = append(os.Environ(), "npm_config_cache="+filepath.Join(dir, "npm-cache"), "npm_config_audit=false",
			"npm_config_fund=false", "npm_config_update_notifier=false", "npm_config_offline=true")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return out
	}
	out := run(".", npm, "pack", "--pack-destination", dir, "--json")
	var packed []struct {
		Filename string `json:"filename"`
		Files    []struct {
			Path string `json:"path"`
		} `json:"files"`
	}
	if err := json.Unmarshal(out[bytes.IndexByte(out, '['):], &packed); err != nil || len(packed) != 1 {
		t.Fatalf("npm pack --json: %v\n%s", err, out)
	}
	var files []string
	for _, f := range packed[0].Files {
		files = append(files, f.Path)
	}
	slices.Sort(files)
	want := []string{"LICENSE", "comet.d.ts", "comet.js", "package.json", "sockjs-client.LICENSE", "sockjs.min.js"}
	if !slices.Equal(files, want) {
		t.Fatalf("the package holds %v, want %v", files, want)
	}
	for _, stray := range []string{"sockjs.min.js", "sockjs-client.LICENSE", "LICENSE"} {
		if _, err := os.Stat(stray); err == nil {
			t.Errorf("npm pack left %s in client/js (postpack)", stray)
		}
	}

	proj := filepath.Join(dir, "app")
	if err := os.MkdirAll(proj, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(proj, "package.json"), []byte(`{"name":"app","version":"1.0.0","type":"module"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	run(proj, npm, "install", filepath.Join(dir, packed[0].Filename))
	script := `
import * as comet from '@comethq/comet-browser';
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
const want = ['Backoff', 'CometError', 'autoReconnect', 'loadSockJS', 'sockjsUrlFor', 'tokenExpiry'];
const missing = want.filter((n) => typeof comet[n] !== 'function');
if (missing.length) throw new Error('missing exports: ' + missing);
const main = import.meta.resolve('@comethq/comet-browser');
const sockjs = fileURLToPath(new URL('sockjs.min.js', main));
if (!existsSync(sockjs)) throw new Error('no ' + sockjs + ' beside comet.js');
const pkg = createRequire(import.meta.url)('@comethq/comet-browser/package.json');
if (!existsSync(fileURLToPath(new URL(pkg.types, main)))) throw new Error('no types file ' + pkg.types);
console.log('imported', Object.keys(comet).length, 'exports from', main);
`
	if err := os.WriteFile(filepath.Join(proj, "check.mjs"), []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", bytes.TrimSpace(run(proj, node, "check.mjs")))
}
