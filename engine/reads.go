package engine

import (
	"github.com/open-policy-agent/opa/v1/ast"
)

// inputReads is what a policy's rules can read of the input document, found once per
// compilation (readsOf) so that a decision builds only that: a tree of the keys the rules'
// references name under input. A node is read whole where a reference stops (input.server),
// goes on with anything but a string key (input.session.history[0], input.session[k]), or is
// handed on whole (count(input.session), f(input)). A nil *inputReads reads nothing, and
// every method takes one.
//
// Leaving out what no rule reads cannot change a decision: evaluation reads input only through
// the references the rules spell out, and each such reference reaches only the subtree below
// its constant part.
type inputReads struct {
	whole bool
	keys  map[string]*inputReads
	// list holds keys once the tree is complete (freeze): a decision asks for each part of the
	// input it could build, and a look through a few short names costs less than hashing one.
	list []inputKey
}

type inputKey struct {
	name string
	r    *inputReads
}

// freeze fills the lists of r's tree.
func (r *inputReads) freeze() *inputReads {
	if r == nil {
		return r
	}
	r.list = make([]inputKey, 0, len(r.keys))
	for name, k := range r.keys {
		r.list = append(r.list, inputKey{name, k.freeze()})
	}
	return r
}

// readsAll reads the whole input: what a policy is given when nothing is known of it.
var readsAll = &inputReads{whole: true}

// sub is what r reads under key (a string term), nil for nothing.
func (r *inputReads) sub(key *ast.Term) *inputReads {
	if r == nil || r.whole {
		return r
	}
	name := string(key.Value.(ast.String))
	if r.list == nil {
		return r.keys[name]
	}
	for i := range r.list {
		if r.list[i].name == name {
			return r.list[i].r
		}
	}
	return nil
}

// has reports whether r reads anything under key.
func (r *inputReads) has(key *ast.Term) bool { return r.sub(key) != nil }

// add records that ref, a reference into input, is read: the part of it up to its first key
// that is not a string, whole.
func (r *inputReads) add(ref ast.Ref) {
	n := r
	for _, t := range ref[1:] {
		if n.whole {
			return
		}
		s, ok := t.Value.(ast.String)
		if !ok {
			break
		}
		next := n.keys[string(s)]
		if next == nil {
			if n.keys == nil {
				n.keys = make(map[string]*inputReads)
			}
			next = &inputReads{}
			n.keys[string(s)] = next
		}
		n = next
	}
	n.whole, n.keys = true, nil
}

// readsOf finds what the rules of modules, whose references are resolved (imports such as
// "import input.session" spelled out), can read of input. A reference into input reads what
// it names (see add), and so does object.get(input, PATH, DEFAULT) with a constant PATH,
// unless a "with" modifies that expression or replaces object.get anywhere; the bare input
// (as a value, an operand or a function's argument) is read whole.
func readsOf(modules map[string]*ast.Module) *inputReads {
	reads := &inputReads{}
	var vis *ast.GenericVisitor
	walk := func(ts []*ast.Term) {
		for _, t := range ts {
			vis.Walk(t)
		}
	}
	// objectGet checks a call's operator and operands; it reports whether it was an
	// object.get of input with a constant path, whose operands it then walked itself.
	objectGet := func(op *ast.Term, args []*ast.Term) bool {
		if op.Value.Compare(ast.ObjectGet.Ref()) != 0 || len(args) < 2 {
			return false
		}
		if !isInput(args[0].Value) {
			return false
		}
		path := ast.Ref{ast.InputRootDocument}
		switch p := args[1].Value.(type) {
		case ast.String:
			path = append(path, args[1])
		case *ast.Array:
			if !p.IsGround() {
				return false
			}
			p.Foreach(func(t *ast.Term) { path = append(path, t) })
		default:
			return false
		}
		reads.add(path)
		walk(args[1:])
		return true
	}
	vis = ast.NewGenericVisitor(func(x any) bool {
		switch x := x.(type) {
		case *ast.Expr:
			// An expression with "with" modifiers is walked whole, modifiers included: they
			// can change what input or object.get are.
			if x.IsCall() && len(x.With) == 0 {
				terms := x.Terms.([]*ast.Term)
				return objectGet(terms[0], terms[1:])
			}
		case *ast.With:
			// Replacing object.get (here or in any rule it reaches) voids what a constant
			// path says about what it reads: the replacement is handed input whole.
			if x.Target.Value.Compare(ast.ObjectGet.Ref()) == 0 {
				reads.add(ast.Ref{ast.InputRootDocument})
			}
		case ast.Call:
			return objectGet(x[0], x[1:])
		case ast.Var:
			if x.Equal(ast.InputRootDocument.Value) {
				reads.add(ast.Ref{ast.InputRootDocument})
			}
		case ast.Ref:
			if x[0].Value.Compare(ast.InputRootDocument.Value) != 0 {
				return false
			}
			reads.add(x)
			walk(x[1:])
			return true
		}
		return false
	})
	for _, m := range modules {
		// The rules, not the imports: an import of input.session reads nothing until a rule
		// uses it, and by now every such use is spelled out in full.
		for _, r := range m.Rules {
			vis.Walk(r)
			if reads.whole {
				return reads
			}
		}
	}
	return reads.freeze()
}

// isInput reports whether v is the bare input document, as a variable or a reference.
func isInput(v ast.Value) bool {
	if r, ok := v.(ast.Ref); ok && len(r) == 1 {
		v = r[0].Value
	}
	return v.Compare(ast.InputRootDocument.Value) == 0
}
