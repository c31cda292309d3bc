package bench

import (
	"slices"
	"testing"
)

// The no-op server takes the collector settings given to the Arbiter servers, and nothing else.
func TestCollectorEnv(t *testing.T) {
	got := collectorEnv([]string{"GOGC=800", "GODEBUG=gctrace=1", GCLimitEnv + "=200", "GOMEMLIMIT=1GiB", "GOGCX=1"})
	if want := []string{"GOGC=800", GCLimitEnv + "=200", "GOMEMLIMIT=1GiB"}; !slices.Equal(got, want) {
		t.Errorf("collectorEnv: %q, want %q", got, want)
	}
}
