package irexec

import (
	"hash/maphash"
	"slices"
	"strconv"
	"sync/atomic"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"
)

// Results across runs.
//
// A rule's value depends on the data document and on the parts of the input it reads. Most of a
// decision is rules of the request's parties (the server, the tool, the credential) whose
// values repeat from one request to the next; only a few read what changes on every call (the
// session's counts). A program keeps, for each rule that is worth it, its recent values keyed
// by the data and by the values of the input paths the rule can read (inputPaths, an analysis
// of the plan), and a run that finds its rule's key there takes the value instead of
// evaluating the rule. A rule whose key keeps missing (it reads a part of the input that
// changes on every request) stops being looked up.
//
// Only rules (functions of input and data) that call no built-in depending on anything but its
// arguments (time.now_ns is the one the executor runs) are kept, and only those that run a
// good many statements: for a small rule, making the key costs more than the rule.

// fnCache holds a function's recent values, in a table of maxCached slots indexed by the key's
// hash: a run reads and writes a slot without a lock, and a key whose slot another key took is
// evaluated again.
type fnCache struct {
	// nodes are the input paths the function can read, each whole, as nodes of the program's
	// pathTree: the key is their values (nil when undefined), with the data document.
	// definedNodes are the paths whose being defined is in the key (as true or false).
	nodes, definedNodes []int
	// slots is made at the first value kept: a revision's rules that never run cost nothing.
	slots atomic.Pointer[[maxCached]atomic.Pointer[cached]]
	// data is the data document of the values kept.
	data atomic.Pointer[ast.Term]
	// lookups and hits count this cache's use while it is on trial; off once it failed it.
	lookups, hits atomic.Int64
	off           atomic.Bool
}

type cached struct {
	data *ast.Term
	key  []*ast.Term
	hash int
	out  *ast.Term
}

const (
	// maxCached is how many values one function keeps at most.
	maxCached = 1024
	// cacheTrial is how many lookups a cache gets to show it hits at least cacheMinHits of the
	// time; below that it is switched off for good (for this program).
	cacheTrial   = 512
	cacheMinHits = 0.5
)

// minCachedSize is how many statements a function must run at least (its own and its callees',
// counted once each) for its values to be kept. (A variable: tests keep every value.)
var minCachedSize = 40

// isObject reports whether the input is an object: a key reads paths of one, and object.get
// fails on anything else.
func isObject(t *ast.Term) bool {
	if t == nil {
		return false
	}
	switch t.Value.(type) {
	case ast.Object, *Lazy:
		return true
	}
	return false
}

// keySeed seeds keyHash.
var keySeed = maphash.MakeSeed()

// keyHash hashes a key value as identical tells them apart: a string or number by its text,
// anything else but null and booleans by its address.
func keyHash(t *ast.Term) int {
	if t == nil {
		return 0x9e3779b9
	}
	switch v := t.Value.(type) {
	case ast.String:
		return int(maphash.String(keySeed, string(v)))
	case ast.Number:
		return int(maphash.String(keySeed, string(v))) ^ 1
	case ast.Boolean:
		if v {
			return 3
		}
		return 5
	case ast.Null:
		return 7
	}
	return int(uintptr(unsafe.Pointer(t)))
}

// keyOf gathers into buf the key of a call given the run's own input: the values at the
// function's paths (found once per run, nodeValue) and whether its defined paths are. It is not
// ok where a path runs through a set, which DotStmts and object.get read differently, or for
// an input that is not an object: the function is then evaluated.
func (c *fnCache) keyOf(m *machine, buf []*ast.Term) (key []*ast.Term, hash int, ok bool) {
	key = buf[:0]
	if !isObject(m.input) {
		return nil, 0, false
	}
	for _, n := range c.nodes {
		t, ok := m.nodeValue(n)
		if !ok {
			return nil, 0, false
		}
		key = append(key, t)
		hash = hash*31 + keyHash(t)
	}
	for _, n := range c.definedNodes {
		t, ok := m.nodeValue(n)
		if !ok {
			return nil, 0, false
		}
		d := ast.InternedTerm(t != nil)
		key = append(key, d)
		hash = hash*31 + keyHash(d)
	}
	return key, hash, true
}

