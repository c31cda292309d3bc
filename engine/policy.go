package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
)

// logMaskRef is the rule a policy masks decision log arguments with, as OPA's own
// system.log.mask.
var logMaskRef = ast.MustParseRef("data.system.log.mask")

// DefaultEntrypoint is the rule a policy answers decisions with unless it names another.
const DefaultEntrypoint = "data.mcp.decision"

// Policy is a set of Rego modules and data, ready to compile.
type Policy struct {
	// Revision identifies the policy in decisions and the decision log.
	Revision string
	// Modules are parsed Rego v1 modules by file name. Test modules are not needed here.
	Modules map[string]*ast.Module
	// Data is the base document (data.*).
	Data map[string]any
	// Entrypoint is the rule evaluated for a decision; DefaultEntrypoint when empty.
	Entrypoint string
}

// LoadPolicyFS loads every *.rego (except *_test.rego) and data file (data.json, data.yaml)
// under root of fsys with OPA's loader. The revision is name plus a digest of the content, so
// the same policy always carries the same revision.
func LoadPolicyFS(fsys fs.FS, root, name string) (Policy, error) {
	res, err := loader.NewFileLoader().
		WithFS(fsys).
		WithRegoVersion(ast.RegoV1).
		Filtered([]string{root}, func(_ string, info fs.FileInfo, _ int) bool {
			return !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego")
		})
	if err != nil {
		return Policy{}, fmt.Errorf("load policy: %w", err)
	}
	p := Policy{Modules: make(map[string]*ast.Module, len(res.Modules)), Data: res.Documents}
	h := sha256.New()
	names := make([]string, 0, len(res.Modules))
	for n := range res.Modules {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		m := res.Modules[n]
		p.Modules[n] = m.Parsed
		fmt.Fprintf(h, "%s\x00%d\x00", n, len(m.Raw))
		h.Write(m.Raw)
	}
	data, err := json.Marshal(p.Data) // map keys are sorted: a stable digest
	if err != nil {
		return Policy{}, fmt.Errorf("digest policy data: %w", err)
	}
	h.Write(data)
	p.Revision = name + "@" + hex.EncodeToString(h.Sum(nil))[:12]
	return p, nil
}

// prepared is a compiled policy revision. It is immutable and swapped as a whole.
type prepared struct {
	revision string
	query    query
	// mask is data.system.log.mask, when the policy defines it (see LogMask).
	mask *rego.PreparedEvalQuery
	// reads is what the policy can read of input (readsOf): a decision builds only that,
	// which saves building, per decision, the parts no rule reads (for most policies the
	// session's history, the context and the subject's attributes).
	reads *inputReads
	// verdicts is the batch tools/list rule beside the entry point (ToolVerdictsRule), when
	// the policy defines it: FilterTools then evaluates once per call instead of once per tool.
	verdicts *query
	// programs run the queries that have a plan (query.plan names each one's), over data (the
	// base document as a term); nil when topdown decides, for the reason in planless.
	programs map[string]*irexec.Program
	data     *ast.Term
	planless string
}

// evaluator names what decides for the revision: EvaluatorIR or EvaluatorTopdown.
func (pq *prepared) evaluator() string {
	if pq.programs != nil {
		return EvaluatorIR
	}
	return EvaluatorTopdown
}

// ToolVerdictsRule is the rule, in the entry point's package, that FilterTools evaluates once
// for all the tools of a call when a policy defines it: {"listing": D, "tools": {NAME: D}}, the
// decision for every tool not named under "tools" and those of the tools named (see
// readVerdicts). Without it, FilterTools asks the entry point per tool.
const ToolVerdictsRule = "tool_verdicts"

// decisionOpts are the options of the queries that decide: results read as AST terms, and a
// failing built-in fails the evaluation (so the decision is denied) instead of leaving its
// expression undefined, which could let a deny rule quietly not fire.
var decisionOpts = []func(*rego.Rego){rego.GenerateJSON(keepTerm), rego.StrictBuiltinErrors(true)}

// compiledModules remembers the last modules compiled. A revision whose modules are the same as
// the last one's (a push that changes only data, such as a catalog update) reuses their
// compilation and plan instead of compiling and planning them again: neither OPA's compiler nor
// its planner reads data, and both results are read-only once made (the serving query already
// shares them).
type compiledModules struct {
	mu   sync.Mutex
	last *compiled
}

// compiled is one set of modules compiled: the compiler, what the modules can read of input,
// and their plan. Each revision holds the compiled it was made from, so
// the plan it is given is always of its own modules, whatever is compiled meanwhile.
type compiled struct {
	modules  map[string]*ast.Module
	compiler *ast.Compiler
	reads    *inputReads // readsOf the modules

	mu   sync.Mutex
	plan *planned // for the entry points last asked for (see planFor)
}

