package irexec

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/topdown"
	"github.com/open-policy-agent/opa/v1/topdown/builtins"
	"github.com/open-policy-agent/opa/v1/util"
)

// Options are what a run needs besides its input and data.
type Options struct {
	// Time is the clock time.now_ns reads; the zero Time means now.
	Time time.Time
	// Cancel, when set, stops the run with ErrCancelled once cancelled.
	Cancel topdown.Cancel
}

// ErrCancelled is returned by a run stopped through Options.Cancel.
var ErrCancelled = errors.New("evaluation cancelled")

// errConflict is wrapped by the error of a run in which a rule produced two different values
// (a complete rule, a function or an object key defined twice): OPA's evaluator fails such an
// evaluation too.
var errConflict = errors.New("conflicting values")

// Eval runs the plan name (an entry point, such as "mcp/decision") on input and data and
// returns the entry point's value: nil when it is undefined. Any failing built-in fails the
// run, as OPA's evaluator does with strict built-in errors.
func (p *Program) Eval(ctx context.Context, name string, input, data *ast.Term, opts Options) (out *ast.Term, err error) {
	// A panic (in a built-in, say) fails the run, so the caller denies, instead of taking down
	// the process.
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("plan %q panicked: %v\n%s", name, r, debug.Stack())
		}
	}()
	pl, ok := p.plans[name]
	if !ok {
		return nil, fmt.Errorf("no plan %q", name)
	}
	m := p.machine()
	defer p.release(m)
	m.ctx, m.cancel, m.frozen, m.dataRoot = ctx, opts.Cancel, p.frozen, data
	at := opts.Time
	if at.IsZero() {
		at = time.Now()
	}
	m.at = at
	m.sp = pl.frame
	frame := m.stack[:pl.frame]
	frame[0], frame[1] = input, data
	m.input = input
	for _, b := range pl.blocks {
		if st := m.block(b, frame); st == stReturned { // an error also ends the run this way
			break
		}
	}
	if m.err != nil {
		return nil, m.err
	}
	switch len(m.results) + len(m.values) {
	case 0:
		return nil, nil
	case 1:
		if len(m.values) == 1 {
			return m.values[0], nil
		}
		if obj, ok := m.results[0].Value.(ast.Object); ok {
			return obj.Get(resultKey), nil
		}
		return nil, fmt.Errorf("plan result is %s, not an object", ast.ValueName(m.results[0].Value))
	}
	return nil, fmt.Errorf("plan %q produced %d results", name, len(m.results)+len(m.values))
}

var (
	resultKey = ast.StringTerm("result")
	systemKey = ast.StringTerm("system")
)

// machine is the state of one run; runs reuse machines through Program's pool.
type machine struct {
	ctx     context.Context
	cancel  topdown.Cancel
	at      time.Time
	timeT   *ast.Term
	cache   builtins.Cache
	stack   []*ast.Term
	sp      int
	memo    []*ast.Term
	memoSet []bool
	args    []*ast.Term
	results []*ast.Term
	// values are the entry point's values a run added itself (opResultValue), each standing
	// for a result {"result": value}.
	values []*ast.Term
	frozen map[*ast.Term]bool // Program.frozen
	// input is the run's input; tree, nodeVals and nodeState are the values found at the
	// program's key paths in it (see machine.nodeValue).
	input     *ast.Term
	tree      *pathTree
	nodeVals  []*ast.Term
	nodeState []uint8
	// dataRoot is the run's data document.
	dataRoot *ast.Term
	err      error
	ret      *ast.Term // the value of the return statement that ended a function
	// out is the built-in result handed to collect.
	out     *ast.Term
	collect func(*ast.Term) error
}

func (p *Program) machine() *machine {
	need := p.stack
	m, _ := p.machines.Get().(*machine)
	if m == nil {
		m = &machine{cache: builtins.Cache{}}
		m.collect = func(t *ast.Term) error {
			if m.out != nil {
				return fmt.Errorf("%w: built-in gave more than one result", ErrUnsupported)
			}
			m.out = t
			return nil
		}
	}
	if cap(m.stack) < need {
		m.stack = make([]*ast.Term, need)
	}
	m.stack = m.stack[:need]
	if cap(m.memo) < p.funcs {
		m.memo, m.memoSet = make([]*ast.Term, p.funcs), make([]bool, p.funcs)
	}
	m.memo, m.memoSet = m.memo[:p.funcs], m.memoSet[:p.funcs]
	if n := len(p.tree.parent); cap(m.nodeVals) < n {
		m.nodeVals, m.nodeState = make([]*ast.Term, n), make([]uint8, n)
	}
	m.tree = p.tree
	m.nodeVals, m.nodeState = m.nodeVals[:len(p.tree.parent)], m.nodeState[:len(p.tree.parent)]
	if cap(m.args) < p.maxArgs {
		m.args = make([]*ast.Term, p.maxArgs)
	}
	return m
}

