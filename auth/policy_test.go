package auth

import (
	"reflect"
	"strings"
	"testing"
)

func mustPolicy(t testing.TB, rules ...Rule) *Policy {
	t.Helper()
	p, err := NewPolicy(rules)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// standardRules is the example of the package doc, with admin channels and
// a catch-all.
var standardRules = []Rule{
	{Match: "public:*", Subscribe: "anyone", Publish: "users"},
	{Match: "user:{sub}:*", Subscribe: "users"}, // publish: none
	{Match: "admin:*", Subscribe: "none", Publish: "none"},
	{Match: "*", Subscribe: "users", Publish: "users"},
}

func TestAllow(t *testing.T) {
	var (
		anon  = Identity{}
		alice = Identity{User: "alice"}
		bob   = Identity{User: "bob"}
		// aliceGrants's token grants what the rules do not.
		aliceGrants = Identity{User: "alice", Subscribe: []string{"admin:*"}, Publish: []string{"user:{sub}:*", "user:bob:inbox"}}
		// Grants without a user (not made by Verify) count for nothing.
		anonGrants = Identity{Subscribe: []string{"*"}, Publish: []string{"*"}}
		// A user whose name is a pattern: {sub} takes it literally.
		star = Identity{User: "*", Subscribe: []string{"dm:{sub}"}}
	)
	var nilPolicy *Policy
	open := mustPolicy(t)
	std := mustPolicy(t, standardRules...)
	publicOnly := mustPolicy(t, Rule{Match: "public:*", Subscribe: "anyone", Publish: "anyone"})
	firstDenies := mustPolicy(t, Rule{Match: "a:*", Subscribe: "none"}, Rule{Match: "a:b", Subscribe: "anyone"})
	firstAllows := mustPolicy(t, Rule{Match: "a:b", Subscribe: "anyone"}, Rule{Match: "a:*", Subscribe: "none"})
	subAnyone := mustPolicy(t, Rule{Match: "user:{sub}:*", Subscribe: "anyone"})
	tests := []struct {
		name    string
		p       *Policy
		id      Identity
		op      Op
		channel string
		want    bool
	}{
		// Nil and empty policies: an open gateway.
		{"nil anon sub", nilPolicy, anon, Subscribe, "admin:x", true},
		{"nil anon pub", nilPolicy, anon, Publish, "admin:x", true},
		{"open anon sub", open, anon, Subscribe, "admin:x", true},
		{"open anon pub", open, anon, Publish, "anything", true},
		{"open alice pub", open, alice, Publish, "user:bob:inbox", true},
		{"open unknown op", open, alice, Op(0), "x", false},
		{"std unknown op", std, aliceGrants, Op(3), "admin:x", false},

		// public:* anyone subscribe, users publish.
		{"public anon sub", std, anon, Subscribe, "public:news", true},
		{"public anon pub", std, anon, Publish, "public:news", false},
		{"public alice sub", std, alice, Subscribe, "public:news", true},
		{"public alice pub", std, alice, Publish, "public:news", true},
		{"public deep", std, bob, Publish, "public:a/b:c", true},

		// user:{sub}:* users subscribe, nobody publishes.
		{"own inbox alice", std, alice, Subscribe, "user:alice:inbox", true},
		{"own inbox bob", std, bob, Subscribe, "user:bob:inbox", true},
		{"other inbox: no fall-through to *", std, alice, Subscribe, "user:bob:inbox", false},
		{"inbox anon", std, anon, Subscribe, "user:alice:inbox", false},
		{"own inbox publish none", std, alice, Publish, "user:alice:inbox", false},
		{"other inbox publish", std, bob, Publish, "user:alice:inbox", false},
		{"prefix of another user", std, alice, Subscribe, "user:alicex:inbox", false},
		{"user: alone goes to *", std, alice, Subscribe, "user:alice", true},
		{"caveat: separators in users", std, Identity{User: "a"}, Subscribe, "user:a:b:inbox", true},
		{"literal user", std, star, Subscribe, "user:x:inbox", false},
		{"literal user own", std, star, Subscribe, "user:*:inbox", true},

		// admin:* none.
		{"admin anon", std, anon, Subscribe, "admin:logs", false},
		{"admin alice", std, alice, Subscribe, "admin:logs", false},
		{"admin alice pub", std, alice, Publish, "admin:logs", false},

		// The catch-all.
		{"catch-all alice", std, alice, Subscribe, "chat:room1", true},
		{"catch-all alice pub", std, alice, Publish, "chat:room1", true},
		{"catch-all anon", std, anon, Subscribe, "chat:room1", false},
		{"catch-all anon pub", std, anon, Publish, "chat:room1", false},

		// Token grants come first.
		{"grant admin", std, aliceGrants, Subscribe, "admin:logs", true},
		{"grant is per op", std, aliceGrants, Publish, "admin:logs", false},
		{"grant own inbox publish", std, aliceGrants, Publish, "user:alice:inbox", true},
		{"grant bob's inbox publish", std, aliceGrants, Publish, "user:bob:inbox", true},
		{"grant not bob's outbox", std, aliceGrants, Publish, "user:bob:outbox", false},
		{"grant rules still apply", std, aliceGrants, Subscribe, "public:news", true},
		{"grant rules still deny", std, aliceGrants, Subscribe, "user:bob:inbox", false},
		{"grant with no rule", publicOnly, aliceGrants, Subscribe, "admin:x", true},
		{"grants of no user", std, anonGrants, Subscribe, "admin:logs", false},
		{"grants of no user pub", std, anonGrants, Publish, "chat:x", false},
		{"grant literal user", publicOnly, star, Subscribe, "dm:x", false},
		{"grant literal user own", publicOnly, star, Subscribe, "dm:*", true},

		// No rule covers the channel.
		{"uncovered anon", publicOnly, anon, Subscribe, "chat:x", false},
		{"uncovered alice", publicOnly, alice, Publish, "chat:x", false},
		{"covered", publicOnly, anon, Publish, "public:x", true},

		// The first rule that covers the channel decides.
		{"first denies", firstDenies, alice, Subscribe, "a:b", false},
		{"first allows", firstAllows, anon, Subscribe, "a:b", true},
		{"first allows others", firstAllows, alice, Subscribe, "a:c", false},

		// {sub} restricts only users rules.
		{"sub anyone", subAnyone, anon, Subscribe, "user:bob:inbox", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.p.Allow(tc.id, tc.op, tc.channel); got != tc.want {
				t.Fatalf("Allow(%+v, %v, %q) = %v, want %v", tc.id, tc.op, tc.channel, got, tc.want)
			}
		})
	}
}

