package engine_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/state"
)

// testClock is a settable clock.
type testClock struct{ now atomic.Pointer[time.Time] }

func newClock() *testClock {
	c := &testClock{}
	c.set(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	return c
}
func (c *testClock) set(t time.Time)         { c.now.Store(&t) }
func (c *testClock) advance(d time.Duration) { c.set(c.Now().Add(d)) }
func (c *testClock) Now() time.Time          { return *c.now.Load() }

// budgetPolicy allows tools/call until the session has made max_calls calls, labels calls to
// "fetch" as untrusted, requires approval for "delete", and allows session/open.
const budgetPolicy = `package mcp

default max_calls := 10

max_calls := data.limits.max_calls

calls := object.get(input, ["session", "calls", "total"], 0)

decision := {"result": "deny", "reasons": [{"code": "budget_exhausted", "message": "budget"}]} if {
	input.action == "tools/call"
	calls >= max_calls
} else := {"result": "require_approval", "reasons": [{"code": "destructive_tool", "message": "delete"}], "approval": {"scope": "session", "ttl_seconds": 60}} if {
	input.operation.tool == "delete"
} else := {"result": "allow", "reasons": [], "labels": labels} if {
	labels := {l | input.operation.tool == "fetch"; l := "untrusted_content"}
}
`

func policyFrom(t *testing.T, name string, files map[string]string) engine.Policy {
	t.Helper()
	fsys := fstest.MapFS{}
	for n, src := range files {
		fsys[n] = &fstest.MapFile{Data: []byte(src)}
	}
	p, err := engine.LoadPolicyFS(fsys, ".", name)
	if err != nil {
		t.Fatalf("load policy: %v", err)
	}
	return p
}

func newEngine(t *testing.T, clock *testClock, files map[string]string) *engine.Engine {
	t.Helper()
	cfg := engine.Config{HistoryLimit: 3}
	if clock != nil {
		cfg.Clock = clock.Now
	}
	e, err := engine.New(context.Background(), cfg, policyFrom(t, "test", files))
	if err != nil {
		t.Fatalf("new engine: %v", err)
	}
	return e
}

func call(session, tool string) *engine.Request {
	return &engine.Request{
		SessionID: session,
		Client:    engine.Client{ID: "client-1"},
		Subject:   engine.Subject{ID: "alice"},
		Server:    engine.Server{ID: "fs"},
		Operation: engine.Operation{Method: "tools/call", Tool: tool, Arguments: map[string]any{"path": "/tmp"}},
	}
}

func openSession(t *testing.T, e *engine.Engine, servers ...string) string {
	t.Helper()
	req := &engine.OpenRequest{Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"}}
	for _, s := range servers {
		req.Servers = append(req.Servers, engine.Server{ID: s})
	}
	d, info, err := e.OpenSession(context.Background(), req)
	if err != nil || d.Outcome != engine.Allow || info == nil {
		t.Fatalf("open session: %+v %v", d, err)
	}
	return info.Session.ID
}

func mustDecide(t *testing.T, e *engine.Engine, req *engine.Request) engine.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), req)
	if err != nil {
		t.Fatalf("decide: %v", err)
	}
	if d.ID == "" || d.PolicyRevision == "" {
		t.Fatalf("decision lacks id or revision: %+v", d)
	}
	return d
}

func wantOutcome(t *testing.T, d engine.Decision, want engine.Outcome, code string) {
	t.Helper()
	if d.Outcome != want {
		t.Fatalf("outcome %s, want %s (reasons %+v)", d.Outcome, want, d.Reasons)
	}
	if code == "" {
		return
	}
	for _, r := range d.Reasons {
		if r.Code == code {
			return
		}
	}
	t.Fatalf("reasons %+v lack code %q", d.Reasons, code)
}

