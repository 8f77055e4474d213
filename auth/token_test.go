package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// now is the fixed time of every token test.
var now = time.Unix(1_700_000_000, 0).UTC()

var (
	secret      = []byte("0123456789abcdef0123456789abcdef") // 32 bytes
	otherSecret = []byte("fedcba9876543210fedcba9876543210")
)

type testKeys struct {
	rsa, otherRSA *rsa.PrivateKey
	ec            *ecdsa.PrivateKey
	pkixPEM       []byte // rsa's public key as PUBLIC KEY
	pkcs1PEM      []byte // ... as RSA PUBLIC KEY
	certPEM       []byte // ... in a self-signed CERTIFICATE
	pkixDER       []byte
	pkcs1DER      []byte
}

// keys makes the test keys once per test binary: RSA key generation takes
// a while.
var keys = sync.OnceValue(func() testKeys {
	var k testKeys
	var err error
	if k.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.otherRSA, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		panic(err)
	}
	if k.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		panic(err)
	}
	if k.pkixDER, err = x509.MarshalPKIXPublicKey(&k.rsa.PublicKey); err != nil {
		panic(err)
	}
	k.pkcs1DER = x509.MarshalPKCS1PublicKey(&k.rsa.PublicKey)
	k.pkixPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: k.pkixDER})
	k.pkcs1PEM = pem.EncodeToMemory(&pem.Block{Type: "RSA PUBLIC KEY", Bytes: k.pkcs1DER})
	k.certPEM = selfSigned(k.rsa.Public(), k.rsa)
	return k
})

func selfSigned(pub any, priv any) []byte {
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "comet test"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		panic(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func mustVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := NewVerifier(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// jwtSign signs claims with any method the jwt package knows, so that
// tests can make tokens that Sign refuses to.
func jwtSign(t testing.TB, m jwt.SigningMethod, key any, claims map[string]any) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, jwt.MapClaims(claims)).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", m.Alg(), err)
	}
	return s
}

// claims returns alice's claims (valid for an hour from now, with grants),
// changed by kv: a key with a nil value is removed.
func claims(kv map[string]any) map[string]any {
	c := map[string]any{
		"sub":       "alice",
		"exp":       now.Add(time.Hour).Unix(),
		"subscribe": []string{"news:*", "dm:{sub}:*"},
		"publish":   []string{"dm:*:{sub}"},
	}
	for k, v := range kv {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	return c
}

func with(kv ...any) map[string]any {
	m := map[string]any{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1]
	}
	return claims(m)
}

var alice = Identity{
	User:      "alice",
	Expires:   now.Add(time.Hour),
	Subscribe: []string{"news:*", "dm:{sub}:*"},
	Publish:   []string{"dm:*:{sub}"},
}

