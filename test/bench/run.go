package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"
)

// Scenario names, in the order a run performs them.
const (
	ScenarioCompare   = "compare"   // closed loop: no-op gRPC vs Arbiter vs OPA REST, interleaved rounds
	ScenarioOpen      = "open"      // open loop at one rate: the three again, for p99 at equal load
	ScenarioDiscovery = "discovery" // FilterTools over 500 tools vs Decide
	ScenarioSwap      = "swap"      // a new policy revision every second under load
	ScenarioScale     = "scale"     // the same load with 1,000 and 1,000,000 live sessions
	ScenarioInProcess = "inprocess" // engine vs raw OPA in this process
)

// AllScenarios is every scenario, in run order.
var AllScenarios = []string{ScenarioCompare, ScenarioOpen, ScenarioDiscovery, ScenarioSwap, ScenarioScale, ScenarioInProcess}

// Config is one harness run. Zero values take the defaults noted.
type Config struct {
	// Duration of each measurement (10s) and the warm-up before it (2s).
	Duration, Warmup time.Duration
	// Rounds of the closed-loop comparison, interleaved no-op, Arbiter, OPA (3).
	Rounds int
	// Concurrency is the number of closed-loop callers (32).
	Concurrency int
	// Conns is the number of gRPC connections the generator spreads its callers over (4).
	Conns int
	// Rate is the open-loop rate of the comparison, requests/s (0: half the lower of Arbiter's
	// and OPA's closed-loop throughput). ArbiterRate is the rate of the swap and scale
	// scenarios (0: half of Arbiter's closed-loop throughput).
	Rate, ArbiterRate float64
	// MaxInFlight bounds outstanding open-loop requests (512).
	MaxInFlight int
	// LoadSessions is how many sessions the load runs in, opened through the API (200).
	LoadSessions int
	// ScaleSessions are the store sizes of the scale scenario (1,000 and 1,000,000).
	ScaleSessions []int
	// ScaleDuration is the scale scenario's open-loop measurement at each size (60s): long
	// enough to take in a collection cycle with a million sessions, whose heap goal the load
	// reaches only every half minute or so on the benchmark machine. The load that settles
	// the server before it runs for at most three times as long.
	ScaleDuration time.Duration
	// ScaleRounds is how many windows ScaleDuration is split into, alternating between the
	// sizes (3).
	ScaleRounds int
	// SwapDuration and SwapInterval: activations during load (30s, every 1s).
	SwapDuration, SwapInterval time.Duration
	// Arbiter is the server the comparison, discovery and swap scenarios measure:
	// ArbiterBinary (default) or ArbiterLib. ArbiterBin is a prebuilt `arbiter` (default:
	// built from this module); ArbiterArgs are extra `arbiter serve` flags.
	Arbiter     string
	ArbiterBin  string
	ArbiterArgs []string
	// ServerEnv is added to the environment of the Arbiter servers (e.g. GOGC=400); its
	// collector settings (collectorEnv) go to the no-op server too.
	ServerEnv []string
	// PolicyDir, when set, is the directory of the policy every server decides with, for the
	// report (PolicyDirEnv, set by the caller, is what makes the servers use it).
	PolicyDir string
	// SwapVia is how revisions are activated: SwapViaPush (the bundle API, default) or
	// SwapViaEngine (the engine's Activate).
	SwapVia string
	// InProcessDuration of each in-process benchmark (2s), over InProcessSessions sessions (64).
	InProcessDuration time.Duration
	InProcessSessions int
	// FilterTools is how many tools a FilterTools call lists (500).
	FilterTools int
	// Scenarios to run (all).
	Scenarios []string
	// OPA is the opa binary; empty builds it from the module version in go.mod (cached).
	OPA string
	// OPAAddr uses an already running OPA-compatible REST server instead of starting one.
	OPAAddr string
	// SkipOPA leaves out the OPA baseline.
	SkipOPA bool
	// ProfileDir, when set, receives CPU and allocation profiles of the server under test in
	// the first closed-loop Decide round (the binary serves them with --pprof), of the no-op
	// server in the same round, just before Arbiter's (noop-decide), and of the library server
	// under Decide and FilterTools.
	ProfileDir string
	// Executable is the harness binary that children run as (os.Executable()).
	Executable string
	// Log receives progress (os.Stderr).
	Log io.Writer
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.Duration, 10*time.Second)
	def(&c.Warmup, 2*time.Second)
	def(&c.SwapDuration, 30*time.Second)
	def(&c.SwapInterval, time.Second)
	def(&c.InProcessDuration, 2*time.Second)
	def(&c.ScaleDuration, time.Minute)
	if c.ScaleRounds <= 0 {
		c.ScaleRounds = 3
	}
	if c.Rounds <= 0 {
		c.Rounds = 3
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	if c.Conns <= 0 {
		c.Conns = 4
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = 512
	}
	if c.LoadSessions <= 0 {
		c.LoadSessions = 200
	}
	if len(c.ScaleSessions) == 0 {
		c.ScaleSessions = []int{1000, 1000000}
	}
	if len(c.Scenarios) == 0 {
		c.Scenarios = AllScenarios
	}
	if c.InProcessSessions <= 0 {
		c.InProcessSessions = 64
	}
	if c.FilterTools <= 0 {
		c.FilterTools = ToolboxTools
	}
	if c.Arbiter == "" {
		c.Arbiter = ArbiterBinary
	}
	if c.SwapVia == "" {
		c.SwapVia = SwapViaPush
	}
	if c.Log == nil {
		c.Log = os.Stderr
	}
}

