package engine

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"

	"github.com/arbiter-mcp/arbiter/engine/irexec"
	"github.com/arbiter-mcp/arbiter/engine/state"
)

// Config tunes an Engine. Zero values take the defaults noted on each field.
type Config struct {
	// Clock returns the time of a decision (default time.Now). Tests inject their own.
	Clock func() time.Time
	// EvalTimeout bounds one policy evaluation (default 250ms); a timeout denies. It counts
	// from when the evaluation starts, after it has waited for a slot (EvalConcurrency).
	EvalTimeout time.Duration
	// EvalConcurrency is how many policy evaluations run at once (default GOMAXPROCS); the
	// rest wait their turn, bounded by their caller's context. Evaluation is pure CPU work:
	// more at once than there are CPUs only stretches each one's wall time, until the
	// timeout denies decisions that had their answer a few milliseconds of CPU away.
	EvalConcurrency int
	// DefaultSessionTTL is a session's lifetime when the opener asks for none (default 15m).
	DefaultSessionTTL time.Duration
	// MaxSessionTTL caps any requested lifetime (default 8h).
	MaxSessionTTL time.Duration
	// MaxSessionLifetime caps how long a session can live from its creation, whatever
	// renewals are approved (default 24h).
	MaxSessionLifetime time.Duration
	// HistoryLimit is how many recent calls a session keeps for the policy (default 32).
	HistoryLimit int
	// InputCacheSessions is how many recently used sessions keep their input.session terms
	// built (default 1024). A decision in a session outside it builds its history's terms
	// afresh, about 10 allocations per entry; each session in it holds ~10 heap objects per
	// history entry for the collector to mark.
	InputCacheSessions int
	// Logger receives policy errors and other events (default: discard).
	Logger *slog.Logger
	// Recorder takes every decision's record (default: discard).
	Recorder Recorder
	// Evaluator is what runs decisions: EvaluatorIR (the default) or EvaluatorTopdown.
	Evaluator string
}

