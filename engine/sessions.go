package engine

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/arbiter-mcp/arbiter/engine/state"
)

// Errors of session operations.
var (
	// ErrSessionNotFound means no session has the id.
	ErrSessionNotFound = state.ErrNotFound
	// ErrSessionEnded means the session is already closed, revoked or expired.
	ErrSessionEnded = errors.New("session already ended")
)

// OpenSession decides whether a session may open (action "session/open") and, unless denied,
// creates it: active on allow, pending_approval when the policy requires approval.
func (e *Engine) OpenSession(ctx context.Context, req *OpenRequest) (Decision, *SessionInfo, error) {
	if err := validateParties(&req.Client, &req.Subject, &req.Credential); err != nil {
		return Decision{}, nil, err
	}
	if err := validateTTL(req.TTL); err != nil {
		return Decision{}, nil, err
	}
	if len(req.Servers) > maxListEntries {
		return Decision{}, nil, invalid("servers", "has %d entries, more than %d", len(req.Servers), maxListEntries)
	}
	serverIDs := make([]string, len(req.Servers))
	serverTerms := make([]*ast.Term, len(req.Servers))
	for i := range req.Servers {
		if err := validateServer(fmt.Sprintf("servers[%d]", i), &req.Servers[i]); err != nil {
			return Decision{}, nil, err
		}
		serverIDs[i] = req.Servers[i].ID
		serverTerms[i] = ast.StringTerm(req.Servers[i].ID)
	}

	now := e.cfg.Clock()
	pq := e.policy.Load()
	d := Decision{ID: newID("dec_", now), At: now, PolicyRevision: pq.revision}
	ttl := req.TTL
	if ttl == 0 {
		ttl = e.cfg.DefaultSessionTTL
	}
	ttl = min(ttl, e.cfg.MaxSessionTTL)

	dreq := &Request{Client: req.Client, Subject: req.Subject, Credential: req.Credential, Context: req.Context}
	base, err := newInputBase(dreq, ast.NullTerm(), now)
	if err != nil {
		return Decision{}, nil, err
	}
	input := base.document(ActionSessionOpen,
		ast.Item(keyOperation, operationTerm(&Operation{Method: ActionSessionOpen}, ast.NewTerm(emptyObject))),
		ast.Item(keySessionRequest, ast.ObjectTerm(
			ast.Item(keyServers, ast.ArrayTerm(serverTerms...)),
			ast.Item(keyTTLSeconds, ast.IntNumberTerm(int(ttl/time.Second))),
		)),
	)
	d = e.decideWith(ctx, pq, input, d)
	if d.Outcome == Deny {
		return d, nil, nil
	}

	sess := &state.Session{
		ID:             newID("ses_", now),
		Status:         state.StatusActive,
		ClientID:       req.Client.ID,
		SubjectID:      req.Subject.ID,
		Servers:        serverIDs,
		CreatedAt:      now,
		ExpiresAt:      now.Add(ttl),
		PolicyRevision: pq.revision,
	}
	if d.Outcome == RequireApproval {
		sess.Status = state.StatusPendingApproval
	}
	sess.Input = sessionItems(sess)
	if err := e.store.Open(sess); err != nil {
		return Decision{}, nil, fmt.Errorf("open session: %w", err)
	}
	return d, e.info(sess, &state.Usage{SessionID: sess.ID}, now), nil
}

// GetSession returns a session with its status now.
func (e *Engine) GetSession(id string) (*SessionInfo, error) {
	sess, u, err := e.store.Get(id)
	if err != nil {
		return nil, err
	}
	return e.info(sess, u, e.cfg.Clock()), nil
}

// ListSessions lists sessions matching f (Now is filled in) and whether more follow.
func (e *Engine) ListSessions(f state.ListFilter) ([]*SessionInfo, bool, error) {
	now := e.cfg.Clock()
	f.Now = now
	sessions, more, err := e.store.List(f)
	if err != nil {
		return nil, false, err
	}
	out := make([]*SessionInfo, 0, len(sessions))
	for _, s := range sessions {
		_, u, err := e.store.Get(s.ID)
		if errors.Is(err, state.ErrNotFound) {
			continue // reaped between the two reads
		}
		if err != nil {
			return nil, false, err
		}
		out = append(out, e.info(s, u, now))
	}
	return out, more, nil
}

// CloseSession ends a session whose task is finished. Closing an ended session is an error.
func (e *Engine) CloseSession(id, reason string) (*SessionInfo, error) {
	now := e.cfg.Clock()
	sess, err := e.store.Close(id, reason, now)
	if errors.Is(err, state.ErrNotActive) {
		return nil, fmt.Errorf("%w: it is %s", ErrSessionEnded, sess.StatusAt(now))
	}
	if err != nil {
		return nil, err
	}
	_, u, err := e.store.Get(id)
	if err != nil {
		return nil, err
	}
	return e.info(sess, u, now), nil
}

// RevokeSessions revokes every active or pending session matching f and returns their ids.
// The next decision on any of them is denied.
func (e *Engine) RevokeSessions(f state.RevokeFilter, reason string) ([]string, error) {
	if f.Empty() {
		return nil, invalid("selector", "name at least one of session_id, client_id, subject_id or server_id")
	}
	if reason == "" {
		return nil, invalid("reason", "is required")
	}
	return e.store.Revoke(f, reason, e.cfg.Clock())
}

// RunReaper removes sessions that expired more than retention ago, every interval, until ctx
// ends.
func (e *Engine) RunReaper(ctx context.Context, interval, retention time.Duration) {
	e.store.RunReaper(ctx, interval, retention, e.cfg.Clock, func(err error) {
		e.cfg.Logger.Error("reaping sessions failed", slog.Any("error", err))
	})
}

func (e *Engine) info(s *state.Session, u *state.Usage, now time.Time) *SessionInfo {
	return &SessionInfo{Session: s, Usage: u, Status: s.StatusAt(now)}
}
