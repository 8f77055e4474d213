package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/comethq/comet/internal/buildinfo"
	"github.com/comethq/comet/wire"
)

// TestVersion: comet version and comet --version print the version and the
// commit, on one line.
func TestVersion(t *testing.T) {
	want := "comet " + buildinfo.Get().String() + "\n"
	for _, arg := range []string{"version", "--version"} {
		code, stdout, stderr := comet(t, arg)
		if code != 0 || stdout != want || stderr != "" {
			t.Errorf("comet %s: exit %d, stdout %q, stderr %q; want %q", arg, code, stdout, stderr, want)
		}
	}
	if !strings.Contains(want, "(commit ") {
		t.Errorf("comet version = %q: no commit", want)
	}
}

// TestReleaseLdflags: scripts/release.sh sets the version and the commit
// through variables that exist, and comet version prints them. (The script
// itself builds six platforms with -trimpath: minutes, not a unit test.
// This builds with its -ldflags only.)
func TestReleaseLdflags(t *testing.T) {
	if testing.Short() {
		t.Skip("builds comet; skipped with -short")
	}
	script, err := os.ReadFile(filepath.Join("..", "..", "scripts", "release.sh"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"BUILDINFO=github.com/comethq/comet/internal/buildinfo\n",
		`-X $BUILDINFO.version=$VERSION -X $BUILDINFO.commit=$COMMIT`,
		"CGO_ENABLED=0", "-trimpath", "sha256sum",
	} {
		if !strings.Contains(string(script), want) {
			t.Errorf("scripts/release.sh lacks %q", want)
		}
	}
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	if _, err := os.Stat(goTool); err != nil {
		goTool = "go"
	}
	bin := filepath.Join(t.TempDir(), "comet")
	const pkg = "github.com/comethq/comet/internal/buildinfo"
	build := exec.Command(goTool, "build", "-ldflags", "-X "+pkg+".version=v9.8.7-test -X "+pkg+".commit=0123456789abcdef", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	want := regexp.MustCompile(`^comet v9\.8\.7-test \(commit 0123456789abcdef(, modified)?, go[^ ]+, ` + runtime.GOOS + "/" + runtime.GOARCH + `\)\n$`)
	for _, arg := range []string{"version", "--version"} {
		out, err := exec.Command(bin, arg).Output()
		if err != nil || !want.Match(out) {
			t.Errorf("comet %s: %q, %v; want it to match %s", arg, out, err, want)
		}
	}
}

// TestClusterStatusVersion: comet cluster status shows each hub's version.
func TestClusterStatusVersion(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(wire.ClusterStatus{ID: "h1", State: "leader", Leader: "h1", Term: 2, Version: "v1.2.3",
			Nodes: []wire.Node{
				{ID: "h1", Raft: "127.0.0.1:7001", API: "127.0.0.1:7101", State: "leader", Voter: true, Leader: true, Applied: 5, Commit: 5, Version: "v1.2.3"},
				{ID: "h2", Raft: "127.0.0.1:7002", API: "127.0.0.1:7102", State: "follower", Voter: true, Applied: 5, Commit: 5},
			}})
	}))
	defer srv.Close()
	code, stdout, stderr := comet(t, "cluster", "status", "--api", strings.TrimPrefix(srv.URL, "http://"))
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, want := range []string{`(?m)^ID\s.*\sVERSION\s+NOTE$`, `(?m)^h1\s.*\s5\s+5\s+v1\.2\.3\s*$`, `(?m)^h2\s.*\s5\s+5\s+-\s*$`} {
		if !regexp.MustCompile(want).MatchString(stdout) {
			t.Errorf("comet cluster status does not match %s:\n%s", want, stdout)
		}
	}
}
