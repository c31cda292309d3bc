package engine

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/util"

	"github.com/arbiter-mcp/arbiter/engine/state"
	"github.com/arbiter-mcp/arbiter/policy"
)

// paths lists what r reads, one dotted path per subtree read whole ("" for the whole input).
func (r *inputReads) paths() []string {
	var out []string
	var walk func(n *inputReads, prefix string)
	walk = func(n *inputReads, prefix string) {
		if n.whole {
			out = append(out, prefix)
			return
		}
		for k, sub := range n.keys {
			walk(sub, strings.TrimPrefix(prefix+"."+k, "."))
		}
	}
	walk(r, "")
	slices.Sort(out)
	return out
}

// readsOfSource compiles a module of package p made of src and returns what it reads.
func readsOfSource(t *testing.T, src string) *inputReads {
	t.Helper()
	m, err := ast.ParseModuleWithOpts("p.rego", "package p\n\n"+src+"\n", ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	cm, err := (&compiledModules{}).get(map[string]*ast.Module{"p.rego": m})
	if err != nil {
		t.Fatalf("%s: %v", src, err)
	}
	return cm.reads
}

func TestReadsOf(t *testing.T) {
	for _, tc := range []struct {
		src  string
		want string // paths, comma-separated
	}{
		{"x := input.action", "action"},
		{"x := input.session.calls.total", "session.calls.total"},
		{"x := input.session.labels[_]", "session.labels"},
		{"x := input.session.history[0].tool", "session.history"},
		{`x := input.session["calls"]["by_tool"].fs`, "session.calls.by_tool.fs"},
		{"x := input.server\n\ny := input.server.id", "server"},
		{"x := input.server.id\n\ny := input.server", "server"},
		{"x := [input.action, input.client.id, input.client.name]", "action,client.id,client.name"},
		{`x := object.get(input, ["session", "labels"], [])`, "session.labels"},
		{`x := object.get(input, "action", "")`, "action"},
		{`x := object.get(input.session, "action", "")`, "session"},
		{"import input.session as s\n\nx := s.calls", "session.calls"},
		{"import input.session\n\nx := session", "session"},
		{"x := input", ""},
		{"x := count(input)", ""},
		{"x := [v | some k; v := input.session[k]]", "session"},
		{"x := [v | some k; v := input[k]]", ""},
		{"x := input[input.action]", ""},
		{"p := [\"action\"]\n\nx := object.get(input, p, [])", ""},
		{"x := [v | walk(input, v)]", ""},
		{"f(s) := s.history\n\nx := f(input.session)", "session"},
		{"f(i) := i.action\n\nx := f(input)", ""},
		{"x := y if { y := data.z with input.session.history as [] }", "session.history"},
		{"x := y if { y := data.z with input.action as input.operation.tool }", "action,operation.tool"},
		{"f(x, p, d) := x.session.history\n\nx := h if { h := object.get(input, \"action\", null) with object.get as f }", ""},
		{"x := $\"{input.action} {input.session.labels}\"", "action,session.labels"},
		{"x if { every h in input.session.history { h.tool != \"t\" } }", "session.history"},
		{"x := 1", "<nothing>"},
	} {
		got := strings.Join(readsOfSource(t, tc.src).paths(), ",")
		if got == "" && len(readsOfSource(t, tc.src).paths()) == 0 {
			got = "<nothing>"
		}
		if got != tc.want {
			t.Errorf("%q reads %q, want %q", tc.src, got, tc.want)
		}
	}
}

// The default policy reads a small part of its input, as the policy guide says; the rest is not
// built per decision.
func TestDefaultPolicyReads(t *testing.T) {
	p, err := LoadPolicyFS(policy.FS(), ".", "default")
	if err != nil {
		t.Fatal(err)
	}
	cm, err := (&compiledModules{}).get(p.Modules)
	if err != nil {
		t.Fatal(err)
	}
	r := cm.reads
	t.Logf("reads: %v", r.paths())
	if r.whole {
		t.Fatal("the default policy reads its whole input")
	}
	for _, key := range []*ast.Term{keyNow, keySubject, keyContext} {
		if r.has(key) {
			t.Errorf("the default policy reads input.%v", key)
		}
	}
	if r.sub(keySession).has(keyHistory) {
		t.Error("the default policy reads input.session.history")
	}
	// Of the tool arguments (or a server request's params), three fields, and those only for
	// sampling and elicitation: a tool call's arguments are not built.
	var args []string
	for _, p := range r.paths() {
		if strings.HasPrefix(p, "operation.arguments") {
			args = append(args, p)
		}
	}
	slices.Sort(args)
	if want := []string{"operation.arguments.includeContext", "operation.arguments.maxTokens", "operation.arguments.mode"}; !slices.Equal(args, want) {
		t.Errorf("the default policy reads %v of the arguments, want %v", args, want)
	}
	for _, path := range [][]*ast.Term{{keyAction}, {keyOperation, keyTool}, {keySession, keyCalls, keyTotal}, {keyCredential, keyScopes}} {
		n := r
		for _, k := range path {
			n = n.sub(k)
		}
		if n == nil {
			t.Errorf("the default policy does not read input%v", path)
		}
	}
}

// TestJSONDocumentsBuildWhatThePolicyReads: of tool arguments, context and subject attributes
// a decision builds the keys the policy reads, as far as it reads them, and all of a value it
// reads whole or that is not an object; a value that is not JSON is refused whether or not it
// is read.
func TestJSONDocumentsBuildWhatThePolicyReads(t *testing.T) {
	doc := map[string]any{
		"path":    "/x",
		"content": strings.Repeat("a", 100),
		"opts":    map[string]any{"mode": "r", "flags": []any{"a", "b"}, "deep": map[string]any{"k": 1.5}},
		"list":    []any{map[string]any{"a": 1}},
		"s":       "str",
	}
	for _, tc := range []struct {
		src  string // the policy's reads
		want string
	}{
		{"x := input.a.path", `{"path": "/x"}`},
		{"x := [input.a.path, input.a.opts.mode]", `{"path": "/x", "opts": {"mode": "r"}}`},
		{"x := input.a.opts", `{"opts": {"mode": "r", "flags": ["a", "b"], "deep": {"k": 1.5}}}`},
		{"x := input.a.opts.deep.k", `{"opts": {"deep": {"k": 1.5}}}`},
		{"x := input.a.list[0].a", `{"list": [{"a": 1}]}`},                       // read whole past an index
		{"x := input.a.s.t", `{"s": "str"}`},                                     // not an object: as it is
		{"x := input.a.missing.k", `{}`},                                         // absent stays absent
		{"x := count(input.a)", ast.MustInterfaceToValue(doc).String()},          // handed on whole
		{"x := [input.a.path, input.a]", ast.MustInterfaceToValue(doc).String()}, // whole wins
	} {
		r := readsOfSource(t, tc.src).sub(ast.StringTerm("a"))
		got, err := jsonTerm(r, doc, nil)
		if err != nil {
			t.Fatalf("%s: %v", tc.src, err)
		}
		if want := ast.MustParseTerm(tc.want); !got.Equal(want) {
			t.Errorf("%s: built %v, want %v", tc.src, got, want)
		}
	}
	if got, err := jsonTerm(nil, doc, nil); got != nil || err != nil {
		t.Errorf("read by no rule: %v, %v; want nothing built", got, err)
	}
	bad := map[string]any{"path": "/x", "unread": make(chan int)}
	for _, r := range []*inputReads{nil, readsOfSource(t, "x := input.a.path").sub(ast.StringTerm("a")), readsAll} {
		if _, err := jsonTerm(r, bad, nil); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
			t.Errorf("reads %v: a value that is not JSON gave %v, want it refused", r.paths(), err)
		}
	}
}