func (c *Config) has(s string) bool { return slices.Contains(c.Scenarios, s) }

// Report is everything a run measured.
type Report struct {
	Config     Config
	Machine    Machine
	OPAVersion string
	OPASource  string
	LoadBefore string
	LoadAfter  string
	Started    time.Time
	Took       time.Duration
	// Calibration is what the policy answers each request of the mix.
	Calibration *Calibration
	// Server is the kind of Arbiter server the main scenarios measured; ArbiterArgs its serve
	// flags and ArbiterBin the prebuilt binary it ran, if one was given (binary only).
	Server      string
	ArbiterArgs []string
	ArbiterBin  string
	// DecisionLogRecords and DecisionLogBytes are what the binary wrote to its decision log;
	// ServerRSS and ServerPeakRSS its resident set at the end and at its peak.
	DecisionLogRecords, DecisionLogBytes int64
	ServerRSS, ServerPeakRSS             uint64
	// ProfileRuns are the closed-loop runs made on the library server while profiling it.
	ProfileRuns map[string]*Stats

	Compare   *CompareResult
	Open      *OpenResult
	Discovery *DiscoveryResult
	Swap      *SwapResult
	Scale     *ScaleResult
	InProcess []InProcessResult
	// Profiles lists the profile files written.
	Profiles []string
}

// CompareResult is the closed-loop comparison, one entry per round.
type CompareResult struct {
	Noop, Arbiter, OPA []*Stats
}

// OpenResult is the open-loop comparison at one rate.
type OpenResult struct {
	Rate               float64
	Noop, Arbiter, OPA *Stats
}

// DiscoveryResult compares FilterTools over 500 tools with Decide, same callers.
type DiscoveryResult struct {
	Decide, Filter *Stats
}

// SwapResult is the policy swap scenario.
type SwapResult struct {
	Via  string
	Rate float64
	// Steady is the load without swaps: SteadyBefore and SteadyAfter, the windows before and
	// after the swapping phase, merged.
	Steady, Swapping          *Stats
	SteadyBefore, SteadyAfter *Stats
	Activations               int
	ActivationErrors          []string
	// ActivationTook is each activation's time in the server (load, compile, prepare, swap).
	ActivationTook []time.Duration
	// Evaluator is what decided for the last revision pushed, read from the binary's metrics:
	// "ir" when the policy's plan did, "topdown" when OPA's evaluator did (the figures then do
	// not measure the plan); "" when not known (the library server).
	Evaluator string
}

