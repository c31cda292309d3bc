package engine

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
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

// TestSessionTermsAreCachedAndShared decides in two sessions, with every name a fresh string
// as decoding a request makes it, and checks the cached input.session terms: history entries
// are built once and reused by later decisions, names share one term across sessions, and the
// cached parts give the same input.session as building it afresh.
func TestSessionTermsAreCachedAndShared(t *testing.T) {
	ctx := context.Background()
	p, err := LoadPolicyFS(policy.FS(), ".", "default")
	if err != nil {
		t.Fatal(err)
	}
	// Session limits without "approval for unknown clients", so the sessions open active.
	p.Data["limits"].(map[string]any)["session"] = map[string]any{"max_calls": 100}
	// The default policy does not read the history (see TestOnlyPoliciesThatReadTheHistoryGetIt);
	// a rule beside it that does makes the engine build it.
	p.Modules["recent.rego"] = ast.MustParseModule("package extra\n\nrecent := input.session.history\n")
	e, err := New(ctx, Config{}, p)
	if err != nil {
		t.Fatal(err)
	}
	decide := func(id, subject string) {
		t.Helper()
		req := &Request{
			SessionID: id,
			Client:    Client{ID: strings.Clone("client-1")},
			Subject:   Subject{ID: subject},
			Server:    Server{ID: strings.Clone("filesystem")},
			Operation: Operation{Method: strings.Clone("tools/call"), Tool: strings.Clone("read_file"), Arguments: map[string]any{"path": "/tmp/x"}},
		}
		if d, err := e.Decide(ctx, req); err != nil || d.Outcome != Allow {
			t.Fatalf("decide: %+v %v", d, err)
		}
	}
	cached := func(id string) *cachedSession {
		e.inputs.mu.Lock()
		defer e.inputs.mu.Unlock()
		slot := e.inputs.m[id]
		if slot == nil {
			t.Fatalf("session %s has no cached terms", id)
		}
		return slot.terms
	}
	var ids []string
	for _, subject := range []string{"alice", "bob"} {
		_, info, err := e.OpenSession(ctx, &OpenRequest{Client: Client{ID: strings.Clone("client-1")}, Subject: Subject{ID: subject}})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, info.Session.ID)
		for range 3 {
			decide(info.Session.ID, subject)
		}
	}
	a, b := cached(ids[0]), cached(ids[1])
	// Three decisions: the third saw two history entries, the first built by the second.
	if len(a.terms) != 2 {
		t.Fatalf("cached history of %d entries, want 2", len(a.terms))
	}
	decide(ids[0], "alice")
	if again := cached(ids[0]); again.terms[1] != a.terms[1] || again.terms[0] != a.terms[0] {
		t.Error("the next decision rebuilt history terms it had cached")
	} else if again.lifecycle[0][1] != a.lifecycle[0][1] {
		t.Error("the next decision rebuilt the lifecycle items")
	}
	field := func(term *ast.Term, key *ast.Term) *ast.Term { return term.Value.(ast.Object).Get(key) }
	for _, key := range []*ast.Term{keyServer, keyTool, keyMethod} {
		if field(a.terms[0], key) != field(b.terms[1], key) {
			t.Errorf("history %v: two terms for one name across sessions", key)
		}
	}
	item := func(c *cachedSession, key *ast.Term) *ast.Term {
		for _, it := range c.lifecycle {
			if it[0] == key {
				return it[1]
			}
		}
		t.Fatalf("no %v in the lifecycle items", key)
		return nil
	}
	if item(a, keyClientID) != item(b, keyClientID) {
		t.Error("client_id: two terms across sessions")
	}
	sess, err := e.store.Get(ids[1])
	if err != nil {
		t.Fatal(err)
	}
	u := &sess.Usage
	fromCache, _ := sessionTerm(&e.inputs.names, cached(ids[1]), sess, u, readsAll)
	afresh, _ := sessionTerm(nil, nil, sess, u, readsAll)
	if !fromCache.Equal(afresh) {
		t.Errorf("input.session from the cache\n%v\ndiffers from the one built afresh\n%v", fromCache, afresh)
	}
	if h := irexec.Whole(afresh).Value.(ast.Object).Get(keyHistory).Value.(*ast.Array); h.Len() != 3 {
		t.Errorf("history of %d entries, want 3", h.Len())
	}
}