func (c *Config) setDefaults() {
	if c.Clock == nil {
		c.Clock = time.Now
	}
	if c.EvalTimeout <= 0 {
		c.EvalTimeout = 250 * time.Millisecond
	}
	if c.EvalConcurrency <= 0 {
		c.EvalConcurrency = runtime.GOMAXPROCS(0)
	}
	if c.InputCacheSessions <= 0 {
		c.InputCacheSessions = defaultInputCacheSessions
	}
	if c.DefaultSessionTTL <= 0 {
		c.DefaultSessionTTL = 15 * time.Minute
	}
	if c.MaxSessionTTL <= 0 {
		c.MaxSessionTTL = 8 * time.Hour
	}
	if c.MaxSessionLifetime <= 0 {
		c.MaxSessionLifetime = 24 * time.Hour
	}
	if c.DefaultSessionTTL > c.MaxSessionTTL {
		c.DefaultSessionTTL = c.MaxSessionTTL
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Recorder == nil {
		c.Recorder = discard{}
	}
	if c.Evaluator == "" {
		c.Evaluator = EvaluatorIR
	}
}

// sessionLockStripes is the number of locks decisions within a session serialise on. A
// decision holds its stripe from reading the session to recording the call, so a budget holds
// exactly; different sessions rarely share a stripe.
const sessionLockStripes = 1024

// Engine decides MCP operations. It is safe for concurrent use.
type Engine struct {
	cfg    Config
	store  *state.Store
	policy atomic.Pointer[prepared]
	seed   maphash.Seed
	locks  [sessionLockStripes]sync.Mutex
	// slots holds one token per evaluation running (Config.EvalConcurrency).
	slots chan struct{}
	// inputs caches input.session terms of recently used sessions.
	inputs sessionTerms
	// modules is the last compiled policy code, reused by revisions that change only data.
	modules compiledModules
}

// New compiles p and returns an engine serving it.
func New(ctx context.Context, cfg Config, p Policy) (*Engine, error) {
	cfg.setDefaults()
	if err := CheckEvaluator(cfg.Evaluator); err != nil {
		return nil, err
	}
	store, err := state.New(state.Config{HistoryLimit: cfg.HistoryLimit})
	if err != nil {
		return nil, err
	}
	e := &Engine{cfg: cfg, store: store, seed: maphash.MakeSeed(), slots: make(chan struct{}, cfg.EvalConcurrency)}
	e.inputs.max = cfg.InputCacheSessions
	if err := e.Activate(ctx, p); err != nil {
		return nil, err
	}
	return e, nil
}

// Activate compiles p and, only if that succeeds, makes it the policy for every later
// decision. Decisions already evaluating finish on the previous revision.
func (e *Engine) Activate(ctx context.Context, p Policy) error {
	pq, err := e.Prepare(ctx, p)
	if err != nil {
		return err
	}
	e.Swap(pq)
	return nil
}

// Prepared is a compiled, checked policy not yet serving decisions.
type Prepared struct {
	p *prepared
}

// Prepare compiles p and checks it as Activate would, without changing what serves: the
// caller can persist the policy before it swaps it in.
func (e *Engine) Prepare(ctx context.Context, p Policy) (*Prepared, error) {
	pq, err := compile(ctx, p, &e.modules, e.cfg.Evaluator)
	if err != nil {
		return nil, err
	}
	level := slog.LevelInfo
	if pq.programs != nil && !e.checkPlan(ctx, pq) {
		level = slog.LevelWarn // a plan that disagrees with OPA is worth a look
	}
	if err := e.probe(ctx, pq); err != nil {
		return nil, err
	}
	if pq.programs == nil {
		e.cfg.Logger.LogAttrs(ctx, level, "policy runs on OPA's topdown evaluator",
			slog.String("policy_revision", pq.revision), slog.String("reason", pq.planless))
	}
	return &Prepared{p: pq}, nil
}

// Swap makes a prepared policy the one every later decision uses, in one atomic store.
func (e *Engine) Swap(p *Prepared) {
	e.policy.Store(p.p)
}

// probeTime is the clock of the probe requests.
var probeTime = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// probeInput is a plain tool call, evaluated once before a policy is activated.
var probeInput = ast.MustParseTerm(`{"action": "tools/call", "now": "2026-01-01T00:00:00Z",
	"client": {"id": "probe", "name": "", "version": "", "transport": ""},
	"subject": {"id": "probe", "groups": [], "attributes": {}},
	"server": {"id": "probe", "resource": "", "transport": "", "command_digest": ""},
	"credential": {"scopes": [], "audience": [], "issuer": "", "client_id": "", "expires_at": ""},
	"operation": {"method": "tools/call", "tool": "probe", "arguments": {}, "annotations": {},
		"definition_hash": "", "resource_uri": "", "prompt_name": ""},
	"context": {}, "session": null}`).Value

// probe evaluates pq once: a policy whose entry point errors or answers in the wrong shape is
// refused before it can serve. An undefined answer passes (it denies, as at run time).
func (e *Engine) probe(ctx context.Context, pq *prepared) error {
	_, _, err := e.evaluate(ctx, pq, probeInput, probeTime)
	if err != nil && !errors.Is(err, errUndefined) {
		return fmt.Errorf("entry point check on a sample tools/call: %w", err)
	}
	if pq.verdicts != nil {
		t, _, err := e.evalQuery(ctx, pq, pq.verdicts, probeListInput, probeTime)
		if err == nil {
			err = readVerdicts(t, probeTools, make([]ToolVerdict, len(probeTools)))
		}
		if err != nil && !errors.Is(err, errUndefined) {
			return fmt.Errorf("%s check on a sample tools/list of one tool: %w", ToolVerdictsRule, err)
		}
	}
	return nil
}

// probeListInput is a tools/list of one tool, for the tool_verdicts rule.
var (
	probeTools     = []Tool{{Name: "probe"}}
	probeListInput = ast.MustParseTerm(`{"action": "tools/list", "now": "2026-01-01T00:00:00Z",
	"client": {"id": "probe", "name": "", "version": "", "transport": ""},
	"subject": {"id": "probe", "groups": [], "attributes": {}},
	"server": {"id": "probe", "resource": "", "transport": "", "command_digest": ""},
	"credential": {"scopes": [], "audience": [], "issuer": "", "client_id": "", "expires_at": ""},
	"operation": {"method": "tools/list", "tool": "", "arguments": {}, "annotations": {},
		"definition_hash": "", "resource_uri": "", "prompt_name": ""},
	"tools": [{"name": "probe", "annotations": {}, "definition_hash": ""}],
	"context": {}, "session": null}`).Value
)

// Revision is the active policy's revision.
func (e *Engine) Revision() string {
	return e.policy.Load().revision
}

// Store is the session store, for the reaper and for tests.
func (e *Engine) Store() *state.Store {
	return e.store
}

// Decide decides one operation. On allow within a session, the call is recorded in the session
// before Decide returns. A non-nil error means the request was invalid or the store failed; in
// either case the operation must not proceed. Every decision is recorded (see Recorder).
func (e *Engine) Decide(ctx context.Context, req *Request) (Decision, error) {
	if err := validateRequest(req); err != nil {
		return Decision{}, err
	}
	start := time.Now()
	now := e.cfg.Clock()
	pq := e.policy.Load()
	d := Decision{ID: newID("dec_", now), At: now, PolicyRevision: pq.revision}
	slot, err := e.cfg.Recorder.Reserve(ctx)
	if err != nil {
		return logUnavailable(d), nil
	}
	d, err = e.decide(ctx, req, pq, d)
	if err != nil {
		slot.Commit(nil)
		return Decision{}, err
	}
	rec := recordFor(req, &d, req.Operation.Method, start)
	rec.SessionStatus = d.sessionStatus
	slot.Commit(rec)
	return d, nil
}

func (e *Engine) decide(ctx context.Context, req *Request, pq *prepared, d Decision) (Decision, error) {
	now := d.At
	if req.SessionID != "" {
		mu := e.sessionLock(req.SessionID)
		mu.Lock()
		defer mu.Unlock()
	}
	sessTerm, sess, status, denial, err := e.sessionInput(req, pq, now)
	d.sessionStatus = status
	if err != nil {
		return Decision{}, err
	}
	if denial != nil {
		return d.deny(*denial), nil
	}
	base, err := newInputBase(&e.inputs, req, sessTerm, now, pq.reads)
	if err != nil {
		return Decision{}, err
	}
	op := pq.reads.sub(keyOperation)
	args, err := jsonTerm(op.sub(keyArguments), req.Operation.Arguments, nil)
	if err != nil {
		return Decision{}, &InvalidArgumentError{Field: "operation.arguments", Reason: err.Error()}
	}
	input := base.document(req.Operation.Method, ast.Item(keyOperation, operationTerm(&e.inputs.names, &req.Operation, args, op)))
	d = e.decideWith(ctx, pq, input, d)

	if d.Outcome == RequireApproval {
		return e.gate(req, d)
	}
	if d.Outcome == Allow && req.SessionID != "" {
		v, head, ended, err := e.store.RecordCallIn(sess, state.Call{
			Server: req.Server.ID, Tool: req.Operation.Tool, Method: req.Operation.Method, At: now, Labels: d.Labels,
		})
		if err == nil {
			e.inputs.recorded(req.SessionID, v, head)
		}
		if errors.Is(err, state.ErrNotActive) || errors.Is(err, state.ErrNotFound) {
			// Revoked, closed or reaped while the policy ran: the revocation wins.
			reason, _ := sessionDenial(ended, req, now)
			return d.deny(reason), nil
		}
		if err != nil {
			return Decision{}, err
		}
	}
	return d, nil
}

// sessionInput reads the session req names, if any, and returns input.session (null outside a
// session), the session as read (for recording the call in it; never changed, as it may be the
// one the input cache keeps) and its status now. When the session must be denied before any
// policy runs, denial says why. A session opened with scopes narrows req's credential scopes
// to them: the policy sees what the session may use.
func (e *Engine) sessionInput(req *Request, pq *prepared, now time.Time) (term *ast.Term, sess *state.Session, status string, denial *Reason, err error) {
	if req.SessionID == "" {
		return ast.NullTerm(), nil, "", nil, nil
	}
	// A policy that reads nothing of input.session gets no usage decoded. Otherwise, without
	// the history, the usage is what the last decision in the session read or recorded,
	// unless something else changed it since: then it is read afresh.
	reads := pq.reads.sub(keySession)
	var usage *state.Usage // nil: the session's own
	var version *state.UsageVersion
	var keep *state.Session // the session for the cache to keep, when the usage is known
	switch {
	case reads == nil:
		sess, err = e.store.GetLifecycle(req.SessionID)
	case reads.has(keyHistory):
		sess, err = e.store.Get(req.SessionID)
	default:
		// While the session's lifecycle and usage are those the cache last saw, the session
		// is not looked up in the store at all (Store.Unchanged).
		knownV, knownU, life, known := e.inputs.known(req.SessionID)
		if v, ok := e.store.Unchanged(life); known && ok && v == knownV {
			sess, usage, version, keep = life, &knownU, &v, life
			break
		}
		var v state.UsageVersion
		var decoded bool
		sess, v, decoded, err = e.store.GetUnlessUsage(req.SessionID, knownV)
		if !decoded && known {
			usage = &knownU
		}
		version = &v
		if sess != nil {
			keep = sess.Detached()
		}
	}
	if sess != nil {
		status = string(sess.StatusAt(now))
	}
	if reason, ok := sessionDenial(sess, req, now); !ok {
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return nil, nil, status, nil, err
		}
		return nil, nil, status, &reason, nil
	}
	if len(sess.Scopes) > 0 {
		req.Credential.Scopes = intersect(req.Credential.Scopes, sess.Scopes)
	}
	if reads == nil {
		return nil, sess, status, nil, nil
	}
	if usage == nil {
		usage = &sess.Usage
	}
	return e.inputs.term(sess, usage, version, reads, keep), sess, status, nil, nil
}

