package irexec_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	opacompile "github.com/open-policy-agent/opa/v1/compile"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
)

// plan plans x of src (a module of package p) as the engine plans a revision (Plan, over the
// modules compiled once) and readies it; its plan is PlanName.
func plan(t *testing.T, src string) (*irexec.Program, error) {
	t.Helper()
	m, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, src)
	}
	c := ast.NewCompiler()
	if c.Compile(map[string]*ast.Module{"p.rego": m}); c.Failed() {
		t.Fatalf("compile: %v\n%s", c.Errors, src)
	}
	pol, err := irexec.Plan(context.Background(), c, ast.MustParseRef("data.p.x"))
	if err != nil {
		t.Fatalf("plan: %v\n%s", err, src)
	}
	return irexec.New(pol)
}

// planOPA plans the entry point "p/x" of src as "opa build -t plan" does (OPA's compile
// package, which compiles the modules itself), from its JSON plan, and readies it: a second
// planning of the same policy, for the corpus to check against.
func planOPA(t *testing.T, src string) (*irexec.Program, error) {
	t.Helper()
	m, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatalf("parse: %v\n%s", err, src)
	}
	b := &bundle.Bundle{Data: map[string]any{}, Modules: []bundle.ModuleFile{{URL: "p.rego", Path: "p.rego", Parsed: m}}}
	c := opacompile.New().WithTarget(opacompile.TargetPlan).WithPlanFormat(opacompile.PlanFormatJSON).WithEntrypoints("p/x").WithBundle(b)
	if err := c.Build(context.Background()); err != nil {
		t.Fatalf("plan: %v\n%s", err, src)
	}
	var pol ir.Policy
	if err := json.Unmarshal(c.Bundle().PlanModules[0].Raw, &pol); err != nil {
		t.Fatal(err)
	}
	return irexec.New(&pol)
}

// topdownEval is the reference: OPA's evaluator with strict built-in errors. Undefined is nil.
func topdownEval(t *testing.T, src string, input, data any, now time.Time) (*ast.Term, error) {
	t.Helper()
	return topdownQuery(t, src, data)(input, now)
}

