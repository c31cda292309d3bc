package engine

import (
	"context"
	"fmt"
	"strings"

	"github.com/open-policy-agent/opa/v1/rego"
)

// LogMask asks the active policy which arguments of rec to mask in the decision log, in the
// style of OPA's system.log.mask: data.system.log.mask is evaluated with
// input = {"input": {"action", "client", "subject", "server", "operation": {"tool", "arguments"}}}
// and yields JSON pointers; those under /input/operation/arguments/ are returned relative to
// the arguments ("/password"). A policy without the rule masks nothing. The decision log calls
// this off the decision's path, only when raw arguments are logged.
func (e *Engine) LogMask(ctx context.Context, rec *Record) ([]string, error) {
	pq := e.policy.Load()
	if pq.mask == nil || rec.Arguments == nil {
		return nil, nil
	}
	input := map[string]any{"input": map[string]any{
		"action":    rec.Action,
		"client":    map[string]any{"id": rec.Client.ID, "name": rec.Client.Name},
		"subject":   map[string]any{"id": rec.SubjectID},
		"server":    map[string]any{"id": rec.Server.ID, "resource": rec.Server.Resource},
		"operation": map[string]any{"tool": rec.Tool, "arguments": rec.Arguments},
	}}
	rs, err := pq.mask.Eval(ctx, rego.EvalInput(input))
	if err != nil {
		return nil, fmt.Errorf("evaluate data.system.log.mask: %w", err)
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return nil, nil
	}
	elems, ok := maskElements(rs[0].Expressions[0].Value)
	if !ok {
		return nil, fmt.Errorf("data.system.log.mask must be a set or array of JSON pointer strings")
	}
	const prefix = "/input/operation/arguments"
	var out []string
	for _, p := range elems {
		if rest, ok := strings.CutPrefix(p, prefix); ok && strings.HasPrefix(rest, "/") {
			out = append(out, rest)
		}
	}
	return out, nil
}

// maskElements reads the rule's value: a set (or array) of strings, as Go values.
func maskElements(v any) ([]string, bool) {
	list, ok := v.([]any)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(list))
	for _, x := range list {
		s, ok := x.(string)
		if !ok {
			return nil, false
		}
		out = append(out, s)
	}
	return out, true
}
