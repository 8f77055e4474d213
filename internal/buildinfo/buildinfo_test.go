package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFromBuildInfo(t *testing.T) {
	vcs := []debug.BuildSetting{{Key: "vcs.revision", Value: "0e30b3c5d6e7f8091a2b3c4d5e6f708192a3b4c5"}, {Key: "vcs.modified", Value: "true"}}
	for _, tc := range []struct {
		name               string
		bi                 *debug.BuildInfo
		ldVersion, ldCommt string
		want               Info
	}{
		{"no build info", nil, "", "", Info{Version: "devel"}},
		{"a go build outside git", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, "", "",
			Info{Version: "devel", GoVersion: "go1.26.8"}},
		{"a go build in a git checkout", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261207123957-0e30b3c5d6e7+dirty"}, Settings: vcs}, "", "",
			Info{Version: "v0.0.0-20261207123957-0e30b3c5d6e7+dirty", Commit: "0e30b3c5d6e7f8091a2b3c4d5e6f708192a3b4c5", Modified: true, GoVersion: "go1.26.8"}},
		{"go install of a tag", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}}, "", "",
			Info{Version: "v1.2.3", GoVersion: "go1.26.8"}},
		{"go install of a commit", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.4-0.20261207123957-0e30b3c5d6e7"}}, "", "",
			Info{Version: "v1.2.4-0.20261207123957-0e30b3c5d6e7", Commit: "0e30b3c5d6e7", GoVersion: "go1.26.8"}},
		{"the release script", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}, Settings: vcs[:1]}, "v1.3.0", "abc123",
			Info{Version: "v1.3.0", Commit: "abc123", GoVersion: "go1.26.8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fromBuildInfo(tc.bi, tc.ldVersion, tc.ldCommt)
			if tc.want.GoVersion == "" {
				tc.want.GoVersion = got.GoVersion // runtime.Version()
			}
			tc.want.Platform = got.Platform
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestPseudoVersionRev(t *testing.T) {
	for v, want := range map[string]string{
		"v0.0.0-20261207123957-0e30b3c5d6e7":        "0e30b3c5d6e7",
		"v1.2.4-0.20261207123957-0e30b3c5d6e7":      "0e30b3c5d6e7",
		"v1.2.4-rc.1.0.20261207123957-0e30b3c5d6e7": "0e30b3c5d6e7",
		"v0.0.0-20261207123957-0e30b3c5d6e7+dirty":  "0e30b3c5d6e7",
		"v1.2.3":              "",
		"v1.2.3-rc1":          "",
		"v1.2.3-abcdefabcdef": "",
		"devel":               "",
	} {
		if got := pseudoVersionRev(v); got != want {
			t.Errorf("pseudoVersionRev(%q) = %q, want %q", v, got, want)
		}
	}
}

func TestString(t *testing.T) {
	s := Info{Version: "v1.2.3", Commit: "0e30b3c", Modified: true, GoVersion: "go1.26.8", Platform: "linux/amd64"}.String()
	if want := "v1.2.3 (commit 0e30b3c, modified, go1.26.8, linux/amd64)"; s != want {
		t.Errorf("String() = %q, want %q", s, want)
	}
	if s := (Info{Version: "v1.2.3", GoVersion: "go1.26.8", Platform: "linux/amd64"}).String(); !strings.Contains(s, "commit unknown") {
		t.Errorf("String() without a commit = %q", s)
	}
}

func TestCollector(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector())
	mfs, err := reg.Gather()
	if err != nil || len(mfs) != 1 || mfs[0].GetName() != "comet_build_info" || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v, %v; want one comet_build_info", mfs, err)
	}
	m := mfs[0].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	i := Get()
	if m.GetGauge().GetValue() != 1 || labels["version"] != i.Version || labels["revision"] != i.Commit || labels["goversion"] != i.GoVersion {
		t.Errorf("comet_build_info %v = %v; want the labels of %+v and 1", labels, m.GetGauge().GetValue(), i)
	}
}
