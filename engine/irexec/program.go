// Package irexec runs a policy planned by OPA's planner (OPA's intermediate representation,
// package ir): the same plans OPA compiles to WebAssembly, executed directly over AST values.
//
// A plan is straight-line code with blocks, loops and calls, where OPA's own evaluator (topdown)
// unifies terms against rules with bindings and backtracking. For the policies Arbiter serves
// that makes a decision several times cheaper. Built-in functions are OPA's own (topdown's
// implementations, called with the same operands), so only the control flow and the handful of
// value operations below are Arbiter's.
//
// A plan that uses anything this package does not run (a "with" replacing input or data, a
// dynamic call, a non-deterministic built-in, a built-in OPA does not implement in Go, the whole
// data document read as a value, ...) is refused by New with an error wrapping ErrUnsupported:
// the caller then evaluates the policy with topdown. ("with" replacing a function or built-in
// is planned away by OPA: the plan calls the replacement.)
package irexec

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// ErrUnsupported is wrapped by New's error when the plan uses something Program cannot run.
var ErrUnsupported = errors.New("not supported by the plan executor")

// Program is a planned policy ready to run: every plan and function of it resolved (calls to
// their targets, string and number constants to terms), and checked to use only what this
// package runs. It is immutable and safe for concurrent use.
type Program struct {
	plans map[string]*plan
	// maxArgs is the most operands any built-in call passes: the scratch space of a run.
	maxArgs int
	// funcs counts the functions, for the per-run memo of functions of input and data alone.
	funcs int
	// stack is the most locals any plan's run holds at once.
	stack int
	// frozen are the literal sets built once at New and shared by every run (constSet).
	frozen map[*ast.Term]bool
	// tree holds the input paths of the functions' keys (see fnCache).
	tree     *pathTree
	machines sync.Pool
}

type plan struct {
	blocks []block
	frame  int // locals of the plan itself
	stack  int // locals of the plan and of the deepest chain of calls it makes
}

// function is a planned rule or Rego function. Its first two parameters are always the input
// and data documents.
type function struct {
	name   string
	index  int
	params []int32
	blocks []block
	frame  int
	stack  int // frame plus the deepest chain of calls below it; set by stackNeed
	// memo: the function takes only input and data, so within one run (no "with" changes
	// either) its result is the same every time it is called.
	memo bool
	// cache keeps its values across runs (see fnCache); nil when it is not worth it.
	cache *fnCache
}

type block []instr

type opcode uint8

const (
	opAssignVar opcode = iota
	opAssignVarOnce
	opConst // term holds the value: a number, or a set of constants built once (see constSet)
	opResetLocal
	opMakeNull
	opMakeArray
	opMakeObject
	opMakeSet
	opDot
	opLen
	opEqual
	opNotEqual
	opIsArray
	opIsObject
	opIsSet
	opIsDefined
	opIsUndefined
	opArrayAppend
	opObjectInsert
	opObjectInsertOnce
	opSetAdd
	opCallFunc
	opCallBuiltin
	opBlock
	opBreak
	opScan
	opNot
	opReturn
	opResultAdd
	opNop
	// opMakeObjectItems is a MakeObjectStmt and the ObjectInsertStmts of constant keys that
	// follow it into the same object (objectItems): the object is made in one go, with one
	// block for its members, rather than grown by one allocation per insert.
	opMakeObjectItems
	// opResultValue is what a plan ends with, an object of one member "result" made and added
	// to the result set (see resultValue), done as adding the member's value itself: a run
	// does not make an object only for Eval to take the member out of it.
	opResultValue
)

// operand is a local, or a constant when term is set.
type operand struct {
	local int32
	term  *ast.Term
}

// instr is one statement. Which fields are used depends on op. What every kind of statement
// reads fits one cache line; the rest (calls, nested blocks, locations) is behind instrExt.
type instr struct {
	op opcode
	// lastWins marks the ObjectInsertOnceStmt of an object comprehension (see
	// comprehensionInserts).
	lastWins bool
	// dataPath marks a DotStmt that continues a reference rooted at data (data.a[k]): OPA
	// reads those from its store by a path of strings, so it looks them up as the store does.
	dataPath bool
	target   int32   // Target, Array, Object, Set, Result, or the break index
	key      int32   // ScanStmt's key local
	a, b     operand // sources (a: Source, Key, A, Value; b: B, Value of an insert)
	term     *ast.Term
	*instrExt
}

// instrExt holds the fields of an instr that only some statements use. Every instr has one.
type instrExt struct {
	n      int     // MakeArrayStmt's capacity
	blocks []block // BlockStmt's blocks, or the one block of ScanStmt and NotStmt
	fn     *function
	bi     topdown.BuiltinFunc
	biName string
	onLazy lazyBuiltin   // what a built-in call does with a Lazy first argument (see callBuiltin)
	clock  bool          // the built-in reads the run's clock (BuiltinContext.Time): time.now_ns
	args   []operand     // a call's arguments, or opMakeObjectItems' values
	keys   []*ast.Term   // opMakeObjectItems' keys
	row    int           // the statement's row in the policy, for errors
	astLoc *ast.Location // a built-in call's row and column, for its errors
}

