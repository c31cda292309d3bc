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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	arbiterv1 "github.com/arbiter-mcp/arbiter/proto/arbiter/v1"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// arbiterBinary builds cmd/arbiter once per test run.
func arbiterBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "arbiter-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "arbiter")
		out, err := exec.Command("go", "build", "-o", binPath, "../cmd/arbiter").CombinedOutput()
		if err != nil {
			buildErr = &buildError{err: err, out: string(out)}
		}
	})
	if buildErr != nil {
		t.Fatalf("build arbiter: %v", buildErr)
	}
	return binPath
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return e.err.Error() + "\n" + e.out }

// running is an `arbiter serve` process.
type running struct {
	cmd       *exec.Cmd
	grpcAddr  string
	adminAddr string
	logs      chan map[string]any
	done      chan error
	// startup are the log records written before "arbiter serving".
	startup []map[string]any
}

// serveBinary starts `arbiter serve` on loopback port 0 and waits for its "serving" log line.
func serveBinary(t *testing.T, args ...string) *running {
	t.Helper()
	cmd := exec.Command(arbiterBinary(t), append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r := &running{cmd: cmd, logs: make(chan map[string]any, 100), done: make(chan error, 1)}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				r.logs <- rec
			}
		}
		close(r.logs)
		r.done <- cmd.Wait()
	}()
	t.Cleanup(func() { cmd.Process.Kill() })
	for rec := range r.logs {
		if rec["msg"] == "arbiter serving" {
			r.grpcAddr, _ = rec["grpc_addr"].(string)
			r.adminAddr, _ = rec["admin_addr"].(string)
			return r
		}
		r.startup = append(r.startup, rec)
	}
	t.Fatalf("arbiter serve exited before serving: %v", <-r.done)
	return nil
}

func TestServeBinary(t *testing.T) {
	// A two-session input cache: decisions work whether their session's terms are cached or not.
	srv := serveBinary(t, "--input-cache-sessions", "2")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := http.Get("http://" + srv.adminAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
	}

	conn, err := grpc.NewClient(srv.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "arbiter.v1.DecisionService"})
	if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", h, err)
	}

	// Reflection lists the API, so `grpcurl -plaintext ADDR list` works.
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil {
		t.Fatal(err)
	}
	ref, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range ref.GetListServicesResponse().GetService() {
		names = append(names, s.GetName())
	}
	for _, want := range []string{"arbiter.v1.DecisionService", "arbiter.v1.SessionService", "grpc.health.v1.Health"} {
		if !containsString(names, want) {
			t.Errorf("reflection lists %v, missing %s", names, want)
		}
	}
	stream.CloseSend()

	// The README walk-through: open, decide, revoke, decide again.
	sessions := arbiterv1.NewSessionServiceClient(conn)
	decisions := arbiterv1.NewDecisionServiceClient(conn)
	open, err := sessions.OpenSession(ctx, &arbiterv1.OpenSessionRequest{Client: agent, Subject: alice, Servers: []*arbiterv1.Server{fsServer}})
	if err != nil || open.GetDecision() != arbiterv1.Decision_DECISION_ALLOW {
		t.Fatalf("open: %v %v", open, err)
	}
	sess := open.GetSession().GetId()
	d, err := decisions.Decide(ctx, toolCall(sess, "read_file"))
	if err != nil || d.GetDecision() != arbiterv1.Decision_DECISION_ALLOW || !strings.HasPrefix(d.GetPolicyRevision(), "default@") {
		t.Fatalf("decide: %v %v", d, err)
	}
	if _, err := sessions.RevokeSessions(ctx, &arbiterv1.RevokeSessionsRequest{SessionId: sess, Reason: "walk-through"}); err != nil {
		t.Fatal(err)
	}
	d, err = decisions.Decide(ctx, toolCall(sess, "read_file"))
	if err != nil || d.GetDecision() != arbiterv1.Decision_DECISION_DENY || d.GetReasons()[0].GetCode() != "session_revoked" {
		t.Fatalf("decide after revoke: %v %v", d, err)
	}

	// SIGTERM: health goes NOT_SERVING, calls drain, the process exits cleanly.
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var msgs []string
	for rec := range srv.logs {
		msgs = append(msgs, rec["msg"].(string))
	}
	if err := <-srv.done; err != nil {
		t.Fatalf("arbiter serve exited with %v after SIGTERM", err)
	}
	if !containsString(msgs, "shutting down") || !containsString(msgs, "stopped") {
		t.Errorf("shutdown log %v", msgs)
	}
}

