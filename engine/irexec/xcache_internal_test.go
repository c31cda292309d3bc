package irexec

import (
	"context"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/ir"

	"github.com/arbiter-mcp/arbiter/policy"
)

// planOf plans data.p.x of src (a module of package p).
func planOf(t *testing.T, src string) *ir.Policy {
	t.Helper()
	m, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatal(err)
	}
	c := ast.NewCompiler()
	if c.Compile(map[string]*ast.Module{"p.rego": m}); c.Failed() {
		t.Fatal(c.Errors)
	}
	pol, err := Plan(context.Background(), c, ast.MustParseRef("data.p.x"))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// readsOf analyses every function of pol, by rule name (the function's name after g0.data.p.).
func readsOf(pol *ir.Policy) map[string]*reads {
	a := &inputPaths{funcs: map[string]*ir.Func{}, out: map[string]*reads{}}
	for _, s := range pol.Static.Strings {
		a.strings = append(a.strings, s.Value)
	}
	for _, f := range pol.Funcs.Funcs {
		a.funcs[f.Name] = f
	}
	out := map[string]*reads{}
	for _, f := range pol.Funcs.Funcs {
		out[strings.TrimPrefix(f.Name, "g0.data.p.")] = a.of(f.Name)
	}
	return out
}

func definedString(r *reads) []string {
	return pathsString(&reads{paths: r.defined})
}

func pathsString(r *reads) []string {
	var out []string
	for _, p := range r.paths {
		out = append(out, strings.Join(p, "."))
	}
	slices.Sort(out)
	return out
}

// TestInputPathsOfRules: the analysis finds the input paths a rule can read, through the rules
// it calls and object.get with a constant path, with a path under one read whole left out;
// passing the input on whole (to a built-in) reads all of it, and time.now_ns makes a rule's
// value depend on more than its input.
func TestInputPathsOfRules(t *testing.T) {
	pol := planOf(t, `package p

server := input.server.id

pair := [input.action, server]

budget := count(input.session.calls.by_tool)

guarded := input.server.id if input.server

labels := object.get(input, ["session", "labels"], [])

whole := object.get(input, [input.key, "labels"], [])

clock := time.now_ns()

cert := crypto.x509.parse_and_verify_certificates(input.pem)

present if { _ := input.session.id }

copied := y if {
	y := input.operation
	y.tool == "t"
}

x := [server, pair, budget, guarded, labels, whole, clock, cert, present, copied]
`)
	got := readsOf(pol)
	for name, want := range map[string][]string{
		"server":  {"server.id"},
		"pair":    {"action", "server.id"},
		"budget":  {"session.calls.by_tool"},
		"guarded": {"server"},
		"copied":  {"operation"},
	} {
		r := got[name]
		if r == nil {
			t.Fatalf("no function for rule %s", name)
		}
		if r.whole || r.impure || !slices.Equal(pathsString(r), want) {
			t.Errorf("%s: paths %v whole %v impure %v; want paths %v", name, pathsString(r), r.whole, r.impure, want)
		}
	}
	if r := got["labels"]; r == nil || r.whole || !slices.Equal(pathsString(r), []string{"session.labels"}) {
		t.Errorf("labels reads input.session.labels through object.get: %+v", r)
	}
	if r := got["whole"]; r == nil || !r.whole {
		t.Errorf("whole passes the input to object.get with a path made at run time: %+v", r)
	}
	for _, name := range []string{"clock", "cert"} {
		if r := got[name]; r == nil || !r.impure {
			t.Errorf("%s reads the clock: %+v", name, r)
		}
	}
	// A reference whose value is not used still decides whether the rule is defined.
	if r := got["present"]; r == nil || r.whole || len(r.paths) != 0 || !slices.Equal(definedString(r), []string{"session", "session.id"}) {
		t.Errorf("present reads whether input.session and input.session.id are defined: %+v", r)
	}
	// A path read whole tells whether the paths under it are defined.
	if r := got["guarded"]; r == nil || len(r.defined) != 0 {
		t.Errorf("guarded reads input.server whole, which covers input.server.id being defined: %+v", r)
	}
}

func TestIdenticalTellsWritingsApart(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want bool
	}{
		{`1`, `1`, true},
		{`1`, `1.0`, false},
		{`"a"`, `"a"`, true},
		{`"1"`, `1`, false},
		{`true`, `true`, true},
		{`true`, `false`, false},
		{`null`, `null`, true},
		{`null`, `false`, false},
		// Composite values are identical to themselves only.
		{`{"a": 1}`, `{"a": 1}`, false},
		{`[1]`, `[1]`, false},
	} {
		if got := identical(ast.MustParseTerm(tc.a), ast.MustParseTerm(tc.b)); got != tc.want {
			t.Errorf("identical(%s, %s) = %v, want %v", tc.a, tc.b, got, tc.want)
		}
	}
	obj := ast.MustParseTerm(`{"a": [1]}`)
	if !identical(obj, obj) {
		t.Error("an object is not identical to itself")
	}
	if !identical(nil, nil) || identical(nil, ast.NullTerm()) || identical(ast.NullTerm(), nil) {
		t.Error("undefined is identical to undefined only")
	}
}