// ScalePoint is the load at one store size.
type ScalePoint struct {
	Sessions int
	Rate     float64
	Closed   *Stats
	// Open is the open-loop windows (OpenWindows, alternated with the other sizes') merged.
	Open        *Stats
	OpenWindows []*Stats
	// Idle is the server's memory after a collection at this size; Settled after the load
	// that settles it (see settle); Loaded at the open-loop run's end. Only Idle forces a
	// collection.
	Idle, Settled, Loaded MemStats
	// Settle is how long the load ran before the measured runs.
	Settle time.Duration
	// Prefill is how the store grew to this size.
	Prefill PrefillResult
}

// ScaleResult is the session scale scenario.
type ScaleResult struct {
	Points []ScalePoint
}

// Arbiter servers the harness can measure.
const (
	// ArbiterBinary is `arbiter serve` built from this module, as shipped (decision log,
	// metrics and all), with the harness policy given by --policy.
	ArbiterBinary = "binary"
	// ArbiterLib is the engine and the gRPC service composed in a child process of the
	// harness, without decision log and metrics, with a control API that can grow the session
	// store directly, read the heap and profile. The scale scenario and profiles always use it.
	ArbiterLib = "lib"
)

// arbiterServer is the Arbiter under test, of either kind.
type arbiterServer struct {
	kind    string
	grpc    string
	bundles string // address of the listener serving /v1/bundles
	bin     *ArbiterProcess
	child   *Child
	client  *GRPCClient
	load    *LoadSessions
}

func (s *arbiterServer) stop() {
	if s == nil {
		return
	}
	if s.client != nil {
		s.client.Close()
	}
	if s.bin != nil {
		s.bin.Stop()
	}
	if s.child != nil {
		s.child.Stop()
	}
}

// pid is the server's process.
func (s *arbiterServer) pid() int {
	if s.bin != nil {
		return s.bin.cmd.Process.Pid
	}
	return s.child.PID()
}

