package engine

import (
	"context"
	"fmt"
	"testing"
	"testing/fstest"
	"time"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
	"github.com/arbiter-mcp/arbiter/engine/state"

	"github.com/open-policy-agent/opa/v1/ast"
)

func TestReadsHistory(t *testing.T) {
	for _, tc := range []struct {
		src   string
		reads bool
	}{
		{"x := input.action", false},
		{"x := input.session.calls.total", false},
		{"x := input.session.labels[_]", false},
		{`x := object.get(input, ["session", "labels"], [])`, false},
		{`x := object.get(input, "action", "")`, false},
		{"import input.session as s\n\nx := s.calls", false},
		{"x := input.session.history", true},
		{"x := input.session.history[0].tool", true},
		{`x := input.session["history"]`, true},
		{"x := input.session", true},
		{"x := input", true},
		{"x := count(input)", true},
		{"x := [v | some k; v := input.session[k]]", true},
		{"x := [v | some k; v := input[k]]", true},
		{"import input.session as s\n\nx := s.history", true},
		{"import input.session\n\nx := session", true},
		{`x := object.get(input, ["session", "history"], [])`, true},
		{`x := object.get(input, "session", {})`, true},
		{"p := [\"action\"]\n\nx := object.get(input, p, [])", true},
		{"x := [v | walk(input, v)]", true},
		{"f(s) := s.history\n\nx := f(input.session)", true},
		{"x := y if { y := data.z with input.session.history as [] }", true},
		{"x := h if { object.get(input, \"action\", null, h) with input.action as input.session.history }", true},
		{"x if { object.get(input, \"action\", false) with input.action as input.session.history }", true},
		{"f(x, p, d) := x.session.history\n\nx := h if { h := object.get(input, \"action\", null) with object.get as f }", true},
		{"f(x, p, d) := x.session.history\n\ng := object.get(input, \"action\", null)\n\nx := h if { h := g with object.get as f }", true},
		{"x := y if { y := object.get(input, \"action\", null) with input as {\"action\": 1} }", true},
		{"x := $\"{input.session.history}\"", true},
		{"x := $\"{input.action} {input.session.labels}\"", false},
		{"x := 1 if false else := count(input.session.history)", true},
		{"x contains input.session.history[0].tool", true},
		{"x if { every h in input.session.history { h.tool != \"t\" } }", true},
		{"default x := 0\n\nx := n if { some n in input.session.history }", true},
	} {
		m, err := ast.ParseModuleWithOpts("p.rego", "package p\n\n"+tc.src+"\n", ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatalf("%s: %v", tc.src, err)
		}
		cm, err := (&compiledModules{}).get(map[string]*ast.Module{"p.rego": m})
		if err != nil {
			t.Fatalf("%s: %v", tc.src, err)
		}
		got := cm.reads.sub(keySession).has(keyHistory)
		if got != tc.reads {
			t.Errorf("%q: reads history %v, want %v", tc.src, got, tc.reads)
		}
	}
}

