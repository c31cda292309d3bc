package engine_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/state"
)

// renewPolicy allows opening and renewing, with a lifetime ceiling of one hour, and asks for
// approval of the tool "delete".
const renewPolicy = `package mcp

decision := {"result": "allow", "session": {"max_ttl_seconds": 3600}} if {
	input.action in {"session/open", "session/renew"}
} else := {"result": "require_approval", "approval": {"ttl_seconds": 60}} if {
	input.operation.tool == "delete"
} else := {"result": "allow"}
`

func TestSessionLifetimeLimits(t *testing.T) {
	clock := newClock()
	e, err := engine.New(context.Background(), engine.Config{Clock: clock.Now, MaxSessionLifetime: 2 * time.Hour}, policyFrom(t, "renew", map[string]string{"p.rego": renewPolicy}))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	start := clock.Now()
	_, info, err := e.OpenSession(ctx, &engine.OpenRequest{Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"}, TTL: 5 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Session.ExpiresAt; !got.Equal(start.Add(time.Hour)) {
		t.Fatalf("asked for 5h under a policy ceiling of 1h: expires %s, want %s", got, start.Add(time.Hour))
	}
	id := info.Session.ID
	renew := &engine.RenewRequest{SessionID: id, Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"}, TTL: time.Hour}

	clock.advance(30 * time.Minute)
	d, info, err := e.RenewSession(ctx, renew)
	if err != nil || d.Outcome != engine.Allow {
		t.Fatalf("renew: %+v %v", d, err)
	}
	if !info.Session.ExpiresAt.Equal(clock.Now().Add(time.Hour)) || info.Session.Renewals != 1 {
		t.Fatalf("after a renewal at +30m for 1h: %+v", info.Session)
	}
	clock.advance(50 * time.Minute)
	_, info, err = e.RenewSession(ctx, renew)
	if err != nil {
		t.Fatal(err)
	}
	if want := start.Add(2 * time.Hour); !info.Session.ExpiresAt.Equal(want) {
		t.Fatalf("renewals must stop at the maximum lifetime: expires %s, want %s", info.Session.ExpiresAt, want)
	}

	clock.advance(41 * time.Minute)
	if _, _, err := e.RenewSession(ctx, renew); !errors.Is(err, engine.ErrSessionEnded) {
		t.Fatalf("renewing an expired session: %v, want ErrSessionEnded", err)
	}
}

func TestWatchApprovalEndsWithCaller(t *testing.T) {
	e := newEngine(t, newClock(), map[string]string{"p.rego": renewPolicy})
	id := openSession(t, e)
	d := mustDecide(t, e, call(id, "delete"))
	if d.ApprovalID == "" {
		t.Fatalf("no approval: %+v", d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	sent := make(chan struct{}, 4)
	done := make(chan error, 1)
	go func() {
		done <- e.WatchApproval(ctx, d.ApprovalID, func(*engine.ApprovalInfo) error {
			sent <- struct{}{}
			return nil
		})
	}()
	<-sent // the current state arrives first
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("watch after the caller left: %v, want context.Canceled", err)
	}
}

// TestSessionScopesNarrowTheCredential: in a session bound to scopes, the policy sees only
// those of the credential's scopes.
func TestSessionScopesNarrowTheCredential(t *testing.T) {
	e := newEngine(t, newClock(), map[string]string{"p.rego": echoPolicy})
	ctx := context.Background()
	_, info, err := e.OpenSession(ctx, &engine.OpenRequest{Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"}, Scopes: []string{"repo:read"}})
	if err != nil {
		t.Fatal(err)
	}
	req := call(info.Session.ID, "read")
	req.Credential.Scopes = []string{"repo:read", "repo:write", "admin"}
	d := mustDecide(t, e, req)
	in := d.Obligations["input"].(map[string]any)
	scopes := in["credential"].(map[string]any)["scopes"].([]any)
	if len(scopes) != 1 || scopes[0] != "repo:read" {
		t.Fatalf("credential scopes seen by the policy: %v, want [repo:read]", scopes)
	}
	if s := in["session"].(map[string]any)["scopes"].([]any); len(s) != 1 || s[0] != "repo:read" {
		t.Fatalf("input.session.scopes = %v", s)
	}
}

// TestOpenRefusesAnOverlongScope: a session keeps its scopes for its whole life, so each is
// bounded like an id; nothing is stored when one is too long.
func TestOpenRefusesAnOverlongScope(t *testing.T) {
	e := newEngine(t, newClock(), map[string]string{"p.rego": echoPolicy})
	_, _, err := e.OpenSession(context.Background(), &engine.OpenRequest{Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"},
		Scopes: []string{"repo:read", strings.Repeat("x", 4096)}})
	var inv *engine.InvalidArgumentError
	if !errors.As(err, &inv) || inv.Field != "scopes[1]" {
		t.Fatalf("error %v, want an InvalidArgumentError on scopes[1]", err)
	}
	if n := e.Store().Count(); n != 0 {
		t.Errorf("the store holds %d sessions after a refused open", n)
	}
}

// onceRenewable allows one renewal per session and denies the next.
const onceRenewable = `package mcp

decision := {"result": "deny", "reasons": [{"code": "renewal_limit"}]} if {
	input.action == "session/renew"
	input.session.renewals >= 1
} else := {"result": "allow"}
`

// TestRenewalLimitHoldsUnderConcurrency: renewals read and move the renewal count in one
// serialised step, as calls do with budgets.
func TestRenewalLimitHoldsUnderConcurrency(t *testing.T) {
	e := newEngine(t, newClock(), map[string]string{"p.rego": onceRenewable})
	id := openSession(t, e)
	var allowed atomic.Int64
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			d, _, err := e.RenewSession(context.Background(), &engine.RenewRequest{SessionID: id, Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"}})
			if err != nil {
				t.Error(err)
				return
			}
			if d.Outcome == engine.Allow {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	info, _ := e.GetSession(id)
	if allowed.Load() != 1 || info.Session.Renewals != 1 {
		t.Fatalf("%d renewals allowed and %d recorded under a limit of 1", allowed.Load(), info.Session.Renewals)
	}
}

// TestKeptSessionFollowsItsLifecycle: while a session's lifecycle and usage are those the
// engine last read, a decision does not look the session up in the store (Store.Unchanged).
// A change made in the store without a decision in the session must still be seen by the
// next one: here a renewal a human approves (the call after the first expiry is allowed and
// sees the renewal), then a revocation made in the store directly (the next call is denied as
// revoked).
func TestKeptSessionFollowsItsLifecycle(t *testing.T) {
	clock := newClock()
	e := newEngine(t, clock, map[string]string{"p.rego": `package mcp

decision := {"result": "allow", "session": {"max_ttl_seconds": 3600}} if {
	input.action == "session/open"
} else := {"result": "require_approval", "approval": {"ttl_seconds": 600}, "session": {"max_ttl_seconds": 3600}} if {
	input.action == "session/renew"
} else := {"result": "allow", "reasons": [{"code": sprintf("renewals_%d", [input.session.renewals]), "message": "-"}]} if {
	input.session.calls.total >= 0
}
`})
	ctx := context.Background()
	_, info, err := e.OpenSession(ctx, &engine.OpenRequest{Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	id := info.Session.ID
	for range 3 { // the first call adds the session's usage cell; the others are decided on what is kept
		wantOutcome(t, mustDecide(t, e, call(id, "read")), engine.Allow, "renewals_0")
	}
	clock.advance(50 * time.Minute)
	d, _, err := e.RenewSession(ctx, &engine.RenewRequest{SessionID: id, Client: engine.Client{ID: "client-1"}, Subject: engine.Subject{ID: "alice"}, TTL: time.Hour})
	if err != nil || d.Outcome != engine.RequireApproval || d.ApprovalID == "" {
		t.Fatalf("renew: %+v %v", d, err)
	}
	wantOutcome(t, mustDecide(t, e, call(id, "read")), engine.Allow, "renewals_0")
	if _, err := e.ResolveApproval(d.ApprovalID, state.Resolution{Approve: true, By: "bob"}); err != nil {
		t.Fatal(err)
	}
	clock.advance(20 * time.Minute) // past the first expiry, inside the renewed one
	for range 2 {
		wantOutcome(t, mustDecide(t, e, call(id, "read")), engine.Allow, "renewals_1")
	}
	if _, err := e.Store().Revoke(state.RevokeFilter{SessionID: id}, "compromised", clock.Now()); err != nil {
		t.Fatal(err)
	}
	wantOutcome(t, mustDecide(t, e, call(id, "read")), engine.Deny, engine.ReasonSessionRevoked)
}
