package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/arbiter-mcp/arbiter/engine/state"
)

// FilterTools decides, for each tool of one server, whether the client may see it, asking the
// policy about action "tools/list": once for all the tools when it defines ToolVerdictsRule,
// else once per tool with input.operation.tool set to it. Tool names must be unique. A tool
// denied (or whose evaluation fails) is hidden. Session state does not move.
func (e *Engine) FilterTools(ctx context.Context, req *Request, tools []Tool) (Filtered, error) {
	req.Operation = Operation{Method: ActionToolsList}
	if err := validateRequest(req); err != nil {
		return Filtered{}, err
	}
	if len(tools) > MaxTools {
		return Filtered{}, invalid("tools", "has %d entries, more than %d", len(tools), MaxTools)
	}
	seen := make(map[string]int, len(tools))
	for i := range tools {
		if tools[i].Name == "" {
			return Filtered{}, invalid(fmt.Sprintf("tools[%d].name", i), "is required")
		}
		if j, dup := seen[tools[i].Name]; dup {
			return Filtered{}, invalid(fmt.Sprintf("tools[%d].name", i), "%q is also tools[%d].name; a server's tool names are unique", tools[i].Name, j)
		}
		seen[tools[i].Name] = i
	}
	start := time.Now()
	now := e.cfg.Clock()
	pq := e.policy.Load()
	out := Filtered{ID: newID("dec_", now), PolicyRevision: pq.revision, Tools: make([]ToolVerdict, len(tools))}
	slot, err := e.cfg.Recorder.Reserve(ctx)
	if err != nil {
		reason := logUnavailable(Decision{}).Reasons
		for i, t := range tools {
			out.Tools[i] = ToolVerdict{Name: t.Name, Outcome: Deny, Reasons: reason}
		}
		return out, nil
	}
	out, err = e.filterTools(ctx, req, tools, pq, now, out)
	if err != nil {
		slot.Commit(nil)
		return Filtered{}, err
	}
	d := Decision{ID: out.ID, At: now, PolicyRevision: out.PolicyRevision, Outcome: Deny}
	rec := recordFor(req, &d, ActionToolsFilter, start)
	for _, v := range out.Tools {
		if v.Outcome == Deny {
			rec.Hidden++
		} else {
			rec.Visible++
		}
	}
	if rec.Visible > 0 {
		rec.Outcome = Allow
	}
	slot.Commit(rec)
	return out, nil
}

func (e *Engine) filterTools(ctx context.Context, req *Request, tools []Tool, pq *prepared, now time.Time, out Filtered) (Filtered, error) {
	sessTerm, _, _, denial, err := e.sessionInput(req, pq, now)
	if err != nil {
		return Filtered{}, err
	}
	if denial != nil {
		for i, t := range tools {
			out.Tools[i] = ToolVerdict{Name: t.Name, Outcome: Deny, Reasons: []Reason{*denial}}
		}
		return out, nil
	}
	base, err := newInputBase(&e.inputs, req, sessTerm, now, pq.reads)
	if err != nil {
		return Filtered{}, err
	}
	if pq.verdicts != nil {
		return e.filterBatch(ctx, pq, base, tools, now, out), nil
	}
	for i := range tools {
		op := Operation{Method: ActionToolsList, Tool: tools[i].Name, Annotations: tools[i].Annotations, DefinitionHash: tools[i].DefinitionHash}
		input := base.document(ActionToolsList, ast.Item(keyOperation, operationTerm(&e.inputs.names, &op, emptyTerm, pq.reads.sub(keyOperation))))
		d := e.decideWith(ctx, pq, input, Decision{ID: out.ID, At: now})
		out.Tools[i] = ToolVerdict{Name: tools[i].Name, Outcome: d.Outcome, Reasons: d.Reasons}
	}
	return out, nil
}

// filterBatch decides every tool in one evaluation of the policy's tool_verdicts rule. If the
// evaluation fails or its answer cannot be read (see readVerdicts), every tool is hidden: a
// listing never shows more than the policy said.
func (e *Engine) filterBatch(ctx context.Context, pq *prepared, base inputBase, tools []Tool, now time.Time, out Filtered) Filtered {
	list := make([]*ast.Term, len(tools))
	for i := range tools {
		list[i] = ast.ObjectTerm(
			ast.Item(keyName, ast.StringTerm(tools[i].Name)),
			ast.Item(keyAnnotations, annotationsTerm(tools[i].Annotations)),
			ast.Item(keyDefinitionHash, ast.StringTerm(tools[i].DefinitionHash)),
		)
	}
	op := Operation{Method: ActionToolsList}
	input := base.document(ActionToolsList,
		ast.Item(keyOperation, operationTerm(&e.inputs.names, &op, emptyTerm, pq.reads.sub(keyOperation))),
		ast.Item(keyTools, ast.ArrayTerm(list...)))
	t, _, err := e.evalQuery(ctx, pq, pq.verdicts, input, now)
	if err == nil {
		err = readVerdicts(t, tools, out.Tools)
	}
	if err != nil {
		e.cfg.Logger.LogAttrs(ctx, slog.LevelError, "policy evaluation failed; hiding every tool",
			slog.String("decision_id", out.ID), slog.String("policy_revision", pq.revision), slog.Any("error", err))
		reason := []Reason{{Code: ReasonPolicyError, Message: "the policy could not be evaluated; the operation is denied"}}
		for i := range tools {
			out.Tools[i] = ToolVerdict{Name: tools[i].Name, Outcome: Deny, Reasons: reason}
		}
	}
	return out
}

