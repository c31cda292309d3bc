package irexec

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// TestObjectLiteralsBecomeOneInstruction: the planner writes {"result": "allow", "reasons": [],
// "labels": x, "obligations": {}} as a make, four inserts and the makes of [] and {} between
// them; the program makes it with one instruction of four members.
func TestObjectLiteralsBecomeOneInstruction(t *testing.T) {
	src := `package p

labels := [l | some l in input.labels]

x := {"result": "allow", "reasons": [], "labels": labels, "obligations": {}}
`
	m, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	c := ast.NewCompiler()
	if c.Compile(map[string]*ast.Module{"p.rego": m}); c.Failed() {
		t.Fatal(c.Errors)
	}
	pol, err := Plan(context.Background(), c, ast.MustParseRef("data.p.x"))
	if err != nil {
		t.Fatal(err)
	}
	prog, err := New(pol)
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	var walk func(bs []block)
	walk = func(bs []block) {
		for _, b := range bs {
			for _, in := range b {
				if in.op == opMakeObjectItems {
					sizes = append(sizes, len(in.keys))
				}
				if in.op == opObjectInsert {
					t.Errorf("an insert of key %v was left on its own", in.a.term)
				}
				walk(in.blocks)
				if in.fn != nil {
					walk(in.fn.blocks)
				}
			}
		}
	}
	for _, p := range prog.plans {
		walk(p.blocks)
	}
	found := false
	for _, n := range sizes {
		found = found || n == 4
	}
	if !found {
		t.Errorf("objects made in one go, by size: %v; want one of 4 members", sizes)
	}
}
