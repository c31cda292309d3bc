package irexec_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
)

// Generated policies, decided by both evaluators over runs of inputs.
//
// The executor keeps rule values across runs, keyed by the input paths its analysis of the plan
// finds a rule can read; a key that leaves out what a rule reads serves a later input the
// answer of an earlier one. The hand-written corpus (TestSameAnswersAsTopdown) holds the
// shapes someone thought of; these tests write small policies at random, aimed at what the
// analysis follows (reference chains, locals bound to parts of the input, object.get, unused
// references, iteration, helper rules and functions), and decide each on one program over a
// run of inputs that share parts by pointer, as the engine's requests share a server's or a
// tool's description, so a value kept for one input is looked up by the next.

// genData is the data document of every generated policy: small objects the policies index
// with values from the input.
const genData = `{"d": {"x": true, "y": 1, "b": "x", "1": "one"}, "m": {"x": {"ok": true}, "b": {"ok": false}},
	"rows": [{"k": "x", "v": 1}, {"k": "b", "v": "y"}, {"k": 1, "v": true}]}`

// genTimes are the clock times of the runs: a rule reading the clock keeps no values, so a run
// at the later time must not be answered with a value of the earlier.
var genTimes = []time.Time{time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC), time.Date(2026, 11, 26, 13, 0, 0, 0, time.UTC)}

// genNoon is between genTimes, in nanoseconds, for policies to compare time.now_ns() with.
var genNoon = time.Date(2026, 11, 26, 12, 30, 0, 0, time.UTC).UnixNano()

// TestGeneratedPoliciesAgreeWithTopdown decides generatedPolicies policies, each over a run of
// its inputs forward and then backward on one program keeping every function's values, and
// fails on any answer that differs from topdown's (but for the executor's stricter failures,
// see decideGenerated). A policy that does not compile or that the executor refuses is skipped;
// too many skipped means the generator has drifted from what either accepts.
func TestGeneratedPoliciesAgreeWithTopdown(t *testing.T) {
	restore := irexec.CacheEverything()
	defer restore()
	var all genStats
	var skipped, failed int
	for seed := range uint64(generatedPolicies) {
		st := decideGenerated(t, seed)
		all.add(st)
		if st.skipped {
			skipped++
		}
		if t.Failed() {
			if failed++; failed == 3 {
				t.Fatalf("stopped after %d policies with mismatches", failed)
			}
		}
	}
	t.Logf("%d policies (%d skipped), %d inputs, %d runs (%d failing only in the executor); %d of %d functions keep values, %d of %d lookups hit",
		generatedPolicies, skipped, all.inputs, all.runs, all.stricter, all.keeping, all.funcs, all.hits, all.lookups)
	if skipped*5 > generatedPolicies {
		t.Errorf("%d of %d generated policies skipped: the generator writes what the compiler or the executor does not take", skipped, generatedPolicies)
	}
}

// FuzzGeneratedPolicies decides the policy and inputs written from a seed, as
// TestGeneratedPoliciesAgreeWithTopdown does for each of its seeds.
func FuzzGeneratedPolicies(f *testing.F) {
	restore := irexec.CacheEverything()
	defer restore()
	for _, seed := range []uint64{0, 1, 2, 1 << 40} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		if decideGenerated(t, seed).skipped {
			t.Skip("policy skipped")
		}
	})
}

// genStats counts what decideGenerated did with one policy.
type genStats struct {
	skipped  bool // the policy does not compile, or the executor refuses it
	inputs   int  // inputs decided by topdown
	runs     int  // runs of the executor
	stricter int  // runs the executor failed where topdown did not, as it fails without kept values
	// funcs and keeping count the functions called and those keeping values; lookups and
	// hits, their caches' use.
	funcs, keeping int
	lookups, hits  int64
}

func (s *genStats) add(o genStats) {
	s.inputs, s.runs, s.stricter = s.inputs+o.inputs, s.runs+o.runs, s.stricter+o.stricter
	s.funcs, s.keeping, s.lookups, s.hits = s.funcs+o.funcs, s.keeping+o.keeping, s.lookups+o.lookups, s.hits+o.hits
}

