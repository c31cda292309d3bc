// Package audit is Arbiter's decision log: one JSON line per decision, written off the hot
// path through a bounded queue. A decision reserves its place in the queue before it is
// answered, so no decision is answered unrecorded and no record is dropped silently.
package audit

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
)

// WhenFull says what a decision does when the queue is full.
type WhenFull string

// Queue policies.
const (
	// Block waits up to BlockTimeout for room, then fails closed.
	Block WhenFull = "block"
	// Deny fails closed at once.
	Deny WhenFull = "deny"
)

// DefaultFlushInterval is Config.FlushInterval's default.
const DefaultFlushInterval = 5 * time.Millisecond

// ErrFull is returned by Reserve when the queue has no room in time.
var ErrFull = errors.New("decision log queue is full")

// Config tunes a Log.
type Config struct {
	// Sink receives the JSON lines; nil records nothing but still observes.
	Sink io.Writer
	// Queue is how many records may wait to be written (default 4096).
	Queue int
	// WhenFull is Block (default) or Deny.
	WhenFull WhenFull
	// BlockTimeout bounds the wait under Block (default 100ms).
	BlockTimeout time.Duration
	// Arguments logs the raw tool arguments, masked by Mask; off by default, when only their
	// digest is logged.
	Arguments bool
	// Mask lists JSON pointers into the arguments to replace with "**masked**", such as
	// "/password" or "/headers/authorization".
	Mask []string
	// PolicyMask, when set, adds the policy's masks (engine.LogMask) to Mask for each record;
	// it runs on the writer's goroutine. If it fails, the arguments are not logged at all. It
	// must not keep rec: the record is given back to the engine once its line is written.
	PolicyMask func(context.Context, *engine.Record) ([]string, error)
	// Observe sees every record as it is committed, on the caller's goroutine (metrics). It
	// must not keep rec: the record is given back to the engine once its line is written.
	Observe func(*engine.Record)
	// OnWriteError is told of each failed write.
	OnWriteError func(error)
	// FlushInterval is how long the writer waits, from the start of one batch of records,
	// before it takes the next (default 5ms): records committed meanwhile queue and go out
	// together, in one write unless they fill the 64 KiB buffer. A record reaches Sink at
	// most about FlushInterval after it was committed; the wait ends early once half the
	// queue is taken, so the queue never fills because of it. A lone record on an idle log
	// is written at once.
	FlushInterval time.Duration
}

// Log is the decision log. It implements engine.Recorder.
type Log struct {
	cfg     Config
	slots   chan struct{}
	records chan *engine.Record
	done    chan struct{}
	wake    chan struct{} // the queue is half full, or closed: the writer stops pausing
	closing sync.Once
	mask    [][]string
	// canonical is the writer's buffer for the canonical JSON of arguments (appendLine).
	canonical []byte

	full   atomic.Uint64
	failed atomic.Uint64
}

var _ engine.Recorder = (*Log)(nil)

// New starts a log writing to cfg.Sink. Close flushes it.
func New(cfg Config) (*Log, error) {
	if cfg.Queue <= 0 {
		cfg.Queue = 4096
	}
	if cfg.WhenFull == "" {
		cfg.WhenFull = Block
	}
	if cfg.WhenFull != Block && cfg.WhenFull != Deny {
		return nil, fmt.Errorf("when full: %q is neither block nor deny", cfg.WhenFull)
	}
	if cfg.BlockTimeout <= 0 {
		cfg.BlockTimeout = 100 * time.Millisecond
	}
	if cfg.FlushInterval < 0 {
		return nil, fmt.Errorf("flush interval %s is negative", cfg.FlushInterval)
	}
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = DefaultFlushInterval
	}
	l := &Log{
		cfg:     cfg,
		slots:   make(chan struct{}, cfg.Queue),
		records: make(chan *engine.Record, cfg.Queue),
		done:    make(chan struct{}),
		wake:    make(chan struct{}, 1),
	}
	for _, p := range cfg.Mask {
		segs, err := parsePointer(p)
		if err != nil {
			return nil, err
		}
		l.mask = append(l.mask, segs)
	}
	go l.run()
	return l, nil
}

