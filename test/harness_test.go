// Package test holds black-box tests of the Arbiter service: the real engine, store and gRPC
// server on loopback port 0, called through a real gRPC client, and the built binary.
package test

import (
	"context"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/grpcapi"
	"github.com/arbiter-mcp/arbiter/policy"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// clock is a settable time source for expiry tests.
type clock struct{ now atomic.Pointer[time.Time] }

func (c *clock) Now() time.Time          { return *c.now.Load() }
func (c *clock) set(t time.Time)         { c.now.Store(&t) }
func (c *clock) advance(d time.Duration) { c.set(c.Now().Add(d)) }

// service is a running Arbiter reached over gRPC.
type service struct {
	engine *engine.Engine
	clock  *clock
	addr   string
	clients
}

// clients are the API clients of one connection, with one caller's credentials.
type clients struct {
	decisions arbiterv1.DecisionServiceClient
	sessions  arbiterv1.SessionServiceClient
	approvals arbiterv1.ApprovalServiceClient
}

// bearer sends a token in the "authorization" metadata of every call.
type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	if b == "" {
		return nil, nil
	}
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// as connects to the service presenting token ("" for none).
func (s *service) as(t *testing.T, token string) clients {
	t.Helper()
	conn, err := grpc.NewClient(s.addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithPerRPCCredentials(bearer(token)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return clients{
		decisions: arbiterv1.NewDecisionServiceClient(conn),
		sessions:  arbiterv1.NewSessionServiceClient(conn),
		approvals: arbiterv1.NewApprovalServiceClient(conn),
	}
}

// defaultPolicy is the embedded policy, with edit applied to its data.
func defaultPolicy(t *testing.T, edit func(data map[string]any)) engine.Policy {
	t.Helper()
	p, err := engine.LoadPolicyFS(policy.FS(), ".", "default")
	if err != nil {
		t.Fatalf("load default policy: %v", err)
	}
	if edit != nil {
		edit(p.Data)
	}
	return p
}

// start runs the service on 127.0.0.1:0 with p, without authentication, and returns clients
// for it.
func start(t *testing.T, p engine.Policy) *service {
	t.Helper()
	return startWithTokens(t, p, nil)
}

// startWithTokens runs the service requiring tokens; the embedded clients present none.
func startWithTokens(t *testing.T, p engine.Policy, tokens []grpcapi.Token) *service {
	t.Helper()
	c := &clock{}
	c.set(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	eng, err := engine.New(context.Background(), engine.Config{Clock: c.Now, EvalTimeout: time.Second}, p)
	if err != nil {
		t.Fatalf("start engine: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	auth, err := grpcapi.NewAuthenticator(tokens)
	if err != nil {
		t.Fatal(err)
	}
	gs := grpcapi.NewServer(grpcapi.New(eng, grpcapi.Config{}), health.NewServer(), auth)
	go gs.Serve(ln)
	t.Cleanup(gs.Stop)

	svc := &service{engine: eng, clock: c, addr: ln.Addr().String()}
	svc.clients = svc.as(t, "")
	return svc
}

// Parties used throughout: an IDE agent acting for alice.
var (
	agent = &arbiterv1.Client{Id: "https://ide.example.com/client.json", Name: "ide-agent", Transport: arbiterv1.Transport_TRANSPORT_REMOTE}
	alice = &arbiterv1.Subject{Id: "alice@example.com", Groups: []string{"eng"}}
	// githubServer is remote; its catalog resource is https://mcp.github.example.com.
	githubServer = &arbiterv1.Server{Id: "github", Resource: "https://mcp.github.example.com", Transport: arbiterv1.Transport_TRANSPORT_REMOTE}
	githubToken  = &arbiterv1.Credential{Audience: []string{"https://mcp.github.example.com"}, Scopes: []string{"repo"}}
	fsServer     = &arbiterv1.Server{Id: "filesystem", Transport: arbiterv1.Transport_TRANSPORT_STDIO}
)

func (s *service) open(t *testing.T, servers ...*arbiterv1.Server) string {
	t.Helper()
	resp, err := s.sessions.OpenSession(context.Background(), &arbiterv1.OpenSessionRequest{Client: agent, Subject: alice, Servers: servers})
	if err != nil {
		t.Fatalf("open session: %v", err)
	}
	if resp.GetDecision() != arbiterv1.Decision_DECISION_ALLOW || resp.GetSession().GetId() == "" {
		t.Fatalf("open session: %v", resp)
	}
	return resp.GetSession().GetId()
}

// toolCall is a tools/call request to the filesystem server.
func toolCall(session, tool string) *arbiterv1.DecideRequest {
	return &arbiterv1.DecideRequest{
		SessionId: session,
		Client:    agent,
		Subject:   alice,
		Server:    fsServer,
		Operation: &arbiterv1.Operation{Method: "tools/call", Tool: tool, Args: &arbiterv1.Operation_ArgumentsJson{ArgumentsJson: []byte(`{"path": "/home/alice/notes.md"}`)}},
	}
}

func (s *service) decide(t *testing.T, req *arbiterv1.DecideRequest) *arbiterv1.DecideResponse {
	t.Helper()
	resp, err := s.decisions.Decide(context.Background(), req)
	if err != nil {
		t.Fatalf("decide: %v", err)
	}
	if resp.GetDecisionId() == "" || resp.GetPolicyRevision() == "" {
		t.Fatalf("decision without id or policy revision: %v", resp)
	}
	return resp
}

func wantDecision(t *testing.T, resp *arbiterv1.DecideResponse, want arbiterv1.Decision, codes ...string) {
	t.Helper()
	if resp.GetDecision() != want {
		t.Fatalf("decision %s, want %s (reasons %v)", resp.GetDecision(), want, resp.GetReasons())
	}
	have := map[string]bool{}
	for _, r := range resp.GetReasons() {
		have[r.GetCode()] = true
		if r.GetMessage() == "" {
			t.Errorf("reason %s has no message", r.GetCode())
		}
	}
	for _, c := range codes {
		if !have[c] {
			t.Errorf("reasons %v lack %q", resp.GetReasons(), c)
		}
	}
}
