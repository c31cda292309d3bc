package engine_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/irexec"
	"github.com/arbiter-mcp/arbiter/policy"
)

// benchPolicy is the embedded default policy with a budget no benchmark reaches.
func benchPolicy(b *testing.B) engine.Policy {
	b.Helper()
	p, err := engine.LoadPolicyFS(policy.FS(), ".", "default")
	if err != nil {
		b.Fatal(err)
	}
	p.Data["limits"].(map[string]any)["session"] = map[string]any{"max_calls": 1 << 50}
	return p
}

// benchSession opens a session and fills its history, as a session mid-task looks.
func benchSession(b *testing.B, e *engine.Engine) string {
	b.Helper()
	_, info, err := e.OpenSession(context.Background(), &engine.OpenRequest{Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"}})
	if err != nil {
		b.Fatal(err)
	}
	for range 40 {
		if d, err := e.Decide(context.Background(), benchRequest(info.Session.ID)); err != nil || d.Outcome != engine.Allow {
			b.Fatalf("warm-up call: %+v %v", d, err)
		}
	}
	return info.Session.ID
}

func benchRequest(session string) *engine.Request {
	return &engine.Request{
		SessionID: session,
		Client:    engine.Client{ID: "client-1", Name: "ide-agent", Transport: "remote"},
		Subject:   engine.Subject{ID: "alice", Groups: []string{"eng"}},
		Server:    engine.Server{ID: "filesystem", Transport: "stdio"},
		Operation: engine.Operation{Method: "tools/call", Tool: "read_file", Arguments: map[string]any{"path": "/home/alice/notes.md", "encoding": "utf-8"}},
	}
}

// BenchmarkDecide is one allowed tools/call in a live session: session lookup, input build,
// evaluation, result checks and recording the call.
func BenchmarkDecide(b *testing.B) { benchDecide(b, engine.Config{}) }

// BenchmarkDecideSmallPolicy is BenchmarkDecide on the benchmark harness's two-rule policy
// (test/bench/testdata/small-policy), which reads nothing of input.session: what a decision
// costs besides its policy.
func BenchmarkDecideSmallPolicy(b *testing.B) {
	p, err := engine.LoadPolicyFS(os.DirFS(filepath.Join("..", "test", "bench", "testdata", "small-policy")), ".", "small")
	if err != nil {
		b.Fatal(err)
	}
	benchDecideOn(b, engine.Config{}, p)
}

// BenchmarkDecideTopdown is BenchmarkDecide with OPA's topdown evaluator deciding instead of
// the policy's plan (Config.Evaluator).
func BenchmarkDecideTopdown(b *testing.B) {
	benchDecide(b, engine.Config{Evaluator: engine.EvaluatorTopdown})
}

// benchDecide decides BenchmarkDecide's request on an engine configured with cfg.
func benchDecide(b *testing.B, cfg engine.Config) { benchDecideOn(b, cfg, benchPolicy(b)) }

func benchDecideOn(b *testing.B, cfg engine.Config, p engine.Policy) {
	e, err := engine.New(context.Background(), cfg, p)
	if err != nil {
		b.Fatal(err)
	}
	req := benchRequest(benchSession(b, e))
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if d, err := e.Decide(ctx, req); err != nil || d.Outcome != engine.Allow {
			b.Fatalf("%+v %v", d, err)
		}
	}
}

// BenchmarkDecideAwaitingApproval is a tools/call of a destructive tool in a live session
// while its approval waits for a human: a gateway asking again. The pending approval is found
// in the snapshot the grants are looked up in and reused.
func BenchmarkDecideAwaitingApproval(b *testing.B) {
	e, err := engine.New(context.Background(), engine.Config{}, benchPolicy(b))
	if err != nil {
		b.Fatal(err)
	}
	req := benchRequest(benchSession(b, e))
	req.Operation.Tool, req.Operation.Arguments = "delete_file", map[string]any{"path": "/home/alice/old.md"}
	ctx := context.Background()
	first, err := e.Decide(ctx, req)
	if err != nil || first.Outcome != engine.RequireApproval || first.ApprovalID == "" {
		b.Fatalf("%+v %v", first, err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if d, err := e.Decide(ctx, req); err != nil || d.ApprovalID != first.ApprovalID {
			b.Fatalf("%+v %v", d, err)
		}
	}
}

// BenchmarkDecideUncached is BenchmarkDecide when the session's input terms are not cached:
// two sessions alternate over a one-session cache, so every decision builds its session's
// history terms afresh (a gateway with more sessions deciding at once than
// Config.InputCacheSessions).
func BenchmarkDecideUncached(b *testing.B) {
	e, err := engine.New(context.Background(), engine.Config{InputCacheSessions: 1}, benchPolicy(b))
	if err != nil {
		b.Fatal(err)
	}
	reqs := []*engine.Request{benchRequest(benchSession(b, e)), benchRequest(benchSession(b, e))}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if d, err := e.Decide(ctx, reqs[i%2]); err != nil || d.Outcome != engine.Allow {
			b.Fatalf("%+v %v", d, err)
		}
	}
}

// BenchmarkDecideParallel is BenchmarkDecide from GOMAXPROCS goroutines, each in its own session.
func BenchmarkDecideParallel(b *testing.B) {
	e, err := engine.New(context.Background(), engine.Config{}, benchPolicy(b))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		req := benchRequest(benchSession(b, e))
		for pb.Next() {
			if d, err := e.Decide(ctx, req); err != nil || d.Outcome != engine.Allow {
				b.Fatalf("%+v %v", d, err)
			}
		}
	})
}

