package policy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/policy"
)

var update = flag.Bool("update", false, "rewrite examples/*/want.json from what the policy decides")

// exampleWant is an example's expected decision: what a gateway would be told, and for
// session/open and session/renew the lifetime ceiling the policy sets.
type exampleWant struct {
	Result        string          `json:"result"`
	Reasons       []engine.Reason `json:"reasons"`
	Labels        []string        `json:"labels"`
	MaxTTLSeconds int64           `json:"max_ttl_seconds,omitempty"`
}

// exampleClock is the time of every example decision; the inputs say the same in input.now.
var exampleClock = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// TestExamples decides every examples/NAME/input.json with the embedded policy through the
// engine, as `arbiter eval` does, and compares the result, the reasons and the labels with
// examples/NAME/want.json, so the examples in the author's guide never go stale. Run with
// -update to rewrite the want.json files after a deliberate change, and review the diff.
func TestExamples(t *testing.T) {
	ctx := context.Background()
	p, err := engine.LoadPolicyFS(policy.FS(), ".", "default")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := engine.New(ctx, engine.Config{Clock: func() time.Time { return exampleClock }}, p)
	if err != nil {
		t.Fatal(err)
	}
	dirs, err := filepath.Glob("examples/*/input.json")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	codes := map[string]bool{}
	for _, in := range dirs {
		dir := filepath.Dir(in)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			var input map[string]any
			if err := dec.Decode(&input); err != nil {
				t.Fatalf("%s: %v", in, err)
			}
			if input["now"] != exampleClock.Format(time.RFC3339) {
				t.Errorf("%s: input.now is %v, want %s like every example", in, input["now"], exampleClock.Format(time.RFC3339))
			}
			ex, err := eng.Explain(ctx, input)
			if err != nil {
				t.Fatal(err)
			}
			if ex.Error != "" {
				t.Fatalf("policy error: %s", ex.Error)
			}
			got := exampleWant{Result: string(ex.Decision.Outcome), Reasons: ex.Decision.Reasons, Labels: ex.Decision.Labels}
			if got.Reasons == nil {
				got.Reasons = []engine.Reason{}
			}
			if got.Labels == nil {
				got.Labels = []string{}
			}
			if res, ok := ex.Result.(map[string]any); ok {
				if sess, ok := res["session"].(map[string]any); ok {
					if n, ok := sess["max_ttl_seconds"].(json.Number); ok {
						got.MaxTTLSeconds, _ = n.Int64()
					}
				}
			}
			for _, r := range got.Reasons {
				codes[r.Code] = true
			}

			wantPath := filepath.Join(dir, "want.json")
			if *update {
				out, err := json.MarshalIndent(got, "", "  ")
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(wantPath, append(out, '\n'), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			rawWant, err := os.ReadFile(wantPath)
			if err != nil {
				t.Fatalf("%v (run go test ./policy/ -run TestExamples -update to write it)", err)
			}
			var want exampleWant
			if err := json.Unmarshal(rawWant, &want); err != nil {
				t.Fatalf("%s: %v", wantPath, err)
			}
			if !reflect.DeepEqual(got, want) {
				gotJSON, _ := json.MarshalIndent(got, "", "  ")
				t.Errorf("%s decides\n%s\nwant (%s)\n%s", in, gotJSON, wantPath, rawWant)
			}
		})
	}

	// Every reason code of the default policy that its shipped data can produce has an example.
	for _, code := range []string{
		"server_unknown", "credential_missing", "server_transport_mismatch", "server_pin_mismatch",
		"audience_mismatch", "scope_missing", "tool_unknown", "tool_definition_changed",
		"tool_definition_unverified", "destructive_tool", "budget_exhausted", "tool_budget_exhausted",
		"server_budget_exhausted", "toxic_flow", "client_unknown", "renewal_requires_approval",
		"renewal_limit", "sampling_not_allowed", "sampling_context_not_allowed", "elicitation_not_allowed",
	} {
		if !codes[code] && !*update {
			t.Errorf("no example produces reason %s", code)
		}
	}
}

// TestExamplesAreNotPolicy checks that the examples stay out of the embedded policy: they are
// test data, not part of what the service decides with.
func TestExamplesAreNotPolicy(t *testing.T) {
	p, err := engine.LoadPolicyFS(policy.FS(), ".", "default")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Data["examples"]; ok {
		t.Error("the embedded policy's data holds the examples")
	}
	keys := make([]string, 0, len(p.Data))
	for k := range p.Data {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if want := []string{"catalog", "flows", "limits"}; !slices.Equal(keys, want) {
		t.Errorf("embedded data has top-level keys %v, want %v", keys, want)
	}
}