// b64 is a JWT segment.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestVerify(t *testing.T) {
	k := keys()
	hmacOnly := mustVerifier(t, Config{HMACSecret: secret})
	rsaOnly := mustVerifier(t, Config{RSAPublicKey: &k.rsa.PublicKey})
	both := mustVerifier(t, Config{HMACSecret: secret, RSAPublicKey: &k.rsa.PublicKey})
	strict := mustVerifier(t, Config{HMACSecret: secret, Issuer: "https://id.example", Audience: "comet", Leeway: 30 * time.Second})

	hs := func(c map[string]any) string { return jwtSign(t, jwt.SigningMethodHS256, secret, c) }
	rs := func(c map[string]any) string { return jwtSign(t, jwt.SigningMethodRS256, k.rsa, c) }
	good := hs(claims(nil))
	parts := strings.Split(good, ".")
	critTok := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims(claims(nil)))
	critTok.Header["crit"] = []string{"exp"}
	crit, err := critTok.SignedString(secret)
	if err != nil {
		t.Fatal(err)
	}
	none, err := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims(claims(nil))).SignedString(jwt.UnsafeAllowNoneSignatureType)
	if err != nil {
		t.Fatal(err)
	}
	noExp := alice
	noExp.Expires = time.Time{}
	bare := Identity{User: "alice"}
	long := strings.Repeat("u", MaxUserLen)

	tests := []struct {
		name  string
		v     *Verifier
		token string
		now   time.Time // zero: now
		want  Identity
		err   error
	}{
		// Good tokens.
		{name: "HS256", v: hmacOnly, token: good, want: alice},
		{name: "HS256 both keys", v: both, token: good, want: alice},
		{name: "RS256", v: rsaOnly, token: rs(claims(nil)), want: alice},
		{name: "RS256 both keys", v: both, token: rs(claims(nil)), want: alice},
		{name: "no exp never expires", v: hmacOnly, token: hs(with("exp", nil)), now: now.AddDate(100, 0, 0), want: noExp},
		{name: "only sub", v: hmacOnly, token: hs(map[string]any{"sub": "alice"}), want: bare},
		{name: "empty grants", v: hmacOnly, token: hs(map[string]any{"sub": "alice", "subscribe": []string{}}), want: bare},
		{name: "sub of 255 bytes", v: hmacOnly, token: hs(map[string]any{"sub": long}), want: Identity{User: long}},
		{name: "fractional exp", v: hmacOnly, token: hs(map[string]any{"sub": "alice", "exp": float64(now.Unix()) + 0.5}),
			want: Identity{User: "alice", Expires: now.Add(500 * time.Millisecond)}},
		{name: "nbf now", v: hmacOnly, token: hs(with("nbf", now.Unix())), want: alice},
		{name: "iss and aud", v: strict, token: hs(with("iss", "https://id.example", "aud", "comet")), want: alice},
		{name: "aud array", v: strict, token: hs(with("iss", "https://id.example", "aud", []string{"other", "comet"})), want: alice},
		{name: "iss and aud ignored when not configured", v: hmacOnly, token: hs(with("iss", "x", "aud", 7)), want: alice},

		// Time.
		{name: "expired", v: hmacOnly, token: hs(with("exp", now.Add(-time.Second).Unix())), err: ErrExpired},
		{name: "expires now", v: hmacOnly, token: hs(with("exp", now.Unix())), err: ErrExpired},
		{name: "exp 0 is 1970", v: hmacOnly, token: hs(with("exp", 0)), err: ErrExpired},
		{name: "expired within leeway", v: strict, token: hs(with("iss", "https://id.example", "aud", "comet", "exp", now.Add(-29*time.Second).Unix())),
			want: Identity{User: "alice", Expires: now.Add(-29 * time.Second), Subscribe: alice.Subscribe, Publish: alice.Publish}},
		{name: "expired past leeway", v: strict, token: hs(with("iss", "https://id.example", "aud", "comet", "exp", now.Add(-30*time.Second).Unix())), err: ErrExpired},
		{name: "not yet valid", v: hmacOnly, token: hs(with("nbf", now.Add(time.Second).Unix())), err: ErrInvalid},
		{name: "nbf within leeway", v: strict, token: hs(with("iss", "https://id.example", "aud", "comet", "nbf", now.Add(30*time.Second).Unix())), want: alice},
		{name: "nbf past leeway", v: strict, token: hs(with("iss", "https://id.example", "aud", "comet", "nbf", now.Add(31*time.Second).Unix())), err: ErrInvalid},

		// Keys and algs.
		{name: "wrong HMAC key", v: hmacOnly, token: jwtSign(t, jwt.SigningMethodHS256, otherSecret, claims(nil)), err: ErrInvalid},
		{name: "wrong RSA key", v: rsaOnly, token: jwtSign(t, jwt.SigningMethodRS256, k.otherRSA, claims(nil)), err: ErrInvalid},
		{name: "RS256 without RSA key", v: hmacOnly, token: rs(claims(nil)), err: ErrInvalid},
		{name: "HS256 without HMAC key", v: rsaOnly, token: good, err: ErrInvalid},
		{name: "alg none", v: hmacOnly, token: none, err: ErrInvalid},
		{name: "alg none both keys", v: both, token: none, err: ErrInvalid},
		{name: "alg none with good signature", v: hmacOnly, token: b64(`{"alg":"none"}`) + "." + parts[1] + "." + parts[2], err: ErrInvalid},
		{name: "confusion PKIX PEM", v: rsaOnly, token: jwtSign(t, jwt.SigningMethodHS256, k.pkixPEM, claims(nil)), err: ErrInvalid},
		{name: "confusion PKIX PEM both keys", v: both, token: jwtSign(t, jwt.SigningMethodHS256, k.pkixPEM, claims(nil)), err: ErrInvalid},
		{name: "confusion PKCS1 PEM", v: rsaOnly, token: jwtSign(t, jwt.SigningMethodHS256, k.pkcs1PEM, claims(nil)), err: ErrInvalid},
		{name: "confusion PKIX DER", v: both, token: jwtSign(t, jwt.SigningMethodHS256, k.pkixDER, claims(nil)), err: ErrInvalid},
		{name: "confusion PKCS1 DER", v: both, token: jwtSign(t, jwt.SigningMethodHS256, k.pkcs1DER, claims(nil)), err: ErrInvalid},
		{name: "HS384", v: hmacOnly, token: jwtSign(t, jwt.SigningMethodHS384, secret, claims(nil)), err: ErrInvalid},
		{name: "HS512", v: both, token: jwtSign(t, jwt.SigningMethodHS512, secret, claims(nil)), err: ErrInvalid},
		{name: "RS384", v: rsaOnly, token: jwtSign(t, jwt.SigningMethodRS384, k.rsa, claims(nil)), err: ErrInvalid},
		{name: "RS512", v: both, token: jwtSign(t, jwt.SigningMethodRS512, k.rsa, claims(nil)), err: ErrInvalid},
		{name: "PS256", v: rsaOnly, token: jwtSign(t, jwt.SigningMethodPS256, k.rsa, claims(nil)), err: ErrInvalid},
		{name: "ES256", v: both, token: jwtSign(t, jwt.SigningMethodES256, k.ec, claims(nil)), err: ErrInvalid},
		{name: "alg relabelled", v: both, token: b64(`{"alg":"HS512","typ":"JWT"}`) + "." + parts[1] + "." + parts[2], err: ErrInvalid},
		{name: "no alg", v: both, token: b64(`{"typ":"JWT"}`) + "." + parts[1] + "." + parts[2], err: ErrInvalid},
		{name: "crit header", v: hmacOnly, token: crit, err: ErrInvalid},

		// Malformed.
		{name: "no token", v: both, token: "", err: ErrInvalid},
		{name: "garbage", v: both, token: "garbage", err: ErrInvalid},
		{name: "dots", v: both, token: "..", err: ErrInvalid},
		{name: "bad base64", v: both, token: "a!.b!.c!", err: ErrInvalid},
		{name: "four segments", v: both, token: good + ".x", err: ErrInvalid},
		{name: "no signature", v: hmacOnly, token: parts[0] + "." + parts[1] + ".", err: ErrInvalid},
		{name: "tampered payload", v: hmacOnly, token: parts[0] + "." + b64(`{"sub":"admin","subscribe":["*"]}`) + "." + parts[2], err: ErrInvalid},
		{name: "tampered signature", v: hmacOnly, token: parts[0] + "." + parts[1] + "." + b64("not the signature at all, 32 b.."), err: ErrInvalid},
		{name: "claims not an object", v: hmacOnly, token: parts[0] + "." + b64(`[1,2]`) + "." + parts[2], err: ErrInvalid},
		{name: "too long", v: hmacOnly, token: hs(with("pad", strings.Repeat("x", 16<<10))), err: ErrInvalid},

		// Claims.
		{name: "no sub", v: hmacOnly, token: hs(with("sub", nil)), err: ErrInvalid},
		{name: "null sub", v: hmacOnly, token: hs(map[string]any{"sub": nil}), err: ErrInvalid},
		{name: "empty sub", v: hmacOnly, token: hs(with("sub", "")), err: ErrInvalid},
		{name: "numeric sub", v: hmacOnly, token: hs(with("sub", 42)), err: ErrInvalid},
		{name: "sub too long", v: hmacOnly, token: hs(with("sub", long+"u")), err: ErrInvalid},
		{name: "exp string", v: hmacOnly, token: hs(with("exp", "tomorrow")), err: ErrInvalid},
		{name: "exp negative", v: hmacOnly, token: hs(with("exp", -1)), err: ErrInvalid},
		{name: "exp huge", v: hmacOnly, token: hs(with("exp", 1e300)), err: ErrInvalid},
		{name: "nbf string", v: hmacOnly, token: hs(with("nbf", "now")), err: ErrInvalid},
		{name: "subscribe string", v: hmacOnly, token: hs(with("subscribe", "news:*")), err: ErrInvalid},
		{name: "subscribe null", v: hmacOnly, token: hs(with("subscribe", []any(nil))), err: ErrInvalid},
		{name: "subscribe numbers", v: hmacOnly, token: hs(with("subscribe", []any{"news:*", 1})), err: ErrInvalid},
		{name: "publish object", v: hmacOnly, token: hs(with("publish", map[string]any{"a": 1})), err: ErrInvalid},
		{name: "bad pattern", v: hmacOnly, token: hs(with("subscribe", []string{"news feed"})), err: ErrInvalid},
		{name: "bad placeholder", v: hmacOnly, token: hs(with("publish", []string{"dm:{user}"})), err: ErrInvalid},
		{name: "empty pattern", v: hmacOnly, token: hs(with("publish", []string{""})), err: ErrInvalid},
		{name: "wrong iss", v: strict, token: hs(with("iss", "https://evil.example", "aud", "comet")), err: ErrInvalid},
		{name: "no iss", v: strict, token: hs(with("aud", "comet")), err: ErrInvalid},
		{name: "numeric iss", v: strict, token: hs(with("iss", 1, "aud", "comet")), err: ErrInvalid},
		{name: "wrong aud", v: strict, token: hs(with("iss", "https://id.example", "aud", "other")), err: ErrInvalid},
		{name: "aud array without ours", v: strict, token: hs(with("iss", "https://id.example", "aud", []string{"a", "b"})), err: ErrInvalid},
		{name: "no aud", v: strict, token: hs(with("iss", "https://id.example")), err: ErrInvalid},
		{name: "numeric aud", v: strict, token: hs(with("iss", "https://id.example", "aud", 5)), err: ErrInvalid},

		// Expired and wrong in another way too: invalid, not expired.
		{name: "expired and wrong iss", v: strict, token: hs(with("iss", "x", "aud", "comet", "exp", now.Add(-time.Hour).Unix())), err: ErrInvalid},
		{name: "expired and no sub", v: hmacOnly, token: hs(with("sub", nil, "exp", now.Add(-time.Hour).Unix())), err: ErrInvalid},
		{name: "expired and not yet valid", v: hmacOnly, token: hs(with("nbf", now.Add(time.Hour).Unix(), "exp", now.Add(-time.Hour).Unix())), err: ErrInvalid},
		{name: "expired and wrong key", v: hmacOnly, token: jwtSign(t, jwt.SigningMethodHS256, otherSecret, with("exp", now.Add(-time.Hour).Unix())), err: ErrInvalid},
		{name: "expired and bad grant", v: hmacOnly, token: hs(with("exp", now.Add(-time.Hour).Unix(), "subscribe", []string{"a b"})), err: ErrInvalid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.now
			if at.IsZero() {
				at = now
			}
			got, err := tc.v.Verify(tc.token, at)
			if tc.err == nil {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if !reflect.DeepEqual(got, tc.want) {
					t.Fatalf("Verify = %+v, want %+v", got, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("Verify = %+v, %v; want %v", got, err, tc.err)
			}
			checkRefusal(t, err, tc.token)
			if !reflect.DeepEqual(got, Identity{}) {
				t.Errorf("Verify refused the token but returned %+v", got)
			}
			t.Logf("%v", err) // what the server's log would say
		})
	}
}

