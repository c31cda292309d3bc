package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// arbiter runs the command line in-process and returns its exit code and output.
func arbiter(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// writeFiles writes name -> content under a new temporary directory and returns it.
func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		path := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A small policy with one passing test, one failing test that prints, and one covered and
// one uncovered rule.
var smallPolicy = map[string]string{
	"p.rego": "package p\n\nallow if input.user == \"alice\"\n\ndeny if input.user == \"mallory\"\n",
	"p_test.rego": `package p_test

import data.p

test_alice if p.allow with input as {"user": "alice"}

test_bob if {
	print("checking bob")
	p.allow with input as {"user": "bob"}
}
`,
}

const policyDir = "../../policy"

func TestTestCommandOnTheDefaultPolicy(t *testing.T) {
	code, out, errOut := arbiter(t, "test", policyDir, "--coverage")
	if code != 0 {
		t.Fatalf("arbiter test %s --coverage: exit %d\n%s%s", policyDir, code, out, errOut)
	}
	lines := regexp.MustCompile(`(?m)^PASS   data\.\S+ \(\S+\)$`).FindAllString(out, -1)
	summary := regexp.MustCompile(`(?m)^(\d+) passed, 0 failed, 0 errors, 0 skipped, (\d+) tests$`).FindStringSubmatch(out)
	if summary == nil || summary[1] != summary[2] || strconv.Itoa(len(lines)) != summary[1] {
		t.Fatalf("want one PASS line per test and a summary that agrees, got %d lines:\n%s", len(lines), out)
	}
	if !strings.Contains(out, "PASS   data.mcp.flows_test.test_toxic_flow_fires_when_sink_follows_both_sources (") {
		t.Errorf("a rule package's test is missing from the output:\n%s", out)
	}
	m := regexp.MustCompile(`coverage: ([\d.]+)% of \d+ policy lines`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no coverage figure:\n%s", out)
	}
	if pct, _ := strconv.ParseFloat(m[1], 64); pct < 90 {
		t.Errorf("coverage of the default policy %.1f%%, want >= 90", pct)
	}
}

func TestTestCommandReportsFailures(t *testing.T) {
	dir := writeFiles(t, smallPolicy)
	code, out, errOut := arbiter(t, "test", dir)
	if code != 1 {
		t.Fatalf("a failing test must exit 1, got %d\n%s%s", code, out, errOut)
	}
	for _, want := range []string{
		"PASS   data.p_test.test_alice (",
		"FAIL   data.p_test.test_bob (",
		filepath.Join(dir, "p_test.rego") + ":7: test failed",
		filepath.Join(dir, "p_test.rego") + `:9: failed: p.allow with input as {"user": "bob"}`,
		"checking bob",
		"1 passed, 1 failed, 0 errors, 0 skipped, 2 tests",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(errOut, "1 of 2 tests failed") {
		t.Errorf("stderr %q should say how many tests failed", errOut)
	}
}

func TestTestCommandErrorsAndUsage(t *testing.T) {
	passing := map[string]string{
		"p.rego":      smallPolicy["p.rego"],
		"p_test.rego": "package p_test\n\nimport data.p\n\ntest_alice if p.allow with input as {\"user\": \"alice\"}\n",
	}
	for _, tc := range []struct {
		name     string
		files    map[string]string
		args     []string
		code     int
		contains string
	}{
		{"no tests found", map[string]string{"p.rego": smallPolicy["p.rego"]}, nil, 1, "no tests found"},
		{"coverage below the threshold", passing, []string{"--threshold", "90"}, 1, "coverage 50.0% is below the threshold of 90%"},
		{"coverage at the threshold", passing, []string{"--threshold", "50"}, 0, ""},
		{"no test matches --run", passing, []string{"--run", "nothing_like_this"}, 1, "no tests matching --run"},
		{"compile error", map[string]string{"p_test.rego": "package p_test\n\ntest_x if undefined_fn(1)\n"}, nil, 1, "undefined function undefined_fn"},
		{"bad threshold", passing, []string{"--threshold", "120"}, 2, "percentage from 0 to 100"},
		{"bad regular expression", passing, []string{"--run", "("}, 2, "--run"},
		{"unknown flag", passing, []string{"--nope"}, 2, "flag provided but not defined"},
		{"missing path", nil, []string{"does-not-exist"}, 1, "does-not-exist"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, tc.files)
			code, out, errOut := arbiter(t, append([]string{"test", dir}, tc.args...)...)
			if code != tc.code || !strings.Contains(out+errOut, tc.contains) {
				t.Errorf("exit %d (want %d), want output containing %q:\n%s%s", code, tc.code, tc.contains, out, errOut)
			}
		})
	}
}

