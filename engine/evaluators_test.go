package engine

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/arbiter-mcp/arbiter/engine/irexec"

	"github.com/arbiter-mcp/arbiter/policy"
)

// evaluatorPair is the default policy served by two engines, one per evaluator.
func evaluatorPair(t *testing.T) (ir, topdown *Engine) {
	t.Helper()
	p, err := LoadPolicyFS(policy.FS(), ".", "default")
	if err != nil {
		t.Fatal(err)
	}
	// A generous timeout, so a loaded machine (-race) cannot turn a slow decision into a
	// policy_error on one side only; policy errors are logged to the test.
	cfg := Config{
		Clock:       func() time.Time { return time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) },
		EvalTimeout: 10 * time.Second,
		Logger:      slog.New(slog.NewTextHandler(t.Output(), nil)),
	}
	if ir, err = New(context.Background(), cfg, p); err != nil {
		t.Fatal(err)
	}
	cfg.Evaluator = EvaluatorTopdown
	if topdown, err = New(context.Background(), cfg, p); err != nil {
		t.Fatal(err)
	}
	if got, why := ir.Evaluator(); got != EvaluatorIR {
		t.Fatalf("the default policy is decided by %s (%s), not by its plan", got, why)
	}
	if got, _ := topdown.Evaluator(); got != EvaluatorTopdown {
		t.Fatalf("Evaluator: topdown engine reports %s", got)
	}
	return ir, topdown
}

// TestEvaluatorsAgreeOnTheDefaultPolicy decides the policy guide's examples and thousands of
// variations of them (every action, server and tool of the catalog, and unknown ones;
// credentials, annotations, definition hashes, session counts and labels changed, fields
// removed or mistyped) with the plan executor and with OPA's topdown evaluator: the decisions
// must be the same in every field a gateway reads.
func TestEvaluatorsAgreeOnTheDefaultPolicy(t *testing.T) {
	ctx := context.Background()
	ir, topdown := evaluatorPair(t)
	inputs, err := filepath.Glob("../policy/examples/*/input.json")
	if err != nil || len(inputs) < 20 {
		t.Fatalf("examples: %d, %v", len(inputs), err)
	}
	var bases []map[string]any
	for _, path := range inputs {
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, decodeInput(t, raw))
	}
	variations := 3000
	if testing.Short() {
		variations = 300
	}
	rng := rand.New(rand.NewPCG(7, 26))
	outcomes := map[Outcome]int{}
	for i := range len(bases) + variations {
		var input map[string]any
		if i < len(bases) {
			input = bases[i]
		} else {
			input = vary(t, bases[rng.IntN(len(bases))], rng)
		}
		raw, _ := json.Marshal(input)
		want, err := topdown.EvaluateInput(context.Background(), decodeInput(t, raw))
		if err != nil {
			t.Fatal(err)
		}
		got, err := ir.EvaluateInput(context.Background(), decodeInput(t, raw))
		if err != nil {
			t.Fatal(err)
		}
		outcomes[want.Outcome]++
		if g, w := gatewayView(got), gatewayView(want); !reflect.DeepEqual(g, w) {
			t.Fatalf("input %s\nplan decides    %s\ntopdown decides %s", raw, g, w)
		}
		// Of that input, only what the policy reads (what a decision builds) decides alike.
		v, err := ast.InterfaceToValue(decodeInput(t, raw))
		if err != nil {
			t.Fatal(err)
		}
		pq := ir.policy.Load()
		whole, part := ir.decideWith(ctx, pq, v, Decision{}), ir.decideWith(ctx, pq, pruned(v, pq.reads), Decision{})
		if g, w := gatewayView(part), gatewayView(whole); g != w {
			t.Fatalf("input %s\npruned to %v decides %s\nwhole decides      %s", raw, pruned(v, pq.reads), g, w)
		}
	}
	// The variations reach every outcome, or they test little. (The default policy guards its
	// inputs, so none of them is a policy error: the corpus of engine/irexec covers those.)
	for _, o := range []Outcome{Allow, Deny, RequireApproval} {
		if outcomes[o] < 20 {
			t.Errorf("only %d decisions were %s: %v", outcomes[o], o, outcomes)
		}
	}
	t.Logf("outcomes: %v", outcomes)
}

