package bench_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage/inmem"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/test/bench"
)

// TestMain lets the harness re-execute this test binary as its servers under test.
func TestMain(m *testing.M) {
	bench.RunChildIfRequested()
	os.Exit(m.Run())
}

// smokeConfig is a harness run of every scenario in seconds: figures that mean nothing, for
// the tests that check the harness works.
func smokeConfig(t *testing.T) bench.Config {
	cfg := bench.Config{
		Duration:          300 * time.Millisecond,
		Warmup:            100 * time.Millisecond,
		Rounds:            1,
		Concurrency:       4,
		Conns:             1,
		Rate:              100,
		ArbiterRate:       100,
		MaxInFlight:       16,
		LoadSessions:      4,
		ScaleSessions:     []int{50, 1000},
		ScaleDuration:     300 * time.Millisecond,
		SwapDuration:      900 * time.Millisecond,
		SwapInterval:      300 * time.Millisecond,
		InProcessDuration: 100 * time.Millisecond,
		InProcessSessions: 2,
		FilterTools:       25,
		Log:               testLog{t},
	}
	if raceEnabled {
		// Under the race detector the Arbiter server is this race-built test binary, so the
		// engine and service are race-checked under load; building the binary is left to
		// the runs without it.
		cfg.Arbiter = bench.ArbiterLib
	}
	return cfg
}

