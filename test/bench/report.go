package bench

import (
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Target is one bar of the issue, measured.
type Target struct {
	Name     string
	Want     string
	Measured string
	// Pass is nil when the run did not measure what the target needs.
	Pass *bool
}

func verdict(ok bool) *bool { return &ok }

// roundRatios is each round's throughput over the other server's in the same round, the
// figure least moved by the machine's slow and fast phases, which last longer than a round.
func roundRatios(a, b []*Stats) string {
	var parts []string
	for i := range min(len(a), len(b)) {
		if bt := b[i].Throughput(); bt > 0 {
			parts = append(parts, fmt.Sprintf("%.2f×", a[i].Throughput()/bt))
		} else {
			parts = append(parts, "n/a") // the other server answered nothing that round
		}
	}
	return strings.Join(parts, ", ")
}

// Targets evaluates the bars against the report.
func (r *Report) Targets() []Target {
	var out []Target
	if c := r.Compare; c != nil && len(c.Noop) > 0 && len(c.Arbiter) > 0 {
		a, n := MedianThroughput(c.Arbiter), MedianThroughput(c.Noop)
		out = append(out, Target{Name: "gRPC Decide throughput vs the no-op gRPC server (closed loop, median of rounds)", Want: "≥ 0.70×",
			Measured: fmt.Sprintf("%.2f× (%s vs %s req/s; each round against its no-op: %s)", a/n, rps(a), rps(n), roundRatios(c.Arbiter, c.Noop)), Pass: verdict(a >= 0.7*n)})
		if len(c.OPA) > 0 {
			o := MedianThroughput(c.OPA)
			out = append(out, Target{Name: "gRPC Decide throughput vs OPA's REST server (closed loop, median of rounds)", Want: "≥ 2.5×",
				Measured: fmt.Sprintf("%.2f× (%s vs %s req/s)", a/o, rps(a), rps(o)), Pass: verdict(a >= 2.5*o)})
		}
	}
	if o := r.Open; o != nil && o.Arbiter != nil && o.OPA != nil {
		a, p := o.Arbiter.Latency.Quantile(0.99), o.OPA.Latency.Quantile(0.99)
		out = append(out, Target{Name: fmt.Sprintf("p99 at the same offered load (open loop, %s req/s)", rps(o.Rate)), Want: "Arbiter < OPA",
			Measured: fmt.Sprintf("%s vs %s", dur(a), dur(p)), Pass: verdict(a < p && o.Arbiter.Failed() == 0)})
	}
	if s := r.Scale; s != nil && len(s.Points) >= 2 {
		lo, hi := s.Points[0], s.Points[len(s.Points)-1]
		a, b := lo.Open.Latency.Quantile(0.99), hi.Open.Latency.Quantile(0.99)
		out = append(out, Target{Name: fmt.Sprintf("p99 with %s sessions vs %s (open loop, %s req/s)", count(hi.Sessions), count(lo.Sessions), rps(hi.Rate)),
			Want: "≤ 1.25×", Measured: fmt.Sprintf("%.2f× (%s vs %s)", ratio(b, a), dur(b), dur(a)), Pass: verdict(float64(b) <= 1.25*float64(a))})
		heap, rss := hi.Prefill.PerSession()
		out = append(out, Target{Name: "memory per session (live heap after GC)", Want: "≤ 1.5 KiB",
			Measured: fmt.Sprintf("%s heap, %s RSS", bytesOf(heap), bytesOf(rss)), Pass: verdict(heap <= 1536)})
	}
	if s := r.Swap; s != nil {
		failed := s.Swapping.Failed() + uint64(len(s.ActivationErrors))
		revs := len(s.Swapping.Revisions)
		out = append(out, Target{Name: "failed decisions during policy swaps", Want: "0",
			Measured: fmt.Sprintf("%d (of %d; %d activations, %d revisions seen deciding)", failed, s.Swapping.Latency.Count(), s.Activations, revs),
			Pass:     verdict(failed == 0 && s.Activations > 0 && revs > 1)})
		a, b := s.Steady.Latency.Quantile(0.99), s.Swapping.Latency.Quantile(0.99)
		out = append(out, Target{Name: "p99 during swaps vs steady state", Want: "≤ 2×",
			Measured: fmt.Sprintf("%.2f× (%s vs %s)", ratio(b, a), dur(b), dur(a)), Pass: verdict(float64(b) <= 2*float64(a))})
	}
	if d := r.Discovery; d != nil && d.Filter != nil {
		dt, ft := d.Decide.Throughput(), d.Filter.Throughput()
		x := 0.0
		if ft > 0 {
			x = dt / ft
		}
		out = append(out, Target{Name: fmt.Sprintf("FilterTools over %d tools vs one Decide (cost per call, closed loop)", r.Config.FilterTools), Want: "≤ 20×",
			Measured: fmt.Sprintf("%.1f× (%s vs %s calls/s)", x, rps(ft), rps(dt)), Pass: verdict(ft > 0 && x <= 20)})
	}
	return out
}

// PerSession is the growth of the live heap and of the RSS (both after a collection) per
// session added.
func (p PrefillResult) PerSession() (heap, rss float64) {
	if p.Added == 0 {
		return 0, 0
	}
	n := float64(p.Added)
	return (float64(p.After.HeapAlloc) - float64(p.Before.HeapAlloc)) / n, (float64(p.After.RSS) - float64(p.Before.RSS)) / n
}

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

func rps(v float64) string {
	switch {
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	default:
		return fmt.Sprintf("%.1f", v)
	}
}

func count(n int) string {
	s := fmt.Sprint(n)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// dur prints a latency with three significant digits.
func dur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	case d >= 100*time.Millisecond:
		return fmt.Sprintf("%.0f ms", float64(d)/1e6)
	case d >= 10*time.Millisecond:
		return fmt.Sprintf("%.1f ms", float64(d)/1e6)
	case d >= time.Millisecond:
		return fmt.Sprintf("%.2f ms", float64(d)/1e6)
	case d >= 100*time.Microsecond:
		return fmt.Sprintf("%.0f µs", float64(d)/1e3)
	default:
		return fmt.Sprintf("%.1f µs", float64(d)/1e3)
	}
}

