package state

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"strings"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// Store keeps sessions in go-memdb. Reads never block writers; writes are serialised by memdb,
// except the most frequent one: recording an allowed call in a session that has made one
// before, which takes only the session's usage cell (see usageCell).
type Store struct {
	db           *memdb.MemDB
	seed         maphash.Seed
	historyLimit int
}

// Config tunes a Store.
type Config struct {
	// HistoryLimit is how many recent calls a session keeps (default 32).
	HistoryLimit int
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
	return &Store{db: db, seed: maphash.MakeSeed(), historyLimit: cfg.HistoryLimit}, nil
}

// located is where a session is, or would be, in the store.
type located struct {
	key    uint16
	bucket *bucket // nil if the bucket does not exist yet
	i      int
	found  bool
}

// locate finds the bucket and position of session id.
func (s *Store) locate(txn *memdb.Txn, id string) (located, error) {
	key := s.bucketOf(id)
	obj, err := txn.First(tableSessions, indexID, key)
	if err != nil {
		return located{}, fmt.Errorf("look up session: %w", err)
	}
	l := located{key: key}
	if obj != nil {
		l.bucket = obj.(*bucket)
		l.i, l.found = l.bucket.find(id)
	}
	return l, nil
}

// bucketOf returns the number of the bucket that holds session id.
func (s *Store) bucketOf(id string) uint16 {
	return uint16(maphash.String(s.seed, id) & (1<<bucketBits - 1))
}

// sessionTxn returns session id as stored, or ErrNotFound.
func (s *Store) sessionTxn(txn *memdb.Txn, id string) (*Session, error) {
	return s.sessionTxnWith(txn, id, true)
}

// sessionTxnWith is sessionTxn, leaving the usage's history out unless history is true.
func (s *Store) sessionTxnWith(txn *memdb.Txn, id string, history bool) (*Session, error) {
	l, err := s.locate(txn, id)
	if err != nil {
		return nil, err
	}
	if !l.found {
		return nil, ErrNotFound
	}
	return l.bucket.session(l.i, history)
}

// write stores b, a changed bucket, or deletes it when it holds no session.
func write(txn *memdb.Txn, b *bucket) error {
	if len(b.recs) == 0 {
		if err := txn.Delete(tableSessions, b); err != nil && err != memdb.ErrNotFound {
			return fmt.Errorf("delete session bucket: %w", err)
		}
		return nil
	}
	if err := txn.Insert(tableSessions, b); err != nil {
		return fmt.Errorf("write session bucket: %w", err)
	}
	return nil
}

// Open inserts a new session with empty usage. A session pending approval is stored together
// with its approval, in one transaction, and lapses with it.
func (s *Store) Open(sess *Session, pending *Approval) error {
	if sess.ID == "" {
		return fmt.Errorf("session has no id")
	}
	txn := s.db.Txn(true)
	defer txn.Abort()
	l, err := s.locate(txn, sess.ID)
	if err != nil {
		return err
	}
	if l.found {
		return ErrExists
	}
	c := *sess
	if pending != nil {
		c.Status, c.ExpiresAt = StatusPendingApproval, pending.ExpiresAt
		a := pending.copy()
		a.Status = ApprovalPending
		if err := txn.Insert(tableApprovals, a); err != nil {
			return fmt.Errorf("insert approval: %w", err)
		}
	}
	b := l.bucket.clone(l.key)
	if err := b.put(l.i, &c, true); err != nil {
		return fmt.Errorf("insert session: %w", err)
	}
	if err := write(txn, b); err != nil {
		return err
	}
	txn.Commit()
	return nil
}

// Get returns a session with its usage, or ErrNotFound.
func (s *Store) Get(id string) (*Session, error) {
	return s.sessionTxn(s.db.Txn(false), id)
}

// GetWithoutHistory is Get for a caller that does not need the call history: Usage.History
// is nil, which saves decoding it (the history is still read through, so unreadable usage is
// an error all the same).
func (s *Store) GetWithoutHistory(id string) (*Session, error) {
	return s.sessionTxnWith(s.db.Txn(false), id, false)
}

// GetLifecycle is Get without the usage (Usage empty): for a caller that reads none of it.
// The usage is not looked at, so an unreadable one is not an error here.
func (s *Store) GetLifecycle(id string) (*Session, error) {
	l, err := s.locate(s.db.Txn(false), id)
	if err != nil {
		return nil, err
	}
	if !l.found {
		return nil, ErrNotFound
	}
	return l.bucket.lifecycle(l.i), nil
}