func TestAllowRecordsCallsHistoryAndLabels(t *testing.T) {
	e := newEngine(t, newClock(), map[string]string{"p.rego": budgetPolicy})
	id := openSession(t, e)
	for _, tool := range []string{"read", "fetch", "read", "write"} {
		wantOutcome(t, mustDecide(t, e, call(id, tool)), engine.Allow, "")
	}
	info, err := e.GetSession(id)
	if err != nil {
		t.Fatal(err)
	}
	u := info.Usage
	if u.Total != 4 || u.ByServer()["fs"] != 4 || u.ByTool()["fs"]["read"] != 2 || u.ByTool()["fs"]["fetch"] != 1 {
		t.Errorf("usage counts wrong: %+v", u)
	}
	if len(u.History) != 3 || u.History[0].Tool != "fetch" || u.History[2].Tool != "write" {
		t.Errorf("history should keep the last 3 calls oldest first, got %+v", u.History)
	}
	if len(u.Labels) != 1 || u.Labels[0] != "untrusted_content" {
		t.Errorf("labels %v, want [untrusted_content]", u.Labels)
	}
}

func TestNonAllowChangesNothing(t *testing.T) {
	e := newEngine(t, newClock(), map[string]string{"p.rego": budgetPolicy})
	id := openSession(t, e)
	d := mustDecide(t, e, call(id, "delete"))
	wantOutcome(t, d, engine.RequireApproval, "destructive_tool")
	if d.Approval == nil || d.Approval.Scope != "session" || d.Approval.TTL != time.Minute {
		t.Errorf("approval request %+v, want scope session, ttl 1m", d.Approval)
	}
	info, _ := e.GetSession(id)
	if info.Usage.Total != 0 || len(info.Usage.History) != 0 {
		t.Errorf("a require_approval decision changed the session: %+v", info.Usage)
	}
}

func TestBudgetHoldsExactlyUnderConcurrency(t *testing.T) {
	e := newEngine(t, newClock(), map[string]string{"p.rego": budgetPolicy, "data.json": `{"limits": {"max_calls": 10}}`})
	id := openSession(t, e)
	var allowed, denied atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			d, err := e.Decide(context.Background(), call(id, "read"))
			switch {
			case err != nil:
				t.Error(err)
			case d.Outcome == engine.Allow:
				allowed.Add(1)
			case d.Outcome == engine.Deny && d.Reasons[0].Code == "budget_exhausted":
				denied.Add(1)
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 10 || denied.Load() != 90 {
		t.Fatalf("allowed %d, denied %d; want exactly 10 and 90", allowed.Load(), denied.Load())
	}
	info, _ := e.GetSession(id)
	if info.Usage.Total != 10 {
		t.Fatalf("session recorded %d calls, want 10", info.Usage.Total)
	}
}

func TestSessionRulesDenyBeforePolicy(t *testing.T) {
	clock := newClock()
	// A policy that allows everything: every deny below comes from the engine's own rules.
	e := newEngine(t, clock, map[string]string{"p.rego": "package mcp\n\ndecision := {\"result\": \"allow\"}\n"})
	revoked := openSession(t, e)
	if ids, err := e.RevokeSessions(context.Background(), state.RevokeFilter{SessionID: revoked}, "incident 42", "ops"); err != nil || len(ids) != 1 {
		t.Fatalf("revoke: %v %v", ids, err)
	}
	closed := openSession(t, e)
	if _, err := e.CloseSession(context.Background(), closed, "task done", "gw"); err != nil {
		t.Fatal(err)
	}
	bound := openSession(t, e, "github")
	active := openSession(t, e)

	otherClient := call(active, "read")
	otherClient.Client.ID = "client-2"
	otherSubject := call(active, "read")
	otherSubject.Subject.ID = "mallory"

	for _, tc := range []struct {
		name string
		req  *engine.Request
		code string
	}{
		{"unknown", call("ses_nope", "read"), engine.ReasonSessionUnknown},
		{"revoked", call(revoked, "read"), engine.ReasonSessionRevoked},
		{"closed", call(closed, "read"), engine.ReasonSessionClosed},
		{"other client", otherClient, engine.ReasonSessionMismatch},
		{"other subject", otherSubject, engine.ReasonSessionMismatch},
		{"unbound server", call(bound, "read"), engine.ReasonSessionServerUnbound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			wantOutcome(t, mustDecide(t, e, tc.req), engine.Deny, tc.code)
		})
	}

	wantOutcome(t, mustDecide(t, e, call(active, "read")), engine.Allow, "")
	clock.advance(15*time.Minute + time.Second)
	wantOutcome(t, mustDecide(t, e, call(active, "read")), engine.Deny, engine.ReasonSessionExpired)

	if _, err := e.CloseSession(context.Background(), revoked, "again", "gw"); !errors.Is(err, engine.ErrSessionEnded) {
		t.Errorf("closing a revoked session: %v, want ErrSessionEnded", err)
	}
	if _, err := e.RevokeSessions(context.Background(), state.RevokeFilter{}, "all", "ops"); err == nil {
		t.Error("a revoke without selector must be refused")
	}
}

