package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/policy"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// ToolboxServer is the catalog server the discovery scenario lists: a stdio server with
// ToolboxTools catalogued tools.
const (
	ToolboxServer = "toolbox"
	ToolboxTools  = 500
)

// Policy returns the policy every server in the harness decides with: the embedded default
// policy and its data.json, with two changes, the same for Arbiter and for OPA: the session
// budget (limits.session.max_calls) is raised so that the load's sessions never run out
// mid-run, the catalog gains the ToolboxServer with ToolboxTools tools for discovery, and,
// when the catalog lists clients, the load's clients. With PolicyDirEnv set it is the policy in
// that directory instead, unchanged.
// revision > 0 adds data.bench.revision, a new policy revision for the swap scenario.
func Policy(revision int) (engine.Policy, error) {
	fsys, dir := policyFS()
	name := "default"
	if dir != "" {
		name = filepath.Base(dir)
	}
	p, err := engine.LoadPolicyFS(fsys, ".", name)
	if err != nil {
		return engine.Policy{}, err
	}
	if dir != "" {
		// A policy of the user's: as it is, but for the swap scenario's revisions.
		p.Revision = name + "@r0"
		return p, withRevision(&p, name, revision)
	}
	limits, ok := p.Data["limits"].(map[string]any)
	if !ok {
		return engine.Policy{}, fmt.Errorf("default policy data has no limits object")
	}
	session, _ := limits["session"].(map[string]any)
	if session == nil {
		session = map[string]any{}
		limits["session"] = session
	}
	session["max_calls"] = json.Number("1000000000000")
	servers, ok := p.Data["catalog"].(map[string]any)["servers"].(map[string]any)
	if !ok {
		return engine.Policy{}, fmt.Errorf("default policy data has no catalog.servers object")
	}
	servers[ToolboxServer] = toolboxCatalog()
	// A policy that keeps a client catalog knows the load's clients.
	if clients, ok := p.Data["catalog"].(map[string]any)["clients"].(map[string]any); ok {
		for i := range benchClients {
			clients[clientID(i)] = map[string]any{"owner": "bench-team", "name": "ide-agent"}
		}
	}
	p.Revision = "bench@r0"
	return p, withRevision(&p, "bench", revision)
}

// withRevision makes p revision number revision (> 0) of the swap scenario, named after name.
// Data and code both change, so each activation compiles: a data-only revision would reuse the
// compiled modules (see engine.compiledModules) and measure less.
func withRevision(p *engine.Policy, name string, revision int) error {
	if revision <= 0 {
		return nil
	}
	p.Data["bench"] = map[string]any{"revision": revision}
	m, err := ast.ParseModuleWithOpts(revisionModule, revisionSource(revision), ast.ParserOptions{RegoVersion: ast.RegoV1})
	if err != nil {
		return err
	}
	p.Modules[revisionModule] = m
	p.Revision = fmt.Sprintf("%s@r%d", name, revision)
	return nil
}

// PolicyDirEnv names the environment variable that makes every server of the harness decide
// with the policy in that directory (its *.rego and data files, tests left out) instead of the
// embedded default policy: `arbiter-bench -policy-dir` sets it, and the harness's child
// servers inherit it. Such a policy is used as it is: it must allow the load's sessions to
// open (servers filesystem, github and toolbox) and give its tools/call requests room in
// their budgets. The swap scenario's revisions set data.bench and a rule of package bench.
const PolicyDirEnv = "ARBITER_BENCH_POLICY_DIR"

// policyFS returns the files of the harness's policy and, for a policy of the user's, its
// directory ("" for the embedded default).
func policyFS() (fs.FS, string) {
	if dir := os.Getenv(PolicyDirEnv); dir != "" {
		return os.DirFS(dir), dir
	}
	return policy.FS(), ""
}

// revisionModule is the file of the rule each revision changes.
const revisionModule = "bench_revision.rego"

func revisionSource(revision int) string {
	return fmt.Sprintf("package bench\n\ncode_revision := %d\n", revision)
}

