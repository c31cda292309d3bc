package bench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"

	"github.com/arbiter-mcp/arbiter/bundles"
	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/grpcapi"
	"github.com/arbiter-mcp/arbiter/engine/state"
	"github.com/arbiter-mcp/arbiter/internal/gctune"
)

// The servers under test run in child processes of the harness: the harness binary started
// again with ChildEnv set. Each server then has its own Go runtime, heap and RSS, as OPA's
// server does, and the load generator (the parent) shares nothing with it but the CPUs.

// ChildEnv names the environment variable that turns the harness binary into a server.
const ChildEnv = "ARBITER_BENCH_CHILD"

// GCLimitEnv sets the library and no-op servers' highest GC percent, as --gogc does for arbiter
// serve (e.g. -server-env ARBITER_BENCH_GOGC=400).
const GCLimitEnv = "ARBITER_BENCH_GOGC"

// Server roles a child can play.
const (
	RoleArbiter = "arbiter"
	RoleNoop    = "noop"
)

type childSpec struct {
	Role string `json:"role"`
}

// childAddrs is the line a child prints on stdout once it serves.
type childAddrs struct {
	GRPC    string `json:"grpc"`
	Control string `json:"control"`
}

// RunChildIfRequested serves as a child server and exits when ChildEnv is set; otherwise it
// returns at once. Call it first thing in main (and in TestMain of tests that run the harness).
func RunChildIfRequested() {
	raw := os.Getenv(ChildEnv)
	if raw == "" {
		return
	}
	var spec childSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", ChildEnv, err)
		os.Exit(2)
	}
	if err := serveChild(spec); err != nil {
		fmt.Fprintf(os.Stderr, "bench child %s: %v\n", spec.Role, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serveChild serves until its standard input closes, which happens when the parent stops it
// or dies.
func serveChild(spec childSpec) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var (
		gs  *grpc.Server
		ctl *control
		err error
	)
	// Both servers tune the collector as arbiter serve does: a transport baseline collecting
	// at the runtime's default target spends much more CPU per call on collections than the
	// same transport in Arbiter's process (BENCHMARKS.md, session 16).
	if os.Getenv("GOGC") == "" {
		limit := gctune.DefaultLimit // as arbiter serve does, unless its --gogc is passed on
		if v, err := strconv.Atoi(os.Getenv(GCLimitEnv)); err == nil {
			limit = v
		}
		if limit > 0 { // as serve: --gogc 0 leaves the runtime's setting alone
			go gctune.Run(ctx, limit, time.Second)
		}
	}
	switch spec.Role {
	case RoleNoop:
		gs, err = NewNoopServer()
		ctl = &control{}
	case RoleArbiter:
		gs, ctl, err = newArbiterServer(ctx)
	default:
		err = fmt.Errorf("unknown role %q", spec.Role)
	}
	if err != nil {
		return err
	}
	gln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	cln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go gs.Serve(gln)
	hs := &http.Server{Handler: ctl.mux(), ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(cln)

	line, _ := json.Marshal(childAddrs{GRPC: gln.Addr().String(), Control: cln.Addr().String()})
	fmt.Fprintf(os.Stdout, "%s\n", line)

	_, _ = io.Copy(io.Discard, os.Stdin) // until the parent closes it
	hs.Close()
	gs.Stop()
	return nil
}

// newArbiterServer composes Arbiter as `arbiter serve` does (engine, grpcapi service and
// server with its pooled stream workers, no tokens, reaper), on the harness policy.
func newArbiterServer(ctx context.Context) (*grpc.Server, *control, error) {
	p, err := Policy(0)
	if err != nil {
		return nil, nil, err
	}
	eng, err := engine.New(ctx, engine.Config{}, p)
	if err != nil {
		return nil, nil, err
	}
	auth, err := grpcapi.NewAuthenticator(nil)
	if err != nil {
		return nil, nil, err
	}
	gs := grpcapi.NewServer(grpcapi.New(eng, grpcapi.Config{}), health.NewServer(), auth)
	go eng.RunReaper(ctx, time.Minute, time.Hour)
	// The bundle API as `arbiter serve` mounts it on its admin listener (bundles in memory).
	mgr := bundles.NewManager(bundles.Config{Fallback: bundles.Policy(p)}, engineActivator{eng})
	return gs, &control{engine: eng, bundles: bundles.Handler(mgr, localAdmin{})}, nil
}

// engineActivator lets the bundle manager prepare policies on the engine, as in serve.go.
type engineActivator struct{ eng *engine.Engine }

func (a engineActivator) Prepare(ctx context.Context, p bundles.Policy) (func(), error) {
	pq, err := a.eng.Prepare(ctx, engine.Policy(p))
	if err != nil {
		return nil, err
	}
	return func() { a.eng.Swap(pq) }, nil
}

// localAdmin lets every caller change bundles, as a service without token files does.
type localAdmin struct{}

func (localAdmin) Authorize(string) (string, bool, bool) { return "bench", true, true }

// control is a child's HTTP control API: memory figures, session pre-fill, policy
// activation through the engine, profiling, and the bundle API (PUT /v1/bundles/{name}).
type control struct {
	engine  *engine.Engine
	bundles http.Handler

	mu       sync.Mutex
	prefills int
	cpu      *os.File
}

func (c *control) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, c.stats(r.URL.Query().Get("gc") == "1"))
	})
	m.HandleFunc("POST /prefill", c.handlePrefill)
	m.HandleFunc("POST /activate", c.handleActivate)
	m.HandleFunc("POST /profile/start", c.handleProfileStart)
	m.HandleFunc("POST /profile/stop", c.handleProfileStop)
	if c.bundles != nil {
		m.Handle("/v1/bundles", c.bundles)
		m.Handle("/v1/bundles/", c.bundles)
	}
	return m
}

