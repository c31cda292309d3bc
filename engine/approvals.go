package engine

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/arbiter-mcp/arbiter/engine/state"
)

// Reason codes of the approval rules.
const (
	ReasonApprovalDenied  = "approval_denied"
	ReasonApprovalGranted = "approval_granted"
)

// Errors of approval operations.
var (
	ErrApprovalNotFound = state.ErrApprovalNotFound
	ErrApprovalResolved = state.ErrApprovalResolved
	ErrApprovalExpired  = state.ErrApprovalExpired
	// ErrDecisionLogUnavailable means the decision log could not take the record of an
	// action that grants access, so the action was not taken.
	ErrDecisionLogUnavailable = errors.New("decision log unavailable")
)

// ApprovalInfo is an approval with its status at the time it was read.
type ApprovalInfo struct {
	Approval *state.Approval
	Status   state.ApprovalStatus
}

// gate handles a require_approval answer for an operation. Deny wins elsewhere; here only a
// require_approval can turn into allow, and only through a grant bound to this exact request:
// a standing denial denies (approval_denied), a usable grant allows (a "once" grant is
// consumed by exactly one call, recorded in the session in the same transaction), and
// otherwise the request waits on a pending approval, reused by identical requests: found in
// the snapshot the grants and denials were looked up in (a gateway asking again while a human
// decides costs no write), else stored, or found, in a write transaction.
func (e *Engine) gate(req *Request, d Decision) (Decision, error) {
	args, digest, err := ArgumentsDigest(req.Operation.Arguments)
	if err != nil {
		return Decision{}, err
	}
	key := requestKey(req.SessionID, req.Client.ID, req.Subject.ID, req.Server.ID, req.Operation.Method, req.Operation.Tool, digest)
	d.argumentsDigest = digest

	var pending *state.Approval
	for attempt := 0; attempt < 3; attempt++ {
		v, err := e.store.MatchApprovals(key, d.At)
		if err != nil {
			return Decision{}, err
		}
		if a := v.Denial; a != nil {
			d = d.deny(Reason{Code: ReasonApprovalDenied, Message: "a human denied this request (" + a.ResolvedBy + noteSuffix(a.Note) + ")"})
			d.ApprovalID, d.ApprovalExpiresAt = a.ID, a.ExpiresAt
			return d, nil
		}
		if a := v.Grant; a != nil {
			err := e.store.UseGrant(a.ID, d.ID, req.SessionID, state.Call{
				Server: req.Server.ID, Tool: req.Operation.Tool, Method: req.Operation.Method, At: d.At, Labels: d.Labels,
			})
			switch {
			case err == nil:
				d.Outcome, d.Approval = Allow, nil
				d.Reasons = []Reason{{Code: ReasonApprovalGranted, Message: "approved by " + a.ResolvedBy + noteSuffix(a.Note)}}
				d.ApprovalID, d.ApprovalExpiresAt = a.ID, a.ExpiresAt
				return d, nil
			case errors.Is(err, state.ErrNotActive), errors.Is(err, state.ErrNotFound):
				sess, _ := e.store.Get(req.SessionID)
				reason, _ := sessionDenial(sess, req, d.At)
				return d.deny(reason), nil
			case errors.Is(err, state.ErrGrantUsed), errors.Is(err, state.ErrApprovalExpired):
				continue // another call used it first: look again
			default:
				return Decision{}, err
			}
		}
		pending = v.Pending
		break
	}
	if pending != nil {
		d.ApprovalID, d.ApprovalExpiresAt = pending.ID, pending.ExpiresAt
		return d, nil
	}

	a, _, err := e.store.RequestApproval(&state.Approval{
		ID:              newID("apr_", d.At),
		Kind:            state.KindOperation,
		RequestKey:      key,
		SessionID:       req.SessionID,
		ClientID:        req.Client.ID,
		SubjectID:       req.Subject.ID,
		ServerID:        req.Server.ID,
		Method:          req.Operation.Method,
		Tool:            req.Operation.Tool,
		ArgumentsDigest: digest,
		Arguments:       args,
		Reasons:         stateReasons(d.Reasons),
		Scope:           d.Approval.Scope,
		GrantTTL:        d.Approval.TTL,
		CreatedAt:       d.At,
		ExpiresAt:       d.At.Add(d.Approval.TTL),
		DecisionID:      d.ID,
		PolicyRevision:  d.PolicyRevision,
		RequestedBy:     req.Gateway,
	}, d.At)
	if err != nil {
		return Decision{}, err
	}
	d.ApprovalID, d.ApprovalExpiresAt = a.ID, a.ExpiresAt
	return d, nil
}

