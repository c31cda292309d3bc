// Package telemetry is Arbiter's Prometheus metrics: decisions, their latency, sessions,
// approvals, bundles, the decision log, the gRPC server and the Go runtime. Every name is
// prefixed arbiter_ (runtime and process metrics keep their standard go_ and process_ names).
package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/arbiter-mcp/arbiter/engine"
)

// Metrics holds Arbiter's collectors, registered on their own registry.
type Metrics struct {
	reg *prometheus.Registry

	decisions       *prometheus.CounterVec
	decisionSeconds *prometheus.HistogramVec
	evalSeconds     prometheus.Histogram
	approvalWait    prometheus.Histogram
	activations     *prometheus.CounterVec
	grpcRequests    *prometheus.CounterVec
	grpcSeconds     *prometheus.HistogramVec

	// actions are the action label values: knownActions, and those seen, up to maxActions.
	actions     sync.Map // string → struct{}
	actionCount atomic.Int32

	// The children of the vectors counted on every call, by label values.
	decisionsBy       children[[2]string, prometheus.Counter]
	decisionSecondsBy children[string, prometheus.Observer]
	grpcRequestsBy    children[grpcCall, prometheus.Counter]
	grpcSecondsBy     children[string, prometheus.Observer]
}

// maxActions bounds the action label values of the decision metrics beyond knownActions. A
// decision's action is the MCP method the gateway names, so without a bound a caller could
// create a series per string it sends; past the bound, new actions count as "other" (as would
// a method named "other").
const maxActions = 64

// otherAction is the action label of the actions past maxActions.
const otherAction = "other"

// knownActions are the MCP methods of the specification and Arbiter's own actions: always
// labelled as themselves, whatever a caller sent first, and not counted in maxActions.
var knownActions = []string{
	"initialize", "ping", "tools/call", "tools/list", "resources/read", "resources/list",
	"resources/templates/list", "resources/subscribe", "resources/unsubscribe", "prompts/get",
	"prompts/list", "sampling/createMessage", "elicitation/create", "completion/complete",
	"logging/setLevel", "roots/list",
	engine.ActionSessionOpen, engine.ActionSessionRenew, engine.ActionSessionClose,
	engine.ActionSessionsRevoke, engine.ActionApprovalResolve, engine.ActionToolsFilter,
}

// action is the label value of action a.
func (m *Metrics) action(a string) string {
	if _, ok := m.actions.Load(a); ok {
		return a
	}
	if m.actionCount.Load() >= maxActions {
		return otherAction
	}
	if m.actionCount.Add(1) > maxActions {
		m.actionCount.Add(-1)
		return otherAction
	}
	if _, loaded := m.actions.LoadOrStore(a, struct{}{}); loaded {
		m.actionCount.Add(-1)
	}
	return a
}

type grpcCall struct {
	method string
	code   codes.Code
}

// children caches a metric vector's child per label values. The vector's own look-up
// (WithLabelValues) checks and hashes the values and takes a lock on every call; the label
// values here come from small fixed sets (actions, outcomes, methods, status codes).
type children[K comparable, M any] struct {
	m   sync.Map // K → M
	new func(K) M
}

func (c *children[K, M]) of(k K) M {
	if v, ok := c.m.Load(k); ok {
		return v.(M)
	}
	v, _ := c.m.LoadOrStore(k, c.new(k))
	return v.(M)
}

// Decision latencies sit in the microseconds to milliseconds.
var latencyBuckets = []float64{25e-6, 50e-6, 100e-6, 200e-6, 400e-6, 800e-6, 1.6e-3, 3.2e-3, 6.4e-3, 12.8e-3, 25.6e-3, 51.2e-3, 0.1, 0.25, 1}

