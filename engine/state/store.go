package state

import (
	"context"
	"fmt"
	"slices"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// Store keeps sessions in go-memdb. Reads never block writers; writes are serialised by memdb.
type Store struct {
	db           *memdb.MemDB
	historyLimit int
	sessionInput func(*Session) any
}

// Config tunes a Store.
type Config struct {
	// HistoryLimit is how many recent calls a session keeps (default 32).
	HistoryLimit int
	// SessionInput, when set, builds Session.Input every time a session is stored.
	SessionInput func(*Session) any
}

// New returns an empty store.
func New(cfg Config) (*Store, error) {
	db, err := memdb.NewMemDB(schema())
	if err != nil {
		return nil, fmt.Errorf("create session store: %w", err)
	}
	if cfg.HistoryLimit <= 0 {
		cfg.HistoryLimit = 32
	}
	return &Store{db: db, historyLimit: cfg.HistoryLimit, sessionInput: cfg.SessionInput}, nil
}

// Open inserts a new session with empty usage. A session pending approval is stored together
// with its approval, in one transaction, and lapses with it.
func (s *Store) Open(sess *Session, pending *Approval) error {
	txn := s.db.Txn(true)
	defer txn.Abort()
	existing, err := txn.First(tableSessions, indexID, sess.ID)
	if err != nil {
		return fmt.Errorf("look up session: %w", err)
	}
	if existing != nil {
		return ErrExists
	}
	sess = sess.copy()
	if pending != nil {
		sess.Status, sess.ExpiresAt = StatusPendingApproval, pending.ExpiresAt
		a := pending.copy()
		a.Status = ApprovalPending
		if err := txn.Insert(tableApprovals, a); err != nil {
			return fmt.Errorf("insert approval: %w", err)
		}
	}
	if err := txn.Insert(tableSessions, s.withInput(sess)); err != nil {
		return fmt.Errorf("insert session: %w", err)
	}
	if err := txn.Insert(tableUsage, &Usage{SessionID: sess.ID}); err != nil {
		return fmt.Errorf("insert session usage: %w", err)
	}
	txn.Commit()
	return nil
}

// Get returns a session and its usage, or ErrNotFound.
func (s *Store) Get(id string) (*Session, *Usage, error) {
	txn := s.db.Txn(false)
	sess, err := sessionTxn(txn, id)
	if err != nil {
		return nil, nil, err
	}
	u, err := usageTxn(txn, id)
	if err != nil {
		return nil, nil, err
	}
	return sess, u, nil
}

// RecordCall records an allowed call in the session's usage. It fails with ErrNotActive (and
// returns the session) when the session stopped being active since the caller read it, so a
// revocation that commits first wins over a decision in flight.
func (s *Store) RecordCall(id string, call Call) (*Session, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	if err := s.recordCallTxn(txn, id, call); err != nil {
		sess, _ := sessionTxn(txn, id)
		return sess, err
	}
	txn.Commit()
	return nil, nil
}

func (s *Store) recordCallTxn(txn *memdb.Txn, id string, call Call) error {
	sess, err := sessionTxn(txn, id)
	if err != nil {
		return err
	}
	if sess.StatusAt(call.At) != StatusActive {
		return ErrNotActive
	}
	u, err := usageTxn(txn, id)
	if err != nil {
		return err
	}
	if err := txn.Insert(tableUsage, u.with(call, s.historyLimit)); err != nil {
		return fmt.Errorf("record call: %w", err)
	}
	return nil
}

// Renew extends an active session to expiresAt and counts the renewal.
func (s *Store) Renew(id string, expiresAt, now time.Time) (*Session, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	var out *Session
	err := s.updateSessionTxn(txn, id, func(sess *Session) {
		if sess.StatusAt(now) == StatusActive {
			renewTxn(sess, expiresAt)
			out = sess
		}
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		sess, _ := sessionTxn(txn, id)
		return sess, ErrNotActive
	}
	txn.Commit()
	return out, nil
}

// renewTxn extends sess, which is a fresh copy, never moving its expiry earlier.
func renewTxn(sess *Session, expiresAt time.Time) {
	if expiresAt.After(sess.ExpiresAt) {
		sess.ExpiresAt = expiresAt
	}
	sess.Renewals++
}

// updateSessionTxn stores a changed copy of a session; mutate sees the copy.
func (s *Store) updateSessionTxn(txn *memdb.Txn, id string, mutate func(*Session)) error {
	sess, err := sessionTxn(txn, id)
	if err != nil {
		return err
	}
	c := sess.copy()
	mutate(c)
	if err := txn.Insert(tableSessions, s.withInput(c)); err != nil {
		return fmt.Errorf("update session: %w", err)
	}
	return nil
}

// withInput refreshes sess.Input for a session about to be stored.
func (s *Store) withInput(sess *Session) *Session {
	sess.Input = nil
	if s.sessionInput != nil && sess.Status == StatusActive {
		sess.Input = s.sessionInput(sess)
	}
	return sess
}

// Close ends an active or pending session because its task is finished.
func (s *Store) Close(id, reason string, now time.Time) (*Session, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	sess, err := sessionTxn(txn, id)
	if err != nil {
		return nil, err
	}
	if st := sess.StatusAt(now); st != StatusActive && st != StatusPendingApproval {
		return sess, ErrNotActive
	}
	closed := s.withInput(endTxn(sess, StatusClosed, reason, now))
	if err := txn.Insert(tableSessions, closed); err != nil {
		return nil, fmt.Errorf("close session: %w", err)
	}
	txn.Commit()
	return closed, nil
}

// Revoke revokes every active or pending session matching f, in one transaction, and returns
// their ids. Revoked sessions are kept (and denied) until the reaper removes them.
func (s *Store) Revoke(f RevokeFilter, reason string, now time.Time) ([]string, error) {
	if f.Empty() {
		return nil, fmt.Errorf("revoke needs at least one selector")
	}
	txn := s.db.Txn(true)
	defer txn.Abort()

	var candidates []*Session
	switch {
	case f.SessionID != "":
		sess, err := sessionTxn(txn, f.SessionID)
		if err == ErrNotFound {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		candidates = []*Session{sess}
	case f.ClientID != "":
		candidates = collect(txn, indexClient, f.ClientID)
	case f.SubjectID != "":
		candidates = collect(txn, indexSubject, f.SubjectID)
	default:
		candidates = collect(txn, indexID)
	}

	var ids []string
	for _, sess := range candidates {
		if !f.matches(txn, sess) {
			continue
		}
		if st := sess.StatusAt(now); st != StatusActive && st != StatusPendingApproval {
			continue
		}
		if err := txn.Insert(tableSessions, s.withInput(endTxn(sess, StatusRevoked, reason, now))); err != nil {
			return nil, fmt.Errorf("revoke session %s: %w", sess.ID, err)
		}
		ids = append(ids, sess.ID)
	}
	txn.Commit()
	return ids, nil
}

func (f RevokeFilter) matches(txn *memdb.Txn, sess *Session) bool {
	if f.SessionID != "" && sess.ID != f.SessionID ||
		f.ClientID != "" && sess.ClientID != f.ClientID ||
		f.SubjectID != "" && sess.SubjectID != f.SubjectID {
		return false
	}
	if f.ServerID == "" {
		return true
	}
	if slices.Contains(sess.Servers, f.ServerID) {
		return true
	}
	if len(sess.Servers) > 0 {
		return false
	}
	u, err := usageTxn(txn, sess.ID)
	return err == nil && u.ByServer[f.ServerID] > 0
}

// List returns up to f.Limit sessions matching f in id order, and whether more follow.
func (s *Store) List(f ListFilter) ([]*Session, bool, error) {
	txn := s.db.Txn(false)
	var (
		it  memdb.ResultIterator
		err error
	)
	switch {
	case f.ClientID != "":
		it, err = txn.Get(tableSessions, indexClient, f.ClientID)
	case f.SubjectID != "":
		it, err = txn.Get(tableSessions, indexSubject, f.SubjectID)
	default:
		it, err = txn.LowerBound(tableSessions, indexID, f.After)
	}
	if err != nil {
		return nil, false, fmt.Errorf("list sessions: %w", err)
	}
	var out []*Session
	for obj := it.Next(); obj != nil; obj = it.Next() {
		sess := obj.(*Session)
		if sess.ID <= f.After ||
			f.ClientID != "" && sess.ClientID != f.ClientID ||
			f.SubjectID != "" && sess.SubjectID != f.SubjectID ||
			f.Status != "" && sess.StatusAt(f.Now) != f.Status {
			continue
		}
		if f.Limit > 0 && len(out) == f.Limit {
			return out, true, nil
		}
		out = append(out, sess)
	}
	return out, false, nil
}

// Reap deletes sessions that expired at or before cutoff, walking the expiry index in time
// order, and returns how many it removed.
func (s *Store) Reap(cutoff time.Time) (int, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	it, err := txn.Get(tableSessions, indexExpiry)
	if err != nil {
		return 0, fmt.Errorf("walk expiry index: %w", err)
	}
	var expired []*Session
	for obj := it.Next(); obj != nil; obj = it.Next() {
		sess := obj.(*Session)
		if sess.ExpiresAt.After(cutoff) {
			break
		}
		expired = append(expired, sess)
	}
	for _, sess := range expired {
		if err := txn.Delete(tableSessions, sess); err != nil {
			return 0, fmt.Errorf("reap session %s: %w", sess.ID, err)
		}
		if _, err := txn.DeleteAll(tableUsage, indexID, sess.ID); err != nil {
			return 0, fmt.Errorf("reap session usage %s: %w", sess.ID, err)
		}
	}
	// Approvals lapse the same way: pending ones past their expiry, grants past their use.
	ait, err := txn.Get(tableApprovals, indexExpiry)
	if err != nil {
		return 0, fmt.Errorf("walk approval expiry index: %w", err)
	}
	var lapsed []*Approval
	for obj := ait.Next(); obj != nil; obj = ait.Next() {
		a := obj.(*Approval)
		if a.ExpiresAt.After(cutoff) {
			break
		}
		lapsed = append(lapsed, a)
	}
	for _, a := range lapsed {
		if err := txn.Delete(tableApprovals, a); err != nil {
			return 0, fmt.Errorf("reap approval %s: %w", a.ID, err)
		}
	}
	txn.Commit()
	return len(expired), nil
}

// RunReaper reaps sessions every interval until ctx ends. Sessions are kept for retention after
// they expire, so their final state can still be read.
func (s *Store) RunReaper(ctx context.Context, interval, retention time.Duration, now func() time.Time, onErr func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := s.Reap(now().Add(-retention)); err != nil && onErr != nil {
				onErr(err)
			}
		}
	}
}

func sessionTxn(txn *memdb.Txn, id string) (*Session, error) {
	obj, err := txn.First(tableSessions, indexID, id)
	if err != nil {
		return nil, fmt.Errorf("look up session: %w", err)
	}
	if obj == nil {
		return nil, ErrNotFound
	}
	return obj.(*Session), nil
}

func usageTxn(txn *memdb.Txn, id string) (*Usage, error) {
	obj, err := txn.First(tableUsage, indexID, id)
	if err != nil {
		return nil, fmt.Errorf("look up session usage: %w", err)
	}
	if obj == nil {
		return nil, ErrNotFound
	}
	return obj.(*Usage), nil
}

// endTxn returns a copy of sess ended with status.
func endTxn(sess *Session, status Status, reason string, now time.Time) *Session {
	ended := sess.copy()
	ended.Status = status
	ended.EndReason = reason
	ended.EndedAt = now
	return ended
}

func collect(txn *memdb.Txn, index string, args ...any) []*Session {
	it, err := txn.Get(tableSessions, index, args...)
	if err != nil {
		return nil
	}
	var out []*Session
	for obj := it.Next(); obj != nil; obj = it.Next() {
		out = append(out, obj.(*Session))
	}
	return out
}

// Counts returns how many sessions are in each status at now, and how many approvals wait
// for a human. It walks the tables (a snapshot; writers are not blocked), so call it at
// scrape pace, not per decision.
func (s *Store) Counts(now time.Time) (sessions map[Status]int, pendingApprovals int) {
	txn := s.db.Txn(false)
	sessions = map[Status]int{}
	if it, err := txn.Get(tableSessions, indexID); err == nil {
		for obj := it.Next(); obj != nil; obj = it.Next() {
			sessions[obj.(*Session).StatusAt(now)]++
		}
	}
	if it, err := txn.Get(tableApprovals, indexID); err == nil {
		for obj := it.Next(); obj != nil; obj = it.Next() {
			if obj.(*Approval).StatusAt(now) == ApprovalPending {
				pendingApprovals++
			}
		}
	}
	return sessions, pendingApprovals
}

// Count returns the number of sessions in the store, whatever their status.
func (s *Store) Count() int {
	n := 0
	counts, _ := s.Counts(time.Time{})
	for _, c := range counts {
		n += c
	}
	return n
}