// New resolves p into a Program, or fails with an error wrapping ErrUnsupported when p uses
// a statement or built-in the executor does not run.
func New(p *ir.Policy) (*Program, error) {
	if p == nil || p.Plans == nil || p.Static == nil {
		return nil, fmt.Errorf("%w: empty plan", ErrUnsupported)
	}
	r := &resolver{strings: make([]*ast.Term, len(p.Static.Strings)), funcs: map[string]*function{}, builtins: map[string]bool{}}
	for i, s := range p.Static.Strings {
		r.strings[i] = ast.StringTerm(s.Value)
	}
	for _, b := range p.Static.BuiltinFuncs {
		r.builtins[b.Name] = true
	}
	r.frozen, r.lastWins = map[*ast.Term]bool{}, map[*ir.ObjectInsertOnceStmt]bool{}
	r.emptySet, r.emptyObject = ast.NewTerm(ast.NewSet()), ast.NewTerm(ast.NewObject())
	r.emptySet.Value.(ast.Set).Sorted() // runs read them concurrently
	r.emptyObject.Value.(ast.Object).Keys()
	r.frozen[r.emptySet], r.frozen[r.emptyObject] = true, true
	var funcs []*ir.Func
	if p.Funcs != nil {
		funcs = p.Funcs.Funcs
	}
	for i, f := range funcs {
		fn := &function{name: f.Name, index: i, params: make([]int32, len(f.Params))}
		for j, l := range f.Params {
			fn.params[j] = int32(l)
		}
		fn.memo = len(f.Params) == 2 && f.Params[0] == ir.Input && f.Params[1] == ir.Data
		r.funcs[f.Name] = fn
	}
	for _, f := range funcs {
		fn := r.funcs[f.Name]
		r.maxLocal = 0
		r.dataDots = dataPathDots(f.Blocks)
		r.emptyRet = -1
		if emptyReturn(f) {
			r.emptyRet = f.Return
		}
		for _, l := range f.Params {
			r.use(int32(l))
		}
		r.use(int32(f.Return))
		var err error
		if fn.blocks, err = r.blocks(f.Blocks); err != nil {
			return nil, fmt.Errorf("function %s: %w", f.Name, err)
		}
		fn.frame = int(r.maxLocal) + 1
	}
	tree := cacheResults(funcs, p.Static.Strings, r.funcs)
	prog := &Program{plans: map[string]*plan{}, funcs: len(funcs), tree: tree}
	r.emptyRet = -1
	for _, pl := range p.Plans.Plans {
		r.maxLocal = int32(ir.Data)
		r.dataDots = dataPathDots(pl.Blocks)
		blocks, err := r.blocks(pl.Blocks)
		if err != nil {
			return nil, fmt.Errorf("plan %s: %w", pl.Name, err)
		}
		out := &plan{blocks: blocks, frame: int(r.maxLocal) + 1}
		need, err := stackNeed(blocks, 0)
		if err != nil {
			return nil, err
		}
		out.stack = out.frame + need
		prog.plans[pl.Name] = out
		prog.stack = max(prog.stack, out.stack)
	}
	prog.maxArgs, prog.frozen = r.maxArgs, r.frozen
	return prog, nil
}

// HasPlan reports whether the program has the plan of an entry point (such as "mcp/decision").
func (p *Program) HasPlan(name string) bool {
	_, ok := p.plans[name]
	return ok
}

// stackNeed is the most locals a chain of calls made from blocks can hold at once (calls
// cannot recurse: Rego has no recursion, and the planner plans none).
func stackNeed(blocks []block, depth int) (int, error) {
	if depth > 1000 {
		return 0, fmt.Errorf("%w: calls nested deeper than 1000", ErrUnsupported)
	}
	most := 0
	for _, b := range blocks {
		for i := range b {
			in := &b[i]
			if in.fn != nil {
				if in.fn.stack == 0 {
					need, err := stackNeed(in.fn.blocks, depth+1)
					if err != nil {
						return 0, err
					}
					in.fn.stack = in.fn.frame + need
				}
				most = max(most, in.fn.stack)
			}
			if len(in.blocks) > 0 {
				need, err := stackNeed(in.blocks, depth)
				if err != nil {
					return 0, err
				}
				most = max(most, need)
			}
		}
	}
	return most, nil
}