// checkRefusal checks what every refusal must be: exactly one sentinel,
// whose text starts the message, and nothing of the token or keys in it.
func checkRefusal(t testing.TB, err error, token string) {
	t.Helper()
	if errors.Is(err, ErrExpired) == errors.Is(err, ErrInvalid) {
		t.Fatalf("error %q must wrap exactly one of ErrExpired and ErrInvalid", err)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, ErrExpired.Error()+": ") && !strings.HasPrefix(msg, ErrInvalid.Error()+": ") {
		t.Errorf("error %q does not start with its sentinel and a reason", msg)
	}
	for _, seg := range strings.Split(token, ".") {
		if len(seg) >= 8 && strings.Contains(msg, seg) {
			t.Errorf("error %q holds a part of the token", msg)
		}
	}
	if strings.Contains(msg, string(secret)) {
		t.Errorf("error %q holds the secret", msg)
	}
}

func TestSentinelText(t *testing.T) {
	// The gateway sends these to clients: they must stay fixed and say
	// nothing of any token.
	if ErrExpired.Error() != "token expired" || ErrInvalid.Error() != "invalid token" {
		t.Fatalf("sentinels are %q and %q", ErrExpired, ErrInvalid)
	}
}

func TestIdentityAnonymous(t *testing.T) {
	if !(Identity{}).Anonymous() {
		t.Error("the zero Identity is not anonymous")
	}
	if alice.Anonymous() {
		t.Error("alice is anonymous")
	}
}