// decideGenerated writes the policy and the inputs of seed and decides them with both
// evaluators, reporting a mismatch as an error of t.
//
// The executor may fail where topdown does not (see the corpus's stricter cases: topdown
// skips what its rule index or an early exit rules out, the executor evaluates it), and such
// a failure cannot be told from a mismatch in advance: it is accepted where a program that has
// kept nothing fails the same input too, so no kept value is involved.
func decideGenerated(t *testing.T, seed uint64) genStats {
	t.Helper()
	src := newPolicyGen(seed).policy()
	m, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Logf("seed %d: %v", seed, err)
		return genStats{skipped: true}
	}
	c := ast.NewCompiler()
	if c.Compile(map[string]*ast.Module{"p.rego": m}); c.Failed() {
		t.Logf("seed %d: %v", seed, c.Errors)
		return genStats{skipped: true}
	}
	prog, err := plan(t, src)
	if err != nil {
		t.Logf("seed %d: %v", seed, err)
		return genStats{skipped: true}
	}
	var data any
	if err := util.UnmarshalJSON([]byte(genData), &data); err != nil {
		t.Fatal(err)
	}
	dataTerm := ast.MustParseTerm(genData)

	pool := newInputPool(seed)
	inputs := pool.inputs()
	// topdown decides each input once, before the executor runs: its answers do not depend on
	// order, and it sees the inputs as JSON.
	type answer struct {
		val *ast.Term
		err error
	}
	want := make([]answer, len(inputs))
	reference := topdownQuery(t, src, data)
	for i, in := range inputs {
		js, err := ast.JSON(in.input.Value)
		if err != nil {
			t.Fatal(err)
		}
		want[i].val, want[i].err = reference(js, in.at)
	}
	// Forward, then backward: each input is looked up after inputs on both sides of it.
	order := make([]int, 0, 2*len(inputs)-1)
	for i := range inputs {
		order = append(order, i)
	}
	for i := len(inputs) - 2; i >= 0; i-- {
		order = append(order, i)
	}
	st := genStats{inputs: len(inputs)}
	// Lazy inputs kept across runs, as the engine keeps input.session: the terms the pool
	// shares stay one Lazy (so kept values are found again by a Lazy key), and a Lazy made whole
	// by one run is read through its whole object by the next. whole has every Lazy made up
	// front.
	shared, whole := map[*ast.Term]*ast.Term{}, map[*ast.Term]*ast.Term{}
	for step, i := range order {
		st.runs++
		in := inputs[i]
		got, gerr := prog.Eval(context.Background(), irexec.PlanName, in.input, dataTerm, irexec.Options{Time: in.at})
		// The input made lazily (see lazily) runs alike, on the same program and its kept values.
		l, lerr := prog.Eval(context.Background(), irexec.PlanName, lazily(in.input), dataTerm, irexec.Options{Time: in.at})
		if (lerr == nil) != (gerr == nil) || (l == nil) != (got == nil) || (l != nil && !l.Equal(got)) {
			t.Errorf("seed %d: step %d (input %d): made %v (error %v), lazily %v (error %v)\n--- policy\n%s--- input\n  %s",
				seed, step, i, got, gerr, l, lerr, src, pool.show(in.input))
		}
		for _, kept := range []struct {
			memo  map[*ast.Term]*ast.Term
			whole bool
		}{{shared, false}, {whole, true}} {
			in2 := lazilyShared(kept.memo, in.input)
			if kept.whole {
				irexec.Whole(in2)
			}
			l, lerr := prog.Eval(context.Background(), irexec.PlanName, in2, dataTerm, irexec.Options{Time: in.at})
			if (lerr == nil) != (gerr == nil) || (l == nil) != (got == nil) || (l != nil && !l.Equal(got)) {
				t.Errorf("seed %d: step %d (input %d): made %v (error %v), lazily, kept across runs (made whole first: %v) %v (error %v)\n--- policy\n%s--- input\n  %s",
					seed, step, i, got, gerr, kept.whole, l, lerr, src, pool.show(in.input))
			}
		}
		if sameAnswer(want[i].val, got, want[i].err, gerr) {
			continue
		}
		// The same input on a program that has kept nothing tells a stale kept value from a
		// difference of the evaluators.
		fresh, err := plan(t, src)
		if err != nil {
			t.Fatal(err)
		}
		fgot, ferr := fresh.Eval(context.Background(), irexec.PlanName, in.input, dataTerm, irexec.Options{Time: in.at})
		if want[i].err == nil && gerr != nil && ferr != nil {
			st.stricter++
			continue
		}
		var seq strings.Builder
		for j, k := range order[:step+1] {
			fmt.Fprintf(&seq, "  %2d: input %2d at %s %s\n", j, k, inputs[k].at.Format(time.TimeOnly), pool.show(inputs[k].input))
		}
		t.Errorf("seed %d: step %d (input %d): topdown %v (error %v), executor %v (error %v); on a new program %v (error %v)\n"+
			"--- policy\n%s--- data\n  %s\n--- inputs run, in order (&N marks one shared term)\n%s",
			seed, step, i, want[i].val, want[i].err, got, gerr, fgot, ferr, src, genData, seq.String())
		break
	}
	st.funcs, st.keeping, st.lookups, st.hits = irexec.KeptValues(prog)
	return st
}

// sameAnswer reports whether the executor's answer (got, gerr) is topdown's (want, werr) as
// TestSameAnswersAsTopdown accepts it: both errors, both undefined, or equal values. topdown's
// value came through JSON, so the executor's goes through it too: sets become sorted arrays,
// non-string keys strings.
func sameAnswer(want, got *ast.Term, werr, gerr error) bool {
	switch {
	case werr != nil || gerr != nil:
		return werr != nil && gerr != nil
	case want == nil || got == nil:
		return want == nil && got == nil
	}
	js, err := ast.JSON(got.Value)
	if err != nil {
		return false
	}
	v, err := ast.InterfaceToValue(js)
	return err == nil && want.Value.Compare(v) == 0
}