// toolboxCatalog is a server with ToolboxTools tools of every kind the policy tells apart.
func toolboxCatalog() map[string]any {
	tools := make(map[string]any, ToolboxTools)
	for i := range ToolboxTools {
		var t map[string]any
		switch i % 5 {
		case 0:
			t = map[string]any{"destructive": true}
		case 1:
			t = map[string]any{"read_only": true, "labels": []any{"private_data"}}
		case 2:
			t = map[string]any{}
		case 3:
			t = map[string]any{"destructive": false, "labels": []any{"external_communication"}}
		default:
			t = map[string]any{"read_only": true}
		}
		tools[toolboxToolName(i)] = t
	}
	return map[string]any{"owner": "bench-team", "transport": "stdio", "tools": tools}
}

func toolboxToolName(i int) string { return fmt.Sprintf("tool_%03d", i) }

// WritePolicyDir writes Policy(revision) as files, laid out as in policy/, for `opa run` and
// for bundles: the default policy's *.rego (without tests) and the changed data.json. Tests
// stay out: the default policy's tests pin the shipped data.json, which the harness changes.
func WritePolicyDir(dir string, revision int) ([]string, error) {
	p, err := Policy(revision)
	if err != nil {
		return nil, err
	}
	var files []string
	fsys, _ := policyFS()
	err = fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".rego") || strings.HasSuffix(path, "_test.rego") {
			return err
		}
		src, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		files = append(files, dst)
		return os.WriteFile(dst, src, 0o644)
	})
	if err != nil {
		return nil, fmt.Errorf("write policy: %w", err)
	}
	if revision > 0 {
		dst := filepath.Join(dir, revisionModule)
		files = append(files, dst)
		if err := os.WriteFile(dst, []byte(revisionSource(revision)), 0o644); err != nil {
			return nil, err
		}
	}
	data, err := json.MarshalIndent(p.Data, "", "  ")
	if err != nil {
		return nil, err
	}
	dst := filepath.Join(dir, "data.json")
	files = append(files, dst)
	return files, os.WriteFile(dst, data, 0o644)
}

// Template is one kind of request in the mix, in protocol-neutral form.
type Template struct {
	Name   string
	Server string
	Tool   string
	// Args is the tool arguments as the MCP request carries them.
	Args        string
	Annotations engine.Annotations
	// ReplayToken presents a token issued for another server (audience mismatch).
	ReplayToken bool
	// Intended is the outcome the mix means the request to get under the default policy. The
	// harness checks answers against what the policy actually answers (see Calibrate), and
	// the report says where the two differ.
	Intended Outcome
	// Weight is the template's share of the mix, in percent.
	Weight int
}

// Mix is the request mix: 70% allow, 15% deny, 15% require approval, with arguments from a
// few dozen bytes to about 1.5 KB, over a remote (OAuth) and a local (stdio) server.
var Mix = []Template{
	{Name: "fs_read_file", Server: "filesystem", Tool: "read_file", Intended: OutcomeAllow, Weight: 30,
		Args:        `{"path": "/home/alice/src/payments-service/internal/ledger/reconcile.go", "offset": 0, "limit": 4000, "encoding": "utf-8"}`,
		Annotations: engine.Annotations{ReadOnly: ptr(true)}},
	{Name: "fs_list_directory", Server: "filesystem", Tool: "list_directory", Intended: OutcomeAllow, Weight: 10,
		Args: `{"path": "/home/alice/src/payments-service/internal", "recursive": false}`},
	{Name: "fs_write_file", Server: "filesystem", Tool: "write_file", Intended: OutcomeAllow, Weight: 10,
		Args:        mustJSON(map[string]any{"path": "/home/alice/src/payments-service/internal/ledger/reconcile_test.go", "content": goSource(1500)}),
		Annotations: engine.Annotations{ReadOnly: ptr(false), Destructive: ptr(false)}},
	{Name: "gh_search_issues", Server: "github", Tool: "search_issues", Intended: OutcomeAllow, Weight: 15,
		Args:        `{"query": "is:open label:bug reconcile ledger drift", "repo": "acme/payments-service", "labels": ["bug", "ledger"], "sort": "updated", "per_page": 50}`,
		Annotations: engine.Annotations{ReadOnly: ptr(true), OpenWorld: ptr(true)}},
	{Name: "gh_create_issue", Server: "github", Tool: "create_issue", Intended: OutcomeAllow, Weight: 5,
		Args: mustJSON(map[string]any{"repo": "acme/payments-service", "title": "Ledger reconciliation drifts by one cent on partial refunds",
			"body": prose(1000), "labels": []string{"bug", "ledger", "needs-triage"}, "assignees": []string{"alice"}})},
	{Name: "gh_unknown_tool", Server: "github", Tool: "drop_database", Intended: OutcomeDeny, Weight: 8,
		Args: `{"database": "payments_prod", "confirm": true}`},
	{Name: "gh_token_replay", Server: "github", Tool: "search_issues", Intended: OutcomeDeny, Weight: 7, ReplayToken: true,
		Args: `{"query": "is:open author:alice", "repo": "acme/payments-service"}`},
	{Name: "fs_delete_file", Server: "filesystem", Tool: "delete_file", Intended: OutcomeApproval, Weight: 8,
		Args: `{"path": "/home/alice/src/payments-service/internal/ledger/legacy_reconcile.go"}`},
	{Name: "fs_move_file", Server: "filesystem", Tool: "move_file", Intended: OutcomeApproval, Weight: 5,
		Args: `{"source": "/home/alice/src/payments-service/notes.md", "destination": "/home/alice/archive/notes-2026-11.md"}`},
	{Name: "gh_delete_repository", Server: "github", Tool: "delete_repository", Intended: OutcomeApproval, Weight: 2,
		Args: `{"repo": "acme/payments-service-old"}`},
}