// TestEvaluatorsAgreeOnFilterTools lists every catalog tool and unknown ones, with and without
// definition hashes, through both evaluators' tool_verdicts.
func TestEvaluatorsAgreeOnFilterTools(t *testing.T) {
	ir, topdown := evaluatorPair(t)
	tools := []Tool{{Name: "read_file"}, {Name: "write_file"}, {Name: "delete_file"}, {Name: "move_file"}, {Name: "nope"},
		{Name: "git_status", DefinitionHash: "sha256:00"}, {Name: "git_log"}, {Name: "git_push"},
		{Name: "search_issues"}, {Name: "create_issue"}, {Name: "get_file_contents"}, {Name: "delete_repository"}}
	// Each server as a gateway that passes the server-level checks reaches it: the tool-level
	// rules then decide per tool.
	servers := []Server{
		{ID: "filesystem", Transport: "stdio"},
		{ID: "git", Transport: "stdio", CommandDigest: "sha256:cffdd50d2f2d229bb0bddd91277eb3f97fbd07c8daa5c486d317de6ef53813d6"},
		{ID: "github", Transport: "remote", Resource: "https://mcp.github.example.com"},
		{ID: "unknown", Transport: "remote"},
	}
	credential := Credential{Scopes: []string{"repo"}, Audience: []string{"https://mcp.github.example.com"},
		ClientID: "ide-agent", ExpiresAt: time.Date(2026, 11, 26, 13, 0, 0, 0, time.UTC)}
	outcomes := map[Outcome]int{}
	for _, server := range servers {
		var views [2]string
		for i, e := range []*Engine{ir, topdown} {
			_, info, err := e.OpenSession(context.Background(), &OpenRequest{Client: Client{ID: "ide-agent"}, Subject: Subject{ID: "alice"}})
			if err != nil || info == nil {
				t.Fatalf("open: %v", err)
			}
			f, err := e.FilterTools(context.Background(), &Request{SessionID: info.Session.ID, Client: Client{ID: "ide-agent", Transport: "remote"},
				Subject: Subject{ID: "alice"}, Server: server, Credential: credential, Operation: Operation{Method: "tools/list"}}, tools)
			if err != nil {
				t.Fatal(err)
			}
			out, _ := json.Marshal(f.Tools)
			views[i] = string(out)
			if i == 0 {
				for _, v := range f.Tools {
					outcomes[v.Outcome]++
				}
			}
		}
		if views[0] != views[1] {
			t.Errorf("server %s:\nplan    %s\ntopdown %s", server.ID, views[0], views[1])
		}
	}
	// The listing reaches the per-tool rules: tools shown and hidden on several servers, and
	// the changed definition of git_status needing approval.
	for o, least := range map[Outcome]int{Allow: 5, Deny: 5, RequireApproval: 1} {
		if outcomes[o] < least {
			t.Errorf("only %d verdicts were %s: %v", outcomes[o], o, outcomes)
		}
	}
}

// TestTopdownDecidesWhatThePlanCannotRun: a policy using "with" is served, by topdown, and says
// why; a bad evaluator name is refused.
func TestTopdownDecidesWhatThePlanCannotRun(t *testing.T) {
	p := Policy{Revision: "with", Modules: map[string]*ast.Module{"p.rego": ast.MustParseModule(
		"package mcp\n\nok if input.action == \"tools/call\"\n\ndecision := {\"result\": \"allow\"} if { ok with input.action as \"tools/call\" }\n")}}
	e, err := New(context.Background(), Config{}, p)
	if err != nil {
		t.Fatal(err)
	}
	got, why := e.Evaluator()
	if got != EvaluatorTopdown || !strings.Contains(why, "WithStmt") {
		t.Fatalf("Evaluator() = %s, %q; want topdown, because of the with", got, why)
	}
	d, err := e.EvaluateInput(context.Background(), map[string]any{"action": "resources/read"})
	if err != nil || d.Outcome != Allow {
		t.Fatalf("decision %+v %v", d, err)
	}
	if _, err := New(context.Background(), Config{Evaluator: "fast"}, p); err == nil || !strings.Contains(err.Error(), `"fast"`) {
		t.Fatalf("evaluator fast: %v", err)
	}
}

