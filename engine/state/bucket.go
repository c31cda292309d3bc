package state

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"time"
	"unsafe"

	memdb "github.com/hashicorp/go-memdb"
)

// Sessions are stored in go-memdb as buckets, not one object each. A session's id hashes to
// one of 4,096 buckets; a bucket holds its sessions as fixed-size records that contain no
// pointers, sorted by id, and their strings in one byte slice. So a million idle sessions are
// 4,096 memdb entries and a handful of heap objects per bucket, which the collector marks
// without looking inside: with one memdb object per session (about ten heap objects each),
// marking them took most of a 2-CPU server's time at a million sessions. What a session has
// done (its usage) is kept beside the records, encoded in two byte slices (see encUsage) held
// in a small cell per session that has made a call (see usageCell).
//
// Buckets are copy-on-write like every memdb object, but for the usage: a change of lifecycle
// (open, renew, close, revoke) writes a new bucket, which copies the records and appends new
// strings to the text, and shares the usage cells with the bucket it replaces. Recording a
// call replaces the encoded usage inside the session's cell, without a memdb transaction:
// only a session's first call writes its bucket, to add the cell. The text is shared between
// versions and appended to in place only past the furthest any version has written (textEnd),
// so strings read from a bucket never change; it is rebuilt when most of it is no longer
// referenced.
//
// The number of buckets trades the collector's work against the cost of a change: at a
// million sessions, 4,096 buckets hold ~244 sessions each, and a forced collection takes
// 12 ms (88 ms with 65,536 buckets, 3 ms with a thousand sessions), while opening a session
// copies ~23 KB of records.

const (
	// bucketBits is log2 of the number of buckets (three 4-bit digits in the index, see
	// bucketIndex).
	bucketBits = 12
	// textSlack is how much unreferenced text a bucket keeps before it is compacted.
	textSlack = 1024
)

// ref locates a string (or an encoded list of strings) in a bucket's text.
type ref struct{ off, n uint32 }

// record is one session's lifecycle, without pointers.
type record struct {
	id, client, subject, servers, scopes, endReason, revision ref
	created, expires, ended                                   int64
	renewals                                                  int32
	// gen counts the writes of the session's lifecycle (see usageCell.gen).
	gen    uint32
	status uint8
}

type bucket struct {
	key  uint16
	recs []record // sorted by id
	text []byte
	// textEnd is how far any version of the bucket has written into text's array. A version
	// appends in place only when its text ends there: after an aborted transaction, or from
	// an older version, it copies, so bytes once written are never written again.
	textEnd *int
	// usage is nil while no session of the bucket has made a call; else one entry per
	// record: the session's usage cell, nil for sessions without calls. Cells are shared by
	// every version of the bucket from the one that added them on.
	usage []*usageCell
}

// usageCell holds one session's usage, encoded (see encUsage): every recorded call stores a new
// value, under the cell's lock (the bytes a value holds are never changed). A session's calls
// are the one part of it that changes on every allowed decision; keeping them out of the
// copy-on-write bucket spares each call a memdb write transaction (which serialises all
// writers, copies the bucket's usage slice and the radix path to it, and makes a watch channel
// for every node copied) and makes its cost independent of how many sessions share the bucket.
//
// ended is set when the session stops being active by a write of its lifecycle (close,
// revocation, reaping), inside that write's transaction and after everything in it that can
// fail, so that a call recorded after the write commits is refused. A session that expires
// needs no mark: a call is checked against the expiry the store holds when it is recorded.
//
// gen is the generation of the session's lifecycle: a write of the lifecycle sets it, inside
// its transaction (before the commit), to the generation the new record carries, which is the
// committed one's plus one. So while it equals the generation of a record a reader took from a
// snapshot, no newer lifecycle has committed, and the reader may keep using what it read (see
// Store.Unchanged). It is set, not incremented: after an aborted write it is one ahead until the
// next write commits, and readers only look the session up again meanwhile.
type usageCell struct {
	mu    sync.Mutex
	enc   encUsage
	gen   uint32
	ended bool
}

