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
	if err := validateList("scopes", req.Scopes); err != nil {
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

	start := time.Now()
	now := e.cfg.Clock()
	pq := e.policy.Load()
	d := Decision{ID: newID("dec_", now), At: now, PolicyRevision: pq.revision}
	slot, err := e.cfg.Recorder.Reserve(ctx)
	if err != nil {
		return logUnavailable(d), nil, nil
	}
	d, info, err := e.openSession(ctx, req, pq, d, serverIDs, serverTerms)
	if err != nil {
		slot.Commit(nil)
		return Decision{}, nil, err
	}
	rec := recordFor(&Request{Client: req.Client, Subject: req.Subject, Credential: req.Credential, Gateway: req.Gateway}, &d, ActionSessionOpen, start)
	if info != nil {
		rec.SessionID, rec.SessionStatus = info.Session.ID, string(info.Status)
	}
	slot.Commit(rec)
	return d, info, nil
}

func (e *Engine) openSession(ctx context.Context, req *OpenRequest, pq *prepared, d Decision, serverIDs []string, serverTerms []*ast.Term) (Decision, *SessionInfo, error) {
	now := d.At
	ttl := req.TTL
	if ttl == 0 {
		ttl = e.cfg.DefaultSessionTTL
	}
	ttl = min(ttl, e.cfg.MaxSessionTTL)
	dreq := &Request{Client: req.Client, Subject: req.Subject, Credential: req.Credential, Context: req.Context, ContextFrom: req.ContextFrom}
	base, err := newInputBase(&e.inputs, dreq, ast.NullTerm(), now, pq.reads)
	if err != nil {
		return Decision{}, nil, err
	}
	input := base.document(ActionSessionOpen,
		ast.Item(keyOperation, operationTerm(&e.inputs.names, &Operation{Method: ActionSessionOpen}, emptyTerm, pq.reads.sub(keyOperation))),
		ast.Item(keySessionRequest, ast.ObjectTerm(
			ast.Item(keyServers, ast.ArrayTerm(serverTerms...)),
			ast.Item(keyTTLSeconds, ast.IntNumberTerm(int(ttl/time.Second))),
		)),
	)
	d = e.decideWith(ctx, pq, input, d)
	if d.Outcome == Deny {
		return d, nil, nil
	}
	ttl = policyTTL(ttl, d.maxTTL)
	lifetimeCap := now.Add(e.cfg.MaxSessionLifetime)

	sess := &state.Session{
		ID:             newID("ses_", now),
		Status:         state.StatusActive,
		ClientID:       req.Client.ID,
		SubjectID:      req.Subject.ID,
		Servers:        serverIDs,
		Scopes:         req.Scopes,
		CreatedAt:      now,
		ExpiresAt:      minTime(now.Add(ttl), lifetimeCap),
		PolicyRevision: pq.revision,
	}
	var pending *state.Approval
	if d.Outcome == RequireApproval {
		pending = e.sessionApproval(state.KindSessionOpen, sess, &d, req.Gateway, ttl, lifetimeCap)
	}
	if err := e.store.Open(sess, pending); err != nil {
		return Decision{}, nil, fmt.Errorf("open session: %w", err)
	}
	info, err := e.GetSession(sess.ID)
	if err != nil {
		return Decision{}, nil, err
	}
	return d, info, nil
}

// RenewSession decides whether a session may live longer (action "session/renew"). On allow
// the session is extended at once; on require_approval it is extended when a human approves.
// The extension never passes the session's maximum lifetime. A session that is not active
// cannot be renewed (ErrSessionEnded).
func (e *Engine) RenewSession(ctx context.Context, req *RenewRequest) (Decision, *SessionInfo, error) {
	if req.SessionID == "" {
		return Decision{}, nil, invalid("session_id", "is required")
	}
	if err := validateParties(&req.Client, &req.Subject, &Credential{}); err != nil {
		return Decision{}, nil, err
	}
	if err := validateTTL(req.TTL); err != nil {
		return Decision{}, nil, err
	}
	start := time.Now()
	now := e.cfg.Clock()
	pq := e.policy.Load()
	d := Decision{ID: newID("dec_", now), At: now, PolicyRevision: pq.revision}
	slot, err := e.cfg.Recorder.Reserve(ctx)
	if err != nil {
		return logUnavailable(d), nil, nil
	}
	d, info, err := e.renewSession(ctx, req, pq, d)
	if err != nil {
		slot.Commit(nil)
		return Decision{}, nil, err
	}
	rec := recordFor(&Request{SessionID: req.SessionID, Client: req.Client, Subject: req.Subject, Gateway: req.Gateway}, &d, ActionSessionRenew, start)
	if info != nil {
		rec.SessionStatus = string(info.Status)
	}
	slot.Commit(rec)
	return d, info, nil
}