func decodeInput(t *testing.T, raw []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// gatewayView is what a gateway reads of a decision.
func gatewayView(d Decision) string {
	out, _ := json.Marshal(struct {
		Outcome     Outcome
		Reasons     []Reason
		Labels      []string
		Obligations map[string]any
		Approval    *ApprovalRequest
		MaxTTL      time.Duration
	}{d.Outcome, d.Reasons, d.Labels, d.Obligations, d.Approval, d.maxTTL})
	return string(out)
}

var (
	varyActions = []any{"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list",
		"sampling/createMessage", "elicitation/create", "session/open", "session/renew", "bogus", "", 7, nil}
	varyServers = []any{"github", "filesystem", "git", "research", "nope", "", nil, 3}
	varyTools   = []any{"search_issues", "create_issue", "add_comment", "delete_repository", "get_file_contents",
		"read_file", "list_directory", "write_file", "move_file", "delete_file", "git_status", "git_log", "git_commit", "git_push", "web_search", "nope", "", nil}
	varyLabels = []any{"private_data", "untrusted_content", "external_communication", "other"}
)

// vary returns a copy of base with a few random fields changed, removed or mistyped.
func vary(t *testing.T, base map[string]any, rng *rand.Rand) map[string]any {
	t.Helper()
	raw, _ := json.Marshal(base)
	in := decodeInput(t, raw)
	obj := func(key string) map[string]any {
		m, ok := in[key].(map[string]any)
		if !ok {
			m = map[string]any{}
			in[key] = m
		}
		return m
	}
	pick := func(xs []any) any { return xs[rng.IntN(len(xs))] }
	for range 1 + rng.IntN(4) {
		switch rng.IntN(16) {
		case 0, 1:
			in["action"] = pick(varyActions)
			obj("operation")["method"] = in["action"]
		case 2, 3:
			obj("server")["id"] = pick(varyServers)
		case 4, 5:
			obj("operation")["tool"] = pick(varyTools)
		case 6:
			obj("server")["transport"] = pick([]any{"stdio", "remote", "", nil})
			obj("client")["transport"] = pick([]any{"stdio", "remote", ""})
		case 7:
			obj("credential")["scopes"] = pick([]any{[]any{}, []any{"repo"}, "repo read", []any{"read", 5}, nil})
			obj("credential")["audience"] = pick([]any{[]any{}, "https://mcp.github.example.com", []any{"https://other"}, nil})
		case 8:
			delete(in, pick([]any{"credential", "session", "operation", "server", "client", "subject"}).(string))
		case 9:
			obj("operation")["annotations"] = pick([]any{map[string]any{}, map[string]any{"readOnlyHint": true},
				map[string]any{"destructiveHint": false}, map[string]any{"destructiveHint": true, "readOnlyHint": false}, "x"})
		case 10:
			obj("operation")["definition_hash"] = pick([]any{"", "sha256:00", "sha256:be261472ae776a08f7f47cf125196057463e7913cadaee2fcdf3653d815aea0d", 1})
		case 11:
			calls := map[string]any{"total": rng.IntN(400), "by_server": map[string]any{"github": rng.IntN(200), "filesystem": rng.IntN(200)},
				"by_tool": map[string]any{"github": map[string]any{"create_issue": rng.IntN(100)}}}
			obj("session")["calls"] = calls
		case 12:
			var labels []any
			for _, l := range varyLabels {
				if rng.IntN(2) == 0 {
					labels = append(labels, l)
				}
			}
			obj("session")["labels"] = labels
		case 13:
			obj("session")["renewals"] = pick([]any{0, 1, 5, 100, "2", nil})
			obj("session")["servers"] = pick([]any{[]any{}, []any{"github"}, []any{"github", "nope"}, "git"})
		case 14:
			obj("client")["id"] = pick([]any{"ide-agent", "https://ide.example.com/client.json", "stranger", "", nil})
			obj("session_request")["servers"] = pick([]any{[]any{"github", "filesystem"}, []any{"nope"}, "git", nil, []any{}})
		case 15:
			obj("server")["command_digest"] = pick([]any{"", "sha256:cffdd50d2f2d229bb0bddd91277eb3f97fbd07c8daa5c486d317de6ef53813d6", "sha256:bad"})
			obj("operation")["arguments"] = pick([]any{map[string]any{}, map[string]any{"path": "/etc/passwd"}, "x", nil})
		}
	}
	return in
}

// TestPlanDecidesConcurrently: decisions running at once on one revision (sharing its plan and
// its data) decide as they do one at a time. Run under -race, it also checks that nothing a
// run writes is shared.
func TestPlanDecidesConcurrently(t *testing.T) {
	ir, _ := evaluatorPair(t)
	inputs, err := filepath.Glob("../policy/examples/*/input.json")
	if err != nil || len(inputs) == 0 {
		t.Fatal(err)
	}
	raws := make([][]byte, len(inputs))
	want := make([]string, len(inputs))
	for i, path := range inputs {
		if raws[i], err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
		d, err := ir.EvaluateInput(context.Background(), decodeInput(t, raws[i]))
		if err != nil {
			t.Fatal(err)
		}
		want[i] = gatewayView(d)
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for n := range 40 {
				i := (g*7 + n) % len(raws)
				d, err := ir.EvaluateInput(context.Background(), decodeInput(t, raws[i]))
				if got := gatewayView(d); err != nil || got != want[i] {
					errs <- fmt.Sprintf("%s: %s (error %v), alone it decides %s", inputs[i], got, err, want[i])
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// TestConcurrentPreparesKeepTheirOwnPlans: revisions prepared at the same time each get the
// plan of their own modules, never the other's (compilations and plans are cached per module
// set, and a revision keeps the one it was compiled from).
func TestConcurrentPreparesKeepTheirOwnPlans(t *testing.T) {
	policyFor := func(tool string) Policy {
		return policyOf(t, tool, "package mcp\n\ndecision := {\"result\": \"allow\"} if input.operation.tool == \""+tool+"\"\n\nelse := {\"result\": \"deny\"}\n")
	}
	a, b := policyFor("x"), policyFor("y")
	e, err := New(context.Background(), Config{EvalTimeout: 10 * time.Second}, a)
	if err != nil {
		t.Fatal(err)
	}
	decide := func(tool string) Outcome {
		d, err := e.EvaluateInput(context.Background(), map[string]any{"action": "tools/call", "operation": map[string]any{"tool": tool}})
		if err != nil {
			t.Fatal(err)
		}
		return d.Outcome
	}
	for range 100 {
		var pa, pb *Prepared
		var errA, errB error
		var wg sync.WaitGroup
		wg.Go(func() { pa, errA = e.Prepare(context.Background(), a) })
		wg.Go(func() { pb, errB = e.Prepare(context.Background(), b) })
		wg.Wait()
		if errA != nil || errB != nil {
			t.Fatal(errA, errB)
		}
		if pa.p.programs == nil || pb.p.programs == nil {
			t.Fatalf("a revision is not on its plan: %q, %q", pa.p.planless, pb.p.planless)
		}
		e.Swap(pa)
		if decide("x") != Allow || decide("y") != Deny {
			t.Fatal("the revision of the policy allowing x decides otherwise")
		}
		e.Swap(pb)
		if decide("y") != Allow || decide("x") != Deny {
			t.Fatal("the revision of the policy allowing y decides otherwise")
		}
	}
}

// TestTopdownDecidesWhenThePlanDisagreesOrCannotBeTrusted: a plan that answers a sample request
// differently from topdown (here the stricter case of a rule topdown stops at its first
// success), or a document that both data and rules define (iterated in another order by the
// two), leaves the revision to topdown, and Evaluator says why.
func TestTopdownDecidesWhenThePlanDisagreesOrCannotBeTrusted(t *testing.T) {
	for _, tc := range []struct {
		name    string
		modules map[string]string
		data    map[string]any
		why     string
	}{
		{"disagrees", map[string]string{"p.rego": "package mcp\n\nvals := [\"1\", \"a\"]\n\npositive if {\n\tsome v in vals\n\tto_number(v) > 0\n}\n\ndecision := {\"result\": \"allow\"} if positive\n"},
			nil, "on a sample request the plan of data.mcp.decision answered <nil> (error:"},
		{"mixed", map[string]string{
			"p.rego": "package mcp\n\nimport data.q\n\ndecision := {\"result\": \"allow\", \"obligations\": {\"q\": [v | some v in q]}}\n",
			"q.rego": "package q\n\na := 1\n",
		}, map[string]any{"q": map[string]any{"c": 3}}, "data.q holds both base data and rules"},
		{"mixed by a variable key", map[string]string{
			"p.rego": "package mcp\n\ndecision := {\"result\": \"allow\", \"obligations\": {\"q\": [v | some k; v := data.q[k]]}}\n",
			"q.rego": "package q\n\na := 1\n",
		}, map[string]any{"q": map[string]any{"c": 3}}, "data.q holds both base data and rules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := engineOf(t, tc.name, tc.modules, tc.data)
			got, why := e.Evaluator()
			if got != EvaluatorTopdown || !strings.Contains(why, tc.why) {
				t.Fatalf("Evaluator() = %s, %q; want topdown because %q", got, why, tc.why)
			}
			// topdown decides: the stricter plan would have denied with policy_error.
			d, err := e.EvaluateInput(context.Background(), map[string]any{"action": "tools/call"})
			if err != nil || d.Outcome != Allow {
				t.Fatalf("decision %+v %v", d, err)
			}
		})
	}
}

// TestPlanDecidesBesideAMixedDocumentReadByConstantKeys: data and rules may share a document
// (data.bench.revision beside package bench) as long as the policy reads it only by constant
// keys below it: the plan still decides.
func TestPlanDecidesBesideAMixedDocumentReadByConstantKeys(t *testing.T) {
	e := engineOf(t, "shared", map[string]string{
		"p.rego":     "package mcp\n\ndecision := {\"result\": \"allow\", \"obligations\": {\"r\": data.bench.revision, \"c\": data.bench.code_revision}}\n",
		"bench.rego": "package bench\n\ncode_revision := 3\n",
	}, map[string]any{"bench": map[string]any{"revision": 7}})
	if got, why := e.Evaluator(); got != EvaluatorIR {
		t.Fatalf("Evaluator() = %s (%s), want the plan", got, why)
	}
	d, err := e.EvaluateInput(context.Background(), map[string]any{"action": "tools/call"})
	if err != nil || d.Outcome != Allow || fmt.Sprint(d.Obligations) != "map[c:3 r:7]" {
		t.Fatalf("decision %+v %v", d, err)
	}
}

// engineOf is an engine serving modules (Rego sources by file name) and data.
func engineOf(t *testing.T, revision string, modules map[string]string, data map[string]any) *Engine {
	t.Helper()
	p := Policy{Revision: revision, Modules: map[string]*ast.Module{}, Data: data}
	for name, src := range modules {
		m, err := ast.ParseModuleWithOpts(name, src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		p.Modules[name] = m
	}
	e, err := New(context.Background(), Config{}, p)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestEnginePlansDecideAsTopdown: every policy of the plan executor's differential corpus,
// planned as the engine plans a revision (planPolicy: OPA's planner over the modules as the
// engine compiled them), answers each of its inputs as OPA's topdown evaluator does (the same
// value, undefined, or an error on both sides; a case marked stricter may fail where topdown
// answers).
func TestEnginePlansDecideAsTopdown(t *testing.T) {
	cases := differentialCorpus(t)
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	ref := ast.MustParseRef("data.p.x")
	for _, c := range cases {
		data := map[string]any{}
		if c.Data != "" {
			if err := util.UnmarshalJSON([]byte(c.Data), &data); err != nil {
				t.Fatalf("%s: data: %v", c.Name, err)
			}
		}
		m, err := ast.ParseModuleWithOpts("p.rego", "package p\n\n"+c.Src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		cm, err := (&compiledModules{}).get(map[string]*ast.Module{"p.rego": m})
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		plan := cm.planFor(ctx, []string{ref.String()}, []ast.Ref{ref})
		if plan.programs == nil {
			t.Errorf("%s: not planned: %s", c.Name, plan.reason)
			continue
		}
		dataTerm := ast.MustParseTerm("{}")
		if c.Data != "" {
			dataTerm = ast.MustParseTerm(c.Data)
		}
		for _, in := range c.Inputs {
			input := ast.MustParseTerm(in)
			// The reference compiles the policy afresh for each input: OPA's topdown can
			// write a document merged from rules of different kinds into the compiled rules
			// themselves, so that later evaluations of the same compilation see it (the corpus
			// case "a set rule under a ref head and a rule giving its key a set": {"j": "b"}
			// and then {"j": "c"} answers "c": [1, 2]).
			q, err := rego.New(rego.Query("data.p.x"), rego.Module("p.rego", "package p\n\n"+c.Src), rego.Store(inmem.NewFromObject(data)),
				rego.StrictBuiltinErrors(true)).PrepareForEval(ctx)
			if err != nil {
				t.Fatalf("%s: %v", c.Name, err)
			}
			var want *ast.Term
			rs, werr := q.Eval(ctx, rego.EvalParsedInput(input.Value), rego.EvalTime(now))
			if werr == nil && len(rs) > 0 {
				v, err := ast.InterfaceToValue(rs[0].Expressions[0].Value)
				if err != nil {
					t.Fatal(err)
				}
				want = ast.NewTerm(v)
			}
			got, gerr := plan.programs[ref.String()].Eval(ctx, irexec.PlanName, input, dataTerm, irexec.Options{Time: now})
			switch {
			case werr != nil && gerr != nil:
			case c.Stricter && werr == nil && gerr != nil:
			case werr != nil || gerr != nil:
				t.Errorf("%s: input %s: topdown %v (error %v), plan %v (error %v)", c.Name, in, want, werr, got, gerr)
			case (want == nil) != (got == nil) || (want != nil && !want.Equal(got)):
				t.Errorf("%s: input %s: topdown %v, plan %v", c.Name, in, want, got)
			}
		}
	}
}