// Reserve takes room for one record, per the WhenFull policy.
func (l *Log) Reserve(ctx context.Context) (engine.Slot, error) {
	select {
	case l.slots <- struct{}{}:
		return slot{l}, nil
	default:
	}
	if l.cfg.WhenFull == Deny {
		l.full.Add(1)
		return nil, ErrFull
	}
	t := time.NewTimer(l.cfg.BlockTimeout)
	defer t.Stop()
	select {
	case l.slots <- struct{}{}:
		return slot{l}, nil
	case <-t.C:
	case <-ctx.Done():
	}
	l.full.Add(1)
	return nil, ErrFull
}

type slot struct{ l *Log }

// Commit queues rec in the room reserved for it; it never blocks.
func (s slot) Commit(rec *engine.Record) {
	if rec == nil {
		<-s.l.slots
		return
	}
	if s.l.cfg.Observe != nil {
		s.l.cfg.Observe(rec)
	}
	s.l.records <- rec
	if 2*len(s.l.records) >= cap(s.l.records) {
		s.l.nudge()
	}
}

// nudge ends the writer's pause between batches, if it is pausing or about to.
func (l *Log) nudge() {
	select {
	case l.wake <- struct{}{}:
	default: // a nudge is already waiting
	}
}

// Depth is how many records wait to be written.
func (l *Log) Depth() int { return len(l.records) }

// Full is how many decisions found the queue full (and were denied).
func (l *Log) Full() uint64 { return l.full.Load() }

// WriteFailures is how many records could not be written.
func (l *Log) WriteFailures() uint64 { return l.failed.Load() }

// Close stops taking records, writes every queued one and returns when done or when ctx
// ends. Callers must not Reserve after Close.
func (l *Log) Close(ctx context.Context) error {
	l.closing.Do(func() {
		close(l.records)
		l.nudge()
	})
	select {
	case <-l.done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("decision log: %d records not flushed: %w", len(l.records), ctx.Err())
	}
}

// run writes records in batches: it wakes for the first record of a batch, writes it and every
// record queued behind it with one flush, then lets FlushInterval pass from the start of the
// batch before it waits again. An idle log writes a lone record at once; a busy one wakes and
// writes (one syscall) about once per interval instead of once per decision, which costs
// decisions on the same CPUs far less (see BENCHMARKS.md, "The decision log's writer").
func (l *Log) run() {
	defer close(l.done)
	var w *bufio.Writer
	if l.cfg.Sink != nil {
		w = bufio.NewWriterSize(l.cfg.Sink, 64<<10)
	}
	var line []byte
	open := true
	for open {
		rec, ok := <-l.records
		if !ok {
			break
		}
		start := time.Now()
		for ok {
			if w != nil {
				line = l.encode(line[:0], rec)
				if _, err := w.Write(line); err != nil {
					l.writeFailed(err)
				}
			}
			engine.ReleaseRecord(rec) // its line holds copies
			<-l.slots
			select {
			case rec, ok = <-l.records:
				open = ok
			default:
				ok = false
			}
		}
		if w != nil {
			if err := w.Flush(); err != nil {
				l.writeFailed(err)
			}
		}
		if d := l.cfg.FlushInterval - time.Since(start); open && d > 0 {
			l.pause(d)
		}
	}
	if w != nil {
		if err := w.Flush(); err != nil {
			l.writeFailed(err)
		}
	}
	if s, ok := l.cfg.Sink.(interface{ Sync() error }); ok {
		s.Sync()
	}
}

// pause waits d, or less when Close asks for the queue to be written or half the queue is
// taken (see nudge).
func (l *Log) pause(d time.Duration) {
	if 2*len(l.records) >= cap(l.records) {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-l.wake:
	}
}

func (l *Log) writeFailed(err error) {
	l.failed.Add(1)
	if l.cfg.OnWriteError != nil {
		l.cfg.OnWriteError(err)
	}
}