// pruned is v without what r does not read: the input a decision builds for a policy that
// reads r, when the whole input would be v.
func pruned(v ast.Value, r *inputReads) ast.Value {
	obj, ok := v.(ast.Object)
	if r.whole || !ok {
		return v
	}
	out := ast.NewObject()
	obj.Foreach(func(k, x *ast.Term) {
		if s, ok := k.Value.(ast.String); ok {
			if sub := r.keys[string(s)]; sub != nil {
				out.Insert(k, ast.NewTerm(pruned(x.Value, sub)))
			}
		}
	})
	return out
}

// corpusCase is one policy of the plan executor's differential corpus
// (irexec/testdata/differential.yaml): src is the body of package p, the entry point x.
type corpusCase struct {
	Name string `json:"name"`
	// Stricter: the plan may fail where topdown answers, and differ in nothing else.
	Stricter bool     `json:"stricter"`
	Src      string   `json:"src"`
	Data     string   `json:"data"`
	Inputs   []string `json:"inputs"`
}

// differentialCorpus reads the plan executor's differential corpus.
func differentialCorpus(t *testing.T) []corpusCase {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("irexec", "testdata", "differential.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cases []corpusCase
	if err := util.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 100 {
		t.Fatalf("only %d cases read", len(cases))
	}
	return cases
}

// TestPruningKeepsEveryAnswer decides every policy of the plan executor's differential corpus
// and of TestReadsOf, on each of its inputs whole and pruned to what readsOf says the policy
// reads, with OPA's topdown evaluator: the answers (value, undefined or error) must be the
// same.
func TestPruningKeepsEveryAnswer(t *testing.T) {
	cases := differentialCorpus(t)
	rich := `{"action": "tools/call", "z": 1, "client": {"id": "c", "name": "n"}, "server": {"id": "s", "transport": "stdio"},
		"operation": {"tool": "t", "arguments": {"path": "/x"}}, "session": {"history": [{"tool": "t"}, {"tool": "u"}],
		"calls": {"total": 3, "by_tool": {"fs": {"t": 1}}}, "labels": ["a"], "renewals": 1}, "tools": [{"name": "t"}]}`
	for _, src := range []string{
		"x := input.session.calls.by_tool.fs",
		"x := [input.action, input.client.id, input.client.name]",
		`x := object.get(input, ["session", "labels"], [])`,
		`x := object.get(input.session, "labels", "")`,
		"import input.session as s\n\nx := s.calls",
		"x := count(input)",
		"x := [v | some k; v := input.session[k]]",
		"x := input[input.action]",
		"x := [v | walk(input, v)]",
		"f(s) := s.history\n\nx := f(input.session)",
		"f(i) := i.action\n\nx := f(input)",
		"x := y if { y := input.z with input.action as input.operation.tool }",
		"x := y if { y := input.action with input.session.history as [] }",
		"f(x, p, d) := x.session.history\n\nx := h if { h := object.get(input, \"action\", null) with object.get as f }",
		"x := json.marshal(input.session)",
		"x := {k | input.session[k]}",
		"x if { every h in input.session.history { h.tool != \"v\" } }",
	} {
		cases = append(cases, corpusCase{Name: src, Src: src, Inputs: []string{rich, "{}", `{"session": 1}`}})
	}
	ctx := context.Background()
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	for _, c := range cases {
		src := "package p\n\n" + c.Src
		data := map[string]any{}
		if c.Data != "" {
			if err := util.UnmarshalJSON([]byte(c.Data), &data); err != nil {
				t.Fatalf("%s: data: %v", c.Name, err)
			}
		}
		m, err := ast.ParseModuleWithOpts("p.rego", src, ast.ParserOptions{RegoVersion: ast.RegoV1})
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		cm, err := (&compiledModules{}).get(map[string]*ast.Module{"p.rego": m})
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		q, err := rego.New(rego.Query("data.p.x"), rego.Compiler(cm.compiler), rego.Store(inmem.NewFromObject(data)),
			rego.StrictBuiltinErrors(true)).PrepareForEval(ctx)
		if err != nil {
			t.Fatalf("%s: %v", c.Name, err)
		}
		eval := func(input ast.Value) string {
			rs, err := q.Eval(ctx, rego.EvalParsedInput(input), rego.EvalTime(now))
			if err != nil {
				return "error"
			}
			if len(rs) == 0 {
				return "undefined"
			}
			out, _ := json.Marshal(rs[0].Expressions[0].Value)
			return string(out)
		}
		for _, in := range c.Inputs {
			whole := ast.MustParseTerm(in).Value
			part := pruned(whole, cm.reads)
			w := eval(whole)
			if p := eval(part); w != p {
				t.Errorf("%s: input %s gives %s, pruned to %v (reads %v) gives %s", c.Name, in, w, part, cm.reads.paths(), p)
			}
			// The same input as decoded JSON, built as the engine builds a request's JSON
			// documents (readTerm): it answers alike too.
			var doc any
			if err := util.UnmarshalJSON([]byte(in), &doc); err != nil {
				t.Fatal(err)
			}
			if m, ok := doc.(map[string]any); ok && cm.reads != nil && !cm.reads.whole && len(m) > 0 {
				built, err := readTerm(cm.reads, m)
				if err != nil {
					t.Fatalf("%s: input %s: %v", c.Name, in, err)
				}
				if b := eval(built.Value); w != b {
					t.Errorf("%s: input %s gives %s, built as read to %v (reads %v) gives %s", c.Name, in, w, built, cm.reads.paths(), b)
				}
			}
		}
	}
}

// TestDecisionsBuildWhatThePolicyReads: an engine that builds only what its policy reads and
// one given the whole input decide the same calls, FilterTools listings and renewals alike,
// for a policy that reads one field of nearly every part of the input and hands them back as
// obligations.
func TestDecisionsBuildWhatThePolicyReads(t *testing.T) {
	ctx := context.Background()
	echo := policyOf(t, "echo", `package mcp

listed := {
	"now": input.now, "client": input.client.name, "team": input.subject.attributes.team,
	"groups": input.subject.groups, "trace": input.context.trace, "resource": input.server.resource,
	"expires": input.credential.expires_at, "issuer": input.credential.issuer,
	"method": input.operation.method,
	"annotations": input.operation.annotations, "session_client": input.session.client_id,
	"by_server": input.session.calls.by_server, "total": input.session.calls.total,
	"labels": input.session.labels, "scopes": input.session.scopes,
	"history": [h.tool | some h in input.session.history], "renewals": input.session.renewals,
}

seen := object.union(listed, {"path": input.operation.arguments.path})

decision := {"result": "allow"} if input.action == "session/open"
else := {"result": "allow", "labels": ["l"], "obligations": seen}

tool_verdicts := {"listing": {"result": "allow", "obligations": listed}, "tools": {}}
`)
	clock := func() time.Time { return time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC) }
	engines := make([]*Engine, 2)
	for i := range engines {
		e, err := New(ctx, Config{Clock: clock}, echo)
		if err != nil {
			t.Fatal(err)
		}
		engines[i] = e
	}
	pq := engines[0].policy.Load()
	if pq.reads.whole || pq.reads.has(keyCredential) && pq.reads.sub(keyCredential).has(keyScopes) {
		t.Fatalf("the policy reads %v, not a part of its input", pq.reads.paths())
	}
	whole := *engines[1].policy.Load()
	whole.reads = readsAll
	engines[1].policy.Store(&whole)

	yes := true
	var views [2][]string
	for i, e := range engines {
		subject := Subject{ID: "u", Groups: []string{"eng"}, Attributes: map[string]any{"team": "pay", "level": json.Number("3")}}
		client := Client{ID: "c", Name: "Claude", Version: "1", Transport: "stdio"}
		server := Server{ID: "fs", Resource: "https://fs.example", Transport: "remote"}
		cred := Credential{Scopes: []string{"files:read"}, Issuer: "https://idp", ExpiresAt: clock().Add(time.Hour)}
		_, info, err := e.OpenSession(ctx, &OpenRequest{Client: client, Subject: subject, Servers: []Server{server}, Scopes: []string{"files:read"}, Credential: cred})
		if err != nil || info == nil {
			t.Fatalf("open: %v", err)
		}
		for n := range 3 {
			req := &Request{SessionID: info.Session.ID, Client: client, Subject: subject, Server: server, Credential: cred,
				Operation: Operation{Method: "tools/call", Tool: fmt.Sprint("read_", n), Arguments: map[string]any{"path": "/tmp/x", "content": map[string]any{"lines": []any{"a", "b"}}},
					Annotations: Annotations{ReadOnly: &yes}},
				Context: map[string]any{"trace": "abc", "span": map[string]any{"id": "s1"}}}
			d, err := e.Decide(ctx, req)
			if err != nil {
				t.Fatal(err)
			}
			views[i] = append(views[i], gatewayView(d))
		}
		f, err := e.FilterTools(ctx, &Request{SessionID: info.Session.ID, Client: client, Subject: subject, Server: server, Credential: cred,
			Context: map[string]any{"trace": "abc"}}, []Tool{{Name: "read_0"}})
		if err != nil {
			t.Fatal(err)
		}
		if f.Tools[0].Outcome != Allow {
			t.Errorf("FilterTools: %v, want read_0 allowed", f.Tools)
		}
		views[i] = append(views[i], fmt.Sprint(f.Tools))
		d, _, err := e.RenewSession(ctx, &RenewRequest{SessionID: info.Session.ID, Client: client, Subject: subject, Context: map[string]any{"trace": "abc"}})
		if err != nil {
			t.Fatal(err)
		}
		views[i] = append(views[i], gatewayView(d))
	}
	if !slices.Equal(views[0], views[1]) {
		t.Errorf("built for what the policy reads:\n%s\nbuilt whole:\n%s", strings.Join(views[0], "\n"), strings.Join(views[1], "\n"))
	}
	for _, want := range []string{`"history":["read_0","read_1"]`, `"labels":["l"]`, `"total":2`, `"team":"pay"`, `"client":"Claude"`,
		`"trace":"abc"`, `"path":"/tmp/x"`, `"resource":"https://fs.example"`, `"issuer":"https://idp"`, `"scopes":["files:read"]`} {
		if !strings.Contains(views[0][2], want) {
			t.Errorf("the policy does not see %s: %s", want, views[0][2])
		}
	}
}