// Run runs the harness.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	cfg.setDefaults()
	rep := &Report{Config: cfg, Machine: DescribeMachine(), LoadBefore: LoadAverage(), Started: time.Now()}
	defer func() { rep.LoadAfter, rep.Took = LoadAverage(), time.Since(rep.Started) }()
	logf := func(format string, args ...any) { fmt.Fprintf(cfg.Log, "bench: "+format+"\n", args...) }
	exe := cfg.Executable
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if v, err := OPAVersion(); err == nil {
		rep.OPAVersion = v
	}
	if cfg.Arbiter != ArbiterBinary && cfg.Arbiter != ArbiterLib {
		return nil, fmt.Errorf("arbiter server %q: want %s or %s", cfg.Arbiter, ArbiterBinary, ArbiterLib)
	}
	if cfg.SwapVia == SwapViaEngine && cfg.Arbiter == ArbiterBinary && cfg.has(ScenarioSwap) {
		return nil, fmt.Errorf("swapping through the engine's API needs the %s server; the binary is reached through the bundle API", ArbiterLib)
	}
	needPrimary := cfg.has(ScenarioCompare) || cfg.has(ScenarioOpen) || cfg.has(ScenarioDiscovery) || cfg.has(ScenarioSwap)
	useOPA := !cfg.SkipOPA && (cfg.has(ScenarioCompare) || cfg.has(ScenarioOpen))
	useNoop := cfg.has(ScenarioCompare) || cfg.has(ScenarioOpen)
	needLib := cfg.has(ScenarioScale) || (cfg.ProfileDir != "" && needPrimary)

	var want []Outcome
	if needPrimary || needLib || useOPA {
		logf("calibrating: what the policy answers each request of the mix")
		cal, err := Calibrate(ctx, cfg.FilterTools)
		if err != nil {
			return nil, fmt.Errorf("calibrate: %w", err)
		}
		rep.Calibration, want = cal, cal.Want
	}
	tmp, err := os.MkdirTemp("", "arbiter-bench")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	policyDir := filepath.Join(tmp, "policy")
	policyFiles, err := WritePolicyDir(policyDir, 0)
	if err != nil {
		return nil, err
	}

	var (
		primary, lib        *arbiterServer
		noop                *Child
		noopC               *GRPCClient
		noopLS              *LoadSessions
		rest                *RESTClient
		opaSrv              *OPAServer
		arbiterClosedMedian float64
	)
	stopBaselines := func() {
		if noopC != nil {
			noopC.Close()
		}
		if noop != nil {
			noop.Stop()
		}
		if rest != nil {
			rest.Close()
		}
		if opaSrv != nil {
			opaSrv.Stop()
		}
		noop, noopC, rest, opaSrv = nil, nil, nil, nil
	}
	defer func() {
		stopBaselines()
		if lib != primary {
			lib.stop()
		}
		primary.stop()
	}()

	// startArbiter starts a server of kind and opens the load's sessions in it.
	startArbiter := func(kind string) (*arbiterServer, error) {
		s := &arbiterServer{kind: kind}
		switch kind {
		case ArbiterBinary:
			bin := cfg.ArbiterBin
			if bin == "" {
				logf("building arbiter")
				if bin, err = BuildArbiter(ctx, tmp, cfg.Log); err != nil {
					return nil, err
				}
			}
			logf("starting arbiter serve %s", strings.Join(cfg.ArbiterArgs, " "))
			args := cfg.ArbiterArgs
			if cfg.ProfileDir != "" {
				args = append(slices.Clip(args), "--pprof")
			}
			if s.bin, err = StartArbiterBinary(ctx, bin, policyDir, args, cfg.ServerEnv, cfg.Log); err != nil {
				return nil, err
			}
			s.grpc, s.bundles = s.bin.GRPC, s.bin.Admin
			rep.ArbiterArgs, rep.ArbiterBin = s.bin.Args, cfg.ArbiterBin
		default:
			logf("starting the Arbiter library server")
			if s.child, err = StartChild(ctx, exe, childSpec{Role: RoleArbiter}, cfg.ServerEnv, cfg.Log); err != nil {
				return nil, err
			}
			s.grpc, s.bundles = s.child.GRPC, s.child.Control
		}
		if s.client, err = DialGRPC(s.grpc, cfg.Conns); err != nil {
			s.stop()
			return nil, err
		}
		logf("opening %d load sessions in Arbiter (%s) and filling their history", cfg.LoadSessions, kind)
		if s.load, err = s.client.OpenLoadSessions(ctx, cfg.LoadSessions, cfg.FilterTools); err != nil {
			s.stop()
			return nil, fmt.Errorf("arbiter (%s): %w", kind, err)
		}
		return s, nil
	}

	if needPrimary {
		if primary, err = startArbiter(cfg.Arbiter); err != nil {
			return nil, err
		}
		rep.Server = cfg.Arbiter
	}
	if useNoop {
		logf("starting the no-op server")
		if noop, err = StartChild(ctx, exe, childSpec{Role: RoleNoop}, collectorEnv(cfg.ServerEnv), cfg.Log); err != nil {
			return nil, err
		}
		if noopC, err = DialGRPC(noop.GRPC, cfg.Conns); err != nil {
			return nil, err
		}
		if noopLS, err = noopC.OpenLoadSessions(ctx, cfg.LoadSessions, cfg.FilterTools); err != nil {
			return nil, fmt.Errorf("noop: %w", err)
		}
	}
	if useOPA {
		addr := cfg.OPAAddr
		switch {
		case addr != "":
			rep.OPASource = "an OPA-compatible server at " + addr
		default:
			bin := cfg.OPA
			if bin == "" {
				if bin, err = BuildOPA(ctx, rep.OPAVersion, cfg.Log); err != nil {
					return nil, err
				}
				rep.OPASource = "opa " + rep.OPAVersion + " built by the harness (" + bin + ")"
			} else {
				rep.OPASource = bin
			}
			logf("starting opa run --server")
			if opaSrv, err = StartOPA(ctx, bin, policyFiles, cfg.Log); err != nil {
				return nil, err
			}
			addr = opaSrv.Addr
		}
		if rest, err = NewRESTClient(addr, rep.Calibration.Docs, cfg.MaxInFlight); err != nil {
			return nil, err
		}
		// One call first: a server that cannot answer fails the run now, not in the middle.
		if _, err := rest.DecideCall(want)(ctx, &Worker{Rand: NewRand(0)}); err != nil {
			return nil, fmt.Errorf("opa: first decision: %w", err)
		}
	}

	closed := func(call CallFunc) *Stats {
		return RunClosed(ctx, call, cfg.Concurrency, cfg.Warmup, cfg.Duration, 0)
	}
	// closedOn is closed, measuring the CPU time of the server's process (pid) too.
	closedOn := func(pid int, call CallFunc) *Stats {
		return RunClosed(ctx, call, cfg.Concurrency, cfg.Warmup, cfg.Duration, pid)
	}
	// profileChild runs run while child records CPU and allocation profiles.
	profileChild := func(child *Child, name string, run func()) {
		cpu := filepath.Join(cfg.ProfileDir, name+".cpu.pprof")
		allocs := filepath.Join(cfg.ProfileDir, name+".allocs.pprof")
		if err := child.StartProfile(ctx, cpu); err != nil {
			logf("profile %s: %v", name, err)
			run()
			return
		}
		run()
		if err := child.StopProfile(ctx, allocs); err != nil {
			logf("profile %s: %v", name, err)
			return
		}
		rep.Profiles = append(rep.Profiles, cpu, allocs)
	}
	// profile runs run while the library server records CPU and allocation profiles.
	profile := func(s *arbiterServer, name string, run func()) {
		if cfg.ProfileDir == "" || (s.child == nil && s.bin == nil) {
			run()
			return
		}
		cpu := filepath.Join(cfg.ProfileDir, name+".cpu.pprof")
		allocs := filepath.Join(cfg.ProfileDir, name+".allocs.pprof")
		if s.bin != nil {
			// The binary serves its own profiles (--pprof); the CPU profile spans the run.
			secs := int((cfg.Warmup + cfg.Duration + time.Second - 1) / time.Second)
			if err := s.bin.Profile(ctx, secs, cpu, allocs, run); err != nil {
				logf("profile %s: %v", name, err)
				return
			}
			rep.Profiles = append(rep.Profiles, cpu, allocs)
			return
		}
		profileChild(s.child, name, run)
	}

	if cfg.has(ScenarioCompare) {
		rep.Compare = &CompareResult{}
		for r := range cfg.Rounds {
			logf("compare round %d/%d: no-op gRPC, closed loop %d callers", r+1, cfg.Rounds, cfg.Concurrency)
			runNoop := func() {
				rep.Compare.Noop = append(rep.Compare.Noop, closedOn(noop.PID(), noopC.DecideCall(noopLS, nil)))
			}
			if r == 0 && cfg.ProfileDir != "" {
				// The transport's own costs, to set against the Arbiter server's profile.
				profileChild(noop, "noop-decide", runNoop)
			} else {
				runNoop()
			}
			logf("compare round %d/%d: Arbiter gRPC", r+1, cfg.Rounds)
			var st *Stats
			run := func() { st = closedOn(primary.pid(), primary.client.DecideCall(primary.load, want)) }
			if r == 0 && primary.bin != nil {
				profile(primary, "arbiter-serve-decide", run)
			} else if r == 0 {
				profile(primary, "arbiter-decide", run)
			} else {
				run()
			}
			rep.Compare.Arbiter = append(rep.Compare.Arbiter, st)
			if rest != nil {
				logf("compare round %d/%d: OPA REST", r+1, cfg.Rounds)
				rep.Compare.OPA = append(rep.Compare.OPA, closedOn(opaSrv.PID(), rest.DecideCall(want)))
			}
		}
		arbiterClosedMedian = MedianThroughput(rep.Compare.Arbiter)
	}
	if arbiterClosedMedian == 0 && (needPrimary || needLib) && (cfg.ArbiterRate == 0 || cfg.Rate == 0) {
		s := primary
		if s == nil {
			if lib, err = startArbiter(ArbiterLib); err != nil {
				return nil, err
			}
			s = lib
		}
		logf("calibrating the rate: Arbiter closed loop")
		arbiterClosedMedian = closed(s.client.DecideCall(s.load, want)).Throughput()
	}

	if cfg.has(ScenarioOpen) {
		rate := cfg.Rate
		if rate == 0 {
			rate = arbiterClosedMedian / 2
			if rep.Compare != nil && len(rep.Compare.OPA) > 0 {
				rate = min(arbiterClosedMedian, MedianThroughput(rep.Compare.OPA)) / 2
			}
		}
		rate = max(rate, 10)
		rep.Open = &OpenResult{Rate: rate}
		open := func(call CallFunc) *Stats {
			return RunOpen(ctx, call, rate, cfg.MaxInFlight, cfg.Warmup, cfg.Duration)
		}
		logf("open loop at %.0f/s: no-op, Arbiter, OPA", rate)
		rep.Open.Noop = open(noopC.DecideCall(noopLS, nil))
		rep.Open.Arbiter = open(primary.client.DecideCall(primary.load, want))
		if rest != nil {
			rep.Open.OPA = open(rest.DecideCall(want))
		}
	}
	// The baselines are done: stop them so they take no memory or CPU from what follows.
	stopBaselines()

	arbiterRate := cfg.ArbiterRate
	if arbiterRate == 0 {
		arbiterRate = max(arbiterClosedMedian/2, 10)
	}

	if cfg.has(ScenarioDiscovery) {
		logf("discovery: Decide vs FilterTools(%d tools), closed loop", cfg.FilterTools)
		rep.Discovery = &DiscoveryResult{Decide: closed(primary.client.DecideCall(primary.load, want))}
		profile(primary, "arbiter-filtertools", func() {
			rep.Discovery.Filter = closed(primary.client.FilterCall(primary.load, rep.Calibration.FilterVisible))
		})
	}

	if cfg.has(ScenarioSwap) {
		var act Activator = primary.child
		if cfg.SwapVia == SwapViaPush {
			n := int(cfg.SwapDuration/cfg.SwapInterval) + 2
			logf("policy swap: building %d bundles", n)
			pusher, err := NewBundlePusher(primary.bundles, "bench", n)
			if err != nil {
				return nil, err
			}
			act = pusher
		}
		logf("policy swap (%s): steady at %.0f/s, then a new revision every %s for %s", cfg.SwapVia, arbiterRate, cfg.SwapInterval, cfg.SwapDuration)
		rep.Swap = runSwap(ctx, cfg, act, primary.client.DecideCall(primary.load, want), arbiterRate)
		if primary.bin != nil {
			ev, err := primary.bin.Evaluator(ctx)
			if err != nil {
				logf("policy swap: what decides: %v", err)
			}
			rep.Swap.Evaluator = ev
		}
	}

	if primary != nil && primary.bin != nil {
		rep.DecisionLogRecords, rep.DecisionLogBytes = primary.bin.DecisionLog()
		rep.ServerRSS, rep.ServerPeakRSS = primary.bin.RSS()
	}
	if primary != nil && primary.kind == ArbiterLib {
		lib = primary
	} else if needLib {
		primary.stop()
		primary = nil
		if lib == nil {
			if lib, err = startArbiter(ArbiterLib); err != nil {
				return nil, err
			}
		}
		if cfg.ProfileDir != "" && needPrimary {
			rep.ProfileRuns = map[string]*Stats{}
			profile(lib, "arbiter-decide", func() { rep.ProfileRuns["Decide (mix)"] = closed(lib.client.DecideCall(lib.load, want)) })
			profile(lib, "arbiter-filtertools", func() {
				rep.ProfileRuns[fmt.Sprintf("FilterTools (%d tools)", cfg.FilterTools)] = closed(lib.client.FilterCall(lib.load, rep.Calibration.FilterVisible))
			})
		}
	}

	if cfg.has(ScenarioScale) {
		rep.Scale = &ScaleResult{}
		sizes := slices.Clone(cfg.ScaleSessions)
		sort.Ints(sizes)
		// One server per size, all kept running: their open-loop windows then alternate, so
		// the machine's drift over the minutes of the scenario (closed-loop capacity moved
		// by ±20% between runs of the same server) weighs on every size alike.
		servers := make([]*arbiterServer, len(sizes))
		stopExtra := func() {
			for i := 1; i < len(servers); i++ {
				servers[i].stop()
				servers[i] = nil
			}
		}
		defer stopExtra() // on an error; otherwise they stop as soon as the scenario ends
		for i, n := range sizes {
			srv := lib
			if i > 0 {
				logf("session scale: starting another library server for %d sessions", n)
				if srv, err = startArbiter(ArbiterLib); err != nil {
					return nil, err
				}
			}
			servers[i] = srv
			logf("session scale: growing the store to %d sessions", n)
			pre, err := srv.child.Prefill(ctx, n)
			if err != nil {
				return nil, fmt.Errorf("prefill %d: %w", n, err)
			}
			pt := ScalePoint{Sessions: pre.After.Sessions, Rate: arbiterRate, Prefill: pre, Idle: pre.After}
			logf("session scale: %d sessions: load at %.0f/s until the server completes a collection cycle", pt.Sessions, arbiterRate)
			settleFor := 3 * cfg.ScaleDuration
			if pt.Settle, pt.Settled, err = settle(ctx, srv.child, srv.client.DecideCall(srv.load, want), arbiterRate, cfg.MaxInFlight, pre.After.NumGC, settleFor); err != nil {
				return nil, err
			}
			logf("session scale: %d sessions: closed loop", pt.Sessions)
			pt.Closed = closed(srv.client.DecideCall(srv.load, want))
			rep.Scale.Points = append(rep.Scale.Points, pt)
		}
		rounds := max(cfg.ScaleRounds, 1)
		window := cfg.ScaleDuration / time.Duration(rounds)
		opens := make([][]*Stats, len(sizes))
		for r := range rounds {
			for i, srv := range servers {
				pt := &rep.Scale.Points[i]
				logf("session scale: %d sessions: open loop at %.0f/s, window %d of %d (%s)", pt.Sessions, arbiterRate, r+1, rounds, window)
				run := func() {
					opens[i] = append(opens[i], RunOpen(ctx, srv.client.DecideCall(srv.load, want), arbiterRate, cfg.MaxInFlight, cfg.Warmup, window))
				}
				if r == 0 {
					profile(srv, fmt.Sprintf("scale-%d-open", pt.Sessions), run)
				} else {
					run()
				}
				if r == rounds-1 { // right after its last window, while its heap is as the load left it
					if pt.Loaded, err = srv.child.Stats(ctx, false); err != nil {
						return nil, err
					}
				}
			}
		}
		for i := range servers {
			pt := &rep.Scale.Points[i]
			pt.Open = Merged(opens[i])
			pt.OpenWindows = opens[i]
		}
		stopExtra()
	}
	lib.stop()
	if lib == primary {
		primary = nil
	}
	lib = nil

	if cfg.has(ScenarioInProcess) {
		logf("in-process: engine vs raw OPA, %s each", cfg.InProcessDuration)
		res, err := RunInProcess(ctx, cfg.InProcessDuration, cfg.InProcessSessions, cfg.FilterTools)
		if err != nil {
			return nil, fmt.Errorf("in-process: %w", err)
		}
		rep.InProcess = res
	}
	return rep, nil
}