// MemStats is a server's memory: Go heap and the process's resident set.
type MemStats struct {
	HeapAlloc uint64 `json:"heap_alloc"`
	HeapSys   uint64 `json:"heap_sys"`
	RSS       uint64 `json:"rss"`
	PeakRSS   uint64 `json:"peak_rss"`
	NumGC     uint32 `json:"num_gc"`
	// GCCPUFraction is the share of the process's CPU time the collector has used since it
	// started.
	GCCPUFraction float64 `json:"gc_cpu_fraction"`
	// PauseTotal is the collector's stop-the-world time since the process started.
	PauseTotal time.Duration `json:"pause_total"`
	Sessions   int           `json:"sessions"`
	Revision   string        `json:"revision"`
}

// stats reads memory figures; with gc, after a collection that also returns free memory to
// the OS, so the heap is the live heap and the RSS what it needs.
func (c *control) stats(gc bool) MemStats {
	if gc {
		runtime.GC()
		debug.FreeOSMemory()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	out := MemStats{HeapAlloc: ms.HeapAlloc, HeapSys: ms.HeapSys, NumGC: ms.NumGC, GCCPUFraction: ms.GCCPUFraction, PauseTotal: time.Duration(ms.PauseTotalNs)}
	out.RSS, out.PeakRSS = procStatus("VmRSS:"), procStatus("VmHWM:")
	if c.engine != nil {
		out.Sessions = c.engine.Store().Count()
		out.Revision = c.engine.Revision()
	}
	return out
}

// procStatus reads a kB figure of /proc/self/status, in bytes (0 where there is none).
func procStatus(key string) uint64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	return statusField(string(raw), key)
}

// PrefillResult is what growing the store cost.
type PrefillResult struct {
	Added   int           `json:"added"`
	Took    time.Duration `json:"took"`
	Before  MemStats      `json:"before"`
	After   MemStats      `json:"after"`
	Message string        `json:"message,omitempty"`
}

// handlePrefill grows the store to ?to=N sessions by storing active sessions exactly as
// OpenSession stores them (state.Store.Open), without paying a policy evaluation for each.
func (c *control) handlePrefill(w http.ResponseWriter, r *http.Request) {
	if c.engine == nil {
		http.Error(w, "no store", http.StatusBadRequest)
		return
	}
	to, err := strconv.Atoi(r.URL.Query().Get("to"))
	if err != nil {
		http.Error(w, "to: "+err.Error(), http.StatusBadRequest)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	res := PrefillResult{Before: c.stats(true)}
	start := time.Now()
	store := c.engine.Store()
	now := time.Now()
	rev := c.engine.Revision()
	for n := res.Before.Sessions; n < to; n++ {
		c.prefills++
		i := c.prefills
		sess := &state.Session{
			ID:             prefillID(now),
			Status:         state.StatusActive,
			ClientID:       fmt.Sprintf("https://agent-%04d.example.com/.well-known/client.json", i%1000),
			SubjectID:      fmt.Sprintf("user-%07d@example.com", i),
			Servers:        []string{"github", "filesystem"},
			CreatedAt:      now,
			ExpiresAt:      now.Add(time.Hour),
			PolicyRevision: rev,
		}
		if err := store.Open(sess, nil); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		res.Added++
	}
	res.Took = time.Since(start)
	res.After = c.stats(true)
	writeJSON(w, res)
}

var prefillEncoding = base32.NewEncoding("0123456789abcdefghjkmnpqrstvwxyz").WithPadding(base32.NoPadding)

// prefillID has the shape and length of the engine's session ids.
func prefillID(now time.Time) string {
	var b [20]byte
	binary.BigEndian.PutUint64(b[:8], uint64(now.UnixMilli())<<16)
	_, _ = rand.Read(b[6:])
	return "ses_" + prefillEncoding.EncodeToString(b[:])
}

// ActivateResult is one policy activation.
type ActivateResult struct {
	Revision string        `json:"revision"`
	Took     time.Duration `json:"took"`
}

// handleActivate makes Policy(?rev=N) the active policy through the engine's own API: load
// and parse the policy files, compile, prepare, swap — what a bundle push will do.
func (c *control) handleActivate(w http.ResponseWriter, r *http.Request) {
	if c.engine == nil {
		http.Error(w, "no engine", http.StatusBadRequest)
		return
	}
	rev, err := strconv.Atoi(r.URL.Query().Get("rev"))
	if err != nil {
		http.Error(w, "rev: "+err.Error(), http.StatusBadRequest)
		return
	}
	start := time.Now()
	p, err := Policy(rev)
	if err == nil {
		err = c.engine.Activate(r.Context(), p)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusUnprocessableEntity)
		return
	}
	writeJSON(w, ActivateResult{Revision: p.Revision, Took: time.Since(start)})
}