// decideWith evaluates input on pq and fills d, failing closed on any policy error.
func (e *Engine) decideWith(ctx context.Context, pq *prepared, input ast.Value, d Decision) Decision {
	res, took, err := e.evaluate(ctx, pq, input, d.At)
	d.Eval = took
	if err != nil {
		e.cfg.Logger.LogAttrs(ctx, slog.LevelError, "policy evaluation failed; denying",
			slog.String("decision_id", d.ID), slog.String("policy_revision", pq.revision), slog.Any("error", err))
		return d.deny(Reason{Code: ReasonPolicyError, Message: "the policy could not be evaluated; the operation is denied"})
	}
	d.Outcome, d.Reasons, d.Labels, d.Obligations, d.Approval = res.outcome, res.reasons, res.labels, res.obligations, res.approval
	d.maxTTL = res.maxTTL
	if d.Outcome == Deny {
		d.Labels = nil // labels describe an operation that happens; a denied one does not
	}
	return d
}

// evaluate runs the prepared query. Any error, an undefined result or a malformed one is an
// error: the caller denies.
func (e *Engine) evaluate(ctx context.Context, pq *prepared, input ast.Value, now time.Time) (policyResult, time.Duration, error) {
	t, took, err := e.evalQuery(ctx, pq, &pq.query, input, now)
	if err != nil {
		return policyResult{}, took, err
	}
	res, err := parseResult(t.Value)
	return res, took, err
}

