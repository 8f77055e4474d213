// Package auth decides who a client connection is and what it may do: it
// verifies the connection's JWT (Verifier) and checks each subscribe and
// publish against the token's own grants and the server's rules (Policy).
// The gateway uses it; it keeps no state and starts no goroutines, and
// Verifier and Policy are safe for concurrent use.
//
// # Tokens
//
// A client proves who it is with a JWT (RFC 7519). A Verifier accepts
// exactly two algorithms, each with its own key:
//
//   - HS256, only when Config.HMACSecret is set (at least 32 bytes, as
//     RFC 7518 requires);
//   - RS256, only when Config.RSAPublicKey is set (at least 2048 bits).
//
// Every other alg is refused: "none", HS384/HS512, RS384/RS512, ES*, PS*
// and EdDSA. An HS256 token is only ever checked with HMACSecret and an
// RS256 one only with RSAPublicKey, so the "alg confusion" attack (an HS256
// token whose HMAC key is the RSA public key, which anyone may have) fails;
// NewVerifier also refuses an HMACSecret that is a public key. A token
// with a "crit" header is refused.
//
// The claims read are:
//
//	sub        required: the user, 1-255 bytes (Identity.User)
//	exp        optional: seconds since 1970; absent means the token never
//	           expires; the token is refused from exp on (plus Config.Leeway)
//	nbf        optional: the token is refused before nbf (minus Config.Leeway)
//	iss, aud   checked only when Config.Issuer / Config.Audience is set; aud
//	           may be a string or an array that contains Config.Audience
//	subscribe  optional: an array of channel patterns the token lets the
//	           user subscribe to, whatever the rules say
//	publish    optional: the same for publish
//
// A token whose claims have the wrong types (a numeric sub, a string exp, a
// subscribe that is not an array of strings) or an invalid pattern is
// refused. Tokens longer than 16 KiB are refused without being parsed.
//
// # Errors
//
// Verify refuses a token with an error that wraps exactly one of two
// sentinels: ErrExpired ("token expired": the token was good but its exp
// has passed; a new token will do) or ErrInvalid ("invalid token": anything
// else, including a bad signature, a token not valid yet, a wrong issuer or
// audience, and an expired token that is also wrong in another way). The
// rest of the error says why, for the server's log. It may quote claims but
// never the token or a key. Tell clients only the sentinel's text:
//
//	switch {
//	case errors.Is(err, auth.ErrExpired):
//		msg = auth.ErrExpired.Error()
//	default:
//		msg = auth.ErrInvalid.Error()
//	}
//
// Verify("") is ErrInvalid too: whether a connection without a token is let
// in as the anonymous user (the zero Identity) is for the gateway to decide
// (--allow-anonymous).
//
// # Channel patterns
//
// A pattern is a channel name that may also hold '*' and "{sub}":
//
//   - '*' matches any run of bytes, including an empty one and ':' and '/':
//     "chat:*" matches "chat:", "chat:a" and "chat:a/b:c".
//   - "{sub}" stands for the connection's user, taken literally: for user
//     "alice", "user:{sub}:*" matches "user:alice:inbox". A user named "a*"
//     matches only a channel that holds "a*", which no valid channel does.
//
// Otherwise a pattern has the characters of a channel name
// ([A-Za-z0-9_.:/@-]) and is 1-255 bytes long; CheckPattern says what is
// wrong with one that is not. Matching takes at most
// O(len(pattern)·len(channel)) steps, whatever the input.
//
// # Rules
//
// A Rule gives, for the channels its Match pattern covers, who may
// subscribe and who may publish:
//
//	anyone   every connection, anonymous ones too
//	users    connections with a valid token; when Match holds {sub}, only
//	         the user whose name fills {sub}
//	none     no client (the empty value means none too); workers and the
//	         hub API are not clients and are not held by rules
//
// In a config file:
//
//	channels:
//	  - match: "public:*"
//	    subscribe: anyone
//	    publish: users
//	  - match: "user:{sub}:*"
//	    subscribe: users
//	  - match: "*"
//	    subscribe: none
//
// # How a subscribe or publish is decided
//
// Policy.Allow(id, op, channel) answers, in this order:
//
//  1. If the connection's token grants op on the channel (a pattern in its
//     subscribe or publish claim matches, with {sub} filled by the user),
//     allow. Anonymous connections have no grants.
//  2. If there are no rules at all, allow: an open gateway, where every
//     connection that was let in may subscribe and publish anywhere.
//  3. Otherwise the first rule whose Match covers the channel decides,
//     and no later rule is looked at. To find that rule, {sub} counts as
//     '*': "user:{sub}:*" covers every "user:X:Y". Then: anyone allows;
//     none denies; users allows an authenticated user, and, when Match has
//     {sub}, only if Match with {sub} filled by that user matches the
//     channel. So with the rules above, alice may subscribe to
//     "user:alice:inbox", but not to "user:bob:inbox": the user:{sub}:*
//     rule covers it and refuses her, and the "*" rule is never reached.
//     Nobody may publish to user:* channels: the rule's publish is empty.
//  4. If no rule covers the channel, deny.
//
// A nil *Policy allows everything.
//
// # Caveats
//
// '*' crosses ':' and '/'. With "user:{sub}:*", user "a" is also granted
// "user:a:b:inbox", which is the inbox of a user named "a:b". Issue user
// ids (sub) without the separators your channel names use, or end such
// patterns with {sub} ("inbox:{sub}").
//
// Allow does not check that channel is a valid channel name; the gateway
// does that first (wire.CheckChannel).
package auth