// GetUnlessUsage is GetWithoutHistory, except that it leaves the usage undecoded (Usage empty,
// decoded false) when its version is known, the one the caller read or recorded last and kept
// the counts and labels of. It returns the version read.
func (s *Store) GetUnlessUsage(id string, known UsageVersion) (sess *Session, v UsageVersion, decoded bool, err error) {
	l, err := s.locate(s.db.Txn(false), id)
	if err != nil {
		return nil, UsageVersion{}, false, err
	}
	if !l.found {
		return nil, UsageVersion{}, false, ErrNotFound
	}
	sess = l.bucket.lifecycle(l.i)
	enc := sess.cell.load()
	if v = versionOf(enc); v == known {
		return sess, v, false, nil
	}
	if sess.Usage, err = decodeUsage(enc, false); err != nil {
		return nil, UsageVersion{}, false, fmt.Errorf("session %s: %w", sess.ID, err)
	}
	return sess, v, true, nil
}

// RecordCall records an allowed call in the session's usage. It fails with ErrNotActive (and
// returns the session) when the session stopped being active since the caller read it, so a
// revocation that commits first wins over a decision in flight.
func (s *Store) RecordCall(id string, call Call) (*Session, error) {
	_, _, sess, err := s.RecordCallUsage(id, call)
	return sess, err
}

// RecordCallUsage is RecordCall, returning also the usage it stored: its version and its
// counts and labels (without the history), which a caller can keep to read the session next
// time without decoding its usage (GetUnlessUsage).
//
// A session that has made a call has a usage cell, and the call is stored in it without a
// write transaction: the session is looked up in a snapshot, and the cell refuses the call if
// a close, revocation or reaping of the session has marked it since (see usageCell). The first
// call of a session adds its cell in a write transaction.
func (s *Store) RecordCallUsage(id string, call Call) (UsageVersion, Usage, *Session, error) {
	txn := s.db.Txn(false)
	l, err := s.locate(txn, id)
	if err != nil {
		return UsageVersion{}, Usage{}, nil, err
	}
	if !l.found {
		return UsageVersion{}, Usage{}, nil, ErrNotFound
	}
	if l.bucket.statusAt(l.i, call.At) != StatusActive {
		sess, _ := l.bucket.session(l.i, true)
		return UsageVersion{}, Usage{}, sess, ErrNotActive
	}
	c := l.bucket.cellOf(l.i)
	if c == nil {
		return s.recordFirstCall(id, call)
	}
	return s.recordInCell(id, c, call)
}

// Unchanged reports whether sess, a session read from the store (by Get, GetWithoutHistory,
// GetLifecycle or GetUnlessUsage), still has the lifecycle it was read with, and returns its
// usage's version now: a reader that kept what it read can use it again without looking the
// session up. It is false for a session that had made no call when read (it has no usage
// cell), one whose lifecycle was written since (renewed, closed, revoked: the write sets the
// cell's generation before it commits), one that was reaped, and nil.
func (s *Store) Unchanged(sess *Session) (UsageVersion, bool) {
	if sess == nil || sess.cell == nil {
		return UsageVersion{}, false
	}
	enc, ok := sess.cell.current(sess.gen)
	if !ok {
		return UsageVersion{}, false
	}
	return versionOf(enc), true
}

// RecordCallIn is RecordCallUsage for sess, a session read from the store (by Get,
// GetWithoutHistory, GetLifecycle or GetUnlessUsage) and found active at call.At: when it had
// made a call by then, the call goes straight to its usage cell, without looking the session
// up again. That is safe because a session active at a time stays so unless a close,
// revocation or reaping ends it, which marks the cell; a renewal only moves the expiry later.
func (s *Store) RecordCallIn(sess *Session, call Call) (UsageVersion, Usage, *Session, error) {
	if sess.cell == nil || sess.StatusAt(call.At) != StatusActive {
		return s.RecordCallUsage(sess.ID, call)
	}
	return s.recordInCell(sess.ID, sess.cell, call)
}