// policyGen writes one policy of package p: one to five helper rules (complete, boolean,
// partial set and object rules, functions of one or two arguments), each of which may use
// those before it, and the entry point x, which uses them.
type policyGen struct {
	r     *rand.Rand
	rules []genRule
	vars  int // numbers the locals of the body being written
}

type genRule struct {
	name  string
	kind  ruleKind
	arity int      // of a function
	keys  []string // of a kindRefHead rule
}

type ruleKind int

const (
	kindValue   ruleKind = iota // complete rule with a value
	kindBool                    // true, or undefined (false by default)
	kindSet                     // partial set rule
	kindObject                  // partial object rule
	kindFunc                    // function
	kindRefHead                 // rules of constant keys under one name (t.b := ...), read by key
)

// genBody is a rule body being written: its literals, and the names that hold a part of the
// input (parameters, locals bound to a reference) for later literals to read.
type genBody struct {
	lines   []string
	holders []string
	params  []string // a function's parameters, which its body reads often
}

func (b *genBody) add(format string, args ...any) {
	b.lines = append(b.lines, fmt.Sprintf(format, args...))
}

// The input references policies read (chains into the nested objects inputPool makes, with keys
// that are there in some inputs and not in others), and the constants they compare them with.
var (
	genRefs = []string{"input.a", "input.a.b", "input.a.b.c", "input.a.c", "input.b", "input.b.l", "input.c", "input.s", "input.s.l",
		"input.n", "input.list", "input.k", "input.a[input.k]", "input.list[0]"}
	genScalarRefs = []string{"input.a.b", "input.b.l", "input.c", "input.s.l", "input.n", "input.k"}
	genTopKeys    = []string{"a", "b", "c", "s", "n", "k", "list"}
	genInnerKeys  = []string{"b", "c", "l"}
	genConsts     = []string{`"x"`, `"y"`, `"b"`, "1", "1.0", "2", "true", "false", "null"}
	genCompare    = []string{"==", "!=", "<", ">="}
	// genCompareTyped are the comparisons of a helper's value: the type checker refuses ==
	// where it knows the value to be of another type than the constant.
	genCompareTyped = []string{"!=", "<", ">="}
)