// evalQuery runs one decision query of pq, on its plan when it has one, under the evaluation
// timeout and returns its single result as an AST term. Any error or an undefined result is an
// error.
func (e *Engine) evalQuery(ctx context.Context, pq *prepared, q *query, input ast.Value, now time.Time) (*ast.Term, time.Duration, error) {
	// Wait for a slot first (waiters are served in order), so the timeout below measures the
	// evaluation rather than the queue in front of it.
	select {
	case e.slots <- struct{}{}:
	default:
		select {
		case e.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, 0, fmt.Errorf("caller went away while waiting to evaluate: %w", ctx.Err())
		}
	}
	defer func() { <-e.slots }()

	start := time.Now()
	cancel := &evalCancel{start: start, timeout: e.cfg.EvalTimeout, done: ctx.Done()}
	timedOut := &cancel.timedOut
	if q.plan != "" {
		t, err := pq.programs[q.plan].Eval(ctx, irexec.PlanName, ast.NewTerm(input), pq.data, irexec.Options{Time: now, Cancel: cancel})
		took := time.Since(start)
		if err == nil && took > e.cfg.EvalTimeout {
			// It passed the timeout where it asked no question (in a built-in, say).
			timedOut.Store(true)
			err = irexec.ErrCancelled
		}
		switch {
		case err != nil && timedOut.Load():
			return nil, took, fmt.Errorf("evaluation timed out after %s: %w", e.cfg.EvalTimeout, err)
		case err != nil && ctx.Err() != nil:
			return nil, took, fmt.Errorf("caller went away during evaluation: %w", err)
		case err != nil:
			return nil, took, fmt.Errorf("evaluate: %w", err)
		case t == nil:
			return nil, took, errUndefined
		}
		return t, took, nil
	}
	// topdown reads only made objects: the input's Lazy objects are made whole for it.
	rs, err := q.topdown.Eval(ctx,
		rego.EvalParsedInput(irexec.Whole(ast.NewTerm(input)).Value),
		rego.EvalTime(now),
		rego.EvalExternalCancel(cancel),
		rego.EvalMetrics(noMetrics),
	)
	took := time.Since(start)
	if err == nil && took > e.cfg.EvalTimeout {
		timedOut.Store(true)
		err = irexec.ErrCancelled
	}
	if err != nil {
		// OPA reports both as a cancelled query; the log must tell them apart.
		switch {
		case timedOut.Load():
			return nil, took, fmt.Errorf("evaluation timed out after %s: %w", e.cfg.EvalTimeout, err)
		case ctx.Err() != nil:
			return nil, took, fmt.Errorf("caller went away during evaluation: %w", err)
		}
		return nil, took, fmt.Errorf("evaluate: %w", err)
	}
	if len(rs) != 1 || len(rs[0].Expressions) != 1 {
		return nil, took, errUndefined
	}
	t, ok := rs[0].Expressions[0].Value.(*ast.Term)
	if !ok {
		return nil, took, fmt.Errorf("%w: unexpected result type %T", errMalformed, rs[0].Expressions[0].Value)
	}
	return t, took, nil
}

