package test

import (
	"context"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/grpcapi"
	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

const (
	adminToken    = "admin-token-0123456789abcdef"
	gatewayToken  = "gateway-token-0123456789abcdef"
	gateway2Token = "other-gateway-token-0123456789ab"
)

var testTokens = []grpcapi.Token{
	{Name: "security-oncall", Secret: adminToken, Role: grpcapi.RoleAdmin},
	{Name: "edge-gateway", Secret: gatewayToken, Role: grpcapi.RoleGateway},
	{Name: "other-gateway", Secret: gateway2Token, Role: grpcapi.RoleGateway},
}

func approve(t *testing.T, c clients, id string, scope arbiterv1.ApprovalScope) *arbiterv1.Approval {
	t.Helper()
	resp, err := c.approvals.ResolveApproval(context.Background(), &arbiterv1.ResolveApprovalRequest{
		ApprovalId: id, Resolution: arbiterv1.Resolution_RESOLUTION_APPROVE, Approver: "bob@example.com", Note: "ok for this task", Scope: scope,
	})
	if err != nil {
		t.Fatalf("approve %s: %v", id, err)
	}
	return resp.GetApproval()
}

func decideAs(t *testing.T, c clients, req *arbiterv1.DecideRequest) *arbiterv1.DecideResponse {
	t.Helper()
	resp, err := c.decisions.Decide(context.Background(), req)
	if err != nil {
		t.Fatalf("decide: %v", err)
	}
	return resp
}

func openAs(t *testing.T, c clients, servers ...*arbiterv1.Server) string {
	t.Helper()
	resp, err := c.sessions.OpenSession(context.Background(), &arbiterv1.OpenSessionRequest{Client: agent, Subject: alice, Servers: servers})
	if err != nil || resp.GetDecision() != arbiterv1.Decision_DECISION_ALLOW {
		t.Fatalf("open session: %v %v", resp, err)
	}
	return resp.GetSession().GetId()
}

// TestApprovalFlow: decide -> require approval -> watch -> approve -> retry allowed -> the
// once grant is consumed -> the next identical call requires approval again.
func TestApprovalFlow(t *testing.T) {
	svc := startWithTokens(t, defaultPolicy(t, nil), testTokens)
	gw, admin := svc.as(t, gatewayToken), svc.as(t, adminToken)
	ctx := context.Background()
	sess := openAs(t, gw)

	first := decideAs(t, gw, toolCall(sess, "delete_file"))
	wantDecision(t, first, arbiterv1.Decision_DECISION_REQUIRE_APPROVAL, "destructive_tool")
	id := first.GetApproval().GetId()
	if id == "" || first.GetApproval().GetExpiresAt() == nil {
		t.Fatalf("require_approval without an approval handle: %v", first)
	}
	// The same call again while pending reuses the approval.
	if again := decideAs(t, gw, toolCall(sess, "delete_file")); again.GetApproval().GetId() != id {
		t.Fatalf("identical pending request got approval %s, want %s", again.GetApproval().GetId(), id)
	}

	// The gateway waits on the approval: it sees it pending, then approved, then the stream ends.
	watch, err := gw.approvals.WatchApproval(ctx, &arbiterv1.WatchApprovalRequest{ApprovalId: id})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := watch.Recv()
	if err != nil || msg.GetApproval().GetStatus() != arbiterv1.ApprovalStatus_APPROVAL_STATUS_PENDING {
		t.Fatalf("first watch message: %v %v", msg, err)
	}
	if a := msg.GetApproval(); a.GetTool() != "delete_file" || a.GetArguments().GetFields()["path"].GetStringValue() != "/home/alice/notes.md" ||
		a.GetRequestedBy() != "edge-gateway" || a.GetReasons()[0].GetCode() != "destructive_tool" {
		t.Errorf("the approver must see what was asked, by whom and why: %v", a)
	}

	approved := approve(t, admin, id, arbiterv1.ApprovalScope_APPROVAL_SCOPE_UNSPECIFIED)
	if approved.GetResolvedBy() != "bob@example.com" || approved.GetScope() != arbiterv1.ApprovalScope_APPROVAL_SCOPE_ONCE {
		t.Errorf("resolved approval %v", approved)
	}
	msg, err = watch.Recv()
	if err != nil || msg.GetApproval().GetStatus() != arbiterv1.ApprovalStatus_APPROVAL_STATUS_APPROVED {
		t.Fatalf("watch after approval: %v %v", msg, err)
	}
	if _, err := watch.Recv(); err != io.EOF {
		t.Fatalf("watch should end once resolved, got %v", err)
	}

	// A call with other arguments is not covered by the grant.
	other := toolCall(sess, "delete_file")
	other.Operation.Args = &arbiterv1.Operation_ArgumentsJson{ArgumentsJson: []byte(`{"path": "/etc/passwd"}`)}
	if d := decideAs(t, gw, other); d.GetDecision() != arbiterv1.Decision_DECISION_REQUIRE_APPROVAL || d.GetApproval().GetId() == id {
		t.Fatalf("a grant must bind the exact arguments: %v", d)
	}

	retry := decideAs(t, gw, toolCall(sess, "delete_file"))
	wantDecision(t, retry, arbiterv1.Decision_DECISION_ALLOW, engine.ReasonApprovalGranted)
	if retry.GetApproval().GetId() != id {
		t.Errorf("the allow should name the grant it used: %v", retry)
	}
	got, _ := admin.approvals.GetApproval(ctx, &arbiterv1.GetApprovalRequest{ApprovalId: id})
	if got.GetApproval().GetStatus() != arbiterv1.ApprovalStatus_APPROVAL_STATUS_CONSUMED || got.GetApproval().GetConsumedByDecision() != retry.GetDecisionId() {
		t.Errorf("the once grant should be consumed by the retry: %v", got.GetApproval())
	}

	next := decideAs(t, gw, toolCall(sess, "delete_file"))
	wantDecision(t, next, arbiterv1.Decision_DECISION_REQUIRE_APPROVAL, "destructive_tool")
	if next.GetApproval().GetId() == id {
		t.Error("after the once grant is used, the next identical call needs a new approval")
	}

	s, _ := admin.sessions.GetSession(ctx, &arbiterv1.GetSessionRequest{SessionId: sess})
	if s.GetSession().GetCallsByTool()["filesystem"].GetTools()["delete_file"] != 1 {
		t.Errorf("the approved call must be recorded in the session: %v", s.GetSession())
	}
}

func TestSessionScopedGrantAndDenial(t *testing.T) {
	svc := start(t, defaultPolicy(t, nil))
	sess := svc.open(t)
	id := svc.decide(t, toolCall(sess, "delete_file")).GetApproval().GetId()
	approve(t, svc.clients, id, arbiterv1.ApprovalScope_APPROVAL_SCOPE_SESSION)
	for range 3 {
		wantDecision(t, svc.decide(t, toolCall(sess, "delete_file")), arbiterv1.Decision_DECISION_ALLOW, engine.ReasonApprovalGranted)
	}

	denied := svc.decide(t, toolCall(sess, "move_file")).GetApproval().GetId()
	if _, err := svc.approvals.ResolveApproval(context.Background(), &arbiterv1.ResolveApprovalRequest{
		ApprovalId: denied, Resolution: arbiterv1.Resolution_RESOLUTION_DENY, Approver: "bob@example.com", Note: "not during the freeze",
	}); err != nil {
		t.Fatal(err)
	}
	d := svc.decide(t, toolCall(sess, "move_file"))
	wantDecision(t, d, arbiterv1.Decision_DECISION_DENY, engine.ReasonApprovalDenied)
	if len(d.GetReasons()) != 1 {
		t.Errorf("a denied approval denies with that reason alone: %v", d.GetReasons())
	}
}

func TestConcurrentApprovalsAndGrants(t *testing.T) {
	svc := start(t, defaultPolicy(t, nil))
	sess := svc.open(t)
	ctx := context.Background()

	ids := make(chan string, 50)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			resp, err := svc.decisions.Decide(ctx, toolCall(sess, "delete_file"))
			if err != nil || resp.GetDecision() != arbiterv1.Decision_DECISION_REQUIRE_APPROVAL {
				t.Errorf("concurrent call: %v %v", resp, err)
				return
			}
			ids <- resp.GetApproval().GetId()
		})
	}
	wg.Wait()
	close(ids)
	distinct := map[string]bool{}
	for id := range ids {
		distinct[id] = true
	}
	list, err := svc.approvals.ListApprovals(ctx, &arbiterv1.ListApprovalsRequest{SessionId: sess})
	if err != nil {
		t.Fatal(err)
	}
	if len(distinct) != 1 || len(list.GetApprovals()) != 1 {
		t.Fatalf("50 identical calls made %d approval ids and %d records; want exactly 1", len(distinct), len(list.GetApprovals()))
	}

	var id string
	for k := range distinct {
		id = k
	}
	approve(t, svc.clients, id, arbiterv1.ApprovalScope_APPROVAL_SCOPE_ONCE)
	var allowed atomic.Int64
	for range 50 {
		wg.Go(func() {
			resp, err := svc.decisions.Decide(ctx, toolCall(sess, "delete_file"))
			if err != nil {
				t.Error(err)
				return
			}
			if resp.GetDecision() == arbiterv1.Decision_DECISION_ALLOW {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if allowed.Load() != 1 {
		t.Fatalf("50 retries after a once approval gave %d allows, want exactly 1", allowed.Load())
	}
}

// approvalPolicy requires approval to open a session that asks for the "github" server, and
// allows everything else.
const approvalPolicy = `package mcp

decision := {"result": "require_approval", "reasons": [{"code": "remote_session", "message": "remote server"}], "approval": {"scope": "once", "ttl_seconds": 600}} if {
	input.action == "session/open"
	"github" in input.session_request.servers
} else := {"result": "allow"}
`

func TestOpenSessionApproval(t *testing.T) {
	p, err := engine.LoadPolicyFS(fstest.MapFS{"p.rego": {Data: []byte(approvalPolicy)}}, ".", "approval")
	if err != nil {
		t.Fatal(err)
	}
	svc := start(t, p)
	ctx := context.Background()
	open := func() *arbiterv1.OpenSessionResponse {
		resp, err := svc.sessions.OpenSession(ctx, &arbiterv1.OpenSessionRequest{Client: agent, Subject: alice, Servers: []*arbiterv1.Server{githubServer}, Ttl: durationpb.New(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetDecision() != arbiterv1.Decision_DECISION_REQUIRE_APPROVAL || resp.GetSession().GetStatus() != arbiterv1.SessionStatus_SESSION_STATUS_PENDING_APPROVAL || resp.GetApproval().GetId() == "" {
			t.Fatalf("open needing approval: %v", resp)
		}
		return resp
	}
	call := func(sess string) *arbiterv1.DecideRequest {
		req := toolCall(sess, "search_issues")
		req.Server, req.Credential = githubServer, githubToken
		return req
	}

	resp := open()
	sess := resp.GetSession().GetId()
	wantDecision(t, svc.decide(t, call(sess)), arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionPending)

	svc.clock.advance(5 * time.Minute)
	approve(t, svc.clients, resp.GetApproval().GetId(), arbiterv1.ApprovalScope_APPROVAL_SCOPE_UNSPECIFIED)
	got, _ := svc.sessions.GetSession(ctx, &arbiterv1.GetSessionRequest{SessionId: sess})
	if got.GetSession().GetStatus() != arbiterv1.SessionStatus_SESSION_STATUS_ACTIVE ||
		!got.GetSession().GetExpiresAt().AsTime().Equal(svc.clock.Now().Add(time.Hour)) {
		t.Fatalf("approved session should be active for its hour from approval: %v", got.GetSession())
	}
	wantDecision(t, svc.decide(t, call(sess)), arbiterv1.Decision_DECISION_ALLOW)

	// A denied opening revokes the pending session.
	resp = open()
	if _, err := svc.approvals.ResolveApproval(ctx, &arbiterv1.ResolveApprovalRequest{ApprovalId: resp.GetApproval().GetId(), Resolution: arbiterv1.Resolution_RESOLUTION_DENY, Approver: "bob@example.com"}); err != nil {
		t.Fatal(err)
	}
	wantDecision(t, svc.decide(t, call(resp.GetSession().GetId())), arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionRevoked)

	// An opening nobody answers lapses: the approval expires and so does the session.
	resp = open()
	svc.clock.advance(11 * time.Minute)
	wantDecision(t, svc.decide(t, call(resp.GetSession().GetId())), arbiterv1.Decision_DECISION_DENY, engine.ReasonSessionExpired)
	_, err = svc.approvals.ResolveApproval(ctx, &arbiterv1.ResolveApprovalRequest{ApprovalId: resp.GetApproval().GetId(), Resolution: arbiterv1.Resolution_RESOLUTION_APPROVE, Approver: "late@example.com"})
	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("approving an expired approval: %v, want FailedPrecondition", err)
	}
	// Watching it now reports it expired and ends.
	watch, err := svc.approvals.WatchApproval(ctx, &arbiterv1.WatchApprovalRequest{ApprovalId: resp.GetApproval().GetId()})
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := watch.Recv(); err != nil || msg.GetApproval().GetStatus() != arbiterv1.ApprovalStatus_APPROVAL_STATUS_EXPIRED {
		t.Fatalf("watch of an expired approval: %v %v", msg, err)
	}
	if _, err := watch.Recv(); err != io.EOF {
		t.Fatalf("watch of an expired approval should end, got %v", err)
	}
}

func TestRenewNeedsApproval(t *testing.T) {
	svc := start(t, defaultPolicy(t, nil))
	ctx := context.Background()
	sess := svc.open(t)
	before, _ := svc.sessions.GetSession(ctx, &arbiterv1.GetSessionRequest{SessionId: sess})

	renew := &arbiterv1.RenewSessionRequest{SessionId: sess, Client: agent, Subject: alice, Ttl: durationpb.New(30 * time.Minute)}
	resp, err := svc.sessions.RenewSession(ctx, renew)
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetDecision() != arbiterv1.Decision_DECISION_REQUIRE_APPROVAL || resp.GetReasons()[0].GetCode() != "renewal_requires_approval" {
		t.Fatalf("an agent renewing its own session: %v", resp)
	}
	if !resp.GetSession().GetExpiresAt().AsTime().Equal(before.GetSession().GetExpiresAt().AsTime()) || resp.GetSession().GetRenewals() != 0 {
		t.Fatalf("an unapproved renewal must not extend the session: %v", resp.GetSession())
	}
	svc.clock.advance(10 * time.Minute)
	approve(t, svc.clients, resp.GetApproval().GetId(), arbiterv1.ApprovalScope_APPROVAL_SCOPE_UNSPECIFIED)
	after, _ := svc.sessions.GetSession(ctx, &arbiterv1.GetSessionRequest{SessionId: sess})
	if after.GetSession().GetRenewals() != 1 || !after.GetSession().GetExpiresAt().AsTime().Equal(svc.clock.Now().Add(30*time.Minute)) {
		t.Fatalf("approved renewal: %v", after.GetSession())
	}

	// Renewing a revoked session is an error and changes nothing.
	if _, err := svc.sessions.RevokeSessions(ctx, &arbiterv1.RevokeSessionsRequest{SessionId: sess, Reason: "done"}); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.sessions.RenewSession(ctx, renew); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("renewing a revoked session: %v, want FailedPrecondition", err)
	}
	// A renewal by another client is denied.
	other := svc.open(t)
	resp, err = svc.sessions.RenewSession(ctx, &arbiterv1.RenewSessionRequest{SessionId: other, Client: &arbiterv1.Client{Id: "rogue"}, Subject: alice})
	if err != nil || resp.GetDecision() != arbiterv1.Decision_DECISION_DENY || resp.GetReasons()[0].GetCode() != engine.ReasonSessionMismatch {
		t.Fatalf("renewal by another client: %v %v", resp, err)
	}
}

func TestRolesAndBadApprovalInput(t *testing.T) {
	svc := startWithTokens(t, defaultPolicy(t, nil), testTokens)
	gw, gw2, admin, anon := svc.as(t, gatewayToken), svc.as(t, gateway2Token), svc.as(t, adminToken), svc.as(t, "")
	wrong := svc.as(t, "not-a-real-token-but-long-enough")
	ctx := context.Background()
	sess := openAs(t, gw)
	id := decideAs(t, gw, toolCall(sess, "delete_file")).GetApproval().GetId()

	resolve := &arbiterv1.ResolveApprovalRequest{ApprovalId: id, Resolution: arbiterv1.Resolution_RESOLUTION_APPROVE, Approver: "agent-itself"}
	revoke := &arbiterv1.RevokeSessionsRequest{SubjectId: alice.GetId(), Reason: "x"}
	for _, tc := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"gateway resolves", func() error { _, err := gw.approvals.ResolveApproval(ctx, resolve); return err }, codes.PermissionDenied},
		{"gateway revokes", func() error { _, err := gw.sessions.RevokeSessions(ctx, revoke); return err }, codes.PermissionDenied},
		{"gateway lists sessions", func() error { _, err := gw.sessions.ListSessions(ctx, &arbiterv1.ListSessionsRequest{}); return err }, codes.PermissionDenied},
		{"no token resolves", func() error { _, err := anon.approvals.ResolveApproval(ctx, resolve); return err }, codes.Unauthenticated},
		{"no token decides", func() error { _, err := anon.decisions.Decide(ctx, toolCall(sess, "read_file")); return err }, codes.Unauthenticated},
		{"unknown token revokes", func() error { _, err := wrong.sessions.RevokeSessions(ctx, revoke); return err }, codes.Unauthenticated},
		{"other gateway reads approval", func() error {
			_, err := gw2.approvals.GetApproval(ctx, &arbiterv1.GetApprovalRequest{ApprovalId: id})
			return err
		}, codes.PermissionDenied},
		{"other gateway watches approval", func() error {
			st, err := gw2.approvals.WatchApproval(ctx, &arbiterv1.WatchApprovalRequest{ApprovalId: id})
			if err == nil {
				_, err = st.Recv()
			}
			return err
		}, codes.PermissionDenied},
		{"unknown approval", func() error {
			_, err := admin.approvals.GetApproval(ctx, &arbiterv1.GetApprovalRequest{ApprovalId: "apr_missing"})
			return err
		}, codes.NotFound},
		{"resolve without approver", func() error {
			_, err := admin.approvals.ResolveApproval(ctx, &arbiterv1.ResolveApprovalRequest{ApprovalId: id, Resolution: arbiterv1.Resolution_RESOLUTION_APPROVE})
			return err
		}, codes.InvalidArgument},
		{"resolve without resolution", func() error {
			_, err := admin.approvals.ResolveApproval(ctx, &arbiterv1.ResolveApprovalRequest{ApprovalId: id, Approver: "bob"})
			return err
		}, codes.InvalidArgument},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.call(); status.Code(err) != tc.want {
				t.Fatalf("got %v, want %s", err, tc.want)
			}
		})
	}

	// Nothing changed: the approval is still pending, the session still active.
	got, err := gw.approvals.GetApproval(ctx, &arbiterv1.GetApprovalRequest{ApprovalId: id})
	if err != nil || got.GetApproval().GetStatus() != arbiterv1.ApprovalStatus_APPROVAL_STATUS_PENDING {
		t.Fatalf("after refused calls the approval should still be pending: %v %v", got, err)
	}
	wantDecision(t, decideAs(t, gw, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_ALLOW)

	approve(t, admin, id, arbiterv1.ApprovalScope_APPROVAL_SCOPE_UNSPECIFIED)
	if _, err := admin.approvals.ResolveApproval(ctx, &arbiterv1.ResolveApprovalRequest{ApprovalId: id, Resolution: arbiterv1.Resolution_RESOLUTION_DENY, Approver: "bob"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("resolving a resolved approval: %v, want FailedPrecondition", err)
	}
	if a, _ := admin.approvals.GetApproval(ctx, &arbiterv1.GetApprovalRequest{ApprovalId: id}); a.GetApproval().GetStatus() != arbiterv1.ApprovalStatus_APPROVAL_STATUS_APPROVED {
		t.Fatalf("a second resolution must not change the first: %v", a)
	}
}

// TestGrantMatchesEitherArgumentForm: a gateway may send the same arguments as JSON text
// (numbers as written) or as a Struct (numbers as doubles); an approval granted for one form
// covers the other, because both digest to the same canonical JSON.
func TestGrantMatchesEitherArgumentForm(t *testing.T) {
	svc := startWithTokens(t, defaultPolicy(t, nil), testTokens)
	gw, admin := svc.as(t, gatewayToken), svc.as(t, adminToken)
	sess := openAs(t, gw)

	asText := toolCall(sess, "delete_file")
	asText.Operation.Args = &arbiterv1.Operation_ArgumentsJson{ArgumentsJson: []byte(`{"path": "/tmp/a", "depth": 2.0, "limit": 1e3}`)}
	first := decideAs(t, gw, asText)
	wantDecision(t, first, arbiterv1.Decision_DECISION_REQUIRE_APPROVAL, "destructive_tool")
	approve(t, admin, first.GetApproval().GetId(), arbiterv1.ApprovalScope_APPROVAL_SCOPE_ONCE)

	args, err := structpb.NewStruct(map[string]any{"path": "/tmp/a", "depth": 2, "limit": 1000})
	if err != nil {
		t.Fatal(err)
	}
	asStruct := toolCall(sess, "delete_file")
	asStruct.Operation.Args = &arbiterv1.Operation_Arguments{Arguments: args}
	retry := decideAs(t, gw, asStruct)
	wantDecision(t, retry, arbiterv1.Decision_DECISION_ALLOW, engine.ReasonApprovalGranted)
	if retry.GetApproval().GetId() != first.GetApproval().GetId() {
		t.Errorf("the Struct form used approval %q, want %q", retry.GetApproval().GetId(), first.GetApproval().GetId())
	}
}