// Line is one decision log record as written. Its fields are documented in the README.
type Line struct {
	DecisionID      string            `json:"decision_id"`
	Time            string            `json:"time"`
	Action          string            `json:"action"`
	Result          string            `json:"result"`
	Reasons         []string          `json:"reasons"`
	Client          LineClient        `json:"client"`
	SubjectID       string            `json:"subject_id,omitempty"`
	Server          *LineServer       `json:"server,omitempty"`
	Session         *LineSession      `json:"session,omitempty"`
	Credential      *LineCredential   `json:"credential,omitempty"`
	Tool            string            `json:"tool,omitempty"`
	ArgumentsDigest string            `json:"arguments_digest,omitempty"`
	Arguments       map[string]any    `json:"arguments,omitempty"`
	ApprovalID      string            `json:"approval_id,omitempty"`
	PolicyRevision  map[string]string `json:"policy_revision"`
	Gateway         string            `json:"gateway,omitempty"`
	EvalNanos       int64             `json:"eval_ns"`
	DurationNanos   int64             `json:"duration_ns"`
	Visible         int               `json:"tools_visible,omitempty"`
	Hidden          int               `json:"tools_hidden,omitempty"`
	Actor           string            `json:"actor,omitempty"`
	ActorVia        string            `json:"actor_via,omitempty"`
	Note            string            `json:"note,omitempty"`
	Affected        []string          `json:"sessions_affected,omitempty"`
	ApprovalWaitMs  int64             `json:"approval_wait_ms,omitempty"`
}

// LineClient is the client of a record.
type LineClient struct {
	ID   string `json:"id,omitempty"`
	Name string `json:"name,omitempty"`
}

// LineServer is the server of a record.
type LineServer struct {
	ID       string `json:"id"`
	Resource string `json:"resource,omitempty"`
}

// LineSession is the session of a record.
type LineSession struct {
	ID     string `json:"id"`
	Status string `json:"status,omitempty"`
}

// LineCredential holds the credential claims of a record.
type LineCredential struct {
	Scopes   []string `json:"scopes"`
	Audience []string `json:"audience"`
	ClientID string   `json:"client_id,omitempty"`
}

// Revisions splits a combined policy revision ("catalog@42,policy@7") per bundle.
func Revisions(rev string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(rev, ",") {
		name, r, ok := strings.Cut(part, "@")
		if !ok {
			name, r = "policy", part
		}
		if name != "" || r != "" {
			out[name] = r
		}
	}
	return out
}

// encode appends rec as one JSON line (see appendLine).
func (l *Log) encode(buf []byte, rec *engine.Record) []byte { return l.appendLine(buf, rec) }

// lineOf is rec as a Line: what encode writes, as a value (the reference its encoding is held
// to in the tests).
func (l *Log) lineOf(rec *engine.Record) Line {
	line := Line{
		DecisionID:     rec.DecisionID,
		Time:           rec.At.UTC().Format(time.RFC3339Nano),
		Action:         rec.Action,
		Result:         string(rec.Outcome),
		Reasons:        make([]string, len(rec.Reasons)),
		Client:         LineClient{ID: rec.Client.ID, Name: rec.Client.Name},
		SubjectID:      rec.SubjectID,
		Tool:           rec.Tool,
		ApprovalID:     rec.ApprovalID,
		PolicyRevision: Revisions(rec.PolicyRevision),
		Gateway:        rec.Gateway,
		EvalNanos:      rec.Eval.Nanoseconds(),
		DurationNanos:  rec.Duration.Nanoseconds(),
		Visible:        rec.Visible,
		Hidden:         rec.Hidden,
		Actor:          rec.Actor,
		ActorVia:       rec.ActorVia,
		Note:           rec.Note,
		Affected:       rec.Affected,
		ApprovalWaitMs: rec.ApprovalAge.Milliseconds(),
	}
	for i, r := range rec.Reasons {
		line.Reasons[i] = r.Code
	}
	if rec.Server.ID != "" {
		line.Server = &LineServer{ID: rec.Server.ID, Resource: rec.Server.Resource}
	}
	if rec.SessionID != "" {
		line.Session = &LineSession{ID: rec.SessionID, Status: rec.SessionStatus}
	}
	if c := rec.Credential; len(c.Scopes)+len(c.Audience) > 0 || c.ClientID != "" {
		line.Credential = &LineCredential{Scopes: nonNil(c.Scopes), Audience: nonNil(c.Audience), ClientID: c.ClientID}
	}
	if rec.Action == "tools/call" || rec.Arguments != nil {
		// The digest approvals are bound to, so a record and its approval can be matched.
		if line.ArgumentsDigest = rec.ArgumentsDigest; line.ArgumentsDigest == "" {
			_, line.ArgumentsDigest, _ = engine.ArgumentsDigest(rec.Arguments)
		}
		if l.cfg.Arguments {
			line.Arguments = l.masked(rec)
		}
	}
	return line
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