func (c *control) handleProfileStart(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Query().Get("cpu")
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cpu != nil {
		http.Error(w, "already profiling", http.StatusConflict)
		return
	}
	f, err := os.Create(path)
	if err == nil {
		err = pprof.StartCPUProfile(f)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	c.cpu = f
	w.WriteHeader(http.StatusNoContent)
}

// handleProfileStop ends the CPU profile and writes the allocation profile (?allocs=FILE).
func (c *control) handleProfileStop(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cpu != nil {
		pprof.StopCPUProfile()
		c.cpu.Close()
		c.cpu = nil
	}
	if path := r.URL.Query().Get("allocs"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}

// Child is a running child server.
type Child struct {
	Role string
	// GRPC and Control are the child's listen addresses.
	GRPC, Control string

	cmd   *exec.Cmd
	stdin io.WriteCloser
	done  chan error
	http  *http.Client
}

// PID is the child's process.
func (c *Child) PID() int { return c.cmd.Process.Pid }

// StartChild starts exe (the harness binary) as a server of role, with env added to its
// environment. Its standard error goes to logw.
func StartChild(ctx context.Context, exe string, spec childSpec, env []string, logw io.Writer) (*Child, error) {
	role := spec.Role
	raw, _ := json.Marshal(spec)
	cmd := exec.Command(exe)
	cmd.Env = append(append(os.Environ(), env...), ChildEnv+"="+string(raw))
	cmd.Stderr = logw
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s server: %w", role, err)
	}
	c := &Child{Role: role, cmd: cmd, stdin: stdin, done: make(chan error, 1), http: &http.Client{}}
	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		if sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		_, _ = io.Copy(io.Discard, stdout)
	}()
	go func() { c.done <- cmd.Wait() }()
	select {
	case line, ok := <-lines:
		var addrs childAddrs
		if !ok || json.Unmarshal([]byte(line), &addrs) != nil {
			c.Stop()
			return nil, fmt.Errorf("%s server did not start (line %q)", role, line)
		}
		c.GRPC, c.Control = addrs.GRPC, addrs.Control
		return c, nil
	case <-time.After(60 * time.Second):
		c.Stop()
		return nil, fmt.Errorf("%s server did not start within 60s", role)
	case <-ctx.Done():
		c.Stop()
		return nil, ctx.Err()
	}
}

// Stop ends the child: its standard input closes, and it is killed if it lingers.
func (c *Child) Stop() {
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		_ = c.cmd.Process.Kill()
		<-c.done
	}
}

// do calls the control API and decodes a JSON answer into out (when not nil).
func (c *Child) do(ctx context.Context, method, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.Control+path, nil)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(body))
	}
	if out != nil {
		return json.Unmarshal(body, out)
	}
	return nil
}

// Stats reads the child's memory figures (after a collection when gc is set).
func (c *Child) Stats(ctx context.Context, gc bool) (MemStats, error) {
	var st MemStats
	path := "/stats"
	if gc {
		path += "?gc=1"
	}
	err := c.do(ctx, http.MethodGet, path, &st)
	return st, err
}

// Prefill grows the child's store to total sessions.
func (c *Child) Prefill(ctx context.Context, total int) (PrefillResult, error) {
	var res PrefillResult
	err := c.do(ctx, http.MethodPost, fmt.Sprintf("/prefill?to=%d", total), &res)
	return res, err
}

// Activate activates policy revision rev in the child.
func (c *Child) Activate(ctx context.Context, rev int) (ActivateResult, error) {
	var res ActivateResult
	err := c.do(ctx, http.MethodPost, fmt.Sprintf("/activate?rev=%d", rev), &res)
	return res, err
}

// StartProfile starts a CPU profile of the child written to cpuFile.
func (c *Child) StartProfile(ctx context.Context, cpuFile string) error {
	abs, err := filepath.Abs(cpuFile)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/profile/start?cpu="+url.QueryEscape(abs), nil)
}

// StopProfile ends the CPU profile and writes the allocation profile to allocsFile.
func (c *Child) StopProfile(ctx context.Context, allocsFile string) error {
	abs, err := filepath.Abs(allocsFile)
	if err != nil {
		return err
	}
	return c.do(ctx, http.MethodPost, "/profile/stop?allocs="+url.QueryEscape(abs), nil)
}