// TestOnlyPoliciesThatReadTheHistoryGetIt: a policy that cannot read input.session.history is
// given input.session without it (and nothing is cached for it); one that reads it sees every
// call, including those made under a policy that did not.
func TestOnlyPoliciesThatReadTheHistoryGetIt(t *testing.T) {
	ctx := context.Background()
	counting := policyOf(t, "counting", "package mcp\n\ndecision := {\"result\": \"allow\"} if input.action == \"session/open\"\nelse := {\"result\": \"allow\", \"obligations\": {\"seen\": count(input.session.history), \"keys\": object.keys(input.session)}}\n")
	blind := policyOf(t, "blind", "package mcp\n\ndecision := {\"result\": \"allow\"} if input.action == \"session/open\"\nelse := {\"result\": \"allow\", \"obligations\": {\"labels\": input.session.labels, \"calls\": input.session.calls.total}}\n")
	e, err := New(ctx, Config{}, counting)
	if err != nil {
		t.Fatal(err)
	}
	d, info, err := e.OpenSession(ctx, &OpenRequest{Client: Client{ID: "c"}, Subject: Subject{ID: "s"}})
	if err != nil || info == nil {
		t.Fatalf("open: %+v %v", d, err)
	}
	call := func() Decision {
		t.Helper()
		d, err := e.Decide(ctx, &Request{SessionID: info.Session.ID, Client: Client{ID: "c"}, Subject: Subject{ID: "s"},
			Server: Server{ID: "fs"}, Operation: Operation{Method: "tools/call", Tool: "read"}})
		if err != nil || d.Outcome != Allow {
			t.Fatalf("decide: %+v %v", d, err)
		}
		return d
	}
	if d := call(); fmt.Sprint(d.Obligations["seen"]) != "0" || !contains(d.Obligations["keys"], "history") {
		t.Fatalf("first call under a policy reading the history: %v", d.Obligations)
	}
	if err := e.Activate(ctx, blind); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if d := call(); fmt.Sprint(d.Obligations["calls"]) != fmt.Sprint(i+1) {
			t.Fatalf("call %d under a policy not reading the history: %v", i+2, d.Obligations)
		}
	}
	e.inputs.mu.Lock()
	cachedTerms := len(e.inputs.m[info.Session.ID].terms.terms)
	e.inputs.mu.Unlock()
	if cachedTerms != 0 {
		t.Errorf("%d history terms cached for a policy that cannot read them", cachedTerms)
	}
	if err := e.Activate(ctx, counting); err != nil {
		t.Fatal(err)
	}
	if d := call(); fmt.Sprint(d.Obligations["seen"]) != "4" {
		t.Fatalf("the history after three calls under the other policy: %v, want 4 entries", d.Obligations["seen"])
	}
}

