package engine

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	opacompile "github.com/open-policy-agent/opa/v1/compile"
	"github.com/open-policy-agent/opa/v1/rego"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
)

// Evaluators: what runs a policy's decision queries (Config.Evaluator).
const (
	// EvaluatorIR runs the decision and tool_verdicts entry points as plans of OPA's planner
	// (package irexec), several times faster than topdown, whenever the policy can be planned
	// and runs only what the plan executor supports; other policies run on topdown.
	EvaluatorIR = "ir"
	// EvaluatorTopdown runs every query on OPA's own evaluator.
	EvaluatorTopdown = "topdown"
)

// CheckEvaluator reports whether name is an evaluator (EvaluatorIR or EvaluatorTopdown), with an
// error naming the choices when it is not.
func CheckEvaluator(name string) error {
	if name != EvaluatorIR && name != EvaluatorTopdown {
		return fmt.Errorf("evaluator must be %s or %s, not %q", EvaluatorIR, EvaluatorTopdown, name)
	}
	return nil
}

// query is one decision query of a revision: OPA's prepared query, which explanations always
// use, and the plan that decides in its place when the revision runs on the plan executor.
type query struct {
	topdown *rego.PreparedEvalQuery
	// plan is the query's plan in prepared.program; "" when topdown decides.
	plan string
}

// planned is the plan of a set of modules, or why there is none.
type planned struct {
	entrypoints []string
	program     *irexec.Program
	reason      string // why program is nil
}

// planPolicy plans the entry points (data paths such as "mcp/decision") of modules with OPA's
// planner, through OPA's compile package (what "opa build -t plan" runs), and readies the plan
// for irexec. A policy the planner or the executor cannot take gets no program, and the reason.
func planPolicy(ctx context.Context, modules map[string]*ast.Module, entrypoints []string) (out planned) {
	out.entrypoints = entrypoints
	// A planner that panics on some policy leaves that policy to topdown instead of failing
	// its activation (or, for a bundle restored on start, the process).
	defer func() {
		if r := recover(); r != nil {
			out.program, out.reason = nil, fmt.Sprintf("the planner failed: %v", r)
		}
	}()
	b := &bundle.Bundle{Data: map[string]any{}}
	for _, name := range slices.Sorted(maps.Keys(modules)) {
		b.Modules = append(b.Modules, bundle.ModuleFile{URL: name, Path: name, Parsed: modules[name]})
	}
	c := opacompile.New().WithTarget(opacompile.TargetPlan).WithPlanFormat(opacompile.PlanFormatProto).
		WithEntrypoints(entrypoints...).WithBundle(b).WithEnablePrintStatements(false)
	if err := c.Build(ctx); err != nil {
		out.reason = fmt.Sprintf("the planner refused the policy: %v", err)
		return out
	}
	if len(c.Bundle().PlanModules) != 1 {
		out.reason = fmt.Sprintf("the planner wrote %d plans, not one", len(c.Bundle().PlanModules))
		return out
	}
	pol, err := irexec.PlanProto(c.Bundle().PlanModules[0].Raw)
	if err == nil {
		out.program, err = irexec.New(pol)
	}
	if err != nil {
		out.reason = err.Error()
		return out
	}
	for _, name := range entrypoints {
		if !out.program.HasPlan(name) {
			out.program, out.reason = nil, fmt.Sprintf("the plan has no entry point %s", name)
			break
		}
	}
	return out
}

// planPath is the planner's name of the entry point ref (data.mcp.decision is "mcp/decision").
func planPath(ref ast.Ref) string {
	parts := make([]string, 0, len(ref)-1)
	for _, t := range ref[1:] {
		s, ok := t.Value.(ast.String)
		// OPA's compile package splits entry points on "/" (and unescapes "%").
		if !ok || strings.ContainsAny(string(s), "/%") {
			return ""
		}
		parts = append(parts, string(s))
	}
	return strings.Join(parts, "/")
}

// Evaluator says what decides for the serving revision, EvaluatorIR or EvaluatorTopdown, and
// for topdown why: the configuration, or what kept the policy from its plan.
func (e *Engine) Evaluator() (evaluator, reason string) {
	pq := e.policy.Load()
	return pq.evaluator(), pq.planless
}

// checkPlan decides the probe requests with pq's plan and with topdown. A plan that answers
// either differently (an error on one side only counts) is dropped, and topdown decides for the
// revision: the executor is an optimisation, OPA's evaluator the reference. It reports whether
// the plan agreed.
func (e *Engine) checkPlan(ctx context.Context, pq *prepared) bool {
	type check struct {
		q     *query
		input ast.Value
	}
	checks := []check{{&pq.query, probeInput}}
	if pq.verdicts != nil {
		checks = append(checks, check{pq.verdicts, probeListInput})
	}
	for _, c := range checks {
		want, _, werr := e.evalQuery(ctx, pq, &query{topdown: c.q.topdown}, c.input, probeTime)
		got, _, gerr := e.evalQuery(ctx, pq, c.q, c.input, probeTime)
		if outcomeOf(werr) != outcomeOf(gerr) || (werr == nil && !want.Equal(got)) {
			pq.topdownOnly(fmt.Sprintf("on a sample request the plan of %s answered %v (error: %v) where topdown answered %v (error: %v)", c.q.plan, got, gerr, want, werr))
			return false
		}
	}
	return true
}

// outcomeOf sorts a query's error into a value (nil), undefined, or a failure.
func outcomeOf(err error) string {
	switch {
	case err == nil:
		return "value"
	case errors.Is(err, errUndefined):
		return "undefined"
	}
	return "error"
}
