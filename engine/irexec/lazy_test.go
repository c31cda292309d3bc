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
func lazily(t *ast.Term) *ast.Term {
	obj, ok := t.Value.(ast.Object)
	if !ok {
		return t
	}
	var items [][2]*ast.Term
	for _, k := range obj.Keys() {
		if _, ok := k.Value.(ast.String); !ok {
			return t
		}
		items = append(items, [2]*ast.Term{k, lazily(obj.Get(k))})
	}
	return irexec.NewLazy(&lazyObject{items: items})
}

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
	var reads int
	inner := irexec.NewLazy(&lazyObject{items: [][2]*ast.Term{ast.Item(ast.StringTerm("b"), ast.IntNumberTerm(7))}, reads: &reads})
	input := func(k int) *ast.Term {
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
	if w := inner.Value.(*irexec.Lazy); w.Whole() == nil {
		t.Fatal("no whole object")
	}
	for k, want := range map[int]string{1: `{"b": 7, "count": 1, "a": "unset"}`, 2: `{"b": 7, "count": "unset", "a": {"b": 7}}`} {
		got, err := prog.Eval(context.Background(), irexec.PlanName, input(k), ast.ObjectTerm(), irexec.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !got.Equal(ast.MustParseTerm(want)) {
			t.Errorf("k=%d: got %v, want %v", k, got, want)
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