func TestServeRefusesNonLoopback(t *testing.T) {
	out, err := exec.Command(arbiterBinary(t), "serve", "--grpc-addr", "0.0.0.0:0").CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 {
		t.Fatalf("serve on 0.0.0.0 exited with %v, want status 1", err)
	}
	if !strings.Contains(string(out), "only listens on loopback") {
		t.Errorf("message %q does not say why", out)
	}

	// With callers authenticated, off loopback the tokens must not cross the network in clear:
	// TLS, or --insecure-plaintext said out loud.
	tokens := filepath.Join(t.TempDir(), "admin.tokens")
	if err := os.WriteFile(tokens, []byte(adminToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = exec.Command(arbiterBinary(t), "serve", "--grpc-addr", "0.0.0.0:0", "--admin-token-file", tokens).CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 || !strings.Contains(string(out), "in clear") ||
		!strings.Contains(string(out), "--grpc-tls-cert") {
		t.Fatalf("tokens without TLS on 0.0.0.0: %v %s", err, out)
	}
	// (the listener binds every interface, on a free port)
	srv := serveBinary(t, "--grpc-addr", "0.0.0.0:0", "--admin-token-file", tokens, "--insecure-plaintext")
	if !strings.HasPrefix(srv.grpcAddr, "[::]:") && !strings.HasPrefix(srv.grpcAddr, "0.0.0.0:") {
		t.Errorf("serving on %s, want all interfaces", srv.grpcAddr)
	}

	// A token file with a short token is refused at start.
	short := filepath.Join(t.TempDir(), "short.tokens")
	os.WriteFile(short, []byte("tooshort\n"), 0o600)
	out, err = exec.Command(arbiterBinary(t), "serve", "--admin-token-file", short).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "shorter than 16 bytes") {
		t.Errorf("short token: %v %s", err, out)
	}
}

// TestServeRefusesABadDecisionLogFlushInterval: the flag is named, and nothing is served.
func TestServeRefusesABadDecisionLogFlushInterval(t *testing.T) {
	out, err := exec.Command(arbiterBinary(t), "serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--decision-log-flush-interval", "-5ms").CombinedOutput()
	if exit, ok := err.(*exec.ExitError); !ok || exit.ExitCode() != 1 {
		t.Fatalf("serve with a negative flush interval exited with %v, want status 1", err)
	}
	if !strings.Contains(string(out), "--decision-log-flush-interval: -5ms is negative") || strings.Contains(string(out), "arbiter serving") {
		t.Errorf("message %q does not name the flag, or the service started", out)
	}
}

// TestEvalGolden runs `arbiter eval` on every testdata/eval/*.input.json and compares result,
// reasons and labels with the matching .want.json.
func TestEvalGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/eval/*.input.json")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no eval inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".input.json")
		t.Run(name, func(t *testing.T) {
			out, err := exec.Command(arbiterBinary(t), "eval", "--input", in).Output()
			if err != nil {
				t.Fatalf("arbiter eval: %v", err)
			}
			var got, want struct {
				Result  string           `json:"result"`
				Reasons []map[string]any `json:"reasons"`
				Labels  []string         `json:"labels"`
			}
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatalf("eval output %q: %v", out, err)
			}
			raw, err := os.ReadFile(strings.TrimSuffix(in, ".input.json") + ".want.json")
			if err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(raw, &want); err != nil {
				t.Fatal(err)
			}
			if got.Result != want.Result || len(got.Reasons) != len(want.Reasons) || strings.Join(got.Labels, ",") != strings.Join(want.Labels, ",") {
				t.Fatalf("got %s\nwant %s", out, raw)
			}
			for i := range want.Reasons {
				if got.Reasons[i]["code"] != want.Reasons[i]["code"] {
					t.Errorf("reason %d: %v, want %v", i, got.Reasons[i], want.Reasons[i])
				}
			}
		})
	}
	out, err := exec.Command(arbiterBinary(t), "eval", "--input", "testdata/missing.json").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--input") {
		t.Errorf("eval of a missing file: %v %s", err, out)
	}
}

// TestServePprof: --pprof serves Go profiles on the admin listener to admin tokens only, and
// nothing is served there without the flag.
func TestServePprof(t *testing.T) {
	dir := t.TempDir()
	adminFile, gatewayFile := filepath.Join(dir, "admin"), filepath.Join(dir, "gateway")
	os.WriteFile(adminFile, []byte("ops "+adminToken+"\n"), 0o600)
	os.WriteFile(gatewayFile, []byte("edge "+gatewayToken+"\n"), 0o600)
	get := func(srv *running, token string) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+srv.adminAddr+"/debug/pprof/goroutine?debug=1", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && !strings.Contains(string(body), "goroutine profile") {
			t.Errorf("200 without a goroutine profile: %.200s", body)
		}
		return resp.StatusCode
	}
	tokens := []string{"--admin-token-file", adminFile, "--gateway-token-file", gatewayFile}
	on := serveBinary(t, append(tokens, "--pprof")...)
	for token, want := range map[string]int{adminToken: 200, gatewayToken: 403, "": 401, "wrong-token-0123456789": 401} {
		if got := get(on, token); got != want {
			t.Errorf("with --pprof, token %q: HTTP %d, want %d", token, got, want)
		}
	}
	off := serveBinary(t, tokens...)
	if got := get(off, adminToken); got != http.StatusNotFound {
		t.Errorf("without --pprof: HTTP %d, want 404", got)
	}
}
