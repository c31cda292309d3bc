package irexec

import (
	"context"
	"errors"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
)

// PlanName is the name of the one plan Plan makes, to give Program.Eval.
const PlanName = "eval"

// Plan plans the query "result = REF" over the modules compiler has compiled, with OPA's
// planner, as OPA's compile package plans an entry point ("opa build -t plan"), but without
// compiling them again: rego's preparation for a target plugin plans the query with the
// compiler it is given and hands the plan to the plugin (capturePlan), which keeps it. The
// plan's result is under "result", as New expects.
//
// The preparation writes compiler's evaluation mode (rego sets it for plugins, and it is set
// back here to the mode topdown's queries are compiled in), which query compilation reads: a
// caller that shares compiler with other rego preparations must serialise them with Plan.
func Plan(ctx context.Context, compiler *ast.Compiler, ref ast.Ref) (*ir.Policy, error) {
	var pol *ir.Policy
	query := ast.NewBody(ast.Equality.Expr(ast.VarTerm("result"), ast.NewTerm(ref)))
	_, err := rego.New(rego.ParsedQuery(query), rego.Compiler(compiler), rego.Store(inmem.New()),
		rego.Target(captureTarget),
		// The compiler stays in the mode topdown's queries are compiled in (rego would leave
		// it in IR mode), the mode OPA's compile package plans in: the same plan.
		rego.EvalMode(ast.EvalModeTopdown),
	).PrepareForEval(context.WithValue(ctx, captureKey{}, &pol))
	if err != nil {
		return nil, err
	}
	if pol == nil {
		return nil, errors.New("rego made no plan")
	}
	return pol, nil
}

// captureTarget is the rego target of capturePlan.
const captureTarget = "arbiter-capture-plan"

// capturePlan is a rego target plugin whose preparation keeps the plan rego made, in the
// *ir.Policy the context carries (captureKey), and whose queries are never evaluated.
type capturePlan struct{}

type captureKey struct{}

func init() { rego.RegisterPlugin(captureTarget, capturePlan{}) }

func (capturePlan) IsTarget(t string) bool { return t == captureTarget }

func (capturePlan) PrepareForEval(ctx context.Context, pol *ir.Policy, _ ...rego.PrepareOption) (rego.TargetPluginEval, error) {
	sink, ok := ctx.Value(captureKey{}).(**ir.Policy)
	if !ok {
		return nil, errors.New("no place to keep the plan")
	}
	*sink = pol
	return capturePlan{}, nil
}

func (capturePlan) Eval(context.Context, *rego.EvalContext, ast.Value) (ast.Value, error) {
	return nil, errors.New("a captured plan is run by the plan executor, not through rego")
}
