package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/comethq/comet/auth"
)

// runToken prints a client token (JWT): for development, tests and scripts.
// Applications mint their own with any JWT library.
func runToken(args []string, stdout, stderr io.Writer) error {
	var hmacSecret, rsaKey, sub, subscribe, publish, issuer, audience string
	var ttl time.Duration
	fs := newFlagSet("token", "comet token --sub USER (--token-hmac-secret S | --rsa-private-key FILE) [--ttl 1h] [--subscribe PATTERNS] [--publish PATTERNS]", stderr)
	fs.StringVar(&sub, "sub", "", "the user (the token's sub); required")
	fs.StringVar(&hmacSecret, "token-hmac-secret", "", "sign HS256 with this secret (the gateways' --token-hmac-secret)")
	fs.StringVar(&rsaKey, "rsa-private-key", "", "sign RS256 with this PEM private key file (gateways check it with --token-rsa-public-key)")
	fs.DurationVar(&ttl, "ttl", time.Hour, "lifetime: the token's exp is now + ttl (0: no exp, never expires)")
	fs.StringVar(&subscribe, "subscribe", "", "channel patterns the token may subscribe to besides what the rules allow, comma-separated")
	fs.StringVar(&publish, "publish", "", "channel patterns the token may publish to besides what the rules allow, comma-separated")
	fs.StringVar(&issuer, "issuer", "", "the token's iss, when gateways check it")
	fs.StringVar(&audience, "audience", "", "the token's aud, when gateways check it")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if sub == "" {
		return fmt.Errorf("%w: --sub is required", errUsage)
	}
	claims := map[string]any{"sub": sub, "iat": time.Now().Unix()}
	if ttl > 0 {
		claims["exp"] = time.Now().Add(ttl).Unix()
	}
	for name, list := range map[string]string{"subscribe": subscribe, "publish": publish} {
		if items := splitList(list); len(items) > 0 {
			for _, p := range items {
				if err := auth.CheckPattern(p); err != nil {
					return fmt.Errorf("%w: --%s: %v", errUsage, name, err)
				}
			}
			claims[name] = items
		}
	}
	if issuer != "" {
		claims["iss"] = issuer
	}
	if audience != "" {
		claims["aud"] = audience
	}
	var tok string
	var err error
	switch {
	case hmacSecret != "" && rsaKey != "":
		return fmt.Errorf("%w: give --token-hmac-secret or --rsa-private-key, not both", errUsage)
	case hmacSecret != "":
		tok, err = auth.Sign("HS256", []byte(hmacSecret), claims)
	case rsaKey != "":
		key, kerr := loadRSAPrivateKey(rsaKey)
		if kerr != nil {
			return fmt.Errorf("%w: --rsa-private-key: %v", errUsage, kerr)
		}
		tok, err = auth.Sign("RS256", key, claims)
	default:
		return fmt.Errorf("%w: give --token-hmac-secret or --rsa-private-key", errUsage)
	}
	if err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	fmt.Fprintln(stdout, tok)
	return nil
}

// loadRSAPrivateKey reads a PEM RSA private key (PKCS#1 or PKCS#8).
func loadRSAPrivateKey(path string) (any, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(raw)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block", path)
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		return k, nil
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, errors.New(path + ": not an RSA private key (PKCS#1 or PKCS#8 PEM)")
	}
	return k, nil
}