func newPolicyGen(seed uint64) *policyGen {
	return &policyGen{r: rand.New(rand.NewPCG(seed, 0x9011c1e5))}
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func (g *policyGen) chance(p float64) bool { return g.r.Float64() < p }

func (g *policyGen) local() string {
	g.vars++
	return fmt.Sprintf("v%d", g.vars)
}

func (g *policyGen) konst() string { return pick(g.r, genConsts) }

// policy is the module's source.
func (g *policyGen) policy() string {
	var out strings.Builder
	out.WriteString("package p\n\n")
	for i := range 1 + g.r.IntN(5) {
		out.WriteString(g.helper(i + 1))
		out.WriteString("\n")
	}
	out.WriteString(g.entry())
	return out.String()
}

// helper writes the i-th helper rule, which may use the ones before it.
func (g *policyGen) helper(i int) string {
	var out strings.Builder
	switch n := g.r.IntN(20); {
	case n < 6:
		name := fmt.Sprintf("r%d", i)
		if g.chance(0.3) {
			fmt.Fprintf(&out, "default %s := %s\n", name, g.konst())
		}
		out.WriteString(g.valueRule(name+" := ", nil, true))
		if g.chance(0.15) {
			out.WriteString(g.valueRule(name+" := ", nil, false))
		}
		g.rules = append(g.rules, genRule{name: name, kind: kindValue})
	case n < 10:
		name := fmt.Sprintf("b%d", i)
		if g.chance(0.4) {
			fmt.Fprintf(&out, "default %s := false\n", name)
		}
		for range 1 + g.r.IntN(2) {
			b := g.body(nil, 1+g.r.IntN(3))
			out.WriteString(rule(name, b))
		}
		g.rules = append(g.rules, genRule{name: name, kind: kindBool})
	case n < 13:
		name := fmt.Sprintf("s%d", i)
		for range 1 + g.r.IntN(2) {
			b := g.newBody(nil)
			var elem string
			if g.chance(0.5) {
				// The members of a part of the input that pass a test.
				elem = g.local()
				b.add("some %s in %s", elem, g.subject(b))
				b.holders = append(b.holders, elem)
				g.conds(b, g.r.IntN(2))
			} else {
				g.conds(b, 1+g.r.IntN(2))
				elem = g.value(b, 1)
			}
			out.WriteString(rule(fmt.Sprintf("%s contains %s", name, elem), b))
		}
		g.rules = append(g.rules, genRule{name: name, kind: kindSet})
	case n < 15:
		name := fmt.Sprintf("o%d", i)
		for range 1 + g.r.IntN(2) {
			b := g.newBody(nil)
			var key, val string
			if g.chance(0.5) {
				// The entries of a part of the input that pass a test.
				key, val = g.local(), g.local()
				b.add("some %s, %s in %s", key, val, g.subject(b))
				b.holders = append(b.holders, val)
				g.conds(b, g.r.IntN(2))
			} else {
				// A key from the input.
				key = g.local()
				b.add("%s := %s", key, g.subject(b))
				g.conds(b, g.r.IntN(2))
				val = g.value(b, 1)
			}
			out.WriteString(rule(fmt.Sprintf("%s[%s] := %s", name, key, val), b))
		}
		g.rules = append(g.rules, genRule{name: name, kind: kindObject})
	case n < 16:
		// A constant key makes a rule of its own (t.b), which x reads by that key: read whole,
		// the plan merges the rules' objects, which the executor does not run.
		name := fmt.Sprintf("t%d", i)
		r := genRule{name: name, kind: kindRefHead}
		for range 1 + g.r.IntN(2) {
			key := pick(g.r, genInnerKeys)
			if !slices.Contains(r.keys, key) {
				r.keys = append(r.keys, key)
			}
			out.WriteString(g.valueRule(name+"."+key+" := ", nil, true))
		}
		g.rules = append(g.rules, r)
	default:
		name := fmt.Sprintf("f%d", i)
		params := []string{"pa"}
		if g.chance(0.3) {
			params = append(params, "pb")
		}
		head := fmt.Sprintf("%s(%s) := ", name, strings.Join(params, ", "))
		if g.chance(0.2) {
			fmt.Fprintf(&out, "default %s(%s) := %s\n", name, strings.TrimSuffix(strings.Repeat("_, ", len(params)), ", "), g.konst())
		}
		out.WriteString(g.valueRule(head, params, true))
		if g.chance(0.2) {
			out.WriteString(g.valueRule(head, params, false))
		}
		g.rules = append(g.rules, genRule{name: name, kind: kindFunc, arity: len(params)})
	}
	return out.String()
}

// valueRule writes head (such as "r1 := ") with a value and a body reading params (a
// function's), and, where chains is set, sometimes an else chain.
func (g *policyGen) valueRule(head string, params []string, chains bool) string {
	b := g.body(params, g.r.IntN(3))
	val := g.value(b, 1)
	if len(b.lines) == 0 {
		return head + val + "\n"
	}
	var out strings.Builder
	out.WriteString(rule(head+val, b))
	if !chains || !g.chance(0.35) {
		return out.String()
	}
	s := strings.TrimSuffix(out.String(), "\n")
	out.Reset()
	out.WriteString(s)
	if g.chance(0.5) {
		e := g.body(params, 1+g.r.IntN(2))
		val := g.value(e, 1)
		s := strings.TrimSuffix(rule(" else := "+val, e), "\n")
		out.WriteString(s)
	}
	if g.chance(0.6) {
		out.WriteString(" else := " + g.konst())
	}
	out.WriteString("\n")
	return out.String()
}

// rule writes head with body b ("head if { ... }"), or head alone for an empty body.
func rule(head string, b *genBody) string {
	if len(b.lines) == 0 {
		return head + "\n"
	}
	return head + " if {\n\t" + strings.Join(b.lines, "\n\t") + "\n}\n"
}

// body is a body of n literals reading params (a function's) and the input.
func (g *policyGen) body(params []string, n int) *genBody {
	b := g.newBody(params)
	g.conds(b, n)
	return b
}

// newBody starts a body reading params (a function's). Its locals are numbered from 1 again:
// rules and else branches reuse their names.
func (g *policyGen) newBody(params []string) *genBody {
	g.vars = 0
	return &genBody{holders: slices.Clone(params), params: params}
}

func (g *policyGen) conds(b *genBody, n int) {
	for range n {
		g.cond(b)
	}
}

// subject is an expression for a part of the input: a reference chain, a name holding a part
// (with a key after it), or a new local bound to a chain.
func (g *policyGen) subject(b *genBody) string {
	if len(b.params) > 0 && g.chance(0.35) {
		// What a function returns depends on its arguments: the caller's key must hold them.
		p := pick(g.r, b.params)
		if g.chance(0.5) {
			return p + "." + pick(g.r, genInnerKeys)
		}
		return p
	}
	n := g.r.IntN(60)
	switch {
	case n == 0:
		return "input[input.k]" // a key from the input: the rule reads all of it
	case n < 30 || (n < 42 && len(b.holders) == 0):
		return pick(g.r, genRefs)
	case n < 42:
		h := pick(g.r, b.holders)
		if g.chance(0.5) {
			return h + "." + pick(g.r, genInnerKeys)
		}
		return h
	}
	v := g.local()
	src := pick(g.r, genRefs)
	if len(b.holders) > 0 && g.chance(0.4) {
		src = pick(g.r, b.holders) + "." + pick(g.r, genInnerKeys) // a chain of locals
	}
	b.add("%s := %s", v, src)
	b.holders = append(b.holders, v)
	if g.chance(0.5) {
		return v + "." + pick(g.r, genInnerKeys)
	}
	return v
}

// objectGet is a call of object.get: constant paths into the input or a part of it, a key or a
// path from the input, the empty path.
func (g *policyGen) objectGet(b *genBody) string {
	d := g.konst()
	switch g.r.IntN(7) {
	case 0, 1:
		path := []string{pick(g.r, genTopKeys)}
		for range g.r.IntN(3) {
			path = append(path, pick(g.r, genInnerKeys))
		}
		return fmt.Sprintf("object.get(input, [%s], %s)", quoteAll(path), d)
	case 2:
		path := []string{pick(g.r, genInnerKeys)}
		if g.chance(0.3) {
			path = append(path, pick(g.r, genInnerKeys))
		}
		return fmt.Sprintf("object.get(%s, [%s], %s)", g.subject(b), quoteAll(path), d)
	case 3:
		return fmt.Sprintf("object.get(%s, %q, %s)", g.subject(b), pick(g.r, genInnerKeys), d)
	case 4:
		return fmt.Sprintf("object.get(input, [input.k], %s)", d)
	case 5:
		return fmt.Sprintf("object.get(%s, input.k, %s)", g.subject(b), d)
	}
	if g.chance(0.5) {
		return fmt.Sprintf("object.get(input, [], %s)", d)
	}
	return fmt.Sprintf("object.get(input, [%q, input.k], %s)", pick(g.r, genTopKeys), d)
}

func quoteAll(keys []string) string {
	q := make([]string, len(keys))
	for i, k := range keys {
		q[i] = fmt.Sprintf("%q", k)
	}
	return strings.Join(q, ", ")
}

// cond adds a literal (or a few) to b: a test of a part of the input or of a helper rule.
func (g *policyGen) cond(b *genBody) {
	switch g.r.IntN(23) {
	case 0:
		b.add("%s", g.subject(b)) // defined and not false
	case 1, 2:
		b.add("%s %s %s", g.subject(b), pick(g.r, genCompare), g.konst())
	case 3:
		b.add("%s in %s", g.konst(), g.subject(b))
	case 4:
		v := g.local()
		b.add("some %s in %s", v, g.subject(b))
		b.holders = append(b.holders, v)
		if g.chance(0.5) {
			v += "." + pick(g.r, genInnerKeys)
		}
		b.add("%s %s %s", v, pick(g.r, genCompare), g.konst())
	case 5:
		v := g.local()
		b.add("every %s in %s { %s != %s }", v, g.subject(b), v, g.konst())
	case 6:
		if g.chance(0.5) {
			b.add("not %s", g.subject(b))
		} else {
			b.add("not %s == %s", g.subject(b), g.konst())
		}
	case 7:
		b.add("_ := %s", g.subject(b)) // decides the body though its value is unused
	case 8:
		b.add("%s %s %s", g.objectGet(b), pick(g.r, genCompare), g.konst())
	case 9:
		s := g.subject(b)
		if g.chance(0.5) {
			b.add("is_array(%s)", s)
		}
		b.add("count(%s) > %d", s, g.r.IntN(2))
	case 10:
		s := g.subject(b)
		if g.chance(0.6) {
			b.add("is_string(%s)", s)
		}
		b.add("startswith(%s, %s)", s, pick(g.r, []string{`"x"`, `"y"`, `""`}))
	case 11, 12, 13:
		if len(g.rules) == 0 {
			b.add("%s", g.subject(b))
			return
		}
		g.ruleCond(b, pick(g.r, g.rules))
	case 14:
		if g.chance(0.5) {
			b.add("data.d[%s] %s %s", g.subject(b), pick(g.r, genCompare), g.konst())
		} else {
			b.add("data.m[%s].ok", g.subject(b))
		}
	case 15:
		v := g.local()
		b.add("count([%s | some %s in %s; %s != %s]) > 0", v, v, g.subject(b), v, g.konst())
	case 16:
		// Two parts of the input compared, each side read whole; the scalars are few, so they
		// are often equal.
		l, r := pick(g.r, genScalarRefs), pick(g.r, genScalarRefs)
		if g.chance(0.4) {
			l, r = g.subject(b), g.subject(b)
		}
		b.add("%s %s %s", l, pick(g.r, []string{"==", "!="}), r)
	case 17:
		// Unified with a pattern: an array's length, an object's keys decide.
		v, w := g.local(), g.local()
		if g.chance(0.5) {
			b.add("[%s, %s] = %s", v, w, g.subject(b))
		} else {
			b.add(`{"b": %s, "c": %s} = %s`, v, w, g.subject(b))
		}
		b.holders = append(b.holders, v, w)
		b.add("%s %s %s", pick(g.r, []string{v, w}), pick(g.r, genCompare), g.konst())
	case 18:
		if g.chance(0.5) {
			b.add(`object.get(data.m, [%s, "ok"], false)`, g.subject(b))
			return
		}
		// A row of data matched with a part of the input, which is the comparison's second
		// operand.
		v := g.local()
		b.add("some %s in data.rows", v)
		part := pick(g.r, genScalarRefs)
		if g.chance(0.3) {
			part = g.subject(b)
		}
		b.add("%s.k == %s", v, part)
	case 19:
		// Every entry of the input itself.
		k, v := g.local(), g.local()
		b.add("some %s, %s in input", k, v)
		b.add("%s == %q", k, pick(g.r, genTopKeys))
		b.holders = append(b.holders, v)
	case 20:
		b.add("time.now_ns() %s %d", pick(g.r, []string{"<", ">="}), genNoon)
	default:
		// A local bound to a part of the input, tested, then read through.
		v := g.local()
		b.add("%s := %s", v, pick(g.r, genRefs))
		b.holders = append(b.holders, v)
		b.add("%s(%s)", pick(g.r, []string{"is_object", "is_array", "is_string"}), v)
		b.add("%s.%s %s %s", v, pick(g.r, genInnerKeys), pick(g.r, genCompare), g.konst())
	}
}

// ruleCond adds a test of helper r to b.
func (g *policyGen) ruleCond(b *genBody, r genRule) {
	switch r.kind {
	case kindValue:
		switch g.r.IntN(3) {
		case 0:
			b.add("%s", r.name)
		case 1:
			b.add("%s %s %s", r.name, pick(g.r, genCompareTyped), g.konst())
		default:
			b.add("%s != %s", r.name, g.subject(b))
		}
	case kindRefHead:
		b.add("%s.%s %s %s", r.name, pick(g.r, r.keys), pick(g.r, genCompareTyped), g.konst())
	case kindBool:
		if g.chance(0.7) {
			b.add("%s", r.name)
		} else {
			b.add("not %s", r.name)
		}
	case kindSet:
		switch g.r.IntN(3) {
		case 0:
			b.add("%s in %s", g.konst(), r.name)
		case 1:
			b.add("count(%s) > %d", r.name, g.r.IntN(2))
		default:
			v := g.local()
			b.add("some %s in %s", v, r.name)
			b.add("%s %s %s", v, pick(g.r, genCompareTyped), g.konst())
		}
	case kindObject:
		switch g.r.IntN(3) {
		case 0:
			b.add("%s[%s]", r.name, pick(g.r, []string{`"x"`, `"b"`, `"l"`}))
		case 1:
			b.add("%s[%s] %s %s", r.name, pick(g.r, []string{`"x"`, `"b"`}), pick(g.r, genCompareTyped), g.konst())
		default:
			b.add("count(%s) > 0", r.name)
		}
	case kindFunc:
		call := g.call(b, r)
		switch g.r.IntN(3) {
		case 0:
			b.add("%s", call)
		case 1:
			// Bound first: "f(a) == c" would be the call f(a, c), which the type checker
			// refuses where f's value is known to be of another type than c.
			v := g.local()
			b.add("%s := %s", v, call)
			b.add("%s %s %s", v, pick(g.r, genCompareTyped), g.konst())
		default:
			b.add("not %s", call)
		}
	}
}

// call is a call of function r with parts of the input (or constants) as its arguments.
func (g *policyGen) call(b *genBody, r genRule) string {
	args := make([]string, r.arity)
	for i := range args {
		if g.chance(0.8) {
			args[i] = g.subject(b)
		} else {
			args[i] = g.konst()
		}
	}
	return fmt.Sprintf("%s(%s)", r.name, strings.Join(args, ", "))
}

// value is an expression for a rule's value (adding to b the literals it needs); depth bounds
// its nesting.
func (g *policyGen) value(b *genBody, depth int) string {
	switch g.r.IntN(15) {
	case 0, 1:
		return g.konst()
	case 2, 3:
		return g.subject(b)
	case 4, 5:
		return g.objectGet(b)
	case 6:
		v := g.local()
		return fmt.Sprintf("[%s | some %s in %s]", v, v, g.subject(b))
	case 7:
		v := g.local()
		return fmt.Sprintf("{%s | some %s in %s; %s != %s}", v, v, g.subject(b), v, g.konst())
	case 8:
		k, v := g.local(), g.local()
		return fmt.Sprintf("{%s: %s | some %s, %s in %s}", k, v, k, v, g.subject(b))
	case 9:
		return fmt.Sprintf("count(%s)", g.subject(b))
	case 10:
		return fmt.Sprintf("data.d[%s]", g.subject(b))
	case 11:
		if depth > 0 {
			return fmt.Sprintf(`{"k": %s, "c": %s}`, g.value(b, depth-1), g.konst())
		}
		return fmt.Sprintf("[%s, %s]", g.subject(b), g.konst())
	case 12:
		if g.chance(0.3) {
			return fmt.Sprintf("object.keys(%s)", g.subject(b))
		}
		return fmt.Sprintf("json.marshal(%s)", g.subject(b))
	}
	if len(g.rules) == 0 {
		return g.subject(b)
	}
	r := pick(g.r, g.rules)
	switch r.kind {
	case kindFunc:
		return g.call(b, r)
	case kindObject:
		if g.chance(0.5) {
			return fmt.Sprintf("object.get(%s, %s, null)", r.name, g.subject(b))
		}
	case kindSet:
		if g.chance(0.3) {
			return fmt.Sprintf("count(%s)", r.name)
		}
	case kindRefHead:
		return r.name + "." + pick(g.r, r.keys)
	}
	return r.name
}

// entry writes x: an object of what each helper gives (an empty array where it is undefined),
// a value with a body, a boolean, or one helper's value.
func (g *policyGen) entry() string {
	switch n := g.r.IntN(10); {
	case n < 5:
		var parts []string
		for _, r := range g.rules {
			use := r.name
			switch r.kind {
			case kindRefHead:
				use += "." + pick(g.r, r.keys)
			case kindFunc:
				args := make([]string, r.arity)
				for i := range args {
					args[i] = pick(g.r, genRefs)
				}
				use = fmt.Sprintf("%s(%s)", r.name, strings.Join(args, ", "))
			}
			parts = append(parts, fmt.Sprintf("%q: [v | v := %s]", r.name, use))
		}
		b := g.body(nil, 0)
		if g.chance(0.3) {
			g.cond(b)
		}
		return rule("x := {"+strings.Join(parts, ", ")+"}", b)
	case n < 7:
		return g.valueRule("x := ", nil, true)
	case n < 9:
		b := g.body(nil, 1+g.r.IntN(3))
		return "default x := false\n\n" + rule("x", b)
	}
	b := g.newBody(nil)
	return rule("x := "+g.value(b, 1), b)
}

// inputPool makes the inputs of one policy: objects over the keys policies read, assembled from
// a pool of arrays and objects so the same term (the same pointer) turns up in several inputs,
// under several keys and inside other pooled terms, and runs of inputs that keep most of the
// one before and change a key or a part of one.
type inputPool struct {
	r     *rand.Rand
	terms []*ast.Term       // arrays and objects
	ids   map[*ast.Term]int // each pooled term's number, to show sharing
}

func newInputPool(seed uint64) *inputPool {
	p := &inputPool{r: rand.New(rand.NewPCG(seed, 0x1b9075)), ids: map[*ast.Term]int{}}
	for range 6 {
		p.composite()
	}
	return p
}

// genInput is an input document and the clock time of its runs.
type genInput struct {
	input *ast.Term
	at    time.Time
}

// inputs is 10 to 16 input documents, each at one of genTimes.
func (p *inputPool) inputs() []genInput {
	out := make([]genInput, 10+p.r.IntN(7))
	for i := range out {
		out[i].at = pick(p.r, genTimes)
		switch n := p.r.IntN(20); {
		case i == 0 || n < 6:
			out[i].input = p.fresh()
		case n == 6:
			// Not an object at all: no key is made for it.
			out[i].input = pick(p.r, []*ast.Term{p.leaf(), pick(p.r, p.terms)})
		default:
			out[i].input = p.changed(out[p.r.IntN(i)].input)
		}
	}
	return out
}

// fresh is an input with each key present or not.
func (p *inputPool) fresh() *ast.Term {
	obj := ast.NewObject()
	for _, k := range genTopKeys {
		if v := p.top(k); v != nil {
			obj.Insert(ast.StringTerm(k), v)
		}
	}
	return ast.NewTerm(obj)
}

// changed is in (an input object) with one or two keys given other values, or the pooled object
// under a key replaced by one that shares all but one of its members; the other keys hold the
// same terms as in.
func (p *inputPool) changed(in *ast.Term) *ast.Term {
	obj, ok := in.Value.(ast.Object)
	if !ok {
		return p.fresh()
	}
	for range 1 + p.r.IntN(2) {
		k := pick(p.r, genTopKeys)
		key := ast.StringTerm(k)
		var v *ast.Term
		if cur := obj.Get(key); cur != nil && isObjectTerm(cur) && p.r.IntN(2) == 0 {
			v = p.derived(cur)
		} else {
			v = p.top(k)
		}
		obj = shallowCopy(obj, key)
		if v != nil {
			obj.Insert(key, v)
		}
	}
	return ast.NewTerm(obj)
}

func isObjectTerm(t *ast.Term) bool {
	_, ok := t.Value.(ast.Object)
	return ok
}

// shallowCopy is obj without key except, holding obj's own terms: Object.Copy would copy them,
// and lose the sharing the inputs are made for.
func shallowCopy(obj ast.Object, except *ast.Term) ast.Object {
	out := ast.NewObject()
	obj.Foreach(func(k, v *ast.Term) {
		if !k.Equal(except) {
			out.Insert(k, v)
		}
	})
	return out
}

// top is a value for top-level key k, or nil for none; of the type the policies expect there
// most of the time.
func (p *inputPool) top(k string) *ast.Term {
	if p.r.IntN(5) == 0 {
		return nil
	}
	switch k {
	case "n":
		return pick(p.r, []*ast.Term{ast.IntNumberTerm(1), ast.NumberTerm("1.0"), ast.IntNumberTerm(2), ast.IntNumberTerm(0), p.leaf()})
	case "k":
		return pick(p.r, []*ast.Term{ast.StringTerm("b"), ast.StringTerm("l"), ast.StringTerm("x"), ast.StringTerm("c"), p.leaf()})
	case "c":
		return p.member()
	}
	if p.r.IntN(4) == 0 {
		return p.leaf()
	}
	if p.r.IntN(3) == 0 {
		return p.composite()
	}
	return pick(p.r, p.terms)
}

// leaf is a scalar; a number or string of the same text is another term each time, as it is in
// a parsed request.
func (p *inputPool) leaf() *ast.Term {
	switch p.r.IntN(10) {
	case 0:
		return ast.StringTerm("x")
	case 1:
		return ast.StringTerm("y")
	case 2:
		return ast.StringTerm("b")
	case 3:
		return ast.IntNumberTerm(1)
	case 4:
		return ast.NumberTerm("1.0")
	case 5:
		return ast.IntNumberTerm(2)
	case 6:
		return ast.BooleanTerm(true)
	case 7:
		return ast.BooleanTerm(false)
	case 8:
		return ast.NullTerm()
	}
	return ast.StringTerm("")
}

// member is a scalar or a pooled term.
func (p *inputPool) member() *ast.Term {
	if p.r.IntN(2) == 0 {
		return p.leaf()
	}
	return pick(p.r, p.terms)
}

// composite adds to the pool a new array or object (of scalars and pooled terms), or one derived
// from a pooled object, and returns it.
func (p *inputPool) composite() *ast.Term {
	var t *ast.Term
	switch n := p.r.IntN(10); {
	case n < 3 && len(p.terms) > 0:
		objs := slices.DeleteFunc(slices.Clone(p.terms), func(t *ast.Term) bool { return !isObjectTerm(t) })
		if len(objs) > 0 {
			return p.derived(pick(p.r, objs))
		}
		fallthrough
	case n < 7:
		obj := ast.NewObject()
		for range 1 + p.r.IntN(3) {
			obj.Insert(ast.StringTerm(pick(p.r, genInnerKeys)), p.maybeMember())
		}
		t = ast.NewTerm(obj)
	default:
		elems := make([]*ast.Term, p.r.IntN(4))
		for i := range elems {
			elems[i] = p.maybeMember()
		}
		t = ast.ArrayTerm(elems...)
	}
	return p.add(t)
}

// maybeMember is a member, or a scalar while the pool is empty.
func (p *inputPool) maybeMember() *ast.Term {
	if len(p.terms) == 0 {
		return p.leaf()
	}
	return p.member()
}

// derived adds to the pool a copy of object t with one key given another member, or dropped, or
// added: the other members are t's own terms.
func (p *inputPool) derived(t *ast.Term) *ast.Term {
	k := ast.StringTerm(pick(p.r, genInnerKeys))
	obj := shallowCopy(t.Value.(ast.Object), k)
	if t.Value.(ast.Object).Get(k) == nil || p.r.IntN(3) != 0 {
		obj.Insert(k, p.member())
	}
	return p.add(ast.NewTerm(obj))
}

func (p *inputPool) add(t *ast.Term) *ast.Term {
	p.ids[t] = len(p.terms)
	p.terms = append(p.terms, t)
	return t
}

// show writes t as JSON with each pooled term marked by its number (&3{"b": 1}), so a failure
// shows which inputs share which parts.
func (p *inputPool) show(t *ast.Term) string {
	var out strings.Builder
	p.write(&out, t)
	return out.String()
}

func (p *inputPool) write(out *strings.Builder, t *ast.Term) {
	if id, ok := p.ids[t]; ok {
		fmt.Fprintf(out, "&%d", id)
	}
	switch v := t.Value.(type) {
	case ast.Object:
		out.WriteString("{")
		for i, k := range v.Keys() {
			if i > 0 {
				out.WriteString(", ")
			}
			out.WriteString(k.String() + ": ")
			p.write(out, v.Get(k))
		}
		out.WriteString("}")
	case *ast.Array:
		out.WriteString("[")
		for i := range v.Len() {
			if i > 0 {
				out.WriteString(", ")
			}
			p.write(out, v.Elem(i))
		}
		out.WriteString("]")
	default:
		out.WriteString(t.String())
	}
}
