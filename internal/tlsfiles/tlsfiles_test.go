package tlsfiles_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/comethq/comet/internal/testca"
	"github.com/comethq/comet/internal/tlsfiles"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logBuf is a concurrency-safe log sink.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

func serial(c *tls.Certificate) string { return c.Leaf.SerialNumber.String() }

// waitFor polls cond every 10ms for up to d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLoadNeedsBoth(t *testing.T) {
	if _, err := tlsfiles.Load("a.pem", "", nil); err == nil {
		t.Fatal("Load without a key file: no error")
	}
	dir := t.TempDir()
	if _, err := tlsfiles.Load(dir+"/missing.pem", dir+"/missing-key.pem", nil); err == nil {
		t.Fatal("Load of missing files: no error")
	}
}

func TestReload(t *testing.T) {
	ca := testca.New(t, "test")
	dir := t.TempDir()
	one := ca.Issue(t, "one")
	certFile, keyFile := one.Write(t, dir, "server")
	c, err := tlsfiles.Load(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := serial(c.Certificate()); got != one.Cert.SerialNumber.String() {
		t.Fatalf("serial %s, want %s", got, one.Cert.SerialNumber)
	}
	two := ca.Issue(t, "two")
	two.Write(t, dir, "server")
	if err := c.Reload(); err != nil {
		t.Fatal(err)
	}
	got, _ := c.GetCertificate(nil)
	if serial(got) != two.Cert.SerialNumber.String() {
		t.Fatalf("after Reload: serial %s, want %s", serial(got), two.Cert.SerialNumber)
	}
	got, _ = c.GetClientCertificate(nil)
	if serial(got) != two.Cert.SerialNumber.String() {
		t.Fatalf("client certificate after Reload: serial %s, want %s", serial(got), two.Cert.SerialNumber)
	}
}

// bump moves the files' modification time, in case the file system keeps
// coarse times and the sizes happen to match.
func bump(t *testing.T, files ...string) {
	t.Helper()
	later := time.Now().Add(time.Minute)
	for _, f := range files {
		if err := os.Chtimes(f, later, later); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWatchReloadsOnChange(t *testing.T) {
	ca := testca.New(t, "test")
	dir := t.TempDir()
	certFile, keyFile := ca.Issue(t, "one").Write(t, dir, "server")
	c, err := tlsfiles.Load(certFile, keyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	c.Watch(10 * time.Millisecond)
	defer c.Close()
	two := ca.Issue(t, "two")
	two.Write(t, dir, "server")
	bump(t, certFile, keyFile)
	waitFor(t, 10*time.Second, "the new certificate", func() bool {
		return serial(c.Certificate()) == two.Cert.SerialNumber.String()
	})
}

func TestBadFileKeepsOldCert(t *testing.T) {
	ca := testca.New(t, "test")
	dir := t.TempDir()
	one := ca.Issue(t, "one")
	certFile, keyFile := one.Write(t, dir, "server")
	logs := &logBuf{}
	logger := slog.New(slog.NewTextHandler(logs, nil))
	c, err := tlsfiles.Load(certFile, keyFile, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Garbage instead of the certificate.
	if err := os.WriteFile(certFile, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	bump(t, certFile)
	if err := c.Reload(); err == nil {
		t.Fatal("Reload of a bad certificate: no error")
	}
	if got := serial(c.Certificate()); got != one.Cert.SerialNumber.String() {
		t.Fatalf("after a bad reload: serial %s, want the old %s", got, one.Cert.SerialNumber)
	}
	// Checks of unchanged bad files say nothing more.
	before := logs.count("not reloaded")
	for range 3 {
		c.Check()
	}
	if after := logs.count("not reloaded"); after != before {
		t.Fatalf("unchanged bad files logged %d more errors", after-before)
	}

	// A certificate whose key does not match.
	other := ca.Issue(t, "other")
	if err := os.WriteFile(certFile, other.CertPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	bump(t, certFile, keyFile)
	if err := os.Chtimes(certFile, time.Now().Add(2*time.Minute), time.Now().Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	c.Check()
	if got := serial(c.Certificate()); got != one.Cert.SerialNumber.String() {
		t.Fatalf("after a mismatched pair: serial %s, want the old %s", got, one.Cert.SerialNumber)
	}
	if n := logs.count("not reloaded"); n != before+1 {
		t.Fatalf("a changed bad pair logged %d errors, want 1", n-before)
	}

	// A missing file, then a good pair again.
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}
	c.Check()
	c.Check()
	if got := serial(c.Certificate()); got != one.Cert.SerialNumber.String() {
		t.Fatalf("with the key missing: serial %s, want the old %s", got, one.Cert.SerialNumber)
	}
	three := ca.Issue(t, "three")
	three.Write(t, dir, "server")
	c.Check()
	if got := serial(c.Certificate()); got != three.Cert.SerialNumber.String() {
		t.Fatalf("after a good pair: serial %s, want %s", got, three.Cert.SerialNumber)
	}
}

func TestLoadCA(t *testing.T) {
	dir := t.TempDir()
	bad := dir + "/bad.pem"
	if err := os.WriteFile(bad, []byte("nothing here"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := tlsfiles.LoadCA(bad); !errors.Is(err, tlsfiles.ErrNoCertificate) {
		t.Fatalf("LoadCA of a file without certificates: %v, want ErrNoCertificate", err)
	}
	if _, err := tlsfiles.LoadCA(dir + "/missing.pem"); err == nil {
		t.Fatal("LoadCA of a missing file: no error")
	}
}

func load(t *testing.T, l *testca.Leaf, dir, name string) (*tlsfiles.Cert, error) {
	t.Helper()
	certFile, keyFile := l.Write(t, dir, name)
	return tlsfiles.Load(certFile, keyFile, nil)
}

// TestConfigs runs a handshake with the server and client configurations:
// mutual TLS with the CA, a client without the CA refused, a client
// certificate from another CA refused, and the server's certificate
// reloaded for the next connection.
func TestConfigs(t *testing.T) {
	ca := testca.New(t, "test")
	dir := t.TempDir()
	serverCert, err := load(t, ca.Issue(t, "server"), dir, "server")
	if err != nil {
		t.Fatal(err)
	}
	clientCert, err := load(t, ca.Issue(t, "client"), dir, "client")
	if err != nil {
		t.Fatal(err)
	}
	otherCA := testca.New(t, "other")
	strangerCert, err := load(t, otherCA.Issue(t, "stranger"), dir, "stranger")
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsfiles.LoadCA(ca.File)
	if err != nil {
		t.Fatal(err)
	}
	server := tlsfiles.ServerConfig(serverCert, pool)

	// A loopback TCP connection, not net.Pipe: a side that gives up writes
	// its alert while the other may still be writing.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	handshake := func(client *tls.Config) (*tls.ConnectionState, error) {
		errc := make(chan error, 1)
		go func() {
			a, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			defer a.Close()
			s := tls.Server(a, server)
			s.SetDeadline(time.Now().Add(10 * time.Second))
			errc <- s.Handshake()
			s.Close()
		}()
		b, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c := tls.Client(b, client)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		cerr := c.Handshake()
		var st tls.ConnectionState
		if cerr == nil {
			st = c.ConnectionState()
			// TLS 1.3: the server checks the client certificate after the
			// client's handshake ends; read to let it say so.
			_, _ = c.Read(make([]byte, 1))
		}
		c.Close()
		serr := <-errc
		if cerr != nil {
			return nil, cerr
		}
		if serr != nil {
			return nil, serr
		}
		return &st, nil
	}

	cfg := tlsfiles.ClientConfig(pool, clientCert)
	cfg.ServerName = "127.0.0.1"
	st, err := handshake(cfg)
	if err != nil {
		t.Fatalf("mutual TLS: %v", err)
	}
	if st.Version < tls.VersionTLS12 {
		t.Fatalf("version %x", st.Version)
	}

	noCA := tlsfiles.ClientConfig(otherCA.Pool(), clientCert)
	noCA.ServerName = "127.0.0.1"
	if _, err := handshake(noCA); err == nil {
		t.Fatal("a client that does not trust the CA connected")
	}

	stranger := tlsfiles.ClientConfig(pool, strangerCert)
	stranger.ServerName = "127.0.0.1"
	if _, err := handshake(stranger); err == nil {
		t.Fatal("a client certificate from another CA was accepted")
	}

	noCert := tlsfiles.ClientConfig(pool, nil)
	noCert.ServerName = "127.0.0.1"
	if _, err := handshake(noCert); err == nil {
		t.Fatal("a client without a certificate was accepted by a mutual-TLS server")
	}

	renewed := ca.Issue(t, "server")
	renewed.Write(t, dir, "server")
	if err := serverCert.Reload(); err != nil {
		t.Fatal(err)
	}
	st, err = handshake(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.PeerCertificates[0].SerialNumber; got.Cmp(renewed.Cert.SerialNumber) != 0 {
		t.Fatalf("after reload the server presented serial %s, want %s", got, renewed.Cert.SerialNumber)
	}
}