// nodeValue is the value at node n of the program's path tree in the run's input, read as the
// plan's DotStmts read it; not ok when the path runs through a set.
func (m *machine) nodeValue(n int) (*ast.Term, bool) {
	switch m.nodeState[n] {
	case nodeFound:
		return m.nodeVals[n], true
	case nodeThroughSet:
		return nil, false
	}
	parent := m.input
	if p := m.tree.parent[n]; p >= 0 {
		var ok bool
		if parent, ok = m.nodeValue(p); !ok {
			m.nodeState[n] = nodeThroughSet
			return nil, false
		}
	}
	if parent != nil {
		if _, isSet := parent.Value.(ast.Set); isSet {
			m.nodeState[n] = nodeThroughSet
			return nil, false
		}
	}
	t := dot(parent, m.tree.key[n])
	m.nodeVals[n], m.nodeState[n] = t, nodeFound
	return t, true
}

const (
	nodeUnknown uint8 = iota
	nodeFound
	nodeThroughSet
)

// get returns the value kept for key and data.
func (c *fnCache) get(data *ast.Term, key []*ast.Term, hash int) (*ast.Term, bool) {
	slots := c.slots.Load()
	if slots == nil {
		return nil, false
	}
	e := slots[uint(hash)%maxCached].Load()
	if e != nil && e.hash == hash && e.data == data && sameKey(e.key, key) {
		return e.out, true
	}
	return nil, false
}

func sameKey(a, b []*ast.Term) bool {
	for i := range a {
		if !identical(a[i], b[i]) {
			return false
		}
	}
	return true
}

// identical reports whether a and b are the same value written the same way (nil: undefined).
// Equal values can differ in what a rule makes of them: 1 and 1.0 are equal, yet sprintf("%d")
// and json.marshal tell them apart, so a key holding one does not stand for the other. An
// array, object or set is identical only to itself: comparing two of them deeply would cost
// about what the rule does, while the input parts that repeat from request to request (a
// server, a credential, tool annotations) are one term the engine shares between requests.
func identical(a, b *ast.Term) bool {
	if a == b {
		return true
	}
	if a == nil || b == nil {
		return false
	}
	switch x := a.Value.(type) {
	case ast.Number:
		y, ok := b.Value.(ast.Number)
		return ok && x == y
	case ast.String:
		y, ok := b.Value.(ast.String)
		return ok && x == y
	case ast.Boolean:
		y, ok := b.Value.(ast.Boolean)
		return ok && x == y
	case ast.Null:
		_, ok := b.Value.(ast.Null)
		return ok
	}
	return false
}

// maxKeyBytes bounds the size of the values a kept key holds (strings' bytes, and a few
// bytes for every other value): a key holds on to its values, so a function reading a large
// part of the input (tool arguments, say) keeps none of its values rather than a thousand
// requests' worth of input.
const maxKeyBytes = 4 << 10

// put keeps out as the value for key and data, unless the key is too large to keep.
func (c *fnCache) put(data *ast.Term, key []*ast.Term, hash int, out *ast.Term) {
	if c.off.Load() {
		return
	}
	budget := maxKeyBytes
	for _, t := range key {
		if budget = within(t, budget); budget < 0 {
			return
		}
	}
	// Values of one data document at a time: a new revision's data starts the table over, so
	// the old document is not kept alive by values no key will find again.
	if prev := c.data.Swap(data); prev != data {
		c.slots.Store(new([maxCached]atomic.Pointer[cached]))
	}
	slots := c.slots.Load()
	if slots == nil {
		c.slots.CompareAndSwap(nil, new([maxCached]atomic.Pointer[cached]))
		slots = c.slots.Load()
	}
	slots[uint(hash)%maxCached].Store(&cached{data: data, key: append([]*ast.Term(nil), key...), hash: hash, out: out})
}

