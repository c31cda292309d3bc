package engine

import (
	"math/rand/v2"
	"strings"
	"testing"
	"unicode/utf8"
)

// appendStringModel is appendString as first written, a byte or rune at a time: the model the
// run-copying version must match.
func appendStringModel(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, "\\ufffd"...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

func TestAppendStringMatchesTheModel(t *testing.T) {
	pieces := []string{"a", "Z", " ", "~", "\"", "\\", "\n", "\r", "\t", "\x00", "\x1f", "\x7f", "é", "日本", "😀",
		"\xff", "\xc3", "\xe6\x97", "\xed\xa0\x80", "\ufffd", "</script>", "\u2028"}
	check := func(s string) {
		t.Helper()
		if got, want := string(appendString(nil, s)), string(appendStringModel(nil, s)); got != want {
			t.Fatalf("appendString(%q) = %s, want %s", s, got, want)
		}
	}
	check("")
	for _, p := range pieces {
		for _, q := range pieces {
			check(p + q)
			check("ab" + p + "cd" + q + "ef")
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 20000 {
		var sb strings.Builder
		for range r.IntN(12) {
			if r.IntN(3) == 0 {
				sb.WriteByte(byte(r.IntN(256)))
			} else {
				sb.WriteString(pieces[r.IntN(len(pieces))])
			}
		}
		check(sb.String())
	}
}