func TestTestCommandRunVerboseAndDefaultPath(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"p.rego": smallPolicy["p.rego"],
		"p_test.rego": `package p_test

import data.p

test_alice if {
	print("checking alice")
	p.allow with input as {"user": "alice"}
}

test_mallory if not p.allow with input as {"user": "mallory"}
`,
		".hidden/broken.rego": "this is not Rego",
	})
	t.Chdir(dir)

	// No path: the current directory, hidden directories left out. Flags may follow paths.
	code, out, errOut := arbiter(t, "test", "--run", "alice$", "-v")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "PASS   data.p_test.test_alice") || strings.Contains(out, "test_mallory") {
		t.Errorf("--run alice$ should run test_alice alone:\n%s", out)
	}
	if !strings.Contains(out, "checking alice") {
		t.Errorf("-v should show what passing tests printed:\n%s", out)
	}
	code, out, _ = arbiter(t, "test", ".", "--coverage", "-v")
	if code != 0 || !strings.Contains(out, "2 passed") || !regexp.MustCompile(`50\.0%\s+p\.rego, not covered: 5`).MatchString(out) {
		t.Errorf("-v --coverage should give coverage per file with the lines missed (exit %d):\n%s", code, out)
	}
	if code, out, _ := arbiter(t, "test"); code != 0 || strings.Contains(out, "checking alice") {
		t.Errorf("without -v, a passing test's output is not shown (exit %d):\n%s", code, out)
	}
}

// evalInput is a tools/call of web_search on the research server of the shipped catalog.
const evalInput = `{
  "action": "tools/call",
  "client": {"id": "https://ide.example.com/client.json"},
  "server": {"id": "research", "transport": "remote"},
  "credential": {"audience": ["https://mcp.research.example.com"]},
  "operation": {"method": "tools/call", "tool": "web_search", "arguments": {"q": "mcp"}},
  "session": null
}`