// noMetrics spares every evaluation OPA's per-query metrics map; Arbiter measures itself.
var noMetrics = metrics.NoOp()

// keepTerm hands evaluation results back as AST terms: the engine reads them directly instead
// of paying for a conversion to Go maps on every decision.
func keepTerm(t *ast.Term, _ *rego.EvalContext) (any, error) {
	return t, nil
}

// sessionLock is the lock that decisions about one session serialise on, from reading the
// session to recording what the decision changed.
func (e *Engine) sessionLock(id string) *sync.Mutex {
	return &e.locks[maphash.String(e.seed, id)%sessionLockStripes]
}

// deny returns d turned into a deny for reason. Deny wins: nothing the policy said survives.
func (d Decision) deny(reason Reason) Decision {
	d.Outcome = Deny
	d.Reasons = []Reason{reason}
	d.Labels, d.Obligations, d.Approval = nil, nil, nil
	return d
}

// sessionDenial applies the rules that hold before any policy runs: an unknown, revoked,
// closed, expired or pending session is denied, as is a session used by another client or
// subject, or for a server it is not bound to. ok is false when the call must be denied.
func sessionDenial(sess *state.Session, req *Request, now time.Time) (reason Reason, ok bool) {
	if sess == nil {
		return Reason{Code: ReasonSessionUnknown, Message: "no session has this id"}, false
	}
	if reason, ok := statusDenial(sess.StatusAt(now), sess); !ok {
		return reason, false
	}
	if sess.ClientID != req.Client.ID || sess.SubjectID != req.Subject.ID {
		return Reason{Code: ReasonSessionMismatch, Message: "the session belongs to another client or subject"}, false
	}
	if !sess.BoundTo(req.Server.ID) {
		return Reason{Code: ReasonSessionServerUnbound, Message: fmt.Sprintf("the session is not bound to server %q", req.Server.ID)}, false
	}
	return Reason{}, true
}

