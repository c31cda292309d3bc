package irexec

import (
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
)

// itemsSource is a LazyObject of given members.
type itemsSource [][2]*ast.Term

func (s itemsSource) Member(key string) *ast.Term {
	for _, it := range s {
		if string(it[0].Value.(ast.String)) == key {
			return it[1]
		}
	}
	return nil
}

func (s itemsSource) Members() [][2]*ast.Term { return s }

// TestKeyBudgetCountsALazy: a Lazy in a function's key is charged for the object it stands for,
// as the same object made would be: a kept key must not hold more than maxKeyBytes of input
// (input.operation with large arguments, say) because the engine now hands it lazily.
func TestKeyBudgetCountsALazy(t *testing.T) {
	big := ast.StringTerm(strings.Repeat("x", 2*maxKeyBytes))
	items := itemsSource{ast.Item(ast.StringTerm("arguments"), ast.ObjectTerm(ast.Item(ast.StringTerm("blob"), big)))}
	if made := ast.NewTerm(ast.NewObject(items...)); within(made, maxKeyBytes) >= 0 {
		t.Fatal("the made object fits the budget")
	}
	if left := within(NewLazy(items), maxKeyBytes); left >= 0 {
		t.Errorf("a Lazy of %d bytes of strings is within the key budget (%d left)", 2*maxKeyBytes, left)
	}
}

// TestKeptKeyHoldsNoLargeLazy: a rule reading input.op whole keeps no value keyed by a large
// input.op, made or lazy alike.
func TestKeptKeyHoldsNoLargeLazy(t *testing.T) {
	old := minCachedSize
	minCachedSize = 0
	defer func() { minCachedSize = old }()
	p, err := New(planOf(t, "package p\n\ny := count(input.op)\n\nx := y\n"))
	if err != nil {
		t.Fatal(err)
	}
	big := ast.StringTerm(strings.Repeat("x", 2*maxKeyBytes))
	op := itemsSource{ast.Item(ast.StringTerm("arguments"), ast.ObjectTerm(ast.Item(ast.StringTerm("blob"), big)))}
	for _, lazy := range []bool{false, true} {
		var opTerm *ast.Term
		if lazy {
			opTerm = NewLazy(op)
		} else {
			opTerm = ast.NewTerm(ast.NewObject(op...))
		}
		input := NewLazy(itemsSource{ast.Item(ast.StringTerm("op"), opTerm)})
		if got, err := p.Eval(t.Context(), PlanName, input, ast.ObjectTerm(), Options{}); err != nil || !got.Equal(ast.IntNumberTerm(1)) {
			t.Fatalf("got %v, %v", got, err)
		}
		kept := 0
		for _, f := range funcsOf(p) {
			if f.cache == nil {
				continue
			}
			if slots := f.cache.slots.Load(); slots != nil {
				for i := range slots {
					if slots[i].Load() != nil {
						kept++
					}
				}
			}
		}
		if kept != 0 {
			t.Errorf("input.op lazy=%v: %d values kept under a key holding %d bytes of input", lazy, kept, 2*maxKeyBytes)
		}
	}
}