// TestInputObjectsAreSharedByValue: a client, server or credential object built once is given
// to every request with the same values, and a request that differs in any field the policy
// reads gets its own.
func TestInputObjectsAreSharedByValue(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Config{}, policyOf(t, "echo", `package mcp

decision := {"result": "allow", "obligations": {
	"client": [input.client.id, input.client.name], "server": [input.server.id, input.server.resource],
	"credential": [input.credential.scopes, input.credential.audience, input.credential.issuer, input.credential.expires_at],
}}
`))
	if err != nil {
		t.Fatal(err)
	}
	expires := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	base := Request{Client: Client{ID: "c", Name: "Claude"}, Server: Server{ID: "fs", Resource: "https://fs"},
		Credential: Credential{Scopes: []string{"a", "b"}, Audience: []string{"x"}, Issuer: "i", ExpiresAt: expires},
		Operation:  Operation{Method: "tools/call", Tool: "t"}}
	variants := []func(*Request){
		func(*Request) {},
		func(*Request) {}, // the same again: shares every object
		func(r *Request) { r.Client.Name = "Other" },
		func(r *Request) { r.Server.Resource = "https://fs2" },
		func(r *Request) { r.Credential.Scopes = []string{"a"} },
		func(r *Request) { r.Credential.Scopes, r.Credential.Audience = []string{"a"}, []string{"b", "x"} },
		func(r *Request) { r.Credential.ExpiresAt = expires.Add(time.Second) },
		func(r *Request) { r.Credential.Scopes = strings.Split("s1 s2 s3 s4 s5 s6 s7 s8 s9", " ") }, // too many claims to key
	}
	for i, vary := range variants {
		req := base
		req.Credential.Scopes = slices.Clone(base.Credential.Scopes)
		vary(&req)
		d, err := e.Decide(ctx, &req)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]any{
			"client": []any{req.Client.ID, req.Client.Name}, "server": []any{req.Server.ID, req.Server.Resource},
			"credential": []any{toAny(req.Credential.Scopes), toAny(req.Credential.Audience), req.Credential.Issuer, req.Credential.ExpiresAt.Format(time.RFC3339Nano)},
		}
		if g, w := fmt.Sprint(d.Obligations), fmt.Sprint(want); g != w {
			t.Errorf("variant %d: the policy saw %s, want %s", i, g, w)
		}
	}
	if n := len(e.inputs.clients.m); n != 2 {
		t.Errorf("%d client objects cached, want 2", n)
	}
	if n := len(e.inputs.servers.m); n != 2 {
		t.Errorf("%d server objects cached, want 2", n)
	}
	if n := len(e.inputs.credentials.m); n != 4 {
		t.Errorf("%d credential objects cached, want 4", n)
	}
}