type evalOutput struct {
	Result  string `json:"result"`
	Reasons []struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"reasons"`
	PolicyRevision string `json:"policy_revision"`
}

// decision parses the decision JSON at the start of eval's output.
func decision(t *testing.T, out string) evalOutput {
	t.Helper()
	var d evalOutput
	if err := json.NewDecoder(strings.NewReader(out)).Decode(&d); err != nil {
		t.Fatalf("eval output does not start with a decision: %v\n%s", err, out)
	}
	return d
}

func TestEvalExplain(t *testing.T) {
	dir := writeFiles(t, map[string]string{"in.json": evalInput, "tainted.json": `{"id": "ses_1", "status": "active", "labels": ["private_data"], "calls": {"total": 1}}`})
	code, out, errOut := arbiter(t, "eval", "--input", filepath.Join(dir, "in.json"), "--session", filepath.Join(dir, "tainted.json"), "--explain")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, out, errOut)
	}
	if d := decision(t, out); d.Result != "require_approval" || len(d.Reasons) != 1 || d.Reasons[0].Code != "toxic_flow" {
		t.Fatalf("--session with private_data read: want require_approval toxic_flow, got %+v", d)
	}
	for _, want := range []string{
		"policy result:",
		"reasons:\n  toxic_flow: tool \"web_search\"",
		"by data.mcp.flows.approve at rules/flows.rego:",
		"because:\n      input.action == \"tools/call\"",
		"not source_missing(flow)",
		"rules that held, in evaluation order:",
		"data.mcp.catalog.tool = {\"labels\": [\"untrusted_content\", \"external_communication\"]",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("--explain output lacks %q:\n%s", want, out)
		}
	}

	// Without the session, the same call is allowed, and nothing but the decision is printed.
	code, out, _ = arbiter(t, "eval", "--input", filepath.Join(dir, "in.json"))
	if d := decision(t, out); code != 0 || d.Result != "allow" || strings.Contains(out, "rules that held") {
		t.Errorf("eval without --explain: exit %d\n%s", code, out)
	}
}

func TestEvalExplainSessionActions(t *testing.T) {
	// The session ceiling is not part of the decision a gateway sees; --explain shows it.
	in := writeFiles(t, map[string]string{"open.json": `{"action": "session/open", "client": {"id": "ide-agent"},
		"session_request": {"servers": ["github"], "ttl_seconds": 3600}}`})
	code, out, errOut := arbiter(t, "eval", "--input", filepath.Join(in, "open.json"), "--explain")
	if code != 0 || decision(t, out).Result != "allow" || !strings.Contains(out, `"session":{"max_ttl_seconds":1800}`) {
		t.Errorf("exit %d, want an allowed open with the remote ceiling in the policy result:\n%s%s", code, out, errOut)
	}
}

func TestEvalNow(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"p.rego":  "package mcp\n\ndecision := {\"result\": \"allow\", \"reasons\": [{\"code\": \"at\", \"message\": input.now}], \"labels\": [time.format(time.now_ns())]}\n",
		"in.json": `{"action": "tools/call", "now": "2020-01-01T00:00:00Z"}`,
	})
	in := filepath.Join(dir, "in.json")
	// --now replaces input.now, and time.now_ns() agrees with it.
	code, out, errOut := arbiter(t, "eval", "--input", in, "--policy", dir, "--now", "2026-11-26T12:00:00Z")
	if code != 0 || !strings.Contains(out, `"message": "2026-11-26T12:00:00Z"`) || !strings.Contains(out, `"2026-11-26T12:00:00Z"`+"\n  ]") {
		t.Errorf("--now: exit %d\n%s%s", code, out, errOut)
	}
	// Without --now, input.now is the time, for the clock too.
	code, out, _ = arbiter(t, "eval", "--input", in, "--policy", dir)
	if code != 0 || !strings.Contains(out, `"message": "2020-01-01T00:00:00Z"`) || !strings.Contains(out, `"2020-01-01T00:00:00Z"`+"\n  ]") {
		t.Errorf("input.now: exit %d\n%s", code, out)
	}
	code, _, errOut = arbiter(t, "eval", "--input", in, "--now", "yesterday")
	if code != 2 || !strings.Contains(errOut, "RFC 3339") {
		t.Errorf("a bad --now: exit %d, want 2 naming the format:\n%s", code, errOut)
	}
}

// revokedSession is a session as `arbiter sessions show -o json` prints it.
const revokedSession = `{"id":"ses_1","status":"SESSION_STATUS_REVOKED","client_id":"https://ide.example.com/client.json",
	"subject_id":"alice@example.com","created_at":"2026-11-26T11:00:00Z","expires_at":"2026-11-26T13:00:00Z",
	"calls_total":"3","calls_by_server":{"research":"3"},"calls_by_tool":{"research":{"tools":{"web_search":"3"}}},
	"labels":["untrusted_content"],"end_reason":"laptop stolen"}`

func TestEvalSessionFromTheService(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"in.json":      evalInput,
		"revoked.json": revokedSession,
		"active.json":  strings.Replace(revokedSession, "SESSION_STATUS_REVOKED", "SESSION_STATUS_ACTIVE", 1),
		"p/p.rego":     "package mcp\n\ndecision := {\"result\": \"allow\", \"obligations\": {\"session\": input.session}}\n",
	})
	in := filepath.Join(dir, "in.json")
	code, out, errOut := arbiter(t, "eval", "--input", in, "--session", filepath.Join(dir, "revoked.json"), "--explain")
	d := decision(t, out)
	if code != 0 || d.Result != "deny" || d.Reasons[0].Code != "session_revoked" || !strings.Contains(d.Reasons[0].Message, "laptop stolen") {
		t.Errorf("a revoked session from `sessions show -o json`: exit %d\n%s%s", code, out, errOut)
	}
	if !strings.Contains(out, "no policy ran") {
		t.Errorf("--explain should say the engine decided before the policy:\n%s", out)
	}
	// An active one reaches the policy in the shape of input.session.
	code, out, errOut = arbiter(t, "eval", "--input", in, "--session", filepath.Join(dir, "active.json"), "--policy", filepath.Join(dir, "p"))
	for _, want := range []string{`"status": "active"`, `"total": 3`, `"web_search": 3`, `"untrusted_content"`} {
		if code != 0 || !strings.Contains(out, want) {
			t.Errorf("the converted session lacks %s (exit %d):\n%s%s", want, code, out, errOut)
		}
	}
}

func TestEvalBundle(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "bundle.tar.gz")
	writeBundle(t, path, map[string]string{
		".manifest":            `{"revision": "r42", "roots": ["mcp", "mcp_test"]}`,
		"mcp/policy.rego":      "package mcp\n\ndecision := {\"result\": \"deny\", \"reasons\": [{\"code\": \"from_bundle\", \"message\": data.mcp.why}]}\n",
		"mcp/data.json":        `{"why": "bundled data"}`,
		"mcp/policy_test.rego": "package mcp_test\n\ntest_nothing if true\n",
	})
	in := writeFiles(t, map[string]string{"in.json": evalInput})
	code, out, errOut := arbiter(t, "eval", "--input", filepath.Join(in, "in.json"), "--bundle", path)
	if code != 0 {
		t.Fatalf("eval --bundle: exit %d\n%s%s", code, out, errOut)
	}
	d := decision(t, out)
	if d.Result != "deny" || d.Reasons[0].Code != "from_bundle" || d.Reasons[0].Message != "bundled data" || d.PolicyRevision != "bundle@r42" {
		t.Errorf("eval --bundle: exit %d\n%s%s", code, out, errOut)
	}

	broken := filepath.Join(dir, "broken.tar.gz")
	if err := os.WriteFile(broken, []byte("not a tarball"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := arbiter(t, "eval", "--input", filepath.Join(in, "in.json"), "--bundle", broken); code != 1 || !strings.Contains(errOut, "--bundle") {
		t.Errorf("a broken bundle: exit %d\n%s", code, errOut)
	}
}

func writeBundle(t *testing.T, path string, files map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestEvalBadInvocations(t *testing.T) {
	dir := writeFiles(t, map[string]string{"in.json": evalInput, "list.json": `[1, 2]`, "p.rego": "package mcp\n\ndecision := {\"result\": \"allow\"}\n"})
	in := filepath.Join(dir, "in.json")
	for _, tc := range []struct {
		name     string
		args     []string
		code     int
		contains string
	}{
		{"no input", nil, 2, "usage: arbiter eval --input FILE"},
		{"missing input file", []string{"--input", filepath.Join(dir, "missing.json")}, 1, "--input"},
		{"input not an object", []string{"--input", filepath.Join(dir, "list.json")}, 1, "not a JSON object"},
		{"missing session file", []string{"--input", in, "--session", filepath.Join(dir, "missing.json")}, 1, "--session"},
		{"session not an object", []string{"--input", in, "--session", filepath.Join(dir, "list.json")}, 1, "--session"},
		{"missing policy directory", []string{"--input", in, "--policy", filepath.Join(dir, "nope")}, 1, "--policy"},
		{"missing bundle file", []string{"--input", in, "--bundle", filepath.Join(dir, "nope.tar.gz")}, 1, "--bundle"},
		{"policy and bundle", []string{"--input", in, "--policy", dir, "--bundle", filepath.Join(dir, "b.tar.gz")}, 2, "alternatives"},
		{"stray argument", []string{"--input", in, "extra"}, 2, "usage"},
		{"unknown evaluator", []string{"--input", in, "--evaluator", "wasm"}, 2, `--evaluator must be ir or topdown, not "wasm"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, errOut := arbiter(t, append([]string{"eval"}, tc.args...)...)
			if code != tc.code || !strings.Contains(errOut, tc.contains) {
				t.Errorf("exit %d (want %d), want stderr containing %q:\n%s%s", code, tc.code, tc.contains, out, errOut)
			}
		})
	}
}