// TestSessionTermsStayBounded: past their bound, sessions make room for each other.
func TestSessionTermsStayBounded(t *testing.T) {
	c := sessionTerms{max: 100}
	now := time.Now()
	for i := range c.max + 50 {
		c.term(&state.Session{ID: fmt.Sprint("ses_", i), ExpiresAt: now}, &state.Usage{}, nil, readsAll, nil)
	}
	if len(c.m) != c.max {
		t.Errorf("the cache holds %d sessions, want %d", len(c.m), c.max)
	}
	var some []string
	for id := range c.m {
		if some = append(some, id); len(some) == 2 {
			break
		}
	}
	c.forget(append(some, "never cached")...)
	if len(c.m) != c.max-2 || c.m[some[0]] != nil {
		t.Errorf("forgetting two sessions left %d cached", len(c.m))
	}
}

// TestSessionTermReusesOnlyMatchingEntries: a cached history entry's term is reused for the
// same entry wherever the window has moved it, and never for another entry.
func TestSessionTermReusesOnlyMatchingEntries(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	entry := func(tool string, s int) state.HistoryEntry {
		return state.HistoryEntry{Server: "fs", Tool: tool, Method: "tools/call", At: now.Add(time.Duration(s) * time.Second)}
	}
	sess := &state.Session{ID: "ses_1", ExpiresAt: now.Add(time.Hour)}
	_, cached := sessionTerm(nil, nil, sess, &state.Usage{History: []state.HistoryEntry{entry("a", 1), entry("b", 2), entry("c", 3)}}, readsAll)
	termOf := map[string]*ast.Term{"a": cached.terms[0], "b": cached.terms[1], "c": cached.terms[2]}
	for _, h := range [][]state.HistoryEntry{
		{entry("a", 1), entry("x", 2), entry("c", 3)}, // same start, another entry in the middle
		{entry("c", 3), entry("d", 4), entry("e", 5)}, // moved by two
		{entry("b", 2), entry("c", 3), entry("d", 4)}, // moved by one
		{entry("z", 9)}, // nothing in common
	} {
		u := &state.Usage{History: h}
		got, next := sessionTerm(nil, cached, sess, u, readsAll)
		want, _ := sessionTerm(nil, nil, sess, u, readsAll)
		if !got.Equal(want) {
			t.Errorf("history %v: from the cache\n%v\nwant\n%v", h, got, want)
		}
		for i, e := range h {
			reusable := termOf[e.Tool] != nil && e.At.Equal(now.Add(time.Duration(map[string]int{"a": 1, "b": 2, "c": 3}[e.Tool])*time.Second))
			if reused := next.terms[i] == termOf[e.Tool]; reused != reusable {
				t.Errorf("history %v, entry %d (%s): reused %v, want %v", h, i, e.Tool, reused, reusable)
			}
		}
	}
}

