package engine_test

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/policy"
)

// The default policy answers FilterTools with one evaluation of tool_verdicts; without that
// rule the engine asks data.mcp.decision once per tool. Both must show and hide the same
// tools for the same reasons.
func TestFilterToolsBatchMatchesPerTool(t *testing.T) {
	full, err := engine.LoadPolicyFS(policy.FS(), ".", "default")
	if err != nil {
		t.Fatal(err)
	}
	perTool := full
	perTool.Modules = maps.Clone(full.Modules)
	removed := 0
	for name := range perTool.Modules {
		if strings.HasSuffix(name, "tool_verdicts.rego") {
			delete(perTool.Modules, name)
			removed++
		}
	}
	if removed != 1 {
		t.Fatalf("removed %d modules defining tool_verdicts, want 1", removed)
	}
	// A loaded machine (CI under -race) must not time an evaluation out: a policy_error on
	// one side would read as a disagreement.
	ctx, cfg := context.Background(), engine.Config{EvalTimeout: time.Minute}
	batch, err := engine.New(ctx, cfg, full)
	if err != nil {
		t.Fatal(err)
	}
	single, err := engine.New(ctx, cfg, perTool)
	if err != nil {
		t.Fatal(err)
	}

	// A server lists each name once: the pinned tools come in three listings, so each is
	// announced with the pinned hash, another hash and none.
	listings := [][]engine.Tool{
		{
			{Name: "read_file"}, {Name: "delete_file"}, {Name: "no_such_tool"},
			{Name: "search_issues"}, {Name: "delete_repository"},
			{Name: "git_status"}, {Name: "git_log", DefinitionHash: "sha256:changed"},
			{Name: "git_commit", DefinitionHash: "sha256:anything"},
		},
		{{Name: "git_status", DefinitionHash: "sha256:be261472ae776a08f7f47cf125196057463e7913cadaee2fcdf3653d815aea0d"}, {Name: "git_log"}},
		{},
	}
	servers := []engine.Server{
		{ID: "filesystem", Transport: "stdio"},
		{ID: "git", Transport: "stdio"},
		{ID: "git", Transport: "remote"},
		{ID: "github", Transport: "remote"},
		{ID: "research", Transport: "remote"},
		{ID: "unknown", Transport: "stdio"},
	}
	credentials := []engine.Credential{{}, {Audience: []string{"https://mcp.github.example.com"}}}
	openIn := func(e *engine.Engine) string {
		d, info, err := e.OpenSession(ctx, &engine.OpenRequest{
			Client:  engine.Client{ID: "https://ide.example.com/client.json"},
			Subject: engine.Subject{ID: "alice"},
		})
		if err != nil || d.Outcome != engine.Allow {
			t.Fatalf("open session: %+v %v", d, err)
		}
		return info.Session.ID
	}
	sessions := [][2]string{{"", ""}, {openIn(batch), openIn(single)}}

	compared, hidden := 0, 0
	for _, srv := range servers {
		for ci, cred := range credentials {
			for si, ids := range sessions {
				name := fmt.Sprintf("%s-%s/credential%d/session%d", srv.ID, srv.Transport, ci, si)
				req := func(session string) *engine.Request {
					return &engine.Request{
						SessionID:  session,
						Client:     engine.Client{ID: "https://ide.example.com/client.json"},
						Subject:    engine.Subject{ID: "alice"},
						Server:     srv,
						Credential: cred,
					}
				}
				for _, tools := range listings {
					got, err := batch.FilterTools(ctx, req(ids[0]), tools)
					if err != nil {
						t.Fatalf("%s: batch: %v", name, err)
					}
					want, err := single.FilterTools(ctx, req(ids[1]), tools)
					if err != nil {
						t.Fatalf("%s: per tool: %v", name, err)
					}
					for i := range tools {
						g, w := got.Tools[i], want.Tools[i]
						if g.Name != w.Name || g.Outcome != w.Outcome || !reflect.DeepEqual(g.Reasons, w.Reasons) {
							t.Errorf("%s: tool %d (%s %q): batch %+v, per tool %+v", name, i, tools[i].Name, tools[i].DefinitionHash, g, w)
						}
						if w.Outcome == engine.Deny {
							hidden++
						}
						compared++
					}
				}
			}
		}
	}
	// The cases must exercise both sides: some tools shown, some hidden.
	if hidden == 0 || hidden == compared {
		t.Fatalf("%d of %d verdicts hide the tool: the cases do not tell the two paths apart", hidden, compared)
	}
}

