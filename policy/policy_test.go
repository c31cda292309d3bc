package policy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/cover"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/arbiter-mcp/arbiter/policy"
)

// minCoverage is the share of the policy's Rego lines (tests excluded) its unit tests must
// evaluate. CI runs go test ./..., so TestRego enforces it there.
const minCoverage = 90.0

// TestRego runs every Rego unit test of the embedded policy, as `opa test policy/` does,
// with one subtest per Rego test so a failure names the test, its file and line, and the
// expression that failed. It also measures the tests' coverage of the library and fails
// below minCoverage.
func TestRego(t *testing.T) {
	ctx := context.Background()

	loaded, err := loader.NewFileLoader().
		WithFS(policy.FS()).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotation(true).
		All([]string{"."})
	if err != nil {
		t.Fatalf("load embedded policy: %v", err)
	}
	store, err := loaded.Store()
	if err != nil {
		t.Fatalf("store embedded data: %v", err)
	}

	// Strict mode, as `opa check --strict`: unused variables, shadowed names and
	// deprecated built-ins are errors, not warnings.
	compiler := ast.NewCompiler().
		WithStrict(true).
		WithEnablePrintStatements(true).
		WithDefaultRegoVersion(ast.RegoV1)

	cov := cover.New()
	var results []*tester.Result
	err = storage.Txn(ctx, store, storage.TransactionParams{}, func(txn storage.Transaction) error {
		ch, err := tester.NewRunner().
			SetCompiler(compiler).
			SetStore(store).
			SetModules(loaded.ParsedModules()).
			EnableTracing(true).
			RaiseBuiltinErrors(true).
			CapturePrintOutput(true).
			SetCoverageQueryTracer(cov).
			SetCoverageRuns(nil).
			RunTests(ctx, txn)
		if err != nil {
			return err
		}
		for r := range ch {
			results = append(results, r)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("run Rego tests: %v", err)
	}
	if len(results) == 0 {
		t.Fatal("the embedded policy has no Rego tests")
	}

	// Results arrive in completion order; report them in source order.
	slices.SortFunc(results, func(a, b *tester.Result) int {
		if c := strings.Compare(a.Location.File, b.Location.File); c != 0 {
			return c
		}
		return a.Location.Row - b.Location.Row
	})
	for _, r := range results {
		t.Run(r.Package+"."+r.Name, func(t *testing.T) {
			where := fmt.Sprintf("%s:%d", r.Location.File, r.Location.Row)
			switch {
			case r.Skip:
				t.Skipf("%s: skipped (todo_test_)", where)
			case r.Error != nil:
				t.Errorf("%s: error: %v%s", where, r.Error, printed(r))
			case r.Fail:
				t.Errorf("%s: FAIL%s%s%s", where, failedAt(r.Trace), failedSubtests(r), printed(r))
			}
		})
	}

	covered, total, missed := libraryCoverage(cov, loaded.ParsedModules())
	if total == 0 {
		t.Fatal("coverage: the policy has no lines to cover")
	}
	pct := 100 * float64(covered) / float64(total)
	t.Logf("coverage of the policy library: %.1f%% of %d lines", pct, total)
	if pct < minCoverage {
		t.Errorf("the Rego tests cover %.1f%% of the policy library's %d lines, less than %.0f%%; not covered:\n%s",
			pct, total, minCoverage, strings.Join(missed, "\n"))
	}
}

// libraryCoverage counts the lines of the policy's modules, test modules left out, that the
// tests evaluated. (OPA's own figure counts the lines of *_test.rego files too.)
func libraryCoverage(cov *cover.Cover, modules map[string]*ast.Module) (covered, total int, missed []string) {
	library := map[string]*ast.Module{}
	for name, m := range modules {
		if !strings.HasSuffix(name, "_test.rego") {
			library[name] = m
		}
	}
	report := cov.Report(library)
	for name := range library {
		fr := report.Files[name]
		if fr == nil {
			continue
		}
		covered += fr.CoveredLines
		total += fr.CoveredLines + fr.NotCoveredLines
		for _, r := range fr.NotCovered {
			missed = append(missed, fmt.Sprintf("  %s:%d-%d", name, r.Start.Row, r.End.Row))
		}
	}
	slices.Sort(missed)
	return covered, total, missed
}

// failedAt names the expression that made a test fail: the last failed expression of the
// test's own query, the line `opa test` prints under FAILURES.
func failedAt(trace []*topdown.Event) string {
	for _, e := range slices.Backward(trace) {
		if e.Op != topdown.FailOp || e.Location == nil || e.QueryID == 0 {
			continue
		}
		expr, ok := e.Node.(*ast.Expr)
		if !ok {
			continue
		}
		if _, ok := expr.Terms.(*ast.Every); ok {
			continue // the interesting failure is inside the every body
		}
		// The source text reads better than the compiled expression, whose
		// variables are renamed.
		return fmt.Sprintf("\n  failed at %s:%d: %s", e.Location.File, e.Location.Row, e.Location.Text)
	}
	return ""
}

// failedSubtests lists the failing cases of a test written as a partial object rule.
func failedSubtests(r *tester.Result) string {
	var b strings.Builder
	for name, sr := range r.SubResults.Iter {
		if sr.Fail && len(sr.SubResults) == 0 {
			fmt.Fprintf(&b, "\n  case %s failed", strings.Join(name, "/"))
		}
	}
	return b.String()
}

// printed returns what the test printed with print(), which is often the clue.
func printed(r *tester.Result) string {
	if out := strings.TrimSpace(string(r.Output)); out != "" {
		return "\n  output:\n    " + strings.ReplaceAll(out, "\n", "\n    ")
	}
	return ""
}

// catalogFile mirrors the parts of data.json that the README, the examples and the service's
// tests rely on.
type catalogFile struct {
	Catalog struct {
		Clients map[string]struct {
			Owner string `json:"owner"`
		} `json:"clients"`
		Servers map[string]struct {
			Owner          string                     `json:"owner"`
			Transport      string                     `json:"transport"`
			Resource       string                     `json:"resource"`
			CommandDigests []string                   `json:"command_digests"`
			Tools          map[string]json.RawMessage `json:"tools"`
		} `json:"servers"`
	} `json:"catalog"`
	Flows struct {
		Toxic []struct {
			Name    string   `json:"name"`
			Sources []string `json:"sources"`
			Sink    string   `json:"sink"`
			OnMatch string   `json:"on_match"`
		} `json:"toxic"`
	} `json:"flows"`
	Limits struct {
		Session struct {
			MaxCalls      *int    `json:"max_calls"`
			MaxServers    *int    `json:"max_servers"`
			MaxTTLSeconds *int    `json:"max_ttl_seconds"`
			MaxRenewals   *int    `json:"max_renewals"`
			Renewal       *string `json:"renewal"`
			UnknownClient *string `json:"unknown_client"`
		} `json:"session"`
		TrustClasses map[string]struct {
			MaxTTLSeconds *int    `json:"max_ttl_seconds"`
			SessionOpen   *string `json:"session_open"`
		} `json:"trust_classes"`
		Pinning struct {
			DefinitionChanged string `json:"definition_changed"`
			DefinitionMissing string `json:"definition_missing"`
		} `json:"pinning"`
		Approval struct {
			Scope      string `json:"scope"`
			TTLSeconds int    `json:"ttl_seconds"`
		} `json:"approval"`
	} `json:"limits"`
}

type catalogTool struct {
	ReadOnly    *bool    `json:"read_only"`
	Destructive *bool    `json:"destructive"`
	Labels      []string `json:"labels"`
}

// TestDataCatalog pins the parts of the shipped data.json that the README and the service's
// tests name: the two servers, their tools' risk flags and the limits.
func TestDataCatalog(t *testing.T) {
	raw, err := fs.ReadFile(policy.FS(), "data.json")
	if err != nil {
		t.Fatalf("read embedded data.json: %v", err)
	}
	var data catalogFile
	if err := json.Unmarshal(raw, &data); err != nil {
		t.Fatalf("parse data.json: %v", err)
	}

	servers := data.Catalog.Servers
	wantServers := []struct {
		id, transport, resource string
	}{
		{"github", "remote", "https://mcp.github.example.com"},
		{"filesystem", "stdio", ""},
	}
	for _, want := range wantServers {
		s, ok := servers[want.id]
		if !ok {
			t.Errorf("catalog has no server %q", want.id)
			continue
		}
		if s.Transport != want.transport {
			t.Errorf("server %q: transport = %q, want %q", want.id, s.Transport, want.transport)
		}
		if s.Resource != want.resource {
			t.Errorf("server %q: resource = %q, want %q", want.id, s.Resource, want.resource)
		}
		if s.Owner == "" {
			t.Errorf("server %q has no owner", want.id)
		}
	}

	yes, no := true, false
	wantTools := []struct {
		server, tool string
		readOnly     *bool
		destructive  *bool
	}{
		{"github", "search_issues", &yes, nil},
		{"github", "create_issue", nil, &no},
		{"github", "delete_repository", nil, &yes},
		{"filesystem", "read_file", &yes, nil},
		{"filesystem", "delete_file", nil, &yes},
	}
	for _, want := range wantTools {
		rawTool, ok := servers[want.server].Tools[want.tool]
		if !ok {
			t.Errorf("server %q has no tool %q", want.server, want.tool)
			continue
		}
		var tool catalogTool
		if err := json.Unmarshal(rawTool, &tool); err != nil {
			t.Errorf("tool %s/%s: %v", want.server, want.tool, err)
			continue
		}
		if want.readOnly != nil && (tool.ReadOnly == nil || *tool.ReadOnly != *want.readOnly) {
			t.Errorf("tool %s/%s: read_only = %v, want %v", want.server, want.tool, deref(tool.ReadOnly), *want.readOnly)
		}
		if want.destructive != nil && (tool.Destructive == nil || *tool.Destructive != *want.destructive) {
			t.Errorf("tool %s/%s: destructive = %v, want %v", want.server, want.tool, deref(tool.Destructive), *want.destructive)
		}
	}

	if m := data.Limits.Session.MaxCalls; m == nil || *m <= 0 {
		t.Errorf("limits.session.max_calls = %v, want a positive number", deref(m))
	}
	if m := data.Limits.Session.MaxTTLSeconds; m == nil || *m <= 0 {
		t.Errorf("limits.session.max_ttl_seconds = %v, want a positive number", deref(m))
	}
	if m := data.Limits.Session.MaxRenewals; m == nil || *m < 0 {
		t.Errorf("limits.session.max_renewals = %v, want a number >= 0", deref(m))
	}
	if r := data.Limits.Session.Renewal; r == nil || (*r != "allow" && *r != "deny" && *r != "approval") {
		t.Errorf("limits.session.renewal = %v, want allow, deny or approval", deref(r))
	}
	if s := data.Limits.Approval.Scope; s != "once" && s != "session" {
		t.Errorf("limits.approval.scope = %q, want once or session", s)
	}
	if data.Limits.Approval.TTLSeconds <= 0 {
		t.Errorf("limits.approval.ttl_seconds = %d, want > 0", data.Limits.Approval.TTLSeconds)
	}

	// The clients the README and the service's tests open sessions with are known, so their
	// sessions open without approval.
	for _, id := range []string{"ide-agent", "https://ide.example.com/client.json"} {
		if _, ok := data.Catalog.Clients[id]; !ok {
			t.Errorf("catalog.clients lacks %q", id)
		}
	}
	for id, s := range servers {
		if s.Owner == "" {
			t.Errorf("server %q has no owner: the policy denies every call to it", id)
		}
		if s.Transport != "stdio" && s.Transport != "remote" {
			t.Errorf("server %q: transport %q, want stdio or remote", id, s.Transport)
		}
		if s.Transport == "remote" && s.Resource == "" {
			t.Errorf("remote server %q has no resource: no token can match it", id)
		}
	}
	// Opening a session on a remote server needs no approval under the shipped data: the
	// service's tests open sessions on github.
	for class, tc := range data.Limits.TrustClasses {
		if class != "stdio" && class != "remote" {
			t.Errorf("limits.trust_classes has class %q; the classes are stdio and remote", class)
		}
		if tc.SessionOpen != nil && *tc.SessionOpen != "allow" && *tc.SessionOpen != "approval" && *tc.SessionOpen != "deny" {
			t.Errorf("limits.trust_classes.%s.session_open = %q, want allow, approval or deny", class, *tc.SessionOpen)
		}
	}
	if tc, ok := data.Limits.TrustClasses["remote"]; ok && tc.SessionOpen != nil && *tc.SessionOpen != "allow" {
		t.Errorf("limits.trust_classes.remote.session_open = %q: the service's tests open sessions on github without approval", *tc.SessionOpen)
	}
	if u := data.Limits.Session.UnknownClient; u != nil && *u != "allow" && *u != "approval" && *u != "deny" {
		t.Errorf("limits.session.unknown_client = %q, want allow, approval or deny", *u)
	}
	if p := data.Limits.Pinning.DefinitionChanged; p != "deny" && p != "approval" {
		t.Errorf("limits.pinning.definition_changed = %q, want deny or approval", p)
	}
	if p := data.Limits.Pinning.DefinitionMissing; p != "allow" && p != "deny" && p != "approval" {
		t.Errorf("limits.pinning.definition_missing = %q, want allow, deny or approval", p)
	}
	for i, f := range data.Flows.Toxic {
		if f.Name == "" || f.Sink == "" || len(f.Sources) == 0 || (f.OnMatch != "approval" && f.OnMatch != "deny") {
			t.Errorf("flows.toxic[%d] = %+v: want a name, sources, a sink and on_match approval or deny", i, f)
		}
	}
}

func deref[T any](p *T) any {
	if p == nil {
		return "absent"
	}
	return *p
}

// TestFSLayout checks that the files a loader expects sit where it expects them: the entry
// point and the one data.json at the top, the library's packages in lib/ and rules/, and
// nothing that is not policy (examples, the author's guide, Go files).
func TestFSLayout(t *testing.T) {
	for _, name := range []string{"decision.rego", "data.json", "lib/request.rego", "lib/catalog.rego", "rules/servers.rego"} {
		if _, err := fs.Stat(policy.FS(), name); err != nil {
			t.Errorf("embedded policy: %v", err)
		}
	}
	var files []string
	err := fs.WalkDir(policy.FS(), ".", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var tests int
	for _, f := range files {
		switch {
		case strings.HasSuffix(f, "_test.rego"):
			tests++
		case strings.HasSuffix(f, ".rego"), f == "data.json":
		default:
			t.Errorf("embedded policy holds %s, which is not policy", f)
		}
	}
	if tests == 0 {
		t.Errorf("embedded files %v lack the unit tests", files)
	}
	// Every Rego file on disk is embedded: a new directory must be named in policy.go.
	err = filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".rego") {
			return err
		}
		if !slices.Contains(files, filepath.ToSlash(path)) {
			t.Errorf("%s is not embedded; add its directory to the go:embed line in policy.go", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// BenchmarkDecision measures data.mcp.decision alone, prepared once over the embedded policy
// and data, for a few typical operations, so a policy change that slows every decision
// shows here before it shows in the engine.
func BenchmarkDecision(b *testing.B) {
	ctx := context.Background()
	loaded, err := loader.NewFileLoader().WithFS(policy.FS()).WithRegoVersion(ast.RegoV1).All([]string{"."})
	if err != nil {
		b.Fatalf("load embedded policy: %v", err)
	}
	store := inmem.NewFromObjectWithOpts(loaded.Documents, inmem.OptReturnASTValuesOnRead(true))
	opts := []func(*rego.Rego){rego.Query("data.mcp.decision"), rego.Store(store)}
	for _, m := range loaded.ParsedModules() {
		opts = append(opts, rego.ParsedModule(m))
	}
	query, err := rego.New(opts...).PrepareForEval(ctx)
	if err != nil {
		b.Fatalf("prepare data.mcp.decision: %v", err)
	}

	const github = `"server": {"id": "github", "resource": "https://mcp.github.example.com", "transport": "remote"},
		"credential": {"scopes": [], "audience": ["https://mcp.github.example.com"]},
		"session": {"id": "s", "calls": {"total": 3}}`
	cases := []struct {
		name, input, want string
	}{
		{"allow", `{"action": "tools/call", ` + github + `, "operation": {"method": "tools/call", "tool": "create_issue", "annotations": {}}}`, "allow"},
		{"require_approval", `{"action": "tools/call", ` + github + `, "operation": {"method": "tools/call", "tool": "delete_repository", "annotations": {}}}`, "require_approval"},
		{"deny", `{"action": "tools/call", ` + github + `, "operation": {"method": "tools/call", "tool": "drop_database", "annotations": {}}}`, "deny"},
		{"tools_list_filter", `{"action": "tools/list", ` + github + `, "operation": {"method": "tools/list", "tool": "search_issues"}}`, "allow"},
		{"session_renew", `{"action": "session/renew", "server": {}, "session": {"id": "s", "renewals": 1, "servers": ["github"], "calls": {"total": 3}},
			"session_request": {"servers": ["github"], "ttl_seconds": 600}}`, "require_approval"},
	}
	for _, c := range cases {
		input, err := ast.ParseTerm(c.input)
		if err != nil {
			b.Fatalf("%s: parse input: %v", c.name, err)
		}
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				rs, err := query.Eval(ctx, rego.EvalParsedInput(input.Value))
				if err != nil || len(rs) != 1 {
					b.Fatalf("eval: %v, %d results", err, len(rs))
				}
				if got := rs[0].Expressions[0].Value.(map[string]any)["result"]; got != c.want {
					b.Fatalf("result = %v, want %s", got, c.want)
				}
			}
		})
	}
}
