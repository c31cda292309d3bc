package irexec

import "testing"

// TestObjectLiteralsBecomeOneInstruction: the planner writes {"result": "allow", "reasons": [],
// "labels": x, "obligations": {}} as a make, four inserts and the makes of [] and {} between
// them; the program makes it with one instruction of four members.
func TestObjectLiteralsBecomeOneInstruction(t *testing.T) {
	prog, err := New(planOf(t, `package p

labels := [l | some l in input.labels]

x := {"result": "allow", "reasons": [], "labels": labels, "obligations": {}}
`))
	if err != nil {
		t.Fatal(err)
	}
	var sizes []int
	eachInstr(prog, func(in *instr) {
		if in.op == opMakeObjectItems {
			sizes = append(sizes, len(in.keys))
		}
		if in.op == opObjectInsert {
			t.Errorf("an insert of key %v was left on its own", in.a.term)
		}
	})
	found := false
	for _, n := range sizes {
		found = found || n == 4
	}
	if !found {
		t.Errorf("objects made in one go, by size: %v; want one of 4 members", sizes)
	}
}

// eachInstr calls f with every instruction of prog's plans and of the functions they call.
func eachInstr(prog *Program, f func(*instr)) {
	var walk func(bs []block)
	walk = func(bs []block) {
		for _, b := range bs {
			for i := range b {
				in := &b[i]
				f(in)
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
}
