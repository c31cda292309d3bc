package test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"

	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// observedPolicy allows read_file, asks approval for delete_file, and denies anything else.
const observedPolicy = `package mcp

decision := {"result": "allow"} if {
	input.action == "session/open"
} else := {"result": "allow"} if {
	input.operation.tool == "read_file"
} else := {"result": "require_approval", "reasons": [{"code": "destructive_tool", "message": "m"}]} if {
	input.operation.tool == "delete_file"
} else := {"result": "deny", "reasons": [{"code": "tool_unknown", "message": "m"}]}
`

func metricValue(t *testing.T, body, series string) float64 {
	t.Helper()
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` ([0-9.e+-]+)$`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no series %s in /metrics", series)
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return string(body)
}

// TestDecisionLogAndMetrics: every decision is one JSON line, none is lost across a clean
// stop, the audit query answers from the files, and the metrics move with real calls.
func TestDecisionLogAndMetrics(t *testing.T) {
	dir := t.TempDir()
	policyDir := filepath.Join(dir, "policy")
	os.MkdirAll(policyDir, 0o755)
	os.WriteFile(filepath.Join(policyDir, "p.rego"), []byte(observedPolicy), 0o644)
	logFile := filepath.Join(dir, "decisions.log")
	srv := serveBinary(t, "--policy", policyDir, "--decision-log", logFile, "--decision-log-arguments", "--decision-log-mask", "/path")
	c := (&service{addr: srv.grpcAddr}).as(t, "")

	before := scrape(t, srv.adminAddr)
	if !strings.Contains(before, `arbiter_policy_evaluator{evaluator="ir"} 1`) {
		t.Errorf("metrics do not say the policy is decided by its plan:\n%s", before)
	}
	if !strings.Contains(before, "go_goroutines") || !strings.Contains(before, `arbiter_bundle_active_revision{bundle="default"`) {
		t.Fatalf("runtime or bundle metrics missing:\n%s", before)
	}

	sess := openAs(t, c)
	wantDecision(t, decideAs(t, c, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_ALLOW)
	wantDecision(t, decideAs(t, c, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_ALLOW)
	denied := decideAs(t, c, toolCall(sess, "rm_rf"))
	wantDecision(t, denied, arbiterv1.Decision_DECISION_DENY, "tool_unknown")
	wantDecision(t, decideAs(t, c, toolCall(sess, "delete_file")), arbiterv1.Decision_DECISION_REQUIRE_APPROVAL)
	if _, err := c.decisions.Decide(context.Background(), &arbiterv1.DecideRequest{Server: fsServer}); err == nil {
		t.Fatal("an invalid request should fail")
	}
	const decisions = 5 // open + 4 decides; the invalid request is not a decision

	after := scrape(t, srv.adminAddr)
	for series, want := range map[string]float64{
		`arbiter_decisions_total{action="tools/call",result="allow"}`:                                     2,
		`arbiter_decisions_total{action="tools/call",result="deny"}`:                                      1,
		`arbiter_decisions_total{action="tools/call",result="require_approval"}`:                          1,
		`arbiter_decisions_total{action="session/open",result="allow"}`:                                   1,
		`arbiter_sessions{status="active"}`:                                                               1,
		`arbiter_approvals_pending`:                                                                       1,
		`arbiter_grpc_requests_total{code="OK",method="/arbiter.v1.DecisionService/Decide"}`:              4,
		`arbiter_grpc_requests_total{code="InvalidArgument",method="/arbiter.v1.DecisionService/Decide"}`: 1,
		`arbiter_decision_log_full_total`:                                                                 0,
		`arbiter_decision_log_write_failures_total`:                                                       0,
	} {
		if got := metricValue(t, after, series); got != want {
			t.Errorf("%s = %v, want %v", series, got, want)
		}
	}
	if metricValue(t, after, `arbiter_decision_duration_seconds_count{action="tools/call"}`) != 4 ||
		metricValue(t, after, `arbiter_policy_evaluation_duration_seconds_count`) < 5 {
		t.Error("latency histograms did not move")
	}

	// A clean stop writes every record.
	srv.cmd.Process.Signal(syscall.SIGTERM)
	for range srv.logs {
	}
	if err := <-srv.done; err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(logFile)
	if err != nil {
		t.Fatal(err)
	}
	var lines []map[string]any
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("log line %q: %v", sc.Text(), err)
		}
		lines = append(lines, m)
	}
	f.Close()
	if len(lines) != decisions {
		t.Fatalf("%d records in the decision log, want %d", len(lines), decisions)
	}
	var deny map[string]any
	for _, l := range lines {
		if l["decision_id"] == denied.GetDecisionId() {
			deny = l
		}
	}
	if deny == nil || deny["result"] != "deny" || deny["reasons"].([]any)[0] != "tool_unknown" ||
		deny["session"].(map[string]any)["id"] != sess || deny["arguments"].(map[string]any)["path"] != "**masked**" {
		t.Fatalf("the deny's record: %v", deny)
	}

	out, err := exec.Command(arbiterBinary(t), "audit", "query", "--file", logFile, "--client", agent.GetId(), "--result", "deny", "-o", "json").CombinedOutput()
	if err != nil {
		t.Fatalf("audit query: %v\n%s", err, out)
	}
	if got := strings.Split(strings.TrimSpace(string(out)), "\n"); len(got) != 1 || !strings.Contains(got[0], denied.GetDecisionId()) {
		t.Fatalf("audit query for the client's denies printed %q", out)
	}
	out, err = exec.Command(arbiterBinary(t), "audit", "query", "--file", logFile, "--session", sess).CombinedOutput()
	if err != nil || strings.Count(string(out), "tools/call") != 4 {
		t.Fatalf("audit query by session: %v\n%s", err, out)
	}
	if out, err := exec.Command(arbiterBinary(t), "audit", "query", "--file", logFile, "--since", "yesterday").CombinedOutput(); err == nil {
		t.Fatalf("a bad --since should fail: %s", out)
	}
}

// TestTopdownDecidingIsVisible: a policy the plan executor cannot run (it uses "with") is
// served by OPA's topdown evaluator, and both the service log and the metrics say so, as they
// do for --evaluator topdown.
func TestTopdownDecidingIsVisible(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package mcp\n\nread := input.action\n\ndecision := {\"result\": \"allow\"} if {\n\tread == \"tools/call\" with input.action as \"tools/call\"\n}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		why  string
	}{
		{"with", []string{"--policy", dir}, "WithStmt"},
		{"--evaluator topdown", []string{"--evaluator", "topdown"}, `the evaluator is "topdown"`},
	} {
		srv := serveBinary(t, tc.args...)
		var why string
		for _, rec := range srv.startup {
			if rec["msg"] == "policy runs on OPA's topdown evaluator" {
				why, _ = rec["reason"].(string)
			}
		}
		if !strings.Contains(why, tc.why) {
			t.Errorf("%s: no startup log line says topdown decides because %q: %v", tc.name, tc.why, srv.startup)
		}
		if m := scrape(t, srv.adminAddr); !strings.Contains(m, `arbiter_policy_evaluator{evaluator="topdown"} 1`) {
			t.Errorf("%s: metrics do not say topdown decides:\n%s", tc.name, m)
		}
	}
}