// settle runs the open-loop load until the child has completed a collection cycle since
// sinceGC, or for at most limit, and returns how long it ran and the memory figures then. Growing the store ends
// with a forced collection that also returns free memory to the OS (to read the live heap and
// the RSS it needs); a server that has held as many sessions for a while has instead grown its
// heap to the collector's goal and collected it under load, and reuses those pages. Measuring
// right after the forced collection would charge the large store with faulting in and zeroing
// fresh pages up to the goal (GOGC 400: five times the live heap), once. The settling load is
// not measured; the measured runs that follow collect as the server does.
func settle(ctx context.Context, c *Child, call CallFunc, rate float64, maxInFlight int, sinceGC uint32, limit time.Duration) (time.Duration, MemStats, error) {
	start := time.Now()
	for {
		RunOpen(ctx, call, rate, maxInFlight, 0, min(5*time.Second, limit))
		st, err := c.Stats(ctx, false)
		if err != nil || st.NumGC > sinceGC || time.Since(start) >= limit || ctx.Err() != nil {
			return time.Since(start), st, err
		}
	}
}

// Activator makes a new policy revision active in the server under test. The harness
// activates through the engine's own API (the child's control endpoint); once the bundle
// push API exists (PUT /v1/bundles/{name} on the admin listener), an Activator that pushes a
// bundle replaces it without touching the scenario.
type Activator interface {
	Activate(ctx context.Context, rev int) (ActivateResult, error)
}

