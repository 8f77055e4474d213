package gateway

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/comethq/comet/internal/buildinfo"
)

// TestMetricsBuildInfo: /metrics says which build runs (comet_build_info).
func TestMetricsBuildInfo(t *testing.T) {
	h := startHub(t)
	g := startGatewayUnready(t, httpHubs(t, h.api), Config{})
	res, err := http.Get(g.url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	bi := buildinfo.Get()
	want := fmt.Sprintf(`comet_build_info{goversion=%q,revision=%q,version=%q} 1`, bi.GoVersion, bi.Commit, bi.Version)
	if res.StatusCode != http.StatusOK || !strings.Contains(string(body), want+"\n") {
		t.Errorf("GET /metrics: %d; want a line %s in:\n%s", res.StatusCode, want, body)
	}
}
