package auth

import (
	"bytes"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Errors a client may be told about. Every refusal of Verify wraps one of
// them; only their text may reach a client, never the wrapping error's.
var (
	// ErrExpired: the token's exp has passed; get a new token.
	ErrExpired = errors.New("token expired")
	// ErrInvalid: the token was refused for any other reason.
	ErrInvalid = errors.New("invalid token")
)

const (
	// MaxUserLen is the longest user (the token's sub), in bytes.
	MaxUserLen = 255
	// minSecretLen is the shortest HMAC secret: RFC 7518 asks for a key at
	// least as long as the hash, 32 bytes for HS256.
	minSecretLen = 32
	// minRSABits is the smallest RSA modulus accepted.
	minRSABits = 2048
	// maxTokenLen bounds the work done on a token before its signature is
	// known to be good.
	maxTokenLen = 16 << 10
	// maxNumericDate is 9999-12-31T23:59:59Z, the latest exp or nbf.
	maxNumericDate = 253402300799
)

// Config says which tokens a Verifier accepts. At least one key must be set.
type Config struct {
	// HMACSecret enables HS256 tokens signed with it; at least 32 bytes.
	HMACSecret []byte
	// RSAPublicKey enables RS256 tokens signed with its private key; at
	// least 2048 bits. LoadRSAPublicKey reads one from PEM.
	RSAPublicKey *rsa.PublicKey
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// Audience, when set, must be the token's aud or one of its elements.
	Audience string
	// Leeway is the clock skew allowed when checking exp and nbf; default 0.
	Leeway time.Duration
}

// Identity is who a connection is and what its token grants. The zero
// Identity is the anonymous user.
type Identity struct {
	// User is the token's sub; empty for the anonymous user.
	User string
	// Expires is the token's exp; zero if it never expires.
	Expires time.Time
	// Subscribe and Publish are the channel patterns of the token's
	// subscribe and publish claims.
	Subscribe, Publish []string
}

// Anonymous reports whether id is the anonymous user (no token).
func (id Identity) Anonymous() bool { return id.User == "" }

// Verifier checks client tokens. It is safe for concurrent use.
type Verifier struct {
	cfg    Config
	parser *jwt.Parser
}

// NewVerifier returns a Verifier for cfg, or an error that says what is
// wrong with cfg.
func NewVerifier(cfg Config) (*Verifier, error) {
	var methods []string
	if len(cfg.HMACSecret) > 0 {
		if len(cfg.HMACSecret) < minSecretLen {
			return nil, fmt.Errorf("auth: HMAC secret is %d bytes; HS256 needs at least %d random bytes (openssl rand -base64 32)", len(cfg.HMACSecret), minSecretLen)
		}
		if isPublicKey(cfg.HMACSecret) {
			return nil, errors.New("auth: HMAC secret is a public key; it must be a random secret (set the RSA public key instead for RS256)")
		}
		cfg.HMACSecret = bytes.Clone(cfg.HMACSecret)
		methods = append(methods, jwt.SigningMethodHS256.Alg())
	}
	if k := cfg.RSAPublicKey; k != nil {
		bits := 0
		if k.N != nil {
			bits = k.N.BitLen()
		}
		if bits < minRSABits {
			return nil, fmt.Errorf("auth: RSA public key has %d bits; RS256 needs at least %d", bits, minRSABits)
		}
		methods = append(methods, jwt.SigningMethodRS256.Alg())
	}
	if len(methods) == 0 {
		return nil, errors.New("auth: no key: set an HMAC secret (HS256 tokens), an RSA public key (RS256 tokens), or both")
	}
	if cfg.Leeway < 0 {
		return nil, fmt.Errorf("auth: leeway %v is negative", cfg.Leeway)
	}
	// Claims are checked by Verify itself, against its now, so that an
	// expired token is told from one that is wrong in other ways too.
	p := jwt.NewParser(jwt.WithValidMethods(methods), jwt.WithoutClaimsValidation())
	return &Verifier{cfg: cfg, parser: p}, nil
}

// Verify checks token at time now and returns whom it identifies. A
// refusal wraps ErrExpired or ErrInvalid (see the package doc).
func (v *Verifier) Verify(token string, now time.Time) (Identity, error) {
	if token == "" {
		return Identity{}, invalid("no token")
	}
	if len(token) > maxTokenLen {
		return Identity{}, invalid("token is %d bytes, more than %d", len(token), maxTokenLen)
	}
	claims := jwt.MapClaims{}
	if _, err := v.parser.ParseWithClaims(token, claims, v.key); err != nil {
		return Identity{}, invalid("%v", err)
	}
	return v.identity(claims, now)
}

// key returns the key that verifies t: each accepted alg has its own.
func (v *Verifier) key(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		return nil, errors.New("crit header is not supported")
	}
	switch {
	case t.Method == jwt.SigningMethodHS256 && len(v.cfg.HMACSecret) > 0:
		return v.cfg.HMACSecret, nil
	case t.Method == jwt.SigningMethodRS256 && v.cfg.RSAPublicKey != nil:
		return v.cfg.RSAPublicKey, nil
	}
	return nil, fmt.Errorf("alg %s is not accepted", t.Method.Alg())
}

