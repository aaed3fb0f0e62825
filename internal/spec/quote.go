package spec

import (
	"fmt"
	"strconv"
	"unicode/utf8"
)

// MaxQuoted bounds how much of a user's value a message quotes back: a
// denial or a problem line names the value, it does not echo 200 KiB of it.
const MaxQuoted = 80

// MaxQuotedLen is the most bytes Quote returns: each of MaxQuoted bytes
// escaped as \xNN, the quotes, and "… (N bytes)" with the largest N.
const MaxQuotedLen = 4*MaxQuoted + len(`""… ( bytes)`) + len("9223372036854775807")

// Quote is strconv.Quote for a value the user typed, cut to MaxQuoted bytes
// on a character boundary, with its full length when cut.
func Quote(s string) string {
	if len(s) <= MaxQuoted {
		return strconv.Quote(s)
	}
	cut := MaxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}
