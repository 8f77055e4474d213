// Package buildinfo says which build of Comet is running: its version and
// the commit it was built from. Both come from the Go build information
// (runtime/debug.ReadBuildInfo): `go install ...@v1.2.3` records the module
// version, and a build in a git checkout records the commit (vcs.revision).
// scripts/release.sh also sets them explicitly with -ldflags, which wins:
//
//	-X github.com/comethq/comet/internal/buildinfo.version=v1.2.3
//	-X github.com/comethq/comet/internal/buildinfo.commit=<git commit>
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Set with -ldflags -X (see the package comment); empty otherwise.
var version, commit string

// Info is what is known of this build.
type Info struct {
	// Version is the module version: v1.2.3 for a release,
	// v0.0.0-20260101120000-0e30b3c5d6e7 (a Go pseudo-version, maybe
	// with +dirty) for a build of a commit, "devel" when Go recorded none.
	Version string
	// Commit is the full git commit, or "" when unknown (a build outside
	// a git checkout, such as `go install` of a tagged version).
	Commit string
	// Modified reports a build from a checkout with uncommitted changes.
	Modified bool
	// GoVersion is the Go toolchain that built it, e.g. go1.26.8.
	GoVersion string
	// Platform is GOOS/GOARCH, e.g. linux/amd64.
	Platform string
}

// Get returns this build's Info.
var Get = sync.OnceValue(func() Info {
	bi, _ := debug.ReadBuildInfo()
	return fromBuildInfo(bi, version, commit)
})

// fromBuildInfo is Get's work: bi may be nil; the -ldflags values, when
// not empty, win over it.
func fromBuildInfo(bi *debug.BuildInfo, ldVersion, ldCommit string) Info {
	info := Info{GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if bi.GoVersion != "" {
			info.GoVersion = bi.GoVersion
		}
		if v := bi.Main.Version; v != "" && v != "(devel)" {
			info.Version = v
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				info.Commit = s.Value
			case "vcs.modified":
				info.Modified = s.Value == "true"
			}
		}
		if info.Commit == "" {
			info.Commit = pseudoVersionRev(info.Version)
		}
	}
	if ldVersion != "" {
		info.Version = ldVersion
	}
	if ldCommit != "" {
		info.Commit = ldCommit
	}
	if info.Version == "" {
		info.Version = "devel"
	}
	return info
}

// pseudoVersionRev returns the commit prefix (12 hex digits) of a Go
// pseudo-version such as v0.0.0-20260101120000-0e30b3c5d6e7, "" for any
// other version.
func pseudoVersionRev(v string) string {
	v, _, _ = strings.Cut(v, "+") // +incompatible, +dirty
	i := strings.LastIndexByte(v, '-')
	if i < 0 {
		return ""
	}
	rev := v[i+1:]
	// The part before is the 14-digit time, after a '-' or a '.'.
	if len(rev) != 12 || !isHex(rev) || i < 15 || !isDigits(v[i-14:i]) || (v[i-15] != '-' && v[i-15] != '.') {
		return ""
	}
	return rev
}

func isHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// String is the one line `comet version` prints after "comet ":
// v1.2.3 (commit 0e30b3c..., go1.26.8, linux/amd64).
func (i Info) String() string {
	c := i.Commit
	if c == "" {
		c = "unknown"
	}
	if i.Modified {
		c += ", modified"
	}
	return fmt.Sprintf("%s (commit %s, %s, %s)", i.Version, c, i.GoVersion, i.Platform)
}

// Collector returns the gauge comet_build_info, always 1, whose labels
// say which build runs: version, revision (the commit) and goversion. Hubs
// and gateways serve it on /metrics.
func Collector() prometheus.Collector {
	i := Get()
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "comet_build_info",
		Help: "Always 1; its labels say which build of Comet runs: version, revision (the git commit, empty if unknown), goversion.",
		ConstLabels: prometheus.Labels{
			"version": i.Version, "revision": i.Commit, "goversion": i.GoVersion,
		},
	}, func() float64 { return 1 })
}
