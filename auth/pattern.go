package auth

import (
	"fmt"
	"strings"

	"github.com/comethq/comet/wire"
)

// subToken stands for the connection's user in a pattern.
const subToken = "{sub}"

// CheckPattern returns a descriptive error when pattern is not a valid
// channel pattern: 1-255 bytes of channel name characters, '*' and
// "{sub}".
func CheckPattern(pattern string) error {
	if pattern == "" {
		return fmt.Errorf("pattern is empty")
	}
	if len(pattern) > wire.MaxChannelLen {
		return fmt.Errorf("pattern is %d bytes, longer than %d", len(pattern), wire.MaxChannelLen)
	}
	for i := 0; i < len(pattern); i++ {
		c := pattern[i]
		switch {
		case c == '*':
		case strings.HasPrefix(pattern[i:], subToken):
			i += len(subToken) - 1
		case c == '{' || c == '}':
			return fmt.Errorf("pattern %q has a brace at byte %d: braces are allowed only in %s", pattern, i, subToken)
		case !wire.ValidChannel(pattern[i : i+1]): // one byte is a valid name exactly when it is a valid character
			return fmt.Errorf("pattern %q has %q at byte %d; want [A-Za-z0-9_.:/@-], * and %s", pattern, c, i, subToken)
		}
	}
	return nil
}

// match reports whether channel matches pattern, where '*' matches any run
// of bytes and "{sub}" matches user, taken literally.
//
// It is the classic two-pointer wildcard match, over pattern with {sub}
// spelled out: on a mismatch it goes back only to the last '*' and lets
// that '*' take one more byte. So it takes O(len(pattern)·len(channel))
// steps at worst, never exponential time, and it never panics, whatever
// its input.
func match(pattern, user, channel string) bool {
	p, u := 0, 0        // next byte of pattern; of user while pattern[p:] starts with {sub}
	star, mark := -1, 0 // p just after the last '*', and where in channel that '*' stops
	c := 0
	for {
		// Step over {sub}s whose user is used up (or empty).
		for u == len(user) && strings.HasPrefix(pattern[p:], subToken) {
			p, u = p+len(subToken), 0
		}
		if c == len(channel) {
			break
		}
		if p < len(pattern) && pattern[p] == '*' {
			p++
			star, mark = p, c
			continue
		}
		if p < len(pattern) {
			if strings.HasPrefix(pattern[p:], subToken) {
				if user[u] == channel[c] {
					u, c = u+1, c+1
					continue
				}
			} else if pattern[p] == channel[c] {
				p, c = p+1, c+1
				continue
			}
		}
		if star < 0 {
			return false
		}
		mark++
		p, u, c = star, 0, mark
	}
	// The channel is used up: the rest of the pattern must match "".
	for p < len(pattern) {
		switch {
		case pattern[p] == '*':
			p++
		case u == len(user) && strings.HasPrefix(pattern[p:], subToken):
			p, u = p+len(subToken), 0
		default:
			return false
		}
	}
	return true
}
