package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/grpcapi"
	"github.com/arbiter-mcp/arbiter/policy"
)

// errUsage reports bad flags; the flag package has already printed why.
var errUsage = errors.New("usage")

type serveFlags struct {
	grpcAddr        string
	adminAddr       string
	policyDir       string
	logFormat       string
	logLevel        string
	evalTimeout     time.Duration
	sessionTTL      time.Duration
	sessionMaxTTL   time.Duration
	reapInterval    time.Duration
	reapRetention   time.Duration
	shutdownTimeout time.Duration
}

func parseServeFlags(args []string, stderr io.Writer) (serveFlags, error) {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:9191", "gRPC listen address (loopback only)")
	fs.StringVar(&f.adminAddr, "admin-addr", "127.0.0.1:9192", "admin HTTP listen address (loopback only): /healthz, /readyz")
	fs.StringVar(&f.policyDir, "policy", "", "directory of Rego modules and data.json to serve instead of the embedded default policy")
	fs.StringVar(&f.logFormat, "log-format", "text", "service log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "service log level: debug, info, warn or error")
	fs.DurationVar(&f.evalTimeout, "eval-timeout", 250*time.Millisecond, "longest one policy evaluation may take; longer is denied")
	fs.DurationVar(&f.sessionTTL, "session-ttl", 15*time.Minute, "session lifetime when the opener asks for none")
	fs.DurationVar(&f.sessionMaxTTL, "session-max-ttl", 8*time.Hour, "longest lifetime a session can be given")
	fs.DurationVar(&f.reapInterval, "reap-interval", time.Minute, "how often expired sessions are removed")
	fs.DurationVar(&f.reapRetention, "reap-retention", time.Hour, "how long an ended session stays readable after it expires")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful stop waits for calls in flight")
	if err := fs.Parse(args); err != nil {
		return f, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve takes no arguments, got %q\n", fs.Args())
		return f, errUsage
	}
	return f, nil
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format must be text or json, not %q", format)
	}
}

// loadPolicy returns the policy in dir, or the embedded default policy when dir is empty.
func loadPolicy(dir string) (engine.Policy, error) {
	if dir == "" {
		return engine.LoadPolicyFS(policy.FS(), ".", "default")
	}
	info, err := os.Stat(dir)
	if err != nil {
		return engine.Policy{}, fmt.Errorf("--policy: %w", err)
	}
	if !info.IsDir() {
		return engine.Policy{}, fmt.Errorf("--policy: %s is not a directory", dir)
	}
	return engine.LoadPolicyFS(os.DirFS(dir), ".", "dir")
}

// listenLoopback listens on addr, refusing any address that is not loopback: the service has
// no caller authentication yet, so it must not be reachable from other hosts.
func listenLoopback(flagName, addr string) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flagName, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return nil, fmt.Errorf("--%s %s: Arbiter has no caller authentication configured, so it only listens on loopback (127.0.0.1, ::1 or localhost)", flagName, addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flagName, err)
	}
	return ln, nil
}

func serve(ctx context.Context, args []string, stderr io.Writer) error {
	f, err := parseServeFlags(args, stderr)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		return err
	}
	pol, err := loadPolicy(f.policyDir)
	if err != nil {
		return err
	}
	eng, err := engine.New(ctx, engine.Config{
		EvalTimeout:       f.evalTimeout,
		DefaultSessionTTL: f.sessionTTL,
		MaxSessionTTL:     f.sessionMaxTTL,
		Logger:            log,
	}, pol)
	if err != nil {
		return fmt.Errorf("activate policy: %w", err)
	}

	grpcLn, err := listenLoopback("grpc-addr", f.grpcAddr)
	if err != nil {
		return err
	}
	adminLn, err := listenLoopback("admin-addr", f.adminAddr)
	if err != nil {
		grpcLn.Close()
		return err
	}

	hs := health.NewServer()
	for _, name := range append([]string{""}, grpcapi.ServiceNames...) {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	gs := grpcapi.NewServer(grpcapi.New(eng, grpcapi.Config{Logger: log}), hs)

	var ready atomic.Bool
	admin := &http.Server{Handler: adminMux(&ready), ReadHeaderTimeout: 5 * time.Second}

	reapCtx, stopReaper := context.WithCancel(context.Background())
	defer stopReaper()
	go eng.RunReaper(reapCtx, f.reapInterval, f.reapRetention)

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(grpcLn) }()
	go func() {
		if err := admin.Serve(adminLn); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	ready.Store(true)
	log.Info("arbiter serving", slog.String("grpc_addr", grpcLn.Addr().String()),
		slog.String("admin_addr", adminLn.Addr().String()), slog.String("policy_revision", eng.Revision()))

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
		log.Error("listener failed; shutting down", slog.Any("error", serveErr))
	}

	// Stop advertising health first so load balancers drain, then finish calls in flight.
	ready.Store(false)
	hs.Shutdown()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(f.shutdownTimeout):
		log.Warn("calls still in flight after the shutdown timeout; stopping them")
		gs.Stop()
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	if err := admin.Shutdown(shutCtx); err != nil {
		log.Warn("admin listener did not stop cleanly", slog.Any("error", err))
	}
	log.Info("stopped")
	return serveErr
}

// adminMux serves the admin listener's open endpoints.
func adminMux(ready *atomic.Bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "not ready\n")
			return
		}
		io.WriteString(w, "ready\n")
	})
	return mux
}