// resolver turns IR statements into instructions.
type resolver struct {
	strings  []*ast.Term
	funcs    map[string]*function
	builtins map[string]bool
	maxLocal int32
	maxArgs  int
	// frozen are the sets built once by constSet.
	frozen map[*ast.Term]bool
	// dataRootOK lets the operand being resolved be the data document itself: the source of a
	// DotStmt or ScanStmt, or the data argument of a planned function.
	dataRootOK bool
	// lastWins are the insertions of object comprehensions (comprehensionInserts).
	lastWins map[*ir.ObjectInsertOnceStmt]bool
	// dataDots are the DotStmts of the function being resolved that continue a reference
	// rooted at data (see dataPathDots).
	dataDots map[*ir.DotStmt]bool
	// emptySet and emptyObject are one empty set and one empty object shared by every run
	// (frozen); emptyRet is the return local of the function being resolved when it starts as
	// one of them (emptyReturn), else -1.
	emptySet, emptyObject *ast.Term
	emptyRet              ir.Local
	// exts is what is left of the slab ext hands instrExts out of.
	exts []instrExt
}

func (r *resolver) use(l int32) int32 {
	r.maxLocal = max(r.maxLocal, l)
	return l
}

func (r *resolver) blocks(in []*ir.Block) ([]block, error) {
	out := make([]block, len(in))
	for i, b := range in {
		if b == nil {
			continue
		}
		out[i] = make(block, 0, len(b.Stmts))
		for j := 0; j < len(b.Stmts); j++ {
			s := b.Stmts[j]
			if set, n := r.constSet(b.Stmts[j:]); set != nil {
				mk := s.(*ir.MakeSetStmt)
				out[i] = append(out[i], instr{op: opConst, target: r.use(int32(mk.Target)), term: set, instrExt: r.ext()})
				j += n - 1
				continue
			}
			if mk, ok := s.(*ir.MakeObjectStmt); ok && j+1 < len(b.Stmts) {
				// An object comprehension: the planner makes the object, then runs the body.
				if body, ok := b.Stmts[j+1].(*ir.BlockStmt); ok {
					comprehensionInserts(body.Blocks, mk.Target, r.lastWins)
				}
				if inserts, between, n := r.objectItems(mk.Target, b.Stmts[j+1:]); n > 0 {
					for _, s := range between {
						ins, err := r.stmt(s)
						if err != nil {
							return nil, err
						}
						out[i] = append(out[i], ins)
					}
					ins, err := r.makeObjectItems(mk, inserts)
					if err != nil {
						return nil, err
					}
					if resultValue(&ins, mk, b.Stmts[j+n+1:]) {
						ins.op, ins.a = opResultValue, ins.args[0]
						j++ // the ResultSetAddStmt
					}
					out[i] = append(out[i], ins)
					j += n
					continue
				}
			}
			ins, err := r.stmt(s)
			if err != nil {
				var located *rowError
				if loc := s.GetLocation(); loc != nil && loc.Row > 0 && !errors.As(err, &located) {
					err = &rowError{row: loc.Row, err: err}
				}
				return nil, err
			}
			out[i] = append(out[i], ins)
		}
	}
	return out, nil
}

// maxObjectItems bounds the inserts one opMakeObjectItems takes (the run gathers them on the
// stack).
const maxObjectItems = 16

// objectItems finds, in stmts, which follow a MakeObjectStmt of obj, the inserts the make can
// take in: ObjectInsertStmts into obj of distinct constant string keys whose values are not obj,
// with between them only statements that make a value and cannot fail (MakeObjectStmt,
// MakeArrayStmt, MakeSetStmt, MakeNullStmt) of locals other than obj and the values of the
// inserts before them. The planner writes an object literal so: {"a": x, "b": {}} makes the
// object, inserts "a", makes {}, inserts "b". Read at the last insert, every value is the one
// its own insert would have read, and nothing in between can see the object half made. It
// returns the inserts, the statements between them, and how many statements they are; a make
// that a rule's return value starts with (emptyReturn) is left alone.
func (r *resolver) objectItems(obj ir.Local, stmts []ir.Stmt) (inserts []*ir.ObjectInsertStmt, between []ir.Stmt, n int) {
	if obj == r.emptyRet {
		return nil, nil, 0
	}
	keys := map[string]bool{}
	values := map[ir.Local]bool{}
	var pending []ir.Stmt // makes since the last insert taken
	for i, s := range stmts {
		switch s := s.(type) {
		case *ir.ObjectInsertStmt:
			if !r.takes(obj, s, keys, len(inserts)) {
				return inserts, between, n
			}
			if l, ok := localOf(s.Value); ok {
				values[ir.Local(l)] = true
			}
			inserts, between, pending, n = append(inserts, s), append(between, pending...), nil, i+1
		case *ir.MakeObjectStmt, *ir.MakeArrayStmt, *ir.MakeSetStmt, *ir.MakeNullStmt:
			t := ir.Local(definedBy(s).l[0])
			if t == obj || values[t] {
				return inserts, between, n
			}
			pending = append(pending, s)
		default:
			return inserts, between, n
		}
	}
	return inserts, between, n
}