// runSwap measures steady load, then the same load while act activates a new revision every
// interval, then steady load again. The steady figure is both steady windows merged: the
// machine's own drift over the minute (its steady p99 moved between 20 and 61 ms from one run
// to the next) then weighs on both sides of the comparison alike.
func runSwap(ctx context.Context, cfg Config, act Activator, call CallFunc, rate float64) *SwapResult {
	res := &SwapResult{Rate: rate, Via: cfg.SwapVia}
	res.SteadyBefore = RunOpen(ctx, call, rate, cfg.MaxInFlight, cfg.Warmup, cfg.Duration)
	defer func() {
		// After the same warm-up as the window before: the last activation's garbage is not
		// counted as steady state.
		res.SteadyAfter = RunOpen(ctx, call, rate, cfg.MaxInFlight, cfg.Warmup, cfg.Duration)
		res.Steady = Merged([]*Stats{res.SteadyBefore, res.SteadyAfter})
	}()

	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(cfg.SwapInterval)
		defer t.Stop()
		for rev := 1; ; rev++ {
			select {
			case <-stop:
				return
			case <-t.C:
			}
			ar, err := act.Activate(ctx, rev)
			res.Activations++
			if err != nil {
				res.ActivationErrors = append(res.ActivationErrors, err.Error())
				continue
			}
			res.ActivationTook = append(res.ActivationTook, ar.Took)
		}
	}()
	res.Swapping = RunOpen(ctx, call, rate, cfg.MaxInFlight, 0, cfg.SwapDuration)
	close(stop)
	<-done
	return res
}