// New returns the metrics with the Go runtime and process collectors registered.
func New() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbiter_decisions_total", Help: fmt.Sprintf("Decisions by action and result (besides MCP's methods and Arbiter's actions, %d actions; new ones past those count as %s).", maxActions, otherAction),
		}, []string{"action", "result"}),
		decisionSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "arbiter_decision_duration_seconds", Help: "Time to decide, session handling and recording included, by action.",
			Buckets: latencyBuckets,
		}, []string{"action"}),
		evalSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "arbiter_policy_evaluation_duration_seconds", Help: "Time spent evaluating the Rego policy per decision.",
			Buckets: latencyBuckets,
		}),
		approvalWait: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "arbiter_approval_resolution_seconds", Help: "Time from an approval being asked for to a human resolving it.",
			Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1800, 3600, 4 * 3600},
		}),
		activations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbiter_bundle_activations_total", Help: "Bundle pushes, rollbacks and deletions by bundle and outcome (activated, rejected).",
		}, []string{"bundle", "outcome"}),
		grpcRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "arbiter_grpc_requests_total", Help: "gRPC requests by method and status code.",
		}, []string{"method", "code"}),
		grpcSeconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "arbiter_grpc_request_duration_seconds", Help: "gRPC request handling time by method (streams: until they end).",
			Buckets: latencyBuckets,
		}, []string{"method"}),
	}
	for _, a := range knownActions {
		m.actions.Store(a, struct{}{})
	}
	m.decisionsBy.new = func(k [2]string) prometheus.Counter { return m.decisions.WithLabelValues(k[0], k[1]) }
	m.decisionSecondsBy.new = func(action string) prometheus.Observer { return m.decisionSeconds.WithLabelValues(action) }
	m.grpcRequestsBy.new = func(k grpcCall) prometheus.Counter { return m.grpcRequests.WithLabelValues(k.method, k.code.String()) }
	m.grpcSecondsBy.new = func(method string) prometheus.Observer { return m.grpcSeconds.WithLabelValues(method) }
	m.reg.MustRegister(m.decisions, m.decisionSeconds, m.evalSeconds, m.approvalWait, m.activations, m.grpcRequests, m.grpcSeconds,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Observe counts one decision record. It runs on the decision's goroutine: counters only.
func (m *Metrics) Observe(rec *engine.Record) {
	action := m.action(rec.Action)
	m.decisionsBy.of([2]string{action, string(rec.Outcome)}).Inc()
	if rec.Duration > 0 {
		m.decisionSecondsBy.of(action).Observe(rec.Duration.Seconds())
	}
	if rec.Eval > 0 {
		m.evalSeconds.Observe(rec.Eval.Seconds())
	}
	if rec.Action == engine.ActionApprovalResolve {
		m.approvalWait.Observe(rec.ApprovalAge.Seconds())
	}
}

// BundleActivation counts a bundle change by outcome.
func (m *Metrics) BundleActivation(bundle, outcome string) {
	m.activations.WithLabelValues(bundle, outcome).Inc()
}

// Sessions reports sessions by status and pending approvals at scrape time.
func (m *Metrics) Sessions(counts func() (map[string]int, int)) {
	m.reg.MustRegister(&sessionCollector{counts: counts})
}

// BundleRevisions reports the active revision of each bundle at scrape time.
func (m *Metrics) BundleRevisions(active func() map[string]string) {
	m.reg.MustRegister(&bundleCollector{active: active})
}

// PolicyEvaluator reports at scrape time what decides for the serving policy revision:
// "ir" (its plan) or "topdown" (OPA's evaluator, after a policy the plan executor cannot run).
func (m *Metrics) PolicyEvaluator(current func() string) {
	m.reg.MustRegister(&evaluatorCollector{current: current})
}

// DecisionLog reports the decision log's queue depth, refusals for a full queue, and failed
// writes.
func (m *Metrics) DecisionLog(depth func() int, full, failures func() uint64) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "arbiter_decision_log_queue_depth", Help: "Decision records waiting to be written."},
			func() float64 { return float64(depth()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arbiter_decision_log_full_total", Help: "Decisions denied because the decision log queue was full."},
			func() float64 { return float64(full()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "arbiter_decision_log_write_failures_total", Help: "Decision records that could not be written."},
			func() float64 { return float64(failures()) }),
	)
}