// benchInput is the exact input document the engine builds for BenchmarkDecide's request, taken
// through a policy that echoes it, in a session with the same history.
func benchInput(b *testing.B) ast.Value {
	b.Helper()
	echo, err := engine.New(context.Background(), engine.Config{}, engine.Policy{
		Revision: "echo",
		Modules:  map[string]*ast.Module{"echo.rego": ast.MustParseModule("package mcp\n\ndecision := {\"result\": \"allow\", \"obligations\": {\"input\": input}}\n")},
	})
	if err != nil {
		b.Fatal(err)
	}
	d, err := echo.Decide(context.Background(), benchRequest(benchSession(b, echo)))
	if err != nil {
		b.Fatal(err)
	}
	input, err := ast.InterfaceToValue(d.Obligations["input"])
	if err != nil {
		b.Fatal(err)
	}
	return input
}

// BenchmarkRawOPA evaluates the same policy on the same input document with OPA alone: a
// prepared query given a pre-built input and returning OPA's usual Go result. The difference
// from BenchmarkDecide is the engine's own cost.
func BenchmarkRawOPA(b *testing.B) {
	p := benchPolicy(b)
	input := benchInput(b)

	opts := []func(*rego.Rego){rego.Query(engine.DefaultEntrypoint), rego.Store(inmem.NewFromObject(p.Data))}
	for _, m := range p.Modules {
		opts = append(opts, rego.ParsedModule(m))
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		rs, err := pq.Eval(ctx, rego.EvalParsedInput(input))
		if err != nil || len(rs) != 1 {
			b.Fatalf("%v %v", rs, err)
		}
	}
}

// BenchmarkRawPlan evaluates the same policy on the same input document as BenchmarkRawOPA with
// the plan executor alone: the policy compiled and planned as the engine plans it (irexec.Plan),
// readied by irexec.New, then Program.Eval per iteration. The difference from BenchmarkRawOPA is what
// running the plan saves over OPA's evaluator.
func BenchmarkRawPlan(b *testing.B) {
	p := benchPolicy(b)
	input := benchInput(b)
	c := ast.NewCompiler()
	if c.Compile(p.Modules); c.Failed() {
		b.Fatal(c.Errors)
	}
	pol, err := irexec.Plan(context.Background(), c, ast.MustParseRef(engine.DefaultEntrypoint))
	if err != nil {
		b.Fatal(err)
	}
	prog, err := irexec.New(pol)
	if err != nil {
		b.Fatal(err)
	}
	data, err := ast.InterfaceToValue(p.Data)
	if err != nil {
		b.Fatal(err)
	}
	in, dataTerm := ast.NewTerm(input), ast.NewTerm(data)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if out, err := prog.Eval(ctx, irexec.PlanName, in, dataTerm, irexec.Options{}); err != nil || out == nil {
			b.Fatalf("%v %v", out, err)
		}
	}
}

// BenchmarkActivate is one activation of the default policy (compile, prepare its queries,
// plan them, probe and swap: what a bundle push costs the server once the bundle is read),
// alternating between two revisions loaded separately: data-only, whose modules are parsed
// anew but the same code, so the compiled modules and the plan are reused; and code, whose
// second revision adds a rule, so every activation compiles and plans (code-topdown: compiles
// only, for --evaluator topdown).
func BenchmarkActivate(b *testing.B) {
	ctx := context.Background()
	withRule, err := ast.ParseModuleWithOpts("extra.rego", "package bench.extra\n\nrule := true\n", ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		b.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		evaluator string
		change    func(p *engine.Policy)
	}{
		{"data-only", engine.EvaluatorIR, func(p *engine.Policy) { p.Data["bench"] = map[string]any{"revision": 2} }},
		{"code", engine.EvaluatorIR, func(p *engine.Policy) { p.Modules["extra.rego"] = withRule }},
		// Without the plan: what planning adds to a code activation.
		{"code-topdown", engine.EvaluatorTopdown, func(p *engine.Policy) { p.Modules["extra.rego"] = withRule }},
	} {
		b.Run(tc.name, func(b *testing.B) {
			first, second := benchPolicy(b), benchPolicy(b)
			tc.change(&second)
			e, err := engine.New(ctx, engine.Config{Evaluator: tc.evaluator}, first)
			if err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				i++
				if err := e.Activate(ctx, []engine.Policy{first, second}[i%2]); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