// failingPolicies answer a sample call correctly (so they activate) and fail for the tool
// "read" in the way each name says.
var failingPolicies = map[string]string{
	"runtime error":       `{"result": "allow", "n": 1 / 0}`,
	"conflict":            `{"result": "allow"} if true` + "\n\ndecision := {\"result\": \"deny\"} if input.operation.tool == \"read\"",
	"not an object":       `"allow"`,
	"unknown result":      `{"result": "maybe"}`,
	"reasons not a list":  `{"result": "allow", "reasons": "x"}`,
	"reason without code": `{"result": "allow", "reasons": [{"message": "x"}]}`,
	"labels not strings":  `{"result": "allow", "labels": [1]}`,
	"bad approval scope":  `{"result": "require_approval", "approval": {"scope": "forever"}}`,
	"bad approval ttl":    `{"result": "require_approval", "approval": {"ttl_seconds": -1}}`,
	"bad session ttl":     `{"result": "allow", "session": {"max_ttl_seconds": "long"}}`,
	"timeout":             `{"result": "allow", "n": count([x | some x in numbers.range(1, 100000000)])}`,
}

// failingPolicy wraps a failing answer so that only calls to the tool "read" see it.
func failingPolicy(answer string) string {
	return "package mcp\n\ndecision := {\"result\": \"allow\"} if input.operation.tool != \"read\"\n\n" +
		"decision := " + answer + " if input.operation.tool == \"read\"\n"
}

func TestFailClosed(t *testing.T) {
	for name, answer := range failingPolicies {
		src := failingPolicy(answer)
		if name == "conflict" {
			src = "package mcp\n\ndecision := {\"result\": \"allow\"} if input.operation.tool != \"probe\"\n\ndecision := {\"result\": \"deny\"} if input.operation.tool == \"read\"\n\ndecision := {\"result\": \"allow\"} if input.operation.tool == \"probe\"\n"
		}
		t.Run(name, func(t *testing.T) {
			var logged bytes.Buffer
			logger := slog.New(slog.NewTextHandler(&logged, nil))
			e, err := engine.New(context.Background(), engine.Config{EvalTimeout: 50 * time.Millisecond, Logger: logger}, policyFrom(t, "bad", map[string]string{"p.rego": src}))
			if err != nil {
				t.Fatal(err)
			}
			d := mustDecide(t, e, call("", "read"))
			wantOutcome(t, d, engine.Deny, engine.ReasonPolicyError)
			if len(d.Reasons) != 1 {
				t.Errorf("policy error must be the only reason, got %+v", d.Reasons)
			}
			if !strings.Contains(logged.String(), "decision_id="+d.ID) {
				t.Errorf("the service log must name the decision: %s", logged.String())
			}
			if name == "timeout" && !strings.Contains(logged.String(), "timed out after 50ms") {
				t.Errorf("a timeout must be logged as one, not as a cancelled query: %s", logged.String())
			}
			wantOutcome(t, mustDecide(t, e, call("", "write")), engine.Allow, "")
		})
	}
}

