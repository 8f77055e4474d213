package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/client"
	"github.com/comethq/comet/wire"
)

// The docker test builds the image with scripts/image.sh and runs the
// repository's compose.yaml (3 hubs, 2 gateways) the way its users do,
// from the host. It needs docker, a running docker daemon and
// docker-compose (v1) or the docker compose plugin, and runs only when
// COMET_DOCKER_TESTS=1 (as in CI): then it fails, rather than skips, when
// one is missing.

// dockerLab is one compose project of the test: its own image, project
// name, secret and host ports, removed when the test ends.
type dockerLab struct {
	t       *testing.T
	root    string   // the repository
	compose []string // docker-compose, or docker compose
	project string
	image   string // name:tag
	env     []string
	secret  string
	// host ports: the gateways g1, g2 and h1's hub API
	g1, g2, h1 string
	http       *http.Client
}

// needDocker returns the compose command, or skips the test (fails with
// COMET_DOCKER_TESTS=1) when docker is not usable here.
func needDocker(t *testing.T) []string {
	t.Helper()
	needBinary(t)
	required := os.Getenv("COMET_DOCKER_TESTS") == "1"
	if !required {
		t.Skip("docker test skipped: set COMET_DOCKER_TESTS=1 to run it (needs docker, a running dockerd and docker-compose; .ci/run sets them up)")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Fatalf("COMET_DOCKER_TESTS=1 but there is no docker command: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		t.Fatalf("COMET_DOCKER_TESTS=1 but the docker daemon does not answer (is dockerd running?): %v\n%s", err, out)
	}
	if p, err := exec.LookPath("docker-compose"); err == nil {
		return []string{p}
	}
	if exec.CommandContext(ctx, "docker", "compose", "version").Run() == nil {
		return []string{"docker", "compose"}
	}
	t.Fatal("COMET_DOCKER_TESTS=1 but neither docker-compose nor docker compose is installed")
	return nil
}

// randomHex returns n random bytes in hex.
func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// run runs a command to completion within d and returns its combined
// output; it fails the test when the command fails.
func (l *dockerLab) run(d time.Duration, argv ...string) string {
	l.t.Helper()
	out, err := l.try(d, argv...)
	if err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return out
}

// try runs a command to completion within d and returns its combined
// output and error.
func (l *dockerLab) try(d time.Duration, argv ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = l.root
	cmd.Env = l.env
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("still running after %v: %w", d, err)
	}
	return out.String(), err
}

// composeArgs is the compose command with the lab's project and file.
func (l *dockerLab) composeArgs(args ...string) []string {
	argv := append([]string{}, l.compose...)
	argv = append(argv, "-p", l.project, "-f", filepath.Join(l.root, "compose.yaml"))
	return append(argv, args...)
}

// containers returns the ids of the project's running containers, by
// service (the labels compose v1 and v2 both set).
func (l *dockerLab) containers() map[string]string {
	l.t.Helper()
	ids := strings.Fields(l.run(time.Minute, "docker", "ps", "-q", "--filter", "label=com.docker.compose.project="+l.project))
	byService := map[string]string{}
	if len(ids) == 0 {
		return byService
	}
	out := l.run(time.Minute, append([]string{"docker", "inspect", "--format",
		`{{.Id}} {{index .Config.Labels "com.docker.compose.service"}}`}, ids...)...)
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if id, service, ok := strings.Cut(line, " "); ok {
			byService[service] = id
		}
	}
	return byService
}

// hubAPIs returns the addresses of the running hubs' APIs inside the
// compose network, by service: their containers' addresses, which the
// host reaches on linux (only h1's API is published on the host). A
// container may get another address when it starts again.
func (l *dockerLab) hubAPIs() map[string]string {
	l.t.Helper()
	apis := map[string]string{}
	for service, id := range l.containers() {
		if !strings.HasPrefix(service, "h") {
			continue
		}
		ip := strings.TrimSpace(l.run(time.Minute, "docker", "inspect", "--format",
			"{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", id))
		if net.ParseIP(ip) != nil {
			apis[service] = net.JoinHostPort(ip, "7101")
		}
	}
	return apis
}

