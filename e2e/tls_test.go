package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/comethq/comet/client"
	"github.com/comethq/comet/internal/testca"
)

// serialOf returns the serial of the certificate the TLS server at addr
// presents, trusting pool.
func serialOf(addr string, pool *x509.CertPool) (*big.Int, error) {
	conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber, nil
}

// TestTLSCluster: three hubs whose API is https and whose Raft traffic is
// mutual TLS (with the secret inside), and a gateway serving wss with
// --tls-ca for the hubs, all with certificates made here. Messages
// published over wss survive SIGKILL of the leader; the gateway's renewed
// certificate is served after SIGHUP; clients that do not trust the CA are
// refused; comet cluster status, comet pub and SockJS work over TLS.
func TestTLSCluster(t *testing.T) {
	needBinary(t)
	ca := testca.New(t, "e2e")
	certDir := t.TempDir()
	c := newCluster(t)
	c.scheme = "https"
	c.client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: ca.Pool()}
	c.hubArgs = func(id string) []string {
		cert, key := ca.Issue(t, id).Write(t, certDir, id)
		return []string{"--tls-cert", cert, "--tls-key", key, "--tls-ca", ca.File}
	}
	c.startHubs(3, func(attempt int, id string) string {
		return filepath.Join(c.dir, fmt.Sprintf("try%d", attempt), id)
	})
	c.waitLeader(nil, 30*time.Second)
	c.waitReady(c.runningHubs(), 30*time.Second)
	for _, h := range c.hubs {
		if !h.logContains("tls=true") {
			t.Fatalf("%s does not say it runs TLS:\n%s", h.id, h.logTail(10))
		}
	}

	gwCert, gwKey := ca.Issue(t, "g1").Write(t, certDir, "g1")
	g := c.startGateway("g1", "--tls-cert", gwCert, "--tls-key", gwKey, "--tls-ca", ca.File)

	// Publish over wss with the Go client, trusting the CA.
	led := newLedger()
	const ch = "tls:orders"
	cl, err := client.New(client.Config{URLs: []string{"wss://" + g.api + "/ws"},
		TLSConfig: &tls.Config{RootCAs: ca.Pool()}, MinBackoff: 20 * time.Millisecond, MaxBackoff: 500 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	publish := func(from, to int) {
		t.Helper()
		for i := from; i < to; i++ {
			id := fmt.Sprintf("tls-%d", i)
			data := payload(id, 64)
			led.addSent(id, ch, data)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			a, err := cl.PublishWithID(ctx, ch, id, data)
			cancel()
			if err != nil {
				t.Fatalf("publish %s over wss: %v", id, err)
			}
			led.addAck(ack{channel: ch, id: id, offset: a.Offset, data: data, at: time.Now()})
		}
	}
	publish(0, 20)

	// SIGKILL the leader; publishing goes on through the others.
	leader := c.waitLeader(nil, 30*time.Second)
	c.kill(leader)
	c.waitLeader(leader, 30*time.Second)
	publish(20, 40)
	c.verify(led, c.runningHubs(), []string{ch})

	// The CLI over https, trusting the CA; and refused without it.
	api := c.runningHubs()[0].api
	code, out, errOut := runComet(t, c.env(), "cluster", "status", "--api", "https://"+api, "--tls-ca", ca.File)
	if code != 0 || !strings.Contains(out, "leader: ") {
		t.Fatalf("comet cluster status over https: exit %d\n%s%s", code, out, errOut)
	}
	// The status fan-out reached the other running hubs over https.
	waitFor(t, 20*time.Second, "every running hub in the cluster status", func() bool {
		st, err := c.clusterStatus(c.runningHubs()[0])
		if err != nil {
			return false
		}
		for _, n := range st.Nodes {
			if n.ID != leader.id && (n.Error != "" || n.Applied == 0) {
				return false
			}
		}
		return true
	})
	code, out, errOut = runComet(t, c.env(), "cluster", "status", "--api", "https://"+api)
	if code == 0 || !strings.Contains(errOut, "x509") {
		t.Fatalf("comet cluster status without the CA: exit %d, want a certificate error\n%s%s", code, out, errOut)
	}
	code, out, errOut = runComet(t, c.env(), "pub", "--url", "wss://"+g.api+"/ws", "--tls-ca", ca.File, "--timeout", "30s", "tls:cli", `{"via":"cli"}`)
	if code != 0 || !strings.Contains(out, `"offset"`) {
		t.Fatalf("comet pub over wss: exit %d\n%s%s", code, out, errOut)
	}

	// A client that does not trust the CA is refused.
	_, err = tls.Dial("tcp", g.api, &tls.Config{ServerName: "127.0.0.1"})
	var unknown x509.UnknownAuthorityError
	if err == nil || !errors.As(err, &unknown) {
		t.Fatalf("a client without the CA: %v, want x509.UnknownAuthorityError", err)
	}
	// And the hubs' Raft port refuses a client certificate from another CA.
	other := testca.New(t, "other")
	stranger := other.Issue(t, "stranger")
	if conn, err := tls.Dial("tcp", c.runningHubs()[0].raft, &tls.Config{RootCAs: ca.Pool(), ServerName: "127.0.0.1",
		Certificates: []tls.Certificate{stranger.TLS}}); err == nil {
		_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
		_, _ = conn.Write([]byte("x"))
		_, rerr := conn.Read(make([]byte, 1))
		conn.Close()
		if rerr == nil {
			t.Fatal("the Raft port took a client certificate from another CA")
		}
	}

	// SockJS over https: the info endpoint and an xhr session that gets
	// the connected frame.
	code, body, err := c.get(g.api, "/sockjs/info")
	if err != nil || code != http.StatusOK || !strings.Contains(string(body), `"websocket"`) {
		t.Fatalf("GET https://%s/sockjs/info: %d %s %v", g.api, code, body, err)
	}
	var frames string
	ok := poll(20*time.Second, func() bool {
		code, body, err := c.do(http.MethodPost, g.api, "/sockjs/000/tls1/xhr", []byte{})
		if err != nil || code != http.StatusOK {
			return false
		}
		frames += string(body)
		return strings.Contains(frames, "connected")
	})
	if !ok {
		t.Fatalf("SockJS over https: frames %q, want o and the connected frame", frames)
	}

	// A fourth hub joins over https and catches up over Raft TLS.
	h4Cert, h4Key := ca.Issue(t, "h4").Write(t, certDir, "h4")
	h4 := c.addHub("h4", "--join", api, "--tls-cert", h4Cert, "--tls-key", h4Key, "--tls-ca", ca.File)
	c.waitNext(h4, ch, 41, 30*time.Second)

	// Renew the gateway's certificate in place, then SIGHUP: new TLS
	// connections get the new one.
	before, err := serialOf(g.api, ca.Pool())
	if err != nil {
		t.Fatal(err)
	}
	renewed := ca.IssueUntil(t, "g1", time.Now().Add(48*time.Hour))
	renewed.Write(t, certDir, "g1")
	if err := g.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the renewed certificate", func() bool {
		s, err := serialOf(g.api, ca.Pool())
		return err == nil && s.Cmp(renewed.Cert.SerialNumber) == 0
	})
	if before.Cmp(renewed.Cert.SerialNumber) == 0 {
		t.Fatal("the renewed certificate has the old serial")
	}
	if !g.running() || !g.logContains("TLS certificate reloaded") {
		t.Fatalf("gateway after SIGHUP:\n%s", g.logTail(10))
	}
	// The client still publishes (over a connection made before or after).
	publish(40, 45)
	c.verify(led, c.runningHubs(), []string{ch})
}