// TestActivateChecksTheEntryPoint: a policy that answers a plain tool call with an error or
// in the wrong shape is refused before it serves.
func TestActivateChecksTheEntryPoint(t *testing.T) {
	e := newEngine(t, nil, map[string]string{"p.rego": "package mcp\n\ndecision := {\"result\": \"allow\"}\n"})
	old := e.Revision()
	for name, answer := range failingPolicies {
		if name == "conflict" || name == "timeout" || name == "runtime error" {
			continue // these are input-dependent, not checkable on one sample
		}
		t.Run(name, func(t *testing.T) {
			err := e.Activate(context.Background(), policyFrom(t, "bad", map[string]string{"p.rego": "package mcp\n\ndecision := " + answer + "\n"}))
			if err == nil || !strings.Contains(err.Error(), "malformed policy result") {
				t.Fatalf("activation error %v, want a malformed result", err)
			}
			if e.Revision() != old {
				t.Fatal("a refused policy must not serve")
			}
		})
	}
	// An entry point undefined for the sample is accepted: at run time it denies.
	if err := e.Activate(context.Background(), policyFrom(t, "narrow", map[string]string{"p.rego": "package mcp\n\ndecision := {\"result\": \"allow\"} if input.action == \"tools/list\"\n"})); err != nil {
		t.Fatalf("a policy undefined for the sample call should activate: %v", err)
	}
}

func TestActivate(t *testing.T) {
	e := newEngine(t, nil, map[string]string{"p.rego": "package mcp\n\ndecision := {\"result\": \"allow\"}\n"})
	old := e.Revision()
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"syntax error", map[string]string{"p.rego": "package mcp\n\ndecision := {"}, "p.rego:3"},
		{"v0 syntax", map[string]string{"p.rego": "package mcp\n\ndecision = {\"result\": \"allow\"} { true }\n"}, "p.rego"},
		{"no entry point", map[string]string{"p.rego": "package other\n\nx := 1\n"}, "entry point data.mcp.decision is not defined"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for n, src := range tc.files {
				fsys[n] = &fstest.MapFile{Data: []byte(src)}
			}
			p, err := engine.LoadPolicyFS(fsys, ".", "bad")
			if err == nil {
				err = e.Activate(context.Background(), p)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tc.want)
			}
			if e.Revision() != old {
				t.Fatalf("a rejected policy changed the revision to %s", e.Revision())
			}
		})
	}
	next := policyFrom(t, "next", map[string]string{"p.rego": "package mcp\n\ndecision := {\"result\": \"deny\", \"reasons\": [{\"code\": \"closed\"}]}\n"})
	if err := e.Activate(context.Background(), next); err != nil {
		t.Fatal(err)
	}
	d := mustDecide(t, e, call("", "read"))
	wantOutcome(t, d, engine.Deny, "closed")
	if d.PolicyRevision != next.Revision || next.Revision == old {
		t.Errorf("decision revision %s, want the new %s", d.PolicyRevision, next.Revision)
	}
}

func TestLoadPolicyFSRevisionAndTests(t *testing.T) {
	files := map[string]string{
		"p.rego":      "package mcp\n\ndecision := {\"result\": \"allow\"}\n",
		"p_test.rego": "package mcp_test\n\ntest_x if true\n",
		"data.json":   `{"limits": {"max_calls": 3}}`,
	}
	a := policyFrom(t, "x", files)
	b := policyFrom(t, "x", files)
	if a.Revision != b.Revision {
		t.Errorf("same content, different revisions %s and %s", a.Revision, b.Revision)
	}
	if _, ok := a.Modules["p_test.rego"]; ok || len(a.Modules) != 1 {
		t.Errorf("test modules must not be part of the decision policy: %v", a.Modules)
	}
	files["data.json"] = `{"limits": {"max_calls": 4}}`
	if c := policyFrom(t, "x", files); c.Revision == a.Revision {
		t.Error("changing data must change the revision")
	}
}

// echoPolicy returns the input document as an obligation, so tests can read what the policy saw.
const echoPolicy = "package mcp\n\ndecision := {\"result\": \"allow\", \"obligations\": {\"input\": input}}\n"