// UnaryInterceptor counts and times unary calls, rejected ones included.
func (m *Metrics) UnaryInterceptor(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	m.grpcDone(info.FullMethod, err, start)
	return resp, err
}

// StreamInterceptor counts and times streaming calls.
func (m *Metrics) StreamInterceptor(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	start := time.Now()
	err := handler(srv, ss)
	m.grpcDone(info.FullMethod, err, start)
	return err
}

func (m *Metrics) grpcDone(method string, err error, start time.Time) {
	m.grpcRequestsBy.of(grpcCall{method, status.Code(err)}).Inc()
	m.grpcSecondsBy.of(method).Observe(time.Since(start).Seconds())
}

var (
	sessionsDesc  = prometheus.NewDesc("arbiter_sessions", "Sessions in the store by status.", []string{"status"}, nil)
	approvalsDesc = prometheus.NewDesc("arbiter_approvals_pending", "Approvals waiting for a human.", nil, nil)
	bundleDesc    = prometheus.NewDesc("arbiter_bundle_active_revision", "1 for the active revision of each bundle.", []string{"bundle", "revision"}, nil)
	evaluatorDesc = prometheus.NewDesc("arbiter_policy_evaluator", "1 for what decides for the serving policy revision: ir (its plan) or topdown.", []string{"evaluator"}, nil)
)

// reuseFactor bounds how much of a CPU counting the store for scrapes may take: a count is
// reused for reuseFactor times as long as it took. Counting walks every session (~25 ms
// with a million on two CPUs; microseconds with a few hundred, so small stores are
// counted afresh on every scrape), and /metrics needs no token: without the bound, anyone
// reaching the admin listener could keep a CPU busy by scraping.
const reuseFactor = 20

// reuseFrom is the store size from which a count is reused: counting fewer sessions costs
// next to nothing, and a small count that took long because the process was descheduled must
// not hide the sessions opened since.
const reuseFrom = 10_000

type sessionCollector struct {
	counts func() (map[string]int, int)

	mu       sync.Mutex // held while counting: concurrent scrapes share one count
	at       time.Time
	took     time.Duration
	sessions map[string]int
	total    int // sessions in the last count
	pending  int
}

// current returns the counts, counting again unless the last count found at least reuseFrom
// sessions and is younger than reuseFactor times the time it took.
func (c *sessionCollector) current() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.sessions == nil || c.total < reuseFrom || time.Since(c.at) >= reuseFactor*c.took {
		start := time.Now()
		c.sessions, c.pending = c.counts()
		c.at, c.took = time.Now(), time.Since(start)
		c.total = 0
		for _, n := range c.sessions {
			c.total += n
		}
	}
	return c.sessions, c.pending
}

func (c *sessionCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- sessionsDesc
	ch <- approvalsDesc
}

func (c *sessionCollector) Collect(ch chan<- prometheus.Metric) {
	sessions, pending := c.current()
	for _, st := range []string{"active", "pending_approval", "closed", "revoked", "expired"} {
		ch <- prometheus.MustNewConstMetric(sessionsDesc, prometheus.GaugeValue, float64(sessions[st]), st)
	}
	ch <- prometheus.MustNewConstMetric(approvalsDesc, prometheus.GaugeValue, float64(pending))
}

type evaluatorCollector struct {
	current func() string
}

func (c *evaluatorCollector) Describe(ch chan<- *prometheus.Desc) { ch <- evaluatorDesc }

func (c *evaluatorCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(evaluatorDesc, prometheus.GaugeValue, 1, c.current())
}

type bundleCollector struct {
	active func() map[string]string
}

func (c *bundleCollector) Describe(ch chan<- *prometheus.Desc) { ch <- bundleDesc }

func (c *bundleCollector) Collect(ch chan<- prometheus.Metric) {
	for name, rev := range c.active() {
		ch <- prometheus.MustNewConstMetric(bundleDesc, prometheus.GaugeValue, 1, name, rev)
	}
}