// takes reports whether an opMakeObjectItems of obj, holding taken inserts with keys, can
// take s too (see objectItems).
func (r *resolver) takes(obj ir.Local, s *ir.ObjectInsertStmt, keys map[string]bool, taken int) bool {
	if s.Object != obj || taken == maxObjectItems {
		return false
	}
	if l, ok := localOf(s.Value); ok && ir.Local(l) == obj {
		return false
	}
	key, err := r.operand(s.Key)
	if err != nil || key.term == nil {
		return false
	}
	k, ok := key.term.Value.(ast.String)
	if !ok || keys[string(k)] {
		return false
	}
	keys[string(k)] = true
	return true
}

// resultValue reports whether in, the opMakeObjectItems of mk, followed by rest to the end of
// their block, is how a plan ends: an object of the one key "result" made and added to the
// result set by the block's last statement, the object read by nothing else.
func resultValue(in *instr, mk *ir.MakeObjectStmt, rest []ir.Stmt) bool {
	if len(in.keys) != 1 || len(rest) != 1 || in.keys[0].Value.Compare(resultKey.Value) != 0 {
		return false
	}
	add, ok := rest[0].(*ir.ResultSetAddStmt)
	return ok && add.Value == mk.Target
}

// makeObjectItems is the opMakeObjectItems of mk and inserts (see objectItems).
func (r *resolver) makeObjectItems(mk *ir.MakeObjectStmt, inserts []*ir.ObjectInsertStmt) (instr, error) {
	in, err := r.stmt(mk)
	if err != nil {
		return in, err
	}
	in.op = opMakeObjectItems
	for _, ins := range inserts {
		key, err := r.operand(ins.Key)
		if err != nil {
			return in, err
		}
		v, err := r.operand(ins.Value)
		if err != nil {
			return in, err
		}
		in.keys, in.args = append(in.keys, key.term), append(in.args, v)
	}
	if loc := inserts[0].GetLocation(); loc != nil {
		in.row = loc.Row
	}
	return in, nil
}

// rowError is an error about the statement at a row of the policy: it names the innermost
// statement's row once, however deep the statement sits.
type rowError struct {
	row int
	err error
}

func (e *rowError) Error() string { return fmt.Sprintf("row %d: %v", e.row, e.err) }
func (e *rowError) Unwrap() error { return e.err }

// comprehensionInserts adds to out the ObjectInsertOnceStmts of blocks, at any depth, into
// obj: the insertions of an object comprehension's body. Given a key twice with equal values
// (1, then 1.0), a comprehension keeps the last, as topdown does; a partial object rule, which
// the planner also writes with ObjectInsertOnceStmt, keeps the first.
func comprehensionInserts(blocks []*ir.Block, obj ir.Local, out map[*ir.ObjectInsertOnceStmt]bool) {
	for _, b := range blocks {
		if b == nil {
			continue
		}
		for _, s := range b.Stmts {
			switch s := s.(type) {
			case *ir.ObjectInsertOnceStmt:
				if s.Object == obj {
					out[s] = true
				}
			case *ir.BlockStmt:
				comprehensionInserts(s.Blocks, obj, out)
			case *ir.ScanStmt:
				comprehensionInserts([]*ir.Block{s.Block}, obj, out)
			case *ir.NotStmt:
				comprehensionInserts([]*ir.Block{s.Block}, obj, out)
			}
		}
	}
}

func (r *resolver) operand(o ir.Operand) (operand, error) {
	switch v := o.Value.(type) {
	case ir.Local:
		if v == ir.Data && !r.dataRootOK {
			// OPA's store hides data.system from a read of the whole data document; a plan
			// handing data on whole (x := data, f(data), a built-in given data) is left to it.
			return operand{}, fmt.Errorf("%w: the whole data document read as a value", ErrUnsupported)
		}
		return operand{local: r.use(int32(v))}, nil
	case ir.StringIndex:
		if int(v) < 0 || int(v) >= len(r.strings) {
			return operand{}, fmt.Errorf("string constant %d out of range", v)
		}
		return operand{term: r.strings[v]}, nil
	case ir.Bool:
		return operand{term: ast.InternedTerm(bool(v))}, nil
	// Plans decoded from JSON hold pointers.
	case *ir.Local:
		return r.operand(ir.Operand{Value: *v})
	case *ir.StringIndex:
		return r.operand(ir.Operand{Value: *v})
	case *ir.Bool:
		return r.operand(ir.Operand{Value: *v})
	}
	return operand{}, fmt.Errorf("%w: operand %T", ErrUnsupported, o.Value)
}