// get returns the compilation of modules, compiling them unless they are the last ones
// compiled.
func (c *compiledModules) get(modules map[string]*ast.Module) (*compiled, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.last != nil && sameModules(c.last.modules, modules) {
		return c.last, nil
	}
	// The modules are read once their references are resolved (imports such as
	// "import input.session" spelled out), before later stages rewrite them into forms that
	// hide what is read (object.get(input, ...) becomes "x = input; object.get(x, ...)").
	reads := readsAll
	compiler := ast.NewCompiler().WithEnablePrintStatements(false).
		WithStageAfterID(ast.StageResolveRefs, ast.CompilerStageDefinition{
			Name: "arbiter_input_reads", MetricName: "compile_stage_arbiter_input_reads",
			Stage: func(c *ast.Compiler) *ast.Error { reads = readsOf(c.Modules); return nil },
		})
	if compiler.Compile(modules); compiler.Failed() {
		return nil, fmt.Errorf("compile policy: %w", compiler.Errors)
	}
	c.last = &compiled{modules: maps.Clone(modules), compiler: compiler, reads: reads}
	return c.last, nil
}

// planFor returns the plan of these modules for entrypoints, planning them unless the last plan
// was for the same entry points. Like the compiler, a plan does not depend on data: revisions
// that change only data reuse it.
func (c *compiled) planFor(ctx context.Context, entrypoints []string, refs []ast.Ref) planned {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.plan == nil || !slices.Equal(c.plan.entrypoints, entrypoints) {
		p := planPolicy(ctx, c.compiler, entrypoints, refs)
		c.plan = &p
	}
	return *c.plan
}

// sameModules reports whether a and b are the same code at the same places: equal modules
// whose nodes also sit at the same rows and columns, since evaluation errors and explanations
// cite them (reformatting a file changes the locations, not the modules).
func sameModules(a, b map[string]*ast.Module) bool {
	if len(a) != len(b) {
		return false
	}
	for name, m := range a {
		n, ok := b[name]
		if !ok {
			return false
		}
		if m != n && (!m.Equal(n) || !slices.Equal(locations(m), locations(n))) {
			return false
		}
	}
	return true
}

// locations lists where each node of m is, in walk order.
func locations(m *ast.Module) [][2]int {
	var out [][2]int
	ast.WalkNodes(m, func(n ast.Node) bool {
		if l := n.Loc(); l != nil {
			out = append(out, [2]int{l.Row, l.Col})
		}
		return false
	})
	return out
}

// compile compiles p into a prepared query, checking that the entry point is a rule, and
// plans its decision queries unless evaluator is EvaluatorTopdown.
func compile(ctx context.Context, p Policy, modules *compiledModules, evaluator string) (*prepared, error) {
	entry := p.Entrypoint
	if entry == "" {
		entry = DefaultEntrypoint
	}
	ref, err := ast.ParseRef(entry)
	if err != nil || !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() {
		return nil, fmt.Errorf("entry point %q is not a ground reference under data", entry)
	}
	cm, err := modules.get(p.Modules)
	if err != nil {
		return nil, err
	}
	compiler, reads := cm.compiler, cm.reads
	if len(compiler.GetRulesForVirtualDocument(ref)) == 0 && len(compiler.GetRulesExact(ref)) == 0 {
		return nil, fmt.Errorf("entry point %s is not defined by any rule", entry)
	}
	data := p.Data
	if data == nil {
		data = map[string]any{}
	}
	store := inmem.NewFromObjectWithOpts(data, inmem.OptReturnASTValuesOnRead(true))
	// prepare readies a query of one rule. Decision queries hand back AST terms and fail on a
	// failing built-in (see decisionOpts); the log mask takes OPA's defaults.
	prepare := func(rule ast.Ref, opts ...func(*rego.Rego)) (*rego.PreparedEvalQuery, error) {
		all := append([]func(*rego.Rego){rego.ParsedQuery(ast.NewBody(ast.NewExpr(ast.NewTerm(rule)))), rego.Compiler(compiler), rego.Store(store)}, opts...)
		// Preparations on one compiler take turns with its planning (see planQuery).
		cm.mu.Lock()
		q, err := rego.New(all...).PrepareForEval(ctx)
		cm.mu.Unlock()
		if err != nil {
			return nil, fmt.Errorf("prepare %s: %w", rule, err)
		}
		return &q, nil
	}
	q, err := prepare(ref, decisionOpts...)
	if err != nil {
		return nil, err
	}
	pq := &prepared{revision: p.Revision, query: query{ref: ref, topdown: q, plan: ref.String()}, reads: reads}
	verdicts := append(ref[:len(ref)-1:len(ref)-1], ast.StringTerm(ToolVerdictsRule))
	if len(ref) > 1 && len(compiler.GetRulesForVirtualDocument(verdicts)) > 0 {
		vq, err := prepare(verdicts, decisionOpts...)
		if err != nil {
			return nil, err
		}
		pq.verdicts = &query{ref: verdicts, topdown: vq, plan: verdicts.String()}
	}
	if err := pq.usePlan(ctx, cm, evaluator, data); err != nil {
		return nil, err
	}
	if len(compiler.GetRulesWithPrefix(logMaskRef)) > 0 {
		if pq.mask, err = prepare(logMaskRef); err != nil {
			return nil, err
		}
	}
	return pq, nil
}