func TestNewVerifier(t *testing.T) {
	k := keys()
	small := &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 1023), E: 65537}
	tests := []struct {
		name string
		cfg  Config
		want string // in the error; "" for no error
	}{
		{"hmac", Config{HMACSecret: secret}, ""},
		{"rsa", Config{RSAPublicKey: &k.rsa.PublicKey}, ""},
		{"both", Config{HMACSecret: secret, RSAPublicKey: &k.rsa.PublicKey, Issuer: "i", Audience: "a", Leeway: time.Minute}, ""},
		{"no key", Config{Issuer: "i"}, "no key"},
		{"empty secret", Config{HMACSecret: []byte{}}, "no key"},
		{"short secret", Config{HMACSecret: []byte("hunter2")}, "at least 32"},
		{"secret is a public key PEM", Config{HMACSecret: k.pkixPEM, RSAPublicKey: &k.rsa.PublicKey}, "public key"},
		{"secret is a public key DER", Config{HMACSecret: k.pkcs1DER}, "public key"},
		{"secret is a certificate", Config{HMACSecret: k.certPEM}, "public key"},
		{"small RSA key", Config{RSAPublicKey: small}, "at least 2048"},
		{"RSA key without modulus", Config{RSAPublicKey: &rsa.PublicKey{}}, "at least 2048"},
		{"negative leeway", Config{HMACSecret: secret, Leeway: -time.Second}, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := NewVerifier(tc.cfg)
			if tc.want == "" {
				if err != nil || v == nil {
					t.Fatalf("NewVerifier = %v, %v", v, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewVerifier error = %v, want one about %q", err, tc.want)
			}
		})
	}
}

