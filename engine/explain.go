package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/arbiter-mcp/arbiter/engine/state"
)

// maxExplainedValue bounds how much of a rule's value an explanation quotes: a catalog entry
// can be large, and the point is to recognise it.
const maxExplainedValue = 160

// Explanation says why a decision came out as it did: what the engine decided, the policy's
// result document as the entry point returned it, which rule produced each reason, and every
// rule that held on the way. It is for authors and operators, never for the decision path:
// evaluating with a tracer costs many times an ordinary decision.
type Explanation struct {
	// Decision is what the service would answer, as EvaluateInput returns it.
	Decision Decision
	// EngineReason is set when the engine decided before any policy ran (a session that is
	// not active); nothing else is then filled in.
	EngineReason string
	// Result is the entry point's value, as JSON-compatible Go values; nil when the policy
	// failed or is undefined for the input.
	Result any
	// Error is why the policy could not be evaluated, when it could not (the decision is then
	// a policy_error deny).
	Error string
	// Reasons pairs each reason of the decision with the rule that produced it.
	Reasons []ExplainedReason
	// Rules are the rules that held during evaluation, each once, in the order they first did.
	Rules []RuleHit
	// Note is set when the explanation traces another evaluator than the one that made
	// Decision and the two answered differently: explanations trace OPA's topdown evaluator,
	// while the policy's plan decides (see Engine.Evaluator), and in a few cases the plan is
	// stricter.
	Note string
}

// ExplainedReason is a reason of the decision and the rule that produced it.
type ExplainedReason struct {
	Reason
	// Rule is the innermost rule whose value was this reason; Name is empty when none was
	// found (for example, a reason built by the entry point itself from a constant).
	Rule RuleHit
}

// RuleHit is a rule that held: its body succeeded for the input.
type RuleHit struct {
	// Name is the rule's path, such as data.mcp.servers.deny.
	Name string
	// Location is file:row of the rule in its module.
	Location string
	// Conditions are the expressions of the rule's body as written, each once.
	Conditions []string
	// Value is the value the rule produced, in Rego syntax, shortened when long. For a rule
	// that adds to a set it is the element added; for a function, its result.
	Value string
	// Default is true for a default rule: no other definition of the rule held.
	Default bool
	// Function is true for a function (a rule with arguments).
	Function bool
	// Element is true for a rule that adds Value to a set ("contains").
	Element bool
}

// topdownAnswer says in a few words what the traced evaluation answered.
func topdownAnswer(ex Explanation) string {
	if ex.Error != "" {
		return "with an error"
	}
	if m, ok := ex.Result.(map[string]any); ok {
		return fmt.Sprint(m["result"])
	}
	return "nothing"
}

// Explain decides input as EvaluateInput does and, when the policy runs, evaluates it again
// with a tracer to say which rules held and which rule produced each reason. input is changed
// as EvaluateInput changes it (input.now is filled in when absent).
func (e *Engine) Explain(ctx context.Context, input map[string]any) (Explanation, error) {
	// One revision for the decision and its trace, whatever is activated meanwhile.
	pq := e.policy.Load()
	d, err := e.evaluateInput(ctx, pq, input)
	if err != nil {
		return Explanation{}, err
	}
	ex := Explanation{Decision: d}
	if sess, ok := input["session"].(map[string]any); ok {
		st, _ := sess["status"].(string)
		if state.Status(st) != state.StatusActive {
			ex.EngineReason = fmt.Sprintf("the session's status is %q, not %q: the engine denies before any policy runs", st, state.StatusActive)
			return ex, nil
		}
	}

	v, err := ast.InterfaceToValue(input)
	if err != nil {
		return Explanation{}, fmt.Errorf("input is not a JSON document: %w", err)
	}
	tr := &ruleTracer{seen: map[*ast.Rule]int{}}
	ctx, cancel := context.WithTimeout(ctx, max(e.cfg.EvalTimeout, 10*time.Second))
	defer cancel()
	rs, err := pq.query.topdown.Eval(ctx, rego.EvalParsedInput(v), rego.EvalTime(d.At), rego.EvalQueryTracer(tr))
	ex.Rules = tr.hits
	switch {
	case err != nil:
		ex.Error = err.Error()
	case len(rs) != 1 || len(rs[0].Expressions) != 1:
		ex.Error = "the entry point is undefined for this input"
	default:
		if t, ok := rs[0].Expressions[0].Value.(*ast.Term); ok {
			ex.Result, _ = ast.JSON(t.Value)
		}
	}
	if perr := resultContractError(rs); perr != nil && ex.Error == "" {
		ex.Error = perr.Error()
	}
	if pq.programs != nil {
		planFailed := d.Outcome == Deny && len(d.Reasons) == 1 && d.Reasons[0].Code == ReasonPolicyError
		traced := Outcome("")
		if len(rs) == 1 && len(rs[0].Expressions) == 1 && ex.Error == "" {
			if t, ok := rs[0].Expressions[0].Value.(*ast.Term); ok {
				if res, err := parseResult(t.Value); err == nil {
					traced = res.outcome
				}
			}
		}
		if planFailed != (ex.Error != "") || (!planFailed && traced != d.Outcome) {
			ex.Note = fmt.Sprintf("the policy's plan decided %s; what follows traces OPA's topdown evaluator, which answered %s", d.Outcome, topdownAnswer(ex))
		}
	}

	for _, r := range d.Reasons {
		er := ExplainedReason{Reason: r}
		if i, ok := tr.producer(r); ok {
			er.Rule = tr.hits[i]
		}
		ex.Reasons = append(ex.Reasons, er)
	}
	return ex, nil
}