func (e *Engine) renewSession(ctx context.Context, req *RenewRequest, pq *prepared, d Decision) (Decision, *SessionInfo, error) {
	now := d.At
	// Renewals are counted like calls: serialised per session, so a renewal limit holds.
	mu := e.sessionLock(req.SessionID)
	mu.Lock()
	defer mu.Unlock()
	sess, err := e.store.Get(req.SessionID)
	if err != nil {
		return Decision{}, nil, err
	}
	if st := sess.StatusAt(now); st != state.StatusActive {
		return Decision{}, nil, fmt.Errorf("%w: it is %s", ErrSessionEnded, st)
	}
	if sess.ClientID != req.Client.ID || sess.SubjectID != req.Subject.ID {
		return d.deny(Reason{Code: ReasonSessionMismatch, Message: "the session belongs to another client or subject"}), nil, nil
	}
	ttl := req.TTL
	if ttl == 0 {
		ttl = e.cfg.DefaultSessionTTL
	}
	ttl = min(ttl, e.cfg.MaxSessionTTL)

	var sessTerm *ast.Term
	if reads := pq.reads.sub(keySession); reads != nil {
		sessTerm = e.inputs.term(sess, &sess.Usage, nil, reads, nil)
	}
	base, err := newInputBase(&e.inputs, &Request{Client: req.Client, Subject: req.Subject, Context: req.Context, ContextFrom: req.ContextFrom}, sessTerm, now, pq.reads)
	if err != nil {
		return Decision{}, nil, err
	}
	input := base.document(ActionSessionRenew,
		ast.Item(keyOperation, operationTerm(&e.inputs.names, &Operation{Method: ActionSessionRenew}, emptyTerm, pq.reads.sub(keyOperation))),
		ast.Item(keySessionRequest, ast.ObjectTerm(
			ast.Item(keyServers, stringsTerm(sess.Servers)),
			ast.Item(keyTTLSeconds, ast.IntNumberTerm(int(ttl/time.Second))),
		)),
	)
	d = e.decideWith(ctx, pq, input, d)
	ttl = policyTTL(ttl, d.maxTTL)
	lifetimeCap := sess.CreatedAt.Add(e.cfg.MaxSessionLifetime)

	switch d.Outcome {
	case Allow:
		if _, err := e.store.Renew(sess.ID, minTime(now.Add(ttl), lifetimeCap), now); err != nil {
			if errors.Is(err, state.ErrNotActive) {
				return Decision{}, nil, fmt.Errorf("%w: it ended while the renewal was decided", ErrSessionEnded)
			}
			return Decision{}, nil, err
		}
	case RequireApproval:
		a := e.sessionApproval(state.KindSessionRenew, sess, &d, req.Gateway, ttl, lifetimeCap)
		a, _, err = e.store.RequestApproval(a, now)
		if err != nil {
			return Decision{}, nil, err
		}
		d.ApprovalID, d.ApprovalExpiresAt = a.ID, a.ExpiresAt
	}
	info, err := e.GetSession(sess.ID)
	if err != nil {
		return Decision{}, nil, err
	}
	return d, info, nil
}

// sessionApproval builds the approval a session_open or session_renew decision waits on and
// records its handle in d. Identical pending renewals of one session share an approval.
func (e *Engine) sessionApproval(kind state.ApprovalKind, sess *state.Session, d *Decision, gateway string, ttl time.Duration, lifetimeCap time.Time) *state.Approval {
	method := ActionSessionOpen
	if kind == state.KindSessionRenew {
		method = ActionSessionRenew
	}
	a := &state.Approval{
		ID:             newID("apr_", d.At),
		Kind:           kind,
		RequestKey:     requestKey(sess.ID, string(kind)),
		SessionID:      sess.ID,
		ClientID:       sess.ClientID,
		SubjectID:      sess.SubjectID,
		Method:         method,
		Reasons:        stateReasons(d.Reasons),
		Scope:          d.Approval.Scope,
		GrantTTL:       d.Approval.TTL,
		SessionTTL:     ttl,
		SessionCap:     lifetimeCap,
		CreatedAt:      d.At,
		ExpiresAt:      d.At.Add(d.Approval.TTL),
		DecisionID:     d.ID,
		PolicyRevision: d.PolicyRevision,
		RequestedBy:    gateway,
	}
	d.ApprovalID, d.ApprovalExpiresAt = a.ID, a.ExpiresAt
	return a
}