func bytesOf(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.2f KiB", b/(1<<10))
	default:
		return fmt.Sprintf("%.0f B", b)
	}
}

const statsHeader = "| req/s | p50 | p90 | p99 | p99.9 | max | errors | failed decisions | allow / deny / approval |\n"

func statsCells(s *Stats) string {
	l := &s.Latency
	errs := fmt.Sprint(s.ErrorCount())
	if sum := s.ErrorSummary(); sum != "" {
		errs += " (" + strings.ReplaceAll(sum, "|", "/") + ")"
	}
	failed := fmt.Sprint(s.Unexpected)
	if sum := s.UnexpectedSummary(); sum != "" {
		failed += " (" + strings.ReplaceAll(sum, "|", "/") + ")"
	}
	return fmt.Sprintf("| %s | %s | %s | %s | %s | %s | %s | %s | %d / %d / %d |",
		rps(s.Throughput()), dur(l.Quantile(0.5)), dur(l.Quantile(0.9)), dur(l.Quantile(0.99)), dur(l.Quantile(0.999)), dur(l.Max()),
		errs, failed, s.Outcomes[OutcomeAllow], s.Outcomes[OutcomeDeny], s.Outcomes[OutcomeApproval])
}

// WriteMarkdown writes the report as Markdown; command is the command line that ran it.
func (r *Report) WriteMarkdown(w io.Writer, command string) error {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	c := r.Config
	p("# Arbiter benchmark report\n\n")
	p("Run %s, took %s.\n\n", r.Started.UTC().Format(time.RFC3339), r.Took.Round(time.Second))
	if command != "" {
		p("```sh\n%s\n```\n\n", command)
	}
	m := r.Machine
	p("## Machine\n\n")
	p("- CPU: %s; %d CPUs, GOMAXPROCS %d; memory %s\n", m.CPU, m.CPUs, m.GOMAXPROCS, m.MemTotal)
	p("- %s, kernel %s, %s; OPA %s\n", m.OS, m.Kernel, m.Go, r.OPAVersion)
	p("- load average before the run: %s; after: %s\n", r.LoadBefore, r.LoadAfter)
	p("- the load generator and the servers share these CPUs; each server is its own process\n")
	switch r.Server {
	case ArbiterBinary:
		from := "built from this module"
		if r.ArbiterBin != "" {
			from = fmt.Sprintf("the prebuilt binary %s (-arbiter-bin)", r.ArbiterBin)
		}
		p("- Arbiter: `arbiter serve %s`, %s (as shipped: decision log, metrics), harness policy via --policy", strings.Join(r.ArbiterArgs, " "), from)
		if r.DecisionLogRecords > 0 {
			p("; it wrote %s decision records (%s) to its decision log on stdout, read by the harness", count(int(r.DecisionLogRecords)), bytesOf(float64(r.DecisionLogBytes)))
		}
		if r.ServerPeakRSS > 0 {
			p("; RSS %s at the end, %s at its peak", bytesOf(float64(r.ServerRSS)), bytesOf(float64(r.ServerPeakRSS)))
		}
		p("\n")
	case ArbiterLib:
		p("- Arbiter: the engine and gRPC service composed as `arbiter serve` does (pooled stream workers, GC target 400 unless GOGC is set), without decision log and metrics, in a child process of the harness\n")
	}
	if c.PolicyDir != "" {
		p("- policy: the one in %s (`-policy-dir`), not the embedded default policy\n", c.PolicyDir)
	}
	if len(c.ServerEnv) > 0 {
		p("- Arbiter servers' environment: %s\n", strings.Join(c.ServerEnv, " "))
	}
	p("- the no-op server and the session scale scenario run in child processes of the harness (its binary re-executed); the no-op server serves with Arbiter's gRPC server options (grpcapi.ServerOptions) and collector tuning (gctune, and the collector settings of -server-env); the scale scenario uses the library composition, which can grow the store directly and read its heap\n")
	p("- settings: %s per measurement after %s warm-up, %d closed-loop callers over %d gRPC connections (OPA: up to %d keep-alive HTTP/1.1 connections), %d load sessions opened through the API, open loop with up to %d requests in flight\n\n",
		c.Duration, c.Warmup, c.Concurrency, c.Conns, c.MaxInFlight, c.LoadSessions, c.MaxInFlight)

	if ts := r.Targets(); len(ts) > 0 {
		p("## Targets\n\n| target | want | measured | |\n| --- | --- | --- | --- |\n")
		for _, t := range ts {
			mark := "not measured"
			if t.Pass != nil {
				mark = map[bool]string{true: "**pass**", false: "**miss**"}[*t.Pass]
			}
			p("| %s | %s | %s | %s |\n", t.Name, t.Want, t.Measured, mark)
		}
		p("\n")
	}

	p("Request mix (every request a `tools/call` in a live session whose history is full):\n\n")
	p("| request | share | arguments | intended | the policy answers |\n| --- | --- | --- | --- | --- |\n")
	for k, t := range Mix {
		got := "(not calibrated)"
		if r.Calibration != nil {
			got = r.Calibration.Want[k].String()
			if len(r.Calibration.Reasons[k]) > 0 {
				got += " (" + strings.Join(r.Calibration.Reasons[k], ", ") + ")"
			}
		}
		p("| %s | %d%% | %d B | %s | %s |\n", t.Name, t.Weight, len(t.Args), t.Intended, got)
	}
	p("\n\"Failed decisions\" are answers whose outcome differs from what the policy answers that request in the harness's own engine (right column), as Arbiter's and OPA's servers both should.\n\n")

	if cr := r.Compare; cr != nil {
		p("## Closed loop: transport limit, Arbiter, OPA (%d callers)\n\n", c.Concurrency)
		p("| server | round " + statsHeader + "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		rows := func(name string, runs []*Stats) {
			for i, s := range runs {
				p("| %s | %d %s\n", name, i+1, statsCells(s))
			}
			if len(runs) > 1 {
				med := Merged(runs)
				cells := statsCells(med)
				// The throughput cell of the merged row is the median of the rounds.
				_, rest, _ := strings.Cut(strings.TrimPrefix(cells, "| "), " |")
				p("| %s | median / all | %s |%s\n", name, rps(MedianThroughput(runs)), rest)
			}
		}
		rows("no-op gRPC", cr.Noop)
		rows("Arbiter gRPC", cr.Arbiter)
		rows("OPA REST", cr.OPA)
		p("\n")
		// CPU per request is steadier than throughput on a shared machine: the servers and the
		// generator share its cores, so it shows where a throughput ratio comes from.
		p("CPU time per request over all rounds (from /proc: the server's process, and the harness, which is the load generator):\n\n")
		p("| server | server CPU per request | load generator CPU per request |\n| --- | --- | --- |\n")
		for _, row := range []struct {
			name string
			runs []*Stats
		}{{"no-op gRPC", cr.Noop}, {"Arbiter gRPC", cr.Arbiter}, {"OPA REST", cr.OPA}} {
			if m := Merged(row.runs); m != nil && m.ServerCPU > 0 {
				srv, load := m.CPUPerRequest()
				p("| %s | %s | %s |\n", row.name, micros(srv), micros(load))
			}
		}
		p("\n")
	}
	if o := r.Open; o != nil {
		p("## Open loop at %s req/s (latency from when each request was due)\n\n", rps(o.Rate))
		p("| server " + statsHeader + "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, row := range []struct {
			name string
			s    *Stats
		}{{"no-op gRPC", o.Noop}, {"Arbiter gRPC", o.Arbiter}, {"OPA REST", o.OPA}} {
			if row.s != nil {
				p("| %s %s\n", row.name, statsCells(row.s))
			}
		}
		p("\n")
	}
	if d := r.Discovery; d != nil {
		p("## Discovery: FilterTools over %d tools vs Decide (closed loop, %d callers)\n\n", c.FilterTools, c.Concurrency)
		p("| call " + statsHeader + "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		p("| Decide (mix) %s\n", statsCells(d.Decide))
		if d.Filter != nil {
			p("| FilterTools (%d tools) %s\n", c.FilterTools, statsCells(d.Filter))
		}
		p("\n")
	}
	if s := r.Swap; s != nil {
		p("## Policy swap under load (open loop at %s req/s)\n\n", rps(s.Rate))
		how := "pushed as a bundle over the bundle API (`PUT /v1/bundles/bench`: read, compile, prepare, probe, swap)"
		if s.Via == SwapViaEngine {
			how = "activated through the engine's API (policy loaded, compiled, prepared, probed, swapped)"
		}
		p("A new revision (data.bench.revision and a rule, data.bench.code_revision, changed, so every activation compiles) %s every %s for %s, between two windows of steady load (%s each, after %s of warm-up) whose merged figures are the steady state.\n\n", how, c.SwapInterval, c.SwapDuration, c.Duration, c.Warmup)
		p("| phase " + statsHeader + "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		p("| steady before %s\n| swapping %s\n| steady after %s\n| steady (before and after) %s\n\n",
			statsCells(s.SteadyBefore), statsCells(s.Swapping), statsCells(s.SteadyAfter), statsCells(s.Steady))
		took := slices.Clone(s.ActivationTook)
		slices.Sort(took)
		if len(took) > 0 {
			p("Activations: %d, %d failed; activation time in the server median %s, max %s; %d revisions decided requests during the swap phase.\n\n",
				s.Activations, len(s.ActivationErrors), dur(took[len(took)/2]), dur(took[len(took)-1]), len(s.Swapping.Revisions))
		}
		for _, e := range s.ActivationErrors {
			p("- activation error: %s\n", e)
		}
		switch s.Evaluator {
		case "":
		case "ir":
			p("The last revision pushed was decided by its plan (`arbiter_policy_evaluator{evaluator=\"ir\"}`).\n\n")
		default:
			p("**The last revision pushed was decided by %s, not by its plan** (`arbiter_policy_evaluator`): these figures do not measure the plan executor; the service log says why.\n\n", s.Evaluator)
		}
	}
	if s := r.Scale; s != nil {
		p("## Session scale\n\n")
		p("Each size has its own server, all running at once. Open loop measured for %s at each size, in %d windows that alternate between the sizes (each after %s of warm-up), merged.\n\n", r.Config.ScaleDuration, r.Config.ScaleRounds, r.Config.Warmup)
		p("| live sessions | closed req/s | closed p99 | open rate | open p50 | open p99 | open p99.9 | failed | live heap | RSS after GC | RSS under load | GC cycles during the runs | GC pause during the runs |\n")
		p("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		for _, pt := range s.Points {
			p("| %s | %s | %s | %s | %s | %s | %s | %d | %s | %s | %s | %d | %s |\n", count(pt.Sessions), rps(pt.Closed.Throughput()), dur(pt.Closed.Latency.Quantile(0.99)),
				rps(pt.Rate), dur(pt.Open.Latency.Quantile(0.5)), dur(pt.Open.Latency.Quantile(0.99)), dur(pt.Open.Latency.Quantile(0.999)),
				pt.Closed.Failed()+pt.Open.Failed(), bytesOf(float64(pt.Idle.HeapAlloc)), bytesOf(float64(pt.Idle.RSS)), bytesOf(float64(pt.Loaded.RSS)),
				pt.Loaded.NumGC-pt.Settled.NumGC, dur(pt.Loaded.PauseTotal-pt.Settled.PauseTotal))
		}
		p("\nOpen-loop p99 of each window, in the order each size ran them:")
		for _, pt := range r.Scale.Points {
			var ws []string
			for _, w := range pt.OpenWindows {
				ws = append(ws, dur(w.Latency.Quantile(0.99)))
			}
			p(" %s sessions %s;", count(pt.Sessions), strings.Join(ws, ", "))
		}
		p("\n")
		p("\nBefore the measured runs at each size, the open-loop load ran until the server completed a collection cycle after growing the store (its heap grown to the collector's goal, as in a server that has held that many sessions for a while): ")
		for i, pt := range s.Points {
			if i > 0 {
				p(", ")
			}
			p("%s sessions %s (%d cycles)", count(pt.Sessions), pt.Settle.Round(time.Second), pt.Settled.NumGC-pt.Idle.NumGC)
		}
		p(".\n\nStore growth (sessions stored as OpenSession stores them; no calls recorded):\n\n")
		p("| grown to | added | took | heap per session | RSS per session (after GC) |\n| --- | --- | --- | --- | --- |\n")
		for _, pt := range s.Points {
			h, rs := pt.Prefill.PerSession()
			rss := bytesOf(rs)
			if rs < 0 {
				// A small store: returning freed pages to the OS moved RSS more than it grew.
				rss = "— (RSS fell)"
			}
			p("| %s | %s | %s | %s | %s |\n", count(pt.Sessions), count(pt.Prefill.Added), pt.Prefill.Took.Round(time.Millisecond), bytesOf(h), rss)
		}
		p("\n")
	}
	if len(r.InProcess) > 0 {
		p("## In-process: engine vs raw OPA (this process, no gRPC)\n\n")
		p("| benchmark | goroutines | ns/op | ops/s | allocs/op | B/op |\n| --- | --- | --- | --- | --- | --- |\n")
		for _, ip := range r.InProcess {
			if ip.Err != "" {
				p("| %s | %d | error: %s | | | |\n", ip.Name, ip.Goroutines, ip.Err)
				continue
			}
			p("| %s | %d | %.0f | %s | %.0f | %.0f |\n", ip.Name, ip.Goroutines, ip.NsPerOp, rps(ip.OpsPerSec()), ip.AllocsPerOp, ip.BytesPerOp)
		}
		p("\n")
	}
	if len(r.ProfileRuns) > 0 {
		p("## Profiled runs (library server, closed loop, CPU and allocation profiles on)\n\n")
		p("| call " + statsHeader + "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		names := make([]string, 0, len(r.ProfileRuns))
		for n := range r.ProfileRuns {
			names = append(names, n)
		}
		slices.Sort(names)
		for _, n := range names {
			p("| %s %s\n", n, statsCells(r.ProfileRuns[n]))
		}
		p("\n")
	}
	if r.OPASource != "" {
		p("OPA baseline: %s, serving the default policy's Rego and the harness data.json, asked `POST %s` with the input document the engine builds for each request.\n\n", r.OPASource, DecisionPath)
	}
	if len(r.Profiles) > 0 {
		p("CPU and allocation profiles (`noop-decide` is the no-op server's; the others are Arbiter's): %s\n", strings.Join(r.Profiles, ", "))
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// micros is a duration in microseconds, to a tenth.
func micros(d time.Duration) string {
	return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
}