func (r *resolver) stmt(s ir.Stmt) (instr, error) {
	in := instr{instrExt: r.ext()}
	var err error
	two := func(a, b ir.Operand) {
		if in.a, err = r.operand(a); err == nil {
			in.b, err = r.operand(b)
		}
	}
	switch s := s.(type) {
	case *ir.AssignVarStmt:
		in.op, in.target = opAssignVar, r.use(int32(s.Target))
		in.a, err = r.operand(s.Source)
	case *ir.AssignVarOnceStmt:
		in.op, in.target = opAssignVarOnce, r.use(int32(s.Target))
		in.a, err = r.operand(s.Source)
	case *ir.AssignIntStmt:
		in.op, in.target, in.term = opConst, r.use(int32(s.Target)), ast.InternedTerm(int(s.Value))
	case *ir.ResetLocalStmt:
		in.op, in.target = opResetLocal, r.use(int32(s.Target))
	case *ir.MakeNullStmt:
		in.op, in.target = opMakeNull, r.use(int32(s.Target))
	case *ir.MakeNumberIntStmt:
		in.op, in.target, in.term = opConst, r.use(int32(s.Target)), ast.InternedTerm(int(s.Value))
	case *ir.MakeNumberRefStmt:
		if s.Index < 0 || s.Index >= len(r.strings) {
			return in, fmt.Errorf("number constant %d out of range", s.Index)
		}
		in.op, in.target, in.term = opConst, r.use(int32(s.Target)), ast.NumberTerm(json.Number(r.strings[s.Index].Value.(ast.String)))
	case *ir.MakeArrayStmt:
		in.op, in.target, in.n = opMakeArray, r.use(int32(s.Target)), int(s.Capacity)
	case *ir.MakeObjectStmt:
		in.op, in.target = opMakeObject, r.use(int32(s.Target))
		if s.Target == r.emptyRet {
			in.op, in.term = opConst, r.emptyObject
		}
	case *ir.MakeSetStmt:
		in.op, in.target = opMakeSet, r.use(int32(s.Target))
		if s.Target == r.emptyRet {
			in.op, in.term = opConst, r.emptySet
		}
	case *ir.DotStmt:
		in.op, in.target = opDot, r.use(int32(s.Target))
		r.dataRootOK = true
		in.a, err = r.operand(s.Source)
		r.dataRootOK = false
		if err == nil {
			in.b, err = r.operand(s.Key)
		}
		in.dataPath = r.dataDots[s]
	case *ir.LenStmt:
		in.op, in.target = opLen, r.use(int32(s.Target))
		in.a, err = r.operand(s.Source)
	case *ir.EqualStmt:
		in.op = opEqual
		two(s.A, s.B)
	case *ir.NotEqualStmt:
		in.op = opNotEqual
		two(s.A, s.B)
	case *ir.IsArrayStmt:
		in.op = opIsArray
		in.a, err = r.operand(s.Source)
	case *ir.IsObjectStmt:
		in.op = opIsObject
		in.a, err = r.operand(s.Source)
	case *ir.IsSetStmt:
		in.op = opIsSet
		in.a, err = r.operand(s.Source)
	case *ir.IsDefinedStmt:
		in.op, in.a = opIsDefined, operand{local: r.use(int32(s.Source))}
	case *ir.IsUndefinedStmt:
		in.op, in.a = opIsUndefined, operand{local: r.use(int32(s.Source))}
	case *ir.ArrayAppendStmt:
		in.op, in.target = opArrayAppend, r.use(int32(s.Array))
		in.a, err = r.operand(s.Value)
	case *ir.ObjectInsertStmt:
		in.op, in.target = opObjectInsert, r.use(int32(s.Object))
		two(s.Key, s.Value)
	case *ir.ObjectInsertOnceStmt:
		in.op, in.target, in.lastWins = opObjectInsertOnce, r.use(int32(s.Object)), r.lastWins[s]
		two(s.Key, s.Value)
	case *ir.SetAddStmt:
		in.op, in.target = opSetAdd, r.use(int32(s.Set))
		in.a, err = r.operand(s.Value)
	case *ir.CallStmt:
		err = r.call(&in, s)
	case *ir.BlockStmt:
		in.op = opBlock
		in.blocks, err = r.blocks(s.Blocks)
	case *ir.BreakStmt:
		in.op, in.target = opBreak, int32(s.Index)
	case *ir.ScanStmt:
		in.op, in.a, in.key, in.target = opScan, operand{local: r.use(int32(s.Source))}, r.use(int32(s.Key)), r.use(int32(s.Value))
		in.blocks, err = r.blocks([]*ir.Block{s.Block})
	case *ir.NotStmt:
		in.op = opNot
		in.blocks, err = r.blocks([]*ir.Block{s.Block})
	case *ir.ReturnLocalStmt:
		in.op, in.a = opReturn, operand{local: r.use(int32(s.Source))}
	case *ir.ResultSetAddStmt:
		in.op, in.a = opResultAdd, operand{local: r.use(int32(s.Value))}
	case *ir.NopStmt:
		in.op = opNop
	default:
		// WithStmt, CallDynamicStmt, ObjectMergeStmt and any statement added later.
		return in, fmt.Errorf("%w: %T", ErrUnsupported, s)
	}
	if loc := s.GetLocation(); loc != nil {
		in.row = loc.Row
		if in.op == opCallBuiltin {
			in.astLoc = &ast.Location{Row: loc.Row, Col: loc.Col}
		}
	}
	return in, err
}

