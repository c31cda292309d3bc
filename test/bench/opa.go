package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"
)

// opaModule is the module whose version go.mod pins; the harness builds `opa` from it.
const opaModule = "github.com/open-policy-agent/opa"

// OPAVersion is the OPA module version this binary was built with, which is the one go.mod
// pins.
func OPAVersion() (string, error) {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == opaModule {
				if d.Replace != nil {
					return d.Replace.Version, nil
				}
				return d.Version, nil
			}
		}
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", opaModule).Output()
	if err != nil {
		return "", fmt.Errorf("find the OPA version in go.mod: %w", err)
	}
	return strings.TrimSpace(string(out)), nil
}

// OPACachePath is where BuildOPA keeps the opa binary of version.
func OPACachePath(version string) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "arbiter-bench", "opa-"+version, "opa"), nil
}

// BuildOPA returns the opa binary of version, building it with `go install opa@version` into
// the user cache the first time. The build runs outside this module (in a temporary
// directory, GOFLAGS and GOWORK cleared), so it needs nothing of go.mod or go.sum and changes
// neither; its sources come from the Go module proxy or the module cache.
func BuildOPA(ctx context.Context, version string, logw io.Writer) (string, error) {
	bin, err := OPACachePath(version)
	if err != nil {
		return "", err
	}
	if info, err := os.Stat(bin); err == nil && info.Mode().IsRegular() {
		return bin, nil
	}
	tmp, err := os.MkdirTemp("", "arbiter-bench-opa-build")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(logw, "building opa %s into %s (once; later runs reuse it)\n", version, filepath.Dir(bin))
	cmd := exec.CommandContext(ctx, "go", "install", opaModule+"@"+version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %w", opaModule, version, err)
	}
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	// Rename into place so a concurrent run never sees a half-written binary.
	if err := os.Rename(filepath.Join(tmp, "opa"), bin); err != nil {
		return "", fmt.Errorf("cache opa: %w", err)
	}
	return bin, nil
}

// OPAServer is a running `opa run --server`.
type OPAServer struct {
	Addr string
	cmd  *exec.Cmd
	done chan error
}

// PID is the server's process; 0 for none (an OPA server the harness did not start).
func (o *OPAServer) PID() int {
	if o == nil {
		return 0
	}
	return o.cmd.Process.Pid
}

// StartOPA runs `opa run --server` on a free loopback port serving files, and waits until its
// /health answers.
func StartOPA(ctx context.Context, bin string, files []string, logw io.Writer) (*OPAServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	args := append([]string{"run", "--server", "--addr", addr, "--log-level", "error", "--skip-version-check"}, files...)
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logw, logw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start opa: %w", err)
	}
	s := &OPAServer{Addr: addr, cmd: cmd, done: make(chan error, 1)}
	go func() { s.done <- cmd.Wait() }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
		select {
		case err := <-s.done:
			return nil, fmt.Errorf("opa exited: %v", err)
		case <-ctx.Done():
			s.Stop()
			return nil, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return nil, fmt.Errorf("opa did not become healthy within 60s")
		}
	}
}

// Stop interrupts OPA and waits for it.
func (s *OPAServer) Stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// DecisionPath is OPA's REST path of the decision Arbiter asks for (data.mcp.decision).
const DecisionPath = "/v1/data/mcp/decision"

// RESTClient asks an OPA-compatible REST server for decisions.
type RESTClient struct {
	url    string
	client *http.Client
	// bodies[k] is {"input": ...} for template k of Mix.
	bodies [][]byte
}

// NewRESTClient prepares the request bodies from the engine's input documents (see
// InputDocuments) and a client with enough keep-alive connections for maxConns callers:
// HTTP/1.1 carries one request at a time per connection.
func NewRESTClient(addr string, docs []map[string]any, maxConns int) (*RESTClient, error) {
	c := &RESTClient{
		url: "http://" + addr + DecisionPath,
		client: &http.Client{Transport: &http.Transport{
			MaxIdleConns:        maxConns,
			MaxIdleConnsPerHost: maxConns,
			DisableCompression:  true,
			IdleConnTimeout:     time.Minute,
		}},
	}
	for _, d := range docs {
		body, err := json.Marshal(map[string]any{"input": d})
		if err != nil {
			return nil, err
		}
		c.bodies = append(c.bodies, body)
	}
	return c, nil
}

// Close drops the idle connections.
func (c *RESTClient) Close() { c.client.CloseIdleConnections() }

type restAnswer struct {
	Result *struct {
		Result string `json:"result"`
	} `json:"result"`
}

// DecideCall posts the input of a template of the mix, by weight. Unless want is nil, an
// outcome other than want[k] for template k is a failed decision.
func (c *RESTClient) DecideCall(want []Outcome) CallFunc {
	var picks [100]int
	for i := range picks {
		picks[i] = pick(i)
	}
	return func(ctx context.Context, w *Worker) (Answer, error) {
		k := picks[w.Rand.IntN(100)]
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(c.bodies[k]))
		if err != nil {
			return Answer{}, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := c.client.Do(req)
		if err != nil {
			return Answer{}, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return Answer{}, err
		}
		if resp.StatusCode != http.StatusOK {
			return Answer{}, fmt.Errorf("%s: %.200s", resp.Status, body)
		}
		var ans restAnswer
		if err := json.Unmarshal(body, &ans); err != nil {
			return Answer{}, fmt.Errorf("decode answer: %w", err)
		}
		if ans.Result == nil {
			return Answer{}, fmt.Errorf("undefined decision")
		}
		a := Answer{Outcome: outcomeNamed(ans.Result.Result)}
		if a.Unexpected = want != nil && a.Outcome != want[k]; a.Unexpected {
			a.Detail = Mix[k].Name + ": " + a.Outcome.String()
		}
		return a, nil
	}
}

func outcomeNamed(s string) Outcome {
	switch s {
	case "allow":
		return OutcomeAllow
	case "deny":
		return OutcomeDeny
	case "require_approval":
		return OutcomeApproval
	}
	return OutcomeOther
}
