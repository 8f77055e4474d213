// Package tlsfiles builds the TLS configurations of Comet's processes from
// PEM files (--tls-cert, --tls-key, --tls-ca) and keeps the certificate
// current: a Cert re-reads its pair when told to (SIGHUP, in cmd/comet) and
// when the files change on disk (Watch polls their size and modification
// time), so that a renewed certificate needs no restart. A pair that fails
// to load (bad PEM, a key that does not match) leaves the one in use in
// place; the failure is logged once per change of the files.
//
// Every configuration requires TLS 1.2 or later.
package tlsfiles

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// MinVersion is the oldest TLS version Comet speaks or accepts.
const MinVersion = tls.VersionTLS12

// DefaultPollInterval is how often Watch looks at the files by default.
const DefaultPollInterval = 10 * time.Second

// ErrNoCertificate is returned by LoadCA for a file that holds no PEM
// certificate.
var ErrNoCertificate = errors.New("no PEM certificate found")

// Cert is a certificate and key pair loaded from two files, reloaded on
// Reload and, while Watch runs, when the files change. It is safe for
// concurrent use.
type Cert struct {
	certFile, keyFile string
	logger            *slog.Logger

	mu     sync.Mutex
	cert   *tls.Certificate
	seen   fileStamp // the files as they were at the last load attempt
	failed bool      // that attempt failed (and was logged)

	closeOnce sync.Once
	closeCh   chan struct{}
	doneCh    chan struct{} // closed when Watch's goroutine ends; nil before Watch
}

// fileStamp is what tells that a file changed: its size and modification
// time, for the certificate and the key.
type fileStamp struct {
	certSize, keySize int64
	certMod, keyMod   time.Time
}

func stamp(certFile, keyFile string) (fileStamp, error) {
	c, err := os.Stat(certFile)
	if err != nil {
		return fileStamp{}, err
	}
	k, err := os.Stat(keyFile)
	if err != nil {
		return fileStamp{}, err
	}
	return fileStamp{certSize: c.Size(), keySize: k.Size(), certMod: c.ModTime(), keyMod: k.ModTime()}, nil
}

// Load reads the PEM certificate (chain) in certFile and its key in
// keyFile. logger (nil: discard) hears about reloads.
func Load(certFile, keyFile string, logger *slog.Logger) (*Cert, error) {
	if certFile == "" || keyFile == "" {
		return nil, errors.New("a TLS certificate needs both a certificate file and a key file")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c := &Cert{certFile: certFile, keyFile: keyFile, logger: logger, closeCh: make(chan struct{})}
	st, _ := stamp(certFile, keyFile)
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	c.cert, c.seen = cert, st
	return c, nil
}

// loadPair loads and parses a pair.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("load TLS certificate %s and key %s: %w", certFile, keyFile, err)
	}
	return &cert, nil
}

// Reload reads the files again. On failure the certificate in use stays
// and the error is returned (and logged).
func (c *Cert) Reload() error {
	st, _ := stamp(c.certFile, c.keyFile)
	return c.reload(st, true)
}

// reload loads the pair, whose files were as st. A failure is logged
// when always is set, or when the files changed since the last failure.
func (c *Cert) reload(st fileStamp, always bool) error {
	cert, err := loadPair(c.certFile, c.keyFile)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if always || !c.failed || c.seen != st {
			c.logger.Error("TLS certificate not reloaded; still serving the previous one", "cert", c.certFile, "key", c.keyFile, "err", err)
		}
		c.seen, c.failed = st, true
		return err
	}
	c.cert, c.seen, c.failed = cert, st, false
	if cert.Leaf != nil {
		c.logger.Info("TLS certificate reloaded", "cert", c.certFile, "serial", cert.Leaf.SerialNumber.String(),
			"not_after", cert.Leaf.NotAfter.UTC().Format(time.RFC3339))
	} else {
		c.logger.Info("TLS certificate reloaded", "cert", c.certFile)
	}
	return nil
}

// Certificate returns the pair in use.
func (c *Cert) Certificate() *tls.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cert
}

// GetCertificate is for tls.Config.GetCertificate: the pair in use.
func (c *Cert) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.Certificate(), nil
}

// GetClientCertificate is for tls.Config.GetClientCertificate: the pair in
// use, presented to servers that ask for a client certificate.
func (c *Cert) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return c.Certificate(), nil
}

// Check reloads the pair if its files changed (size or modification time)
// since they were last loaded or tried. Watch calls it on every tick.
func (c *Cert) Check() {
	st, err := stamp(c.certFile, c.keyFile)
	if err != nil {
		// A file missing for a moment (being replaced) is looked at again
		// on the next tick; the pair in use stays.
		c.mu.Lock()
		changed := !c.failed
		c.failed = true
		c.mu.Unlock()
		if changed {
			c.logger.Error("TLS certificate files unreadable; still serving the previous certificate", "cert", c.certFile, "key", c.keyFile, "err", err)
		}
		return
	}
	c.mu.Lock()
	same := st == c.seen
	c.mu.Unlock()
	if same {
		return
	}
	_ = c.reload(st, false)
}

// Watch starts a goroutine that calls Check every interval (0:
// DefaultPollInterval) until Close. Call it at most once.
func (c *Cert) Watch(interval time.Duration) {
	if interval <= 0 {
		interval = DefaultPollInterval
	}
	c.doneCh = make(chan struct{})
	go func() {
		defer close(c.doneCh)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-c.closeCh:
				return
			case <-t.C:
				c.Check()
			}
		}
	}()
}

// Close stops Watch and waits for its goroutine. It is idempotent.
func (c *Cert) Close() error {
	c.closeOnce.Do(func() { close(c.closeCh) })
	if c.doneCh != nil {
		<-c.doneCh
	}
	return nil
}

// LoadCA reads a PEM bundle of CA certificates into a pool.
func LoadCA(file string) (*x509.CertPool, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read TLS CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("TLS CA file %s: %w", file, ErrNoCertificate)
	}
	return pool, nil
}

// ServerConfig is the configuration of a server that presents cert. With
// clientCAs set, it requires a client certificate signed by one of them
// (mutual TLS); without, it asks for none.
func ServerConfig(cert *Cert, clientCAs *x509.CertPool) *tls.Config {
	cfg := &tls.Config{MinVersion: MinVersion, GetCertificate: cert.GetCertificate}
	if clientCAs != nil {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
		cfg.ClientCAs = clientCAs
	}
	return cfg
}

// ClientConfig is the configuration of a client that verifies servers
// against roots (nil: the system's roots) and, when cert is set, presents
// it to servers that ask for a client certificate.
func ClientConfig(roots *x509.CertPool, cert *Cert) *tls.Config {
	cfg := &tls.Config{MinVersion: MinVersion, RootCAs: roots}
	if cert != nil {
		cfg.GetClientCertificate = cert.GetClientCertificate
	}
	return cfg
}

// PeerConfig is the configuration of a process that is server and client
// both, such as a hub on its Raft connections: it presents cert on either
// side and verifies its peers against ca (nil: servers against the
// system's roots, and clients are asked for no certificate). With ca set,
// the TLS is mutual: a peer without a certificate ca signed is refused.
func PeerConfig(cert *Cert, ca *x509.CertPool) *tls.Config {
	cfg := ServerConfig(cert, ca)
	cfg.RootCAs = ca
	cfg.GetClientCertificate = cert.GetClientCertificate
	return cfg
}
