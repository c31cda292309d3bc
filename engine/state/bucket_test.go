package state

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// TestRecordHoldsNoPointers keeps the session record scan-free for the collector: a string,
// slice, map or pointer field would make every session an object it has to mark again.
func TestRecordHoldsNoPointers(t *testing.T) {
	var walk func(reflect.Type, string)
	walk = func(ty reflect.Type, path string) {
		switch ty.Kind() {
		case reflect.Struct:
			for i := range ty.NumField() {
				walk(ty.Field(i).Type, path+"."+ty.Field(i).Name)
			}
		case reflect.Array:
			walk(ty.Elem(), path+"[]")
		case reflect.Bool, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64, reflect.Int,
			reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uint:
		default:
			t.Errorf("record%s is a %s: records must hold no pointers", path, ty.Kind())
		}
	}
	walk(reflect.TypeFor[record](), "")
}

// sampleSession is session i with fields of varied shape: empty and non-empty lists, shared
// and unique strings, non-ASCII text.
func sampleSession(i int) *Session {
	s := &Session{
		ID:             fmt.Sprintf("ses_%06d", i),
		Status:         StatusActive,
		ClientID:       fmt.Sprintf("client-%d", i%7),
		SubjectID:      fmt.Sprintf("user-%d@example.com", i),
		CreatedAt:      t0.Add(time.Duration(i) * time.Millisecond),
		ExpiresAt:      t0.Add(time.Hour + time.Duration(i)*time.Second),
		Renewals:       i % 3,
		PolicyRevision: "rev-" + strings.Repeat("x", i%40),
	}
	if i%2 == 0 {
		s.Servers = []string{"github", fmt.Sprintf("fs-%d", i%5)}
	}
	if i%3 == 0 {
		s.Scopes = []string{"repo:read", "ünïcode scope", ""}
	}
	return s
}

// sameSession compares every lifecycle field (times must come back in UTC, as they went in)
// and the number of calls recorded.
func sameSession(t *testing.T, got, want *Session, calls uint64) {
	t.Helper()
	if got.Usage.Total != calls || len(got.Usage.History) != int(min(calls, 2)) {
		t.Fatalf("session %s has %d calls and %d history entries, want %d", want.ID, got.Usage.Total, len(got.Usage.History), calls)
	}
	g, w := *got, *want
	g.Usage, w.Usage = Usage{}, Usage{}
	if (g.cell != nil) != (calls > 0) {
		t.Errorf("session %s with %d calls read back with usage cell %p", want.ID, calls, g.cell)
	}
	g.cell, g.gen = nil, 0
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("session %s reads back as\n%+v\nwant\n%+v", want.ID, g, w)
	}
}

// TestBucketsKeepEverySession stores enough sessions that buckets hold several, records calls
// in some, changes the lifecycle of others, and reads every one back field by field.
func TestBucketsKeepEverySession(t *testing.T) {
	s := newStore(t)
	const n = 3000
	want := make([]*Session, n)
	calls := make([]uint64, n)
	for i := range n {
		want[i] = sampleSession(i)
		if err := s.Open(want[i], nil); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < n; i += 5 {
		for range i%4 + 1 {
			if _, err := s.RecordCall(want[i].ID, Call{Server: "github", Tool: "read", At: t0}); err != nil {
				t.Fatal(err)
			}
			calls[i]++
		}
	}
	if multi := bucketsWithSeveral(s); multi == 0 {
		t.Fatal("no bucket holds two sessions; the test does not exercise shared buckets")
	}
	now := t0.Add(time.Minute)
	ids, err := s.Revoke(RevokeFilter{ClientID: "client-3"}, "compromised", now)
	if err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if want[i].ClientID == "client-3" {
			want[i].Status, want[i].EndReason, want[i].EndedAt = StatusRevoked, "compromised", now
		}
	}
	if len(ids) != n/7+1 {
		t.Errorf("revoked %d sessions, want %d", len(ids), n/7+1)
	}
	for i := 0; i < n; i += 11 {
		if want[i].Status != StatusActive {
			continue
		}
		got, err := s.Renew(want[i].ID, want[i].ExpiresAt.Add(time.Hour), now)
		if err != nil {
			t.Fatal(err)
		}
		want[i].ExpiresAt, want[i].Renewals = want[i].ExpiresAt.Add(time.Hour), want[i].Renewals+1
		sameSession(t, got, want[i], calls[i])
	}
	for i := range want {
		got, err := s.Get(want[i].ID)
		if err != nil {
			t.Fatal(err)
		}
		sameSession(t, got, want[i], calls[i])
	}
	if got := s.Count(); got != n {
		t.Errorf("Count = %d, want %d", got, n)
	}
}

