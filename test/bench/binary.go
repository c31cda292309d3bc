package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// arbiterPackage is the service's binary, built by the harness and run as `arbiter serve`.
const arbiterPackage = "github.com/arbiter-mcp/arbiter/cmd/arbiter"

// BuildArbiter builds `arbiter` from the module the working directory is in, into dir.
func BuildArbiter(ctx context.Context, dir string, logw io.Writer) (string, error) {
	bin := filepath.Join(dir, "arbiter")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, arbiterPackage)
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build %s (run the harness from the repository, or pass the binary): %w", arbiterPackage, err)
	}
	return bin, nil
}

// ArbiterProcess is a running `arbiter serve`.
type ArbiterProcess struct {
	// GRPC and Admin are its listen addresses (the admin listener carries the bundle API).
	GRPC, Admin string
	// Args are the serve flags it runs with.
	Args []string

	cmd         *exec.Cmd
	done        chan error
	logBytes    atomic.Int64
	logRecords  atomic.Int64
	stdoutDone  chan struct{}
	stopTimeout time.Duration
}

// StartArbiterBinary runs `bin serve` on loopback port 0 with the policy in policyDir and the
// extra serve flags (and env added to its environment), and waits until it logs that it serves. Its decision log (stdout by
// default) is read and counted; its service log goes to logw.
func StartArbiterBinary(ctx context.Context, bin, policyDir string, extra, env []string, logw io.Writer) (*ArbiterProcess, error) {
	args := append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--policy", policyDir, "--log-format", "json"}, extra...)
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start arbiter: %w", err)
	}
	p := &ArbiterProcess{Args: args[1:], cmd: cmd, done: make(chan error, 1), stdoutDone: make(chan struct{}), stopTimeout: 15 * time.Second}
	go func() {
		defer close(p.stdoutDone)
		r := bufio.NewReaderSize(stdout, 1<<16)
		for {
			line, err := r.ReadSlice('\n')
			p.logBytes.Add(int64(len(line)))
			if err == nil {
				p.logRecords.Add(1)
			} else if err != bufio.ErrBufferFull {
				return
			}
		}
	}()
	ready := make(chan [2]string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		sent := false
		for sc.Scan() {
			line := sc.Bytes()
			var rec struct {
				Msg   string `json:"msg"`
				GRPC  string `json:"grpc_addr"`
				Admin string `json:"admin_addr"`
			}
			if !sent && json.Unmarshal(line, &rec) == nil && rec.Msg == "arbiter serving" {
				ready <- [2]string{rec.GRPC, rec.Admin}
				sent = true
			}
			fmt.Fprintf(logw, "arbiter: %s\n", line)
		}
		if !sent {
			close(ready)
		}
	}()
	go func() {
		<-p.stdoutDone
		p.done <- cmd.Wait()
	}()
	select {
	case addrs, ok := <-ready:
		if !ok {
			p.Stop()
			return nil, fmt.Errorf("arbiter serve exited before serving")
		}
		p.GRPC, p.Admin = addrs[0], addrs[1]
		return p, nil
	case <-time.After(60 * time.Second):
		p.Stop()
		return nil, fmt.Errorf("arbiter serve did not start within 60s")
	case <-ctx.Done():
		p.Stop()
		return nil, ctx.Err()
	}
}

// DecisionLog is how many records and bytes the service wrote to its decision log on stdout.
func (p *ArbiterProcess) DecisionLog() (records, bytes int64) {
	return p.logRecords.Load(), p.logBytes.Load()
}

// RSS is the process's resident set now and at its peak, from /proc.
func (p *ArbiterProcess) RSS() (rss, peak uint64) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0, 0
	}
	return statusField(string(raw), "VmRSS:"), statusField(string(raw), "VmHWM:")
}

// Stop sends SIGTERM (a graceful stop) and kills the process if it lingers.
func (p *ArbiterProcess) Stop() {
	_ = p.cmd.Process.Signal(os.Interrupt)
	select {
	case <-p.done:
	case <-time.After(p.stopTimeout):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// statusField reads a kB figure of a /proc status file, in bytes (0 where there is none).
func statusField(status, key string) uint64 {
	for line := range strings.SplitSeq(status, "\n") {
		if rest, ok := strings.CutPrefix(line, key); ok {
			kb, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Evaluator is what decides for the serving revision, from the service's
// arbiter_policy_evaluator metric: "ir" (its plan) or "topdown".
func (p *ArbiterProcess) Evaluator(ctx context.Context) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Admin+"/metrics", nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	for line := range strings.Lines(string(body)) {
		if rest, ok := strings.CutPrefix(line, `arbiter_policy_evaluator{evaluator="`); ok {
			if name, value, ok := strings.Cut(rest, `"} `); ok && strings.TrimSpace(value) == "1" {
				return name, nil
			}
		}
	}
	return "", fmt.Errorf("GET /metrics: no arbiter_policy_evaluator sample")
}

// Profile runs run while the process (started with --pprof) records a CPU profile of seconds
// seconds into cpuPath, then writes its allocation profile into allocsPath.
func (p *ArbiterProcess) Profile(ctx context.Context, seconds int, cpuPath, allocsPath string, run func()) error {
	fetch := func(path, file string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.Admin+path, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			return fmt.Errorf("GET %s: %s: %s", path, resp.Status, strings.TrimSpace(string(msg)))
		}
		f, err := os.Create(file)
		if err != nil {
			return err
		}
		if _, err := io.Copy(f, resp.Body); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	cpu := make(chan error, 1)
	go func() { cpu <- fetch("/debug/pprof/profile?seconds="+strconv.Itoa(seconds), cpuPath) }()
	run()
	if err := <-cpu; err != nil {
		return err
	}
	return fetch("/debug/pprof/allocs", allocsPath)
}
