// Command arbiter-bench runs Arbiter's benchmark harness: Arbiter's gRPC Decide against a no-op
// server of the same API (the transport limit) and against `opa run --server` on the same
// policy, session scale, policy swaps under load, FilterTools, and in-process engine vs raw
// OPA. It writes a Markdown report.
//
//	go run ./test/bench/cmd/arbiter-bench -out bench-report.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/test/bench"
)

func main() {
	bench.RunChildIfRequested() // this binary is also the servers under test
	if err := run(); errors.Is(err, flag.ErrHelp) {
		return
	} else if err != nil {
		fmt.Fprintln(os.Stderr, "arbiter-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		cfg       bench.Config
		out       string
		scenarios string
		scale     string
	)
	fs := flag.NewFlagSet("arbiter-bench", flag.ContinueOnError)
	fs.DurationVar(&cfg.Duration, "duration", 0, "length of each measurement (default 10s)")
	fs.DurationVar(&cfg.Warmup, "warmup", 0, "warm-up before each measurement (default 2s)")
	fs.IntVar(&cfg.Rounds, "rounds", 0, "interleaved rounds of the closed-loop comparison (default 3)")
	fs.IntVar(&cfg.Concurrency, "concurrency", 0, "closed-loop callers (default 32)")
	fs.IntVar(&cfg.Conns, "conns", 0, "gRPC connections the callers share (default 4)")
	fs.Float64Var(&cfg.Rate, "rate", 0, "open-loop rate of the comparison in requests/s (default: half the lower of Arbiter's and OPA's closed-loop throughput)")
	fs.Float64Var(&cfg.ArbiterRate, "arbiter-rate", 0, "open-loop rate of the swap and scale scenarios (default: half Arbiter's closed-loop throughput)")
	fs.IntVar(&cfg.MaxInFlight, "max-in-flight", 0, "open-loop requests outstanding at most (default 512)")
	fs.IntVar(&cfg.LoadSessions, "sessions", 0, "sessions the load runs in, opened through the API (default 200)")
	fs.StringVar(&scale, "scale", "", "store sizes of the session scale scenario, comma-separated (default 1000,1000000)")
	fs.DurationVar(&cfg.ScaleDuration, "scale-duration", 0, "open-loop measurement of the session scale scenario at each size (default 1m, to take in a collection cycle with a million sessions)")
	fs.IntVar(&cfg.ScaleRounds, "scale-rounds", 0, "windows the scale scenario's open loop is split into, alternating between the sizes, each served by its own server (default 3)")
	fs.DurationVar(&cfg.SwapDuration, "swap-duration", 0, "how long policies are swapped under load (default 30s)")
	fs.DurationVar(&cfg.SwapInterval, "swap-interval", 0, "time between policy activations (default 1s)")
	fs.StringVar(&cfg.SwapVia, "swap-via", "", "how the swap scenario activates revisions: push (the bundle API, default) or engine (engine.Activate in the library server; needs -arbiter lib)")
	fs.DurationVar(&cfg.InProcessDuration, "inprocess-duration", 0, "length of each in-process benchmark (default 2s)")
	fs.StringVar(&scenarios, "scenarios", "", "scenarios to run, comma-separated, of "+strings.Join(bench.AllScenarios, ",")+" (default all)")
	fs.StringVar(&cfg.Arbiter, "arbiter", "", "Arbiter server of the main scenarios: binary (arbiter serve, built from this module; default) or lib (the engine and gRPC service in a harness child)")
	fs.StringVar(&cfg.ArbiterBin, "arbiter-bin", "", "a prebuilt arbiter binary (default: go build ./cmd/arbiter)")
	fs.Func("serve-flag", "extra flag for arbiter serve, repeatable (e.g. -serve-flag=--decision-log=off)", func(v string) error {
		cfg.ArbiterArgs = append(cfg.ArbiterArgs, v)
		return nil
	})
	fs.Func("server-env", "environment variable for the Arbiter servers, repeatable (e.g. -server-env GOGC=400); GOGC, GOMEMLIMIT and ARBITER_BENCH_GOGC go to the no-op server too", func(v string) error {
		cfg.ServerEnv = append(cfg.ServerEnv, v)
		return nil
	})
	policyDir := fs.String("policy-dir", "", "decide with the policy in this directory (its .rego and data files, tests left out) instead of the embedded default policy; it must let the load's sessions open (servers filesystem, github, toolbox)")
	fs.IntVar(&cfg.FilterTools, "filter-tools", 0, "tools one FilterTools call lists (default 500)")
	fs.StringVar(&cfg.OPA, "opa", "", "opa binary to use (default: build the go.mod version once into the user cache)")
	fs.StringVar(&cfg.OPAAddr, "opa-addr", "", "use an OPA REST server already running at this address")
	fs.BoolVar(&cfg.SkipOPA, "no-opa", false, "leave out the OPA baseline")
	fs.StringVar(&cfg.ProfileDir, "profile", "", "directory for CPU and allocation profiles of the Arbiter server (and of the no-op server in the first comparison round)")
	fs.StringVar(&out, "out", "", "write the Markdown report here (default stdout)")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the harness itself (the load generator) to this file")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	if *policyDir != "" {
		dir, err := filepath.Abs(*policyDir)
		if err != nil {
			return err
		}
		// Children (the no-op and library servers) inherit it; the binary gets the policy as
		// files written from it.
		if err := os.Setenv(bench.PolicyDirEnv, dir); err != nil {
			return err
		}
		p, err := bench.Policy(0)
		if err == nil {
			// Compiled and probed as a server would, so a policy that cannot serve fails here
			// rather than in a child server.
			_, err = engine.New(context.Background(), engine.Config{}, p)
		}
		if err != nil {
			return fmt.Errorf("-policy-dir %s: %w", *policyDir, err)
		}
		cfg.PolicyDir = dir
	}
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	if scenarios != "" {
		cfg.Scenarios = strings.Split(scenarios, ",")
	}
	if scale != "" {
		for _, s := range strings.Split(scale, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				return fmt.Errorf("-scale: %w", err)
			}
			cfg.ScaleSessions = append(cfg.ScaleSessions, n)
		}
	}
	if cfg.ProfileDir != "" {
		if err := os.MkdirAll(cfg.ProfileDir, 0o755); err != nil {
			return err
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if err != nil {
		return err
	}
	w := os.Stdout
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer f.Close()
		w = f
	}
	cmd := "go run ./test/bench/cmd/arbiter-bench"
	if len(os.Args) > 1 {
		cmd += " " + strings.Join(os.Args[1:], " ")
	}
	if err := rep.WriteMarkdown(w, cmd); err != nil {
		return err
	}
	if out != "" {
		fmt.Fprintln(os.Stderr, "arbiter-bench: report written to", out)
	}
	return nil
}
