package grpcapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"unicode/utf16"
	"unicode/utf8"
)

// decodeJSONObject decodes raw, which must hold one JSON object and nothing after it but
// space, into the values encoding/json gives an interface with UseNumber: map[string]any,
// []any, string, json.Number, bool and nil, a repeated key keeping its last value, and
// invalid UTF-8 or a lone UTF-16 surrogate in a string read as U+FFFD. Tool arguments arrive
// this way on every call: it decodes them in one pass over the bytes, about four times faster
// than a json.Decoder (TestDecodeJSONObjectAsEncodingJSON and FuzzDecodeJSONObject hold the two
// to the same values and the same verdict on what is not JSON).
func decodeJSONObject(raw []byte) (map[string]any, error) {
	p := jsonParser{b: raw}
	p.space()
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i < len(p.b) {
		return nil, errTrailing
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errNotObject
	}
	return obj, nil
}

var (
	errTrailing  = errors.New("has data after the JSON object")
	errNotObject = errors.New("must be a JSON object")
)

// maxJSONDepth is how deeply arrays and objects may nest, as in encoding/json.
const maxJSONDepth = 10000

type jsonParser struct {
	b []byte
	i int
	// scratch is where strings with escapes are unescaped, kept from one string to the next.
	scratch []byte
}

// syntaxError is JSON that does not parse: what was found, and where.
func (p *jsonParser) syntaxError(what string) error {
	if p.i >= len(p.b) {
		return fmt.Errorf("unexpected end of JSON input (%s)", what)
	}
	return fmt.Errorf("invalid character %q at offset %d (%s)", p.b[p.i], p.i, what)
}

func (p *jsonParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *jsonParser) value(depth int) (any, error) {
	if p.i >= len(p.b) {
		return nil, p.syntaxError("looking for a value")
	}
	switch c := p.b[p.i]; {
	case c == '{':
		return p.object(depth + 1)
	case c == '[':
		return p.array(depth + 1)
	case c == '"':
		return p.string()
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	case c == 't':
		return true, p.literal("true")
	case c == 'f':
		return false, p.literal("false")
	case c == 'n':
		return nil, p.literal("null")
	default:
		return nil, p.syntaxError("looking for a value")
	}
}

func (p *jsonParser) literal(word string) error {
	if len(p.b)-p.i < len(word) || string(p.b[p.i:p.i+len(word)]) != word {
		for j := 0; j < len(word) && p.i < len(p.b) && p.b[p.i] == word[j]; j++ {
			p.i++
		}
		return p.syntaxError("in literal " + word)
	}
	p.i += len(word)
	return nil
}

func (p *jsonParser) object(depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("exceeded max depth")
	}
	p.i++ // {
	obj := map[string]any{}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == '}' {
		p.i++
		return obj, nil
	}
	for {
		if p.i >= len(p.b) || p.b[p.i] != '"' {
			return nil, p.syntaxError("looking for an object key")
		}
		k, err := p.string()
		if err != nil {
			return nil, err
		}
		p.space()
		if p.i >= len(p.b) || p.b[p.i] != ':' {
			return nil, p.syntaxError("after an object key")
		}
		p.i++
		p.space()
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		obj[k] = v
		p.space()
		if p.i < len(p.b) && p.b[p.i] == ',' {
			p.i++
			p.space()
			continue
		}
		if p.i < len(p.b) && p.b[p.i] == '}' {
			p.i++
			return obj, nil
		}
		return nil, p.syntaxError("after an object value")
	}
}

func (p *jsonParser) array(depth int) (any, error) {
	if depth > maxJSONDepth {
		return nil, errors.New("exceeded max depth")
	}
	p.i++ // [
	arr := []any{}
	p.space()
	if p.i < len(p.b) && p.b[p.i] == ']' {
		p.i++
		return arr, nil
	}
	for {
		v, err := p.value(depth)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		p.space()
		if p.i < len(p.b) && p.b[p.i] == ',' {
			p.i++
			p.space()
			continue
		}
		if p.i < len(p.b) && p.b[p.i] == ']' {
			p.i++
			return arr, nil
		}
		return nil, p.syntaxError("after an array element")
	}
}