// FilterTools and renewals see the history too when the policy reads it: the policy here
// allows only where the session has a history.
func TestFilterToolsAndRenewalsGetTheHistory(t *testing.T) {
	ctx := context.Background()
	p := policyOf(t, "needs-history", `package mcp

decision := {"result": "allow"} if input.action == "session/open"
else := {"result": "allow"} if input.operation.tool == "first"
else := {"result": "allow"} if count(input.session.history) >= 1
else := {"result": "deny", "reasons": [{"code": "no_history", "message": "no history"}]}
`)
	e, err := New(ctx, Config{}, p)
	if err != nil {
		t.Fatal(err)
	}
	client, subject := Client{ID: "c"}, Subject{ID: "s"}
	d, info, err := e.OpenSession(ctx, &OpenRequest{Client: client, Subject: subject, TTL: time.Minute})
	if err != nil || info == nil {
		t.Fatalf("open: %+v %v", d, err)
	}
	req := func(tool string) *Request {
		return &Request{SessionID: info.Session.ID, Client: client, Subject: subject, Server: Server{ID: "fs"},
			Operation: Operation{Method: "tools/call", Tool: tool}}
	}
	if d, err := e.Decide(ctx, req("first")); err != nil || d.Outcome != Allow {
		t.Fatalf("first call: %+v %v", d, err)
	}
	list := req("")
	list.Operation.Method = "tools/list"
	f, err := e.FilterTools(ctx, list, []Tool{{Name: "a"}, {Name: "b"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range f.Tools {
		if v.Outcome != Allow {
			t.Errorf("FilterTools: %s is %s %v; with the history it is allowed", v.Name, v.Outcome, v.Reasons)
		}
	}
	d, _, err = e.RenewSession(ctx, &RenewRequest{SessionID: info.Session.ID, Client: client, Subject: subject, TTL: time.Minute})
	if err != nil || d.Outcome != Allow {
		t.Errorf("renewal: %+v %v; with the history it is allowed", d, err)
	}
}

// Without history, input.session has no history key, whatever the usage holds.
func TestSessionTermWithoutHistory(t *testing.T) {
	u := &state.Usage{Total: 1, History: []state.HistoryEntry{{Server: "fs", Tool: "read", Method: "tools/call", At: time.Now()}}}
	sess := &state.Session{ID: "ses_1", ExpiresAt: time.Now().Add(time.Hour)}
	lifecycle := map[string]*inputReads{}
	for _, k := range []string{"id", "status", "created_at", "expires_at", "renewals", "client_id", "subject_id", "servers", "scopes", "calls", "labels"} {
		lifecycle[k] = readsAll
	}
	without, next := sessionTerm(nil, nil, sess, u, &inputReads{keys: lifecycle})
	if irexec.Whole(without).Value.(ast.Object).Get(keyHistory) != nil || len(next.terms)+len(next.history) != 0 {
		t.Errorf("input.session %v (cached %d terms) has a history", without, len(next.terms))
	}
	with, _ := sessionTerm(nil, nil, sess, u, readsAll)
	if h := irexec.Whole(with).Value.(ast.Object).Get(keyHistory); h == nil || h.Value.(*ast.Array).Len() != 1 {
		t.Errorf("input.session %v has no history of one entry", with)
	}
	if irexec.Whole(with).Value.(ast.Object).Len() != irexec.Whole(without).Value.(ast.Object).Len()+1 {
		t.Errorf("%v and %v differ by more than the history", with, without)
	}
}

func contains(v any, s string) bool {
	list, _ := v.([]any)
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func policyOf(t *testing.T, name, rego string) Policy {
	t.Helper()
	p, err := LoadPolicyFS(fstest.MapFS{"p.rego": {Data: []byte(rego)}}, ".", name)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A policy that reads nothing of input.session gets no usage decoded (the store gives the
// session's lifecycle alone), and still: its calls are recorded, the session's lifecycle
// denies as ever, and a policy that reads the session later sees every call.
func TestPoliciesBlindToTheSessionStillRecordAndDeny(t *testing.T) {
	ctx := context.Background()
	blind := policyOf(t, "blind", "package mcp\n\ndecision := {\"result\": \"allow\", \"labels\": [\"seen\"]}\n")
	counting := policyOf(t, "counting", "package mcp\n\ndecision := {\"result\": \"allow\", \"obligations\": {\"seen\": count(input.session.history), \"total\": input.session.calls.total, \"labels\": input.session.labels}}\n")
	e, err := New(ctx, Config{}, blind)
	if err != nil {
		t.Fatal(err)
	}
	if r := e.policy.Load().reads; r.sub(keySession) != nil {
		t.Fatalf("the blind policy reads input.session: %v", r)
	}
	_, info, err := e.OpenSession(ctx, &OpenRequest{Client: Client{ID: "c"}, Subject: Subject{ID: "s"}})
	if err != nil || info == nil {
		t.Fatalf("open: %v", err)
	}
	call := func() Decision {
		t.Helper()
		d, err := e.Decide(ctx, &Request{SessionID: info.Session.ID, Client: Client{ID: "c"}, Subject: Subject{ID: "s"},
			Server: Server{ID: "fs"}, Operation: Operation{Method: "tools/call", Tool: "read"}})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for range 3 {
		if d := call(); d.Outcome != Allow {
			t.Fatalf("decide: %+v", d)
		}
	}
	if err := e.Activate(ctx, counting); err != nil {
		t.Fatal(err)
	}
	if d := call(); d.Outcome != Allow || fmt.Sprint(d.Obligations) != "map[labels:[seen] seen:3 total:3]" {
		t.Fatalf("after three calls under the blind policy: %+v", d)
	}
	if err := e.Activate(ctx, blind); err != nil {
		t.Fatal(err)
	}
	// The session's own checks come before the policy: another client's call in it is denied.
	d, err := e.Decide(ctx, &Request{SessionID: info.Session.ID, Client: Client{ID: "other"}, Subject: Subject{ID: "s"},
		Server: Server{ID: "fs"}, Operation: Operation{Method: "tools/call", Tool: "read"}})
	if err != nil || d.Outcome != Deny || len(d.Reasons) != 1 || d.Reasons[0].Code != ReasonSessionMismatch {
		t.Fatalf("another client's call in the session under the blind policy: %+v %v", d, err)
	}
	if _, err := e.RevokeSessions(ctx, state.RevokeFilter{SessionID: info.Session.ID}, "test", "admin"); err != nil {
		t.Fatal(err)
	}
	if d := call(); d.Outcome != Deny || len(d.Reasons) != 1 || d.Reasons[0].Code != ReasonSessionRevoked {
		t.Fatalf("a revoked session under the blind policy: %+v", d)
	}
}
