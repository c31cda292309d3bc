package audit

import (
	"context"
	"fmt"
	"strings"

	"github.com/arbiter-mcp/arbiter/engine"
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

// masked returns a copy of the record's arguments with every masked pointer replaced: the
// configured ones and the policy's. The original, shared with the request, is never changed.
// When the policy's masks cannot be had, nothing of the arguments is logged.
func (l *Log) masked(rec *engine.Record) map[string]any {
	if rec.Arguments == nil {
		return map[string]any{}
	}
	masks := l.mask
	if l.cfg.PolicyMask != nil {
		extra, err := l.cfg.PolicyMask(context.Background(), rec)
		if err != nil {
			return map[string]any{"error": "arguments withheld: the policy's log mask failed"}
		}
		for _, p := range extra {
			if segs, err := parsePointer(p); err == nil {
				masks = append(masks[:len(masks):len(masks)], segs)
			}
		}
	}
	out := deepCopy(rec.Arguments).(map[string]any)
	for _, segs := range masks {
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