func ptr[T any](v T) *T { return &v }

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// goSource is about n bytes of Go-looking text, as a write_file call carries.
func goSource(n int) string {
	const line = "\tif got, want := ledger.Reconcile(ctx, batch), expected; got != want {\n\t\tt.Fatalf(\"got %v, want %v\", got, want)\n\t}\n"
	return repeatTo("package ledger\n\nimport \"testing\"\n\nfunc TestReconcile(t *testing.T) {\n", line, n) + "}\n"
}

// prose is about n bytes of issue text.
func prose(n int) string {
	const s = "When a partial refund is issued after settlement, the reconciliation job rounds the remaining amount half-up while the ledger rounds half-even, so the two disagree by one cent. "
	return repeatTo("## What happens\n\n", s, n)
}

func repeatTo(head, unit string, n int) string {
	var b strings.Builder
	b.WriteString(head)
	for b.Len()+len(unit) <= n {
		b.WriteString(unit)
	}
	return b.String()
}

// Party is who a load session belongs to: a client acting for a subject.
type Party struct {
	Client  *arbiterv1.Client
	Subject *arbiterv1.Subject
}

// benchClients is how many clients the load's sessions belong to.
const benchClients = 16

func clientID(i int) string {
	return fmt.Sprintf("https://agent-%02d.example.com/.well-known/client.json", i%benchClients)
}

// party returns the i-th party: one of benchClients clients, one subject per session.
func party(i int) Party {
	attrs, _ := structpb.NewStruct(map[string]any{"department": "engineering", "employee_type": "full_time", "region": "eu-west", "clearance": 2})
	return Party{
		Client: &arbiterv1.Client{Id: clientID(i), Name: "ide-agent",
			Version: "1.14.2", Transport: arbiterv1.Transport_TRANSPORT_REMOTE},
		Subject: &arbiterv1.Subject{Id: fmt.Sprintf("user-%06d@example.com", i), Groups: []string{"eng", "payments", "oncall"}, Attributes: attrs},
	}
}

var (
	githubServer  = &arbiterv1.Server{Id: "github", Resource: "https://mcp.github.example.com", Transport: arbiterv1.Transport_TRANSPORT_REMOTE}
	fsServer      = &arbiterv1.Server{Id: "filesystem", Transport: arbiterv1.Transport_TRANSPORT_STDIO}
	toolboxServer = &arbiterv1.Server{Id: ToolboxServer, Transport: arbiterv1.Transport_TRANSPORT_STDIO}
	// sessionServers are the servers every load session is bound to.
	sessionServers = []*arbiterv1.Server{githubServer, fsServer, toolboxServer}
)

