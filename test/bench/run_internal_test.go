package bench

import (
	"slices"
	"strings"
	"testing"
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