// within is what is left of budget after t's size (see maxKeyBytes); negative once spent.
func within(t *ast.Term, budget int) int {
	if t == nil {
		return budget
	}
	budget -= 8
	if budget < 0 {
		return budget
	}
	switch v := t.Value.(type) {
	case ast.String:
		budget -= len(v)
	case ast.Number:
		budget -= len(v)
	case *ast.Array:
		for i := 0; i < v.Len() && budget >= 0; i++ {
			budget = within(v.Elem(i), budget)
		}
	case ast.Object:
		v.Until(func(k, x *ast.Term) bool {
			budget = within(x, within(k, budget))
			return budget < 0
		})
	case ast.Set:
		v.Until(func(x *ast.Term) bool {
			budget = within(x, budget)
			return budget < 0
		})
	case *Lazy:
		// Charged as the object it stands for, without making it.
		if w := v.whole.Load(); w != nil {
			return within(w, budget+8)
		}
		for _, it := range v.src.Members() {
			if budget = within(it[1], within(it[0], budget)); budget < 0 {
				break
			}
		}
	}
	return budget
}

// counted records a lookup on trial and reports whether the cache is still on.
func (c *fnCache) counted(hit bool) {
	if c.lookups.Load() >= cacheTrial {
		return // the trial is over
	}
	n := c.lookups.Add(1)
	if hit {
		c.hits.Add(1)
	}
	if n == cacheTrial && float64(c.hits.Load()) < cacheMinHits*cacheTrial {
		c.off.Store(true)
		c.slots.Store(nil)
	}
}

// reads is what the analysis found of a function: the input paths it can read (each whole),
// whether it can read the whole input or anything the analysis does not follow (whole), whether
// its value depends on more than input and data (impure), and how many statements it and its
// callees hold.
type reads struct {
	paths [][]string
	// defined are the paths whose being defined, not their value, the function can read: a
	// DotStmt that fails ends its block, whether or not its value is used.
	defined [][]string
	whole   bool
	impure  bool
	size    int
	done    bool
}

// inputPaths analyses the functions of p (see reads).
type inputPaths struct {
	funcs   map[string]*ir.Func
	strings []string
	out     map[string]*reads
}

func (a *inputPaths) of(name string) *reads {
	if r, ok := a.out[name]; ok {
		if !r.done {
			// A call cycle: the planner plans none, but never trust a plan with a loop.
			return &reads{whole: true, impure: true}
		}
		return r
	}
	r := &reads{}
	a.out[name] = r
	f := a.funcs[name]
	if f == nil || len(f.Params) < 2 {
		r.whole, r.impure, r.done = true, true, true
		return r
	}
	w := &walker{a: a, r: r, callees: map[string]bool{}, arrays: map[ir.Local][]string{}}
	w.blocks(f.Blocks, state{{f.Params[0], [][]string{nil}}})
	r.paths = withoutExtensions(r.paths)
	r.defined = slices.DeleteFunc(r.defined, func(d []string) bool {
		// The value at a path read whole tells whether any path under it is defined.
		return slices.ContainsFunc(r.paths, func(q []string) bool { return len(q) <= len(d) && slices.Equal(q, d[:len(q)]) })
	})
	r.done = true
	return r
}

// withoutExtensions drops the paths that extend another of paths: the value at a path read
// whole determines the values under it.
func withoutExtensions(paths [][]string) [][]string {
	var out [][]string
	for _, p := range paths {
		extends := false
		for _, q := range paths {
			if len(q) < len(p) && slices.Equal(q, p[:len(q)]) {
				extends = true
				break
			}
		}
		if !extends {
			out = append(out, p)
		}
	}
	return out
}

type walker struct {
	a       *inputPaths
	r       *reads
	callees map[string]bool
	st      state    // at the statement being walked
	joins   []*state // of the blocks being walked, innermost last (see blocks)
	// arrays are the locals of the block being walked that hold an array of constant strings
	// made in it (a MakeArrayStmt and ArrayAppendStmts), as the planner writes the path of
	// object.get(input, ["session", "labels"], []). Only one block's: any nested statement
	// forgets them.
	arrays map[ir.Local][]string
}

// state is which input paths each local can hold at a point of a function. The walk follows
// the statements in order: a statement that sets a local replaces what it held, and where
// control can come from several points (after a block, which any statement can leave; around
// a loop) the states of all of them are joined. Few locals hold input paths at once: a list.
type state []held

type held struct {
	l     ir.Local
	paths [][]string
}

func (st state) get(l ir.Local) [][]string {
	for _, h := range st {
		if h.l == l {
			return h.paths
		}
	}
	return nil
}

