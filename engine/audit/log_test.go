package audit_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/fstest"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/audit"
	"github.com/arbiter-mcp/arbiter/engine/state"
)

func stateFilter(id string) state.RevokeFilter { return state.RevokeFilter{SessionID: id} }

// syncBuffer is a sink safe to read while the writer goroutine writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

const allowAll = "package mcp\n\ndecision := {\"result\": \"allow\"}\n"

func engineWith(t testing.TB, rec engine.Recorder) *engine.Engine {
	t.Helper()
	p, err := engine.LoadPolicyFS(fstest.MapFS{"p.rego": {Data: []byte(allowAll)}}, ".", "test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(context.Background(), engine.Config{Recorder: rec}, p)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func call(session string) *engine.Request {
	return &engine.Request{
		SessionID:  session,
		Client:     engine.Client{ID: "ide-agent", Name: "IDE"},
		Subject:    engine.Subject{ID: "alice"},
		Server:     engine.Server{ID: "github", Resource: "https://mcp.github.example.com"},
		Credential: engine.Credential{Scopes: []string{"repo"}, Audience: []string{"https://mcp.github.example.com"}, ClientID: "ide"},
		Operation: engine.Operation{Method: "tools/call", Tool: "create_issue",
			Arguments: map[string]any{"title": "x", "token": "s3cret", "auth": map[string]any{"password": "hunter2"}}},
	}
}

func TestRecordsAreWrittenWithoutRawArguments(t *testing.T) {
	sink := &syncBuffer{}
	log, err := audit.New(audit.Config{Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	e := engineWith(t, log)
	_, info, err := e.OpenSession(context.Background(), &engine.OpenRequest{Client: engine.Client{ID: "ide-agent"}, Subject: engine.Subject{ID: "alice"}})
	if err != nil {
		t.Fatal(err)
	}
	d, err := e.Decide(context.Background(), call(info.Session.ID))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.RevokeSessions(context.Background(), stateFilter(info.Session.ID), "done", "ops"); err != nil {
		t.Fatal(err)
	}
	if err := log.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := sink.lines(t)
	if len(lines) != 3 {
		t.Fatalf("%d lines, want open, decide and revoke", len(lines))
	}
	l := lines[1]
	for key, want := range map[string]any{
		"decision_id": d.ID, "action": "tools/call", "result": "allow", "tool": "create_issue", "subject_id": "alice",
	} {
		if l[key] != want {
			t.Errorf("%s = %v, want %v", key, l[key], want)
		}
	}
	if l["client"].(map[string]any)["name"] != "IDE" || l["server"].(map[string]any)["resource"] != "https://mcp.github.example.com" ||
		l["session"].(map[string]any)["status"] != "active" || l["credential"].(map[string]any)["client_id"] != "ide" ||
		l["policy_revision"].(map[string]any)["test"] == nil || !strings.HasPrefix(l["arguments_digest"].(string), "sha256:") {
		t.Errorf("record %v", l)
	}
	raw, _ := json.Marshal(lines)
	if strings.Contains(string(raw), "s3cret") || strings.Contains(string(raw), "hunter2") {
		t.Fatal("raw arguments reached the log without being configured")
	}
	if lines[2]["action"] != "sessions/revoke" || lines[2]["actor"] != "ops" || lines[2]["sessions_affected"].([]any)[0] != info.Session.ID {
		t.Errorf("revocation record %v", lines[2])
	}
}

func TestArgumentsAreMasked(t *testing.T) {
	sink := &syncBuffer{}
	log, err := audit.New(audit.Config{Sink: sink, Arguments: true, Mask: []string{"/token", "/auth/password", "/missing/x"}})
	if err != nil {
		t.Fatal(err)
	}
	req := call("")
	if _, err := engineWith(t, log).Decide(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	log.Close(context.Background())
	args := sink.lines(t)[0]["arguments"].(map[string]any)
	if args["title"] != "x" || args["token"] != audit.Masked || args["auth"].(map[string]any)["password"] != audit.Masked {
		t.Fatalf("masked arguments %v", args)
	}
	if req.Operation.Arguments["token"] != "s3cret" {
		t.Fatal("masking changed the request's own arguments")
	}
	if _, err := audit.New(audit.Config{Mask: []string{"token"}}); err == nil {
		t.Fatal("a mask that is not a JSON pointer must be refused")
	}
}

// blockingSink holds every write until released.
type blockingSink struct{ release chan struct{} }

func (b blockingSink) Write(p []byte) (int, error) { <-b.release; return len(p), nil }

func TestFullQueueFailsClosed(t *testing.T) {
	for _, mode := range []audit.WhenFull{audit.Deny, audit.Block} {
		t.Run(string(mode), func(t *testing.T) {
			sink := blockingSink{release: make(chan struct{})}
			log, err := audit.New(audit.Config{Sink: sink, Queue: 2, WhenFull: mode, BlockTimeout: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			e := engineWith(t, log)
			_, info, err := e.OpenSession(context.Background(), &engine.OpenRequest{Client: engine.Client{ID: "ide-agent"}, Subject: engine.Subject{ID: "alice"}})
			if err != nil {
				t.Fatal(err)
			}
			// The sink is stuck: keep deciding until the queue (and the writer's buffer) is full.
			allowed := 0
			var last engine.Decision
			for range 2000 {
				last, err = e.Decide(context.Background(), call(info.Session.ID))
				if err != nil {
					t.Fatal(err)
				}
				if last.Outcome != engine.Allow {
					break
				}
				allowed++
			}
			if last.Outcome != engine.Deny || last.Reasons[0].Code != engine.ReasonDecisionLogUnavailable {
				t.Fatalf("decision with the log full: %+v", last)
			}
			if log.Full() == 0 {
				t.Fatal("decisions refused for a full log must be counted")
			}
			got, _ := e.GetSession(info.Session.ID)
			if got.Usage.Total != uint64(allowed) {
				t.Fatalf("%d calls allowed but %d recorded in the session: a refused decision moved it", allowed, got.Usage.Total)
			}
			close(sink.release)
			log.Close(context.Background())
		})
	}
	if _, err := audit.New(audit.Config{WhenFull: "drop"}); err == nil {
		t.Fatal("an unknown queue policy must be refused")
	}
}

// TestNoRecordLostOnCleanStop: everything reserved before Close reaches the sink.
func TestNoRecordLostOnCleanStop(t *testing.T) {
	sink := &syncBuffer{}
	log, err := audit.New(audit.Config{Sink: sink, Queue: 64})
	if err != nil {
		t.Fatal(err)
	}
	e := engineWith(t, log)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 250 {
				if _, err := e.Decide(context.Background(), call("")); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if err := log.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := len(sink.lines(t)); n != 2000 {
		t.Fatalf("%d records written, want all 2000", n)
	}
}

type failingSink struct{}

func (failingSink) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteFailuresAreCounted(t *testing.T) {
	var seen []error
	var mu sync.Mutex
	log, _ := audit.New(audit.Config{Sink: failingSink{}, OnWriteError: func(err error) { mu.Lock(); seen = append(seen, err); mu.Unlock() }})
	if _, err := engineWith(t, log).Decide(context.Background(), call("")); err != nil {
		t.Fatal(err)
	}
	log.Close(context.Background())
	if log.WriteFailures() == 0 || len(seen) == 0 {
		t.Fatal("a failed write must be counted and reported")
	}
}

// maskPolicy masks the argument "token" through the policy, as OPA's system.log.mask does.
const maskPolicy = `package mcp

decision := {"result": "allow"}
`

const systemLogMask = `package system.log

mask contains "/input/operation/arguments/token" if input.input.operation.tool == "create_issue"

mask contains "/input/client/id"
`

func TestPolicyDrivenMask(t *testing.T) {
	sink := &syncBuffer{}
	var e *engine.Engine
	log, err := audit.New(audit.Config{Sink: sink, Arguments: true, Mask: []string{"/auth/password"},
		PolicyMask: func(ctx context.Context, rec *engine.Record) ([]string, error) { return e.LogMask(ctx, rec) }})
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadPolicyFS(fstest.MapFS{"p.rego": {Data: []byte(maskPolicy)}, "mask.rego": {Data: []byte(systemLogMask)}}, ".", "masked")
	if err != nil {
		t.Fatal(err)
	}
	e, err = engine.New(context.Background(), engine.Config{Recorder: log}, p)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Decide(context.Background(), call("")); err != nil {
		t.Fatal(err)
	}
	log.Close(context.Background())
	args := sink.lines(t)[0]["arguments"].(map[string]any)
	if args["token"] != audit.Masked || args["auth"].(map[string]any)["password"] != audit.Masked || args["title"] != "x" {
		t.Fatalf("arguments after the policy's mask and the configured one: %v", args)
	}
}

// countingSink counts the writes that reach it (the log's flushes) beside the lines.
type countingSink struct {
	syncBuffer
	writes atomic.Int64
}

func (c *countingSink) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.syncBuffer.Write(p)
}

func TestRecordsAreWrittenInBatches(t *testing.T) {
	sink := &countingSink{}
	// An interval far longer than the test: the batching below cannot depend on timing.
	log, err := audit.New(audit.Config{Sink: sink, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e := engineWith(t, log)
	decide := func() {
		t.Helper()
		if _, err := e.Decide(context.Background(), call("")); err != nil {
			t.Fatal(err)
		}
	}

	// A lone record on an idle log is written at once, not after the interval.
	decide()
	deadline := time.Now().Add(10 * time.Second)
	for sink.writes.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the first record was not written within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	// Records that follow within the interval wait, and go out together.
	for range 9 {
		decide()
	}
	if n := sink.writes.Load(); n != 1 {
		t.Fatalf("%d writes before the interval passed, want 1", n)
	}
	// Close does not wait out the interval: the rest is written in one more write.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := log.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if n := sink.writes.Load(); n != 2 {
		t.Fatalf("%d writes, want 2 (the first record, then the nine queued behind the pause)", n)
	}
	if n := len(sink.lines(t)); n != 10 {
		t.Fatalf("%d records written, want 10", n)
	}
	if _, err := audit.New(audit.Config{FlushInterval: -time.Second}); err == nil {
		t.Fatal("a negative flush interval was accepted")
	}
}

// A small queue and a long pause: the pause ends once half the queue is taken, so decisions
// neither wait for room nor are denied for it, and closing twice is harmless.
func TestThePauseNeverFillsTheQueue(t *testing.T) {
	sink := &countingSink{}
	log, err := audit.New(audit.Config{Sink: sink, Queue: 4, WhenFull: audit.Block, BlockTimeout: 10 * time.Second, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	e := engineWith(t, log)
	start := time.Now()
	for i := range 200 {
		d, err := e.Decide(context.Background(), call(""))
		if err != nil || d.Outcome != engine.Allow {
			t.Fatalf("decision %d: %+v %v", i, d, err)
		}
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("200 decisions took %s: they waited for room in the queue", took)
	}
	if log.Full() != 0 {
		t.Errorf("%d decisions found the queue full", log.Full())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := log.Close(ctx); err != nil {
		t.Fatal(err)
	}
	if err := log.Close(ctx); err != nil {
		t.Fatalf("closing again: %v", err)
	}
	if n := len(sink.lines(t)); n != 200 {
		t.Fatalf("%d records written, want 200", n)
	}
}

// BenchmarkDecideLogged is a decision with its record written by the log (to io.Discard): the
// log gives each record back to the engine once its line is written, so a decision allocates
// no record of its own in the steady state.
func BenchmarkDecideLogged(b *testing.B) {
	log, err := audit.New(audit.Config{Sink: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	defer log.Close(context.Background())
	e := engineWith(b, log)
	ctx, req := context.Background(), call("")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Decide(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// A require_approval decision's record carries the digest its approval is bound to, and the
// log writes that one: the record and the approval can be matched.
func TestApprovalRecordCarriesTheApprovalsDigest(t *testing.T) {
	sink := &syncBuffer{}
	log, err := audit.New(audit.Config{Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	p, err := engine.LoadPolicyFS(fstest.MapFS{"p.rego": {Data: []byte("package mcp\n\ndecision := {\"result\": \"require_approval\", \"reasons\": [{\"code\": \"ask\", \"message\": \"ask\"}]}\n")}}, ".", "test")
	if err != nil {
		t.Fatal(err)
	}
	e, err := engine.New(context.Background(), engine.Config{Recorder: log}, p)
	if err != nil {
		t.Fatal(err)
	}
	req := call("")
	d, err := e.Decide(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if d.Outcome != engine.RequireApproval || d.ApprovalID == "" {
		t.Fatalf("decision %s, approval %q; want require_approval with an approval", d.Outcome, d.ApprovalID)
	}
	a, err := e.GetApproval(d.ApprovalID)
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := engine.ArgumentsDigest(req.Operation.Arguments)
	if err != nil {
		t.Fatal(err)
	}
	log.Close(context.Background())
	lines := sink.lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	if got := lines[0]["arguments_digest"]; got != want || a.Approval.ArgumentsDigest != want {
		t.Errorf("logged digest %v, approval's %q, want both %q", got, a.Approval.ArgumentsDigest, want)
	}
}
