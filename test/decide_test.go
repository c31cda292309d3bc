package test

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/arbiter-mcp/arbiter/engine"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

func TestDecideOutcomes(t *testing.T) {
	svc := start(t, defaultPolicy(t, nil))
	sess := svc.open(t)

	t.Run("allow read-only tool", func(t *testing.T) {
		wantDecision(t, svc.decide(t, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_ALLOW)
	})
	t.Run("deny tool outside the catalog", func(t *testing.T) {
		wantDecision(t, svc.decide(t, toolCall(sess, "exfiltrate")), arbiterv1.Decision_DECISION_DENY, "tool_unknown")
	})
	t.Run("deny server outside the catalog", func(t *testing.T) {
		req := toolCall(sess, "read_file")
		req.Server = &arbiterv1.Server{Id: "shadow-server"}
		wantDecision(t, svc.decide(t, req), arbiterv1.Decision_DECISION_DENY, "server_unknown")
	})
	t.Run("require approval for a destructive tool", func(t *testing.T) {
		wantDecision(t, svc.decide(t, toolCall(sess, "delete_file")), arbiterv1.Decision_DECISION_REQUIRE_APPROVAL, "destructive_tool")
	})
	t.Run("remote server with its own audience", func(t *testing.T) {
		req := toolCall(sess, "search_issues")
		req.Server, req.Credential = githubServer, githubToken
		wantDecision(t, svc.decide(t, req), arbiterv1.Decision_DECISION_ALLOW)
	})
	t.Run("deny a token minted for another server", func(t *testing.T) {
		req := toolCall(sess, "search_issues")
		req.Server = githubServer
		req.Credential = &arbiterv1.Credential{Audience: []string{"https://mcp.slack.example.com"}}
		wantDecision(t, svc.decide(t, req), arbiterv1.Decision_DECISION_DENY, "audience_mismatch")
	})
	t.Run("Struct arguments work like raw JSON", func(t *testing.T) {
		args, _ := structpb.NewStruct(map[string]any{"path": "/tmp/x"})
		req := toolCall(sess, "read_file")
		req.Operation.Args = &arbiterv1.Operation_Arguments{Arguments: args}
		wantDecision(t, svc.decide(t, req), arbiterv1.Decision_DECISION_ALLOW)
	})

	got, err := svc.sessions.GetSession(context.Background(), &arbiterv1.GetSessionRequest{SessionId: sess})
	if err != nil {
		t.Fatal(err)
	}
	// read_file twice and search_issues once were allowed; nothing else may have moved the session.
	if s := got.GetSession(); s.GetCallsTotal() != 3 || s.GetCallsByTool()["filesystem"].GetTools()["read_file"] != 2 ||
		len(s.GetHistory()) != 3 || !containsString(s.GetLabels(), "private_data") {
		t.Errorf("session after the calls: %v", s)
	}
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestSessionLifecycleDenials(t *testing.T) {
	svc := start(t, defaultPolicy(t, nil))
	ctx := context.Background()

	t.Run("unknown session", func(t *testing.T) {
		wantDecision(t, svc.decide(t, toolCall("ses_doesnotexist", "read_file")), arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionUnknown)
	})

	t.Run("revoked session, from the very next call", func(t *testing.T) {
		sess := svc.open(t)
		wantDecision(t, svc.decide(t, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_ALLOW)
		resp, err := svc.sessions.RevokeSessions(ctx, &arbiterv1.RevokeSessionsRequest{SessionId: sess, Reason: "laptop stolen"})
		if err != nil || len(resp.GetSessionIds()) != 1 {
			t.Fatalf("revoke: %v %v", resp, err)
		}
		d := svc.decide(t, toolCall(sess, "read_file"))
		wantDecision(t, d, arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionRevoked)
		if !strings.Contains(d.GetReasons()[0].GetMessage(), "laptop stolen") {
			t.Errorf("the revocation reason should reach the gateway: %v", d.GetReasons())
		}
		if _, err := svc.sessions.CloseSession(ctx, &arbiterv1.CloseSessionRequest{SessionId: sess}); status.Code(err) != codes.FailedPrecondition {
			t.Errorf("closing a revoked session: %v, want FailedPrecondition", err)
		}
		got, _ := svc.sessions.GetSession(ctx, &arbiterv1.GetSessionRequest{SessionId: sess})
		if got.GetSession().GetStatus() != arbiterv1.SessionStatus_SESSION_STATUS_REVOKED {
			t.Errorf("a revoked session must stay revoked, got %v", got.GetSession().GetStatus())
		}
	})

	t.Run("revoke by subject", func(t *testing.T) {
		a, b := svc.open(t), svc.open(t)
		resp, err := svc.sessions.RevokeSessions(ctx, &arbiterv1.RevokeSessionsRequest{SubjectId: alice.GetId(), Reason: "offboarded"})
		if err != nil || len(resp.GetSessionIds()) < 2 {
			t.Fatalf("revoke by subject: %v %v", resp, err)
		}
		for _, id := range []string{a, b} {
			wantDecision(t, svc.decide(t, toolCall(id, "read_file")), arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionRevoked)
		}
	})

	t.Run("closed session", func(t *testing.T) {
		sess := svc.open(t)
		if _, err := svc.sessions.CloseSession(ctx, &arbiterv1.CloseSessionRequest{SessionId: sess, Reason: "task done"}); err != nil {
			t.Fatal(err)
		}
		wantDecision(t, svc.decide(t, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionClosed)
	})

	t.Run("expired session", func(t *testing.T) {
		resp, err := svc.sessions.OpenSession(ctx, &arbiterv1.OpenSessionRequest{Client: agent, Subject: alice, Ttl: durationpb.New(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		sess := resp.GetSession().GetId()
		wantDecision(t, svc.decide(t, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_ALLOW)
		svc.clock.advance(time.Minute)
		wantDecision(t, svc.decide(t, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionExpired)
	})

	t.Run("session used by another client", func(t *testing.T) {
		sess := svc.open(t)
		req := toolCall(sess, "read_file")
		req.Client = &arbiterv1.Client{Id: "rogue-agent"}
		wantDecision(t, svc.decide(t, req), arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionMismatch)
	})

	t.Run("session bound to other servers", func(t *testing.T) {
		sess := svc.open(t, githubServer)
		wantDecision(t, svc.decide(t, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionServerUnbound)
	})

	t.Run("opening a session on an unknown server is denied", func(t *testing.T) {
		resp, err := svc.sessions.OpenSession(ctx, &arbiterv1.OpenSessionRequest{Client: agent, Subject: alice, Servers: []*arbiterv1.Server{{Id: "shadow"}}})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetDecision() != arbiterv1.Decision_DECISION_DENY || resp.GetSession() != nil {
			t.Errorf("open on an unknown server: %v", resp)
		}
	})
}

func TestPolicyErrorsFailClosed(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
	}{
		// Each answers other tools correctly, so it activates, and fails for read_file.
		{"evaluation error", "package mcp\n\ndecision := {\"result\": \"allow\"} if true\n\ndecision := {\"result\": \"deny\"} if input.operation.tool == \"read_file\"\n"},
		{"garbage result", "package mcp\n\ndecision := [\"allow\"] if input.operation.tool == \"read_file\"\n\ndecision := {\"result\": \"allow\"} if input.operation.tool != \"read_file\"\n"},
		{"unknown outcome", "package mcp\n\ndecision := {\"result\": \"yes\"} if input.operation.tool == \"read_file\"\n\ndecision := {\"result\": \"allow\"} if input.operation.tool != \"read_file\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := engine.LoadPolicyFS(fstest.MapFS{"p.rego": {Data: []byte(tc.src)}}, ".", "broken")
			if err != nil {
				t.Fatal(err)
			}
			svc := start(t, p)
			d := svc.decide(t, toolCall("", "read_file"))
			wantDecision(t, d, arbiterv1.Decision_DECISION_DENY, engine.ReasonPolicyError)
			if strings.Contains(d.GetReasons()[0].GetMessage(), "conflict") || strings.Contains(d.GetReasons()[0].GetMessage(), "yes") {
				t.Errorf("the policy's internals leaked to the caller: %v", d.GetReasons())
			}
		})
	}
}

func TestBudgetOfTenUnderHundredConcurrentCalls(t *testing.T) {
	svc := start(t, defaultPolicy(t, func(data map[string]any) {
		data["limits"].(map[string]any)["session"] = map[string]any{"max_calls": 10}
	}))
	sess := svc.open(t)
	var allowed, exhausted atomic.Int64
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() {
			resp, err := svc.decisions.Decide(context.Background(), toolCall(sess, "read_file"))
			if err != nil {
				t.Error(err)
				return
			}
			switch {
			case resp.GetDecision() == arbiterv1.Decision_DECISION_ALLOW:
				allowed.Add(1)
			case resp.GetDecision() == arbiterv1.Decision_DECISION_DENY && resp.GetReasons()[0].GetCode() == "budget_exhausted":
				exhausted.Add(1)
			default:
				t.Errorf("unexpected answer %v", resp)
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 10 || exhausted.Load() != 90 {
		t.Fatalf("allowed %d and denied %d for budget; want exactly 10 and 90", allowed.Load(), exhausted.Load())
	}
}

func TestBadInputIsRejectedAndChangesNothing(t *testing.T) {
	svc := start(t, defaultPolicy(t, nil))
	sess := svc.open(t)
	big := `{"blob": "` + strings.Repeat("x", 300<<10) + `"}`
	for _, tc := range []struct {
		name  string
		field string
		edit  func(r *arbiterv1.DecideRequest)
	}{
		{"missing client id", "client.id", func(r *arbiterv1.DecideRequest) { r.Client = nil }},
		{"missing server id", "server.id", func(r *arbiterv1.DecideRequest) { r.Server = &arbiterv1.Server{} }},
		{"missing method", "operation.method", func(r *arbiterv1.DecideRequest) { r.Operation.Method = "" }},
		{"arguments not an object", "operation.arguments_json", func(r *arbiterv1.DecideRequest) {
			r.Operation.Args = &arbiterv1.Operation_ArgumentsJson{ArgumentsJson: []byte(`["a", "b"]`)}
		}},
		{"arguments not JSON", "operation.arguments_json", func(r *arbiterv1.DecideRequest) {
			r.Operation.Args = &arbiterv1.Operation_ArgumentsJson{ArgumentsJson: []byte(`{"a": `)}
		}},
		{"oversized arguments", "operation.arguments_json", func(r *arbiterv1.DecideRequest) {
			r.Operation.Args = &arbiterv1.Operation_ArgumentsJson{ArgumentsJson: []byte(big)}
		}},
		{"oversized context", "context", func(r *arbiterv1.DecideRequest) {
			r.Context, _ = structpb.NewStruct(map[string]any{"blob": strings.Repeat("x", 100<<10)})
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := toolCall(sess, "read_file")
			tc.edit(req)
			_, err := svc.decisions.Decide(context.Background(), req)
			if status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), tc.field+":") {
				t.Fatalf("error %v, want InvalidArgument naming %s", err, tc.field)
			}
		})
	}
	got, err := svc.sessions.GetSession(context.Background(), &arbiterv1.GetSessionRequest{SessionId: sess})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetSession().GetCallsTotal() != 0 || len(got.GetSession().GetHistory()) != 0 {
		t.Errorf("rejected requests changed the session: %v", got.GetSession())
	}
	if _, err := svc.sessions.GetSession(context.Background(), &arbiterv1.GetSessionRequest{SessionId: "ses_missing"}); status.Code(err) != codes.NotFound {
		t.Errorf("get of an unknown session: %v, want NotFound", err)
	}
	if _, err := svc.sessions.RevokeSessions(context.Background(), &arbiterv1.RevokeSessionsRequest{Reason: "everything"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("revoke without selector: %v, want InvalidArgument", err)
	}
}

// rawCodec sends and receives messages as the bytes given, so a test can send what no
// protobuf encoder would write.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	return mem.BufferSlice{mem.SliceBuffer(*v.(*[]byte))}, nil
}
func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	*v.(*[]byte) = data.Materialize()
	return nil
}

// TestRequestsNotUTF8AreRefused sends requests with strings that are not UTF-8, as a broken
// gateway could (protobuf encoders refuse to write them): the server refuses each before any
// decision, and the session is as it was. The same request with valid text is decided.
func TestRequestsNotUTF8AreRefused(t *testing.T) {
	svc := start(t, defaultPolicy(t, nil))
	sess := svc.open(t, fsServer)
	conn, err := grpc.NewClient(svc.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	base, err := proto.Marshal(toolCall(sess, "read_file"))
	if err != nil {
		t.Fatal(err)
	}
	// Fields appended on the wire merge into the message: each sets one string.
	str := func(num protowire.Number, s string) []byte {
		return protowire.AppendString(protowire.AppendTag(nil, num, protowire.BytesType), s)
	}
	msg := func(num protowire.Number, inner []byte) []byte {
		return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), inner)
	}
	decide := func(extra []byte) ([]byte, error) {
		in := append(append([]byte(nil), base...), extra...)
		var out []byte
		err := conn.Invoke(context.Background(), "/arbiter.v1.DecisionService/Decide", &in, &out, grpc.ForceCodecV2(rawCodec{}))
		return out, err
	}
	for _, tc := range []struct {
		name  string
		extra func(text string) []byte
	}{
		{"tool", func(s string) []byte { return msg(6, str(2, s)) }},
		{"client id", func(s string) []byte { return msg(2, str(1, s)) }},
		{"subject group", func(s string) []byte { return msg(3, str(2, s)) }},
		{"context value", func(s string) []byte {
			entry := append(str(1, "trace"), msg(2, str(3, s))...)
			return msg(7, msg(1, entry))
		}},
		{"context key", func(s string) []byte {
			entry := append(str(1, s), msg(2, str(3, "v"))...)
			return msg(7, msg(1, entry))
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decide(tc.extra("bad \xff"))
			if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), "invalid UTF-8") {
				t.Fatalf("error %v, want Internal for invalid UTF-8", err)
			}
		})
	}
	got, err := svc.sessions.GetSession(context.Background(), &arbiterv1.GetSessionRequest{SessionId: sess})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetSession().GetCallsTotal() != 0 {
		t.Fatalf("refused requests changed the session: %v", got.GetSession())
	}
	out, err := decide(msg(7, msg(1, append(str(1, "trace"), msg(2, str(3, "ok ✓"))...))))
	if err != nil {
		t.Fatal(err)
	}
	var resp arbiterv1.DecideResponse
	if err := proto.Unmarshal(out, &resp); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, &resp, arbiterv1.Decision_DECISION_ALLOW)
}

func TestFilterTools(t *testing.T) {
	svc := start(t, defaultPolicy(t, nil))
	sess := svc.open(t)
	resp, err := svc.decisions.FilterTools(context.Background(), &arbiterv1.FilterToolsRequest{
		SessionId: sess, Client: agent, Subject: alice, Server: fsServer,
		Tools: []*arbiterv1.Tool{{Name: "read_file"}, {Name: "rm_rf"}, {Name: "delete_file"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(resp.GetVisible(), ","); got != "read_file,delete_file" {
		t.Errorf("visible tools %q, want read_file,delete_file", got)
	}
	if v := resp.GetTools()[1]; v.GetDecision() != arbiterv1.Decision_DECISION_DENY || v.GetReasons()[0].GetCode() != "tool_unknown" {
		t.Errorf("rm_rf verdict %v", v)
	}
}
