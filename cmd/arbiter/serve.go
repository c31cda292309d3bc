package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"gopkg.in/natefinch/lumberjack.v2"

	"github.com/arbiter-mcp/arbiter/bundles"
	"github.com/arbiter-mcp/arbiter/engine"
	"github.com/arbiter-mcp/arbiter/engine/audit"
	"github.com/arbiter-mcp/arbiter/engine/grpcapi"
	"github.com/arbiter-mcp/arbiter/engine/telemetry"
	"github.com/arbiter-mcp/arbiter/internal/gctune"
	"github.com/arbiter-mcp/arbiter/policy"
)

// errUsage reports bad flags; the flag package has already printed why.
var errUsage = errors.New("usage")

type serveFlags struct {
	gcPercent        int
	pprof            bool
	decisionLog      string
	logMaxSizeMB     int
	logMaxBackups    int
	logQueue         int
	logWhenFull      string
	logBlockTimeout  time.Duration
	logFlush         time.Duration
	logArguments     bool
	logMask          string
	dataDir          string
	bundleKey        string
	bundleKeyAlg     string
	bundleKeyID      string
	adminTLSCert     string
	adminTLSKey      string
	grpcTLSCert      string
	grpcTLSKey       string
	plaintext        bool
	adminTokenFile   string
	gatewayTokenFile string
	sessionLifetime  time.Duration
	grpcAddr         string
	adminAddr        string
	policyDir        string
	logFormat        string
	logLevel         string
	evalTimeout      time.Duration
	evalConcurrency  int
	evaluator        string
	inputCache       int
	sessionTTL       time.Duration
	sessionMaxTTL    time.Duration
	reapInterval     time.Duration
	reapRetention    time.Duration
	shutdownTimeout  time.Duration
}