// TestCacheKeepsWhatItShould: a key is found again only with the same data document and the
// same values; a key holding more than maxKeyBytes is not kept; a cache that misses most of its
// trial is switched off, one that hits stays on.
func TestCacheKeepsWhatItShould(t *testing.T) {
	tree := &pathTree{}
	c := &fnCache{nodes: []int{tree.node([]string{"server", "id"})}}
	data, other := ast.MustParseTerm(`{"d": 1}`), ast.MustParseTerm(`{"d": 1}`)
	in := func(id string) *ast.Term {
		return ast.NewTerm(ast.NewObject(ast.Item(ast.StringTerm("server"), ast.ObjectTerm(ast.Item(ast.StringTerm("id"), ast.StringTerm(id))))))
	}
	keyOf := func(input *ast.Term) ([]*ast.Term, int) {
		t.Helper()
		k, h, ok := runKey(c, tree, input)
		if !ok {
			t.Fatalf("no key for %v", input)
		}
		return k, h
	}
	key, h := keyOf(in("fs"))
	c.put(data, key, h, ast.StringTerm("kept"))
	if k, h := keyOf(in("fs")); !func() bool { out, ok := c.get(data, k, h); return ok && out.Equal(ast.StringTerm("kept")) }() {
		t.Error("the same key and data did not find the value")
	}
	if k, h := keyOf(in("fs")); func() bool { _, ok := c.get(other, k, h); return ok }() {
		t.Error("an equal data document that is another revision's found the value")
	}
	if k, h := keyOf(in("gh")); func() bool { _, ok := c.get(data, k, h); return ok }() {
		t.Error("another server id found the value")
	}
	if _, _, ok := runKey(c, tree, ast.MustParseTerm(`{"server": {"id"}}`)); ok {
		t.Error("a key read through a set")
	}
	big := in(strings.Repeat("x", maxKeyBytes))
	key, h = keyOf(big)
	c.put(data, key, h, ast.StringTerm("big"))
	if _, ok := c.get(data, key, h); ok {
		t.Error("a key over maxKeyBytes was kept")
	}

	// Values of another data document start the table over.
	key, h = keyOf(in("fs"))
	c.put(data, key, h, ast.StringTerm("kept"))
	c.put(other, key, h, ast.StringTerm("other"))
	if _, ok := c.get(data, key, h); ok {
		t.Error("a value of the previous data document is still kept")
	}
	if _, _, ok := runKey(c, tree, ast.MustParseTerm(`"not an object"`)); ok {
		t.Error("a key of an input that is not an object")
	}

	for hit, wantOff := range map[bool]bool{false: true, true: false} {
		c := &fnCache{}
		for range cacheTrial {
			c.counted(hit)
		}
		if c.off.Load() != wantOff {
			t.Errorf("after a trial of hits=%v, off = %v, want %v", hit, c.off.Load(), wantOff)
		}
	}
}

// TestDefaultPolicyRulesAreKept: the rules of the parties (server, credential, tool) that every
// tools/call runs keep their values across runs: the analysis must not lose them.
func TestDefaultPolicyRulesAreKept(t *testing.T) {
	prog, err := New(defaultPolicyPlan(t))
	if err != nil {
		t.Fatal(err)
	}
	cached := map[string]bool{}
	eachInstr(prog, func(in *instr) {
		if in.fn != nil && in.fn.cache != nil {
			cached[in.fn.name] = true
		}
	})
	for _, name := range []string{"g0.data.mcp.servers.deny", "g0.data.mcp.credentials.deny", "g0.data.mcp.tools.deny", "g0.data.mcp.tools.approve"} {
		if !cached[name] {
			t.Errorf("%s keeps no values across runs; kept: %v", name, cached)
		}
	}
}

// defaultPolicyPlan plans data.mcp.decision of Arbiter's default policy.
func defaultPolicyPlan(t testing.TB) *ir.Policy {
	t.Helper()
	pol, err := Plan(context.Background(), defaultPolicyCompiler(t), ast.MustParseRef("data.mcp.decision"))
	if err != nil {
		t.Fatal(err)
	}
	return pol
}

// defaultPolicyCompiler compiles Arbiter's default policy.
func defaultPolicyCompiler(t testing.TB) *ast.Compiler {
	t.Helper()
	mods := map[string]*ast.Module{}
	err := fs.WalkDir(policy.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".rego") || strings.HasSuffix(path, "_test.rego") {
			return err
		}
		src, err := fs.ReadFile(policy.FS(), path)
		if err != nil {
			return err
		}
		m, err := ast.ParseModuleWithOpts(path, string(src), ast.ParserOptions{RegoVersion: ast.RegoV1})
		mods[path] = m
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c := ast.NewCompiler()
	if c.Compile(mods); c.Failed() {
		t.Fatal(c.Errors)
	}
	return c
}