func serverProto(id string) *arbiterv1.Server {
	for _, s := range sessionServers {
		if s.GetId() == id {
			return s
		}
	}
	return &arbiterv1.Server{Id: id}
}

// credential is the claims of the token a gateway validated for p.
func credential(p Party, replay bool, expires time.Time) *arbiterv1.Credential {
	aud := "https://mcp.github.example.com"
	if replay {
		aud = "https://mcp.slack.example.com"
	}
	return &arbiterv1.Credential{Scopes: []string{"repo", "read:org", "files:read", "files:write"}, Audience: []string{aud},
		Issuer: "https://login.example.com", ClientId: p.Client.GetId(), ExpiresAt: timestamppb.New(expires)}
}

func requestContext(i int) *structpb.Struct {
	s, _ := structpb.NewStruct(map[string]any{"gateway": "gw-eu-1", "mcp_session": fmt.Sprintf("mcp-%08x", i*2654435761), "source": "vscode", "trace_id": fmt.Sprintf("%032x", i)})
	return s
}

func annotationsProto(a engine.Annotations) *arbiterv1.ToolAnnotations {
	if a == (engine.Annotations{}) {
		return nil
	}
	return &arbiterv1.ToolAnnotations{ReadOnlyHint: a.ReadOnly, DestructiveHint: a.Destructive, IdempotentHint: a.Idempotent, OpenWorldHint: a.OpenWorld}
}

// DecideRequest builds the gRPC request of template t in session sessionID of party i.
func (t *Template) DecideRequest(sessionID string, i int, expires time.Time) *arbiterv1.DecideRequest {
	p := party(i)
	return &arbiterv1.DecideRequest{
		SessionId:  sessionID,
		Client:     p.Client,
		Subject:    p.Subject,
		Server:     serverProto(t.Server),
		Credential: credential(p, t.ReplayToken, expires),
		Operation: &arbiterv1.Operation{Method: "tools/call", Tool: t.Tool, Annotations: annotationsProto(t.Annotations),
			DefinitionHash: "sha256:" + strings.Repeat("ab", 32),
			Args:           &arbiterv1.Operation_ArgumentsJson{ArgumentsJson: []byte(t.Args)}},
		Context: requestContext(i),
	}
}

// OpenSessionRequest is the request that opens load session i.
func OpenSessionRequest(i int, expires time.Time) *arbiterv1.OpenSessionRequest {
	p := party(i)
	return &arbiterv1.OpenSessionRequest{Client: p.Client, Subject: p.Subject, Servers: sessionServers,
		Credential: credential(p, false, expires), Context: requestContext(i)}
}

// FilterToolsRequest lists n tools of the toolbox server in session sessionID of party i
// (see FilterToolNames).
func FilterToolsRequest(sessionID string, i, n int, expires time.Time) *arbiterv1.FilterToolsRequest {
	p := party(i)
	req := &arbiterv1.FilterToolsRequest{SessionId: sessionID, Client: p.Client, Subject: p.Subject, Server: toolboxServer,
		Credential: credential(p, false, expires), Context: requestContext(i)}
	for _, name := range FilterToolNames(n) {
		tool := &arbiterv1.Tool{Name: name, DefinitionHash: "sha256:" + strings.Repeat("cd", 32)}
		if len(req.Tools)%3 == 0 { // as filterTools
			tool.Annotations = &arbiterv1.ToolAnnotations{ReadOnlyHint: ptr(true)}
		}
		req.Tools = append(req.Tools, tool)
	}
	return req
}

// filterTools is the engine form of FilterToolsRequest's n tools.
func filterTools(n int) []engine.Tool {
	var out []engine.Tool
	for i, name := range FilterToolNames(n) {
		t := engine.Tool{Name: name, DefinitionHash: "sha256:" + strings.Repeat("cd", 32)}
		if i%3 == 0 {
			t.Annotations.ReadOnly = ptr(true)
		}
		out = append(out, t)
	}
	return out
}

// toolboxEngineRequest is the engine form of FilterToolsRequest's request, without tools.
func toolboxEngineRequest(sessionID string, i int, expires time.Time) *engine.Request {
	req, _ := Mix[0].EngineRequest(sessionID, i, expires)
	req.Operation = engine.Operation{}
	req.Server = engine.Server{ID: ToolboxServer, Transport: "stdio"}
	return req
}

