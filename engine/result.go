package engine

import (
	"errors"
	"fmt"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Limits on what a policy may return, so a runaway policy cannot flood responses or sessions.
const (
	maxReasons     = 64
	maxLabels      = 64
	maxApprovalTTL = 7 * 24 * time.Hour
)

var (
	keyResult      = ast.StringTerm("result")
	keyReasons     = ast.StringTerm("reasons")
	keyObligations = ast.StringTerm("obligations")
	keyApproval    = ast.StringTerm("approval")
	keyScope       = ast.StringTerm("scope")
	keyCode        = ast.StringTerm("code")
	keyMaxTTL      = ast.StringTerm("max_ttl_seconds")
	keyMessage     = ast.StringTerm("message")
)

// errMalformed marks a policy result that does not follow the result contract.
var errMalformed = errors.New("malformed policy result")

// errUndefined is an entry point with no value for an input.
var errUndefined = fmt.Errorf("%w: the entry point is undefined for this input", errMalformed)

// policyResult is the policy's answer, validated.
type policyResult struct {
	outcome     Outcome
	reasons     []Reason
	labels      []string
	obligations map[string]any
	approval    *ApprovalRequest
	maxTTL      time.Duration
}

// parseResult validates the policy's result object against the result contract:
// {"result", "reasons", "labels", "obligations", "approval"}.
func parseResult(v ast.Value) (policyResult, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return policyResult{}, fmt.Errorf("%w: result is %s, not an object", errMalformed, ast.ValueName(v))
	}
	var r policyResult
	res, ok := stringAt(obj, keyResult)
	if !ok {
		return r, fmt.Errorf("%w: \"result\" is missing or not a string", errMalformed)
	}
	switch Outcome(res) {
	case Allow, Deny, RequireApproval:
		r.outcome = Outcome(res)
	default:
		return r, fmt.Errorf("%w: \"result\" is %q, not allow, deny or require_approval", errMalformed, res)
	}

	if t := obj.Get(keyReasons); t != nil {
		elems, ok := elements(t.Value)
		if !ok || len(elems) > maxReasons {
			return r, fmt.Errorf("%w: \"reasons\" must be an array or set of at most %d objects", errMalformed, maxReasons)
		}
		r.reasons = make([]Reason, 0, len(elems))
		for i, e := range elems {
			ro, ok := e.Value.(ast.Object)
			if !ok {
				return r, fmt.Errorf("%w: reasons[%d] is not an object", errMalformed, i)
			}
			code, ok := stringAt(ro, keyCode)
			if !ok || code == "" {
				return r, fmt.Errorf("%w: reasons[%d].code is missing or not a string", errMalformed, i)
			}
			msg, _ := stringAt(ro, keyMessage)
			r.reasons = append(r.reasons, Reason{Code: code, Message: msg})
		}
	}

	if t := obj.Get(keyLabels); t != nil {
		labels, ok := stringList(t.Value)
		if !ok || len(labels) > maxLabels {
			return r, fmt.Errorf("%w: \"labels\" must be an array or set of at most %d strings", errMalformed, maxLabels)
		}
		r.labels = labels
	}

	if t := obj.Get(keyObligations); t != nil {
		o, ok := t.Value.(ast.Object)
		if !ok {
			return r, fmt.Errorf("%w: \"obligations\" is not an object", errMalformed)
		}
		if o.Len() > 0 {
			conv, err := ast.JSON(o)
			if err != nil {
				return r, fmt.Errorf("%w: \"obligations\": %v", errMalformed, err)
			}
			r.obligations, _ = conv.(map[string]any)
		}
	}

	if t := obj.Get(keySession); t != nil {
		so, ok := t.Value.(ast.Object)
		if !ok {
			return r, fmt.Errorf("%w: \"session\" is not an object", errMalformed)
		}
		if t := so.Get(keyMaxTTL); t != nil {
			secs, ok := positiveSeconds(t.Value)
			if !ok {
				return r, fmt.Errorf("%w: session.max_ttl_seconds must be a positive whole number", errMalformed)
			}
			r.maxTTL = time.Duration(secs) * time.Second
		}
	}

	if r.outcome == RequireApproval {
		r.approval = &ApprovalRequest{Scope: "once", TTL: 15 * time.Minute}
		if t := obj.Get(keyApproval); t != nil {
			ao, ok := t.Value.(ast.Object)
			if !ok {
				return r, fmt.Errorf("%w: \"approval\" is not an object", errMalformed)
			}
			if s := ao.Get(keyScope); s != nil {
				scope, ok := s.Value.(ast.String)
				if !ok || (scope != "once" && scope != "session") {
					return r, fmt.Errorf("%w: approval.scope must be \"once\" or \"session\"", errMalformed)
				}
				r.approval.Scope = string(scope)
			}
			if t := ao.Get(keyTTLSeconds); t != nil {
				secs, ok := positiveSeconds(t.Value)
				if !ok || time.Duration(secs)*time.Second > maxApprovalTTL {
					return r, fmt.Errorf("%w: approval.ttl_seconds must be a whole number of seconds in (0, %d]", errMalformed, int64(maxApprovalTTL/time.Second))
				}
				r.approval.TTL = time.Duration(secs) * time.Second
			}
		}
	}
	return r, nil
}

// positiveSeconds reads a positive whole number of seconds, up to ten years.
func positiveSeconds(v ast.Value) (int64, bool) {
	n, ok := v.(ast.Number)
	if !ok {
		return 0, false
	}
	secs, isInt := n.Int64()
	return secs, isInt && secs > 0 && secs <= 10*365*24*3600
}

func stringAt(obj ast.Object, key *ast.Term) (string, bool) {
	t := obj.Get(key)
	if t == nil {
		return "", false
	}
	s, ok := t.Value.(ast.String)
	return string(s), ok
}

// elements returns the members of an array or a set (a partial set rule yields a set).
func elements(v ast.Value) ([]*ast.Term, bool) {
	switch c := v.(type) {
	case *ast.Array:
		out := make([]*ast.Term, 0, c.Len())
		c.Foreach(func(t *ast.Term) { out = append(out, t) })
		return out, true
	case ast.Set:
		return c.Slice(), true
	}
	return nil, false
}

// stringList accepts an array or a set of strings.
func stringList(v ast.Value) ([]string, bool) {
	elems, ok := elements(v)
	if !ok {
		return nil, false
	}
	out := make([]string, 0, len(elems))
	for _, e := range elems {
		s, ok := e.Value.(ast.String)
		if !ok {
			return nil, false
		}
		out = append(out, string(s))
	}
	return out, true
}