func (p *Program) release(m *machine) {
	clear(m.stack)
	clear(m.memo)
	clear(m.memoSet)
	clear(m.nodeVals)
	clear(m.nodeState)
	m.input = nil
	clear(m.results)
	m.results = m.results[:0]
	clear(m.values)
	m.values = m.values[:0]
	clear(m.cache) // built-ins' per-run state; the map itself serves the next run
	m.ctx, m.cancel, m.timeT, m.err, m.out, m.ret, m.frozen, m.dataRoot = nil, nil, nil, nil, nil, nil, nil, nil
	p.machines.Put(m)
}

// Block statuses. A block that breaks out of enclosing blocks returns how many more it
// leaves (0 and up); the other outcomes are negative.
const (
	stDone      = -1 // every statement ran
	stUndefined = -2 // a statement was undefined (or a break left just this block)
	stReturned  = -3 // a return statement ended the function
)

// block runs b over the locals of frame.
func (m *machine) block(b block, frame []*ast.Term) int {
	for i := range b {
		in := &b[i]
		switch in.op {
		case opAssignVar:
			frame[in.target] = m.raw(in.a, frame)
		case opAssignVarOnce:
			v := m.get(in.a, frame)
			if cur := Whole(frame[in.target]); cur != nil && v != nil {
				if !cur.Equal(v) {
					m.fail(in, fmt.Errorf("%w: complete rules must not produce multiple outputs", errConflict))
					return stReturned
				}
				continue // the first of equal values stays, as in topdown (1 before 1.0)
			}
			frame[in.target] = v
		case opConst:
			frame[in.target] = in.term
		case opResetLocal:
			frame[in.target] = nil
		case opMakeNull:
			frame[in.target] = ast.InternedNullTerm
		case opMakeArray:
			frame[in.target] = ast.NewTerm(ast.NewArrayWithCapacity(in.n))
		case opMakeObject:
			frame[in.target] = ast.NewTerm(ast.NewObject())
		case opMakeObjectItems:
			var buf [maxObjectItems][2]*ast.Term
			items := buf[:len(in.keys)]
			for i, k := range in.keys {
				v := m.get(in.args[i], frame)
				if v == nil {
					m.fail(in, errors.New("insert into a non-object"))
					return stReturned
				}
				items[i] = [2]*ast.Term{k, v}
			}
			frame[in.target] = ast.NewTerm(ast.NewObject(items...))
		case opMakeSet:
			frame[in.target] = ast.NewTerm(ast.NewSet())
		case opDot:
			src, key := m.raw(in.a, frame), m.get(in.b, frame)
			var v *ast.Term
			if in.dataPath {
				v = dataDot(src, key)
			} else {
				v = dot(src, key)
			}
			if v == nil {
				return stUndefined
			}
			frame[in.target] = v
		case opLen:
			n, ok := length(m.get(in.a, frame))
			if !ok {
				return stUndefined
			}
			frame[in.target] = ast.InternedTerm(n)
		case opEqual, opNotEqual:
			a, b := m.get(in.a, frame), m.get(in.b, frame)
			if a == nil || b == nil || (a.Value.Compare(b.Value) == 0) != (in.op == opEqual) {
				return stUndefined
			}
		case opIsArray, opIsObject, opIsSet:
			if !isKind(in.op, m.get(in.a, frame)) {
				return stUndefined
			}
		case opIsDefined:
			if frame[in.a.local] == nil {
				return stUndefined
			}
		case opIsUndefined:
			if frame[in.a.local] != nil {
				return stUndefined
			}
		case opArrayAppend:
			arr, ok := termValue[*ast.Array](frame[in.target])
			v := m.get(in.a, frame)
			if !ok || v == nil {
				m.fail(in, errors.New("append to a non-array"))
				return stReturned
			}
			frame[in.target] = ast.NewTerm(arr.Append(v))
		case opObjectInsert, opObjectInsertOnce:
			obj, ok := termValue[ast.Object](frame[in.target])
			k, v := m.get(in.a, frame), m.get(in.b, frame)
			if !ok || k == nil || v == nil {
				m.fail(in, errors.New("insert into a non-object"))
				return stReturned
			}
			if m.frozen[frame[in.target]] {
				// The shared empty object a rule starts with: insert into a copy of it.
				obj = obj.Copy()
				frame[in.target] = ast.NewTerm(obj)
			}
			if in.op == opObjectInsertOnce {
				if cur := obj.Get(k); cur != nil {
					if !cur.Equal(v) {
						m.fail(in, fmt.Errorf("%w: object keys must be unique", errConflict))
						return stReturned
					}
					if !in.lastWins {
						continue
					}
				}
			}
			obj.Insert(k, v)
		case opSetAdd:
			set, ok := termValue[ast.Set](frame[in.target])
			v := m.get(in.a, frame)
			if !ok || v == nil {
				m.fail(in, errors.New("add to a non-set"))
				return stReturned
			}
			if m.frozen[frame[in.target]] {
				// A literal set built once at New: add to a copy of it.
				set = set.Copy()
				frame[in.target] = ast.NewTerm(set)
			}
			set.Add(v)
		case opCallFunc, opCallBuiltin:
			var v *ast.Term
			if in.op == opCallFunc {
				v = m.callFunc(in, frame)
			} else {
				v = m.callBuiltin(in, frame)
			}
			if m.err != nil {
				return stReturned
			}
			if v == nil {
				return stUndefined
			}
			frame[in.target] = v
		case opBlock:
			for _, sub := range in.blocks {
				if st := m.block(sub, frame); st == stReturned {
					return st
				} else if st > 0 {
					return leave(st)
				}
			}
		case opBreak:
			if in.target == 0 {
				return stUndefined
			}
			return int(in.target)
		case opScan:
			if st := m.scan(in, frame); st != stDone {
				return st
			}
		case opNot:
			switch st := m.block(in.blocks[0], frame); {
			case st == stReturned:
				return st
			case st > 0:
				return leave(st)
			case st == stDone:
				return stUndefined
			}
		case opReturn:
			m.ret = Whole(frame[in.a.local])
			return stReturned
		case opResultValue:
			v := m.get(in.a, frame)
			if v == nil {
				m.fail(in, errors.New("insert into a non-object"))
				return stReturned
			}
			m.values = append(m.values, v)
		case opResultAdd:
			if v := Whole(frame[in.a.local]); v != nil {
				m.results = append(m.results, v)
			}
		case opNop:
		}
	}
	return stDone
}