func toAny(ss []string) []any {
	out := make([]any, len(ss))
	for i, s := range ss {
		out[i] = s
	}
	return out
}

// TestSessionReadsTakeWhatTheLastDecisionKnew: a decision reads the usage the session's last
// decision recorded without decoding it, sees calls recorded by anything else, and takes the
// last input.session whole when nothing changed since.
func TestSessionReadsTakeWhatTheLastDecisionKnew(t *testing.T) {
	ctx := context.Background()
	e, err := New(ctx, Config{}, policyOf(t, "counts", `package mcp

decision := {"result": "allow"} if input.action == "session/open"
else := {"result": "deny", "reasons": [{"code": "x", "message": "no"}], "obligations": {"total": input.session.calls.total}} if input.operation.tool == "nope"
else := {"result": "allow", "labels": ["l"], "obligations": {"total": input.session.calls.total, "fs": object.get(input.session.calls.by_tool, "fs", {}), "labels": input.session.labels}}
`))
	if err != nil {
		t.Fatal(err)
	}
	_, info, err := e.OpenSession(ctx, &OpenRequest{Client: Client{ID: "c"}, Subject: Subject{ID: "u"}, Servers: []Server{{ID: "fs"}}})
	if err != nil || info == nil {
		t.Fatal(err)
	}
	id := info.Session.ID
	decide := func(tool string) map[string]any {
		t.Helper()
		d, err := e.Decide(ctx, &Request{SessionID: id, Client: Client{ID: "c"}, Subject: Subject{ID: "u"}, Server: Server{ID: "fs"},
			Operation: Operation{Method: "tools/call", Tool: tool}})
		if err != nil {
			t.Fatal(err)
		}
		if want := map[bool]Outcome{true: Deny, false: Allow}[tool == "nope"]; d.Outcome != want {
			t.Fatalf("%s: %s %v, want %s", tool, d.Outcome, d.Reasons, want)
		}
		return d.Obligations
	}
	check := func(got map[string]any, want string) {
		t.Helper()
		if g := fmt.Sprint(got); g != want {
			t.Errorf("the policy saw %s, want %s", g, want)
		}
	}
	check(decide("read"), "map[fs:map[] labels:[] total:0]")
	check(decide("read"), "map[fs:map[read:1] labels:[l] total:1]") // the usage the first decision recorded
	if _, err := e.store.RecordCall(id, state.Call{Server: "fs", Tool: "write", Method: "tools/call", At: time.Now(), Labels: []string{"m"}}); err != nil {
		t.Fatal(err)
	}
	check(decide("read"), "map[fs:map[read:2 write:1] labels:[l m] total:3]") // a call recorded by someone else
	check(decide("nope"), "map[total:4]")
	before := e.inputs.m[id].term
	check(decide("nope"), "map[total:4]")
	if after := e.inputs.m[id].term; before == nil || after != before {
		t.Error("a decision after one that recorded nothing built input.session again")
	}
	check(decide("read"), "map[fs:map[read:3 write:1] labels:[l m] total:4]")
	check(decide("nope"), "map[total:5]")
	if _, err := e.store.RecordCall(id, state.Call{Server: "fs", Tool: "write", Method: "tools/call", At: time.Now()}); err != nil {
		t.Fatal(err)
	}
	check(decide("nope"), "map[total:6]") // not the term the last decision built
}