// recordInCell records call in c, the usage cell of session id.
func (s *Store) recordInCell(id string, c *usageCell, call Call) (UsageVersion, Usage, *Session, error) {
	enc, head, err := c.record(call, s.historyLimit)
	if errors.Is(err, ErrNotActive) {
		// The session's end is committing: wait for it, so the session returned shows it.
		wtxn := s.db.Txn(true)
		sess, _ := s.sessionTxn(wtxn, id)
		wtxn.Abort()
		return UsageVersion{}, Usage{}, sess, err
	}
	if err != nil {
		return UsageVersion{}, Usage{}, nil, fmt.Errorf("record call in session %s: %w", id, err)
	}
	return versionOf(enc), head, nil, nil
}

// recordFirstCall is RecordCallUsage for a session that had no usage cell when looked up.
func (s *Store) recordFirstCall(id string, call Call) (UsageVersion, Usage, *Session, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	enc, head, err := s.recordCallTxn(txn, id, call)
	if err != nil {
		sess, _ := s.sessionTxn(txn, id)
		return UsageVersion{}, Usage{}, sess, err
	}
	txn.Commit()
	return versionOf(enc), head, nil, nil
}

// recordCallTxn records call in session id, inside txn, and returns the usage stored. A
// session without a usage cell gets one: a new version of its bucket, sharing the records and
// the text of the one it replaces. The call is stored in the cell right away (txn, when it
// commits, makes a new cell visible), and is not taken back if txn aborts: it must be the
// last step of its transaction that can fail.
func (s *Store) recordCallTxn(txn *memdb.Txn, id string, call Call) (encUsage, Usage, error) {
	l, err := s.locate(txn, id)
	if err != nil {
		return encUsage{}, Usage{}, err
	}
	if !l.found {
		return encUsage{}, Usage{}, ErrNotFound
	}
	old := l.bucket
	if old.statusAt(l.i, call.At) != StatusActive {
		return encUsage{}, Usage{}, ErrNotActive
	}
	c := old.cellOf(l.i)
	if c == nil {
		c = &usageCell{gen: old.recs[l.i].gen}
		b := &bucket{key: old.key, recs: old.recs, text: old.text, textEnd: old.textEnd, usage: slices.Clone(old.usage)}
		b.setCell(l.i, c)
		if err := write(txn, b); err != nil {
			return encUsage{}, Usage{}, err
		}
	}
	enc, head, err := c.record(call, s.historyLimit)
	if err != nil && !errors.Is(err, ErrNotActive) {
		return encUsage{}, Usage{}, fmt.Errorf("record call in session %s: %w", id, err)
	}
	return enc, head, err
}