func parseServeFlags(args []string, stderr io.Writer) (serveFlags, error) {
	var f serveFlags
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.grpcAddr, "grpc-addr", "127.0.0.1:9191", "gRPC listen address (loopback only unless token files are given, and then with TLS or --insecure-plaintext)")
	fs.StringVar(&f.adminAddr, "admin-addr", "127.0.0.1:9192", "admin HTTP listen address (loopback only unless token files are given, and then with TLS or --insecure-plaintext): /healthz, /readyz")
	fs.StringVar(&f.adminTokenFile, "admin-token-file", "", "file of admin bearer tokens, one per line (\"TOKEN\" or \"NAME TOKEN\")")
	fs.StringVar(&f.gatewayTokenFile, "gateway-token-file", "", "file of gateway bearer tokens, one per line (\"TOKEN\" or \"NAME TOKEN\")")
	fs.StringVar(&f.policyDir, "policy", "", "directory of Rego modules and data.json to serve, until a bundle is pushed, instead of the embedded default policy")
	fs.StringVar(&f.dataDir, "data-dir", "", "directory where pushed bundles persist, and are restored from on start")
	fs.StringVar(&f.bundleKey, "bundle-verification-key", "", "public key (PEM file) or HMAC secret file: pushed bundles must carry a valid signature by it")
	fs.StringVar(&f.bundleKeyAlg, "bundle-verification-alg", "RS256", "algorithm of --bundle-verification-key: RS256, ES256, HS256, ...")
	fs.StringVar(&f.bundleKeyID, "bundle-verification-key-id", "default", "key id of --bundle-verification-key (the signature's kid)")
	fs.StringVar(&f.adminTLSCert, "admin-tls-cert", "", "certificate (PEM) for the admin listener; with --admin-tls-key it serves HTTPS")
	fs.StringVar(&f.adminTLSKey, "admin-tls-key", "", "private key (PEM) of --admin-tls-cert")
	fs.StringVar(&f.grpcTLSCert, "grpc-tls-cert", "", "certificate (PEM) for the gRPC listener; with --grpc-tls-key it serves TLS")
	fs.StringVar(&f.grpcTLSKey, "grpc-tls-key", "", "private key (PEM) of --grpc-tls-cert")
	fs.BoolVar(&f.plaintext, "insecure-plaintext", false, "let a listener off loopback serve without TLS, so bearer tokens cross the network in clear: only behind a proxy or mesh that terminates TLS for Arbiter")
	fs.StringVar(&f.decisionLog, "decision-log", "stdout", "where decision records go: stdout, off, or a file path (rotated by size)")
	fs.IntVar(&f.logMaxSizeMB, "decision-log-max-size", 100, "rotate the decision log file at this many MiB")
	fs.IntVar(&f.logMaxBackups, "decision-log-max-backups", 10, "rotated decision log files to keep")
	fs.IntVar(&f.logQueue, "decision-log-queue", 4096, "decision records that may wait to be written")
	fs.StringVar(&f.logWhenFull, "decision-log-when-full", "block", "when the queue is full: block (up to --decision-log-block-timeout, then deny) or deny")
	fs.DurationVar(&f.logBlockTimeout, "decision-log-block-timeout", 100*time.Millisecond, "longest a decision waits for room in a full decision log before it is denied")
	fs.DurationVar(&f.logFlush, "decision-log-flush-interval", audit.DefaultFlushInterval, "how long the decision log's writer waits after a batch of records before it takes the next, so that records arriving meanwhile go out in one write (a lone record is written at once; 0 writes every record as soon as it is queued)")
	fs.BoolVar(&f.logArguments, "decision-log-arguments", false, "log raw tool arguments (masked by --decision-log-mask); by default only their digest")
	fs.StringVar(&f.logMask, "decision-log-mask", "", "comma-separated JSON pointers into the arguments to mask, e.g. /password,/headers/authorization")
	fs.StringVar(&f.logFormat, "log-format", "text", "service log format: text or json")
	fs.StringVar(&f.logLevel, "log-level", "info", "service log level: debug, info, warn or error")
	fs.DurationVar(&f.evalTimeout, "eval-timeout", 250*time.Millisecond, "longest one policy evaluation may take, from when it starts; longer is denied")
	fs.IntVar(&f.evalConcurrency, "eval-concurrency", 0, "policy evaluations running at once; the rest wait their turn (default: the number of CPUs Go uses)")
	fs.StringVar(&f.evaluator, "evaluator", engine.EvaluatorIR, "what decides: ir (OPA's plan of the policy, run by Arbiter's plan executor; a policy it cannot run is decided by topdown) or topdown (OPA's own evaluator, for every policy)")
	fs.IntVar(&f.inputCache, "input-cache-sessions", 1024, "recently used sessions whose policy-input terms stay built; a decision in another session builds its history's terms afresh")
	fs.DurationVar(&f.sessionTTL, "session-ttl", 15*time.Minute, "session lifetime when the opener asks for none")
	fs.DurationVar(&f.sessionMaxTTL, "session-max-ttl", 8*time.Hour, "longest lifetime one open or renewal can give a session")
	fs.DurationVar(&f.sessionLifetime, "session-max-lifetime", 24*time.Hour, "longest a session can live from its creation, whatever renewals are approved")
	fs.DurationVar(&f.reapInterval, "reap-interval", time.Minute, "how often expired sessions are removed")
	fs.DurationVar(&f.reapRetention, "reap-retention", time.Hour, "how long an ended session stays readable after it expires")
	fs.IntVar(&f.gcPercent, "gogc", gctune.DefaultLimit, "highest garbage collector target percentage, used while the live heap is small (it falls as the live heap grows past 256 MiB×100/gogc, keeping growth between collections at 256 MiB, and stays at 100 from 256 MiB of live heap on); ignored when the GOGC environment variable is set")
	fs.BoolVar(&f.pprof, "pprof", false, "serve Go profiles (net/http/pprof) under /debug/pprof/ on the admin listener, to admin tokens only")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long a graceful stop waits for calls in flight")
	if err := fs.Parse(args); err != nil {
		return f, errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "serve takes no arguments, got %q\n", fs.Args())
		return f, errUsage
	}
	if (f.adminTLSCert == "") != (f.adminTLSKey == "") {
		fmt.Fprintln(stderr, "--admin-tls-cert and --admin-tls-key go together")
		return f, errUsage
	}
	if (f.grpcTLSCert == "") != (f.grpcTLSKey == "") {
		fmt.Fprintln(stderr, "--grpc-tls-cert and --grpc-tls-key go together")
		return f, errUsage
	}
	if err := engine.CheckEvaluator(f.evaluator); err != nil {
		fmt.Fprintf(stderr, "--%v\n", err)
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

// listen listens on addr. Without caller authentication only loopback addresses are allowed:
// an unauthenticated service must not be reachable from other hosts.
func listen(flagName, addr string, authenticated, encrypted, plaintextOK bool) (net.Listener, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flagName, err)
	}
	ip := net.ParseIP(host)
	if host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		if !authenticated {
			return nil, fmt.Errorf("--%s %s: no caller authentication is configured (--admin-token-file, --gateway-token-file), so Arbiter only listens on loopback (127.0.0.1, ::1 or localhost)", flagName, addr)
		}
		if !encrypted && !plaintextOK {
			prefix := strings.TrimSuffix(flagName, "-addr")
			return nil, fmt.Errorf("--%s %s: callers' bearer tokens would cross the network in clear; give --%s-tls-cert and --%s-tls-key, or --insecure-plaintext when a proxy or mesh terminates TLS in front of Arbiter", flagName, addr, prefix, prefix)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", flagName, err)
	}
	return ln, nil
}