// TestCallsObjectIsTheCounts: input.session.calls, made whole, is the usage's counts (by_tool
// leaving out calls that named no tool), and reading it member by member finds the same
// values; what the policy does not read is not there.
func TestCallsObjectIsTheCounts(t *testing.T) {
	var names nameTerms
	for step, c := range []struct {
		calls []state.CallCount
		want  string
	}{
		{nil, `{"total": 0, "by_server": {}, "by_tool": {}}`},
		{[]state.CallCount{{Server: "fs", Tool: "read", N: 1}}, `{"total": 1, "by_server": {"fs": 1}, "by_tool": {"fs": {"read": 1}}}`},
		{[]state.CallCount{{Server: "docs", N: 2}, {Server: "fs", Tool: "read", N: 2}, {Server: "fs", Tool: "write", N: 1}, {Server: "git", Tool: "log", N: 1}},
			`{"total": 6, "by_server": {"docs": 2, "fs": 3, "git": 1}, "by_tool": {"fs": {"read": 2, "write": 1}, "git": {"log": 1}}}`},
		{[]state.CallCount{{Server: "fs", N: 1}, {Server: "fs", Tool: "read", N: 600}}, `{"total": 601, "by_server": {"fs": 601}, "by_tool": {"fs": {"read": 600}}}`},
	} {
		var total uint64
		for _, n := range c.calls {
			total += n.N
		}
		u := &state.Usage{Total: total, Calls: c.calls}
		calls := newCallsObject(&names, u, readsAll)
		want := ast.MustParseTerm(c.want)
		if got := irexec.Whole(calls); !got.Equal(want) {
			t.Errorf("step %d: made whole %v, want %v", step, got, want)
		}
		// Member by member, as a policy's references read it.
		path := func(keys ...string) *ast.Term {
			v := newCallsObject(&names, u, readsAll) // not made whole
			for _, k := range keys {
				if v = lazyMember(v, k); v == nil {
					return nil
				}
			}
			return irexec.Whole(v)
		}
		for _, p := range [][]string{{"total"}, {"by_server", "fs"}, {"by_server", "git"}, {"by_server", "nowhere"}, {"by_tool", "fs"}, {"by_tool", "fs", "read"},
			{"by_tool", "fs", "nothing"}, {"by_tool", "docs"}, {"by_tool", "fs", ""}, {"other"}} {
			var ref ast.Ref
			for _, k := range p {
				ref = append(ref, ast.StringTerm(k))
			}
			w, _ := want.Value.Find(ref)
			got := path(p...)
			if (w == nil) != (got == nil) || (w != nil && w.Compare(got.Value) != 0) {
				t.Errorf("step %d: %v: got %v, want %v", step, p, got, w)
			}
		}
	}
	// A policy reading only the total sees only the total.
	r := &inputReads{keys: map[string]*inputReads{"total": {whole: true}}}
	calls := newCallsObject(&names, &state.Usage{Total: 1, Calls: []state.CallCount{{Server: "fs", Tool: "read", N: 1}}}, r.freeze())
	if got, want := irexec.Whole(calls), ast.MustParseTerm(`{"total": 1}`); !got.Equal(want) {
		t.Errorf("reading the total: made whole %v, want %v", got, want)
	}
	if lazyMember(calls, "by_server") != nil {
		t.Error("by_server is there though the policy does not read it")
	}
}

// lazyMember is member key of a Lazy term, nil for none or for a term that is not a Lazy.
func lazyMember(t *ast.Term, key string) *ast.Term {
	l, ok := t.Value.(*irexec.Lazy)
	if !ok {
		return nil
	}
	return l.Member(key)
}

