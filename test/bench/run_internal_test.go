package bench

import (
	"slices"
	"strings"
	"testing"
	"time"
)

// The no-op server takes the collector settings given to the Arbiter servers, and nothing else.
func TestCollectorEnv(t *testing.T) {
	got := collectorEnv([]string{"GOGC=800", "GODEBUG=gctrace=1", GCLimitEnv + "=200", "GOMEMLIMIT=1GiB", "GOGCX=1"})
	if want := []string{"GOGC=800", GCLimitEnv + "=200", "GOMEMLIMIT=1GiB"}; !slices.Equal(got, want) {
		t.Errorf("collectorEnv: %q, want %q", got, want)
	}
}

// The report says which arbiter binary served: one built from this module, or the prebuilt one
// given with -arbiter-bin (then the figures are that binary's, whatever the module holds).
func TestReportNamesThePrebuiltBinary(t *testing.T) {
	for _, tc := range []struct{ bin, want string }{
		{"", "`arbiter serve --policy p`, built from this module"},
		{"/tmp/arb-x", "`arbiter serve --policy p`, the prebuilt binary /tmp/arb-x (-arbiter-bin)"},
	} {
		var out strings.Builder
		r := &Report{Server: ArbiterBinary, ArbiterArgs: []string{"--policy", "p"}, ArbiterBin: tc.bin}
		if err := r.WriteMarkdown(&out, "arbiter-bench"); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("ArbiterBin %q: the report does not say %q:\n%s", tc.bin, tc.want, out.String())
		}
	}
}

// The throughput target shows each round's ratio against the no-op round beside it, so a run
// whose median hides a spread says so.
func TestTargetShowsEachRoundsRatio(t *testing.T) {
	stats := func(n int) *Stats {
		st := newStats("closed/1", time.Second)
		var rec recorder
		for range n {
			rec.record(time.Millisecond, Answer{Outcome: OutcomeAllow}, nil)
		}
		st.merge(&rec)
		return st
	}
	r := &Report{Compare: &CompareResult{
		Noop:    []*Stats{stats(1000), stats(800), stats(0), stats(1000)},
		Arbiter: []*Stats{stats(600), stats(600), stats(500), stats(550)},
	}}
	got := r.Targets()[0].Measured
	if want := "0.64× (575 vs 900 req/s; each round against its no-op: 0.60×, 0.75×, n/a, 0.55×)"; got != want {
		t.Errorf("Measured = %q, want %q", got, want)
	}
}