// FilterToolNames are the n tool names a FilterTools request of the harness lists: one in 25
// is not in the catalog (480 and 20 of 500), the others are the toolbox's, in catalog order.
func FilterToolNames(n int) []string {
	n = min(n, ToolboxTools)
	names := make([]string, 0, n)
	for i := range n - n/25 {
		names = append(names, toolboxToolName(i))
	}
	for i := range n / 25 {
		names = append(names, fmt.Sprintf("uncatalogued_%02d", i))
	}
	return names
}

// pick chooses a template by weight from a random number in [0, 100).
func pick(r int) int {
	for i := range Mix {
		if r < Mix[i].Weight {
			return i
		}
		r -= Mix[i].Weight
	}
	return 0
}

// EngineRequest is the engine form of t's request, as grpcapi converts it, for the in-process
// benchmarks.
func (t *Template) EngineRequest(sessionID string, i int, expires time.Time) (*engine.Request, error) {
	p := party(i)
	var args map[string]any
	dec := json.NewDecoder(strings.NewReader(t.Args))
	dec.UseNumber()
	if err := dec.Decode(&args); err != nil {
		return nil, err
	}
	cred := credential(p, t.ReplayToken, expires)
	srv := serverProto(t.Server)
	return &engine.Request{
		SessionID: sessionID,
		Client:    engine.Client{ID: p.Client.GetId(), Name: p.Client.GetName(), Version: p.Client.GetVersion(), Transport: "remote"},
		Subject:   engine.Subject{ID: p.Subject.GetId(), Groups: p.Subject.GetGroups(), Attributes: p.Subject.GetAttributes().AsMap()},
		Server:    engine.Server{ID: srv.GetId(), Resource: srv.GetResource(), Transport: transportName(srv.GetTransport())},
		Credential: engine.Credential{Scopes: cred.GetScopes(), Audience: cred.GetAudience(), Issuer: cred.GetIssuer(),
			ClientID: cred.GetClientId(), ExpiresAt: cred.GetExpiresAt().AsTime()},
		Operation: engine.Operation{Method: "tools/call", Tool: t.Tool, Arguments: args, Annotations: t.Annotations,
			DefinitionHash: "sha256:" + strings.Repeat("ab", 32)},
		Context: requestContext(i).AsMap(),
	}, nil
}

// EngineOpenRequest is the engine form of OpenSessionRequest(i).
func EngineOpenRequest(i int, expires time.Time) *engine.OpenRequest {
	p := party(i)
	cred := credential(p, false, expires)
	req := &engine.OpenRequest{
		Client:  engine.Client{ID: p.Client.GetId(), Name: p.Client.GetName(), Version: p.Client.GetVersion(), Transport: "remote"},
		Subject: engine.Subject{ID: p.Subject.GetId(), Groups: p.Subject.GetGroups(), Attributes: p.Subject.GetAttributes().AsMap()},
		Credential: engine.Credential{Scopes: cred.GetScopes(), Audience: cred.GetAudience(), Issuer: cred.GetIssuer(),
			ClientID: cred.GetClientId(), ExpiresAt: cred.GetExpiresAt().AsTime()},
		Context: requestContext(i).AsMap(),
	}
	for _, s := range sessionServers {
		req.Servers = append(req.Servers, engine.Server{ID: s.GetId(), Resource: s.GetResource(), Transport: transportName(s.GetTransport())})
	}
	return req
}

func transportName(t arbiterv1.Transport) string {
	switch t {
	case arbiterv1.Transport_TRANSPORT_STDIO:
		return "stdio"
	case arbiterv1.Transport_TRANSPORT_REMOTE:
		return "remote"
	}
	return ""
}

// warmCalls is how many allowed calls a session makes before it is measured, so its history
// is full (the engine keeps 32) as in a session mid-task.
const warmCalls = 40