func (st *state) put(l ir.Local, paths [][]string) {
	for i := range *st {
		if (*st)[i].l == l {
			(*st)[i].paths = paths
			return
		}
	}
	*st = append(*st, held{l, paths})
}

func (st *state) del(l ir.Local) {
	for i := range *st {
		if (*st)[i].l == l {
			*st = slices.Delete(*st, i, i+1)
			return
		}
	}
}

func (st state) clone() state { return slices.Clone(st) }

func hasPath(paths [][]string, p []string) bool {
	return slices.ContainsFunc(paths, func(q []string) bool { return slices.Equal(p, q) })
}

// join adds to st what l can hold, and reports whether st changed.
func (st *state) join(l ir.Local, paths [][]string) bool {
	changed := false
	cur := st.get(l)
	for _, p := range paths {
		if !hasPath(cur, p) {
			cur = append(slices.Clip(cur), p)
			changed = true
		}
	}
	if changed {
		st.put(l, cur)
	}
	return changed
}

// joinAll adds to st what o holds, and reports whether st changed.
func (st *state) joinAll(o state) bool {
	changed := false
	for _, h := range o {
		changed = st.join(h.l, h.paths) || changed
	}
	return changed
}

// blocks walks blocks that run one after the other (each from where the one before it could be
// left) from st, and returns the join of every state met: where the statement holding them can
// be left from.
func (w *walker) blocks(bs []*ir.Block, st state) state {
	all := st.clone()
	for _, b := range bs {
		if b == nil {
			continue
		}
		// The states met in a block are its entry state changed by what its statements set:
		// their join is the entry state joined with every setting made (set).
		left := st.clone()
		w.joins = append(w.joins, &left)
		w.st = st.clone()
		clear(w.arrays)
		for _, s := range b.Stmts {
			w.stmt(s)
		}
		clear(w.arrays)
		w.joins = w.joins[:len(w.joins)-1]
		all.joinAll(left)
		st = left
	}
	return all
}

// set records that l holds paths from here on.
func (w *walker) set(l ir.Local, paths [][]string) {
	w.st.put(l, paths)
	for _, j := range w.joins {
		j.join(l, paths)
	}
}

// read records that o is used as a value: every input path it can hold is read whole.
func (w *walker) read(o ir.Operand) {
	if l, ok := localOf(o); ok {
		w.readLocal(ir.Local(l))
	}
}

// stringOf reads an operand as a string constant (plans decoded from JSON hold pointers).
func stringOf(o ir.Operand) (ir.StringIndex, bool) {
	switch v := o.Value.(type) {
	case ir.StringIndex:
		return v, true
	case *ir.StringIndex:
		return *v, true
	}
	return 0, false
}

func (w *walker) readLocal(l ir.Local) {
	for _, p := range w.st.get(l) {
		if len(p) == 0 {
			w.r.whole = true
			continue
		}
		w.readPath(p)
	}
}

// readDefined records that whether l is defined is read: the input itself always is when a
// value is kept (fnCache.keyOf); for a path under it, the key holds whether it is defined.
func (w *walker) readDefined(l ir.Local) {
	for _, p := range w.st.get(l) {
		if len(p) > 0 {
			w.readDefinedPath(p)
		}
	}
}

func (w *walker) readDefinedPath(p []string) {
	if !hasPath(w.r.defined, p) {
		w.r.defined = append(w.r.defined, p)
	}
}

func (w *walker) readPath(p []string) {
	if !hasPath(w.r.paths, p) {
		w.r.paths = append(w.r.paths, p)
	}
}

// nested walks the blocks of a statement from the current state and leaves the join of the
// states they can be left from; a loop's body (loop) is walked until no state it starts from is
// new.
func (w *walker) nested(bs []*ir.Block, loop bool) {
	before := w.st
	if !loop {
		after := w.blocks(bs, before)
		after.joinAll(before)
		w.st = after
		return
	}
	entry := before.clone()
	for range 16 {
		left := w.blocks(bs, entry.clone())
		if !entry.joinAll(left) {
			break
		}
	}
	w.st = entry
}

