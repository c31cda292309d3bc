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
	// SessionInput, when set, builds Session.Input for an active session when it records a
	// call and has none: once per session and lifecycle, and only for sessions that decide.
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
	sess = sess.opened()
	if pending != nil {
		sess.Status, sess.ExpiresAt = StatusPendingApproval, pending.ExpiresAt
		a := pending.copy()
		a.Status = ApprovalPending
		if err := txn.Insert(tableApprovals, a); err != nil {
			return fmt.Errorf("insert approval: %w", err)
		}
	}
	if err := txn.Insert(tableSessions, sess); err != nil {
		return fmt.Errorf("insert session: %w", err)
	}
	txn.Commit()
	return nil
}

// Get returns a session and its usage (the session's own Usage), or ErrNotFound.
func (s *Store) Get(id string) (*Session, *Usage, error) {
	sess, err := sessionTxn(s.db.Txn(false), id)
	if err != nil {
		return nil, nil, err
	}
	return sess, &sess.Usage, nil
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
	c := *sess // the lifecycle is unchanged, so a cached input stays valid
	c.Usage = sess.Usage.with(call, s.historyLimit)
	if c.Input == nil && s.sessionInput != nil {
		c.Input = s.sessionInput(&c)
	}
	if err := txn.Insert(tableSessions, &c); err != nil {
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

// updateSessionTxn stores a changed copy of a session's lifecycle; mutate sees the copy.
func (s *Store) updateSessionTxn(txn *memdb.Txn, id string, mutate func(*Session)) error {
	sess, err := sessionTxn(txn, id)
	if err != nil {
		return err
	}
	c := sess.revised()
	mutate(c)
	if err := txn.Insert(tableSessions, c); err != nil {
		return fmt.Errorf("update session: %w", err)
	}
	return nil
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
	closed := endTxn(sess, StatusClosed, reason, now)
	if err := txn.Insert(tableSessions, closed); err != nil {
		return nil, fmt.Errorf("close session: %w", err)
	}
	txn.Commit()
	return closed, nil
}

// Revoke revokes every active or pending session matching f, in one transaction, and returns
// their ids. Revoked sessions are kept (and denied) until the reaper removes them.
//
// Only the id index exists, so a selector other than the session id scans every session
// inside the write transaction: a session opened concurrently is either seen and revoked or
// opened after the revocation, never missed in between. Allowed decisions wait for the scan
// to record their calls (0.4-0.55 s with a million sessions on the 2-CPU benchmark machine
// under load); revoking by client, subject or server is an operator's action, not a
// per-request one.
func (s *Store) Revoke(f RevokeFilter, reason string, now time.Time) ([]string, error) {
	if f.Empty() {
		return nil, fmt.Errorf("revoke needs at least one selector")
	}
	txn := s.db.Txn(true)
	defer txn.Abort()

	revocable := func(sess *Session) bool {
		st := sess.StatusAt(now)
		return f.matches(sess) && (st == StatusActive || st == StatusPendingApproval)
	}
	var targets []*Session
	if f.SessionID != "" {
		sess, err := sessionTxn(txn, f.SessionID)
		if err == ErrNotFound {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if revocable(sess) {
			targets = append(targets, sess)
		}
	} else {
		// Collect first: memdb iterators must not see the table change under them.
		it, err := txn.Get(tableSessions, indexID)
		if err != nil {
			return nil, fmt.Errorf("scan sessions: %w", err)
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			if sess := obj.(*Session); revocable(sess) {
				targets = append(targets, sess)
			}
		}
	}

	ids := make([]string, 0, len(targets))
	for _, sess := range targets {
		if err := txn.Insert(tableSessions, endTxn(sess, StatusRevoked, reason, now)); err != nil {
			return nil, fmt.Errorf("revoke session %s: %w", sess.ID, err)
		}
		ids = append(ids, sess.ID)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	txn.Commit()
	return ids, nil
}

func (f RevokeFilter) matches(sess *Session) bool {
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
	return len(sess.Servers) == 0 && sess.Usage.ServerCalls(f.ServerID) > 0
}

// List returns up to f.Limit sessions matching f in id order, and whether more follow. A
// filter by client or subject scans the sessions after f.After in a snapshot (writers are not
// blocked): an admin path, paged.
func (s *Store) List(f ListFilter) ([]*Session, bool, error) {
	txn := s.db.Txn(false)
	it, err := txn.LowerBound(tableSessions, indexID, f.After)
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

// reapBatch is how many sessions one write transaction of the reaper deletes: few enough that
// decisions recording their calls never wait long behind it, and that the radix nodes the
// transaction changes stay well under go-immutable-radix's 8,192 tracked watch channels. Past
// that, its commit compares the whole tree before and after to find what to notify, a walk of
// every session per batch.
const reapBatch = 256

// Reap deletes sessions that expired at or before cutoff, and lapsed approvals, and returns
// how many sessions it removed. Sessions have no expiry index (it would cost every session
// another index entry): the reaper finds them by scanning a snapshot, which blocks no writer,
// then deletes them in small write transactions, checking each again there, since a renewal
// may have committed after the snapshot.
func (s *Store) Reap(cutoff time.Time) (int, error) {
	var expired []string
	it, err := s.db.Txn(false).Get(tableSessions, indexID)
	if err != nil {
		return 0, fmt.Errorf("scan sessions: %w", err)
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if sess := obj.(*Session); !sess.ExpiresAt.After(cutoff) {
			expired = append(expired, sess.ID)
		}
	}
	reaped := 0
	for len(expired) > 0 {
		batch := expired[:min(reapBatch, len(expired))]
		expired = expired[len(batch):]
		n, err := s.reapSessions(batch, cutoff)
		reaped += n
		if err != nil {
			return reaped, err
		}
	}
	return reaped, s.reapApprovals(cutoff)
}

// reapSessions deletes the sessions of ids that are still expired at cutoff.
func (s *Store) reapSessions(ids []string, cutoff time.Time) (int, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	n := 0
	for _, id := range ids {
		sess, err := sessionTxn(txn, id)
		if err == ErrNotFound {
			continue
		}
		if err != nil {
			return 0, err
		}
		if sess.ExpiresAt.After(cutoff) {
			continue
		}
		if err := txn.Delete(tableSessions, sess); err != nil {
			return 0, fmt.Errorf("reap session %s: %w", id, err)
		}
		n++
	}
	txn.Commit()
	return n, nil
}

// reapApprovals deletes approvals that lapsed at or before cutoff, walking their expiry index
// in time order: pending ones past their expiry, grants past their use.
func (s *Store) reapApprovals(cutoff time.Time) error {
	txn := s.db.Txn(true)
	defer txn.Abort()
	it, err := txn.Get(tableApprovals, indexExpiry)
	if err != nil {
		return fmt.Errorf("walk approval expiry index: %w", err)
	}
	var lapsed []*Approval
	for obj := it.Next(); obj != nil; obj = it.Next() {
		a := obj.(*Approval)
		if a.ExpiresAt.After(cutoff) {
			break
		}
		lapsed = append(lapsed, a)
	}
	for _, a := range lapsed {
		if err := txn.Delete(tableApprovals, a); err != nil {
			return fmt.Errorf("reap approval %s: %w", a.ID, err)
		}
	}
	txn.Commit()
	return nil
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

// endTxn returns a copy of sess ended with status.
func endTxn(sess *Session, status Status, reason string, now time.Time) *Session {
	ended := sess.revised()
	ended.Status = status
	ended.EndReason = reason
	ended.EndedAt = now
	return ended
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