// Renew extends an active session to expiresAt and counts the renewal.
func (s *Store) Renew(id string, expiresAt, now time.Time) (*Session, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	var out *Session
	_, err := s.updateSessionTxn(txn, id, func(sess *Session) bool {
		if sess.StatusAt(now) != StatusActive {
			return false
		}
		renewTxn(sess, expiresAt)
		out = sess
		return true
	})
	if err != nil {
		return nil, err
	}
	if out == nil {
		sess, _ := s.sessionTxn(txn, id)
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

// updateSessionTxn stores a changed copy of a session's lifecycle: mutate sees a fresh copy
// and reports whether it changed it. It returns the session's usage cell (nil: no calls).
func (s *Store) updateSessionTxn(txn *memdb.Txn, id string, mutate func(*Session) bool) (*usageCell, error) {
	l, err := s.locate(txn, id)
	if err != nil {
		return nil, err
	}
	if !l.found {
		return nil, ErrNotFound
	}
	c, err := l.bucket.session(l.i, true)
	if err != nil {
		return nil, err
	}
	if !mutate(c) {
		return nil, nil
	}
	b := l.bucket.clone(l.key)
	if err := b.put(l.i, c, false); err != nil {
		return nil, fmt.Errorf("update session: %w", err)
	}
	return l.bucket.cellOf(l.i), write(txn, b)
}

// Close ends an active or pending session because its task is finished.
func (s *Store) Close(id, reason string, now time.Time) (*Session, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	var closed *Session
	cell, err := s.updateSessionTxn(txn, id, func(sess *Session) bool {
		if st := sess.StatusAt(now); st != StatusActive && st != StatusPendingApproval {
			return false
		}
		end(sess, StatusClosed, reason, now)
		closed = sess
		return true
	})
	if err != nil {
		return nil, err
	}
	if closed == nil {
		sess, _ := s.sessionTxn(txn, id)
		return sess, ErrNotActive
	}
	commitEnding(txn, cell)
	return closed, nil
}

// Revoke revokes every active or pending session matching f, in one transaction, and returns
// their ids. Revoked sessions are kept (and denied) until the reaper removes them.
//
// A selector other than the session id scans every session inside the write transaction: a
// session opened concurrently is either seen and revoked or opened after the revocation, never
// missed in between. Calls are recorded during the scan (in the sessions' usage cells, see
// usageCell): revoking by server revokes a session whose call to that server was recorded
// before the scan read its usage, and a call recorded after that counts as made after the
// revocation, as a call in a session opened after it would. A call in a session the scan
// revokes is refused from the moment the revocation commits.
func (s *Store) Revoke(f RevokeFilter, reason string, now time.Time) ([]string, error) {
	if f.Empty() {
		return nil, fmt.Errorf("revoke needs at least one selector")
	}
	txn := s.db.Txn(true)
	defer txn.Abort()

	var buckets []*bucket
	if f.SessionID != "" {
		l, err := s.locate(txn, f.SessionID)
		if err != nil {
			return nil, err
		}
		if l.found {
			buckets = append(buckets, l.bucket)
		}
	} else {
		// Collect first: memdb iterators must not see the table change under them.
		it, err := txn.Get(tableSessions, indexID)
		if err != nil {
			return nil, fmt.Errorf("scan sessions: %w", err)
		}
		for obj := it.Next(); obj != nil; obj = it.Next() {
			buckets = append(buckets, obj.(*bucket))
		}
	}

	var ids []string
	var ending []*usageCell
	for _, old := range buckets {
		var b *bucket
		for i := range old.recs {
			if st := old.statusAt(i, now); (st != StatusActive && st != StatusPendingApproval) || !f.matches(old, i) {
				continue
			}
			if b == nil {
				b = old.clone(old.key)
			}
			// The lifecycle only: a session whose usage cannot be read is still revoked, and
			// does not stop the others from being.
			sess := old.lifecycle(i)
			end(sess, StatusRevoked, reason, now)
			if err := b.put(i, sess, false); err != nil {
				return nil, fmt.Errorf("revoke session %s: %w", sess.ID, err)
			}
			ids = append(ids, strings.Clone(sess.ID))
			ending = append(ending, old.cellOf(i))
		}
		if b != nil {
			if err := write(txn, b); err != nil {
				return nil, err
			}
		}
	}
	if len(ids) == 0 {
		return nil, nil
	}
	commitEnding(txn, ending...)
	slices.Sort(ids)
	return ids, nil
}

// matches reports whether session i of b matches f, decoding only what f asks about.
func (f RevokeFilter) matches(b *bucket, i int) bool {
	r := &b.recs[i]
	if f.SessionID != "" && b.str(r.id) != f.SessionID ||
		f.ClientID != "" && b.str(r.client) != f.ClientID ||
		f.SubjectID != "" && b.str(r.subject) != f.SubjectID {
		return false
	}
	if f.ServerID == "" {
		return true
	}
	if servers := b.list(r.servers); len(servers) > 0 {
		return slices.Contains(servers, f.ServerID)
	}
	u, err := decodeUsage(b.usageOf(i), false)
	return err != nil || u.ServerCalls(f.ServerID) > 0 // unreadable usage: revoking is the safe side
}

// List returns up to f.Limit sessions matching f in id order, and whether more follow. Ids
// hash to buckets, so a page scans every session in a snapshot (writers are not blocked) and
// keeps the f.Limit+1 lowest ids after f.After: an admin path, paged.
func (s *Store) List(f ListFilter) ([]*Session, bool, error) {
	it, err := s.db.Txn(false).Get(tableSessions, indexID)
	if err != nil {
		return nil, false, fmt.Errorf("list sessions: %w", err)
	}
	type hit struct {
		b *bucket
		i int
	}
	var page []hit // sorted by id and at most f.Limit+1 long when f.Limit > 0
	idOf := func(h hit) string { return h.b.str(h.b.recs[h.i].id) }
	byID := func(h hit, id string) int { return strings.Compare(idOf(h), id) }
	for obj := it.Next(); obj != nil; obj = it.Next() {
		b := obj.(*bucket)
		for i := range b.recs {
			r := &b.recs[i]
			id := b.str(r.id)
			if id <= f.After ||
				f.ClientID != "" && b.str(r.client) != f.ClientID ||
				f.SubjectID != "" && b.str(r.subject) != f.SubjectID ||
				f.Status != "" && b.statusAt(i, f.Now) != f.Status {
				continue
			}
			if f.Limit <= 0 {
				page = append(page, hit{b, i})
				continue
			}
			if len(page) == f.Limit+1 && id >= idOf(page[f.Limit]) {
				continue
			}
			at, _ := slices.BinarySearchFunc(page, id, byID)
			page = slices.Insert(page, at, hit{b, i})
			if len(page) > f.Limit+1 {
				page = page[:f.Limit+1]
			}
		}
	}
	if f.Limit <= 0 {
		slices.SortFunc(page, func(a, b hit) int { return strings.Compare(idOf(a), idOf(b)) })
	}
	more := f.Limit > 0 && len(page) > f.Limit
	if more {
		page = page[:f.Limit]
	}
	out := make([]*Session, len(page))
	for k, h := range page {
		if out[k], err = h.b.session(h.i, true); err != nil {
			return nil, false, err
		}
	}
	return out, more, nil
}

// reapBatch is how many buckets one write transaction of the reaper rewrites: few enough that
// decisions recording their calls never wait long behind it, and that the radix nodes the
// transaction changes stay well under go-immutable-radix's 8,192 tracked watch channels. Past
// that, its commit compares the whole tree before and after to find what to notify.
const reapBatch = 256

// Reap deletes sessions that expired at or before cutoff, and lapsed approvals, and returns
// how many sessions it removed. Sessions have no expiry index: the reaper finds the buckets
// holding expired ones by scanning a snapshot, which blocks no writer, then rewrites those
// buckets in small write transactions, checking each session again there, since a renewal may
// have committed after the snapshot.
func (s *Store) Reap(cutoff time.Time) (int, error) {
	var keys []uint16
	it, err := s.db.Txn(false).Get(tableSessions, indexID)
	if err != nil {
		return 0, fmt.Errorf("scan sessions: %w", err)
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		b := obj.(*bucket)
		for i := range b.recs {
			if expiredBy(&b.recs[i], cutoff) {
				keys = append(keys, b.key)
				break
			}
		}
	}
	reaped := 0
	for len(keys) > 0 {
		batch := keys[:min(reapBatch, len(keys))]
		keys = keys[len(batch):]
		n, err := s.reapBuckets(batch, cutoff)
		reaped += n
		if err != nil {
			return reaped, err
		}
	}
	return reaped, s.reapApprovals(cutoff)
}

func expiredBy(r *record, cutoff time.Time) bool {
	return !decodeNanos(r.expires).After(cutoff)
}

// reapBuckets deletes the sessions of the buckets of keys that are still expired at cutoff.
func (s *Store) reapBuckets(keys []uint16, cutoff time.Time) (int, error) {
	txn := s.db.Txn(true)
	defer txn.Abort()
	n := 0
	var ending []*usageCell
	for _, key := range keys {
		obj, err := txn.First(tableSessions, indexID, key)
		if err != nil {
			return 0, fmt.Errorf("look up session bucket: %w", err)
		}
		if obj == nil {
			continue
		}
		b := obj.(*bucket).clone(key)
		removed, cells := b.remove(func(i int) bool { return expiredBy(&b.recs[i], cutoff) })
		if removed > 0 {
			if err := write(txn, b); err != nil {
				return 0, err
			}
			n += removed
			ending = append(ending, cells...)
		}
	}
	commitEnding(txn, ending...)
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

// end ends sess, a fresh copy, with status.
func end(sess *Session, status Status, reason string, now time.Time) {
	sess.Status = status
	sess.EndReason = reason
	sess.EndedAt = now
}

// Counts returns how many sessions are in each status at now, and how many approvals wait
// for a human. It walks the tables (a snapshot; writers are not blocked), so call it at
// scrape pace, not per decision.
func (s *Store) Counts(now time.Time) (sessions map[Status]int, pendingApprovals int) {
	txn := s.db.Txn(false)
	sessions = map[Status]int{}
	if it, err := txn.Get(tableSessions, indexID); err == nil {
		for obj := it.Next(); obj != nil; obj = it.Next() {
			b := obj.(*bucket)
			for i := range b.recs {
				sessions[b.statusAt(i, now)]++
			}
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
	it, err := s.db.Txn(false).Get(tableSessions, indexID)
	if err != nil {
		return 0
	}
	for obj := it.Next(); obj != nil; obj = it.Next() {
		n += len(obj.(*bucket).recs)
	}
	return n
}