// Calibration is what the policy answers each template of Mix in a warmed-up session, and the
// input document the engine builds for it.
type Calibration struct {
	// Want[k] is the outcome of template k; answers are checked against it.
	Want []Outcome
	// Reasons[k] are the reason codes of that answer.
	Reasons [][]string
	// Docs[k] is the input document of template k, as the engine builds it in that session.
	Docs []map[string]any
	// FilterVisible is how many tools FilterToolsRequest shows.
	FilterVisible int
}

// Calibrate asks an engine on Policy(0) each template of Mix, in a session opened and warmed
// up as the load's sessions are. The engine then switches to a policy that echoes its input
// and is asked again, which yields the exact input documents for OPA's REST server and the
// raw OPA benchmark, with the session state (counts, history, labels) the real policy built.
// filterN is the number of tools its FilterTools call lists.
func Calibrate(ctx context.Context, filterN int) (*Calibration, error) {
	p, err := Policy(0)
	if err != nil {
		return nil, err
	}
	e, err := engine.New(ctx, engine.Config{}, p)
	if err != nil {
		return nil, err
	}
	expires := time.Now().Add(2 * time.Hour)
	sid, err := openWarm(ctx, e, 0, expires)
	if err != nil {
		return nil, err
	}
	c := &Calibration{}
	for i := range Mix {
		req, err := Mix[i].EngineRequest(sid, 0, expires)
		if err != nil {
			return nil, err
		}
		d, err := e.Decide(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", Mix[i].Name, err)
		}
		var codes []string
		for _, r := range d.Reasons {
			codes = append(codes, r.Code)
		}
		c.Want = append(c.Want, outcomeNamed(string(d.Outcome)))
		c.Reasons = append(c.Reasons, codes)
	}
	f, err := e.FilterTools(ctx, toolboxEngineRequest(sid, 0, expires), filterTools(filterN))
	if err != nil {
		return nil, fmt.Errorf("filter tools: %w", err)
	}
	for _, v := range f.Tools {
		if v.Outcome != engine.Deny {
			c.FilterVisible++
		}
	}
	echo := engine.Policy{
		Revision: "echo",
		Modules:  map[string]*ast.Module{"echo.rego": ast.MustParseModule("package mcp\n\ndecision := {\"result\": \"allow\", \"obligations\": {\"input\": input}}\n")},
	}
	if err := e.Activate(ctx, echo); err != nil {
		return nil, err
	}
	for i := range Mix {
		req, err := Mix[i].EngineRequest(sid, 0, expires)
		if err != nil {
			return nil, err
		}
		d, err := e.Decide(ctx, req)
		if err != nil {
			return nil, err
		}
		doc, ok := d.Obligations["input"].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("echo policy returned no input for %s", Mix[i].Name)
		}
		c.Docs = append(c.Docs, doc)
	}
	return c, nil
}

// Notes says where the policy's answers differ from the outcomes the mix intends.
func (c *Calibration) Notes() []string {
	var out []string
	for k, t := range Mix {
		if c.Want[k] != t.Intended {
			out = append(out, fmt.Sprintf("%s: the policy answers %s (%s) where the mix intends %s", t.Name, c.Want[k], strings.Join(c.Reasons[k], ", "), t.Intended))
		}
	}
	return out
}

// openWarm opens session i in e and makes warmCalls calls of the intended-allow templates.
func openWarm(ctx context.Context, e *engine.Engine, i int, expires time.Time) (string, error) {
	d, info, err := e.OpenSession(ctx, EngineOpenRequest(i, expires))
	if err != nil {
		return "", err
	}
	if d.Outcome != engine.Allow || info == nil {
		return "", fmt.Errorf("open session: %s %v", d.Outcome, d.Reasons)
	}
	for n := range warmCalls {
		req, err := Mix[warmTemplates[n%len(warmTemplates)]].EngineRequest(info.Session.ID, i, expires)
		if err != nil {
			return "", err
		}
		if _, err := e.Decide(ctx, req); err != nil {
			return "", err
		}
	}
	return info.Session.ID, nil
}

// warmTemplates are the templates of Mix meant to be allowed: a session's warm-up calls.
var warmTemplates = func() []int {
	var out []int
	for k := range Mix {
		if Mix[k].Intended == OutcomeAllow {
			out = append(out, k)
		}
	}
	return out
}()