// identity checks the claims of a token whose signature is good. Expiry is
// checked last, so that ErrExpired means nothing else is wrong.
func (v *Verifier) identity(c jwt.MapClaims, now time.Time) (Identity, error) {
	sub, ok := c["sub"].(string)
	switch {
	case !ok && c["sub"] == nil:
		return Identity{}, invalid("no sub claim")
	case !ok:
		return Identity{}, invalid("claim sub must be a string")
	case sub == "":
		return Identity{}, invalid("claim sub is empty")
	case len(sub) > MaxUserLen:
		return Identity{}, invalid("claim sub is %d bytes, more than %d", len(sub), MaxUserLen)
	}
	id := Identity{User: sub}
	var err error
	if id.Subscribe, err = patterns(c, "subscribe"); err != nil {
		return Identity{}, err
	}
	if id.Publish, err = patterns(c, "publish"); err != nil {
		return Identity{}, err
	}
	if v.cfg.Issuer != "" {
		if iss, _ := c["iss"].(string); iss != v.cfg.Issuer {
			return Identity{}, invalid("claim iss is %.64q, want %q", iss, v.cfg.Issuer)
		}
	}
	if v.cfg.Audience != "" {
		aud, err := c.GetAudience()
		if err != nil || !slices.Contains(aud, v.cfg.Audience) {
			return Identity{}, invalid("claim aud does not hold %q", v.cfg.Audience)
		}
	}
	nbf, hasNbf, err := numericDate(c, "nbf")
	if err != nil {
		return Identity{}, err
	}
	exp, hasExp, err := numericDate(c, "exp")
	if err != nil {
		return Identity{}, err
	}
	if hasNbf && now.Add(v.cfg.Leeway).Before(nbf) {
		return Identity{}, invalid("not valid before %s (nbf), now is %s", nbf.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if hasExp {
		if !now.Before(exp.Add(v.cfg.Leeway)) {
			return Identity{}, fmt.Errorf("%w: exp %s has passed, now is %s", ErrExpired, exp.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
		}
		id.Expires = exp
	}
	return id, nil
}

// patterns reads claim name, an optional array of channel patterns.
func patterns(c jwt.MapClaims, name string) ([]string, error) {
	raw, ok := c[name]
	if !ok {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, invalid("claim %s must be an array of channel patterns", name)
	}
	var out []string
	for i, e := range list {
		s, ok := e.(string)
		if !ok {
			return nil, invalid("claim %s[%d] must be a string", name, i)
		}
		if err := CheckPattern(s); err != nil {
			return nil, invalid("claim %s[%d]: %v", name, i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

// numericDate reads claim name, an optional NumericDate: seconds since 1970.
func numericDate(c jwt.MapClaims, name string) (time.Time, bool, error) {
	raw, ok := c[name]
	if !ok {
		return time.Time{}, false, nil
	}
	f, ok := raw.(float64)
	if !ok || f < 0 || f > maxNumericDate {
		return time.Time{}, false, invalid("claim %s must be a number of seconds since 1970", name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)).UTC(), true, nil
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, args...)...)
}

// Sign returns a token for claims, signed with method "HS256" and a []byte
// secret of at least 32 bytes, or "RS256" and an *rsa.PrivateKey. It does
// not check the claims, so that tests can make bad tokens; Verify does.
func Sign(method string, key any, claims map[string]any) (string, error) {
	var m jwt.SigningMethod
	switch method {
	case "HS256":
		secret, ok := key.([]byte)
		if !ok {
			return "", fmt.Errorf("auth: HS256 signs with a []byte secret, not %T", key)
		}
		if len(secret) < minSecretLen {
			return "", fmt.Errorf("auth: HMAC secret is %d bytes; HS256 needs at least %d", len(secret), minSecretLen)
		}
		m = jwt.SigningMethodHS256
	case "RS256":
		if _, ok := key.(*rsa.PrivateKey); !ok {
			return "", fmt.Errorf("auth: RS256 signs with an *rsa.PrivateKey, not %T", key)
		}
		m = jwt.SigningMethodRS256
	default:
		return "", fmt.Errorf("auth: cannot sign with %q: use HS256 or RS256", method)
	}
	s, err := jwt.NewWithClaims(m, jwt.MapClaims(claims)).SignedString(key)
	if err != nil {
		return "", fmt.Errorf("auth: sign %s token: %w", method, err)
	}
	return s, nil
}

// LoadRSAPublicKey reads an RSA public key from the first PEM block of
// pemBytes: a "PUBLIC KEY" (PKIX, as openssl rsa -pubout writes it), an
// "RSA PUBLIC KEY" (PKCS #1) or a "CERTIFICATE" (its subject's key).
func LoadRSAPublicKey(pemBytes []byte) (*rsa.PublicKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New(`auth: no PEM block found; want a "PUBLIC KEY", "RSA PUBLIC KEY" or "CERTIFICATE" block`)
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("auth: read PUBLIC KEY: %w", err)
		}
		key = k
	case "RSA PUBLIC KEY":
		k, err := x509.ParsePKCS1PublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("auth: read RSA PUBLIC KEY: %w", err)
		}
		key = k
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("auth: read CERTIFICATE: %w", err)
		}
		key = cert.PublicKey
	case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "ENCRYPTED PRIVATE KEY":
		return nil, fmt.Errorf("auth: this is a private key (%s); give the public key instead (openssl rsa -in key.pem -pubout)", block.Type)
	default:
		return nil, fmt.Errorf(`auth: PEM block is %q; want "PUBLIC KEY", "RSA PUBLIC KEY" or "CERTIFICATE"`, block.Type)
	}
	rk, ok := key.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("auth: %s holds a %T, not an RSA key", block.Type, key)
	}
	return rk, nil
}

// isPublicKey reports whether b is a public key in PEM or DER form: a
// mistake as an HMAC secret, since anyone may know it.
func isPublicKey(b []byte) bool {
	if block, _ := pem.Decode(b); block != nil {
		b = block.Bytes
	}
	if _, err := x509.ParsePKIXPublicKey(b); err == nil {
		return true
	}
	if _, err := x509.ParsePKCS1PublicKey(b); err == nil {
		return true
	}
	_, err := x509.ParseCertificate(b)
	return err == nil
}
