package telemetry_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/telemetry"
)

// A count of the store serves the scrapes that follow it for 20 times as long as it took, so
// scraping cannot keep a CPU busy counting; concurrent scrapes share one count.
func TestSessionCountsAreReusedForAWhile(t *testing.T) {
	m := telemetry.New()
	var calls atomic.Int32
	m.Sessions(func() (map[string]int, int) {
		calls.Add(1)
		time.Sleep(50 * time.Millisecond) // a large store: the window is at least 1 s
		return map[string]int{"active": int(calls.Load()), "expired": 50_000}, 0
	})
	scrape := func() string {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}

	start := time.Now()
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() { defer wg.Done(); scrape() }()
	}
	wg.Wait()
	if !strings.Contains(scrape(), `arbiter_sessions{status="active"} 1`) || calls.Load() != 1 {
		t.Fatalf("9 scrapes right after each other counted %d times, want once", calls.Load())
	}
	for calls.Load() == 1 && time.Since(start) < 10*time.Second {
		time.Sleep(50 * time.Millisecond)
		scrape()
	}
	if calls.Load() != 2 {
		t.Fatal("the count was never refreshed")
	}
	if waited := time.Since(start); waited < time.Second {
		t.Errorf("counted again after %s, before 20 times the 50 ms a count takes", waited)
	}
	if !strings.Contains(scrape(), `arbiter_sessions{status="active"} 2`) {
		t.Error("the refreshed count is not served")
	}
}

// TestSmallStoresAreCountedEveryScrape: a count of a few sessions is never reused, however long
// it took (a descheduled process), so a session opened since shows on the next scrape.
func TestSmallStoresAreCountedEveryScrape(t *testing.T) {
	m := telemetry.New()
	var calls atomic.Int32
	m.Sessions(func() (map[string]int, int) {
		calls.Add(1)
		time.Sleep(20 * time.Millisecond)
		return map[string]int{"active": int(calls.Load())}, 0
	})
	for want := 1; want <= 3; want++ {
		rec := httptest.NewRecorder()
		m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		if line := fmt.Sprintf(`arbiter_sessions{status="active"} %d`, want); !strings.Contains(rec.Body.String(), line) {
			t.Fatalf("scrape %d: no %s", want, line)
		}
	}
}

// BenchmarkPerDecision is the metrics' share of one Decide call: the decision's counters and
// histograms and the gRPC interceptor's.
func BenchmarkPerDecision(b *testing.B) {
	m := telemetry.New()
	rec := &engine.Record{Action: "tools/call", Outcome: engine.Allow, Duration: 30 * time.Microsecond, Eval: 5 * time.Microsecond}
	info := &grpc.UnaryServerInfo{FullMethod: "/arbiter.v1.DecisionService/Decide"}
	handler := func(context.Context, any) (any, error) { m.Observe(rec); return nil, nil }
	ctx := context.Background()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			_, _ = m.UnaryInterceptor(ctx, nil, info, handler)
		}
	})
}

// A gateway names the MCP method of each decision, and the method is the decisions' action
// label: past 64 distinct actions besides MCP's methods and Arbiter's own, new ones are
// counted as "other", so the series stay bounded, and the known ones keep their labels
// however many others came first.
func TestDecisionActionsAreBounded(t *testing.T) {
	m := telemetry.New()
	for i := range 100 {
		m.Observe(&engine.Record{Action: fmt.Sprintf("x/method-%03d", i), Outcome: engine.Deny, Duration: time.Microsecond})
	}
	m.Observe(&engine.Record{Action: "x/method-000", Outcome: engine.Allow, Duration: time.Microsecond})
	m.Observe(&engine.Record{Action: "tools/call", Outcome: engine.Allow, Duration: time.Microsecond})
	m.Observe(&engine.Record{Action: engine.ActionApprovalResolve, Outcome: engine.Allow, Duration: time.Microsecond})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	actions := map[string]string{}
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if !strings.HasPrefix(line, "arbiter_decisions_total{") {
			continue
		}
		labels, value, _ := strings.Cut(line, "} ")
		action := strings.TrimPrefix(labels, `arbiter_decisions_total{action="`)
		action, result, _ := strings.Cut(action, `",result="`)
		actions[action+" "+strings.TrimSuffix(result, `"`)] = value
	}
	if len(actions) != 68 || actions["other deny"] != "36" || actions["x/method-000 allow"] != "1" || actions["x/method-063 deny"] != "1" ||
		actions["tools/call allow"] != "1" || actions[engine.ActionApprovalResolve+" allow"] != "1" {
		t.Errorf("%d series (want 64 actions, other, one allow and two known actions): %v", len(actions), actions)
	}
}
