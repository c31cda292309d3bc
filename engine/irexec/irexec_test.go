package irexec_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	opacompile "github.com/open-policy-agent/opa/v1/compile"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
)

// plan plans the entry point "p/x" of src (a module of package p) and readies it.
func plan(t *testing.T, src string) (*irexec.Program, error) {
	t.Helper()
	m, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, src)
	}
	b := &bundle.Bundle{Data: map[string]any{}, Modules: []bundle.ModuleFile{{URL: "p.rego", Path: "p.rego", Parsed: m}}}
	c := opacompile.New().WithTarget(opacompile.TargetPlan).WithEntrypoints("p/x").WithBundle(b)
	if err := c.Build(context.Background()); err != nil {
		t.Fatalf("plan: %v\n%s", err, src)
	}
	pol, err := irexec.PlanJSON(c.Bundle().PlanModules[0].Raw)
	if err != nil {
		t.Fatal(err)
	}
	return irexec.New(pol)
}

// topdownEval is the reference: OPA's evaluator with strict built-in errors. Undefined is nil.
func topdownEval(t *testing.T, src string, input, data any, now time.Time) (*ast.Term, error) {
	t.Helper()
	q, err := rego.New(rego.Query("data.p.x"), rego.Module("p.rego", src), rego.Store(inmem.NewFromObject(data.(map[string]any))),
		rego.StrictBuiltinErrors(true)).PrepareForEval(context.Background())
	if err != nil {
		t.Fatalf("prepare: %v\n%s", err, src)
	}
	rs, err := q.Eval(context.Background(), rego.EvalInput(input), rego.EvalTime(now))
	if err != nil || len(rs) == 0 {
		return nil, err
	}
	v, err := ast.InterfaceToValue(rs[0].Expressions[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return ast.NewTerm(v), nil
}

// differential is one policy and the inputs it is decided on by both evaluators.
type differential struct {
	name   string
	src    string // the body of package p; the entry point is x
	data   string // JSON, {} when empty
	inputs []string
}

// TestSameAnswersAsTopdown: every case of testdata/differential.yaml, on every input, gives
// the same value, the same undefined, or an error on both sides.
func TestSameAnswersAsTopdown(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "differential.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name string `json:"name"`
		// Stricter: where topdown stops evaluating a rule early, the executor may fail with an
		// error that topdown never meets; the case accepts that and no other difference.
		Stricter bool     `json:"stricter"`
		Src      string   `json:"src"`
		Data     string   `json:"data"`
		Inputs   []string `json:"inputs"`
	}
	if err := util.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 40 {
		t.Fatalf("only %d cases read", len(cases))
	}
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			src := "package p\n\n" + c.Src
			prog, err := plan(t, src)
			if err != nil {
				t.Fatalf("executor refused the plan: %v", err)
			}
			dataJSON := c.Data
			if dataJSON == "" {
				dataJSON = "{}"
			}
			var data any
			if err := util.UnmarshalJSON([]byte(dataJSON), &data); err != nil {
				t.Fatal(err)
			}
			dataTerm := ast.MustParseTerm(dataJSON)
			if len(c.Inputs) == 0 {
				t.Fatal("no inputs")
			}
			for _, in := range c.Inputs {
				var input any
				if err := util.UnmarshalJSON([]byte(in), &input); err != nil {
					t.Fatalf("input %s: %v", in, err)
				}
				want, werr := topdownEval(t, src, input, data, now)
				got, gerr := prog.Eval(context.Background(), "p/x", ast.MustParseTerm(in), dataTerm, irexec.Options{Time: now})
				switch {
				case werr != nil && gerr != nil:
				case c.Stricter && werr == nil && gerr != nil:
				case werr != nil || gerr != nil:
					t.Errorf("input %s: topdown %v (error %v), executor %v (error %v)", in, want, werr, got, gerr)
				case (want == nil) != (got == nil) || (want != nil && !want.Equal(got)):
					t.Errorf("input %s: topdown %v, executor %v", in, want, got)
				}
			}
		})
	}
}

// TestRefusesWhatItDoesNotRun: plans using a statement or built-in the executor does not run
// are refused with ErrUnsupported, so the caller evaluates them with topdown.
func TestRefusesWhatItDoesNotRun(t *testing.T) {
	for _, src := range []string{
		"y := input.a\n\nx := z if { z := y with input.a as 2 }",
		"x := rand.intn(\"k\", 10)",
		"x := http.send({\"method\": \"get\", \"url\": \"http://127.0.0.1:1\"})",
		"x := uuid.rfc4122(\"k\")",
		"x := [p | walk(input, [p, _])]",
	} {
		_, err := plan(t, "package p\n\n"+src)
		if !errors.Is(err, irexec.ErrUnsupported) {
			t.Errorf("%q: got %v, want ErrUnsupported", src, err)
		}
	}
}

// TestCancel: a cancelled run stops with ErrCancelled.
func TestCancel(t *testing.T) {
	prog, err := plan(t, "package p\n\nx := count([1 | some a in numbers.range(1, 300); some b in numbers.range(1, 300); a != b])")
	if err != nil {
		t.Fatal(err)
	}
	c := topdown.NewCancel()
	c.Cancel()
	_, err = prog.Eval(context.Background(), "p/x", ast.MustParseTerm("{}"), ast.MustParseTerm("{}"), irexec.Options{Cancel: c})
	if !errors.Is(err, irexec.ErrCancelled) {
		t.Fatalf("got %v, want ErrCancelled", err)
	}
	got, err := prog.Eval(context.Background(), "p/x", ast.MustParseTerm("{}"), ast.MustParseTerm("{}"), irexec.Options{Cancel: topdown.NewCancel()})
	if err != nil || !got.Equal(ast.IntNumberTerm(300*299)) {
		t.Fatalf("uncancelled: %v %v", got, err)
	}
}

// TestUnknownPlan names the plan that is not there.
func TestUnknownPlan(t *testing.T) {
	prog, err := plan(t, "package p\n\nx := 1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = prog.Eval(context.Background(), "p/y", ast.MustParseTerm("{}"), ast.MustParseTerm("{}"), irexec.Options{})
	if err == nil || !strings.Contains(err.Error(), `"p/y"`) {
		t.Fatalf("got %v", err)
	}
}