// leave is the status of a block left by a break that still has st blocks to leave: this
// one is the next of them.
func leave(st int) int {
	if st == 1 {
		return stUndefined
	}
	return st - 1
}

func (m *machine) scan(in *instr, frame []*ast.Term) int {
	body := in.blocks[0]
	step := func(k, v *ast.Term) int {
		if m.cancel != nil && m.cancel.Cancelled() {
			m.err = ErrCancelled
			return stReturned
		}
		frame[in.key], frame[in.target] = k, v
		switch st := m.block(body, frame); {
		case st == stReturned:
			return st
		case st > 0:
			return leave(st)
		}
		return stDone
	}
	switch src := termOf(Whole(frame[in.a.local])).(type) {
	case *ast.Array:
		for i := range src.Len() {
			if st := step(ast.InternedTerm(i), src.Elem(i)); st != stDone {
				return st
			}
		}
	case ast.Object:
		root := frame[in.a.local] == m.dataRoot
		for _, k := range src.Keys() {
			if root && k.Value.Compare(systemKey.Value) == 0 {
				continue // OPA's store hides data.system from a read of the whole of data
			}
			if st := step(k, src.Get(k)); st != stDone {
				return st
			}
		}
	case ast.Set:
		for _, e := range src.Slice() {
			if st := step(e, e); st != stDone {
				return st
			}
		}
	}
	return stDone
}

// callFunc calls a planned function; nil is undefined.
func (m *machine) callFunc(in *instr, frame []*ast.Term) *ast.Term {
	fn := in.fn
	if fn.memo && m.memoSet[fn.index] {
		return m.memo[fn.index]
	}
	if m.cancel != nil && m.cancel.Cancelled() {
		m.err = ErrCancelled
		return nil
	}
	var key []*ast.Term
	var hash int
	var keyBuf [maxKeyPaths]*ast.Term
	c := fn.cache
	if c != nil && c.off.Load() {
		c = nil
	}
	if c != nil {
		// A key is read from the run's input; a call given another (none the planner writes)
		// is evaluated.
		var ok bool
		if m.raw(in.args[0], frame) == m.input {
			key, hash, ok = c.keyOf(m, keyBuf[:])
		}
		if !ok {
			c = nil
		}
	}
	if c != nil {
		if out, ok := c.get(m.get(in.args[1], frame), key, hash); ok {
			c.counted(true)
			m.memo[fn.index], m.memoSet[fn.index] = out, true
			return out
		}
	}
	base := m.sp
	callee := m.stack[base : base+fn.frame]
	for i, a := range in.args {
		callee[fn.params[i]] = m.raw(a, frame)
	}
	m.sp += fn.frame
	var out *ast.Term
	for _, b := range fn.blocks {
		if st := m.block(b, callee); st == stReturned {
			out, m.ret = m.ret, nil
			break
		}
	}
	m.sp = base
	clear(callee)
	if m.err != nil {
		m.err = fmt.Errorf("%s: %w", fn.name, m.err)
		return nil
	}
	if fn.memo {
		m.memo[fn.index], m.memoSet[fn.index] = out, true
	}
	if c != nil {
		c.put(m.get(in.args[1], frame), key, hash, out)
		c.counted(false)
	}
	return out
}

