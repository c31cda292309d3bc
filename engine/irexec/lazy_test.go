package irexec_test

import (
	"context"
	"sync"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
)

// lazyObject is an object of a test input as a LazyObject: each member that is an object is a
// Lazy too, as far down as objects hold objects (arrays and sets hold made values).
type lazyObject struct {
	items [][2]*ast.Term
	reads *int // counts Member calls, when set
}

func (o *lazyObject) Member(key string) *ast.Term {
	if o.reads != nil {
		*o.reads++
	}
	for _, it := range o.items {
		if s, ok := it[0].Value.(ast.String); ok && string(s) == key {
			return it[1]
		}
	}
	return nil
}

func (o *lazyObject) Members() [][2]*ast.Term { return o.items }

// lazily returns t with every object reachable from it through objects alone made a Lazy. An
// object with a key that is not a string stays as it is (a LazyObject's keys are strings), and
// so do its members.
func lazily(t *ast.Term) *ast.Term { return lazilyShared(nil, t) }

// TestLazyIsReadMemberByMember: a reference into a Lazy asks its source for the member and
// leaves the object unmade; a built-in given the Lazy gets the whole object, deeply made.
func TestLazyIsReadMemberByMember(t *testing.T) {
	prog, err := plan(t, `package p

x := {"b": b, "count": n, "a": a}

b := input.a.b

default n := "unset"

n := count(input.a) if input.k == 1

default a := "unset"

a := input.a if input.k == 2
`)
	if err != nil {
		t.Fatal(err)
	}
	// input(k) is {"a": {"b": 7}, "k": k}, every object a Lazy, inner its input.a; reads counts
	// the lookups in it.
	var reads int
	var inner *ast.Term
	input := func(k int) *ast.Term {
		reads = 0
		inner = irexec.NewLazy(&lazyObject{items: [][2]*ast.Term{ast.Item(ast.StringTerm("b"), ast.IntNumberTerm(7))}, reads: &reads})
		return irexec.NewLazy(&lazyObject{items: [][2]*ast.Term{
			ast.Item(ast.StringTerm("a"), inner),
			ast.Item(ast.StringTerm("k"), ast.IntNumberTerm(k)),
		}})
	}
	got, err := prog.Eval(context.Background(), irexec.PlanName, input(0), ast.ObjectTerm(), irexec.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if want := ast.MustParseTerm(`{"b": 7, "count": "unset", "a": "unset"}`); !got.Equal(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if reads == 0 {
		t.Error("input.a.b was not read through the Lazy's Member")
	}
	if irexec.IsWhole(inner) {
		t.Error("reading input.a.b made input.a whole")
	}
	// count(input.a) and a rule whose value is input.a take input.a whole.
	for k, want := range map[int]string{1: `{"b": 7, "count": 1, "a": "unset"}`, 2: `{"b": 7, "count": "unset", "a": {"b": 7}}`} {
		got, err := prog.Eval(context.Background(), irexec.PlanName, input(k), ast.ObjectTerm(), irexec.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(ast.MustParseTerm(want)) {
			t.Errorf("k=%d: got %v, want %v", k, got, want)
		}
		if !irexec.IsWhole(inner) {
			t.Errorf("k=%d: input.a was not made whole", k)
		}
		// What a run returns is made: no Lazy leaves the executor.
		ast.WalkTerms(got, func(x *ast.Term) bool {
			if _, ok := x.Value.(*irexec.Lazy); ok {
				t.Errorf("k=%d: a Lazy in the run's result %v", k, got)
			}
			return false
		})
	}
}

// TestLazyWholeIsMadeOnce: runs on several goroutines taking one Lazy whole share one object.
func TestLazyWholeIsMadeOnce(t *testing.T) {
	l := lazily(ast.MustParseTerm(`{"a": {"b": [1, {"c": 2}]}, "d": "e"}`)).Value.(*irexec.Lazy)
	var wg sync.WaitGroup
	got := make([]*ast.Term, 8)
	for i := range got {
		wg.Go(func() { got[i] = l.Whole() })
	}
	wg.Wait()
	for _, g := range got {
		if g != got[0] {
			t.Fatal("two whole objects for one Lazy")
		}
	}
	if want := ast.MustParseTerm(`{"a": {"b": [1, {"c": 2}]}, "d": "e"}`); !got[0].Equal(want) {
		t.Fatalf("got %v, want %v", got[0], want)
	}
	if _, ok := got[0].Value.(ast.Object).Get(ast.StringTerm("a")).Value.(ast.Object); !ok {
		t.Fatal("a member of the whole object is not made")
	}
}

// lazilyShared is lazily, keeping each Lazy in memo (unless nil) by the made term it stands
// for: a term the input shares (or that an earlier input held) is the same Lazy every time.
func lazilyShared(memo map[*ast.Term]*ast.Term, t *ast.Term) *ast.Term {
	if l, ok := memo[t]; ok {
		return l
	}
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return t
	}
	var items [][2]*ast.Term
	for _, k := range obj.Keys() {
		if _, ok := k.Value.(ast.String); !ok {
			return t
		}
		items = append(items, [2]*ast.Term{k, lazilyShared(memo, obj.Get(k))})
	}
	l := irexec.NewLazy(&lazyObject{items: items})
	if memo != nil {
		memo[t] = l
	}
	return l
}

// TestLazySharedByConcurrentRuns: runs on several goroutines read one Lazy input (member by
// member, through object.get and is_object, and whole: count, iteration, comparison) and
// answer as on the input made; run it under -race.
func TestLazySharedByConcurrentRuns(t *testing.T) {
	prog, err := plan(t, `package p

total := input.session.calls.total

fs := object.get(input, ["session", "calls", "by_tool", "fs", "read"], 0)

tools := object.get(input.session.calls.by_tool, "fs", {})

servers := [s | some s, _ in input.session.calls.by_server]

n := count(input.session.calls.by_tool)

same if input.session.calls.by_server == {"fs": 3, "git": 1}

obj if is_object(input.session.calls)

x := {"total": total, "fs": fs, "tools": tools, "servers": servers, "n": n, "same": same, "obj": obj, "sess": input.session}
`)
	if err != nil {
		t.Fatal(err)
	}
	made := ast.MustParseTerm(`{"session": {"id": "s", "calls": {"total": 4, "by_server": {"fs": 3, "git": 1}, "by_tool": {"fs": {"read": 2, "write": 1}, "git": {"log": 1}}}}}`)
	want, err := prog.Eval(context.Background(), irexec.PlanName, made, ast.ObjectTerm(), irexec.Options{})
	if err != nil || want == nil {
		t.Fatalf("made: %v, %v", want, err)
	}
	for range 20 {
		in := lazily(made)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				for range 20 {
					if g == 0 {
						irexec.Whole(in) // another reader makes it whole meanwhile
					}
					got, err := prog.Eval(context.Background(), irexec.PlanName, in, ast.ObjectTerm(), irexec.Options{})
					if err != nil || !got.Equal(want) {
						t.Errorf("lazily on goroutine %d: %v (error %v), want %v", g, got, err, want)
						return
					}
				}
			})
		}
		wg.Wait()
	}
}
