package audit

import (
	"fmt"
	"strings"
)

// Masked replaces a masked value.
const Masked = "**masked**"

// parsePointer splits an RFC 6901 JSON pointer into unescaped segments.
func parsePointer(p string) ([]string, error) {
	if p == "" || p[0] != '/' {
		return nil, fmt.Errorf("mask %q: a JSON pointer starts with /", p)
	}
	segs := strings.Split(p[1:], "/")
	for i, s := range segs {
		segs[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return segs, nil
}

// masked returns a copy of args with every masked pointer replaced. The original, shared
// with the request, is never changed.
func (l *Log) masked(args map[string]any) map[string]any {
	if args == nil {
		return map[string]any{}
	}
	out := deepCopy(args).(map[string]any)
	for _, segs := range l.mask {
		maskAt(out, segs)
	}
	return out
}

func maskAt(v any, segs []string) {
	switch c := v.(type) {
	case map[string]any:
		if _, ok := c[segs[0]]; !ok {
			return
		}
		if len(segs) == 1 {
			c[segs[0]] = Masked
			return
		}
		maskAt(c[segs[0]], segs[1:])
	case []any:
		var i int
		if _, err := fmt.Sscanf(segs[0], "%d", &i); err != nil || i < 0 || i >= len(c) {
			return
		}
		if len(segs) == 1 {
			c[i] = Masked
			return
		}
		maskAt(c[i], segs[1:])
	}
}

func deepCopy(v any) any {
	switch c := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(c))
		for k, x := range c {
			out[k] = deepCopy(x)
		}
		return out
	case []any:
		out := make([]any, len(c))
		for i, x := range c {
			out[i] = deepCopy(x)
		}
		return out
	default:
		return c
	}
}
