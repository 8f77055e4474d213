package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/comethq/comet/wire"
)

// dashboardPath is the Grafana dashboard of docs/operations.md.
const dashboardPath = "../docs/grafana/comet-dashboard.json"

// promKeywords are the PromQL words that are not metric names.
var promKeywords = map[string]bool{"and": true, "or": true, "unless": true, "by": true, "without": true, "on": true,
	"ignoring": true, "group_left": true, "group_right": true, "bool": true, "offset": true, "inf": true, "nan": true}

var (
	promRange    = regexp.MustCompile(`\[[^\]]*\]`)
	promMatchers = regexp.MustCompile(`\{[^}]*\}`)
	promGrouping = regexp.MustCompile(`\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)`)
	promIdent    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
)

// promMetrics returns the metric names a PromQL expression uses: the
// identifiers left once ranges, label matchers and grouping labels are
// taken out, that are neither functions nor keywords.
func promMetrics(expr string) []string {
	e := promRange.ReplaceAllString(expr, " ")
	e = promMatchers.ReplaceAllString(e, " ")
	e = promGrouping.ReplaceAllString(e, " ")
	var names []string
	for _, loc := range promIdent.FindAllStringIndex(e, -1) {
		word := e[loc[0]:loc[1]]
		if promKeywords[word] || strings.HasPrefix(strings.TrimLeft(e[loc[1]:], " "), "(") {
			continue
		}
		if loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.') {
			continue // the exponent or unit of a number
		}
		names = append(names, word)
	}
	return names
}

func TestPromMetrics(t *testing.T) {
	for expr, want := range map[string][]string{
		`sum by (instance, result) (rate(comet_gateway_publishes_total{result="ok"}[$__rate_interval]))`: {"comet_gateway_publishes_total"},
		`histogram_quantile(0.99, sum by (le) (rate(comet_publish_duration_seconds_bucket[5m])))`:        {"comet_publish_duration_seconds_bucket"},
		`scalar(max(comet_raft_commit_index and on (instance) comet_raft_leader == 1)) - comet_raft_applied_index`: {
			"comet_raft_commit_index", "comet_raft_leader", "comet_raft_applied_index"},
		`max by (instance) (comet_raft_leader) == 1e3`: {"comet_raft_leader"},
	} {
		if got := promMetrics(expr); !slices.Equal(got, want) {
			t.Errorf("promMetrics(%s) = %q, want %q", expr, got, want)
		}
	}
}

// exposed returns the metric names in a /metrics answer.
func exposed(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	names := map[string]bool{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.IndexAny(line, "{ "); i > 0 {
			names[line[:i]] = true
		}
	}
	return names
}

// TestGrafanaDashboard: docs/grafana/comet-dashboard.json is valid JSON,
// takes its data source from the DS_PROMETHEUS variable, and every metric
// its queries use is exposed by a hub's or a gateway's /metrics (after
// some traffic, which makes the labelled series appear).
func TestGrafanaDashboard(t *testing.T) {
	raw, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title      string `json:"title"`
		Templating struct {
			List []struct{ Name, Type, Query string } `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Title      string `json:"title"`
			Type       string `json:"type"`
			Datasource struct{ Type, UID string }
			Targets    []struct {
				Expr       string `json:"expr"`
				Datasource struct{ Type, UID string }
			} `json:"targets"`
		} `json:"panels"`
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if err := dec.Decode(&dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if !slices.ContainsFunc(dash.Templating.List, func(v struct{ Name, Type, Query string }) bool {
		return v.Name == "DS_PROMETHEUS" && v.Type == "datasource" && v.Query == "prometheus"
	}) {
		t.Errorf("no datasource variable DS_PROMETHEUS in %+v", dash.Templating.List)
	}

	// Traffic: two connections, a publish, a subscription that replays.
	h := startHub(t)
	g := startGateway(t, httpHubs(t, h.api), Config{})
	a := dial(t, g.url)
	a.send(wire.ClientFrame{Op: wire.OpPublish, ID: "p1", Channel: "graf", Data: json.RawMessage(`1`)})
	a.expect(wire.OpAck)
	b := dial(t, g.url)
	b.send(wire.ClientFrame{Op: wire.OpSubscribe, Channel: "graf", From: u64p(1)})
	b.expect(wire.OpSubscribed)
	b.messages("graf", 1, 1)

	have := exposed(t, "http://"+h.api+"/metrics")
	for name := range exposed(t, g.url+"/metrics") {
		have[name] = true
	}
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.Datasource.UID != "${DS_PROMETHEUS}" {
			t.Errorf("panel %q: data source %+v, want ${DS_PROMETHEUS}", p.Title, p.Datasource)
		}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != "${DS_PROMETHEUS}" {
				t.Errorf("panel %q: query data source %+v, want ${DS_PROMETHEUS}", p.Title, tg.Datasource)
			}
			names := promMetrics(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: no metric in %s", p.Title, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !have[n] {
					t.Errorf("panel %q: metric %s (in %s) is exposed by no hub or gateway", p.Title, n, tg.Expr)
				}
			}
		}
	}
	if len(used) < 25 {
		t.Errorf("the dashboard uses %d metrics; the parser may have missed some", len(used))
	}
	t.Logf("%d panels use %d metrics, all exposed", len(dash.Panels), len(used))
}
