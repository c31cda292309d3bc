package state

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"
	"unsafe"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(Config{HistoryLimit: 2})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func open(t *testing.T, s *Store, id, client, subject string, ttl time.Duration, servers ...string) {
	t.Helper()
	err := s.Open(&Session{ID: id, Status: StatusActive, ClientID: client, SubjectID: subject, Servers: servers, CreatedAt: t0, ExpiresAt: t0.Add(ttl)}, nil)
	if err != nil {
		t.Fatalf("open %s: %v", id, err)
	}
}

func TestOpenRefusesDuplicateID(t *testing.T) {
	s := newStore(t)
	open(t, s, "a", "c", "u", time.Hour)
	if err := s.Open(&Session{ID: "a", ClientID: "c", ExpiresAt: t0}, nil); err != ErrExists {
		t.Fatalf("second open with the same id: %v, want ErrExists", err)
	}
}

func TestRecordCallCopiesOnWrite(t *testing.T) {
	s := newStore(t)
	open(t, s, "a", "c", "u", time.Hour)
	if _, err := s.RecordCall("a", Call{Server: "fs", Tool: "read", At: t0, Labels: []string{"private_data"}}); err != nil {
		t.Fatal(err)
	}
	beforeSess, _ := s.Get("a")
	before := &beforeSess.Usage
	for i, tool := range []string{"read", "write", "read"} {
		if _, err := s.RecordCall("a", Call{Server: "fs", Tool: tool, At: t0.Add(time.Duration(i+1) * time.Second), Labels: []string{"untrusted_content", "private_data"}}); err != nil {
			t.Fatal(err)
		}
	}
	if before.Total != 1 || before.ByTool()["fs"]["read"] != 1 || len(before.History) != 1 || len(before.Labels) != 1 {
		t.Fatalf("a usage read earlier was changed in place: %+v", before)
	}
	afterSess, _ := s.Get("a")
	after := &afterSess.Usage
	if after.Total != 4 || after.ByTool()["fs"]["read"] != 3 || after.ByTool()["fs"]["write"] != 1 || after.ByServer()["fs"] != 4 {
		t.Errorf("counts %+v", after)
	}
	if len(after.History) != 2 || after.History[0].Tool != "write" || after.History[1].Tool != "read" {
		t.Errorf("history %+v, want the last two calls, oldest first", after.History)
	}
	if !slices.Equal(after.Labels, []string{"private_data", "untrusted_content"}) {
		t.Errorf("labels %v", after.Labels)
	}
}

func TestRecordCallRefusesEndedSessions(t *testing.T) {
	s := newStore(t)
	open(t, s, "revoked", "c", "u", time.Hour)
	open(t, s, "expired", "c", "u", time.Minute)
	if _, err := s.Revoke(RevokeFilter{SessionID: "revoked"}, "r", t0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		id   string
		at   time.Time
		want error
	}{
		{"revoked", t0, ErrNotActive},
		{"expired", t0.Add(time.Minute), ErrNotActive},
		{"missing", t0, ErrNotFound},
	} {
		if _, err := s.RecordCall(tc.id, Call{Server: "fs", At: tc.at}); err != tc.want {
			t.Errorf("%s: %v, want %v", tc.id, err, tc.want)
		}
	}
}

func TestRevokeSelectors(t *testing.T) {
	s := newStore(t)
	open(t, s, "a1", "client-a", "alice", time.Hour, "github")
	open(t, s, "a2", "client-a", "bob", time.Hour)
	open(t, s, "b1", "client-b", "alice", time.Hour)
	open(t, s, "b2", "client-b", "bob", time.Hour, "fs")
	if _, err := s.RecordCall("a2", Call{Server: "github", At: t0}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		f    RevokeFilter
		want []string
	}{
		// by server: bound to it, or unbound and has called it.
		{RevokeFilter{ServerID: "github"}, []string{"a1", "a2"}},
		{RevokeFilter{ClientID: "client-b", SubjectID: "alice"}, []string{"b1"}},
		{RevokeFilter{SubjectID: "bob"}, []string{"b2"}}, // a2 already revoked
		{RevokeFilter{SessionID: "nope"}, nil},
	} {
		got, err := s.Revoke(tc.f, "test", t0)
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(got)
		if !slices.Equal(got, tc.want) {
			t.Errorf("revoke %+v = %v, want %v", tc.f, got, tc.want)
		}
	}
	if _, err := s.Revoke(RevokeFilter{}, "all", t0); err == nil {
		t.Error("revoke with no selector must fail")
	}
}