// usePlan gives pq the plan of its decision queries, unless evaluator says topdown or the
// policy cannot be planned; either way pq keeps its topdown queries.
func (pq *prepared) usePlan(ctx context.Context, cm *compiled, evaluator string, data map[string]any) error {
	if evaluator == EvaluatorTopdown {
		pq.topdownOnly(fmt.Sprintf("the evaluator is %q", EvaluatorTopdown))
		return nil
	}
	entrypoints, refs := []string{pq.query.plan}, []ast.Ref{pq.query.ref}
	if pq.verdicts != nil {
		entrypoints, refs = append(entrypoints, pq.verdicts.plan), append(refs, pq.verdicts.ref)
	}
	if path := mixedDocument(cm.compiler, data); path != "" {
		// topdown iterates such a document in its own order (base data, then rules), which an
		// array comprehension over it keeps; the plan's is sorted.
		pq.topdownOnly(fmt.Sprintf("%s holds both base data and rules, and the policy reads it whole or by a variable key", path))
		return nil
	}
	plan := cm.planFor(ctx, entrypoints, refs)
	if plan.programs == nil {
		pq.topdownOnly(plan.reason)
		return nil
	}
	v, err := ast.InterfaceToValue(data)
	if err != nil {
		return fmt.Errorf("policy data: %w", err)
	}
	sortAll(v)
	pq.programs, pq.data = plan.programs, ast.NewTerm(v)
	return nil
}

// mixedDocument names a document that both data and rules define (base data at a prefix of a
// package's path: data.q beside "package q" or "package q.r") and that some rule reads whole
// or by a variable key (data.q, data.q[k], data[k]): topdown iterates such a document in its
// own order, base data first, and the plan in another. A reference with a constant key below
// it (data.q.limit) reads one document, base data or rule, and is alike on both. "" when there
// is none.
func mixedDocument(compiler *ast.Compiler, data map[string]any) string {
	var mixed []ast.Ref
	for _, name := range slices.Sorted(maps.Keys(compiler.Modules)) {
		path := compiler.Modules[name].Package.Path
		var node any = data
		for i, t := range path[1:] {
			key, ok := t.Value.(ast.String)
			obj, isObj := node.(map[string]any)
			if !ok || !isObj {
				break
			}
			if node, ok = obj[string(key)]; !ok {
				break
			}
			mixed = append(mixed, path[:i+2])
		}
	}
	if len(mixed) == 0 {
		return ""
	}
	var found string
	reads := func(ref ast.Ref) {
		if found != "" || !ref.HasPrefix(ast.DefaultRootRef) {
			return
		}
		ground := ref.GroundPrefix()
		for _, m := range mixed {
			// The constant part of the reference stops at or above the mixed document.
			if len(ground) <= len(m) && m.HasPrefix(ground) {
				found = m.String()
				return
			}
		}
	}
	var vis *ast.GenericVisitor
	vis = ast.NewGenericVisitor(func(x any) bool {
		switch x := x.(type) {
		case ast.Ref:
			reads(x)
			for _, t := range x[1:] { // keys computed by other references
				vis.Walk(t)
			}
			return true
		case ast.Var:
			if x.Equal(ast.DefaultRootDocument.Value) {
				reads(ast.DefaultRootRef) // data on its own: the whole document
			}
		}
		return false
	})
	for _, name := range slices.Sorted(maps.Keys(compiler.Modules)) {
		for _, r := range compiler.Modules[name].Rules {
			vis.Walk(r)
		}
	}
	return found
}

// sortAll sorts every object and set in v now. AST collections sort their keys the first time
// they are read in order; runs share the data document, and a built-in copying an object while
// another run sorts it would race.
func sortAll(v ast.Value) {
	switch v := v.(type) {
	case ast.Object:
		for _, k := range v.Keys() {
			sortAll(v.Get(k).Value)
		}
	case ast.Set:
		v.Foreach(func(t *ast.Term) { sortAll(t.Value) })
	case *ast.Array:
		v.Foreach(func(t *ast.Term) { sortAll(t.Value) })
	}
}

// topdownOnly makes topdown decide for pq, for reason.
func (pq *prepared) topdownOnly(reason string) {
	pq.programs, pq.data, pq.planless = nil, nil, reason
	pq.query.plan = ""
	if pq.verdicts != nil {
		pq.verdicts.plan = ""
	}
}
