package engine

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/arbiter-mcp/arbiter/engine/state"
	"github.com/arbiter-mcp/arbiter/policy"
)

func TestNameTermsAreSharedAndBounded(t *testing.T) {
	var names nameTerms
	if a, b := names.term("github"), names.term("github"); a != b || !a.Equal(ast.StringTerm("github")) {
		t.Fatalf("one name gave %v and %v, not one shared term", a, b)
	}
	if a, b := (*nameTerms)(nil).term("github"), (*nameTerms)(nil).term("github"); a == b {
		t.Error("without a cache, terms are shared")
	}
	for i := range maxNameTerms + 10 {
		names.term(fmt.Sprint("tool-", i))
	}
	// "github" and maxNameTerms+10 tools: the cache filled, started over, and holds the rest.
	if want := 1 + maxNameTerms + 10 - maxNameTerms; len(names.m) != want {
		t.Errorf("the cache holds %d names, want %d: started over once it held %d", len(names.m), want, maxNameTerms)
	}
	if a, b := names.term("tool-5"), names.term("tool-5"); a != b || !a.Equal(ast.StringTerm("tool-5")) {
		t.Errorf("after starting over: %v and %v", a, b)
	}
	long := strings.Repeat("s", maxNameBytes+1)
	if names.term(long) == names.term(long) {
		t.Error("a long name was cached")
	}
	if arr := names.terms([]string{"github", "fs"}); arr.Value.(*ast.Array).Elem(0) != names.term("github") {
		t.Error("an array of names does not share the names' terms")
	}
}

// TestSessionsShareNameTerms decides in two sessions, with every name a fresh string as
// decoding a request makes it, and checks that the inputs the store cached share the engine's
// name terms across sessions and equal the input built without any cache.
func TestSessionsShareNameTerms(t *testing.T) {
	ctx := context.Background()
	p, err := LoadPolicyFS(policy.FS(), ".", "default")
	if err != nil {
		t.Fatal(err)
	}
	// Session limits without "approval for unknown clients", so the sessions open active.
	p.Data["limits"].(map[string]any)["session"] = map[string]any{"max_calls": 100}
	e, err := New(ctx, Config{}, p)
	if err != nil {
		t.Fatal(err)
	}
	var sessions []*state.Session
	for _, subject := range []string{"alice", "bob"} {
		_, info, err := e.OpenSession(ctx, &OpenRequest{Client: Client{ID: strings.Clone("client-1")}, Subject: Subject{ID: subject}})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			req := &Request{
				SessionID: info.Session.ID,
				Client:    Client{ID: strings.Clone("client-1")},
				Subject:   Subject{ID: subject},
				Server:    Server{ID: strings.Clone("filesystem")},
				Operation: Operation{Method: strings.Clone("tools/call"), Tool: strings.Clone("read_file"), Arguments: map[string]any{"path": "/tmp/x"}},
			}
			if d, err := e.Decide(ctx, req); err != nil || d.Outcome != Allow {
				t.Fatalf("decide: %+v %v", d, err)
			}
		}
		sess, _, err := e.store.Get(info.Session.ID)
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, sess)
	}
	a, b := sessions[0], sessions[1]
	entry := func(s *state.Session, i int, key *ast.Term) *ast.Term {
		term, ok := s.Usage.History[i].Input.(*ast.Term)
		if !ok {
			t.Fatalf("history entry %d has no cached input", i)
		}
		return term.Value.(ast.Object).Get(key)
	}
	for _, key := range []*ast.Term{keyServer, keyTool, keyMethod} {
		if entry(a, 0, key) != entry(b, 1, key) {
			t.Errorf("history %v: two terms for one name across sessions", key)
		}
	}
	item := func(s *state.Session, key *ast.Term) *ast.Term {
		items, ok := s.Input.([][2]*ast.Term)
		if !ok {
			t.Fatalf("session %s has no cached lifecycle input", s.ID)
		}
		for _, it := range items {
			if it[0] == key {
				return it[1]
			}
		}
		t.Fatalf("no %v in the lifecycle input", key)
		return nil
	}
	if item(a, keyClientID) != item(b, keyClientID) {
		t.Error("client_id: two terms across sessions")
	}
	uncached := *a
	uncached.Input = nil
	uncached.Usage.History = slices.Clone(a.Usage.History)
	for i := range uncached.Usage.History {
		uncached.Usage.History[i].Input = nil
	}
	if got, want := sessionTerm(a, &a.Usage), sessionTerm(&uncached, &uncached.Usage); !got.Equal(want) {
		t.Errorf("input.session from the caches\n%v\ndiffers from the one built afresh\n%v", got, want)
	}
}