// A tool_verdicts answer that cannot be read hides every tool, and an answer that is wrong
// on the sample listing keeps the policy from being activated at all.
func TestFilterToolsBatchFailsClosed(t *testing.T) {
	const decision = `package mcp

decision := {"result": "allow", "reasons": []}
`
	cases := map[string]string{
		"listing missing": `tool_verdicts := {"tools": {}} if count(input.tools) > 1
else := {"listing": {"result": "allow"}}`,
		"bad result": `tool_verdicts := {"listing": {"result": "allow"}, "tools": {"write": {"result": "maybe"}}} if count(input.tools) > 1
else := {"listing": {"result": "allow"}}`,
		"tool not asked about": `tool_verdicts := {"listing": {"result": "deny"}, "tools": {"read": {"result": "allow"}, "admin": {"result": "allow"}}} if count(input.tools) > 1
else := {"listing": {"result": "allow"}}`,
		"not an object": `tool_verdicts := [{"result": "allow"}, {"result": "allow"}] if count(input.tools) > 1
else := {"listing": {"result": "allow"}}`,
		"runtime error": `tool_verdicts := {"listing": {"result": "allow"}, "tools": {t.name: {"result": "allow", "n": to_number(t.name)} | some t in input.tools}} if count(input.tools) > 1
else := {"listing": {"result": "allow"}}`,
	}
	for name, rule := range cases {
		t.Run(name, func(t *testing.T) {
			e := newEngine(t, nil, map[string]string{"p.rego": decision + rule})
			f, err := e.FilterTools(context.Background(), call("", ""), []engine.Tool{{Name: "read"}, {Name: "write"}})
			if err != nil {
				t.Fatal(err)
			}
			if len(f.Tools) != 2 {
				t.Fatalf("%d verdicts for 2 tools", len(f.Tools))
			}
			for _, v := range f.Tools {
				if v.Outcome != engine.Deny || len(v.Reasons) != 1 || v.Reasons[0].Code != engine.ReasonPolicyError {
					t.Errorf("tool %s: %+v, want hidden with policy_error", v.Name, v)
				}
			}
		})
	}

	bad := decision + `tool_verdicts := {"listing": "all of them"}`
	_, err := engine.New(context.Background(), engine.Config{}, policyFrom(t, "bad", map[string]string{"p.rego": bad}))
	if err == nil || !strings.Contains(err.Error(), "tool_verdicts") {
		t.Fatalf("activation of a malformed tool_verdicts: %v, want an error naming the rule", err)
	}
}

// A policy's tool_verdicts is what FilterTools answers, tool by tool in order.
func TestFilterToolsUsesToolVerdicts(t *testing.T) {
	src := `package mcp

decision := {"result": "deny", "reasons": [{"code": "asked_per_tool"}]}

tool_verdicts := {
	"listing": {"result": "deny", "reasons": [{"code": "not_read_only"}]},
	"tools": {t.name: v | some t in input.tools; v := verdict(t)},
}

verdict(t) := {"result": "allow"} if t.annotations.readOnlyHint == true
else := {"result": "require_approval", "reasons": [{"code": "changed", "message": t.definition_hash}]} if t.definition_hash != ""
`
	e := newEngine(t, nil, map[string]string{"p.rego": src})
	yes := true
	f, err := e.FilterTools(context.Background(), call("", ""), []engine.Tool{
		{Name: "a", Annotations: engine.Annotations{ReadOnly: &yes}},
		{Name: "b", DefinitionHash: "sha256:x"},
		{Name: "c"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.FilterTools(context.Background(), call("", ""), []engine.Tool{{Name: "a"}, {Name: "b"}, {Name: "a"}}); err == nil ||
		!strings.Contains(err.Error(), "tools[2].name") {
		t.Errorf("a listing that names a tool twice: %v, want an error naming tools[2].name", err)
	}
	want := []engine.ToolVerdict{
		{Name: "a", Outcome: engine.Allow, Reasons: []engine.Reason{}},
		{Name: "b", Outcome: engine.RequireApproval, Reasons: []engine.Reason{{Code: "changed", Message: "sha256:x"}}},
		{Name: "c", Outcome: engine.Deny, Reasons: []engine.Reason{{Code: "not_read_only"}}},
	}
	for i := range want {
		g := f.Tools[i]
		if g.Name != want[i].Name || g.Outcome != want[i].Outcome || len(g.Reasons) != len(want[i].Reasons) ||
			(len(g.Reasons) > 0 && g.Reasons[0] != want[i].Reasons[0]) {
			t.Errorf("tool %d: %+v, want %+v", i, g, want[i])
		}
	}
}

// A session opened with scopes narrows the credential's scopes for a listing as for a call:
// FilterTools shows nothing the session could not call.
func TestFilterToolsSeesSessionScopes(t *testing.T) {
	src := `package mcp

decision := {"result": "allow", "reasons": []} if {
	input.action != "tools/list"
} else := {"result": "allow", "reasons": []} if {
	"admin" in input.credential.scopes
} else := {"result": "deny", "reasons": [{"code": "scope_missing"}]}
`
	e := newEngine(t, nil, map[string]string{"p.rego": src})
	d, info, err := e.OpenSession(context.Background(), &engine.OpenRequest{
		Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"}, Scopes: []string{"read"},
	})
	if err != nil || d.Outcome != engine.Allow {
		t.Fatalf("open session: %+v %v", d, err)
	}
	req := call(info.Session.ID, "")
	req.Credential.Scopes = []string{"read", "admin"}
	f, err := e.FilterTools(context.Background(), req, []engine.Tool{{Name: "read"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tools) != 1 || f.Tools[0].Outcome != engine.Deny {
		t.Fatalf("a session bound to scope read listed a tool that needs admin: %+v", f.Tools)
	}
	outside := call("", "")
	outside.Credential.Scopes = []string{"read", "admin"}
	if f, err := e.FilterTools(context.Background(), outside, []engine.Tool{{Name: "read"}}); err != nil || f.Tools[0].Outcome != engine.Allow {
		t.Fatalf("outside a session the credential's own scopes count: %+v %v", f.Tools, err)
	}
}
