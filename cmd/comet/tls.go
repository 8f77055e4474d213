package main

import (
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"

	"github.com/comethq/comet/hubapi"
	"github.com/comethq/comet/internal/tlsfiles"
)

// tlsFlags are --tls-cert, --tls-key and --tls-ca.
type tlsFlags struct {
	cert, key, ca string
}

const (
	tlsCertUsage = "PEM file of this process's TLS certificate (chain): serve https and wss instead of http and ws; reloaded on SIGHUP and when the file changes"
	tlsKeyUsage  = "PEM file of the --tls-cert certificate's private key"
)

// register adds the flags; caUsage empty leaves --tls-ca out.
func (t *tlsFlags) register(fs *flag.FlagSet, certUsage, caUsage string) {
	fs.StringVar(&t.cert, "tls-cert", "", certUsage)
	fs.StringVar(&t.key, "tls-key", "", tlsKeyUsage)
	if caUsage != "" {
		fs.StringVar(&t.ca, "tls-ca", "", caUsage)
	}
}

// check returns a usage error unless cert and key are given together.
func (t *tlsFlags) check() error {
	if (t.cert == "") != (t.key == "") {
		return fmt.Errorf("%w: --tls-cert and --tls-key go together: give both or neither", errUsage)
	}
	return nil
}

// loadCert loads --tls-cert and --tls-key, or returns nil when they are not
// given. Its reloading starts with watchCert.
func (t *tlsFlags) loadCert(logger *slog.Logger) (*tlsfiles.Cert, error) {
	if err := t.check(); err != nil {
		return nil, err
	}
	if t.cert == "" {
		return nil, nil
	}
	c, err := tlsfiles.Load(t.cert, t.key, logger.With("component", "tls"))
	if err != nil {
		return nil, fmt.Errorf("%w: --tls-cert, --tls-key: %v", errUsage, err)
	}
	return c, nil
}

// loadCA loads --tls-ca, or returns nil (the system's roots) when it is
// not given.
func (t *tlsFlags) loadCA() (*x509.CertPool, error) {
	if t.ca == "" {
		return nil, nil
	}
	pool, err := tlsfiles.LoadCA(t.ca)
	if err != nil {
		return nil, fmt.Errorf("%w: --tls-ca: %v", errUsage, err)
	}
	return pool, nil
}

// watchCert reloads cert on SIGHUP and when its files change, until the
// returned stop is called. Without a certificate (cert nil), SIGHUP is
// still taken, and logged, rather than left to end the process: a
// `systemctl reload` must not stop a server.
func watchCert(cert *tlsfiles.Cert, logger *slog.Logger) (stop func()) {
	if cert != nil {
		cert.Watch(tlsfiles.DefaultPollInterval)
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-quit:
				return
			case <-hup:
				if cert == nil {
					logger.Info("SIGHUP: no TLS certificate to reload (no --tls-cert)")
					continue
				}
				logger.Info("SIGHUP: reloading the TLS certificate")
				_ = cert.Reload() // a failure is logged, and the old certificate stays
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(hup)
			close(quit)
			<-done
			if cert != nil {
				cert.Close()
			}
		})
	}
}

// serverListener wraps ln in TLS with cert, when it is not nil.
func serverListener(ln net.Listener, cert *tlsfiles.Cert) net.Listener {
	if cert == nil {
		return ln
	}
	cfg := tlsfiles.ServerConfig(cert, nil)
	// HTTP/1.1 only: WebSocket upgrades (/ws, SockJS, the hubs' /v1/bus)
	// take over the connection, which HTTP/2 does not allow.
	cfg.NextProtos = []string{"http/1.1"}
	return tls.NewListener(ln, cfg)
}

// schemes are the URL schemes of a server with or without TLS.
func schemes(useTLS bool) (httpScheme, wsScheme string) {
	if useTLS {
		return "https", "wss"
	}
	return "http", "ws"
}

// hubTargets parses a list of hub API addresses (host:port, or
// https://host:port) and returns them as host:port with the TLS
// configuration to reach them with: nil for plain http; with https, one
// that verifies the hubs against the pool in --tls-ca (bare addresses are
// https when it is given), or the system's roots.
func hubTargets(flagName string, addrs []string, ca *x509.CertPool, caGiven bool) ([]string, *tls.Config, error) {
	hostports, useTLS, err := hubapi.SplitScheme(addrs, caGiven)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: --%s: %v", errUsage, flagName, err)
	}
	if !useTLS {
		return hostports, nil, nil
	}
	return hostports, tlsfiles.ClientConfig(ca, nil), nil
}

// hubClientTLS is the TLS configuration the hub CLI commands reach a hub
// with (--api, possibly https://host:port; --tls-ca).
func hubClientTLS(flagName, api, caFile string) (string, *tls.Config, error) {
	t := tlsFlags{ca: caFile}
	pool, err := t.loadCA()
	if err != nil {
		return "", nil, err
	}
	addrs, cfg, err := hubTargets(flagName, []string{strings.TrimSpace(api)}, pool, caFile != "")
	if err != nil {
		return "", nil, err
	}
	return addrs[0], cfg, nil
}

// tlsCAClientUsage explains --tls-ca on the commands that call hubs.
const tlsCAClientUsage = "PEM file of the CA that signed the hubs' certificates: reach them over https (an address may also be written https://host:port, verified against the system's roots without this)"

// tlsCAGatewayUsage explains --tls-ca on the commands that reach gateways.
const tlsCAGatewayUsage = "PEM file of the CA that signed the gateway's certificate, for wss:// URLs (default: the system's roots)"

// gatewayTLS is the TLS configuration for wss:// URLs of gateways: one
// that trusts the CA in caFile, or nil (the system's roots) without one.
func gatewayTLS(caFile string) (*tls.Config, error) {
	pool, err := (&tlsFlags{ca: caFile}).loadCA()
	if err != nil || pool == nil {
		return nil, err
	}
	return tlsfiles.ClientConfig(pool, nil), nil
}