func TestVerifierCopiesSecret(t *testing.T) {
	s := bytes.Clone(secret)
	v := mustVerifier(t, Config{HMACSecret: s})
	token, err := Sign("HS256", secret, claims(nil))
	if err != nil {
		t.Fatal(err)
	}
	s[0] ^= 1
	if _, err := v.Verify(token, now); err != nil {
		t.Fatalf("changing the caller's slice changed the verifier: %v", err)
	}
}

func TestSign(t *testing.T) {
	k := keys()
	v := mustVerifier(t, Config{HMACSecret: secret, RSAPublicKey: &k.rsa.PublicKey})
	for _, tc := range []struct {
		method string
		key    any
	}{{"HS256", secret}, {"RS256", k.rsa}} {
		token, err := Sign(tc.method, tc.key, claims(nil))
		if err != nil {
			t.Fatalf("Sign %s: %v", tc.method, err)
		}
		got, err := v.Verify(token, now)
		if err != nil || !reflect.DeepEqual(got, alice) {
			t.Fatalf("Verify(Sign %s) = %+v, %v", tc.method, got, err)
		}
	}
	for _, tc := range []struct {
		method string
		key    any
		want   string
	}{
		{"HS256", "a string secret", "[]byte"},
		{"HS256", []byte("short"), "at least 32"},
		{"RS256", secret, "*rsa.PrivateKey"},
		{"RS256", &k.rsa.PublicKey, "*rsa.PrivateKey"},
		{"HS512", secret, "HS256 or RS256"},
		{"none", nil, "HS256 or RS256"},
	} {
		if _, err := Sign(tc.method, tc.key, claims(nil)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Sign(%s, %T) error = %v, want one about %q", tc.method, tc.key, err, tc.want)
		}
	}
}