// TestNameListsAreSharedByValue: a short list of names is one array term for every request
// naming the same names in the same order, and a credential's expiry splits its object only
// when the policy reads it.
func TestNameListsAreSharedByValue(t *testing.T) {
	var names nameTerms
	a, b := names.terms([]string{"repo", "read:org"}), names.terms([]string{"repo", "read:org"})
	if a != b || !a.Equal(ast.MustParseTerm(`["repo", "read:org"]`)) {
		t.Errorf("one list gave %v and %v, not one shared term", a, b)
	}
	if c := names.terms([]string{"read:org", "repo"}); c == a || !c.Equal(ast.MustParseTerm(`["read:org", "repo"]`)) {
		t.Errorf("another order gave %v", c)
	}
	if x, y := names.terms([]string{"a\x00b"}), names.terms([]string{"a", "b"}); x == y || x.Equal(y) {
		t.Errorf("lists whose names join alike share a term: %v, %v", x, y)
	}
	if e1, e2 := names.terms(nil), names.terms([]string{}); e1 != e2 || e1.Value.(*ast.Array).Len() != 0 {
		t.Errorf("empty lists: %v, %v", e1, e2)
	}
	long := strings.Split(strings.Repeat("scope-with-a-long-name ", 20), " ")
	if x, y := names.terms(long), names.terms(long); x == y || !x.Equal(y) {
		t.Error("a list over maxListBytes was shared, or changed")
	}

	ctx := context.Background()
	expires := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		src  string
		want int
	}{
		{`decision := {"result": "allow", "obligations": {"s": input.credential.scopes}}`, 1},
		{`decision := {"result": "allow", "obligations": {"s": input.credential.scopes, "e": input.credential.expires_at}}`, 2},
	} {
		e, err := New(ctx, Config{}, policyOf(t, "cred", "package mcp\n\n"+tc.src+"\n"))
		if err != nil {
			t.Fatal(err)
		}
		for i := range 2 {
			req := Request{Client: Client{ID: "c"}, Server: Server{ID: "fs"}, Operation: Operation{Method: "tools/call", Tool: "t"},
				Credential: Credential{Scopes: []string{"a", "b"}, ExpiresAt: expires.Add(time.Duration(i) * time.Minute)}}
			if _, err := e.Decide(ctx, &req); err != nil {
				t.Fatal(err)
			}
		}
		if n := len(e.inputs.credentials.m); n != tc.want {
			t.Errorf("%s: %d credential objects for two expiries, want %d", tc.src, n, tc.want)
		}
	}
}