// policyTTL clamps a lifetime to the policy's ceiling, when it set one.
func policyTTL(ttl, ceiling time.Duration) time.Duration {
	if ceiling > 0 {
		return min(ttl, ceiling)
	}
	return ttl
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// GetSession returns a session with its status now.
func (e *Engine) GetSession(id string) (*SessionInfo, error) {
	sess, err := e.store.Get(id)
	if err != nil {
		return nil, err
	}
	return e.info(sess, e.cfg.Clock()), nil
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
		out = append(out, e.info(s, now))
	}
	return out, more, nil
}

// CloseSession ends a session whose task is finished. Closing an ended session is an error.
func (e *Engine) CloseSession(ctx context.Context, id, reason, actor string) (*SessionInfo, error) {
	now := e.cfg.Clock()
	sess, err := e.store.Close(id, reason, now)
	if errors.Is(err, state.ErrNotActive) {
		return nil, fmt.Errorf("%w: it is %s", ErrSessionEnded, sess.StatusAt(now))
	}
	if err != nil {
		return nil, err
	}
	e.inputs.forget(id)
	e.recordAdmin(ctx, &Record{Action: ActionSessionClose, SessionID: id, SessionStatus: string(state.StatusClosed),
		Client: Client{ID: sess.ClientID}, SubjectID: sess.SubjectID, Actor: actor, Note: reason, Affected: []string{id}}, now)
	return e.info(sess, now), nil
}

// RevokeSessions revokes every active or pending session matching f and returns their ids.
// The next decision on any of them is denied.
func (e *Engine) RevokeSessions(ctx context.Context, f state.RevokeFilter, reason, actor string) ([]string, error) {
	if f.Empty() {
		return nil, invalid("selector", "name at least one of session_id, client_id, subject_id or server_id")
	}
	if reason == "" {
		return nil, invalid("reason", "is required")
	}
	now := e.cfg.Clock()
	ids, err := e.store.Revoke(f, reason, now)
	if err != nil {
		return nil, err
	}
	e.inputs.forget(ids...)
	e.recordAdmin(ctx, &Record{Action: ActionSessionsRevoke, SessionID: f.SessionID, Client: Client{ID: f.ClientID},
		SubjectID: f.SubjectID, Server: Server{ID: f.ServerID}, Actor: actor, Note: reason, Affected: ids}, now)
	return ids, nil
}

// recordAdmin records an action that takes power away (close, revoke). It is never refused
// for want of room in the decision log: the record then goes to the service log instead.
func (e *Engine) recordAdmin(ctx context.Context, rec *Record, now time.Time) {
	rec.DecisionID, rec.At, rec.Outcome = newID("dec_", now), now, Allow
	rec.PolicyRevision = e.Revision()
	slot, err := e.cfg.Recorder.Reserve(ctx)
	if err != nil {
		e.cfg.Logger.Error("decision log full: recording an admin action in the service log instead",
			slog.String("decision_id", rec.DecisionID), slog.String("action", rec.Action), slog.String("actor", rec.Actor),
			slog.Any("sessions", rec.Affected), slog.String("reason", rec.Note))
		return
	}
	slot.Commit(rec)
}

// RunReaper removes sessions that expired more than retention ago, every interval, until ctx
// ends.
func (e *Engine) RunReaper(ctx context.Context, interval, retention time.Duration) {
	e.store.RunReaper(ctx, interval, retention, e.cfg.Clock, func(err error) {
		e.cfg.Logger.Error("reaping sessions failed", slog.Any("error", err))
	})
}

// Counts returns how many sessions are in each status now and how many approvals are pending.
func (e *Engine) Counts() (map[state.Status]int, int) {
	return e.store.Counts(e.cfg.Clock())
}

func (e *Engine) info(s *state.Session, now time.Time) *SessionInfo {
	return &SessionInfo{Session: s, Usage: &s.Usage, Status: s.StatusAt(now)}
}
