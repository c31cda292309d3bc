package irexec

import (
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Lazily made input.
//
// Most of an input document is never read by a given decision: a policy reads a session's
// total, one server's count of its calls, never the rest. A Lazy is an object of the input
// (the document itself, or an object in it) that a run reads member by member, without the
// object being made: a reference (a DotStmt) asks the Lazy's source for one member. Anything
// else a run does with a Lazy (hand it to a built-in, compare it, iterate it, return it, keep
// it as a rule's value) takes the whole object instead, made once, deeply (see Whole), so only
// the executor's member lookups and its moving of values between locals ever see a Lazy: no
// built-in, comparison or value kept across runs does.
//
// Comparing with a Lazy is one-sided: l.Compare(x) compares the whole object, but OPA's own
// values do not know a Lazy (x.Compare(l) sorts it after everything), which is one more reason
// none may reach OPA's code.
//
// A Lazy must hold only immutable members: the object it stands for never changes, and runs
// on several goroutines may read one Lazy at once. Within an input, an object that holds a
// Lazy must be a Lazy itself (the input document first of all), since only a Lazy is made
// deeply when taken whole.

// LazyObject is the source of a Lazy: an object whose keys are strings.
type LazyObject interface {
	// Member returns the value of key (nil: none), which may be a Lazy itself (NewLazy).
	Member(key string) *ast.Term
	// Members returns every key and value, the values as Member returns them.
	Members() [][2]*ast.Term
}

// Lazy is the value of a term made by NewLazy. It is an ast.Value so that it can be a term's
// value; its methods answer for the whole object.
type Lazy struct {
	src   LazyObject
	whole atomic.Pointer[ast.Term]
}

// NewLazy returns a term whose value is the object src stands for, made only as far as runs
// read it. The plan executor alone reads such terms: Whole makes the object for anything else.
func NewLazy(src LazyObject) *ast.Term { return ast.NewTerm(&Lazy{src: src}) }

// Init makes l stand for src and t a term of it, in memory the caller allocated (a Lazy and its
// term inside the source's own struct: one allocation, not three), and returns t. l must be
// new, and neither is copied after.
func (l *Lazy) Init(t *ast.Term, src LazyObject) *ast.Term {
	l.src, t.Value = src, l
	return t
}

// Whole returns t itself, or for a Lazy the whole object it stands for, every member made
// (Lazy ones too, deeply). The object is made once per Lazy and shared by every caller.
func Whole(t *ast.Term) *ast.Term {
	if t == nil {
		return nil
	}
	if l, ok := t.Value.(*Lazy); ok {
		return l.Whole()
	}
	return t
}

// Whole returns the object l stands for (see the package function Whole).
func (l *Lazy) Whole() *ast.Term {
	if w := l.whole.Load(); w != nil {
		return w
	}
	items := l.src.Members()
	made := make([][2]*ast.Term, len(items))
	for i, it := range items {
		made[i] = [2]*ast.Term{it[0], Whole(it[1])}
	}
	w := ast.NewTerm(ast.NewObject(made...))
	// Two runs making it at once make equal objects; the first kept serves every later one.
	if !l.whole.CompareAndSwap(nil, w) {
		return l.whole.Load()
	}
	return w
}

// Member returns the value of key in l without making l: what a reference reads. A member
// that is a Lazy is returned as it is, whether or not l was made whole: both stand for the same
// value.
func (l *Lazy) Member(key string) *ast.Term { return l.src.Member(key) }

// member is Member for a key term.
func (l *Lazy) member(key *ast.Term) *ast.Term {
	s, ok := key.Value.(ast.String)
	if !ok {
		return nil // every key of a LazyObject is a string
	}
	return l.Member(string(s))
}

// lazyBuiltin names the built-ins that read a Lazy first argument without making it: a policy
// that checks input.session.calls.by_tool is an object and looks one count up in it (with
// object.get and a path) reads one member.
type lazyBuiltin uint8

const (
	lazyNone lazyBuiltin = iota
	lazyObjectGet
	lazyIsObject
)

// builtinOnLazy runs in's built-in (one of lazyBuiltin's) on t, its first argument, a Lazy, as
// OPA's implementation does on the whole object.
func (m *machine) builtinOnLazy(in *instr, t *ast.Term, frame []*ast.Term) *ast.Term {
	switch in.onLazy {
	case lazyIsObject:
		return ast.InternedTerm(true)
	case lazyObjectGet:
		// object.get(object, key, default), or with an array of keys, the path of keys.
		path, def := m.get(in.args[1], frame), m.get(in.args[2], frame)
		if path == nil || def == nil {
			return nil
		}
		v := t
		if keys, ok := path.Value.(*ast.Array); ok {
			for i := range keys.Len() {
				if v = dot(v, keys.Elem(i)); v == nil {
					break
				}
			}
		} else {
			v = dot(t, path)
		}
		if v == nil {
			return def
		}
		return v
	}
	panic("unreachable")
}

// The ast.Value methods: whatever reaches them takes the whole object.

func (l *Lazy) Compare(other ast.Value) int {
	if o, ok := other.(*Lazy); ok {
		other = o.Whole().Value
	}
	return l.Whole().Value.Compare(other)
}

func (l *Lazy) Find(path ast.Ref) (ast.Value, error) { return l.Whole().Value.Find(path) }

func (l *Lazy) Hash() int { return l.Whole().Value.Hash() }

func (l *Lazy) IsGround() bool { return true }

func (l *Lazy) String() string { return l.Whole().Value.String() }

func (l *Lazy) StringLength() int { return l.Whole().Value.(ast.StringLengther).StringLength() }

var _ ast.Value = (*Lazy)(nil)