func TestListPages(t *testing.T) {
	s := newStore(t)
	for i := range 5 {
		open(t, s, fmt.Sprintf("s%d", i), "c", "u", time.Hour)
	}
	open(t, s, "x", "other", "u", time.Hour)
	var got []string
	after := ""
	for {
		page, more, err := s.List(ListFilter{ClientID: "c", After: after, Limit: 2, Now: t0})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page {
			got = append(got, p.ID)
		}
		if !more {
			break
		}
		after = page[len(page)-1].ID
	}
	if !slices.Equal(got, []string{"s0", "s1", "s2", "s3", "s4"}) {
		t.Errorf("pages gave %v", got)
	}
	if _, err := s.Revoke(RevokeFilter{SessionID: "s1"}, "r", t0); err != nil {
		t.Fatal(err)
	}
	page, _, _ := s.List(ListFilter{Status: StatusRevoked, Now: t0})
	if len(page) != 1 || page[0].ID != "s1" {
		t.Errorf("status filter gave %v", page)
	}
}

func TestReapRemovesExpiredSessions(t *testing.T) {
	s := newStore(t)
	open(t, s, "short", "c", "u", time.Minute)
	open(t, s, "mid", "c", "u", time.Hour)
	open(t, s, "long", "c", "u", 2*time.Hour)
	n, err := s.Reap(t0.Add(time.Hour))
	if err != nil || n != 2 {
		t.Fatalf("reaped %d (%v), want 2", n, err)
	}
	if _, err := s.Get("mid"); err != ErrNotFound {
		t.Errorf("mid should be gone: %v", err)
	}
	if _, err := s.Get("long"); err != nil {
		t.Errorf("long should remain: %v", err)
	}
	if counts, _ := s.Counts(t0.Add(time.Hour)); counts[StatusActive] != 1 || len(counts) != 1 {
		t.Errorf("counts %v, want one active session", counts)
	}
}

func TestRunReaperStopsWithContext(t *testing.T) {
	s := newStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		s.RunReaper(ctx, time.Hour, 0, time.Now, nil)
		close(done)
	}()
	cancel()
	<-done // the test times out if the reaper ignores its context
}

func TestCallCountsByServerAndTool(t *testing.T) {
	s := newStore(t)
	open(t, s, "a", "c", "u", time.Hour)
	for _, c := range []Call{
		{Server: "fs", Tool: "read"}, {Server: "docs", Method: "resources/read"}, {Server: "fs", Tool: "write"},
		{Server: "fs", Tool: "read"}, {Server: "fs", Method: "tools/list"}, {Server: "docs", Tool: "search"},
	} {
		c.At = t0
		if _, err := s.RecordCall("a", c); err != nil {
			t.Fatal(err)
		}
	}
	uSess, _ := s.Get("a")
	u := &uSess.Usage
	want := []CallCount{{"docs", "", 1}, {"docs", "search", 1}, {"fs", "", 1}, {"fs", "read", 2}, {"fs", "write", 1}}
	if !slices.Equal(u.Calls, want) {
		t.Errorf("calls %v, want %v", u.Calls, want)
	}
	if got := u.ByServer(); len(got) != 2 || got["fs"] != 4 || got["docs"] != 2 {
		t.Errorf("by server %v: calls without a tool count for their server", got)
	}
	if got := u.ByTool(); len(got) != 2 || len(got["fs"]) != 2 || got["fs"]["read"] != 2 || len(got["docs"]) != 1 {
		t.Errorf("by tool %v: calls without a tool are left out", got)
	}
	if u.Total != 6 || u.ServerCalls("docs") != 2 || u.ServerCalls("nope") != 0 {
		t.Errorf("total %d, docs %d", u.Total, u.ServerCalls("docs"))
	}
}