func (w *walker) stmt(s ir.Stmt) {
	w.r.size++
	switch s := s.(type) {
	case *ir.DotStmt:
		l, isLocal := localOf(s.Source)
		src := ir.Local(l)
		key, isConst := stringOf(s.Key)
		if isLocal && isConst && int(key) < len(w.a.strings) && len(w.st.get(src)) > 0 {
			name := w.a.strings[key]
			var held [][]string
			for _, p := range w.st.get(src) {
				q := append(slices.Clip(p), name)
				held = append(held, q)
				w.readDefinedPath(q)
			}
			w.set(s.Target, held)
			delete(w.arrays, s.Target)
			return
		}
		w.read(s.Source)
		w.read(s.Key)
		w.st.del(s.Target)
		return
	case *ir.AssignVarStmt:
		// A copy: the target holds what the source holds.
		delete(w.arrays, s.Target)
		if l, ok := localOf(s.Source); ok && len(w.st.get(ir.Local(l))) > 0 {
			w.set(s.Target, w.st.get(ir.Local(l)))
		} else {
			w.st.del(s.Target)
		}
		return
	case *ir.AssignVarOnceStmt:
		w.read(s.Source)
	case *ir.LenStmt:
		w.read(s.Source)
	case *ir.EqualStmt:
		w.read(s.A)
		w.read(s.B)
	case *ir.NotEqualStmt:
		w.read(s.A)
		w.read(s.B)
	case *ir.IsArrayStmt:
		w.read(s.Source)
	case *ir.IsObjectStmt:
		w.read(s.Source)
	case *ir.IsSetStmt:
		w.read(s.Source)
	case *ir.IsDefinedStmt:
		w.readDefined(s.Source)
	case *ir.IsUndefinedStmt:
		w.readDefined(s.Source)
	case *ir.ArrayAppendStmt:
		w.read(s.Value)
		if path, ok := w.arrays[s.Array]; ok {
			if k, isConst := stringOf(s.Value); isConst && int(k) < len(w.a.strings) {
				w.arrays[s.Array] = append(slices.Clip(path), w.a.strings[k])
				return
			}
			delete(w.arrays, s.Array)
		}
	case *ir.MakeArrayStmt:
		w.st.del(s.Target)
		w.arrays[s.Target] = nil
		return
	case *ir.ObjectInsertStmt:
		w.read(s.Key)
		w.read(s.Value)
	case *ir.ObjectInsertOnceStmt:
		w.read(s.Key)
		w.read(s.Value)
	case *ir.SetAddStmt:
		w.read(s.Value)
	case *ir.ReturnLocalStmt:
		w.readLocal(s.Source)
	case *ir.ResultSetAddStmt:
		w.readLocal(s.Value)
	case *ir.ScanStmt:
		clear(w.arrays)
		w.readLocal(s.Source)
		w.st.del(s.Key)
		w.st.del(s.Value)
		w.nested([]*ir.Block{s.Block}, true)
		return
	case *ir.NotStmt:
		clear(w.arrays)
		w.nested([]*ir.Block{s.Block}, false)
		return
	case *ir.BlockStmt:
		clear(w.arrays)
		w.nested(s.Blocks, false)
		return
	case *ir.CallStmt:
		w.call(s)
	case *ir.AssignIntStmt, *ir.ResetLocalStmt, *ir.MakeNullStmt, *ir.MakeNumberIntStmt, *ir.MakeNumberRefStmt,
		*ir.MakeObjectStmt, *ir.MakeSetStmt, *ir.BreakStmt, *ir.NopStmt:
	default:
		w.r.whole, w.r.impure = true, true
	}
	// What the statement sets no longer holds an input path, nor a path for object.get.
	for defs, i := definedBy(s), 0; i < defs.n; i++ {
		l := defs.l[i]
		w.st.del(ir.Local(l))
		delete(w.arrays, ir.Local(l))
	}
}