func TestLoadRSAPublicKey(t *testing.T) {
	k := keys()
	ecDER, err := x509.MarshalPKIXPublicKey(k.ec.Public())
	if err != nil {
		t.Fatal(err)
	}
	privDER, err := x509.MarshalPKCS8PrivateKey(k.rsa)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	tests := []struct {
		name string
		in   []byte
		want string // in the error; "" for the test RSA key
	}{
		{"PKIX", k.pkixPEM, ""},
		{"PKCS1", k.pkcs1PEM, ""},
		{"certificate", k.certPEM, ""},
		{"text before the block", append([]byte("# comet's key\n"), k.pkixPEM...), ""},
		{"empty", nil, "no PEM block"},
		{"DER", k.pkixDER, "no PEM block"},
		{"EC key", pemOf("PUBLIC KEY", ecDER), "not an RSA key"},
		{"EC certificate", selfSigned(k.ec.Public(), k.ec), "not an RSA key"},
		{"private key", pemOf("PRIVATE KEY", privDER), "private key"},
		{"other block", pemOf("OPENSSH PRIVATE KEY", []byte{1}), "want"},
		{"PKIX with PKCS1 bytes", pemOf("PUBLIC KEY", k.pkcs1DER), "PUBLIC KEY"},
		{"PKCS1 with PKIX bytes", pemOf("RSA PUBLIC KEY", k.pkixDER), "RSA PUBLIC KEY"},
		{"bad certificate", pemOf("CERTIFICATE", []byte{1, 2, 3}), "CERTIFICATE"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := LoadRSAPublicKey(tc.in)
			if tc.want == "" {
				if err != nil || !got.Equal(&k.rsa.PublicKey) {
					t.Fatalf("LoadRSAPublicKey = %v, %v", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadRSAPublicKey error = %v, want one about %q", err, tc.want)
			}
		})
	}
}

func TestVerifyConcurrent(t *testing.T) {
	v := mustVerifier(t, Config{HMACSecret: secret})
	token := jwtSign(t, jwt.SigningMethodHS256, secret, claims(nil))
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				if id, err := v.Verify(token, now); err != nil || id.User != "alice" {
					t.Errorf("Verify = %+v, %v", id, err)
					return
				}
			}
		})
	}
	wg.Wait()
}

func FuzzVerify(f *testing.F) {
	k := keys()
	v := mustVerifier(f, Config{HMACSecret: secret, RSAPublicKey: &k.rsa.PublicKey, Issuer: "iss", Audience: "aud", Leeway: time.Second})
	good := with("iss", "iss", "aud", "aud")
	for _, c := range []map[string]any{good, claims(nil), with("exp", 1), with("sub", 3), with("subscribe", "x")} {
		f.Add(jwtSign(f, jwt.SigningMethodHS256, secret, c))
		f.Add(jwtSign(f, jwt.SigningMethodRS256, k.rsa, c))
	}
	f.Add(jwtSign(f, jwt.SigningMethodHS512, secret, good))
	f.Add(jwtSign(f, jwt.SigningMethodHS256, k.pkixPEM, good))
	f.Add(b64(`{"alg":"none"}`) + "." + b64(`{"sub":"a"}`) + ".")
	f.Add(b64(`{"alg":"HS256"}`) + "." + b64(`{"sub":"a","exp":1e400}`) + ".x")
	for _, s := range []string{"", ".", "..", "a.b.c", "eyJ.eyJ.", "\x00", strings.Repeat("a.", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, token string) {
		id, err := v.Verify(token, now)
		if err != nil {
			if errors.Is(err, ErrExpired) == errors.Is(err, ErrInvalid) {
				t.Fatalf("error %q must wrap exactly one sentinel", err)
			}
			return
		}
		if id.User == "" || len(id.User) > MaxUserLen {
			t.Fatalf("Verify accepted a token with user %q", id.User)
		}
		for _, p := range append(id.Subscribe, id.Publish...) {
			if err := CheckPattern(p); err != nil {
				t.Fatalf("Verify accepted a token with pattern %q: %v", p, err)
			}
		}
	})
}

func BenchmarkVerifyHS256(b *testing.B) {
	v := mustVerifier(b, Config{HMACSecret: secret})
	token := jwtSign(b, jwt.SigningMethodHS256, secret, claims(nil))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(token, now); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkVerifyRS256(b *testing.B) {
	k := keys()
	v := mustVerifier(b, Config{RSAPublicKey: &k.rsa.PublicKey})
	token := jwtSign(b, jwt.SigningMethodRS256, k.rsa, claims(nil))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(token, now); err != nil {
			b.Fatal(err)
		}
	}
}