// number reads a number as JSON writes one, kept as its text.
func (p *jsonParser) number() (any, error) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.b) && p.b[p.i] >= '0' && p.b[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.b[p.i] == '-' {
		p.i++
	}
	switch {
	case p.i < len(p.b) && p.b[p.i] == '0':
		p.i++
	case digits() == 0:
		return nil, p.syntaxError("in numeric literal")
	}
	if p.i < len(p.b) && p.b[p.i] == '.' {
		p.i++
		if digits() == 0 {
			return nil, p.syntaxError("after decimal point in numeric literal")
		}
	}
	if p.i < len(p.b) && (p.b[p.i] == 'e' || p.b[p.i] == 'E') {
		p.i++
		if p.i < len(p.b) && (p.b[p.i] == '+' || p.b[p.i] == '-') {
			p.i++
		}
		if digits() == 0 {
			return nil, p.syntaxError("in exponent of numeric literal")
		}
	}
	return json.Number(p.b[start:p.i]), nil
}

// string reads a string. Most strings need no unescaping and are valid UTF-8: they are one
// copy of their bytes.
func (p *jsonParser) string() (string, error) {
	p.i++ // "
	start := p.i
	for p.i < len(p.b) {
		c := p.b[p.i]
		switch {
		case c == '"':
			s := string(p.b[start:p.i])
			p.i++
			return s, nil
		case c == '\\' || c >= utf8.RuneSelf:
			return p.slowString(start)
		case c < 0x20:
			return "", p.syntaxError("in string literal")
		}
		p.i++
	}
	return "", p.syntaxError("in string literal")
}

// slowString reads the rest of a string that has escapes or bytes past ASCII, from its first
// byte at start.
func (p *jsonParser) slowString(start int) (string, error) {
	if p.scratch == nil {
		p.scratch = make([]byte, 0, len(p.b)-start) // no string is longer than what is left
	}
	s, out, err := p.unescape(append(p.scratch[:0], p.b[start:p.i]...))
	p.scratch = out[:0]
	return s, err
}

// unescape reads the rest of a string after out, what of it was read so far; it returns out
// as it grew, for the next string to reuse.
func (p *jsonParser) unescape(out []byte) (string, []byte, error) {
	for p.i < len(p.b) {
		// Copy a run of bytes that stand for themselves at once.
		j := p.i
		for j < len(p.b) && p.b[j] >= 0x20 && p.b[j] < utf8.RuneSelf && p.b[j] != '"' && p.b[j] != '\\' {
			j++
		}
		out = append(out, p.b[p.i:j]...)
		if p.i = j; j == len(p.b) {
			break
		}
		c := p.b[p.i]
		switch {
		case c == '"':
			p.i++
			return string(out), out, nil
		case c < 0x20:
			return "", out, p.syntaxError("in string literal")
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(p.b[p.i:])
			if r == utf8.RuneError && size == 1 {
				out = utf8.AppendRune(out, utf8.RuneError)
			} else {
				out = append(out, p.b[p.i:p.i+size]...)
			}
			p.i += size
		case c != '\\':
			out = append(out, c)
			p.i++
		default:
			p.i++
			if p.i >= len(p.b) {
				return "", out, p.syntaxError("in string escape code")
			}
			e := p.b[p.i]
			p.i++
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := p.hex4()
				if !ok {
					return "", out, p.syntaxError("in \\u hexadecimal character escape")
				}
				if utf16.IsSurrogate(r) {
					// A pair makes one rune; a lone half is U+FFFD, and what follows it is
					// read on its own.
					save := p.i
					if p.i+1 < len(p.b) && p.b[p.i] == '\\' && p.b[p.i+1] == 'u' {
						p.i += 2
						if r2, ok := p.hex4(); ok {
							if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
								out = utf8.AppendRune(out, d)
								continue
							}
						}
					}
					p.i = save
					r = utf8.RuneError
				}
				out = utf8.AppendRune(out, r)
			default:
				p.i--
				return "", out, p.syntaxError("in string escape code")
			}
		}
	}
	return "", out, p.syntaxError("in string literal")
}

// hex4 reads the four hexadecimal digits of a \u escape.
func (p *jsonParser) hex4() (rune, bool) {
	if len(p.b)-p.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range p.b[p.i : p.i+4] {
		switch {
		case c >= '0' && c <= '9':
			r = r<<4 | rune(c-'0')
		case c >= 'a' && c <= 'f':
			r = r<<4 | rune(c-'a'+10)
		case c >= 'A' && c <= 'F':
			r = r<<4 | rune(c-'A'+10)
		default:
			return 0, false
		}
	}
	p.i += 4
	return r, true
}