// TestRenewalRebuildsTheLifecycle: the cached lifecycle items describe one expiry and renewal
// count; after a renewal the policy sees the new ones.
func TestRenewalRebuildsTheLifecycle(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	sess := &state.Session{ID: "ses_1", CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	_, cached := sessionTerm(nil, nil, sess, &state.Usage{}, readsAll)
	renewed := *sess
	renewed.ExpiresAt, renewed.Renewals = now.Add(2*time.Hour), 1
	got, next := sessionTerm(nil, cached, &renewed, &state.Usage{}, readsAll)
	if next.lifecycle[0][1] == cached.lifecycle[0][1] {
		t.Error("the lifecycle items were reused after a renewal")
	}
	if want, _ := sessionTerm(nil, nil, &renewed, &state.Usage{}, readsAll); !got.Equal(want) {
		t.Errorf("after a renewal:\n%v\nwant\n%v", got, want)
	}
	if _, again := sessionTerm(nil, next, &renewed, &state.Usage{}, readsAll); again.lifecycle[0][1] != next.lifecycle[0][1] {
		t.Error("an unchanged lifecycle was rebuilt")
	}
}

// TestCachedTermsOwnTheirStrings: names longer than the name cache takes, and history keys, are
// copies, so a cached session does not keep its stored bytes alive.
func TestCachedTermsOwnTheirStrings(t *testing.T) {
	long := strings.Repeat("t", maxNameBytes+1)
	var names nameTerms
	if got := string(names.term(long).Value.(ast.String)); unsafe.StringData(got) == unsafe.StringData(long) {
		t.Error("a long name's term shares the caller's bytes")
	}
	now := time.Now()
	h := state.HistoryEntry{Server: strings.Clone("fs"), Tool: long, Method: strings.Clone("tools/call"), At: now}
	_, c := sessionTerm(&names, nil, &state.Session{ID: "ses_1", ExpiresAt: now}, &state.Usage{History: []state.HistoryEntry{h}}, readsAll)
	if k := c.history[0]; unsafe.StringData(k.tool) == unsafe.StringData(h.Tool) || unsafe.StringData(k.server) == unsafe.StringData(h.Server) {
		t.Error("a cached history key shares the usage's bytes")
	}
	// The cache's key is a copy too, kept when a later decision replaces the terms.
	cache := sessionTerms{max: 4}
	id := strings.Clone("ses_1")
	sess := &state.Session{ID: id, ExpiresAt: now}
	for range 2 {
		cache.term(sess, &state.Usage{}, nil, readsAll, nil)
		for k := range cache.m {
			if unsafe.StringData(k) == unsafe.StringData(id) {
				t.Fatal("the cache is keyed by the session's own bytes")
			}
		}
	}
	if len(cache.m) != 1 {
		t.Errorf("one session holds %d cache entries", len(cache.m))
	}
}

// TestDataOnlyRevisionsReuseCompiledCode: a revision whose modules are the same code as the
// serving one's (parsed anew, as a bundle push parses them) keeps its compiled modules and
// serves its own data; a change of code, or of where the code sits in its file, compiles again;
// a revision that fails to compile changes nothing.
func TestDataOnlyRevisionsReuseCompiledCode(t *testing.T) {
	ctx := context.Background()
	const src = "package mcp\n\ndecision := {\"result\": data.answer}\n"
	load := func(source string, answer string) Policy {
		t.Helper()
		m, err := ast.ParseModuleWithOpts("p.rego", source, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatal(err)
		}
		return Policy{Revision: answer, Modules: map[string]*ast.Module{"p.rego": m}, Data: map[string]any{"answer": answer}}
	}
	e, err := New(ctx, Config{}, load(src, "allow"))
	if err != nil {
		t.Fatal(err)
	}
	// The compiler of the code last compiled, which the serving revision was prepared with.
	compiler := func() *ast.Compiler {
		e.modules.mu.Lock()
		defer e.modules.mu.Unlock()
		return e.modules.last.compiler
	}
	outcome := func() Outcome {
		t.Helper()
		d, err := e.Decide(ctx, &Request{Client: Client{ID: "c"}, Server: Server{ID: "s"}, Operation: Operation{Method: "tools/call", Tool: "t"}})
		if err != nil {
			t.Fatal(err)
		}
		return d.Outcome
	}
	first := compiler()

	if err := e.Activate(ctx, load(src, "deny")); err != nil {
		t.Fatal(err)
	}
	if compiler() != first {
		t.Error("the same code parsed anew was compiled again")
	}
	if got := outcome(); got != Deny {
		t.Errorf("after a data-only revision: %s, want deny (the new data)", got)
	}

	if err := e.Activate(ctx, load("package mcp\n\ndecision := {\"result\": data.answer} if { input.action }\n", "allow")); err == nil {
		// input.action is a string, so this is a valid policy; it must be compiled.
		if compiler() == first {
			t.Error("changed code was not compiled")
		}
	} else {
		t.Fatal(err)
	}
	if err := e.Activate(ctx, load("package mcp\n\ndecision := {\"result\": data.answer}\n\n", "allow")); err != nil {
		t.Fatal(err)
	}
	reformatted := compiler()
	if err := e.Activate(ctx, load("package mcp\n\n\ndecision := {\"result\": data.answer}\n", "allow")); err != nil {
		t.Fatal(err)
	}
	if compiler() == reformatted {
		t.Error("code moved to another line kept the old compiled locations")
	}

	before := compiler()
	if err := e.Activate(ctx, load("package mcp\n\ndecision := {\"result\": data.answer} if { nope }\n", "deny")); err == nil {
		t.Fatal("a policy that does not compile was activated")
	}
	if compiler() != before || outcome() != Allow {
		t.Error("a failed activation changed what serves")
	}
}

func TestAnnotationsTermsHoldTheHintsSet(t *testing.T) {
	hints := []*bool{nil, new(false), new(true)}
	seen := map[*ast.Term]bool{}
	for _, ro := range hints {
		for _, de := range hints {
			for _, id := range hints {
				for _, ow := range hints {
					a := Annotations{ReadOnly: ro, Destructive: de, Idempotent: id, OpenWorld: ow}
					want := ast.NewObject()
					for _, h := range []struct {
						key string
						val *bool
					}{{"readOnlyHint", ro}, {"destructiveHint", de}, {"idempotentHint", id}, {"openWorldHint", ow}} {
						if h.val != nil {
							want.Insert(ast.StringTerm(h.key), ast.BooleanTerm(*h.val))
						}
					}
					got := annotationsTerm(a)
					if got.Value.Compare(want) != 0 {
						t.Errorf("annotations %s: got %v, want %v", describeHints(a), got, want)
					}
					if seen[got] {
						t.Errorf("annotations %s share a term with another set of hints", describeHints(a))
					}
					seen[got] = true
				}
			}
		}
	}
	if len(seen) != 81 {
		t.Errorf("%d distinct annotation objects, want 81", len(seen))
	}
}

func describeHints(a Annotations) string {
	s := func(b *bool) string {
		if b == nil {
			return "unset"
		}
		return fmt.Sprint(*b)
	}
	return fmt.Sprintf("readOnly=%s destructive=%s idempotent=%s openWorld=%s", s(a.ReadOnly), s(a.Destructive), s(a.Idempotent), s(a.OpenWorld))
}

func TestCountTermsAreNumbers(t *testing.T) {
	for _, n := range []uint64{0, 1, 7, 511, 512, 513, 1 << 20, 1<<31 - 1, 1 << 31, 1 << 40, 1<<64 - 1} {
		if got, want := countTerm(n), ast.UIntNumberTerm(n); !got.Equal(want) {
			t.Errorf("countTerm(%d) = %v, want %v", n, got, want)
		}
	}
}

// TestLazyItemsHoldEveryMember: an object of any number of members, made lazily, finds each
// member and is made whole as the object of them.
func TestLazyItemsHoldEveryMember(t *testing.T) {
	for n := range 15 {
		items := make([][2]*ast.Term, n)
		for i := range items {
			items[i] = ast.Item(ast.StringTerm(fmt.Sprint("k", i)), ast.IntNumberTerm(i))
		}
		l := newLazyItems(items)
		clear(items) // the Lazy keeps its own copy
		for i := range n {
			if got := lazyMember(l, fmt.Sprint("k", i)); got == nil || !got.Equal(ast.IntNumberTerm(i)) {
				t.Errorf("%d members: k%d is %v", n, i, got)
			}
		}
		if lazyMember(l, "missing") != nil {
			t.Errorf("%d members: a missing key found", n)
		}
		if got := irexec.Whole(l).Value.(ast.Object); got.Len() != n {
			t.Errorf("%d members: made whole with %d", n, got.Len())
		}
	}
}