// statusDenial denies every status but active, with the reason a caller is shown.
func statusDenial(st state.Status, sess *state.Session) (Reason, bool) {
	switch st {
	case state.StatusActive:
		return Reason{}, true
	case state.StatusRevoked:
		return Reason{Code: ReasonSessionRevoked, Message: "the session was revoked: " + sess.EndReason}, false
	case state.StatusClosed:
		return Reason{Code: ReasonSessionClosed, Message: "the session was closed"}, false
	case state.StatusExpired:
		return Reason{Code: ReasonSessionExpired, Message: "the session expired at " + sess.ExpiresAt.UTC().Format(time.RFC3339)}, false
	case state.StatusPendingApproval:
		return Reason{Code: ReasonSessionPending, Message: "the session is waiting for approval"}, false
	default:
		return Reason{Code: ReasonSessionUnknown, Message: fmt.Sprintf("the session's status %q is not one Arbiter knows", st)}, false
	}
}

// intersect keeps the scopes of have that are also in allowed: a session bound to scopes
// narrows what its calls' credentials can exercise.
func intersect(have, allowed []string) []string {
	out := make([]string, 0, len(have))
	for _, s := range have {
		if slices.Contains(allowed, s) {
			out = append(out, s)
		}
	}
	return out
}

// evalCancel stops an evaluation once it has run longer than timeout or its caller went away.
// The evaluators ask it at every function call and loop step; it looks at the clock and the
// caller's context on every cancelCheckEvery-th question only. It replaces a timer and a
// context.AfterFunc per evaluation, which cost more than the checks (allocations, the
// runtime's timer heap, and a registration with the caller's context under its lock).
type evalCancel struct {
	cancelled atomic.Bool
	timedOut  atomic.Bool
	checks    atomic.Uint32
	start     time.Time
	timeout   time.Duration
	done      <-chan struct{} // the caller's context's; nil when it cannot be cancelled
}

// cancelCheckEvery is how many questions an evaluation asks between two looks at the clock:
// a decision of the default policy asks about 40, and a loop step is well under a
// microsecond, so a timeout is noticed within microseconds of passing.
const cancelCheckEvery = 32

var _ topdown.Cancel = (*evalCancel)(nil)

func (c *evalCancel) Cancel() { c.cancelled.Store(true) }

func (c *evalCancel) Cancelled() bool {
	if c.cancelled.Load() {
		return true
	}
	if c.checks.Add(1)%cancelCheckEvery != 0 {
		return false
	}
	select {
	case <-c.done:
		c.cancelled.Store(true)
		return true
	default:
	}
	if time.Since(c.start) > c.timeout {
		c.timedOut.Store(true)
		c.cancelled.Store(true)
		return true
	}
	return false
}