// ext hands out an instruction's instrExt from slabs of them: a plan's instructions are made
// together and live as long as its program.
func (r *resolver) ext() *instrExt {
	if len(r.exts) == 0 {
		r.exts = make([]instrExt, 256)
	}
	e := &r.exts[0]
	r.exts = r.exts[1:]
	return e
}

// constSet recognises a literal set of constants, as the planner writes {"a", "b"}: a
// MakeSetStmt and the SetAddStmts of constant strings and booleans into it that follow. It
// returns the set, built once and shared by every run, and how many statements it replaces;
// nil when stmts does not start with one. The planner builds such a set afresh on every
// evaluation (the default policy's "input.action in {...}" guards): here it costs nothing.
// A run never changes it: a SetAddStmt that meets one adds to a copy (see opSetAdd).
func (r *resolver) constSet(stmts []ir.Stmt) (*ast.Term, int) {
	mk, ok := stmts[0].(*ir.MakeSetStmt)
	if !ok {
		return nil, 0
	}
	set := ast.NewSet()
	n := 1
	for _, s := range stmts[1:] {
		add, ok := s.(*ir.SetAddStmt)
		if !ok || add.Set != mk.Target {
			break
		}
		o, err := r.operand(add.Value)
		if err != nil || o.term == nil {
			break
		}
		set.Add(o.term)
		n++
	}
	if n == 1 {
		return nil, 0
	}
	// A set some later statement still adds to (a computed member) is not a literal.
	if addsTo(stmts[n:], ir.Local(mk.Target)) {
		return nil, 0
	}
	set.Sorted() // sort it now, once: runs read it concurrently
	t := ast.NewTerm(set)
	r.frozen[t] = true
	return t, n
}

// addsTo reports whether any of stmts, or of the blocks nested in them, adds to set.
func addsTo(stmts []ir.Stmt, set ir.Local) bool {
	for _, s := range stmts {
		var nested []*ir.Block
		switch s := s.(type) {
		case *ir.SetAddStmt:
			if s.Set == set {
				return true
			}
		case *ir.BlockStmt:
			nested = s.Blocks
		case *ir.ScanStmt:
			nested = []*ir.Block{s.Block}
		case *ir.NotStmt:
			nested = []*ir.Block{s.Block}
		case *ir.WithStmt:
			nested = []*ir.Block{s.Block}
		}
		for _, b := range nested {
			if b != nil && addsTo(b.Stmts, set) {
				return true
			}
		}
	}
	return false
}

// localOf is the local an operand names, if it names one.
func localOf(o ir.Operand) (int32, bool) {
	switch v := o.Value.(type) {
	case ir.Local:
		return int32(v), true
	case *ir.Local:
		return int32(*v), true
	}
	return 0, false
}

// dataPathDots finds the DotStmts of a function or plan that continue a reference rooted at
// data (data.a[k].b): OPA reads such a reference from its store, by a path of strings, where it
// looks a value up in a document it already holds by the key's value. It follows the
// statements in order, knowing which locals hold a document so read: data itself (ir.Data), a
// DotStmt's result on such a local, and the value a ScanStmt takes from one (data.a[_][k] is
// still one reference). What ends it for a local:
//   - any other definition (the planner reuses a local across rule bodies);
//   - a copy (v := data.a; v[k] looks up a value: AssignVarStmt starts a new local);
//   - a type or length check (IsObjectStmt, LenStmt, ...): the planner unifies a pattern with
//     the document, {k: v} = data.a, which compares values.
//
// A local defined inside a nested block is known only within it.
func dataPathDots(blocks []*ir.Block) map[*ir.DotStmt]bool {
	out := map[*ir.DotStmt]bool{}
	var walk func(b *ir.Block, held map[int32]bool)
	walk = func(b *ir.Block, outer map[int32]bool) {
		if b == nil {
			return
		}
		held := maps.Clone(outer)
		for _, s := range b.Stmts {
			switch s := s.(type) {
			case *ir.DotStmt:
				src, ok := localOf(s.Source)
				onPath := ok && held[src]
				out[s] = onPath
				setHeld(held, int32(s.Target), onPath)
			case *ir.ScanStmt:
				inner := maps.Clone(held)
				setHeld(inner, int32(s.Key), false)
				setHeld(inner, int32(s.Value), held[int32(s.Source)])
				walk(s.Block, inner)
			case *ir.IsObjectStmt:
				checked(held, s.Source)
			case *ir.IsArrayStmt:
				checked(held, s.Source)
			case *ir.IsSetStmt:
				checked(held, s.Source)
			case *ir.LenStmt:
				checked(held, s.Source)
				setHeld(held, int32(s.Target), false)
			case *ir.BlockStmt:
				for _, sub := range s.Blocks {
					walk(sub, held)
				}
			case *ir.NotStmt:
				walk(s.Block, held)
			case *ir.WithStmt:
				walk(s.Block, held)
			default:
				for defs, j := definedBy(s), 0; j < defs.n; j++ {
					t := defs.l[j]
					setHeld(held, t, false)
				}
			}
		}
	}
	for _, b := range blocks {
		walk(b, map[int32]bool{int32(ir.Data): true})
	}
	return out
}

