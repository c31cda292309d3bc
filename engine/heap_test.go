package engine_test

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/state"
)

// BenchmarkSessionHeap grows an engine's store to b.N sessions and reports the live heap and
// the heap objects each session costs, after a collection (the collector marks every one of
// those objects on each cycle), and how long a forced collection then takes. The figure of
// issue 7 is the idle case at a million sessions:
//
//	go test -run '^$' -bench 'BenchmarkSessionHeap/idle' -benchtime 1000000x ./engine/
//
// idle: sessions stored as OpenSession stores them (through the engine's store, without a
// policy evaluation each, as the benchmark harness's library server grows its store), every
// string a fresh copy as decoding a request makes it. decided: each session has then made one
// allowed Decide, so it holds encoded usage with one history entry, and the engine's input
// cache holds the terms of the last Config.InputCacheSessions sessions (slow: one policy
// evaluation per session; use -benchtime 20000x). full: 32 allowed calls each, a full history
// (use -benchtime 5000x).
func BenchmarkSessionHeap(b *testing.B) {
	b.Run("idle", func(b *testing.B) { benchSessionHeap(b, 0) })
	b.Run("decided", func(b *testing.B) { benchSessionHeap(b, 1) })
	b.Run("full", func(b *testing.B) { benchSessionHeap(b, 32) })
}

func benchSessionHeap(b *testing.B, decisions int) {
	ctx := context.Background()
	// A loaded machine must not turn a slow evaluation into a deny.
	e, err := engine.New(ctx, engine.Config{EvalTimeout: time.Minute}, benchPolicy(b))
	if err != nil {
		b.Fatal(err)
	}
	store := e.Store()
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	now := time.Now()
	b.ResetTimer()
	for i := range b.N {
		sess := heapSession(i, now, e.Revision())
		if err := store.Open(sess, nil); err != nil {
			b.Fatal(err)
		}
		for range decisions {
			req := benchRequest(sess.ID)
			req.Client.ID, req.Subject.ID = sess.ClientID, sess.SubjectID
			// Fresh strings, as decoding each request makes them.
			req.Server.ID, req.Operation.Tool = strings.Clone(req.Server.ID), strings.Clone(req.Operation.Tool)
			req.Operation.Method = strings.Clone(req.Operation.Method)
			if d, err := e.Decide(ctx, req); err != nil || d.Outcome != engine.Allow {
				b.Fatalf("decision in session %d: %+v %v", i, d, err)
			}
		}
	}
	b.StopTimer()
	runtime.GC()
	runtime.ReadMemStats(&after)
	if got := store.Count(); got != b.N {
		b.Fatalf("store holds %d sessions, want %d", got, b.N)
	}
	n := float64(b.N)
	b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/n, "B/session")
	b.ReportMetric((float64(after.HeapObjects)-float64(before.HeapObjects))/n, "objects/session")
	// What a collection costs with the store this size: the median of three forced cycles
	// (the collector marks the whole live heap each time).
	var cycles [3]time.Duration
	for i := range cycles {
		start := time.Now()
		runtime.GC()
		cycles[i] = time.Since(start)
	}
	slices.Sort(cycles[:])
	b.ReportMetric(float64(cycles[1].Microseconds())/1000, "ms/GC")
	runtime.KeepAlive(e)
}

var heapIDEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// heapSession is session i as OpenSession builds it: an id of the engine's shape, one of a
// thousand clients, a subject of its own, bound to two servers.
func heapSession(i int, now time.Time, revision string) *state.Session {
	var b [20]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	return &state.Session{
		ID:             "ses_" + heapIDEncoding.EncodeToString(b[:]),
		Status:         state.StatusActive,
		ClientID:       fmt.Sprintf("https://agent-%04d.example.com/.well-known/client.json", i%1000),
		SubjectID:      fmt.Sprintf("user-%07d@example.com", i),
		Servers:        []string{strings.Clone("github"), strings.Clone("filesystem")},
		CreatedAt:      now,
		ExpiresAt:      now.Add(time.Hour),
		PolicyRevision: revision,
	}
}