// loadAuthenticator reads the token files. Either may be absent; with neither, callers are
// not authenticated.
func loadAuthenticator(adminFile, gatewayFile string) (*grpcapi.Authenticator, error) {
	var tokens []grpcapi.Token
	for _, src := range []struct {
		flag, path string
		role       grpcapi.Role
	}{{"admin-token-file", adminFile, grpcapi.RoleAdmin}, {"gateway-token-file", gatewayFile, grpcapi.RoleGateway}} {
		if src.path == "" {
			continue
		}
		f, err := os.Open(src.path)
		if err != nil {
			return nil, fmt.Errorf("--%s: %w", src.flag, err)
		}
		ts, err := grpcapi.ParseTokens(f, src.role)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("--%s %s: %w", src.flag, src.path, err)
		}
		tokens = append(tokens, ts...)
	}
	auth, err := grpcapi.NewAuthenticator(tokens)
	if err != nil {
		return nil, fmt.Errorf("token files: %w", err)
	}
	return auth, nil
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
	if os.Getenv("GOGC") == "" && f.gcPercent > 0 {
		gcCtx, stopGC := context.WithCancel(ctx)
		defer stopGC()
		go gctune.Run(gcCtx, f.gcPercent, time.Second)
	}
	auth, err := loadAuthenticator(f.adminTokenFile, f.gatewayTokenFile)
	if err != nil {
		return err
	}
	pol, err := loadPolicy(f.policyDir)
	if err != nil {
		return err
	}
	metrics := telemetry.New()
	var eng *engine.Engine // the policy's log mask is read through it, once it exists
	decisionLog, closeSink, err := newDecisionLog(f, metrics, log, func(ctx context.Context, rec *engine.Record) ([]string, error) {
		return eng.LogMask(ctx, rec)
	})
	if err != nil {
		return err
	}
	defer closeSink()
	eng, err = engine.New(ctx, engine.Config{
		Recorder:           decisionLog,
		EvalTimeout:        f.evalTimeout,
		EvalConcurrency:    f.evalConcurrency,
		Evaluator:          f.evaluator,
		InputCacheSessions: f.inputCache,
		DefaultSessionTTL:  f.sessionTTL,
		MaxSessionTTL:      f.sessionMaxTTL,
		MaxSessionLifetime: f.sessionLifetime,
		Logger:             log,
	}, pol)
	if err != nil {
		return fmt.Errorf("activate policy: %w", err)
	}

	bundleMgr, err := newBundleManager(ctx, f, eng, pol, log, metrics)
	if err != nil {
		return err
	}
	metrics.Sessions(func() (map[string]int, int) {
		counts, pending := eng.Counts()
		out := make(map[string]int, len(counts))
		for st, n := range counts {
			out[string(st)] = n
		}
		return out, pending
	})
	metrics.BundleRevisions(func() map[string]string {
		out := map[string]string{}
		for _, b := range bundleMgr.List() {
			out[b.Name] = b.Revision.Revision
		}
		if len(out) == 0 {
			out["default"] = eng.Revision()
		}
		return out
	})
	metrics.PolicyEvaluator(func() string {
		evaluator, _ := eng.Evaluator()
		return evaluator
	})

	// Both listeners' certificates are loaded now, so a bad file stops serve before it serves.
	grpcTLS, err := serverTLS("grpc", f.grpcTLSCert, f.grpcTLSKey)
	if err != nil {
		return err
	}
	adminTLS, err := serverTLS("admin", f.adminTLSCert, f.adminTLSKey)
	if err != nil {
		return err
	}
	var grpcCreds []grpc.ServerOption
	if grpcTLS != nil {
		grpcCreds = append(grpcCreds, grpc.Creds(credentials.NewTLS(grpcTLS)))
	}
	grpcLn, err := listen("grpc-addr", f.grpcAddr, auth.Enabled(), grpcTLS != nil, f.plaintext)
	if err != nil {
		return err
	}
	adminLn, err := listen("admin-addr", f.adminAddr, auth.Enabled(), adminTLS != nil, f.plaintext)
	if err != nil {
		grpcLn.Close()
		return err
	}

	hs := health.NewServer()
	for _, name := range append([]string{""}, grpcapi.ServiceNames...) {
		hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	}
	gs := grpcapi.NewServer(grpcapi.New(eng, grpcapi.Config{Logger: log}), hs, auth,
		append(grpcCreds, grpc.ChainUnaryInterceptor(metrics.UnaryInterceptor), grpc.ChainStreamInterceptor(metrics.StreamInterceptor))...)
	if !auth.Enabled() {
		log.Warn("no token files given: every caller may act as admin, so Arbiter listens on loopback only; use --admin-token-file and --gateway-token-file in production")
	}

	var ready atomic.Bool
	mux := adminMux(&ready, bundles.Handler(bundleMgr, bundleAuth{auth}), metrics.Handler())
	if f.pprof {
		// One guard in front of every profile route, so no route can be added unguarded.
		profiles := http.NewServeMux()
		profiles.HandleFunc("/debug/pprof/", pprof.Index)
		profiles.HandleFunc("/debug/pprof/profile", pprof.Profile)
		profiles.HandleFunc("/debug/pprof/trace", pprof.Trace)
		profiles.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.Handle("/debug/pprof/", bundles.AdminOnly(bundleAuth{auth}, profiles))
	}
	// Profiles can run for minutes; the admin server sets no write timeout.
	admin := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, TLSConfig: adminTLS}

	reapCtx, stopReaper := context.WithCancel(context.Background())
	defer stopReaper()
	go eng.RunReaper(reapCtx, f.reapInterval, f.reapRetention)

	errc := make(chan error, 2)
	go func() { errc <- gs.Serve(grpcLn) }()
	go func() {
		var err error
		if adminTLS != nil {
			err = admin.ServeTLS(adminLn, "", "")
		} else {
			err = admin.Serve(adminLn)
		}
		if !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	ready.Store(true)
	log.Info("arbiter serving", slog.String("grpc_addr", grpcLn.Addr().String()),
		slog.String("admin_addr", adminLn.Addr().String()), slog.String("policy_revision", eng.Revision()),
		slog.Bool("admin_tls", f.adminTLSCert != ""), slog.Bool("grpc_tls", f.grpcTLSCert != ""))

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
	// No call is in flight any more: write out every queued decision record.
	if err := decisionLog.Close(shutCtx); err != nil {
		log.Error("decision log not fully flushed", slog.Any("error", err))
	}
	if err := admin.Shutdown(shutCtx); err != nil {
		log.Warn("admin listener did not stop cleanly", slog.Any("error", err))
	}
	log.Info("stopped")
	return serveErr
}