func setHeld(held map[int32]bool, l int32, on bool) {
	if on {
		held[l] = true
	} else {
		delete(held, l)
	}
}

// checked ends the reference a local holds once the plan checks its type or length.
func checked(held map[int32]bool, o ir.Operand) {
	if l, ok := localOf(o); ok {
		delete(held, l)
	}
}

// locals are up to two locals, l[:n].
type locals struct {
	n int
	l [2]int32
}

// definedBy lists the locals a statement other than DotStmt writes.
func definedBy(s ir.Stmt) locals {
	switch s := s.(type) {
	case *ir.AssignVarStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.AssignVarOnceStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.AssignIntStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.ResetLocalStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.MakeNullStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.MakeNumberIntStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.MakeNumberRefStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.MakeArrayStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.MakeObjectStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.MakeSetStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.LenStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.CallStmt:
		return locals{n: 1, l: [2]int32{int32(s.Result)}}
	case *ir.CallDynamicStmt:
		return locals{n: 1, l: [2]int32{int32(s.Result)}}
	case *ir.ScanStmt:
		return locals{n: 2, l: [2]int32{int32(s.Key), int32(s.Value)}}
	case *ir.ArrayAppendStmt:
		return locals{n: 1, l: [2]int32{int32(s.Array)}}
	case *ir.ObjectInsertStmt:
		return locals{n: 1, l: [2]int32{int32(s.Object)}}
	case *ir.ObjectInsertOnceStmt:
		return locals{n: 1, l: [2]int32{int32(s.Object)}}
	case *ir.ObjectMergeStmt:
		return locals{n: 1, l: [2]int32{int32(s.Target)}}
	case *ir.SetAddStmt:
		return locals{n: 1, l: [2]int32{int32(s.Set)}}
	case *ir.WithStmt:
		return locals{n: 1, l: [2]int32{int32(s.Local)}}
	}
	return locals{}
}

// call resolves a CallStmt to a planned function or to OPA's implementation of a built-in.
func (r *resolver) call(in *instr, s *ir.CallStmt) error {
	in.target = r.use(int32(s.Result))
	in.args = make([]operand, len(s.Args))
	fn, planned := r.funcs[s.Func]
	if !planned && !r.builtins[s.Func] {
		return fmt.Errorf("call of %s, which the plan neither defines nor declares", s.Func)
	}
	for i, a := range s.Args {
		var err error
		// A planned function takes data as its second argument.
		r.dataRootOK = planned && i == 1
		in.args[i], err = r.operand(a)
		r.dataRootOK = false
		if err != nil {
			return err
		}
	}
	if planned {
		if len(in.args) != len(fn.params) {
			return fmt.Errorf("call of %s with %d arguments, it takes %d", s.Func, len(in.args), len(fn.params))
		}
		in.op, in.fn = opCallFunc, fn
		return nil
	}
	decl, ok := ast.BuiltinMap[s.Func]
	if !ok {
		return fmt.Errorf("%w: built-in %s has no declaration", ErrUnsupported, s.Func)
	}
	// Non-deterministic built-ins (http.send, rand.intn, ...) keep state and caches only
	// OPA's evaluator manages; time.now_ns reads the run's clock, which this package passes.
	if decl.Nondeterministic && s.Func != ast.NowNanos.Name {
		return fmt.Errorf("%w: non-deterministic built-in %s", ErrUnsupported, s.Func)
	}
	if decl.Relation {
		return fmt.Errorf("%w: built-in relation %s", ErrUnsupported, s.Func)
	}
	if decl.Decl.Result() == nil {
		return fmt.Errorf("%w: built-in %s returns nothing", ErrUnsupported, s.Func)
	}
	if args := decl.Decl.FuncArgs(); args.Variadic == nil && len(args.Args) != len(in.args) {
		return fmt.Errorf("call of %s with %d arguments, it takes %d", s.Func, len(in.args), len(args.Args))
	}
	bi := topdown.GetBuiltin(s.Func)
	if bi == nil {
		return fmt.Errorf("%w: built-in %s has no implementation", ErrUnsupported, s.Func)
	}
	in.op, in.bi, in.biName = opCallBuiltin, bi, s.Func
	// Of the built-ins the executor runs, time.now_ns alone reads the clock a run is given (the
	// others that do, io.jwt.decode_verify and http.send, are non-deterministic and refused
	// above); the rest are handed none, which spares a run the clock's term.
	in.clock = s.Func == ast.NowNanos.Name
	switch s.Func {
	case ast.ObjectGet.Name:
		in.onLazy = lazyObjectGet
	case ast.IsObject.Name:
		in.onLazy = lazyIsObject
	}
	r.maxArgs = max(r.maxArgs, len(in.args))
	return nil
}