func TestInputDocument(t *testing.T) {
	clock := newClock()
	e := newEngine(t, clock, map[string]string{"p.rego": echoPolicy})
	id := openSession(t, e, "fs")
	mustDecide(t, e, call(id, "read"))
	yes := true
	req := call(id, "write")
	req.Client.Transport = "remote"
	req.Subject.Groups = []string{"eng"}
	req.Credential = engine.Credential{Scopes: []string{"files:write"}, Audience: []string{"https://fs"}}
	req.Operation.Annotations.Destructive = &yes
	req.Context = map[string]any{"trace": "abc"}
	d := mustDecide(t, e, req)

	in := d.Obligations["input"].(map[string]any)
	get := func(path ...string) any {
		var v any = in
		for _, p := range path {
			v = v.(map[string]any)[p]
		}
		return v
	}
	for _, tc := range []struct {
		path []string
		want string
	}{
		{[]string{"action"}, "tools/call"},
		{[]string{"now"}, "2026-11-26T12:00:00Z"},
		{[]string{"client", "id"}, "client-1"},
		{[]string{"client", "transport"}, "remote"},
		{[]string{"subject", "id"}, "alice"},
		{[]string{"server", "id"}, "fs"},
		{[]string{"operation", "tool"}, "write"},
		{[]string{"operation", "arguments", "path"}, "/tmp"},
		{[]string{"operation", "annotations", "destructiveHint"}, "true"},
		{[]string{"context", "trace"}, "abc"},
		{[]string{"session", "id"}, id},
		{[]string{"session", "status"}, "active"},
		{[]string{"session", "client_id"}, "client-1"},
		{[]string{"session", "calls", "total"}, "1"},
		{[]string{"session", "calls", "by_tool", "fs", "read"}, "1"},
		{[]string{"session", "expires_at"}, "2026-11-26T12:15:00Z"},
	} {
		if got := fmt.Sprint(get(tc.path...)); got != tc.want {
			t.Errorf("input.%v = %s, want %s", tc.path, got, tc.want)
		}
	}
	if _, ok := get("operation", "annotations").(map[string]any)["readOnlyHint"]; ok {
		t.Error("an annotation the server did not set must be absent, not false")
	}
	if h := get("session", "history").([]any); len(h) != 1 || h[0].(map[string]any)["tool"] != "read" {
		t.Errorf("history %v, want the one earlier read", h)
	}

	// Outside a session, input.session is null.
	d = mustDecide(t, e, call("", "read"))
	if v, ok := d.Obligations["input"].(map[string]any)["session"]; !ok || v != nil {
		t.Errorf("input.session = %v (present %v), want null", v, ok)
	}
}

func TestValidation(t *testing.T) {
	e := newEngine(t, nil, map[string]string{"p.rego": budgetPolicy})
	id := openSession(t, e)
	for _, tc := range []struct {
		field string
		edit  func(r *engine.Request)
	}{
		{"client.id", func(r *engine.Request) { r.Client.ID = "" }},
		{"server.id", func(r *engine.Request) { r.Server.ID = "" }},
		{"operation.method", func(r *engine.Request) { r.Operation.Method = "" }},
		{"operation.arguments", func(r *engine.Request) { r.Operation.Arguments = map[string]any{"f": func() {}} }},
		{"operation.arguments", func(r *engine.Request) {
			r.Operation.Arguments = map[string]any{"n": []any{json.Number("1e99999999999")}} // out of OPA's range
		}},
		{"context", func(r *engine.Request) { r.Context = map[string]any{"n": json.Number("1e99999999999")} }},
		{"credential.scopes[1]", func(r *engine.Request) { r.Credential.Scopes = []string{"repo", strings.Repeat("s", 1025)} }},
		{"subject.groups[0]", func(r *engine.Request) { r.Subject.Groups = []string{strings.Repeat("g", 1025)} }},
		{"credential.audience", func(r *engine.Request) { r.Credential.Audience = make([]string, 257) }},
	} {
		t.Run(tc.field, func(t *testing.T) {
			req := call(id, "read")
			tc.edit(req)
			_, err := e.Decide(context.Background(), req)
			var inv *engine.InvalidArgumentError
			if !errors.As(err, &inv) || inv.Field != tc.field {
				t.Fatalf("error %v, want an InvalidArgumentError on %s", err, tc.field)
			}
		})
	}
	if info, _ := e.GetSession(id); info.Usage.Total != 0 {
		t.Errorf("invalid requests changed the session: %+v", info.Usage)
	}
}