// GetApproval returns one approval.
func (e *Engine) GetApproval(id string) (*ApprovalInfo, error) {
	a, err := e.store.GetApproval(id)
	if err != nil {
		return nil, err
	}
	return &ApprovalInfo{Approval: a, Status: a.StatusAt(e.cfg.Clock())}, nil
}

// ListApprovals lists approvals matching f (Now is filled in) and whether more follow.
func (e *Engine) ListApprovals(f state.ApprovalFilter) ([]*ApprovalInfo, bool, error) {
	f.Now = e.cfg.Clock()
	list, more, err := e.store.ListApprovals(f)
	if err != nil {
		return nil, false, err
	}
	out := make([]*ApprovalInfo, len(list))
	for i, a := range list {
		out[i] = &ApprovalInfo{Approval: a, Status: a.StatusAt(f.Now)}
	}
	return out, more, nil
}

// ResolveApproval records a human's answer. Only a pending, unexpired approval can be
// resolved; the answer to a session approval is applied to the session in the same step.
func (e *Engine) ResolveApproval(id string, r state.Resolution) (*ApprovalInfo, error) {
	if id == "" {
		return nil, invalid("approval_id", "is required")
	}
	if r.By == "" {
		return nil, invalid("approver", "is required: say who resolves the approval")
	}
	if r.Scope != "" && r.Scope != state.ScopeOnce && r.Scope != state.ScopeSession {
		return nil, invalid("scope", "must be once or session")
	}
	now := e.cfg.Clock()
	// Granting power is refused when it cannot be recorded.
	slot, err := e.cfg.Recorder.Reserve(context.Background())
	if err != nil {
		return nil, ErrDecisionLogUnavailable
	}
	a, err := e.store.ResolveApproval(id, r, now)
	if err != nil {
		slot.Commit(nil)
		return nil, err
	}
	outcome := Deny
	if r.Approve {
		outcome = Allow
	}
	slot.Commit(&Record{
		DecisionID: newID("dec_", now), At: now, Action: ActionApprovalResolve, Outcome: outcome,
		Client: Client{ID: a.ClientID}, SubjectID: a.SubjectID, Server: Server{ID: a.ServerID}, SessionID: a.SessionID,
		Tool: a.Tool, ApprovalID: a.ID, PolicyRevision: e.Revision(), Actor: r.By, ActorVia: r.Via, Note: r.Note,
		ApprovalAge: now.Sub(a.CreatedAt), Gateway: a.RequestedBy,
	})
	return &ApprovalInfo{Approval: a, Status: a.StatusAt(now)}, nil
}

// WatchApproval calls send with the approval now and again every time it changes, until it
// is no longer pending (resolved or expired), ctx ends or send fails. The wait is on the
// store's watch channel, not polling; expiry wakes it through a timer.
func (e *Engine) WatchApproval(ctx context.Context, id string, send func(*ApprovalInfo) error) error {
	var last *state.Approval
	var lastStatus state.ApprovalStatus
	for {
		a, changed, err := e.store.WatchApproval(id)
		if err != nil {
			return err
		}
		now := e.cfg.Clock()
		st := a.StatusAt(now)
		if a != last || st != lastStatus {
			if err := send(&ApprovalInfo{Approval: a, Status: st}); err != nil {
				return err
			}
			last, lastStatus = a, st
		}
		if st != state.ApprovalPending {
			return nil
		}
		expiry := time.NewTimer(a.ExpiresAt.Sub(now))
		select {
		case <-changed:
		case <-expiry.C:
		case <-ctx.Done():
			expiry.Stop()
			return ctx.Err()
		}
		expiry.Stop()
	}
}

// requestKey identifies one exact request. Each part is length-prefixed, so no two different
// requests share a key.
func requestKey(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:%s", len(p), p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func stateReasons(rs []Reason) []state.Reason {
	out := make([]state.Reason, len(rs))
	for i, r := range rs {
		out[i] = state.Reason{Code: r.Code, Message: r.Message}
	}
	return out
}

func noteSuffix(note string) string {
	if note == "" {
		return ""
	}
	return ": " + note
}