// runHarness runs the harness on smokeConfig as edit changes it, within two minutes; under
// -short it skips the test, as the harness starts servers in child processes.
func runHarness(t *testing.T, edit func(*bench.Config)) *bench.Report {
	t.Helper()
	if testing.Short() {
		t.Skip("starts servers in child processes")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := smokeConfig(t)
	edit(&cfg)
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// TestHarnessWithAPolicyDir runs the comparison and the swap scenario on the small policy in
// testdata (what `arbiter-bench -policy-dir` does): the harness's own engine, the Arbiter
// server and its revisions all decide with that policy, or the server's answers would count
// as failed decisions (the default policy asks approval for fs_delete_file; this one denies it).
func TestHarnessWithAPolicyDir(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("testdata", "small-policy"))
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(bench.PolicyDirEnv, dir)
	rep := runHarness(t, func(cfg *bench.Config) {
		cfg.Scenarios = []string{bench.ScenarioCompare, bench.ScenarioSwap}
		cfg.SkipOPA = true
		cfg.PolicyDir = dir
	})
	for k, tpl := range bench.Mix {
		if tpl.Name == "fs_delete_file" {
			if got := rep.Calibration.Want[k]; got != bench.OutcomeDeny || !slices.Contains(rep.Calibration.Reasons[k], "tool_not_allowed") {
				t.Errorf("fs_delete_file: the harness's engine answers %v %v, not the small policy's deny", got, rep.Calibration.Reasons[k])
			}
		}
	}
	for name, s := range map[string]*bench.Stats{"closed arbiter": rep.Compare.Arbiter[0], "swap swapping": rep.Swap.Swapping} {
		if s.OK() == 0 || s.ErrorCount() != 0 || s.Unexpected != 0 {
			t.Errorf("%s: %d ok, %d errors (%s), %d failed decisions (%s)", name, s.OK(), s.ErrorCount(), s.ErrorSummary(), s.Unexpected, s.UnexpectedSummary())
		}
	}
	if rep.Swap.Activations == 0 || len(rep.Swap.ActivationErrors) > 0 {
		t.Errorf("swap: %d activations, errors %v", rep.Swap.Activations, rep.Swap.ActivationErrors)
	}
	var out strings.Builder
	if err := rep.WriteMarkdown(&out, ""); err != nil {
		t.Fatal(err)
	}
	if want := "- policy: the one in " + dir + " (`-policy-dir`)"; !strings.Contains(out.String(), want) {
		t.Errorf("the report does not say %q", want)
	}
}

// TestHarnessSmoke runs every scenario of the harness for a moment, so that the harness keeps
// working: each server answers, nothing fails, and the report carries every section. The
// figures mean nothing at these durations; BENCHMARKS.md has the real ones.
func TestHarnessSmoke(t *testing.T) {
	rep := runHarness(t, func(cfg *bench.Config) {
		// Building OPA takes minutes on a fresh machine: the smoke test uses the harness's
		// cached build when an earlier run made one, and otherwise an in-process stand-in for
		// OPA's REST API, which still exercises the HTTP mode end to end.
		if v, err := bench.OPAVersion(); err == nil {
			if bin, err := bench.OPACachePath(v); err == nil {
				if _, err := os.Stat(bin); err == nil {
					cfg.OPA = bin
				}
			}
		}
		if cfg.OPA == "" {
			srv := fakeOPA(t)
			cfg.OPAAddr = strings.TrimPrefix(srv.URL, "http://")
			t.Log("no cached opa build: using an in-process stand-in for OPA's REST API")
		}
	})

	check := func(name string, s *bench.Stats, wantChecked bool) {
		t.Helper()
		if s == nil {
			t.Errorf("%s: not measured", name)
			return
		}
		if s.OK() == 0 || s.ErrorCount() != 0 || s.Unexpected != 0 {
			t.Errorf("%s: %d ok, %d errors (%s), %d failed decisions (%s)", name, s.OK(), s.ErrorCount(), s.ErrorSummary(), s.Unexpected, s.UnexpectedSummary())
		}
		if wantChecked && s.Outcomes[bench.OutcomeOther] != 0 {
			t.Errorf("%s: %d answers were no decision", name, s.Outcomes[bench.OutcomeOther])
		}
	}
	if rep.Compare == nil || len(rep.Compare.Noop) != 1 || len(rep.Compare.Arbiter) != 1 || len(rep.Compare.OPA) != 1 {
		t.Fatalf("compare: %+v", rep.Compare)
	}
	check("closed no-op", rep.Compare.Noop[0], false)
	check("closed arbiter", rep.Compare.Arbiter[0], true)
	check("closed opa", rep.Compare.OPA[0], true)
	// The servers the harness started had their CPU time read, and so had the generator.
	for name, s := range map[string]*bench.Stats{"no-op": rep.Compare.Noop[0], "arbiter": rep.Compare.Arbiter[0]} {
		if srv, load := s.CPUPerRequest(); srv <= 0 || load <= 0 {
			t.Errorf("closed %s: CPU per request not measured (server %v, generator %v)", name, srv, load)
		}
	}
	if rep.Open == nil {
		t.Fatal("open loop not measured")
	}
	check("open no-op", rep.Open.Noop, false)
	check("open arbiter", rep.Open.Arbiter, true)
	check("open opa", rep.Open.OPA, true)
	if rep.Discovery == nil {
		t.Fatal("discovery not measured")
	}
	check("discovery decide", rep.Discovery.Decide, true)
	check("discovery filter", rep.Discovery.Filter, true)
	if rep.Swap == nil {
		t.Fatal("swap not measured")
	}
	check("swap steady before", rep.Swap.SteadyBefore, true)
	check("swap steady after", rep.Swap.SteadyAfter, true)
	if n, want := rep.Swap.Steady.Latency.Count(), rep.Swap.SteadyBefore.Latency.Count()+rep.Swap.SteadyAfter.Latency.Count(); n != want {
		t.Errorf("swap steady state: %d decisions, want both steady windows' %d", n, want)
	}
	check("swap swapping", rep.Swap.Swapping, true)
	// The binary (not under -race) reports what decided the revisions it was pushed: their
	// plan, or the scenario would not measure the plan executor.
	if !raceEnabled && rep.Swap.Evaluator != "ir" {
		t.Errorf("swap: the last revision pushed was decided by %q, not by its plan", rep.Swap.Evaluator)
	}
	if rep.Swap.Activations == 0 || len(rep.Swap.ActivationErrors) > 0 {
		t.Errorf("swap: %d activations, errors %v", rep.Swap.Activations, rep.Swap.ActivationErrors)
	}
	if rep.Scale == nil || len(rep.Scale.Points) != 2 {
		t.Fatalf("scale: %+v", rep.Scale)
	}
	for _, pt := range rep.Scale.Points {
		check(fmt.Sprintf("scale %d closed", pt.Sessions), pt.Closed, true)
		check(fmt.Sprintf("scale %d open", pt.Sessions), pt.Open, true)
		n := uint64(0)
		for _, w := range pt.OpenWindows {
			n += w.Latency.Count()
		}
		if len(pt.OpenWindows) != 3 || n != pt.Open.Latency.Count() {
			t.Errorf("scale %d: %d open-loop windows of %d decisions, merged into %d; want 3 windows, all merged", pt.Sessions, len(pt.OpenWindows), n, pt.Open.Latency.Count())
		}
		if pt.Idle.HeapAlloc == 0 || pt.Idle.RSS == 0 {
			t.Errorf("scale %d: no memory figures: %+v", pt.Sessions, pt.Idle)
		}
	}
	if want := map[bool]string{true: bench.ArbiterLib, false: bench.ArbiterBinary}[raceEnabled]; rep.Server != want {
		t.Errorf("measured the %q server, want %q", rep.Server, want)
	}
	if rep.Server == bench.ArbiterBinary && rep.DecisionLogRecords == 0 {
		t.Error("the binary wrote no decision records")
	}
	if last := rep.Scale.Points[1]; last.Sessions != 1000 || last.Prefill.Added == 0 {
		t.Errorf("scale: grew to %d sessions, adding %d", last.Sessions, last.Prefill.Added)
	}
	if len(rep.InProcess) == 0 {
		t.Error("in-process benchmarks did not run")
	}
	for _, ip := range rep.InProcess {
		if ip.Err != "" || ip.Ops == 0 {
			t.Errorf("in-process %s: %d ops, error %q", ip.Name, ip.Ops, ip.Err)
		}
	}
	if notes := rep.Calibration.Notes(); len(notes) > 0 {
		t.Logf("the policy answers differently from the intended mix: %v", notes)
	}

	var md bytes.Buffer
	if err := rep.WriteMarkdown(&md, "go test ./test/bench/"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Machine", "load average before the run", "## Targets", "| gRPC Decide throughput vs the no-op gRPC server",
		"vs OPA's REST server", "## Closed loop", "## Open loop", "## Discovery", "## Policy swap", "## Session scale",
		"heap per session", "## In-process", "p99.9", "raw OPA Eval"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if t.Failed() {
		t.Log(md.String())
	}
}

// fakeOPA serves OPA's data API for the harness policy in this process: POST
// /v1/data/mcp/decision with {"input": ...} answers {"result": decision}.
func fakeOPA(t *testing.T) *httptest.Server {
	t.Helper()
	p, err := bench.Policy(0)
	if err != nil {
		t.Fatal(err)
	}
	opts := []func(*rego.Rego){rego.Query(engine.DefaultEntrypoint), rego.Store(inmem.NewFromObject(p.Data))}
	for _, m := range p.Modules {
		opts = append(opts, rego.ParsedModule(m))
	}
	pq, err := rego.New(opts...).PrepareForEval(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(http.ResponseWriter, *http.Request) {})
	mux.HandleFunc("POST "+bench.DecisionPath, func(w http.ResponseWriter, r *http.Request) {
		var body struct {
			Input map[string]any `json:"input"`
		}
		dec := json.NewDecoder(r.Body)
		dec.UseNumber()
		if err := dec.Decode(&body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		in, err := ast.InterfaceToValue(body.Input)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		rs, err := pq.Eval(r.Context(), rego.EvalParsedInput(in))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out := map[string]any{}
		if len(rs) == 1 {
			out["result"] = rs[0].Expressions[0].Value
		}
		_ = json.NewEncoder(w).Encode(out)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// testLog sends the harness's progress to the test log.
type testLog struct{ t *testing.T }

func (l testLog) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestHistogramQuantiles(t *testing.T) {
	var h bench.Histogram
	for i := 1; i <= 100000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.9, 90 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {0.999, 99900 * time.Microsecond}, {1, 100 * time.Millisecond}} {
		got := h.Quantile(tc.q)
		if diff := float64(got-tc.want) / float64(tc.want); diff > 0.01 || diff < -0.01 {
			t.Errorf("p%g = %v, want %v within 1%%", tc.q*100, got, tc.want)
		}
	}
	if h.Count() != 100000 || h.Max() != 100*time.Millisecond {
		t.Errorf("count %d, max %v", h.Count(), h.Max())
	}
	var small bench.Histogram
	small.Record(42 * time.Nanosecond)
	if got := small.Quantile(0.5); got != 42*time.Nanosecond {
		t.Errorf("one record of 42ns: p50 = %v", got)
	}
}

// The in-process benchmarks: `go test -run '^$' -bench . ./test/bench/`. They run the same
// operations as the harness's in-process scenario: the engine over the request mix, raw OPA
// on the same policy, data and input documents, and FilterTools over 500 tools.

func fixture(b *testing.B) *bench.Fixture {
	b.Helper()
	f, err := bench.NewFixture(context.Background(), 64, bench.ToolboxTools)
	if err != nil {
		b.Fatal(err)
	}
	return f
}

func BenchmarkEngineDecideMix(b *testing.B) {
	f := fixture(b)
	ctx, r := context.Background(), bench.NewRand(1)
	b.ReportAllocs()
	for b.Loop() {
		if err := f.Decide(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEngineDecideMixParallel(b *testing.B) {
	f := fixture(b)
	ctx := context.Background()
	b.ReportAllocs()
	b.SetParallelism(1)
	b.ResetTimer()
	var seed atomic.Uint64
	b.RunParallel(func(pb *testing.PB) {
		r := bench.NewRand(seed.Add(1))
		for pb.Next() {
			if err := f.Decide(ctx, r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "goroutines")
}

func BenchmarkRawOPAMix(b *testing.B) {
	f := fixture(b)
	ctx, r := context.Background(), bench.NewRand(1)
	b.ReportAllocs()
	for b.Loop() {
		if err := f.RawOPA(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEngineFilterTools500(b *testing.B) {
	f := fixture(b)
	ctx, r := context.Background(), bench.NewRand(1)
	b.ReportAllocs()
	for b.Loop() {
		if err := f.FilterTools(ctx, r); err != nil {
			b.Fatal(err)
		}
	}
}

// With a profile directory, the comparison profiles the no-op server's first round beside the
// Arbiter server's, and every profile the report lists is a non-empty gzipped pprof file.
func TestHarnessProfilesBothServers(t *testing.T) {
	rep := runHarness(t, func(cfg *bench.Config) {
		cfg.Scenarios = []string{bench.ScenarioCompare}
		cfg.SkipOPA = true
		cfg.ProfileDir = t.TempDir()
	})
	arbiter := map[bool]string{true: "arbiter-decide", false: "arbiter-serve-decide"}[raceEnabled]
	want := map[string]bool{"noop-decide.cpu.pprof": false, "noop-decide.allocs.pprof": false, arbiter + ".cpu.pprof": false, arbiter + ".allocs.pprof": false}
	for _, p := range rep.Profiles {
		if _, ok := want[filepath.Base(p)]; ok {
			want[filepath.Base(p)] = true
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("listed profile: %v", err)
			continue
		}
		if len(b) < 2 || b[0] != 0x1f || b[1] != 0x8b {
			t.Errorf("%s: %d bytes, not a gzipped profile", p, len(b))
		}
	}
	for name, seen := range want {
		if !seen {
			t.Errorf("no %s among the profiles %v", name, rep.Profiles)
		}
	}
}