func TestNewPolicyErrors(t *testing.T) {
	tests := []struct {
		rule Rule
		want string
	}{
		{Rule{Match: "", Subscribe: "anyone"}, "rule 2: match: pattern is empty"},
		{Rule{Match: "a b", Subscribe: "anyone"}, `rule 2: match: pattern "a b" has ' '`},
		{Rule{Match: "user:{user}", Subscribe: "users"}, "rule 2: match: pattern \"user:{user}\" has a brace"},
		{Rule{Match: "x:*", Subscribe: "everyone"}, `rule 2 (match "x:*"): subscribe is "everyone"; want anyone, users or none`},
		{Rule{Match: "x:*", Subscribe: "Anyone"}, `subscribe is "Anyone"`},
		{Rule{Match: "x:*", Publish: "user"}, `rule 2 (match "x:*"): publish is "user"`},
	}
	for _, tc := range tests {
		_, err := NewPolicy([]Rule{{Match: "ok", Subscribe: "anyone"}, tc.rule})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("NewPolicy(%+v) error = %v, want one with %q", tc.rule, err, tc.want)
		}
	}
}

func TestRules(t *testing.T) {
	p := mustPolicy(t, standardRules...)
	got := p.Rules()
	if !reflect.DeepEqual(got, standardRules) {
		t.Fatalf("Rules() = %+v, want %+v", got, standardRules)
	}
	got[0].Subscribe = "none"
	if !p.Allow(Identity{}, Subscribe, "public:x") {
		t.Fatal("changing what Rules returned changed the policy")
	}
	if (*Policy)(nil).Rules() != nil {
		t.Fatal("a nil policy has rules")
	}
}

func TestOpString(t *testing.T) {
	for op, want := range map[Op]string{Subscribe: "subscribe", Publish: "publish", 7: "Op(7)"} {
		if got := op.String(); got != want {
			t.Errorf("Op(%d).String() = %q, want %q", int(op), got, want)
		}
	}
}

func BenchmarkAllow(b *testing.B) {
	p := mustPolicy(b, append([]Rule{
		{Match: "chat:room:*", Subscribe: "users", Publish: "users"},
		{Match: "feeds:{sub}/*", Subscribe: "users"},
	}, standardRules...)...)
	cases := []struct {
		id      Identity
		op      Op
		channel string
	}{
		{Identity{}, Subscribe, "public:news:sports"},
		{Identity{User: "alice"}, Subscribe, "user:alice:inbox"},
		{Identity{User: "alice"}, Subscribe, "user:bob:inbox"},
		{Identity{User: "alice", Subscribe: []string{"admin:*"}}, Subscribe, "admin:logs"},
		{Identity{User: "alice"}, Publish, "chat:general"},
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		c := &cases[i%len(cases)]
		p.Allow(c.id, c.op, c.channel)
		i++
	}
}
