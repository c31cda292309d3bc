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
	query    rego.PreparedEvalQuery
	compiler *ast.Compiler
	// mask is data.system.log.mask, when the policy defines it (see LogMask).
	mask *rego.PreparedEvalQuery
	// verdicts is the batch tools/list rule beside the entry point (ToolVerdictsRule), when
	// the policy defines it: FilterTools then evaluates once per call instead of once per tool.
	verdicts *rego.PreparedEvalQuery
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

// compiledModules remembers the last modules compiled and their compiler. A revision whose
// modules are the same as the last one's (a push that changes only data, such as a catalog
// update) reuses that compiler instead of compiling them again: OPA's compiler does not read
// data, and it is read-only once compiled (the serving query already shares it).
type compiledModules struct {
	mu       sync.Mutex
	modules  map[string]*ast.Module
	compiler *ast.Compiler
}

// get returns a compiler of modules, compiling them unless they are the last ones compiled.
func (c *compiledModules) get(modules map[string]*ast.Module) (*ast.Compiler, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.compiler != nil && sameModules(c.modules, modules) {
		return c.compiler, nil
	}
	compiler := ast.NewCompiler().WithEnablePrintStatements(false)
	if compiler.Compile(modules); compiler.Failed() {
		return nil, fmt.Errorf("compile policy: %w", compiler.Errors)
	}
	c.modules, c.compiler = maps.Clone(modules), compiler
	return compiler, nil
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

// compile compiles p into a prepared query, checking that the entry point is a rule.
func compile(ctx context.Context, p Policy, modules *compiledModules) (*prepared, error) {
	entry := p.Entrypoint
	if entry == "" {
		entry = DefaultEntrypoint
	}
	ref, err := ast.ParseRef(entry)
	if err != nil || !ref.HasPrefix(ast.DefaultRootRef) || !ref.IsGround() {
		return nil, fmt.Errorf("entry point %q is not a ground reference under data", entry)
	}
	compiler, err := modules.get(p.Modules)
	if err != nil {
		return nil, err
	}
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
		q, err := rego.New(all...).PrepareForEval(ctx)
		if err != nil {
			return nil, fmt.Errorf("prepare %s: %w", rule, err)
		}
		return &q, nil
	}
	q, err := prepare(ref, decisionOpts...)
	if err != nil {
		return nil, err
	}
	pq := &prepared{revision: p.Revision, query: *q, compiler: compiler}
	verdicts := append(ref[:len(ref)-1:len(ref)-1], ast.StringTerm(ToolVerdictsRule))
	if len(ref) > 1 && len(compiler.GetRulesForVirtualDocument(verdicts)) > 0 {
		if pq.verdicts, err = prepare(verdicts, decisionOpts...); err != nil {
			return nil, err
		}
	}
	if len(compiler.GetRulesWithPrefix(logMaskRef)) > 0 {
		if pq.mask, err = prepare(logMaskRef); err != nil {
			return nil, err
		}
	}
	return pq, nil
}