// adminMux serves the admin listener: the open health and metrics endpoints and the bundle API.
func adminMux(ready *atomic.Bool, bundleAPI, metrics http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.Handle("/v1/bundles", bundleAPI)
	mux.Handle("/v1/bundles/", bundleAPI)
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

// serverTLS loads the certificate of a listener (prefix "grpc" or "admin"): nil without
// one, TLS 1.2 or later with one.
func serverTLS(prefix, certFile, keyFile string) (*tls.Config, error) {
	if certFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("--%s-tls-cert/--%s-tls-key: %w", prefix, prefix, err)
	}
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}

// engineActivator lets the bundle manager prepare policies on the engine.
type engineActivator struct{ eng *engine.Engine }

func (a engineActivator) Prepare(ctx context.Context, p bundles.Policy) (func(), error) {
	pq, err := a.eng.Prepare(ctx, engine.Policy(p))
	if err != nil {
		return nil, err
	}
	return func() { a.eng.Swap(pq) }, nil
}

// bundleAuth lets the bundle API use the service's bearer-token roles.
type bundleAuth struct{ auth *grpcapi.Authenticator }

func (b bundleAuth) Authorize(header string) (string, bool, bool) {
	p, ok := b.auth.Authenticate(header)
	return p.Name, p.Role == grpcapi.RoleAdmin, ok
}