// TestTLSStandalone: comet standalone with a certificate serves wss and
// the hub API over https on its one listener; comet pub and sub work with
// --tls-ca and fail without it; SIGHUP with a bad certificate file keeps
// the old certificate (and the process).
func TestTLSStandalone(t *testing.T) {
	needBinary(t)
	ca := testca.New(t, "standalone")
	certDir := t.TempDir()
	first := ca.Issue(t, "s")
	cert, key := first.Write(t, certDir, "s")
	c := newCluster(t)
	c.scheme = "https"
	c.client.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: ca.Pool()}
	s := c.startStandalone(filepath.Join(c.dir, "data"), true, "--tls-cert", cert, "--tls-key", key, "--secret", c.secret)
	waitFor(t, 20*time.Second, "the ready line", func() bool { return s.logContains("standalone ready") })
	if !s.logContains("ws=wss://"+s.api+"/ws") || !s.logContains("hub_api=https://"+s.api+"/v1/") {
		t.Fatalf("the ready line does not give wss and https URLs:\n%s", s.logTail(5))
	}
	url := "wss://" + s.api + "/ws"
	code, out, errOut := runComet(t, nil, "pub", "--url", url, "--tls-ca", ca.File, "chat", `{"text":"over tls"}`)
	if code != 0 || out != `{"channel":"chat","offset":1}`+"\n" {
		t.Fatalf("comet pub over wss: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, errOut = runComet(t, nil, "sub", "--url", url, "--tls-ca", ca.File, "--from", "1", "--count", "1", "chat")
	if code != 0 || !strings.Contains(out, `"data":{"text":"over tls"}`) {
		t.Fatalf("comet sub over wss: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, body, err := c.get(s.api, "/v1/channels/chat/messages?from=1")
	if err != nil || code != http.StatusOK || !strings.Contains(string(body), "over tls") {
		t.Fatalf("GET https://%s/v1/channels/chat/messages: %d %s %v", s.api, code, body, err)
	}
	// Without the CA, comet pub cannot connect.
	code, _, errOut = runComet(t, nil, "pub", "--url", url, "--timeout", "2s", "chat", "x")
	if code == 0 || !strings.Contains(errOut, "x509") {
		t.Fatalf("comet pub without the CA: exit %d, stderr %q; want a certificate error", code, errOut)
	}

	// A bad pair on SIGHUP: the old certificate stays, the process too.
	if err := os.WriteFile(cert, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the failed reload in the log", func() bool { return s.logContains("TLS certificate not reloaded") })
	got, err := serialOf(s.api, ca.Pool())
	if err != nil || got.Cmp(first.Cert.SerialNumber) != 0 || !s.running() {
		t.Fatalf("after a bad reload: serial %v (want %v), %v, running %v", got, first.Cert.SerialNumber, err, s.running())
	}
}
