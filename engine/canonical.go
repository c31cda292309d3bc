package engine

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ArgumentsDigest returns the canonical JSON of tool arguments and its SHA-256
// ("sha256:HEX"). Approvals are bound to the digest and the decision log records it, so the
// same arguments must give the same digest however the gateway sent them: as JSON text
// (arguments_json, numbers kept as written) or as a protobuf Struct (numbers as float64).
// Canonical means: object keys sorted, no insignificant space, strings escaped one way, and
// numbers in one form — an integral value below 1e21 as its exact integer digits ("1.0",
// "1e0" and the float64 1 are all "1"), any other value as the shortest float64 form.
func ArgumentsDigest(args map[string]any) ([]byte, string, error) {
	raw, sum, err := AppendArgumentsDigest(make([]byte, 0, 256), args)
	if err != nil {
		return nil, "", err
	}
	return raw, "sha256:" + hex.EncodeToString(sum[:]), nil
}

// AppendArgumentsDigest is ArgumentsDigest for a caller that keeps a buffer: it appends the
// canonical JSON of args to buf and returns it with its SHA-256.
func AppendArgumentsDigest(buf []byte, args map[string]any) ([]byte, [sha256.Size]byte, error) {
	var v any = args
	if args == nil {
		v = map[string]any{}
	}
	start := len(buf)
	raw, err := appendCanonical(buf, v)
	if err != nil {
		return buf, [sha256.Size]byte{}, invalid("operation.arguments", "cannot be encoded as JSON: %v", err)
	}
	return raw, sha256.Sum256(raw[start:]), nil
}

func appendCanonical(b []byte, v any) ([]byte, error) {
	switch x := v.(type) {
	case nil:
		return append(b, "null"...), nil
	case bool:
		return strconv.AppendBool(b, x), nil
	case string:
		return appendString(b, x), nil
	case json.Number:
		return appendNumberText(b, string(x))
	case float64:
		return appendFloat(b, x)
	case int:
		return strconv.AppendInt(b, int64(x), 10), nil
	case int64:
		return strconv.AppendInt(b, x, 10), nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		b = append(b, '{')
		for i, k := range keys {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, k)
			b = append(b, ':')
			var err error
			if b, err = appendCanonical(b, x[k]); err != nil {
				return nil, err
			}
		}
		return append(b, '}'), nil
	case []any:
		b = append(b, '[')
		for i, e := range x {
			if i > 0 {
				b = append(b, ',')
			}
			var err error
			if b, err = appendCanonical(b, e); err != nil {
				return nil, err
			}
		}
		return append(b, ']'), nil
	}
	return nil, fmt.Errorf("unsupported value of type %T", v)
}

// maxExactInteger bounds the integral numbers written with all their digits; from 1e21 on,
// numbers take the float form, as in JSON encoders.
const maxExactInteger = 1e21

func appendFloat(b []byte, f float64) ([]byte, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, fmt.Errorf("unsupported number %v", f)
	}
	if f == 0 {
		return append(b, '0'), nil // -0 too
	}
	if f == math.Trunc(f) && math.Abs(f) < maxExactInteger {
		return strconv.AppendFloat(b, f, 'f', 0, 64), nil // all the digits: an exact integer
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64), nil
}

// appendNumberText writes a JSON number given as text. The float64 nearest to it decides its
// form, except that a plain integer literal below 1e21 keeps its own digits
// ("9007199254740993" stays itself although no float64 holds it; "1e3" and "1000.0" are
// 1000). Only a byte scan and strconv run here, in time linear in the text: arguments come
// from agents, and a crafted number must not be costly to digest.
func appendNumberText(b []byte, text string) ([]byte, error) {
	f, err := strconv.ParseFloat(text, 64)
	if err != nil {
		if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
			return append(b, text...), nil // beyond float64: only its own text describes it
		}
		return nil, fmt.Errorf("invalid number %q", text)
	}
	if f != 0 && math.Abs(f) < maxExactInteger && plainInteger(text) {
		return append(b, text...), nil
	}
	return appendFloat(b, f)
}

// plainInteger reports whether text is an integer literal: an optional minus, then digits.
func plainInteger(text string) bool {
	digits := strings.TrimPrefix(text, "-")
	if digits == "" {
		return false
	}
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return false
		}
	}
	return true
}

// appendString writes s as a JSON string: quote, backslash and control characters escaped,
// invalid UTF-8 replaced by U+FFFD, everything else as it is. Runs of bytes that need no
// escaping are copied at once: a digest reads every argument, some of them kilobytes of code
// or prose.
func appendString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0 // s[start:i] is copied as it is
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			if r, size := utf8.DecodeRuneInString(s[i:]); r != utf8.RuneError || size != 1 {
				i += size
				continue
			}
		}
		b = append(b, s[start:i]...)
		switch {
		case c >= utf8.RuneSelf:
			b = append(b, "\\ufffd"...)
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
