package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// writePolicyDir writes a small policy that allows everything and names its tag in a reason.
func writePolicyDir(t *testing.T, tag string) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		".manifest":            `{"roots": ["mcp", "mcp_test"]}`,
		"mcp/policy.rego":      "package mcp\n\ndecision := {\"result\": \"allow\", \"reasons\": [{\"code\": \"" + tag + "\", \"message\": \"m\"}]}\n",
		"mcp/policy_test.rego": "package mcp_test\n\nimport data.mcp\n\ntest_allows if mcp.decision.result == \"allow\"\n",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestBundleLifecycle: build and push with the CLI, decide on the new revision, survive a
// restart with --data-dir, keep deciding with zero errors through 20 pushes, roll back.
func TestBundleLifecycle(t *testing.T) {
	dataDir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "admin.token")
	os.WriteFile(tokenFile, []byte("ops "+adminToken+"\n"), 0o600)
	args := []string{"--data-dir", dataDir, "--admin-token-file", tokenFile}
	srv := serveBinary(t, args...)

	cli := func(args ...string) string {
		t.Helper()
		out, err := exec.Command(arbiterBinary(t), args...).CombinedOutput()
		if err != nil {
			t.Fatalf("arbiter %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	bundleFile := filepath.Join(t.TempDir(), "policy.tar.gz")
	cli("bundle", "build", writePolicyDir(t, "v1"), "-o", bundleFile, "--revision", "v1")
	if out := cli("bundle", "inspect", bundleFile); !strings.Contains(out, `"revision": "v1"`) {
		t.Fatalf("inspect: %s", out)
	}
	out := cli("bundle", "push", bundleFile, "--name", "policy", "--url", "http://"+srv.adminAddr, "--token-file", tokenFile)
	if !strings.Contains(out, `"policy_revision": "policy@v1"`) {
		t.Fatalf("push: %s", out)
	}

	gw := (&service{addr: srv.grpcAddr}).as(t, adminToken)
	call := toolCall("", "anything")
	d := decideAs(t, gw, call)
	if d.GetPolicyRevision() != "policy@v1" || d.GetReasons()[0].GetCode() != "v1" {
		t.Fatalf("after push: %v", d)
	}

	// Restart on the same data directory: the same revision serves without a push.
	srv.cmd.Process.Signal(syscall.SIGTERM)
	for range srv.logs {
	}
	if err := <-srv.done; err != nil {
		t.Fatalf("stop: %v", err)
	}
	srv = serveBinary(t, args...)
	gw = (&service{addr: srv.grpcAddr}).as(t, adminToken)
	if d := decideAs(t, gw, call); d.GetPolicyRevision() != "policy@v1" {
		t.Fatalf("after restart: %v", d)
	}

	// 20 pushes while 4 callers decide: no call may fail.
	bodies := make([][]byte, 20)
	for i := range bodies {
		f := filepath.Join(t.TempDir(), "b.tar.gz")
		rev := fmt.Sprintf("v%d", i+2)
		cli("bundle", "build", writePolicyDir(t, rev), "-o", f, "--revision", rev)
		bodies[i], _ = os.ReadFile(f)
	}
	stop := make(chan struct{})
	var ok, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := gw.decisions.Decide(context.Background(), call)
				if err != nil || resp.GetDecision() != arbiterv1.Decision_DECISION_ALLOW {
					failed.Add(1)
					continue
				}
				ok.Add(1)
			}
		})
	}
	for i, body := range bodies {
		req, _ := http.NewRequest(http.MethodPut, "http://"+srv.adminAddr+"/v1/bundles/policy", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+adminToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("push %d: %v %v", i, resp, err)
		}
		resp.Body.Close()
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || ok.Load() == 0 {
		t.Fatalf("%d decisions failed and %d succeeded during 20 pushes", failed.Load(), ok.Load())
	}
	if d := decideAs(t, gw, call); d.GetPolicyRevision() != "policy@v21" {
		t.Fatalf("after the pushes: %v", d)
	}

	// Roll back to the previous revision over HTTP.
	req, _ := http.NewRequest(http.MethodPost, "http://"+srv.adminAddr+"/v1/bundles/policy/rollback", nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || body["policy_revision"] != "policy@v20" {
		t.Fatalf("rollback: %d %v", resp.StatusCode, body)
	}
	if d := decideAs(t, gw, call); d.GetReasons()[0].GetCode() != "v20" {
		t.Fatalf("after rollback: %v", d)
	}

	// Without the admin token nothing changes.
	req, _ = http.NewRequest(http.MethodDelete, "http://"+srv.adminAddr+"/v1/bundles/policy", nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("delete without token: %v %v", resp, err)
	}
	resp.Body.Close()
	if d := decideAs(t, gw, call); d.GetPolicyRevision() != "policy@v20" {
		t.Fatalf("an unauthenticated delete changed the policy: %v", d)
	}
}
