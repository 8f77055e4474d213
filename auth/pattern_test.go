package auth

import (
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestCheckPattern(t *testing.T) {
	valid := []string{
		"a", "*", "**", "{sub}", "{sub}{sub}", "user:{sub}:*", "a{sub}b*c",
		"A-Z_a.z:0/9@x-", strings.Repeat("x", 255), strings.Repeat("{sub}", 51),
	}
	for _, p := range valid {
		if err := CheckPattern(p); err != nil {
			t.Errorf("CheckPattern(%q) = %v, want nil", p, err)
		}
	}
	invalid := map[string]string{
		"":                          "empty",
		strings.Repeat("x", 256):    "256 bytes",
		"a b":                       `' ' at byte 1`,
		"é":                         "at byte 0",
		"a\x00":                     "at byte 1",
		"news?":                     "'?' at byte 4",
		"{":                         "brace at byte 0",
		"}":                         "brace at byte 0",
		"{sub":                      "brace at byte 0",
		"sub}":                      "brace at byte 3",
		"{SUB}":                     "brace",
		"{user}":                    "brace",
		"{{sub}}":                   "brace at byte 0",
		"{sub}}":                    "brace at byte 5",
		"a*{sub}*{":                 "brace at byte 8",
		strings.Repeat("*", 256):    "256 bytes",
		strings.Repeat("{sub}", 52): "260 bytes",
	}
	for p, want := range invalid {
		err := CheckPattern(p)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("CheckPattern(%.20q) = %v, want an error about %q", p, err, want)
		}
	}
}

func TestMatch(t *testing.T) {
	long := strings.Repeat("a", 255)
	tests := []struct {
		pattern, user, channel string
		want                   bool
	}{
		{"news", "", "news", true},
		{"news", "", "news2", false},
		{"news", "", "new", false},
		{"news", "", "", false},
		{"*", "", "", true},
		{"*", "", "anything:at/all", true},
		{"news:*", "", "news:", true},
		{"news:*", "", "news:a/b:c", true},
		{"news:*", "", "news", false},
		{"*:news", "", "a:b:news", true},
		{"*:news", "", "a:b:news:", false},
		{"a*b*c", "", "abc", true},
		{"a*b*c", "", "aXbYc", true},
		{"a*b*c", "", "abcb", false},
		{"a*b*c", "", "acb", false},
		{"a**b", "", "ab", true},
		{"*ab*ab*", "", "xabyab", true},
		{"*ab*ab*", "", "xaby", false},
		{"*aab", "", "aaab", true}, // needs backtracking
		{"user:{sub}:*", "alice", "user:alice:inbox", true},
		{"user:{sub}:*", "alice", "user:alice:", true},
		{"user:{sub}:*", "alice", "user:bob:inbox", false},
		{"user:{sub}:*", "alice", "user:alice", false},
		{"user:{sub}:*", "alice", "user:alic:inbox", false},
		{"user:{sub}:*", "alice", "user:alicex:inbox", false},
		{"user:{sub}:*", "a", "user:a:b:inbox", true}, // the caveat in the package doc
		{"inbox:{sub}", "a", "inbox:a:b", false},
		{"inbox:{sub}", "a", "inbox:a", true},
		{"{sub}", "alice", "alice", true},
		{"{sub}{sub}", "ab", "abab", true},
		{"{sub}{sub}", "ab", "ab", false},
		{"*{sub}", "ab", "xxabab", true},
		{"*{sub}*", "aab", "aaab", true}, // backtracking inside {sub}
		{"*{sub}:x", "ab", "abab:x", true},
		{"dm:{sub}", "a*", "dm:anything", false}, // the user is literal
		{"dm:{sub}", "a*", "dm:a*", true},
		{"dm:{sub}", "", "dm:", true},
		{"dm:{sub}:x", "", "dm::x", true},
		{"dm:{sub}{sub}*", "", "dm:", true},
		{"dm:*{sub}", "", "dm:", true},
		{"dm:*{sub}", "b", "dm:", false},
		{"dm:{sub}*", "b", "dm:", false},
		{long, "", long, true},
		{strings.Repeat("*a", 127) + "b", "", long, false}, // the worst case: quadratic, not exponential
		{strings.Repeat("*a", 127) + "*", "", long, true},
	}
	for _, tc := range tests {
		if got := match(tc.pattern, tc.user, tc.channel); got != tc.want {
			t.Errorf("match(%.40q, %q, %.40q) = %v, want %v", tc.pattern, tc.user, tc.channel, got, tc.want)
		}
	}
}

func TestMatchInvalidPatterns(t *testing.T) {
	// match is only given valid patterns, but must not panic on others.
	for _, p := range []string{"", "{", "{su", "{sub", "}{sub}", "*{", "é*"} {
		for _, user := range []string{"", "u", "{sub}"} {
			for _, ch := range []string{"", "{", "u", "é", "{sub}"} {
				match(p, user, ch)
			}
		}
	}
}

// reference is match as a regexp: {sub} is user quoted, '*' is .*.
func reference(t testing.TB, pattern, user string) *regexp.Regexp {
	t.Helper()
	var b strings.Builder
	b.WriteString(`(?s)^`)
	for i := 0; i < len(pattern); {
		switch {
		case strings.HasPrefix(pattern[i:], subToken):
			b.WriteString(regexp.QuoteMeta(user))
			i += len(subToken)
		case pattern[i] == '*':
			b.WriteString(`.*`)
			i++
		default:
			b.WriteString(regexp.QuoteMeta(pattern[i : i+1]))
			i++
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

func TestMatchReference(t *testing.T) {
	// Small alphabets, so that random patterns and channels often match.
	r := rand.New(rand.NewPCG(1, 2))
	pick := func(n int, parts ...string) string {
		var b strings.Builder
		for range r.IntN(n + 1) {
			b.WriteString(parts[r.IntN(len(parts))])
		}
		return b.String()
	}
	for range 3000 {
		pattern := pick(8, "a", "b", ":", "*", "{sub}")
		if CheckPattern(pattern) != nil {
			continue // empty
		}
		user := pick(3, "a", "b", ":", "*")
		channel := pick(12, "a", "b", ":")
		want := reference(t, pattern, user).MatchString(channel)
		if got := match(pattern, user, channel); got != want {
			t.Fatalf("match(%q, %q, %q) = %v, regexp says %v", pattern, user, channel, got, want)
		}
	}
}

func FuzzMatch(f *testing.F) {
	f.Add("user:{sub}:*", "alice", "user:alice:inbox")
	f.Add("user:{sub}:*", "alice", "user:bob:inbox")
	f.Add("*a*b", "", "aab")
	f.Add("*{sub}*", "aab", "aaab")
	f.Add("dm:{sub}", "a*", "dm:xyz")
	f.Add("{sub}{sub}", "", "")
	f.Add("{su", "", "{su")
	f.Add("*", "", "é")
	f.Fuzz(func(t *testing.T, pattern, user, channel string) {
		got := match(pattern, user, channel) // must not panic, valid or not
		if CheckPattern(pattern) != nil || !utf8.ValidString(user) || !utf8.ValidString(channel) {
			return // the regexp cannot stand for these
		}
		if want := reference(t, pattern, user).MatchString(channel); got != want {
			t.Fatalf("match(%q, %q, %q) = %v, regexp says %v", pattern, user, channel, got, want)
		}
	})
}
