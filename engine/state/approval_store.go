package state

import (
	"fmt"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// RequestApproval stores a as a pending approval, unless an identical request (same
// RequestKey) already has a pending, unexpired approval: then that one is returned and reused
// is true. Concurrent identical requests therefore create exactly one approval.
func (s *Store) RequestApproval(a *Approval, now time.Time) (_ *Approval, reused bool, _ error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	it, err := txn.Get(tableApprovals, indexRequest, a.RequestKey)
	if err != nil {
		return nil, false, fmt.Errorf("look up approvals: %w", err)
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if existing := obj.(*Approval); existing.StatusAt(now) == ApprovalPending {
			return existing, true, nil
		}
	}
	a = a.copy()
	a.Status = ApprovalPending
	if err := txn.Insert(tableApprovals, a); err != nil {
		return nil, false, fmt.Errorf("insert approval: %w", err)
	}
	txn.Commit()
	return a, false, nil
}

// Verdict is what earlier approvals say about a request.
type Verdict struct {
	// Grant is an approved, usable approval for the request.
	Grant *Approval
	// Denial is a live denial of the request.
	Denial *Approval
	// Pending is an approval of the request that waits for a human.
	Pending *Approval
}

// MatchApprovals looks up a usable grant, a standing denial or a pending approval for the
// request key, in a snapshot.
func (s *Store) MatchApprovals(key string, now time.Time) (Verdict, error) {
	txn := s.db.Txn(false)
	it, err := txn.Get(tableApprovals, indexRequest, key)
	if err != nil {
		return Verdict{}, fmt.Errorf("look up approvals: %w", err)
	}
	var v Verdict
	for obj := it.Next(); obj != nil; obj = it.Next() {
		a := obj.(*Approval)
		switch a.StatusAt(now) {
		case ApprovalApproved:
			v.Grant = a
		case ApprovalDenied:
			v.Denial = a
		case ApprovalPending:
			v.Pending = a
		}
	}
	return v, nil
}

// UseGrant applies an approved grant to one call, atomically: a "once" grant is marked
// consumed by decisionID (ErrGrantUsed if another call got there first), and when the call is
// in a session it is recorded there in the same transaction.
func (s *Store) UseGrant(approvalID, decisionID, sessionID string, call Call) error {
	txn := s.db.Txn(true)
	defer txn.Abort()
	a, err := approvalTxn(txn, approvalID)
	if err != nil {
		return err
	}
	switch a.StatusAt(call.At) {
	case ApprovalApproved:
	case ApprovalConsumed:
		return ErrGrantUsed
	default:
		return ErrApprovalExpired
	}
	if a.Scope == ScopeOnce {
		used := a.copy()
		used.ConsumedAt, used.ConsumedBy = call.At, decisionID
		if err := txn.Insert(tableApprovals, used); err != nil {
			return fmt.Errorf("consume approval: %w", err)
		}
	}
	if sessionID != "" {
		if _, _, err := s.recordCallTxn(txn, sessionID, call); err != nil {
			return err
		}
	}
	txn.Commit()
	return nil
}

// Resolution is a human's answer to an approval.
type Resolution struct {
	Approve bool
	// By is the human who resolves, as the caller names them; Via the credential the call
	// came with (the admin token's name), recorded beside it.
	By   string
	Via  string
	Note string
	// Scope overrides the grant scope the policy asked for, when set.
	Scope string
}

// ResolveApproval records a human's answer to a pending approval and applies it in the same
// transaction: an approved session_open activates the session, a denied one revokes it; an
// approved session_renew extends the session.
func (s *Store) ResolveApproval(id string, r Resolution, now time.Time) (*Approval, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	a, err := approvalTxn(txn, id)
	if err != nil {
		return nil, err
	}
	switch a.StatusAt(now) {
	case ApprovalPending:
	case ApprovalExpired:
		return a, ErrApprovalExpired
	default:
		return a, ErrApprovalResolved
	}
	res := a.copy()
	res.ResolvedAt, res.ResolvedBy, res.Note = now, r.By, r.Note
	if r.Scope != "" {
		res.Scope = r.Scope
	}
	if r.Approve {
		res.Status = ApprovalApproved
		res.ExpiresAt = now.Add(a.GrantTTL)
	} else {
		res.Status = ApprovalDenied
		// A denial stands for as long as the grant would have: identical retries are denied.
		res.ExpiresAt = now.Add(a.GrantTTL)
	}

	switch a.Kind {
	case KindSessionOpen:
		// A session whose opening is denied has made no call (a pending session cannot), so it
		// has no usage cell to mark.
		_, err = s.updateSessionTxn(txn, a.SessionID, func(sess *Session) bool {
			if sess.Status != StatusPendingApproval {
				return false
			}
			if r.Approve {
				sess.Status = StatusActive
				sess.ExpiresAt = minTime(now.Add(a.SessionTTL), a.SessionCap)
			} else {
				end(sess, StatusRevoked, "opening denied by "+r.By+noteSuffix(r.Note), now)
			}
			return true
		})
	case KindSessionRenew:
		if r.Approve {
			_, err = s.updateSessionTxn(txn, a.SessionID, func(sess *Session) bool {
				if sess.StatusAt(now) != StatusActive {
					return false
				}
				renewTxn(sess, minTime(now.Add(a.SessionTTL), a.SessionCap))
				return true
			})
		}
	}
	if err != nil {
		return nil, err
	}
	if err := txn.Insert(tableApprovals, res); err != nil {
		return nil, fmt.Errorf("resolve approval: %w", err)
	}
	txn.Commit()
	return res, nil
}

// GetApproval returns one approval.
func (s *Store) GetApproval(id string) (*Approval, error) {
	return approvalTxn(s.db.Txn(false), id)
}

// WatchApproval returns an approval and a channel closed when it next changes.
func (s *Store) WatchApproval(id string) (*Approval, <-chan struct{}, error) {
	txn := s.db.Txn(false)
	ch, obj, err := txn.FirstWatch(tableApprovals, indexID, id)
	if err != nil {
		return nil, nil, fmt.Errorf("look up approval: %w", err)
	}
	if obj == nil {
		return nil, nil, ErrApprovalNotFound
	}
	return obj.(*Approval), ch, nil
}

// ListApprovals returns up to f.Limit approvals matching f in id order, and whether more follow.
func (s *Store) ListApprovals(f ApprovalFilter) ([]*Approval, bool, error) {
	txn := s.db.Txn(false)
	var (
		it  memdb.ResultIterator
		err error
	)
	if f.SessionID != "" {
		it, err = txn.Get(tableApprovals, indexSession, f.SessionID)
	} else {
		it, err = txn.LowerBound(tableApprovals, indexID, f.After)
	}
	if err != nil {
		return nil, false, fmt.Errorf("list approvals: %w", err)
	}
	var out []*Approval
	for obj := it.Next(); obj != nil; obj = it.Next() {
		a := obj.(*Approval)
		if !f.matches(a) {
			continue
		}
		if f.Limit > 0 && len(out) == f.Limit {
			return out, true, nil
		}
		out = append(out, a)
	}
	return out, false, nil
}

func approvalTxn(txn *memdb.Txn, id string) (*Approval, error) {
	obj, err := txn.First(tableApprovals, indexID, id)
	if err != nil {
		return nil, fmt.Errorf("look up approval: %w", err)
	}
	if obj == nil {
		return nil, ErrApprovalNotFound
	}
	return obj.(*Approval), nil
}

func minTime(a, b time.Time) time.Time {
	if !b.IsZero() && b.Before(a) {
		return b
	}
	return a
}

func noteSuffix(note string) string {
	if note == "" {
		return ""
	}
	return ": " + note
}