// setGen records the generation of a lifecycle write of the session.
func (c *usageCell) setGen(gen uint32) {
	c.mu.Lock()
	c.gen = gen
	c.mu.Unlock()
}

// current returns the usage, and whether the session's lifecycle is still that of generation
// gen and has not ended.
func (c *usageCell) current(gen uint32) (encUsage, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enc, !c.ended && c.gen == gen
}

// load returns the encoded usage (empty: no call yet).
func (c *usageCell) load() encUsage {
	if c == nil {
		return encUsage{}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.enc
}

// record stores the usage with call added and returns it, with its counts and labels; it fails
// with ErrNotActive once the cell has ended.
func (c *usageCell) record(call Call, historyLimit int) (encUsage, Usage, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return encUsage{}, Usage{}, ErrNotActive
	}
	enc, head, err := withCallHead(c.enc, call, historyLimit)
	if err != nil {
		return encUsage{}, Usage{}, err
	}
	c.enc = enc
	return enc, head, nil
}

// end marks the cell of a session that stopped being active (a nil cell: one without calls).
func (c *usageCell) end() {
	if c == nil {
		return
	}
	c.mu.Lock()
	c.ended = true
	c.mu.Unlock()
}

// commitEnding marks the cells of the sessions txn ends (nil cells: sessions without calls),
// then commits txn. The order is what makes an end win over a call in flight: a call that
// looked the session up before the commit finds its cell marked, and one that looks it up
// after sees the session ended. Marking after the commit would leave a window in which a call
// could be recorded in a session whose end had committed. Nothing that can fail may come
// between the first mark and the commit: a marked cell refuses calls for good.
func commitEnding(txn *memdb.Txn, cells ...*usageCell) {
	for _, c := range cells {
		c.end()
	}
	if beforeEndCommits != nil {
		beforeEndCommits()
	}
	txn.Commit()
}

// beforeEndCommits, when set (by tests only), runs in commitEnding between the marks and the
// commit.
var beforeEndCommits func()

// statuses are the stored statuses by code; code 0 is never stored.
var statuses = [...]Status{"", StatusActive, StatusPendingApproval, StatusClosed, StatusRevoked, StatusExpired}

func statusCode(st Status) (uint8, error) {
	for i, s := range statuses[1:] {
		if s == st {
			return uint8(i + 1), nil
		}
	}
	return 0, fmt.Errorf("session status %q is not one the store knows", st)
}

// noTime encodes the zero time.Time. Other times are Unix nanoseconds, clamped to the range
// UnixNano can represent (years 1678 to 2262), so an expiry set centuries ahead stays in the
// future instead of wrapping around.
const noTime = math.MinInt64

var (
	latestTime   = time.Unix(0, math.MaxInt64)
	earliestTime = time.Unix(0, math.MinInt64+1)
)

func encodeNanos(t time.Time) int64 {
	switch {
	case t.IsZero():
		return noTime
	case t.After(latestTime):
		return math.MaxInt64
	case t.Before(earliestTime):
		return math.MinInt64 + 1
	}
	return t.UnixNano()
}