// emptyReturn reports whether f is a partial set or object rule whose value can start as the
// shared empty set or object: f makes its return local a set or an object, and no statement
// does anything with that local but make it, add to it (a SetAddStmt, ObjectInsertStmt or
// ObjectInsertOnceStmt, which copy the shared value before its first addition, see opSetAdd
// and opObjectInsert) and return it. Such a rule, whose bodies usually all fail (a deny rule on
// an allowed call), then allocates nothing; a value that some statement copies elsewhere,
// reads or resets before the additions end keeps one of its own.
func emptyReturn(f *ir.Func) bool {
	// The planner makes such a value first thing, in a block of its own: a function that does
	// not start so is not one (and is not walked, which on every function would be a tenth of
	// an activation).
	if len(f.Blocks) == 0 || len(f.Blocks[0].Stmts) != 1 {
		return false
	}
	switch mk := f.Blocks[0].Stmts[0].(type) {
	case *ir.MakeSetStmt:
		if mk.Target != f.Return {
			return false
		}
	case *ir.MakeObjectStmt:
		if mk.Target != f.Return {
			return false
		}
	default:
		return false
	}
	sets, objects, other := 0, 0, false
	_ = ir.Walk(&stmtVisitor{f: func(s ir.Stmt) {
		switch s := s.(type) {
		case *ir.MakeSetStmt:
			if s.Target == f.Return {
				sets++
				return
			}
		case *ir.MakeObjectStmt:
			if s.Target == f.Return {
				objects++
				return
			}
		case *ir.SetAddStmt:
			if s.Set == f.Return && !mentions(s.Value, f.Return) {
				return
			}
		case *ir.ObjectInsertStmt:
			if s.Object == f.Return && !mentions(s.Key, f.Return) && !mentions(s.Value, f.Return) {
				return
			}
		case *ir.ObjectInsertOnceStmt:
			if s.Object == f.Return && !mentions(s.Key, f.Return) && !mentions(s.Value, f.Return) {
				return
			}
		case *ir.ReturnLocalStmt:
			if s.Source == f.Return {
				return
			}
		}
		other = other || mentions(s, f.Return)
	}}, f)
	return (sets > 0) != (objects > 0) && !other
}

// stmtVisitor calls f on every statement, at any depth.
type stmtVisitor struct{ f func(ir.Stmt) }

func (v *stmtVisitor) Before(any) {}
func (v *stmtVisitor) After(any)  {}
func (v *stmtVisitor) Visit(x any) (ir.Visitor, error) {
	if s, ok := x.(ir.Stmt); ok {
		v.f(s)
	}
	return v, nil
}

// mentions reports whether x, a statement or an operand, names local l in any of its fields
// (not in the blocks nested in it, which the walk visits on their own).
func mentions(x any, l ir.Local) bool {
	return mentionsValue(reflect.ValueOf(x), l)
}

var (
	localType    = reflect.TypeFor[ir.Local]()
	blockType    = reflect.TypeFor[*ir.Block]()
	locationType = reflect.TypeFor[ir.Location]()
)

func mentionsValue(v reflect.Value, l ir.Local) bool {
	switch {
	case !v.IsValid():
		return false
	case v.Type() == localType:
		return ir.Local(v.Int()) == l
	case v.Type() == blockType, v.Type() == locationType:
		// Nested blocks are walked on their own; a location (with its source text, a byte
		// slice that would be looked through byte by byte) holds no local.
		return false
	}
	switch v.Kind() {
	case reflect.Pointer, reflect.Interface:
		return !v.IsNil() && mentionsValue(v.Elem(), l)
	case reflect.Struct:
		for i := range v.NumField() {
			if mentionsValue(v.Field(i), l) {
				return true
			}
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			if mentionsValue(v.Index(i), l) {
				return true
			}
		}
	}
	return false
}
