package test

import (
	"bufio"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

// TestAdminCLI drives `arbiter sessions` and `arbiter approvals` against `arbiter serve` with
// token files: a gateway's call waits on approval, an operator approves it from the CLI.
func TestAdminCLI(t *testing.T) {
	dir := t.TempDir()
	adminFile := filepath.Join(dir, "admin.tokens")
	gatewayFile := filepath.Join(dir, "gateway.tokens")
	if err := os.WriteFile(adminFile, []byte("# operators\nsecurity-oncall "+adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(gatewayFile, []byte("edge-gateway "+gatewayToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	logFile := filepath.Join(dir, "decisions.log")
	srv := serveBinary(t, "--admin-token-file", adminFile, "--gateway-token-file", gatewayFile, "--decision-log", logFile)
	gw := (&service{addr: srv.grpcAddr}).as(t, gatewayToken)
	cli := func(args ...string) (string, error) {
		cmd := exec.Command(arbiterBinary(t), args...)
		cmd.Env = append(os.Environ(), "ARBITER_ADDR="+srv.grpcAddr, "ARBITER_TOKEN_FILE="+adminFile)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	sess := openAs(t, gw)
	d := decideAs(t, gw, toolCall(sess, "delete_file"))
	wantDecision(t, d, arbiterv1.Decision_DECISION_REQUIRE_APPROVAL, "destructive_tool")
	id := d.GetApproval().GetId()

	out, err := cli("approvals", "list", "--status", "pending", "-o", "json")
	if err != nil {
		t.Fatalf("approvals list: %v\n%s", err, out)
	}
	var listed map[string]any
	if err := json.Unmarshal([]byte(strings.SplitN(out, "\n", 2)[0]), &listed); err != nil || listed["id"] != id {
		t.Fatalf("approvals list -o json printed %q, want the pending approval %s", out, id)
	}

	// A watcher started from the CLI ends when the approval is resolved.
	watch := exec.Command(arbiterBinary(t), "approvals", "watch", id, "--addr", srv.grpcAddr, "--token-file", adminFile)
	watchOut, err := watch.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	lines := bufio.NewScanner(watchOut)
	if !lines.Scan() || !strings.Contains(lines.Text(), "pending") {
		t.Fatalf("watch first line %q", lines.Text())
	}

	out, err = cli("approvals", "approve", id, "--approver", "bob@example.com", "--note", "ticket 7")
	if err != nil || !strings.Contains(out, "approved") || !strings.Contains(out, "bob@example.com") {
		t.Fatalf("approvals approve: %v\n%s", err, out)
	}
	if !lines.Scan() || !strings.Contains(lines.Text(), "approved") {
		t.Fatalf("watch after approval %q", lines.Text())
	}
	done := make(chan error, 1)
	go func() { done <- watch.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("approvals watch exited with %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("approvals watch did not end after the approval was resolved")
	}
	wantDecision(t, decideAs(t, gw, toolCall(sess, "delete_file")), arbiterv1.Decision_DECISION_ALLOW, "approval_granted")

	out, err = cli("approvals", "approve", id)
	if err == nil || !strings.Contains(out, "FailedPrecondition") {
		t.Fatalf("approving twice should fail clearly: %v\n%s", err, out)
	}

	out, err = cli("sessions", "show", sess)
	if err != nil || !strings.Contains(out, "delete_file") || !strings.Contains(out, "active") {
		t.Fatalf("sessions show: %v\n%s", err, out)
	}
	out, err = cli("sessions", "list", "--subject", alice.GetId())
	if err != nil || !strings.Contains(out, sess) {
		t.Fatalf("sessions list: %v\n%s", err, out)
	}
	out, err = cli("sessions", "revoke", "--subject", alice.GetId(), "--reason", "offboarding")
	if err != nil || !strings.Contains(out, "revoked 1 session") {
		t.Fatalf("sessions revoke: %v\n%s", err, out)
	}
	wantDecision(t, decideAs(t, gw, toolCall(sess, "read_file")), arbiterv1.Decision_DECISION_DENY, "session_revoked")

	out, err = cli("sessions", "revoke", "--reason", "everything")
	if err == nil || !strings.Contains(out, "InvalidArgument") {
		t.Fatalf("revoke without selector: %v\n%s", err, out)
	}
	// The gateway token cannot resolve approvals, from the CLI either.
	out, err = cli("approvals", "deny", id, "--token-file", gatewayFile)
	if err == nil || !strings.Contains(out, "PermissionDenied") {
		t.Fatalf("gateway token resolving: %v\n%s", err, out)
	}

	// The decision log names the approver as given and the admin token the call came with.
	srv.cmd.Process.Signal(syscall.SIGTERM)
	<-srv.done
	raw, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["action"] == "approval/resolve" {
			found = true
			if rec["actor"] != "bob@example.com" || rec["actor_via"] != "security-oncall" {
				t.Errorf("resolution record: actor %v via %v, want bob@example.com via security-oncall", rec["actor"], rec["actor_via"])
			}
		}
	}
	if !found {
		t.Errorf("no approval/resolve record in the decision log:\n%s", raw)
	}
}