// newBundleManager builds the bundle manager and, with --data-dir, restores the bundles that
// were active before the restart.
func newBundleManager(ctx context.Context, f serveFlags, eng *engine.Engine, fallback engine.Policy, log *slog.Logger, metrics *telemetry.Metrics) (*bundles.Manager, error) {
	cfg := bundles.Config{Fallback: bundles.Policy(fallback), Logger: log, OnActivation: metrics.BundleActivation}
	if f.bundleKey != "" {
		key, err := keys.NewKeyConfig(f.bundleKey, f.bundleKeyAlg, "")
		if err != nil {
			return nil, fmt.Errorf("--bundle-verification-key: %w", err)
		}
		cfg.Verification = bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{f.bundleKeyID: key}, f.bundleKeyID, "", nil)
	}
	if f.dataDir != "" {
		store, err := bundles.NewDiskStore(filepath.Join(f.dataDir, "bundles"))
		if err != nil {
			return nil, fmt.Errorf("--data-dir: %w", err)
		}
		cfg.Store = store
	}
	m := bundles.NewManager(cfg, engineActivator{eng})
	if _, err := m.Restore(ctx); err != nil {
		return nil, fmt.Errorf("restore bundles from --data-dir: %w", err)
	}
	return m, nil
}

// flushInterval is the writer's pause for --decision-log-flush-interval: 0 there means no
// batching, which a pause of a nanosecond amounts to (audit.Config reads 0 as its default).
func flushInterval(flag time.Duration) time.Duration {
	if flag == 0 {
		return time.Nanosecond
	}
	return flag
}

// newDecisionLog opens the decision log's sink and starts the log. With --decision-log off,
// records are still counted in the metrics but written nowhere.
func newDecisionLog(f serveFlags, metrics *telemetry.Metrics, log *slog.Logger, policyMask func(context.Context, *engine.Record) ([]string, error)) (*audit.Log, func(), error) {
	if f.logFlush < 0 {
		return nil, nil, fmt.Errorf("--decision-log-flush-interval: %s is negative", f.logFlush)
	}
	var sink io.Writer
	closeSink := func() {}
	switch f.decisionLog {
	case "off":
	case "stdout", "-":
		sink = os.Stdout
	default:
		rot := &lumberjack.Logger{Filename: f.decisionLog, MaxSize: f.logMaxSizeMB, MaxBackups: f.logMaxBackups}
		sink, closeSink = rot, func() { rot.Close() }
	}
	var mask []string
	if f.logMask != "" {
		mask = strings.Split(f.logMask, ",")
	}
	dl, err := audit.New(audit.Config{
		Sink:          sink,
		Queue:         f.logQueue,
		WhenFull:      audit.WhenFull(f.logWhenFull),
		BlockTimeout:  f.logBlockTimeout,
		FlushInterval: flushInterval(f.logFlush),
		Arguments:     f.logArguments,
		Mask:          mask,
		PolicyMask:    policyMask,
		Observe:       metrics.Observe,
		OnWriteError:  func(err error) { log.Error("decision log write failed", slog.Any("error", err)) },
	})
	if err != nil {
		closeSink()
		return nil, nil, fmt.Errorf("--decision-log: %w", err)
	}
	metrics.DecisionLog(dl.Depth, dl.Full, dl.WriteFailures)
	return dl, closeSink, nil
}