// TestEvalEvaluator: --evaluator picks what decides. On a rule that topdown stops at its first
// success, the plan evaluates every element and meets a failing built-in: the stricter answer
// the policy guide describes, a policy_error deny, with the error on stderr.
func TestEvalEvaluator(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"p.rego":  "package mcp\n\npositive if {\n\tsome v in input.vals\n\tto_number(v) > 0\n}\n\ndecision := {\"result\": \"allow\"} if positive\n\nelse := {\"result\": \"deny\"}\n",
		"in.json": `{"action": "tools/call", "vals": ["1", "a"]}`,
	})
	in := filepath.Join(dir, "in.json")
	code, out, errOut := arbiter(t, "eval", "--input", in, "--policy", dir, "--evaluator", "topdown")
	if d := decision(t, out); code != 0 || d.Result != "allow" {
		t.Errorf("topdown: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = arbiter(t, "eval", "--input", in, "--policy", dir)
	if d := decision(t, out); code != 0 || d.Result != "deny" || len(d.Reasons) != 1 || d.Reasons[0].Code != "policy_error" || !strings.Contains(errOut, "to_number") {
		t.Errorf("plan: exit %d\n%s%s", code, out, errOut)
	}
	// --explain traces topdown, and says that it answered otherwise than the plan.
	code, out, errOut = arbiter(t, "eval", "--input", in, "--policy", dir, "--explain")
	if code != 0 || !strings.Contains(out, "note: the policy's plan decided deny; what follows traces OPA's topdown evaluator, which answered allow") {
		t.Errorf("--explain: exit %d\n%s%s", code, out, errOut)
	}
}

func TestEvalExplainPolicyError(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"in.json":  evalInput,
		"p/p.rego": "package mcp\n\ndecision := {\"result\": \"maybe\"} if input.operation.tool == \"web_search\"\n\nelse := {\"result\": \"allow\"}\n",
	})
	code, out, _ := arbiter(t, "eval", "--input", filepath.Join(dir, "in.json"), "--policy", filepath.Join(dir, "p"), "--explain")
	d := decision(t, out)
	if code != 0 || d.Result != "deny" || d.Reasons[0].Code != "policy_error" || !strings.Contains(out, `policy error: malformed policy result: "result" is "maybe"`) {
		t.Errorf("a malformed result: exit %d\n%s", code, out)
	}
}