// topdownQuery prepares the reference of topdownEval once, for deciding many inputs of src and
// data.
func topdownQuery(t *testing.T, src string, data any) func(input any, now time.Time) (*ast.Term, error) {
	t.Helper()
	q, err := rego.New(rego.Query("data.p.x"), rego.Module("p.rego", src), rego.Store(inmem.NewFromObject(data.(map[string]any))),
		rego.StrictBuiltinErrors(true)).PrepareForEval(context.Background())
	if err != nil {
		t.Fatalf("prepare: %v\n%s", err, src)
	}
	return func(input any, now time.Time) (*ast.Term, error) {
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
	// Each program runs the inputs forward, then backward: a value kept across runs (see
	// fnCache) is found by a later input. The second pass keeps every function's values,
	// however small the function.
	for _, everything := range []bool{false, true} {
		if everything {
			restore := irexec.CacheEverything()
			defer restore()
		}
		for _, c := range cases {
			t.Run(fmt.Sprintf("%s/cache_everything=%v", c.Name, everything), func(t *testing.T) {
				src := "package p\n\n" + c.Src
				prog, err := plan(t, src)
				if err != nil {
					t.Fatalf("executor refused the plan: %v", err)
				}
				fromOPA, err := planOPA(t, src)
				if err != nil {
					t.Fatalf("executor refused the plan of OPA's compile package: %v", err)
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
				inputs := slices.Concat(c.Inputs, c.Inputs[1:])
				slices.Reverse(inputs[len(c.Inputs):])
				for _, in := range inputs {
					var input any
					if err := util.UnmarshalJSON([]byte(in), &input); err != nil {
						t.Fatalf("input %s: %v", in, err)
					}
					want, werr := topdownEval(t, src, input, data, now)
					got, gerr := prog.Eval(context.Background(), irexec.PlanName, ast.MustParseTerm(in), dataTerm, irexec.Options{Time: now})
					// The plan "opa build -t plan" makes of it, read from its JSON format, runs alike.
					if j, jerr := fromOPA.Eval(context.Background(), "p/x", ast.MustParseTerm(in), dataTerm, irexec.Options{Time: now}); (jerr == nil) != (gerr == nil) || (j == nil) != (got == nil) || (j != nil && !j.Equal(got)) {
						t.Errorf("input %s: from the engine's plan %v (error %v), from opa build's plan %v (error %v)", in, got, gerr, j, jerr)
					}
					// The same input made lazily (every object reached through objects a Lazy) runs alike.
					l, lerr := prog.Eval(context.Background(), irexec.PlanName, lazily(ast.MustParseTerm(in)), dataTerm, irexec.Options{Time: now})
					if (lerr == nil) != (gerr == nil) || (l == nil) != (got == nil) || (l != nil && !l.Equal(got)) {
						t.Errorf("input %s: made %v (error %v), lazily %v (error %v)", in, got, gerr, l, lerr)
					}
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
	_, err = prog.Eval(context.Background(), irexec.PlanName, ast.MustParseTerm("{}"), ast.MustParseTerm("{}"), irexec.Options{Cancel: c})
	if !errors.Is(err, irexec.ErrCancelled) {
		t.Fatalf("got %v, want ErrCancelled", err)
	}
	got, err := prog.Eval(context.Background(), irexec.PlanName, ast.MustParseTerm("{}"), ast.MustParseTerm("{}"), irexec.Options{Cancel: topdown.NewCancel()})
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

// handPlan is a plan "p/x" of one block of stmts, with the strings "result", "a", "b", "xs".
func handPlan(t *testing.T, stmts ...ir.Stmt) *irexec.Program {
	t.Helper()
	strs := []*ir.StringConst{{Value: "result"}, {Value: "a"}, {Value: "b"}, {Value: "xs"}}
	p := &ir.Policy{Static: &ir.Static{Strings: strs}, Plans: &ir.Plans{Plans: []*ir.Plan{{Name: "p/x", Blocks: []*ir.Block{{Stmts: stmts}}}}}}
	prog, err := irexec.New(p)
	if err != nil {
		t.Fatal(err)
	}
	return prog
}

func local(l int) ir.Operand { return ir.Operand{Value: ir.Local(l)} }
func str(i int) ir.Operand   { return ir.Operand{Value: ir.StringIndex(i)} }
func result(l int) []ir.Stmt {
	return []ir.Stmt{&ir.MakeObjectStmt{Target: 9}, &ir.ObjectInsertStmt{Key: str(0), Value: local(l), Object: 9}, &ir.ResultSetAddStmt{Value: 9}}
}
func runHand(t *testing.T, p *irexec.Program, input string) string {
	t.Helper()
	out, err := p.Eval(context.Background(), "p/x", ast.MustParseTerm(input), ast.MustParseTerm("{}"), irexec.Options{})
	if err != nil || out == nil {
		t.Fatalf("eval: %v %v", out, err)
	}
	return out.String()
}

// TestLiteralSetsStayLiteral: a literal set of constants is built once and shared by every run;
// a statement that adds to it through another local adds to a copy, and a set that a later
// statement adds to is not taken for a literal, so no run sees another's members.
func TestLiteralSetsStayLiteral(t *testing.T) {
	aliased := handPlan(t, append([]ir.Stmt{
		&ir.MakeSetStmt{Target: 2}, &ir.SetAddStmt{Value: str(1), Set: 2},
		&ir.AssignVarStmt{Source: local(2), Target: 3}, &ir.SetAddStmt{Value: str(2), Set: 3},
		&ir.MakeArrayStmt{Target: 4}, &ir.ArrayAppendStmt{Value: local(2), Array: 4}, &ir.ArrayAppendStmt{Value: local(3), Array: 4},
	}, result(4)...)...)
	for range 2 {
		if got := runHand(t, aliased, "{}"); got != `[{"a"}, {"a", "b"}]` {
			t.Fatalf("got %s", got)
		}
	}
	grown := handPlan(t, append([]ir.Stmt{
		&ir.MakeSetStmt{Target: 2}, &ir.SetAddStmt{Value: str(1), Set: 2},
		&ir.DotStmt{Source: local(0), Key: str(3), Target: 5},
		&ir.ScanStmt{Source: 5, Key: 6, Value: 7, Block: &ir.Block{Stmts: []ir.Stmt{&ir.SetAddStmt{Value: local(7), Set: 2}}}},
	}, result(2)...)...)
	if got := runHand(t, grown, `{"xs": ["c", "d"]}`); got != `{"a", "c", "d"}` {
		t.Fatalf("first run: %s", got)
	}
	if got := runHand(t, grown, `{"xs": ["e"]}`); got != `{"a", "e"}` {
		t.Fatalf("second run: %s", got)
	}
}

// TestRefusesMalformedPlans: a plan calling what it does not declare, or a built-in with the
// wrong number of arguments, is refused at New with the row, never run.
func TestRefusesMalformedPlans(t *testing.T) {
	for _, tc := range []struct {
		stmt ir.Stmt
		want string
	}{
		{&ir.CallStmt{Func: "count", Args: nil, Result: 2}, "call of count with 0 arguments, it takes 1"},
		{&ir.CallStmt{Func: "g0.data.p.nope", Args: []ir.Operand{local(0), local(1)}, Result: 2}, "neither defines nor declares"},
		{&ir.AssignVarStmt{Source: local(1), Target: 2}, "whole data document"},
	} {
		tc.stmt.SetLocation(0, 7, 1, "", nil)
		p := &ir.Policy{Static: &ir.Static{Strings: []*ir.StringConst{{Value: "result"}}, BuiltinFuncs: []*ir.BuiltinFunc{{Name: "count"}}},
			Plans: &ir.Plans{Plans: []*ir.Plan{{Name: "p/x", Blocks: []*ir.Block{{Stmts: []ir.Stmt{&ir.BlockStmt{Blocks: []*ir.Block{{Stmts: []ir.Stmt{tc.stmt}}}}}}}}}}}
		_, err := irexec.New(p)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "row 7") != 1 {
			t.Errorf("%T: got %v, want an error naming row 7 once and saying %q", tc.stmt, err, tc.want)
		}
	}
}

// TestEmptySetsStayEmpty: a partial set (object) rule's value starts as one empty set (object)
// shared by every run, and its first addition copies it, so a run never sees another's
// members; a rule whose value is copied elsewhere before its additions end keeps one of its
// own.
func TestEmptySetsStayEmpty(t *testing.T) {
	program := func(body ...ir.Stmt) *irexec.Program {
		t.Helper()
		strs := []*ir.StringConst{{Value: "result"}, {Value: "a"}, {Value: "b"}, {Value: "xs"}}
		var mk ir.Stmt = &ir.MakeSetStmt{Target: 2}
		if _, ok := body[len(body)-1].(*ir.ObjectInsertStmt); ok {
			mk = &ir.MakeObjectStmt{Target: 2}
		}
		if scan, ok := body[len(body)-1].(*ir.ScanStmt); ok {
			if _, ok := scan.Block.Stmts[0].(*ir.ObjectInsertStmt); ok {
				mk = &ir.MakeObjectStmt{Target: 2}
			}
		}
		fn := &ir.Func{Name: "g0.data.p.s", Path: []string{"g0", "p", "s"}, Params: []ir.Local{ir.Input, ir.Data}, Return: 2,
			Blocks: []*ir.Block{{Stmts: []ir.Stmt{mk}}, {Stmts: body}, {Stmts: []ir.Stmt{&ir.ReturnLocalStmt{Source: 2}}}}}
		pl := &ir.Plan{Name: "p/x", Blocks: []*ir.Block{{Stmts: append([]ir.Stmt{
			&ir.CallStmt{Func: fn.Name, Args: []ir.Operand{local(0), local(1)}, Result: 2}}, result(2)...)}}}
		p := &ir.Policy{Static: &ir.Static{Strings: strs}, Plans: &ir.Plans{Plans: []*ir.Plan{pl}}, Funcs: &ir.Funcs{Funcs: []*ir.Func{fn}}}
		prog, err := irexec.New(p)
		if err != nil {
			t.Fatal(err)
		}
		return prog
	}
	grown := program(&ir.DotStmt{Source: local(0), Key: str(3), Target: 5},
		&ir.ScanStmt{Source: 5, Key: 6, Value: 7, Block: &ir.Block{Stmts: []ir.Stmt{&ir.SetAddStmt{Value: local(7), Set: 2}}}})
	for _, tc := range []struct{ input, want string }{
		{`{"xs": ["c", "d"]}`, `{"c", "d"}`}, {`{"xs": []}`, `set()`}, {`{"xs": ["e"]}`, `{"e"}`}, {`{}`, `set()`},
	} {
		if got := runHand(t, grown, tc.input); got != tc.want {
			t.Errorf("input %s: %s, want %s", tc.input, got, tc.want)
		}
	}
	aliased := program(&ir.AssignVarStmt{Source: local(2), Target: 3}, &ir.SetAddStmt{Value: str(2), Set: 3}, &ir.SetAddStmt{Value: str(1), Set: 2})
	for range 2 {
		if got := runHand(t, aliased, "{}"); got != `{"a", "b"}` {
			t.Fatalf("aliased set: %s", got)
		}
	}
	// The same for an object, a partial object rule's.
	objects := program(&ir.DotStmt{Source: local(0), Key: str(3), Target: 5},
		&ir.ScanStmt{Source: 5, Key: 6, Value: 7, Block: &ir.Block{Stmts: []ir.Stmt{&ir.ObjectInsertStmt{Key: local(7), Value: local(6), Object: 2}}}})
	for _, tc := range []struct{ input, want string }{
		{`{"xs": ["c", "d"]}`, `{"c": 0, "d": 1}`}, {`{"xs": []}`, `{}`}, {`{"xs": ["e"]}`, `{"e": 0}`},
	} {
		if got := runHand(t, objects, tc.input); got != tc.want {
			t.Errorf("object, input %s: %s, want %s", tc.input, got, tc.want)
		}
	}
	aliasedObject := program(&ir.AssignVarStmt{Source: local(2), Target: 3}, &ir.ObjectInsertStmt{Key: str(2), Value: str(2), Object: 3},
		&ir.ObjectInsertStmt{Key: str(1), Value: str(1), Object: 2})
	for range 2 {
		if got := runHand(t, aliasedObject, "{}"); got != `{"a": "a", "b": "b"}` {
			t.Fatalf("aliased object: %s", got)
		}
	}
}

// TestObjectLiteralsAreMadeInOneGo: a made object and the inserts of constant keys that follow
// it (with only makes of other values between) become one object made in one go; what each
// insert reads is still what it would have read, and the object is each run's own. Where a make
// between rewrites a value an insert before it read, or the object goes into itself, or a key
// repeats, the inserts after that run one by one.
func TestObjectLiteralsAreMadeInOneGo(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stmts []ir.Stmt
		want  string
	}{
		{"a literal with values made between", []ir.Stmt{
			&ir.DotStmt{Source: local(0), Key: str(3), Target: 2},
			&ir.MakeObjectStmt{Target: 4}, &ir.ObjectInsertStmt{Key: str(1), Value: local(2), Object: 4},
			&ir.MakeArrayStmt{Target: 5}, &ir.ObjectInsertStmt{Key: str(2), Value: local(5), Object: 4},
			&ir.MakeObjectStmt{Target: 6}, &ir.ObjectInsertStmt{Key: str(3), Value: local(6), Object: 4},
			&ir.ObjectInsertStmt{Key: str(0), Value: str(1), Object: 4},
		}, `{"a": [1], "b": [], "result": "a", "xs": {}}`},
		{"a value made anew after its insert", []ir.Stmt{
			&ir.MakeArrayStmt{Target: 2}, &ir.ArrayAppendStmt{Value: str(3), Array: 2},
			&ir.MakeObjectStmt{Target: 4}, &ir.ObjectInsertStmt{Key: str(1), Value: local(2), Object: 4},
			&ir.MakeArrayStmt{Target: 2}, &ir.ObjectInsertStmt{Key: str(2), Value: local(2), Object: 4},
		}, `{"a": ["xs"], "b": []}`},
		{"a key twice", []ir.Stmt{
			&ir.MakeObjectStmt{Target: 4}, &ir.ObjectInsertStmt{Key: str(1), Value: str(2), Object: 4},
			&ir.ObjectInsertStmt{Key: str(1), Value: str(3), Object: 4},
		}, `{"a": "xs"}`},
		{"inserts into another object between", []ir.Stmt{
			&ir.MakeObjectStmt{Target: 4}, &ir.MakeObjectStmt{Target: 5},
			&ir.ObjectInsertStmt{Key: str(1), Value: str(2), Object: 5},
			&ir.ObjectInsertStmt{Key: str(1), Value: local(5), Object: 4},
			&ir.ObjectInsertStmt{Key: str(2), Value: str(3), Object: 4},
		}, `{"a": {"a": "b"}, "b": "xs"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := handPlan(t, append(tc.stmts, result(4)...)...)
			for range 2 {
				if got := runHand(t, p, `{"xs": [1]}`); got != tc.want {
					t.Fatalf("got %s, want %s", got, tc.want)
				}
			}
		})
	}
	// A value the make reads is undefined: an error, as the insert's own would be.
	p := handPlan(t, append([]ir.Stmt{
		&ir.MakeObjectStmt{Target: 4}, &ir.ObjectInsertStmt{Key: str(1), Value: local(7), Object: 4},
	}, result(4)...)...)
	if out, err := p.Eval(context.Background(), "p/x", ast.MustParseTerm("{}"), ast.MustParseTerm("{}"), irexec.Options{}); err == nil {
		t.Fatalf("an undefined value was inserted: %v", out)
	}
}

// TestKeptValuesUnderConcurrentRuns: runs on many goroutines, over inputs that repeat, share the
// values kept across runs and each still gets its own input's answer.
func TestKeptValuesUnderConcurrentRuns(t *testing.T) {
	restore := irexec.CacheEverything()
	defer restore()
	prog, err := plan(t, `package p

owner := data.owners[input.server.id]

loud := upper(owner) if startswith(owner, "team-")

x := {"owner": owner, "loud": object.get({"v": loud}, "v", null), "tool": input.tool}
`)
	if err != nil {
		t.Fatal(err)
	}
	owners := map[string]any{}
	for i := range 20 {
		owners[fmt.Sprint("srv-", i)] = fmt.Sprint("team-", i)
	}
	data := ast.NewTerm(ast.MustInterfaceToValue(map[string]any{"owners": owners}))
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				n := (g*7 + i) % 23 // 20 known servers, 3 unknown
				in := ast.MustParseTerm(fmt.Sprintf(`{"server": {"id": "srv-%d"}, "tool": "t%d"}`, n, i%3))
				out, err := prog.Eval(context.Background(), irexec.PlanName, in, data, irexec.Options{})
				if err != nil {
					t.Error(err)
					return
				}
				want := fmt.Sprintf(`{"loud": "TEAM-%d", "owner": "team-%d", "tool": "t%d"}`, n, n, i%3)
				if n >= 20 {
					want = "<nil>"
				}
				if got := fmt.Sprint(out); got != want {
					t.Errorf("server %d: got %s, want %s", n, got, want)
					return
				}
			}
		})
	}
	wg.Wait()
}