func bucketsWithSeveral(s *Store) int {
	it, _ := s.db.Txn(false).Get(tableSessions, indexID)
	multi := 0
	for obj := it.Next(); obj != nil; obj = it.Next() {
		if len(obj.(*bucket).recs) > 1 {
			multi++
		}
	}
	return multi
}

// sameBucketIDs returns n session ids that hash to one bucket of s.
func sameBucketIDs(s *Store, n int) []string {
	var ids []string
	key := s.bucketOf("ses_target")
	for i := 0; len(ids) < n; i++ {
		id := fmt.Sprintf("ses_%d", i)
		if s.bucketOf(id) == key {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestBucketTextStaysBounded changes one bucket's sessions many times: every change appends
// strings, and compaction keeps the text near what the records reference, while a session read
// before the changes keeps its own values.
func TestBucketTextStaysBounded(t *testing.T) {
	s := newStore(t)
	ids := sameBucketIDs(s, 8)
	for _, id := range ids {
		if err := s.Open(&Session{ID: id, Status: StatusActive, ClientID: "c", SubjectID: "subject of " + id, ExpiresAt: t0.Add(time.Hour)}, nil); err != nil {
			t.Fatal(err)
		}
	}
	var early *Session // ids[1] as read after the first round of changes
	for round := range 500 {
		if round == 1 {
			var err error
			if early, err = s.Get(ids[1]); err != nil {
				t.Fatal(err)
			}
		}
		for _, id := range ids[1:] {
			// A long reason that differs every time, so each change stores new text.
			reason := fmt.Sprintf("round %d: %s", round, strings.Repeat("r", 200))
			txn := s.db.Txn(true)
			if _, err := s.updateSessionTxn(txn, id, func(sess *Session) bool {
				sess.EndReason = reason
				return true
			}); err != nil {
				t.Fatal(err)
			}
			txn.Commit()
		}
	}
	l, err := s.locate(s.db.Txn(false), ids[0])
	if err != nil || !l.found {
		t.Fatalf("locate: %v %v", l, err)
	}
	live := 0
	for i := range l.bucket.recs {
		for _, r := range l.bucket.recs[i].refs() {
			live += int(r.n)
		}
	}
	if len(l.bucket.text) > 2*live+textSlack {
		t.Errorf("bucket text is %d bytes for %d referenced", len(l.bucket.text), live)
	}
	if want := "round 0: " + strings.Repeat("r", 200); early.EndReason != want || early.SubjectID != "subject of "+ids[1] {
		t.Errorf("a session read after round 0 changed: reason %.12q, subject %q", early.EndReason, early.SubjectID)
	}
	for _, id := range ids[1:] {
		got, err := s.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if want := "round 499: " + strings.Repeat("r", 200); got.EndReason != want || got.SubjectID != "subject of "+id {
			t.Errorf("%s: reason %q subject %q", id, got.EndReason, got.SubjectID)
		}
	}
}

// TestListPagesInIDOrderAcrossBuckets pages through sessions whose ids hash all over the
// buckets, with and without a filter, and gets every match once, in id order.
func TestListPagesInIDOrderAcrossBuckets(t *testing.T) {
	s := newStore(t)
	rng := rand.New(rand.NewPCG(1, 2))
	var all, ofClient []string
	for i := range 2000 {
		id := fmt.Sprintf("ses_%016x", rng.Uint64())
		client := fmt.Sprintf("c%d", i%4)
		open(t, s, id, client, "u", time.Hour)
		all = append(all, id)
		if client == "c1" {
			ofClient = append(ofClient, id)
		}
	}
	slices.Sort(all)
	slices.Sort(ofClient)
	for _, tc := range []struct {
		name  string
		f     ListFilter
		want  []string
		limit int
	}{
		{"all", ListFilter{}, all, 37},
		{"one client", ListFilter{ClientID: "c1"}, ofClient, 50},
		{"exact pages", ListFilter{ClientID: "c1"}, ofClient, len(ofClient) / 2},
	} {
		var got []string
		f := tc.f
		f.Limit = tc.limit
		pages := 0
		for ; ; pages++ {
			if pages > len(tc.want) {
				t.Fatalf("%s: paging does not end", tc.name)
			}
			page, more, err := s.List(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, sess := range page {
				got = append(got, sess.ID)
			}
			if !more {
				break
			}
			if len(page) != tc.limit {
				t.Fatalf("%s: a page with more after it has %d sessions, want %d", tc.name, len(page), tc.limit)
			}
			f.After = page[len(page)-1].ID
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: paging returned %d ids (first %v), want %d", tc.name, len(got), got[:min(3, len(got))], len(tc.want))
		}
		// A last page that is exactly full says nothing follows: no empty page after it.
		if want := (len(tc.want) + tc.limit - 1) / tc.limit; pages+1 != want {
			t.Errorf("%s: %d pages, want %d", tc.name, pages+1, want)
		}
	}
	unlimited, more, err := s.List(ListFilter{})
	if err != nil || more {
		t.Fatalf("unlimited list: more %v, %v", more, err)
	}
	var got []string
	for _, sess := range unlimited {
		got = append(got, sess.ID)
	}
	if !slices.Equal(got, all) {
		t.Errorf("unlimited list: %d ids, not every id in order", len(got))
	}
}

// TestReapKeepsTheRestOfABucket reaps expired sessions from buckets that also hold live ones,
// including their usage.
func TestReapKeepsTheRestOfABucket(t *testing.T) {
	s := newStore(t)
	ids := sameBucketIDs(s, 6)
	for i, id := range ids {
		ttl := time.Hour
		if i%2 == 1 {
			ttl = time.Minute
		}
		open(t, s, id, "c", "u", ttl)
		if i%3 == 2 {
			continue // some sessions, kept and reaped, have made no call
		}
		if _, err := s.RecordCall(id, Call{Server: "fs", Tool: fmt.Sprint("t", i), At: t0}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.Reap(t0.Add(2 * time.Minute))
	if err != nil || n != 3 {
		t.Fatalf("reaped %d, %v; want 3", n, err)
	}
	for i, id := range ids {
		sess, err := s.Get(id)
		if i%2 == 1 {
			if err != ErrNotFound {
				t.Errorf("%s expired but reads back: %v", id, err)
			}
			continue
		}
		want := uint64(1)
		if i%3 == 2 {
			want = 0
		}
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if u := sess.Usage; u.Total != want || u.ByTool()["fs"][fmt.Sprint("t", i)] != want {
			t.Errorf("%s: usage %+v; want %d call", id, u, want)
		}
	}
	if n, err := s.Reap(t0.Add(2 * time.Hour)); err != nil || n != 3 || s.Count() != 0 {
		t.Fatalf("second reap: %d, %v; %d left", n, err, s.Count())
	}
	if it, _ := s.db.Txn(false).Get(tableSessions, indexID); it.Next() != nil {
		t.Error("an empty bucket was kept")
	}
}

func TestOpenRefusesWhatTheStoreCannotHold(t *testing.T) {
	s := newStore(t)
	for _, sess := range []*Session{
		{ID: "", Status: StatusActive},
		{ID: "a", Status: "dormant"},
		{ID: "b", Status: StatusActive, Renewals: -1},
	} {
		if err := s.Open(sess, nil); err == nil {
			t.Errorf("Open(%+v) succeeded", sess)
		}
	}
	if s.Count() != 0 {
		t.Errorf("a refused session was stored")
	}
}

// TestStringsOutliveAnAbortedWrite reads a session inside a write transaction that then
// aborts; the next committed write to the bucket must not reuse the bytes the read points at.
func TestStringsOutliveAnAbortedWrite(t *testing.T) {
	s := newStore(t)
	ids := sameBucketIDs(s, 2)
	for _, id := range ids {
		open(t, s, id, "c", "u", time.Hour)
	}
	setReason := func(id, reason string) *memdb.Txn {
		txn := s.db.Txn(true)
		if _, err := s.updateSessionTxn(txn, id, func(sess *Session) bool { sess.EndReason = reason; return true }); err != nil {
			t.Fatal(err)
		}
		return txn
	}
	// Appends in place need spare room in the text's array: change the second session until
	// the array has some (it grows by doubling).
	for i := 0; ; i++ {
		l, err := s.locate(s.db.Txn(false), ids[0])
		if err != nil {
			t.Fatal(err)
		}
		if cap(l.bucket.text)-len(l.bucket.text) >= 8 {
			break
		}
		setReason(ids[1], strings.Repeat("x", i+1)).Commit()
	}
	txn := setReason(ids[0], "AAAA")
	read, err := s.sessionTxn(txn, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	txn.Abort()
	setReason(ids[1], "BBBB").Commit()
	if read.EndReason != "AAAA" {
		t.Errorf("a string read before the abort now reads %q", read.EndReason)
	}
	if got, _ := s.Get(ids[1]); got.EndReason != "BBBB" {
		t.Errorf("the committed change reads %q", got.EndReason)
	}
	if got, _ := s.Get(ids[0]); got.EndReason != "" {
		t.Errorf("the aborted change was kept: %q", got.EndReason)
	}
}

// TestFarTimesStayInOrder stores times beyond what Unix nanoseconds hold: an expiry centuries
// ahead stays in the future.
func TestFarTimesStayInOrder(t *testing.T) {
	s := newStore(t)
	far := time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC)
	if err := s.Open(&Session{ID: "a", Status: StatusActive, CreatedAt: time.Date(1500, 1, 1, 0, 0, 0, 0, time.UTC), ExpiresAt: far}, nil); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	if st := got.StatusAt(t0); st != StatusActive || got.ExpiresAt.Year() != 2262 || got.CreatedAt.Year() != 1677 {
		t.Errorf("status %s, expires %v, created %v", st, got.ExpiresAt, got.CreatedAt)
	}
	if _, err := s.RecordCall("a", Call{Server: "fs", At: t0}); err != nil {
		t.Errorf("record a call: %v", err)
	}
}

// TestRevokeIsNotStoppedByUnreadableUsage: revocation reads lifecycles only, so a session whose
// stored usage cannot be decoded (a bug, never written by the store) is revoked with the rest,
// and reading it fails rather than showing less usage than it has.
func TestRevokeIsNotStoppedByUnreadableUsage(t *testing.T) {
	s := newStore(t)
	ids := sameBucketIDs(s, 5)
	for _, id := range ids {
		open(t, s, id, "c", "u", time.Hour)
		if _, err := s.RecordCall(id, Call{Server: "fs", Tool: "read", At: t0}); err != nil {
			t.Fatal(err)
		}
	}
	txn := s.db.Txn(true)
	l, err := s.locate(txn, ids[2])
	if err != nil || !l.found {
		t.Fatal(l, err)
	}
	b := l.bucket.clone(l.key)
	b.setCell(l.i, &usageCell{enc: splitUsage([]byte{0x05, 0x05, 0x01})})
	if err := write(txn, b); err != nil {
		t.Fatal(err)
	}
	txn.Commit()

	if _, err := s.Get(ids[2]); err == nil {
		t.Error("a session with unreadable usage reads back")
	}
	revoked, err := s.Revoke(RevokeFilter{ClientID: "c"}, "incident", t0)
	if err != nil || len(revoked) != len(ids) {
		t.Fatalf("revoked %d of %d: %v", len(revoked), len(ids), err)
	}
	if revoked, err := s.Revoke(RevokeFilter{ServerID: "fs"}, "again", t0); err != nil || len(revoked) != 0 {
		t.Errorf("revoking again: %v, %v", revoked, err)
	}
	if _, err := s.RecordCall(ids[2], Call{Server: "fs", At: t0}); err != ErrNotActive {
		t.Errorf("a call in the revoked session: %v, want ErrNotActive", err)
	}
}

// GetWithoutHistory leaves the history out and nothing else, and still fails on a session whose
// history cannot be read (the decision then fails closed).
func TestGetWithoutHistory(t *testing.T) {
	s := newStore(t)
	ids := sameBucketIDs(s, 2)
	for _, id := range ids {
		open(t, s, id, "c", "u", time.Hour)
		if _, err := s.RecordCall(id, Call{Server: "fs", Tool: "read", Method: "tools/call", At: t0, Labels: []string{"private_data"}}); err != nil {
			t.Fatal(err)
		}
	}
	full, err := s.Get(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	without, err := s.GetWithoutHistory(ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Usage.History) != 1 || without.Usage.History != nil {
		t.Fatalf("history: %d entries with, %v without", len(full.Usage.History), without.Usage.History)
	}
	full.Usage.History = nil
	if !reflect.DeepEqual(full, without) {
		t.Errorf("without the history:\n%+v\nwant\n%+v", without, full)
	}

	// Cut the last byte off the stored usage of the second session: its head is whole, its
	// one history entry is not.
	txn := s.db.Txn(true)
	l, err := s.locate(txn, ids[1])
	if err != nil || !l.found {
		t.Fatal(l, err)
	}
	b := l.bucket.clone(l.key)
	u := b.usageOf(l.i)
	b.setCell(l.i, &usageCell{enc: encUsage{head: u.head, hist: u.hist[: len(u.hist)-1 : len(u.hist)-1]}})
	if err := write(txn, b); err != nil {
		t.Fatal(err)
	}
	txn.Commit()
	if _, err := s.GetWithoutHistory(ids[1]); err == nil {
		t.Error("a session whose history cannot be read reads back without it")
	}
	if _, err := s.Get(ids[1]); err == nil {
		t.Error("a session whose history cannot be read reads back")
	}
}