func TestFilterTools(t *testing.T) {
	src := `package mcp

decision := {"result": "deny", "reasons": [{"code": "tool_unknown"}]} if {
	input.action == "tools/list"
	not input.operation.tool in {"read", "delete"}
} else := {"result": "require_approval"} if {
	input.operation.tool == "delete"
} else := {"result": "allow"}
`
	e := newEngine(t, nil, map[string]string{"p.rego": src})
	id := openSession(t, e)
	req := call(id, "")
	f, err := e.FilterTools(context.Background(), req, []engine.Tool{{Name: "read"}, {Name: "evil"}, {Name: "delete"}})
	if err != nil {
		t.Fatal(err)
	}
	want := []engine.Outcome{engine.Allow, engine.Deny, engine.RequireApproval}
	for i, v := range f.Tools {
		if v.Outcome != want[i] {
			t.Errorf("tool %s: %s, want %s", v.Name, v.Outcome, want[i])
		}
	}
	if info, _ := e.GetSession(id); info.Usage.Total != 0 {
		t.Error("FilterTools must not move session state")
	}
	if _, err := e.FilterTools(context.Background(), call(id, ""), []engine.Tool{{Name: ""}}); err == nil {
		t.Error("a tool without a name must be refused")
	}
}

func TestEvaluateInput(t *testing.T) {
	e := newEngine(t, nil, map[string]string{"p.rego": budgetPolicy})
	ctx := context.Background()
	d, err := e.EvaluateInput(ctx, map[string]any{"action": "tools/call", "operation": map[string]any{"tool": "delete"}})
	if err != nil {
		t.Fatal(err)
	}
	wantOutcome(t, d, engine.RequireApproval, "destructive_tool")
	d, _ = e.EvaluateInput(ctx, map[string]any{"action": "tools/call", "session": map[string]any{"status": "revoked"}})
	wantOutcome(t, d, engine.Deny, engine.ReasonSessionRevoked)
}

// blockingPolicy allows every operation, but a tools/call only once the policy's http.send to
// url (the caller puts it in input.context.url) is answered: arrived receives the tool each
// such call is about, and each send on release answers one.
func blockingPolicy(t *testing.T) (p engine.Policy, url string, arrived chan string, release chan struct{}) {
	t.Helper()
	arrived, release = make(chan string, 4), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- r.URL.Query().Get("tool")
		<-release
		w.Write([]byte(`{}`))
	}))
	t.Cleanup(func() { close(release); srv.Close() })
	src := `package mcp

decision := {"result": "allow", "reasons": []} if {
	input.action != "tools/call"
} else := {"result": "allow", "reasons": []} if {
	http.send({"method": "get", "url": sprintf("%s?tool=%s", [input.context.url, input.operation.tool])}).status_code == 200
}
`
	return policyFrom(t, "slow", map[string]string{"p.rego": src}), srv.URL, arrived, release
}