func (w *walker) call(s *ir.CallStmt) {
	if _, planned := w.a.funcs[s.Func]; !planned {
		if clockBuiltins[s.Func] || s.Func == ast.InternalPrint.Name || ast.BuiltinMap[s.Func] == nil || ast.BuiltinMap[s.Func].Nondeterministic {
			w.r.impure = true
		}
		if w.objectGet(s) {
			return
		}
		for _, a := range s.Args {
			w.read(a)
		}
		return
	}
	callee := w.a.of(s.Func)
	if !w.callees[s.Func] {
		w.callees[s.Func] = true
		w.r.size += callee.size
	}
	w.r.impure = w.r.impure || callee.impure
	for i, a := range s.Args {
		l32, isLocal := localOf(a)
		l := ir.Local(l32)
		switch {
		case i == 0 && isLocal && len(w.st.get(l)) == 1 && len(w.st.get(l)[0]) == 0:
			// The input, whole, as the callee's input: it reads what the callee reads.
			if callee.whole {
				w.r.whole = true
			}
			for _, p := range callee.paths {
				w.readPath(p)
			}
			for _, p := range callee.defined {
				w.readDefinedPath(p)
			}
		case i == 1 && isLocal && l == ir.Data:
		default:
			w.read(a)
		}
	}
}

// objectGet reads the arguments of object.get(input, path, default) where path is an array of
// constant strings made in the block: that path of the input, read whole, rather than the input
// whole (fnCache.keyOf keeps no value for an input that is not an object). Any other path of the
// input given as object.get's object is read whole. object.get reads a path as DotStmts do
// through objects; where they differ (a set on the way) fnCache.keyOf keeps no value.
func (w *walker) objectGet(s *ir.CallStmt) bool {
	if s.Func != ast.ObjectGet.Name || len(s.Args) != 3 {
		return false
	}
	x, ok := localOf(s.Args[0])
	p, isLocal := localOf(s.Args[1])
	if !ok || !isLocal || len(w.st.get(ir.Local(x))) == 0 {
		return false
	}
	path, ok := w.arrays[ir.Local(p)]
	if !ok {
		return false
	}
	for _, q := range w.st.get(ir.Local(x)) {
		switch {
		case len(q) > 0:
			// object.get fails on a value that is not an object: the value is read whole.
			w.readPath(q)
		case len(path) == 0:
			w.r.whole = true
		default:
			w.readPath(path)
		}
	}
	w.read(s.Args[2])
	return true
}

// clockBuiltins read the clock though OPA does not mark them non-deterministic (certificate
// checks verify expiry at the present time): a rule calling one keeps no values.
var clockBuiltins = map[string]bool{
	ast.NowNanos.Name: true,
	ast.CryptoX509ParseAndVerifyCertificates.Name:            true,
	ast.CryptoX509ParseAndVerifyCertificatesWithOptions.Name: true,
}

// cacheResults gives the functions worth it a cache of their values across runs.
func cacheResults(funcs []*ir.Func, strs []*ir.StringConst, resolved map[string]*function) *pathTree {
	tree := &pathTree{}
	a := &inputPaths{funcs: map[string]*ir.Func{}, out: map[string]*reads{}, strings: make([]string, len(strs))}
	for i, s := range strs {
		a.strings[i] = s.Value
	}
	for _, f := range funcs {
		a.funcs[f.Name] = f
	}
	for _, f := range funcs {
		fn := resolved[f.Name]
		if !fn.memo {
			continue
		}
		r := a.of(f.Name)
		if r.whole || r.impure || r.size < minCachedSize || len(r.paths)+len(r.defined) > maxKeyPaths {
			continue
		}
		c := &fnCache{}
		for _, p := range r.paths {
			c.nodes = append(c.nodes, tree.node(p))
		}
		for _, p := range r.defined {
			c.definedNodes = append(c.definedNodes, tree.node(p))
		}
		fn.cache = c
	}
	return tree
}

// pathTree holds the input paths of every function's key, as a tree: a run finds the value at
// each node once (machine.nodeValue), however many keys read it or a path under it.
type pathTree struct {
	parent []int       // -1 for a node under the input itself
	key    []*ast.Term // the key from the parent
	named  map[string]int
}

// node is the number of path's node, added with the nodes above it where missing.
func (t *pathTree) node(path []string) int {
	if t.named == nil {
		t.named = map[string]int{}
	}
	n, name := -1, ""
	for _, k := range path {
		name += strconv.Itoa(len(k)) + ":" + k // each key after its length: no two paths alike
		i, ok := t.named[name]
		if !ok {
			i = len(t.parent)
			t.parent, t.key = append(t.parent, n), append(t.key, ast.StringTerm(k))
			t.named[name] = i
		}
		n = i
	}
	return n
}

// maxKeyPaths bounds the input paths of a key (the run gathers them on the stack).
const maxKeyPaths = 16