// TestKeysFromTheRunsPathsAreKeys: the key a run makes from the values it found once per path
// (keyOf) is the key made by reading every path anew from the input (readKey), for every
// input, and paths share the nodes of their common prefix.
func TestKeysFromTheRunsPathsAreKeys(t *testing.T) {
	tree := &pathTree{}
	paths := [][]string{{"server", "id"}, {"server", "transport"}, {"action"}, {"a:b"}, {"a", "b"}, {"session", "calls", "total"}}
	defined := [][]string{{"session", "id"}, {"server"}}
	c := &fnCache{}
	for _, p := range paths {
		c.nodes = append(c.nodes, tree.node(p))
	}
	for _, p := range defined {
		c.definedNodes = append(c.definedNodes, tree.node(p))
	}
	if tree.node([]string{"server", "id"}) != c.nodes[0] || c.nodes[0] == c.nodes[1] || tree.parent[c.nodes[0]] != tree.parent[c.nodes[1]] {
		t.Errorf("server.id and server.transport: nodes %v, parents %v", c.nodes[:2], tree.parent)
	}
	if c.nodes[3] == c.nodes[4] {
		t.Error("a:b and a.b share a node")
	}
	for _, in := range []string{
		`{"server": {"id": "fs", "transport": "stdio"}, "action": "tools/call", "a": {"b": 1}, "a:b": 2, "session": {"calls": {"total": 3}}}`,
		`{"server": "fs", "action": 1.0}`,
		`{"server": {"id": ["x"]}, "session": {"calls": [1]}}`,
		`{"server": {"id"}}`,
		`{"session": {"id": null}}`,
		`{}`,
		`"not an object"`,
	} {
		input := ast.MustParseTerm(in)
		m := &machine{input: input, tree: tree, nodeVals: make([]*ast.Term, len(tree.parent)), nodeState: make([]uint8, len(tree.parent))}
		k1, h1, ok1 := c.keyOf(m, nil)
		k2, h2, ok2 := readKey(paths, defined, input)
		if ok1 != ok2 || h1 != h2 || len(k1) != len(k2) || ok1 && !sameKey(k1, k2) {
			t.Errorf("input %s: keyOf %v %d %v, readKey %v %d %v", in, k1, h1, ok1, k2, h2, ok2)
		}
		// Found once: a second key reads the same terms without reading the input again.
		if k3, _, _ := c.keyOf(m, nil); ok1 && !sameKey(k1, k3) {
			t.Errorf("input %s: a second keyOf gave %v", in, k3)
		}
	}
}

// runKey is the key of a call of c in a run on input, over the program's path tree.
func runKey(c *fnCache, tree *pathTree, input *ast.Term) ([]*ast.Term, int, bool) {
	m := &machine{input: input, tree: tree, nodeVals: make([]*ast.Term, len(tree.parent)), nodeState: make([]uint8, len(tree.parent))}
	return c.keyOf(m, nil)
}

// readKey is the key of paths and defined paths read straight from input, each from its root:
// what keyOf must give.
func readKey(paths, defined [][]string, input *ast.Term) (key []*ast.Term, hash int, ok bool) {
	if !isObject(input) {
		return nil, 0, false
	}
	at := func(p []string) (*ast.Term, bool) {
		t := input
		for _, k := range p {
			if _, isSet := t.Value.(ast.Set); isSet {
				return nil, false
			}
			if t = dot(t, ast.StringTerm(k)); t == nil {
				break
			}
		}
		return t, true
	}
	for _, p := range paths {
		t, ok := at(p)
		if !ok {
			return nil, 0, false
		}
		key, hash = append(key, t), hash*31+keyHash(t)
	}
	for _, p := range defined {
		t, ok := at(p)
		if !ok {
			return nil, 0, false
		}
		d := ast.InternedTerm(t != nil)
		key, hash = append(key, d), hash*31+keyHash(d)
	}
	return key, hash, true
}

// BenchmarkPlan plans the default policy's data.mcp.decision, as an activation does for each
// entry point.
func BenchmarkPlan(b *testing.B) {
	c := defaultPolicyCompiler(b)
	ref := ast.MustParseRef("data.mcp.decision")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Plan(context.Background(), c, ref); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNew readies the default policy's plan for data.mcp.decision: what an activation
// spends in New (resolving, the empty-return and kept-values analyses) for each entry point.
func BenchmarkNew(b *testing.B) {
	pol := defaultPolicyPlan(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := New(pol); err != nil {
			b.Fatal(err)
		}
	}
}