// Evaluations beyond EvalConcurrency wait for a slot, and the evaluation timeout counts from
// when an evaluation starts, not from when it began to wait: a decision queued behind a slow
// one is not denied for the queue's sake. The policy blocks in http.send on a test server, so
// the test controls how long each evaluation holds its slot.
func TestEvaluationsWaitForASlot(t *testing.T) {
	p, url, arrived, release := blockingPolicy(t)
	e, err := engine.New(context.Background(), engine.Config{EvalConcurrency: 1, EvalTimeout: 2 * time.Second}, p)
	if err != nil {
		t.Fatal(err)
	}
	results := make(chan engine.Decision, 2)
	decide := func(tool string) {
		req := call("", tool)
		req.Context = map[string]any{"url": url}
		d, err := e.Decide(context.Background(), req)
		if err != nil {
			t.Error(err)
		}
		results <- d
	}
	go decide("first")
	if got := <-arrived; got != "first" {
		t.Fatalf("first evaluation asked for %q", got)
	}
	go decide("second")
	select {
	case got := <-arrived:
		t.Fatalf("%q evaluated while the only slot was taken", got)
	case <-time.After(300 * time.Millisecond):
	}
	// Hold the first for more than half the timeout, then the second as long: the second's
	// wait plus its own evaluation exceed the timeout, its evaluation alone does not.
	time.Sleep(900 * time.Millisecond)
	release <- struct{}{}
	if d := <-results; d.Outcome != engine.Allow {
		t.Fatalf("first decision: %+v", d)
	}
	if got := <-arrived; got != "second" {
		t.Fatalf("second evaluation asked for %q", got)
	}
	time.Sleep(1200 * time.Millisecond)
	release <- struct{}{}
	if d := <-results; d.Outcome != engine.Allow {
		t.Fatalf("second decision, queued %s and evaluated in less than the timeout: %+v", "1.2s", d)
	}

	// A caller that leaves while waiting for a slot gets a denial without an evaluation.
	go decide("third")
	if got := <-arrived; got != "third" {
		t.Fatalf("third evaluation asked for %q", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req := call("", "fourth")
	req.Context = map[string]any{"url": url}
	d, err := e.Decide(ctx, req)
	if err != nil || d.Outcome != engine.Deny || d.Reasons[0].Code != engine.ReasonPolicyError {
		t.Fatalf("decision whose caller left while queued: %+v %v", d, err)
	}
	release <- struct{}{}
	<-results
	select {
	case got := <-arrived:
		t.Fatalf("%q was evaluated after its caller left", got)
	default:
	}
}

// A built-in function that fails (here to_number on a string that is not a number) fails the
// whole evaluation, so the decision is denied with policy_error. OPA's default would make the
// expression undefined instead: the deny rule below would then quietly not fire, and the call
// would be allowed.
func TestBuiltinErrorFailsClosed(t *testing.T) {
	src := `package mcp

default decision := {"result": "allow", "reasons": []}

decision := {"result": "deny", "reasons": [{"code": "too_many"}]} if {
	to_number(input.operation.arguments.count) > 10
}
`
	e := newEngine(t, nil, map[string]string{"p.rego": src})
	req := call("", "read")
	req.Operation.Arguments = map[string]any{"count": "20"}
	if d := mustDecide(t, e, req); d.Outcome != engine.Deny || d.Reasons[0].Code != "too_many" {
		t.Fatalf("count \"20\": %+v, want deny too_many", d)
	}
	req.Operation.Arguments = map[string]any{"count": "lots"}
	if d := mustDecide(t, e, req); d.Outcome != engine.Deny || d.Reasons[0].Code != engine.ReasonPolicyError {
		t.Fatalf("count \"lots\": %+v, want deny policy_error", d)
	}
}

// A session revoked while the policy evaluates one of its calls: the revocation wins, and the
// caller is told the session was revoked (not that it is unknown). Both ways a call is
// recorded are covered: a session's first call (which writes its bucket) and a later one
// (which goes to the session's usage cell without a write transaction).
func TestRevokedDuringEvaluationSaysRevoked(t *testing.T) {
	for _, before := range []uint64{0, 1} {
		t.Run(fmt.Sprintf("after %d calls", before), func(t *testing.T) {
			p, url, arrived, release := blockingPolicy(t)
			e, err := engine.New(context.Background(), engine.Config{}, p)
			if err != nil {
				t.Fatal(err)
			}
			id := openSession(t, e)
			done := make(chan engine.Decision, 1)
			decide := func() {
				req := call(id, "read")
				req.Context = map[string]any{"url": url}
				d, err := e.Decide(context.Background(), req)
				if err != nil {
					t.Error(err)
				}
				done <- d
			}
			reach := func() {
				t.Helper()
				select {
				case <-arrived:
				case <-time.After(10 * time.Second):
					t.Fatal("the call never reached the policy")
				}
			}
			for range before {
				go decide()
				reach()
				release <- struct{}{}
				if d := <-done; d.Outcome != engine.Allow {
					t.Fatalf("call before the revocation: %+v", d)
				}
			}
			go decide()
			reach()
			if _, err := e.RevokeSessions(context.Background(), state.RevokeFilter{SessionID: id}, "compromised", "ops"); err != nil {
				t.Fatal(err)
			}
			release <- struct{}{}
			d := <-done
			if d.Outcome != engine.Deny || len(d.Reasons) != 1 || d.Reasons[0].Code != engine.ReasonSessionRevoked {
				t.Fatalf("decision evaluated across a revocation: %+v, want deny %s", d, engine.ReasonSessionRevoked)
			}
			if info, _ := e.GetSession(id); info.Usage.Total != before {
				t.Errorf("the revoked session recorded the call: %+v", info.Usage)
			}
		})
	}
}

// An evaluation stops when its caller goes away, and one that passed the evaluation timeout
// inside a built-in (where it asks nobody whether to stop) is denied as timed out all the same.
func TestEvaluationsStopForTheCallerAndTheClock(t *testing.T) {
	t.Run("caller went away", func(t *testing.T) {
		var logged bytes.Buffer
		src := failingPolicy(`{"result": "allow", "n": count([x | some x in numbers.range(1, 20000000); x > 0])}`)
		e, err := engine.New(context.Background(), engine.Config{EvalTimeout: time.Hour, Logger: slog.New(slog.NewTextHandler(&logged, nil))},
			policyFrom(t, "long", map[string]string{"p.rego": src}))
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		start := time.Now()
		d, err := e.Decide(ctx, call("", "read"))
		if err != nil {
			t.Fatal(err)
		}
		wantOutcome(t, d, engine.Deny, engine.ReasonPolicyError)
		if !strings.Contains(logged.String(), "caller went away during evaluation") {
			t.Errorf("the log must say the caller went away: %s", logged.String())
		}
		// Without the cancellation the evaluation runs for tens of seconds.
		if took := time.Since(start); took > 20*time.Second {
			t.Errorf("the evaluation ran %s after its caller left", took)
		}
	})
	t.Run("timeout passed in a built-in", func(t *testing.T) {
		p, url, arrived, release := blockingPolicy(t)
		var logged bytes.Buffer
		e, err := engine.New(context.Background(), engine.Config{EvalTimeout: 100 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(&logged, nil))}, p)
		if err != nil {
			t.Fatal(err)
		}
		req := call("", "slow")
		req.Context = map[string]any{"url": url}
		go func() {
			<-arrived
			time.Sleep(300 * time.Millisecond)
			release <- struct{}{}
		}()
		d := mustDecide(t, e, req)
		wantOutcome(t, d, engine.Deny, engine.ReasonPolicyError)
		if !strings.Contains(logged.String(), "timed out after 100ms") {
			t.Errorf("the log must say the evaluation timed out: %s", logged.String())
		}
	})
}

// Request.ContextFrom and Subject.AttributesFrom are called only when the serving policy
// reads what they give, and then it sees it.
func TestLazyContextIsConvertedOnlyWhenRead(t *testing.T) {
	for _, tc := range []struct {
		name  string
		src   string
		reads bool
	}{
		{"policy that does not read them", `package mcp

decision := {"result": "allow", "reasons": []}
`, false},
		{"policy that reads them", `package mcp

decision := {"result": "allow", "reasons": []} if {
	input.context.trace == "t-1"
	input.subject.attributes.team == "payments"
} else := {"result": "deny", "reasons": [{"code": "unseen", "message": "no context"}]}
`, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, nil, map[string]string{"p.rego": tc.src})
			var contexts, attributes int
			req := call("", "read")
			req.ContextFrom = func() map[string]any { contexts++; return map[string]any{"trace": "t-1"} }
			req.Subject.AttributesFrom = func() map[string]any { attributes++; return map[string]any{"team": "payments"} }
			wantOutcome(t, mustDecide(t, e, req), engine.Allow, "")
			want := 0
			if tc.reads {
				want = 1
			}
			if contexts != want || attributes != want {
				t.Errorf("context converted %d times, attributes %d times; want %d each", contexts, attributes, want)
			}
			// Given as maps, they are used as they are and ContextFrom is not called.
			req.Context, req.Subject.Attributes = map[string]any{"trace": "t-1"}, map[string]any{"team": "payments"}
			wantOutcome(t, mustDecide(t, e, req), engine.Allow, "")
			if contexts != want || attributes != want {
				t.Errorf("with maps given, context converted %d times, attributes %d times; want %d each", contexts, attributes, want)
			}
		})
	}
}