// MedianThroughput is the median throughput of runs.
func MedianThroughput(runs []*Stats) float64 {
	if len(runs) == 0 {
		return 0
	}
	v := make([]float64, len(runs))
	for i, r := range runs {
		v[i] = r.Throughput()
	}
	sort.Float64s(v)
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Merged is one Stats over several runs: latencies merged, duration summed.
func Merged(runs []*Stats) *Stats {
	if len(runs) == 0 {
		return nil
	}
	out := newStats(runs[0].Mode, 0)
	out.Offered = runs[0].Offered
	for _, r := range runs {
		if r.Offered != out.Offered {
			out.Offered = 0 // runs at different rates have no one offered rate
		}
		out.Duration += r.Duration
		out.Latency.Merge(&r.Latency)
		out.ServerCPU += r.ServerCPU
		out.LoadCPU += r.LoadCPU
		for k, v := range r.Errors {
			out.Errors[k] += v
		}
		out.Unexpected += r.Unexpected
		for k, v := range r.UnexpectedKinds {
			out.UnexpectedKinds[k] += v
		}
		for i, v := range r.Outcomes {
			out.Outcomes[i] += v
		}
		for k, v := range r.Revisions {
			out.Revisions[k] += v
		}
		out.Late += r.Late
	}
	return out
}

// collectorEnv is the part of env that tunes the Go collector (GOGC, GOMEMLIMIT, GCLimitEnv):
// the no-op server takes it as the Arbiter servers do, so the transport baseline collects as
// Arbiter does.
func collectorEnv(env []string) []string {
	var out []string
	for _, kv := range env {
		name, _, _ := strings.Cut(kv, "=")
		if name == "GOGC" || name == "GOMEMLIMIT" || name == GCLimitEnv {
			out = append(out, kv)
		}
	}
	return out
}