func decodeNanos(n int64) time.Time {
	if n == noTime {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

func (b *bucket) str(r ref) string {
	if r.n == 0 {
		return ""
	}
	return unsafe.String(&b.text[r.off], int(r.n))
}

// list decodes a list of strings encoded by putList. The strings share the bucket's text.
func (b *bucket) list(r ref) []string {
	if r.n == 0 {
		return nil
	}
	enc := b.text[r.off : r.off+r.n]
	count, k := binary.Uvarint(enc)
	out := make([]string, 0, count)
	for p := k; k > 0 && p < len(enc); {
		n, k := binary.Uvarint(enc[p:])
		if k <= 0 || uint64(len(enc)-p-k) < n {
			break // not what put wrote; never the case
		}
		p += k
		if n == 0 {
			out = append(out, "")
			continue
		}
		out = append(out, unsafe.String(&enc[p], int(n)))
		p += int(n)
	}
	return out
}

// find returns the position of id in the bucket, or where it would be inserted.
func (b *bucket) find(id string) (int, bool) {
	if b == nil {
		return 0, false
	}
	return slices.BinarySearchFunc(b.recs, id, func(r record, id string) int {
		return strings.Compare(b.str(r.id), id)
	})
}

// usageOf returns the encoded usage of session i (empty: no call yet).
func (b *bucket) usageOf(i int) encUsage {
	return b.cellOf(i).load()
}

// cellOf returns the usage cell of session i (nil: no call yet).
func (b *bucket) cellOf(i int) *usageCell {
	if b.usage == nil {
		return nil
	}
	return b.usage[i]
}

// status returns the stored status and expiry of session i without decoding it.
func (b *bucket) statusAt(i int, now time.Time) Status {
	r := &b.recs[i]
	st := statuses[r.status]
	if (st == StatusActive || st == StatusPendingApproval) && !now.Before(decodeNanos(r.expires)) {
		return StatusExpired
	}
	return st
}

// session decodes session i and its usage, with its history unless history is false. Its
// strings share the bucket's text and the encoded usage, which never change.
func (b *bucket) session(i int, history bool) (*Session, error) {
	s := b.lifecycle(i)
	var err error
	if s.Usage, err = decodeUsage(b.usageOf(i), history); err != nil {
		return nil, fmt.Errorf("session %s: %w", s.ID, err)
	}
	return s, nil
}

// lifecycle decodes session i without its usage.
func (b *bucket) lifecycle(i int) *Session {
	r := &b.recs[i]
	return &Session{
		ID:             b.str(r.id),
		Status:         statuses[r.status],
		ClientID:       b.str(r.client),
		SubjectID:      b.str(r.subject),
		Servers:        b.list(r.servers),
		Scopes:         b.list(r.scopes),
		CreatedAt:      decodeNanos(r.created),
		ExpiresAt:      decodeNanos(r.expires),
		Renewals:       int(r.renewals),
		EndReason:      b.str(r.endReason),
		EndedAt:        decodeNanos(r.ended),
		PolicyRevision: b.str(r.revision),
		cell:           b.cellOf(i),
		gen:            r.gen,
	}
}

// clone returns a copy of b to change: records and activities copied, text shared.
func (b *bucket) clone(key uint16) *bucket {
	if b == nil {
		return &bucket{key: key}
	}
	return &bucket{key: b.key, recs: slices.Clone(b.recs), text: b.text, textEnd: b.textEnd, usage: slices.Clone(b.usage)}
}

// put stores sess at position i of b, a fresh copy: replacing the record there, or inserting
// one when insert is set. Strings equal to the ones of the record replaced, or to the same
// field of another session in the bucket, are not stored again. The session's usage is kept
// when replacing.
func (b *bucket) put(i int, sess *Session, insert bool) error {
	st, err := statusCode(sess.Status)
	if err != nil {
		return err
	}
	if sess.Renewals < 0 || sess.Renewals > math.MaxInt32 {
		return fmt.Errorf("session renewals %d out of range", sess.Renewals)
	}
	r := record{
		created:  encodeNanos(sess.CreatedAt),
		expires:  encodeNanos(sess.ExpiresAt),
		ended:    encodeNanos(sess.EndedAt),
		renewals: int32(sess.Renewals),
		status:   st,
	}
	vals := [...]string{sess.ID, sess.ClientID, sess.SubjectID, encodeList(sess.Servers), encodeList(sess.Scopes), sess.EndReason, sess.PolicyRevision}
	dst := r.refs()
	for k, v := range vals {
		if *dst[k], err = b.putString(k, v); err != nil {
			return err
		}
	}
	if insert {
		b.recs = slices.Insert(b.recs, i, r)
		if b.usage != nil {
			b.usage = slices.Insert(b.usage, i, nil)
		}
	} else {
		r.gen = b.recs[i].gen + 1
		b.recs[i] = r
		if c := b.cellOf(i); c != nil {
			c.setGen(r.gen)
		}
	}
	b.compact()
	return nil
}

// putString returns a ref to v in b's text for field k of a record (see record.refs): an
// existing one if some record's field k holds the same bytes, else v appended.
func (b *bucket) putString(k int, v string) (ref, error) {
	if v == "" {
		return ref{}, nil
	}
	for i := range b.recs {
		if r := *b.recs[i].refs()[k]; b.str(r) == v {
			return r, nil
		}
	}
	if len(b.text)+len(v) > math.MaxUint32 {
		return ref{}, fmt.Errorf("session bucket text over 4 GiB")
	}
	r := ref{off: uint32(len(b.text)), n: uint32(len(v))}
	if b.textEnd == nil || *b.textEnd != len(b.text) || cap(b.text)-len(b.text) < len(v) {
		text := make([]byte, len(b.text), max(2*len(b.text), len(b.text)+len(v)))
		copy(text, b.text)
		b.text, b.textEnd = text, new(int)
	}
	b.text = append(b.text, v...)
	*b.textEnd = len(b.text)
	return r, nil
}

// encodeList encodes strings as their count, then each one's length and bytes (uvarints).
func encodeList(vs []string) string {
	if len(vs) == 0 {
		return ""
	}
	var enc []byte
	enc = binary.AppendUvarint(enc, uint64(len(vs)))
	for _, v := range vs {
		enc = binary.AppendUvarint(enc, uint64(len(v)))
		enc = append(enc, v...)
	}
	return string(enc)
}

// setCell gives session i of b, a fresh copy, the usage cell c.
func (b *bucket) setCell(i int, c *usageCell) {
	if b.usage == nil {
		b.usage = make([]*usageCell, len(b.recs))
	}
	b.usage[i] = c
}

// remove deletes the sessions at the positions drop selects and returns how many, and the
// usage cells of those that had made a call (for the caller to end, see commitEnding).
func (b *bucket) remove(drop func(i int) bool) (int, []*usageCell) {
	recs := b.recs[:0]
	var usage, dropped []*usageCell
	if b.usage != nil {
		usage = b.usage[:0]
	}
	for i := range b.recs {
		if drop(i) {
			if c := b.cellOf(i); c != nil {
				dropped = append(dropped, c) // b.usage[i] is not overwritten before this: len(usage) <= i
			}
			continue
		}
		recs = append(recs, b.recs[i])
		if b.usage != nil {
			usage = append(usage, b.usage[i])
		}
	}
	n := len(b.recs) - len(recs)
	clear(b.recs[len(recs):])
	if b.usage != nil {
		clear(b.usage[len(usage):])
	}
	b.recs, b.usage = recs, usage
	b.compact()
	return n, dropped
}

// refs lists the strings of a record, in the order put stores them.
func (r *record) refs() [7]*ref {
	return [7]*ref{&r.id, &r.client, &r.subject, &r.servers, &r.scopes, &r.endReason, &r.revision}
}

// compact drops the usage slice when no session has one, and rebuilds b's text when
// more than half of it is no longer referenced. Strings shared by several records count once
// per record in the estimate, so a bucket may keep a little more than it needs; the rebuild
// stores each shared string once.
func (b *bucket) compact() {
	if b.usage != nil && !slices.ContainsFunc(b.usage, func(c *usageCell) bool { return c != nil }) {
		b.usage = nil
	}
	live := 0
	for i := range b.recs {
		for _, r := range b.recs[i].refs() {
			live += int(r.n)
		}
	}
	if len(b.text) <= 2*live+textSlack {
		return
	}
	text := make([]byte, 0, live)
	moved := make(map[ref]ref)
	for i := range b.recs {
		for _, r := range b.recs[i].refs() {
			if r.n == 0 {
				continue
			}
			to, ok := moved[*r]
			if !ok {
				to = ref{off: uint32(len(text)), n: r.n}
				text = append(text, b.text[r.off:r.off+r.n]...)
				moved[*r] = to
			}
			*r = to
		}
	}
	end := len(text)
	b.text, b.textEnd = text, &end
}
