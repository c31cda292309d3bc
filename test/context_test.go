package test

import (
	"context"
	"testing"
	"testing/fstest"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/arbiter-mcp/arbiter/engine"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// The service hands the request's context and the subject's attributes (protobuf Structs) to
// the engine unconverted, for it to convert only when the policy reads them. A policy that
// reads them sees them, on every kind of call.
func TestPolicySeesContextAndAttributes(t *testing.T) {
	src := `package mcp

decision := {"result": "allow", "reasons": []} if {
	input.context.trace == "t-1"
	input.context.hops == 2
	input.subject.attributes.team == "payments"
	input.subject.attributes.tags == ["a", {"b": null}]
} else := {"result": "deny", "reasons": [{"code": "context_unseen", "message": sprintf("%v %v", [object.get(input, "context", null), object.get(input.subject, "attributes", null)])}]}
`
	p, err := engine.LoadPolicyFS(fstest.MapFS{"p.rego": {Data: []byte(src)}}, ".", "reads-context")
	if err != nil {
		t.Fatal(err)
	}
	svc := start(t, p)
	reqCtx, _ := structpb.NewStruct(map[string]any{"trace": "t-1", "hops": 2})
	attrs, _ := structpb.NewStruct(map[string]any{"team": "payments", "tags": []any{"a", map[string]any{"b": nil}}})
	subject := &arbiterv1.Subject{Id: alice.GetId(), Groups: alice.GetGroups(), Attributes: attrs}
	ctx := context.Background()

	open, err := svc.sessions.OpenSession(ctx, &arbiterv1.OpenSessionRequest{Client: agent, Subject: subject, Servers: []*arbiterv1.Server{fsServer}, Context: reqCtx})
	if err != nil || open.GetDecision() != arbiterv1.Decision_DECISION_ALLOW {
		t.Fatalf("open: %v %v", open, err)
	}
	sess := open.GetSession().GetId()

	req := toolCall(sess, "read_file")
	req.Subject, req.Context = subject, reqCtx
	wantDecision(t, svc.decide(t, req), arbiterv1.Decision_DECISION_ALLOW)
	req.Context = nil
	wantDecision(t, svc.decide(t, req), arbiterv1.Decision_DECISION_DENY, "context_unseen")

	f, err := svc.decisions.FilterTools(ctx, &arbiterv1.FilterToolsRequest{SessionId: sess, Client: agent, Subject: subject, Server: fsServer, Context: reqCtx,
		Tools: []*arbiterv1.Tool{{Name: "read_file"}}})
	if err != nil || len(f.GetTools()) != 1 || f.GetTools()[0].GetDecision() != arbiterv1.Decision_DECISION_ALLOW {
		t.Fatalf("filter tools: %v %v", f, err)
	}

	renew, err := svc.sessions.RenewSession(ctx, &arbiterv1.RenewSessionRequest{SessionId: sess, Client: agent, Subject: subject, Context: reqCtx})
	if err != nil || renew.GetDecision() != arbiterv1.Decision_DECISION_ALLOW {
		t.Fatalf("renew: %v %v", renew, err)
	}
	renew, err = svc.sessions.RenewSession(ctx, &arbiterv1.RenewSessionRequest{SessionId: sess, Client: agent, Subject: alice, Context: reqCtx})
	if err != nil || renew.GetDecision() != arbiterv1.Decision_DECISION_DENY {
		t.Fatalf("renew without the attributes: %v %v", renew, err)
	}
}