var (
	keyListing = ast.StringTerm("listing")
	keyTools   = ast.StringTerm("tools")
)

// readVerdicts reads the tool_verdicts answer, {"listing": D, "tools": {NAME: D}}, into into:
// each tool named in "tools" gets its own decision, every other tool the listing's. Naming a
// tool that was not asked about is malformed too: the policy answered another question.
func readVerdicts(t *ast.Term, tools []Tool, into []ToolVerdict) error {
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return fmt.Errorf("%w: %s is %s, not an object", errMalformed, ToolVerdictsRule, ast.ValueName(t.Value))
	}
	lt := obj.Get(keyListing)
	if lt == nil {
		return fmt.Errorf("%w: %s has no \"listing\" decision", errMalformed, ToolVerdictsRule)
	}
	listing, err := parseResult(lt.Value)
	if err != nil {
		return fmt.Errorf("%s.listing: %w", ToolVerdictsRule, err)
	}
	// The policy names few tools; read them once rather than look each listed tool up.
	var own map[string]policyResult
	if tt := obj.Get(keyTools); tt != nil {
		o, ok := tt.Value.(ast.Object)
		if !ok {
			return fmt.Errorf("%w: %s.tools is %s, not an object", errMalformed, ToolVerdictsRule, ast.ValueName(tt.Value))
		}
		own = make(map[string]policyResult, o.Len())
		err := o.Iter(func(k, v *ast.Term) error {
			name, ok := k.Value.(ast.String)
			if !ok {
				return fmt.Errorf("%w: %s.tools has key %v, not a tool name", errMalformed, ToolVerdictsRule, k)
			}
			res, err := parseResult(v.Value)
			if err != nil {
				return fmt.Errorf("%s.tools[%q]: %w", ToolVerdictsRule, string(name), err)
			}
			own[string(name)] = res
			return nil
		})
		if err != nil {
			return err
		}
	}
	named := 0
	for i := range tools {
		res, ok := own[tools[i].Name]
		if ok {
			named++
		} else {
			res = listing
		}
		into[i] = ToolVerdict{Name: tools[i].Name, Outcome: res.outcome, Reasons: res.reasons}
	}
	// Names are unique (FilterTools checks), so every entry matched at most one tool.
	if named != len(own) {
		return fmt.Errorf("%w: %s.tools names %d tools that were not listed", errMalformed, ToolVerdictsRule, len(own)-named)
	}
	return nil
}

// EvaluateInput decides a complete input document, as a policy author writes one, with the
// rules the engine enforces around the policy: a session that is not active is denied before
// the policy runs, and any policy error denies. Nothing is recorded.
func (e *Engine) EvaluateInput(ctx context.Context, input map[string]any) (Decision, error) {
	return e.evaluateInput(ctx, e.policy.Load(), input)
}

// evaluateInput is EvaluateInput on revision pq.
func (e *Engine) evaluateInput(ctx context.Context, pq *prepared, input map[string]any) (Decision, error) {
	now := e.cfg.Clock()
	d := Decision{ID: newID("dec_", now), At: now, PolicyRevision: pq.revision}
	if _, ok := input["now"]; !ok {
		input["now"] = now.UTC().Format(time.RFC3339Nano)
	}
	if sess, ok := input["session"].(map[string]any); ok {
		st, _ := sess["status"].(string)
		end, _ := sess["end_reason"].(string)
		exp, _ := time.Parse(time.RFC3339, fmt.Sprint(sess["expires_at"]))
		if reason, ok := statusDenial(state.Status(st), &state.Session{EndReason: end, ExpiresAt: exp}); !ok {
			return d.deny(reason), nil
		}
	}
	v, err := ast.InterfaceToValue(input)
	if err != nil {
		return Decision{}, fmt.Errorf("input is not a JSON document: %w", err)
	}
	return e.decideWith(ctx, pq, v, d), nil
}

// MarshalJSON renders a decision as the eval command and logs show it.
func (d Decision) MarshalJSON() ([]byte, error) {
	type approval struct {
		Scope      string `json:"scope"`
		TTLSeconds int64  `json:"ttl_seconds"`
	}
	out := struct {
		ID             string         `json:"decision_id"`
		Result         Outcome        `json:"result"`
		Reasons        []Reason       `json:"reasons"`
		Labels         []string       `json:"labels,omitempty"`
		Obligations    map[string]any `json:"obligations,omitempty"`
		Approval       *approval      `json:"approval,omitempty"`
		PolicyRevision string         `json:"policy_revision"`
		EvalNanos      int64          `json:"eval_ns"`
	}{ID: d.ID, Result: d.Outcome, Reasons: d.Reasons, Labels: d.Labels, Obligations: d.Obligations,
		PolicyRevision: d.PolicyRevision, EvalNanos: d.Eval.Nanoseconds()}
	if out.Reasons == nil {
		out.Reasons = []Reason{}
	}
	if d.Approval != nil {
		out.Approval = &approval{Scope: d.Approval.Scope, TTLSeconds: int64(d.Approval.TTL.Seconds())}
	}
	return json.Marshal(out)
}
