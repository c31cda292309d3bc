package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/open-policy-agent/opa/v1/ast"
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
	ref     ast.Ref // the rule queried
	topdown *rego.PreparedEvalQuery
	// plan names the query's program in prepared.programs; "" when topdown decides.
	plan string
}

// planned is the plan of a set of modules, or why there is none: one program per entry point
// (named by its reference, such as "data.mcp.decision"), each with its one plan (irexec.Plan).
type planned struct {
	entrypoints []string
	programs    map[string]*irexec.Program
	reason      string // why programs is nil
}

// planPolicy plans each entry point (named entrypoints[i], refs[i] the rule it queries) of
// compiler's modules with irexec.Plan, and readies the plans. A policy the planner or the
// executor cannot take gets no programs, and the reason. The caller holds compiled.mu (see
// irexec.Plan on sharing the compiler).
func planPolicy(ctx context.Context, compiler *ast.Compiler, entrypoints []string, refs []ast.Ref) (out planned) {
	out.entrypoints = entrypoints
	// A planner that panics on some policy leaves that policy to topdown instead of failing
	// its activation (or, for a bundle restored on start, the process).
	defer func() {
		if r := recover(); r != nil {
			out.programs, out.reason = nil, fmt.Sprintf("the planner failed: %v", r)
		}
	}()
	programs := make(map[string]*irexec.Program, len(entrypoints))
	for i, name := range entrypoints {
		pol, err := irexec.Plan(ctx, compiler, refs[i])
		if err != nil {
			out.reason = fmt.Sprintf("the planner refused the policy: %v", err)
			return out
		}
		prog, err := irexec.New(pol)
		if err != nil {
			out.reason = err.Error()
			return out
		}
		if !prog.HasPlan(irexec.PlanName) {
			out.reason = fmt.Sprintf("the plan of %s has no plan %q", name, irexec.PlanName)
			return out
		}
		programs[name] = prog
	}
	out.programs = programs
	return out
}

// Evaluator says what decides for the serving revision, EvaluatorIR or EvaluatorTopdown, and
// for topdown why: the configuration, or what kept the policy from its plan.
func (e *Engine) Evaluator() (evaluator, reason string) {
	pq := e.policy.Load()
	return pq.evaluator(), pq.planless
}

// checkPlan decides the probe requests with pq's plan (on the requests' objects made Lazy, as a
// decision's are) and with topdown. A plan that answers either differently (an error on one
// side only counts) is dropped, and topdown decides for the revision: the executor is an
// optimisation, OPA's evaluator the reference. It reports whether the plan agreed.
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
		// The plan reads the request as it reads a decision's: its objects Lazy.
		got, _, gerr := e.evalQuery(ctx, pq, c.q, lazyInput(ast.NewTerm(c.input)).Value, probeTime)
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