// get GETs http://addr+path with the secret and returns the status and body.
func (l *dockerLab) get(addr, path string) (int, []byte, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+l.secret)
	resp, err := l.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	return resp.StatusCode, body, err
}

// ready reports whether addr answers /readyz with 200.
func (l *dockerLab) ready(addr string) bool {
	code, _, err := l.get(addr, "/readyz")
	return err == nil && code == http.StatusOK
}

// leader returns the hub leader's id, as the hub at api sees it.
func (l *dockerLab) leader(api string) string {
	code, raw, err := l.get(api, "/v1/cluster")
	if err != nil || code != http.StatusOK {
		return ""
	}
	var st wire.ClusterStatus
	if json.Unmarshal(raw, &st) != nil {
		return ""
	}
	return st.Leader
}

// readHub reads every message of channel from the hub API at api, paging.
func (l *dockerLab) readHub(api, channel string) (wire.MessagesResponse, error) {
	var all wire.MessagesResponse
	from := uint64(1)
	for page := 0; page < 1000; page++ {
		code, raw, err := l.get(api, fmt.Sprintf("/v1/channels/%s/messages?from=%d&limit=1000", channel, from))
		if err != nil {
			return all, err
		}
		if code != http.StatusOK {
			return all, fmt.Errorf("%s: %d %s", api, code, raw)
		}
		var res wire.MessagesResponse
		if err := json.Unmarshal(raw, &res); err != nil {
			return all, err
		}
		if page == 0 {
			all.Epoch, all.First = res.Epoch, res.First
		}
		all.Next = res.Next
		all.Messages = append(all.Messages, res.Messages...)
		if len(res.Messages) == 0 || res.Messages[len(res.Messages)-1].Offset+1 >= res.Next {
			return all, nil
		}
		from = res.Messages[len(res.Messages)-1].Offset + 1
	}
	return all, fmt.Errorf("%s: more than 1000 pages", api)
}

// dockerAcks are the acknowledged publishes of the test, by offset.
type dockerAcks struct {
	mu    sync.Mutex
	data  map[uint64]string
	epoch string
}