// callBuiltin calls OPA's implementation of a built-in; nil is undefined.
func (m *machine) callBuiltin(in *instr, frame []*ast.Term) *ast.Term {
	if in.onLazy != lazyNone {
		if t := m.raw(in.args[0], frame); t != nil {
			if _, ok := t.Value.(*Lazy); ok {
				return m.builtinOnLazy(in, t, frame)
			}
		}
	}
	args := m.args[:len(in.args)]
	for i, a := range in.args {
		if args[i] = m.get(a, frame); args[i] == nil {
			return nil
		}
	}
	bctx := topdown.BuiltinContext{Context: m.ctx, Cancel: m.cancel, Cache: m.cache, Location: in.astLoc}
	if in.clock {
		if m.timeT == nil {
			m.timeT = ast.NumberTerm(jsonInt(m.at.UnixNano()))
		}
		bctx.Time = m.timeT
	}
	m.out = nil
	err := in.bi(bctx, args, m.collect)
	clear(args)
	if err != nil {
		var halt topdown.Halt
		if errors.As(err, &halt) {
			err = halt.Err
		}
		m.fail(in, fmt.Errorf("%s: %w", in.biName, err))
		return nil
	}
	return m.out
}

func (m *machine) fail(in *instr, err error) {
	if m.err == nil {
		m.err = fmt.Errorf("row %d: %w", in.row, err)
	}
}

// get reads an operand, a Lazy as the whole object it stands for; nil is undefined.
func (m *machine) get(o operand, frame []*ast.Term) *ast.Term {
	if o.term != nil {
		return o.term
	}
	return Whole(frame[o.local])
}

// raw reads an operand as it is, a Lazy too: for the statements that only look members up
// (DotStmt's source) or move the value to another local (AssignVarStmt, a function's
// arguments), which take a Lazy as it is (see Lazy).
func (m *machine) raw(o operand, frame []*ast.Term) *ast.Term {
	if o.term != nil {
		return o.term
	}
	return frame[o.local]
}

// dot looks key up in src: an object's value, an array's element, a set's member; nil when
// there is none or src is not a collection.
func dot(src, key *ast.Term) *ast.Term {
	if src == nil || key == nil {
		return nil
	}
	switch v := src.Value.(type) {
	case ast.Object:
		return v.Get(key)
	case *Lazy:
		return v.member(key)
	case *ast.Array:
		n, ok := key.Value.(ast.Number)
		if !ok {
			return nil
		}
		i, ok := n.Int()
		if !ok || i < 0 || i >= v.Len() {
			return nil
		}
		return v.Elem(i)
	case ast.Set:
		if v.Contains(key) {
			return key
		}
	}
	return nil
}

// dataDot looks key up in src as OPA's store does for a reference rooted at data: by a path of
// strings, so a number key finds an object's key of its digits ("1") and a string of digits
// indexes an array. Any other key finds nothing.
func dataDot(src, key *ast.Term) *ast.Term {
	if src == nil || key == nil {
		return nil
	}
	var path string
	switch k := key.Value.(type) {
	case ast.String:
		path = string(k)
	case ast.Number:
		path = k.String()
	default:
		return nil
	}
	switch v := src.Value.(type) {
	case ast.Object:
		if _, ok := key.Value.(ast.String); ok {
			return v.Get(key)
		}
		return v.Get(ast.StringTerm(path))
	case *ast.Array:
		i, ok := util.Atoi(path)
		if !ok || i < 0 || i >= v.Len() {
			return nil
		}
		return v.Elem(i)
	}
	return nil
}

func length(t *ast.Term) (int, bool) {
	if t == nil {
		return 0, false
	}
	switch v := t.Value.(type) {
	case *ast.Array:
		return v.Len(), true
	case ast.Object:
		return v.Len(), true
	case ast.Set:
		return v.Len(), true
	case ast.String:
		return len([]rune(string(v))), true
	}
	return 0, false
}

func isKind(op opcode, t *ast.Term) bool {
	if t == nil {
		return false
	}
	switch t.Value.(type) {
	case *ast.Array:
		return op == opIsArray
	case ast.Object:
		return op == opIsObject
	case ast.Set:
		return op == opIsSet
	}
	return false
}

func termOf(t *ast.Term) ast.Value {
	if t == nil {
		return nil
	}
	return t.Value
}

func termValue[T ast.Value](t *ast.Term) (T, bool) {
	var zero T
	if t == nil {
		return zero, false
	}
	v, ok := t.Value.(T)
	return v, ok
}

func jsonInt(n int64) json.Number { return json.Number(strconv.FormatInt(n, 10)) }