func TestReapKeepsRenewedAndLiveSessions(t *testing.T) {
	s := newStore(t)
	for i := range 3000 { // more than one delete batch
		open(t, s, fmt.Sprintf("old%04d", i), "c", "u", time.Minute)
	}
	open(t, s, "renewed", "c", "u", time.Minute)
	open(t, s, "live", "c", "u", time.Hour)
	if _, err := s.Renew("renewed", t0.Add(2*time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	n, err := s.Reap(t0.Add(time.Minute))
	if err != nil || n != 3000 {
		t.Fatalf("reaped %d (%v), want 3000", n, err)
	}
	if got := s.Count(); got != 2 {
		t.Errorf("%d sessions left, want the renewed and the live one", got)
	}
}

// TestGetUnlessUsage: a read given the usage version last recorded leaves the usage undecoded;
// any other call recorded since, or no version known, decodes it; and the counts and labels a
// recorded call returns are those a read decodes.
func TestGetUnlessUsage(t *testing.T) {
	s := newStore(t)
	open(t, s, "a", "c", "u", time.Hour, "fs")
	if _, v, decoded, err := s.GetUnlessUsage("a", UsageVersion{}); err != nil || decoded || v != (UsageVersion{}) {
		t.Fatalf("fresh session: version %v, decoded %v, %v; want the empty usage's version, undecoded", v, decoded, err)
	}
	call := Call{Server: "fs", Tool: "read", Method: "tools/call", At: t0, Labels: []string{"private"}}
	v1, head, _, err := s.RecordCallUsage("a", call)
	if err != nil {
		t.Fatal(err)
	}
	sess, v, decoded, err := s.GetUnlessUsage("a", v1)
	if err != nil || decoded || v != v1 || sess.Usage.Total != 0 || sess.ID != "a" {
		t.Fatalf("known version: %+v, version %v (recorded %v), decoded %v, %v", sess, v, v1, decoded, err)
	}
	sess, v, decoded, err = s.GetUnlessUsage("a", UsageVersion{})
	if err != nil || !decoded || v != v1 {
		t.Fatalf("unknown version: decoded %v, version %v, %v", decoded, v, err)
	}
	if fmt.Sprint(sess.Usage) != fmt.Sprint(head) || head.Total != 1 || len(head.Labels) != 1 {
		t.Errorf("recorded %+v, read %+v", head, sess.Usage)
	}
	if _, err := s.RecordCall("a", call); err != nil {
		t.Fatal(err)
	}
	sess, v, decoded, err = s.GetUnlessUsage("a", v1)
	if err != nil || !decoded || v == v1 || sess.Usage.Total != 2 {
		t.Errorf("after another call: total %d, decoded %v, version changed %v, %v", sess.Usage.Total, decoded, v != v1, err)
	}
	if _, _, _, err := s.GetUnlessUsage("nope", v1); err != ErrNotFound {
		t.Errorf("unknown session: %v", err)
	}
}

func TestGetLifecycle(t *testing.T) {
	s := newStore(t)
	open(t, s, "a", "c", "u", time.Hour, "fs")
	if _, err := s.RecordCall("a", Call{Server: "fs", Tool: "read", Method: "tools/call", At: t0, Labels: []string{"private"}}); err != nil {
		t.Fatal(err)
	}
	full, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetLifecycle("a")
	if err != nil {
		t.Fatal(err)
	}
	if got.Usage.Total != 0 || got.Usage.Calls != nil || got.Usage.History != nil || got.Usage.Labels != nil {
		t.Errorf("usage decoded: %+v", got.Usage)
	}
	full.Usage = Usage{}
	if fmt.Sprint(*got) != fmt.Sprint(*full) {
		t.Errorf("lifecycle\n%+v\nwant\n%+v", *got, *full)
	}
	if _, err := s.GetLifecycle("nope"); err != ErrNotFound {
		t.Errorf("unknown session: %v", err)
	}
}

// TestEndingASessionRefusesCallsInFlight: a call is recorded in the session's usage cell after
// the session was looked up in a snapshot, without a write transaction. A close, revocation or
// reaping must still win: each marks the cell before its commit (checked from inside the
// commit, between the marks and the commit itself), so a decision that read the session before
// the end has its call refused (ErrNotActive), with the session as the end left it.
func TestEndingASessionRefusesCallsInFlight(t *testing.T) {
	for _, tc := range []struct {
		name string
		end  func(s *Store) error
		want Status // of the session returned with the refusal; "" for none (reaped)
	}{
		{"close", func(s *Store) error { _, err := s.Close("a", "done", t0); return err }, StatusClosed},
		{"revoke by id", func(s *Store) error { _, err := s.Revoke(RevokeFilter{SessionID: "a"}, "incident", t0); return err }, StatusRevoked},
		{"revoke by server", func(s *Store) error { _, err := s.Revoke(RevokeFilter{ServerID: "fs"}, "incident", t0); return err }, StatusRevoked},
		{"reap", func(s *Store) error { _, err := s.Reap(t0.Add(2 * time.Hour)); return err }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			open(t, s, "a", "c", "u", time.Hour)
			if _, err := s.RecordCall("a", Call{Server: "fs", Tool: "read", At: t0}); err != nil {
				t.Fatal(err)
			}
			read, err := s.GetLifecycle("a")
			if err != nil || read.cell == nil {
				t.Fatalf("a session that made a call reads back without its usage cell: %v", err)
			}
			committing := false
			beforeEndCommits = func() {
				committing = true
				if _, _, err := read.cell.record(Call{Server: "fs", Tool: "early", At: t0}, s.historyLimit); err != ErrNotActive {
					t.Errorf("the cell took a call while the end was committing (%v): it must be marked before the commit", err)
				}
			}
			defer func() { beforeEndCommits = nil }()
			if err := tc.end(s); err != nil {
				t.Fatal(err)
			}
			if !committing {
				t.Fatal("the end committed without commitEnding")
			}
			_, _, ended, err := s.RecordCallIn(read, Call{Server: "fs", Tool: "write", At: t0})
			if err != ErrNotActive {
				t.Errorf("a call in a session ended since it was read: %v, want ErrNotActive", err)
			}
			switch {
			case tc.want == "" && ended != nil:
				t.Errorf("the refusal returned the reaped session %+v", ended)
			case tc.want != "" && (ended == nil || ended.Status != tc.want):
				t.Errorf("the refusal returned session %+v, want status %s", ended, tc.want)
			}
			if got := read.cell.load(); got.empty() || mustDecode(t, got).Total != 1 {
				t.Errorf("usage after the refused calls: %+v", got)
			}
		})
	}
}

// TestSessionsThatDoNotEndKeepRecording: renewing a session, and ending or reaping another in
// its bucket, leaves its cell open and its calls counted.
func TestSessionsThatDoNotEndKeepRecording(t *testing.T) {
	s := newStore(t)
	ids := sameBucketIDs(s, 3)
	open(t, s, ids[0], "c", "u", time.Hour)
	open(t, s, ids[1], "c", "u", time.Hour)
	open(t, s, ids[2], "c", "u", time.Minute)
	for _, id := range ids {
		if _, err := s.RecordCall(id, Call{Server: "fs", At: t0}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Renew(ids[0], t0.Add(3*time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Close(ids[1], "done", t0); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Reap(t0.Add(30 * time.Minute)); err != nil || n != 1 {
		t.Fatalf("reaped %d: %v", n, err)
	}
	at := t0.Add(2 * time.Hour) // past the first expiry, inside the renewed one
	if _, err := s.RecordCall(ids[0], Call{Server: "fs", At: at}); err != nil {
		t.Fatalf("a call in the renewed session: %v", err)
	}
	sess, err := s.Get(ids[0])
	if err != nil || sess.Usage.Total != 2 {
		t.Fatalf("renewed session: %+v, %v", sess, err)
	}
	if sess, err := s.RecordCall(ids[1], Call{Server: "fs", At: t0}); err != ErrNotActive || sess == nil || sess.Status != StatusClosed {
		t.Errorf("a call in the closed session: %v, session %+v", err, sess)
	}
	if _, err := s.RecordCall(ids[2], Call{Server: "fs", At: t0}); err != ErrNotFound {
		t.Errorf("a call in the reaped session: %v, want ErrNotFound", err)
	}
}

// TestConcurrentCallsAndARevocation: calls recorded at once in one session (the store does not
// rely on the engine's per-session lock) are each counted once (a lost update fails it), and
// once a revocation returns no call in the session is recorded. Run with -race. (Calls in
// flight across the revocation's commit are TestEndingASessionRefusesCallsInFlight's.)
func TestConcurrentCallsAndARevocation(t *testing.T) {
	s := newStore(t)
	open(t, s, "a", "c", "u", time.Hour)
	const workers, calls = 4, 200
	var recorded [workers]int
	revoked := make(chan struct{})
	done := make(chan struct{})
	var afterRevoke [workers]int
	for w := range workers {
		go func() {
			defer func() { done <- struct{}{} }()
			for range calls {
				select {
				case <-revoked:
					if _, err := s.RecordCall("a", Call{Server: "fs", At: t0}); err != ErrNotActive {
						afterRevoke[w]++
					}
					continue
				default:
				}
				_, err := s.RecordCall("a", Call{Server: "fs", Tool: fmt.Sprint("t", w), At: t0})
				switch err {
				case nil:
					recorded[w]++
				case ErrNotActive:
				default:
					t.Error(err)
				}
			}
		}()
	}
	time.Sleep(time.Millisecond)
	if _, err := s.Revoke(RevokeFilter{SessionID: "a"}, "incident", t0); err != nil {
		t.Fatal(err)
	}
	close(revoked)
	for range workers {
		<-done
	}
	sess, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for w := range workers {
		total += recorded[w]
		if afterRevoke[w] != 0 {
			t.Errorf("worker %d: %d calls recorded after the revocation returned", w, afterRevoke[w])
		}
		if got := sess.Usage.ByTool()["fs"][fmt.Sprint("t", w)]; got != uint64(recorded[w]) {
			t.Errorf("worker %d: %d calls counted, %d recorded", w, got, recorded[w])
		}
	}
	if sess.Usage.Total != uint64(total) {
		t.Errorf("total %d, recorded %d", sess.Usage.Total, total)
	}
}

func mustDecode(t *testing.T, enc encUsage) Usage {
	t.Helper()
	u, err := decodeUsage(enc, true)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestARefusedCallWaitsForTheEndToCommit: an end marks the session's cell before its
// transaction commits, so a call can be refused while a snapshot still shows the session
// active. The refusal then returns the session as the end left it, for the caller to say why.
func TestARefusedCallWaitsForTheEndToCommit(t *testing.T) {
	s := newStore(t)
	open(t, s, "a", "c", "u", time.Hour)
	if _, err := s.RecordCall("a", Call{Server: "fs", At: t0}); err != nil {
		t.Fatal(err)
	}
	txn := s.db.Txn(true)
	cell, err := s.updateSessionTxn(txn, "a", func(sess *Session) bool { end(sess, StatusRevoked, "incident", t0); return true })
	if err != nil || cell == nil {
		t.Fatal(cell, err)
	}
	cell.end()
	type result struct {
		sess *Session
		err  error
	}
	got := make(chan result, 1)
	go func() {
		sess, err := s.RecordCall("a", Call{Server: "fs", At: t0})
		got <- result{sess, err}
	}()
	time.Sleep(20 * time.Millisecond) // the call reads the snapshot before the commit
	select {
	case r := <-got:
		t.Fatalf("the refused call returned before the end committed: %v, session %+v", r.err, r.sess)
	default:
	}
	txn.Commit()
	r := <-got
	if r.err != ErrNotActive || r.sess == nil || r.sess.Status != StatusRevoked || r.sess.EndReason != "incident" {
		t.Fatalf("refused call: %v, session %+v; want ErrNotActive and the revoked session", r.err, r.sess)
	}
}

// TestRecordCallInASessionAsRead: a decision records its call in the session it read, without
// looking it up again. A close committed since the read still refuses the call, and the
// session returned shows the close; a session read before its first call, or found active at
// another time than the call's, is looked up again.
func TestRecordCallInASessionAsRead(t *testing.T) {
	s := newStore(t)
	open(t, s, "a", "c", "u", time.Hour)
	fresh, err := s.GetLifecycle("a")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, _, err := s.RecordCallIn(fresh, Call{Server: "fs", Tool: "read", At: t0}); err != nil {
		t.Fatalf("first call, in a session read before it: %v", err)
	}
	read, err := s.GetLifecycle("a")
	if err != nil {
		t.Fatal(err)
	}
	v, head, _, err := s.RecordCallIn(read, Call{Server: "fs", Tool: "write", At: t0})
	if err != nil || head.Total != 2 {
		t.Fatalf("second call: %v, head %+v", err, head)
	}
	if _, now, decoded, err := s.GetUnlessUsage("a", v); err != nil || decoded || now != v {
		t.Errorf("the version the call stored is not the session's: %v, %v", decoded, err)
	}
	if _, _, _, err := s.RecordCallIn(read, Call{Server: "fs", At: t0.Add(2 * time.Hour)}); err != ErrNotActive {
		t.Errorf("a call after the expiry, in a session read active before it: %v, want ErrNotActive", err)
	}
	if _, err := s.Close("a", "done", t0); err != nil {
		t.Fatal(err)
	}
	_, _, ended, err := s.RecordCallIn(read, Call{Server: "fs", At: t0})
	if err != ErrNotActive || ended == nil || ended.Status != StatusClosed {
		t.Fatalf("a call in a session closed since it was read: %v, session %+v", err, ended)
	}
	if sess, err := s.Get("a"); err != nil || sess.Usage.Total != 2 {
		t.Errorf("usage after the refused calls: %+v, %v", sess, err)
	}
}

// TestMatchApprovalsSeesEachKind: the snapshot look-up a decision makes finds a pending
// approval of the request (which the decision then reuses without a write), a grant and a
// denial, each only while it is live.
func TestMatchApprovalsSeesEachKind(t *testing.T) {
	s := newStore(t)
	ask := func(id, key string) {
		t.Helper()
		a := &Approval{ID: id, Kind: KindOperation, RequestKey: key, Scope: ScopeOnce, GrantTTL: time.Hour, CreatedAt: t0, ExpiresAt: t0.Add(time.Minute)}
		if _, reused, err := s.RequestApproval(a, t0); err != nil || reused {
			t.Fatalf("request %s: reused %v, %v", id, reused, err)
		}
	}
	ask("apr_p", "k-pending")
	ask("apr_g", "k-granted")
	ask("apr_d", "k-denied")
	if _, err := s.ResolveApproval("apr_g", Resolution{Approve: true, By: "bob"}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ResolveApproval("apr_d", Resolution{Approve: false, By: "bob"}, t0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key                    string
		at                     time.Time
		pending, grant, denial string
	}{
		{"k-pending", t0, "apr_p", "", ""},
		{"k-pending", t0.Add(time.Minute), "", "", ""}, // lapsed
		{"k-granted", t0, "", "apr_g", ""},
		{"k-denied", t0, "", "", "apr_d"},
		{"k-none", t0, "", "", ""},
	} {
		v, err := s.MatchApprovals(tc.key, tc.at)
		if err != nil {
			t.Fatal(err)
		}
		id := func(a *Approval) string {
			if a == nil {
				return ""
			}
			return a.ID
		}
		if id(v.Pending) != tc.pending || id(v.Grant) != tc.grant || id(v.Denial) != tc.denial {
			t.Errorf("%s at %v: pending %q, grant %q, denial %q; want %q, %q, %q", tc.key, tc.at, id(v.Pending), id(v.Grant), id(v.Denial), tc.pending, tc.grant, tc.denial)
		}
	}
}

// TestUnchanged: a session read from the store stays usable (Unchanged) while its lifecycle
// is the one read, whatever else happens in its bucket and however many calls it records;
// a lifecycle write, even one that aborts, an end or reaping makes the reader look it up
// again, and a fresh read after the next committed write is usable again.
func TestUnchanged(t *testing.T) {
	s := newStore(t)
	ids := sameBucketIDs(s, 2)
	a, other := ids[0], ids[1]
	open(t, s, a, "c", "u", time.Hour)
	open(t, s, other, "c", "u", time.Hour)
	read := func() *Session {
		t.Helper()
		sess, err := s.GetLifecycle(a)
		if err != nil {
			t.Fatal(err)
		}
		return sess
	}
	unchanged := func(sess *Session, want bool, when string) {
		t.Helper()
		v, ok := s.Unchanged(sess)
		if ok != want {
			t.Fatalf("%s: Unchanged %v, want %v", when, ok, want)
		}
		if !ok {
			return
		}
		if _, now, _, err := s.GetUnlessUsage(a, v); err != nil || now != v {
			t.Fatalf("%s: Unchanged gave a version that is not the session's", when)
		}
	}
	beforeCalls := read()
	unchanged(beforeCalls, false, "a session without calls (no cell)")
	unchanged(nil, false, "no session")
	if _, err := s.RecordCall(a, Call{Server: "fs", At: t0}); err != nil {
		t.Fatal(err)
	}
	sess := read()
	unchanged(sess, true, "read after the first call")
	if _, err := s.RecordCall(a, Call{Server: "fs", At: t0}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Renew(other, t0.Add(2*time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	open(t, s, sameBucketIDs(s, 3)[2], "c", "u", time.Hour)
	unchanged(sess, true, "after a call, and another session's renewal and opening in the bucket")

	if _, err := s.Renew(a, t0.Add(2*time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	unchanged(sess, false, "after its renewal")
	sess = read()
	unchanged(sess, true, "read after its renewal")

	txn := s.db.Txn(true)
	if _, err := s.updateSessionTxn(txn, a, func(x *Session) bool { x.Renewals++; return true }); err != nil {
		t.Fatal(err)
	}
	txn.Abort()
	unchanged(sess, false, "after an aborted lifecycle write")
	unchanged(read(), false, "read after an aborted lifecycle write")
	if _, err := s.Renew(a, t0.Add(3*time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	sess = read()
	unchanged(sess, true, "read after the next committed write")

	if _, err := s.Close(a, "done", t0); err != nil {
		t.Fatal(err)
	}
	unchanged(sess, false, "after its close")

	// A session whose lifecycle was written before its first call: the cell starts at the
	// record's generation.
	open(t, s, "renewed-first", "c", "u", time.Hour)
	if _, err := s.Renew("renewed-first", t0.Add(2*time.Hour), t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordCall("renewed-first", Call{Server: "fs", At: t0}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.GetLifecycle("renewed-first"); r == nil {
		t.Fatal("renewed-first is gone")
	} else if _, ok := s.Unchanged(r); !ok {
		t.Error("a session renewed before its first call is not usable after it")
	}

	open(t, s, "b", "c", "u", time.Minute)
	if _, err := s.RecordCall("b", Call{Server: "fs", At: t0}); err != nil {
		t.Fatal(err)
	}
	b, _ := s.GetLifecycle("b")
	if _, ok := s.Unchanged(b); !ok {
		t.Fatal("a session read after its first call is not usable")
	}
	if n, err := s.Reap(t0.Add(time.Hour)); err != nil || n == 0 {
		t.Fatalf("reaped %d: %v", n, err)
	}
	if _, ok := s.Unchanged(b); ok {
		t.Error("a reaped session is still usable")
	}
}

// TestDetachedSessionOwnsItsStrings: a session kept for long (the engine keeps the last one it
// read) must not hold its bucket's text alive: Detached copies every string, and keeps what
// Unchanged and RecordCallIn need.
func TestDetachedSessionOwnsItsStrings(t *testing.T) {
	s := newStore(t)
	err := s.Open(&Session{ID: "a", Status: StatusActive, ClientID: "c", SubjectID: "u", Servers: []string{"fs", "github"}, Scopes: []string{"repo:read"},
		PolicyRevision: "rev-1", CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordCall("a", Call{Server: "fs", At: t0}); err != nil {
		t.Fatal(err)
	}
	read, err := s.Get("a")
	if err != nil {
		t.Fatal(err)
	}
	d := read.Detached()
	pairs := [][2]string{{read.ID, d.ID}, {read.ClientID, d.ClientID}, {read.SubjectID, d.SubjectID}, {read.PolicyRevision, d.PolicyRevision},
		{read.Servers[0], d.Servers[0]}, {read.Servers[1], d.Servers[1]}, {read.Scopes[0], d.Scopes[0]}}
	for _, p := range pairs {
		if p[0] != p[1] || unsafe.StringData(p[0]) == unsafe.StringData(p[1]) {
			t.Errorf("%q detached as %q, sharing its bytes: %v", p[0], p[1], unsafe.StringData(p[0]) == unsafe.StringData(p[1]))
		}
	}
	if d.Usage.Total != 0 || d.ExpiresAt != read.ExpiresAt || d.Status != read.Status {
		t.Errorf("detached: %+v", d)
	}
	if _, ok := s.Unchanged(d); !ok {
		t.Error("a detached session is not usable with Unchanged")
	}
	if _, head, _, err := s.RecordCallIn(d, Call{Server: "fs", At: t0}); err != nil || head.Total != 2 {
		t.Errorf("a call through the detached session: %+v, %v", head, err)
	}
}