// resultContractError checks a traced evaluation's result against the result contract, so an
// explanation says why a malformed result was a policy error.
func resultContractError(rs rego.ResultSet) error {
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return nil
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return nil
	}
	_, err := parseResult(t.Value)
	return err
}

// ruleTracer records the rules whose bodies succeed, with the value each produced, in the
// order they first do. Values are plugged while the event is traced: bindings move on
// afterwards.
type ruleTracer struct {
	hits []RuleHit
	seen map[*ast.Rule]int
	// produced are the reason-shaped values rules produced, with the index of the first
	// (innermost) rule that produced each.
	produced []producedValue
}

type producedValue struct {
	value ast.Value
	hit   int
}

func (*ruleTracer) Enabled() bool { return true }

func (*ruleTracer) Config() topdown.TraceConfig { return topdown.TraceConfig{} }

func (t *ruleTracer) TraceEvent(evt topdown.Event) {
	if evt.Op != topdown.ExitOp {
		return
	}
	rule, ok := evt.Node.(*ast.Rule)
	if !ok || rule.Location == nil {
		return
	}
	var value *ast.Term
	element := rule.Head.Key != nil && rule.Head.Value == nil
	switch {
	case element:
		value = evt.Plug(rule.Head.Key)
	case rule.Head.Value != nil:
		value = evt.Plug(rule.Head.Value)
	}
	i, ok := t.seen[rule]
	if !ok {
		i = len(t.hits)
		t.seen[rule] = i
		t.hits = append(t.hits, RuleHit{
			Name:       ruleName(rule),
			Location:   fmt.Sprintf("%s:%d", rule.Location.File, rule.Location.Row),
			Conditions: conditions(rule),
			Value:      shorten(value),
			Default:    rule.Default,
			Function:   len(rule.Head.Args) > 0,
			Element:    element,
		})
	}
	if value != nil && value.IsGround() {
		if obj, ok := value.Value.(ast.Object); ok && obj.Get(keyCode) != nil {
			t.produced = append(t.produced, producedValue{value: obj, hit: i})
		}
	}
}

// producer is the index of the rule that produced r: the first (innermost) rule that added it
// to a set, for that is where the conditions are; else the first rule whose value it was.
func (t *ruleTracer) producer(r Reason) (int, bool) {
	found, ok := 0, false
	for _, p := range t.produced {
		obj := p.value.(ast.Object)
		code, _ := stringAt(obj, keyCode)
		msg, _ := stringAt(obj, keyMessage)
		if code != r.Code || msg != r.Message {
			continue
		}
		if t.hits[p.hit].Element {
			return p.hit, true
		}
		if !ok {
			found, ok = p.hit, true
		}
	}
	return found, ok
}

// ruleName is the rule's path: the package path and the head's reference, with variables
// left as they are written.
func ruleName(rule *ast.Rule) string {
	if rule.Module == nil || rule.Module.Package == nil {
		return rule.Head.Ref().String()
	}
	return rule.Module.Package.Path.Extend(rule.Head.Ref().GroundPrefix()).String()
}

// conditions are the source texts of the rule's body expressions, each once and in source
// order. The compiler splits some expressions into several, located inside the original (the
// operands of "x in s", "count(x) > 0"); only the outermost text is kept. A rule written
// without a body gets the body "true", located in its head, which is no condition.
func conditions(rule *ast.Rule) []string {
	type span struct {
		start, end int
		text       string
	}
	var spans []span
	head := rule.Head.Location
	for _, expr := range rule.Body {
		loc := expr.Location
		if loc == nil || len(loc.Text) == 0 || loc.File != rule.Location.File {
			continue
		}
		if head != nil && loc.Offset >= head.Offset && loc.Offset < head.Offset+len(head.Text) {
			continue
		}
		spans = append(spans, span{loc.Offset, loc.Offset + len(loc.Text), string(loc.Text)})
	}
	slices.SortFunc(spans, func(a, b span) int {
		if a.start != b.start {
			return a.start - b.start
		}
		return b.end - a.end
	})
	var out []string
	end := -1
	for _, s := range spans {
		if s.start < end {
			continue // inside the previous condition
		}
		out = append(out, s.text)
		end = s.end
	}
	return out
}

func shorten(t *ast.Term) string {
	if t == nil || !t.IsGround() {
		return ""
	}
	s := t.String()
	if len(s) > maxExplainedValue {
		s = s[:maxExplainedValue-3] + "..."
	}
	return strings.ReplaceAll(s, "\n", " ")
}