// TestDockerCompose: the image built by scripts/image.sh and the
// repository's compose.yaml, as users run them. The cluster comes up and
// serves the demo page on the host; messages published through the
// gateways (with the Go client) and the hub API survive a SIGKILL of the
// hub leader's container and its restart, and a `compose down` and `up`
// that keeps the volumes. Every acknowledged message is read back, dense,
// from every hub and through every gateway.
func TestDockerCompose(t *testing.T) {
	composeCmd := needDocker(t)
	testStart := time.Now()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	suffix := randomHex(4)
	l := &dockerLab{t: t, root: root, compose: composeCmd, project: "comet-e2e-" + suffix,
		secret: "e2e-" + randomHex(16), http: newClient()}
	imageName := "comet-e2e-" + suffix
	const version = "v0.0.0-e2e"
	l.image = imageName + ":" + version
	ports := freeAddrs(t, 3, map[string]bool{})
	portOf := func(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }
	l.g1, l.g2, l.h1 = ports[0], ports[1], ports[2]
	// COMET_IMAGE names the image for scripts/image.sh and compose.yaml
	// alike; COMET_IMAGE_TAG is compose.yaml's tag.
	l.env = cleanEnv("COMET_IMAGE="+imageName, "COMET_IMAGE_TAG="+version, "COMET_SECRET="+l.secret,
		"COMET_G1_PORT="+portOf(l.g1), "COMET_G2_PORT="+portOf(l.g2), "COMET_H1_API_PORT="+portOf(l.h1),
		"GO="+findGo())

	// Cleanups run last-registered first: logs, then down, then the image.
	t.Cleanup(func() {
		for _, tag := range []string{l.image, imageName + ":latest"} {
			if out, err := l.try(2*time.Minute, "docker", "rmi", "--force", tag); err != nil {
				t.Logf("docker rmi %s: %v\n%s", tag, err, out)
			}
		}
	})
	t.Cleanup(func() {
		if out, err := l.try(3*time.Minute, l.composeArgs("down", "-v", "--remove-orphans", "-t", "5")...); err != nil {
			t.Errorf("compose down: %v\n%s", err, out)
		}
		left, err := l.try(time.Minute, "docker", "volume", "ls", "-q", "--filter", "label=com.docker.compose.project="+l.project)
		if err != nil || strings.TrimSpace(left) != "" {
			t.Errorf("volumes left after compose down -v: %q %v", left, err)
		}
	})
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := l.try(time.Minute, l.composeArgs("logs", "--no-color", "--tail=60")...)
			t.Logf("--- compose logs, last 60 lines of each ---\n%s", out)
		}
	})

	// 1. The image, as scripts/image.sh builds it.
	step := time.Now()
	t.Logf("building the image %s with scripts/image.sh", l.image)
	if out, err := l.try(10*time.Minute, "sh", filepath.Join(root, "scripts", "image.sh"), version); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}
	buildTime := time.Since(step)
	info := strings.TrimSpace(l.run(time.Minute, "docker", "image", "inspect", "--format",
		"{{.Config.User}} {{.Size}} {{json .Config.Volumes}} {{json .Config.Entrypoint}}", l.image))
	t.Logf("image %s built in %v: user, size, volumes, entrypoint: %s", l.image, buildTime.Round(time.Millisecond), info)
	if !strings.HasPrefix(info, "65532:65532 ") || !strings.Contains(info, `"/data"`) {
		t.Fatalf("image config: want user 65532:65532 and the volume /data, got %s", info)
	}

	// 2. compose up, until every hub and both gateways are ready.
	step = time.Now()
	t.Logf("compose project %s: up (gateways on %s and %s, h1's API on %s)", l.project, l.g1, l.g2, l.h1)
	l.run(5*time.Minute, l.composeArgs("up", "-d")...)
	hubs := []string{"h1", "h2", "h3"}
	waitReady := func(what string) {
		t.Helper()
		waitFor(t, 2*time.Minute, what+": every hub and gateway ready", func() bool {
			apis := l.hubAPIs()
			for _, h := range hubs {
				if apis[h] == "" || !l.ready(apis[h]) {
					return false
				}
			}
			return l.ready(l.g1) && l.ready(l.g2) && l.ready(l.h1)
		})
	}
	waitReady("compose up")
	upTime := time.Since(step)
	t.Logf("compose up to ready (3 hubs, 2 gateways, /readyz from the host): %v", upTime.Round(time.Millisecond))
	// Each hub's data is in its named volume; gateways have none (no
	// anonymous volume left behind by the image's VOLUME either).
	for service, id := range l.containers() {
		mounts := strings.TrimSpace(l.run(time.Minute, "docker", "inspect", "--format",
			"{{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}} {{end}}", id))
		want := ""
		if strings.HasPrefix(service, "h") {
			want = "volume:" + l.project + "_" + service + "-data:/data"
		}
		if mounts != want {
			t.Fatalf("%s's mounts: %q, want %q", service, mounts, want)
		}
	}

	// 3. The demo page, from the host ports of both gateways.
	for _, g := range []string{l.g1, l.g2} {
		code, body, err := l.get(g, "/")
		if err != nil || code != http.StatusOK || !bytes.Contains(body, []byte("<title>Comet")) {
			t.Fatalf("demo page at http://%s/: %d %v %.200s", g, code, err, body)
		}
	}
	t.Logf("the demo page is served at http://%s/ and http://%s/", l.g1, l.g2)

	// 4. Publish through the gateways with the Go client, kill the hub
	// leader's container with SIGKILL, publish on, restart it.
	const channel = "docker-e2e"
	const perPhase = 200
	acks := &dockerAcks{data: map[uint64]string{}}
	record := func(offset uint64, epoch, data string) {
		acks.mu.Lock()
		defer acks.mu.Unlock()
		if prev, ok := acks.data[offset]; ok && prev != data {
			t.Errorf("offset %d acknowledged for %s and for %s", offset, prev, data)
		}
		acks.data[offset] = data
		if acks.epoch == "" {
			acks.epoch = epoch
		}
	}
	ws := func(addr string) string { return "ws://" + addr + "/ws" }
	pub, err := client.New(client.Config{URLs: []string{ws(l.g1), ws(l.g2)}, MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond, RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	publishPhase := func(phase string, from, to int) {
		t.Helper()
		start := time.Now()
		for i := from; i <= to; i++ {
			data := fmt.Sprintf(`{"phase":%q,"n":%d}`, phase, i)
			a, err := pub.PublishWithID(ctx, channel, fmt.Sprintf("m%d", i), json.RawMessage(data))
			if err != nil {
				t.Fatalf("publish %d through the gateways: %v", i, err)
			}
			record(a.Offset, a.Epoch, data)
		}
		t.Logf("published %d messages (%d..%d, %s) through the gateways in %v", to-from+1, from, to, phase,
			time.Since(start).Round(time.Millisecond))
	}
	publishPhase("before", 1, perPhase)

	leader := l.leader(l.h1)
	if leader == "" {
		t.Fatal("no hub leader known to h1")
	}
	killed := l.containers()[leader]
	if killed == "" {
		t.Fatalf("no container for the leader %q", leader)
	}
	t.Logf("docker kill (SIGKILL) of the hub leader %s's container %.12s", leader, killed)
	l.run(time.Minute, "docker", "kill", "--signal", "KILL", killed)
	publishPhase("leader-killed", perPhase+1, 2*perPhase)
	var others []string
	for _, h := range hubs {
		if h != leader {
			others = append(others, h)
		}
	}
	otherAPI := l.hubAPIs()[others[0]]
	waitFor(t, time.Minute, "a new leader", func() bool {
		nl := l.leader(otherAPI)
		return nl != "" && nl != leader
	})
	t.Logf("new leader: %s", l.leader(otherAPI))

	t.Logf("docker start of %s", leader)
	l.run(time.Minute, "docker", "start", killed)
	waitReady("after the restart of " + leader)

	// 5. Publish through the hub API on the host (h1: a follower forwards to
	// the leader) with ids.
	start := time.Now()
	for i := 2*perPhase + 1; i <= 3*perPhase; i++ {
		data := fmt.Sprintf(`{"phase":"hub-api","n":%d}`, i)
		body, _ := json.Marshal(wire.PublishRequest{Channel: channel, Data: json.RawMessage(data), ID: fmt.Sprintf("m%d", i)})
		var res wire.PublishResponse
		ok := poll(time.Minute, func() bool {
			req, err := http.NewRequest(http.MethodPost, "http://"+l.h1+"/v1/publish", bytes.NewReader(body))
			if err != nil {
				return false
			}
			req.Header.Set("Authorization", "Bearer "+l.secret)
			req.Header.Set("Content-Type", "application/json")
			resp, err := l.http.Do(req)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			return resp.StatusCode == http.StatusOK && json.Unmarshal(raw, &res) == nil && res.Offset > 0
		})
		if !ok {
			t.Fatalf("publish %d through h1's API at %s: no 200 within a minute", i, l.h1)
		}
		record(res.Offset, res.Epoch, data)
	}
	t.Logf("published %d messages through h1's API on the host in %v", perPhase, time.Since(start).Round(time.Millisecond))
	const total = 3 * perPhase
	if len(acks.data) != total {
		t.Fatalf("%d distinct offsets acknowledged for %d messages", len(acks.data), total)
	}

	// 6. Read everything back: from every hub, and through every gateway.
	verify := func(when string) {
		t.Helper()
		apis := l.hubAPIs()
		for _, h := range hubs {
			api := apis[h]
			var got wire.MessagesResponse
			waitFor(t, time.Minute, h+" to hold every message", func() bool {
				got, err = l.readHub(api, channel)
				return err == nil && got.Next > total
			})
			checkDense(t, h+" ("+when+")", acks, got.Epoch, offsetsData(got.Messages))
		}
		for name, g := range map[string]string{"g1": l.g1, "g2": l.g2} {
			checkDense(t, name+" ("+when+")", acks, "", subscribeAll(t, ctx, ws(g), channel, total))
		}
		t.Logf("%s: offsets 1..%d, dense, with the acknowledged data, epoch %s, on h1, h2, h3 and through g1 and g2",
			when, total, acks.epoch)
	}
	verify("after the kill and restart")

	// 7. compose stop: every process ends on SIGTERM, with status 0 (as
	// PID 1 of its container). Then down (keeping the volumes) and up: new
	// containers on the same data, found again by name.
	pub.Close()
	running := l.containers()
	step = time.Now()
	l.run(5*time.Minute, l.composeArgs("stop", "-t", "30")...)
	t.Logf("compose stop (SIGTERM): %v", time.Since(step).Round(time.Millisecond))
	for service, id := range running {
		st := strings.TrimSpace(l.run(time.Minute, "docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}", id))
		if st != "exited 0" {
			t.Errorf("%s after SIGTERM: %s, want exited 0", service, st)
		}
	}
	step = time.Now()
	l.run(5*time.Minute, l.composeArgs("down")...)
	l.run(5*time.Minute, l.composeArgs("up", "-d")...)
	waitReady("compose down and up")
	t.Logf("compose down (volumes kept) and up again, to ready: %v", time.Since(step).Round(time.Millisecond))
	verify("after compose down and up")
	t.Logf("the whole test took %v (image build %v, first compose up to ready %v)",
		time.Since(testStart).Round(time.Millisecond), buildTime.Round(time.Millisecond), upTime.Round(time.Millisecond))
}

// offsetAndData is a message as read back.
type offsetAndData struct {
	offset uint64
	data   string
}

func offsetsData(msgs []wire.Message) []offsetAndData {
	out := make([]offsetAndData, len(msgs))
	for i, m := range msgs {
		out[i] = offsetAndData{m.Offset, string(m.Data)}
	}
	return out
}

// checkDense fails the test unless got is offsets 1..len(acks) in order,
// each with the data acknowledged at it, in the acknowledged epoch (when
// epoch is not empty).
func checkDense(t *testing.T, where string, acks *dockerAcks, epoch string, got []offsetAndData) {
	t.Helper()
	acks.mu.Lock()
	defer acks.mu.Unlock()
	if epoch != "" && epoch != acks.epoch {
		t.Fatalf("%s: epoch %s, acknowledged in epoch %s", where, epoch, acks.epoch)
	}
	if len(got) != len(acks.data) {
		t.Fatalf("%s: %d messages, %d acknowledged", where, len(got), len(acks.data))
	}
	for i, m := range got {
		if m.offset != uint64(i+1) {
			t.Fatalf("%s: message %d has offset %d", where, i, m.offset)
		}
		if !sameJSON(json.RawMessage(m.data), json.RawMessage(acks.data[m.offset])) {
			t.Fatalf("%s: offset %d holds %s, acknowledged %s", where, m.offset, m.data, acks.data[m.offset])
		}
	}
}

// subscribeAll subscribes to channel from offset 1 through the one gateway
// at url and returns the first n messages it gets.
func subscribeAll(t *testing.T, ctx context.Context, url, channel string, n int) []offsetAndData {
	t.Helper()
	cl, err := client.New(client.Config{URLs: []string{url}, MinBackoff: 20 * time.Millisecond,
		MaxBackoff: 500 * time.Millisecond, RequestTimeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var mu sync.Mutex
	var got []offsetAndData
	if _, err := cl.Subscribe(ctx, channel, func(m client.Message) {
		mu.Lock()
		got = append(got, offsetAndData{m.Offset, string(m.Data)})
		mu.Unlock()
	}, client.From(1)); err != nil {
		t.Fatalf("subscribe through %s: %v", url, err)
	}
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(got) }
	waitFor(t, time.Minute, fmt.Sprintf("%d messages through %s", n, url), func() bool { return count() >= n })
	mu.Lock()
	defer mu.Unlock()
	return append([]offsetAndData(nil), got[:n]...)
}
