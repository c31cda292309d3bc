package engine

import (
	"context"
	"sync"
	"time"
)

// Actions recorded besides MCP methods and session/open and session/renew.
const (
	ActionToolsFilter     = "tools/filter"
	ActionSessionClose    = "session/close"
	ActionSessionsRevoke  = "sessions/revoke"
	ActionApprovalResolve = "approval/resolve"
)

// Reason code of the decision log's fail-closed rule.
const ReasonDecisionLogUnavailable = "decision_log_unavailable"

// Record is one decision as the decision log keeps it. The engine hands it over and never
// touches it again; slices and maps in it may be shared with the request. A Recorder done with
// a record may give it back with ReleaseRecord.
type Record struct {
	DecisionID    string
	At            time.Time
	Action        string
	Client        Client
	SubjectID     string
	Server        Server
	SessionID     string
	SessionStatus string
	Credential    Credential
	Tool          string
	Arguments     map[string]any
	// ArgumentsDigest is the arguments' digest ("sha256:" and hex) when the decision computed
	// it already (a require_approval answer): the log writes it rather than computing it again.
	ArgumentsDigest string
	Outcome         Outcome
	Reasons         []Reason
	ApprovalID      string
	PolicyRevision  string
	Gateway         string
	// Eval is the policy evaluation time; Duration the whole decision's.
	Eval     time.Duration
	Duration time.Duration
	// Visible and Hidden count the tools of a tools/filter decision.
	Visible, Hidden int
	// Actor, Note and Affected describe admin actions: who resolved or revoked, their note,
	// and the sessions a revocation ended. ActorVia is the credential an approver's call came
	// with, where the approver is a name the caller gave.
	Actor    string
	ActorVia string
	Note     string
	Affected []string
	// ApprovalAge is how long an approval waited for its resolution.
	ApprovalAge time.Duration
}

// Recorder takes decision records. A decision first reserves room for its record, so that it
// is never answered without being recorded: when Reserve fails, the decision is denied with
// reason decision_log_unavailable and nothing changes.
type Recorder interface {
	Reserve(ctx context.Context) (Slot, error)
}

// Slot is room for one record. Commit fills it; Commit(nil) gives it back unused.
type Slot interface {
	Commit(*Record)
}

type discard struct{}

func (discard) Reserve(context.Context) (Slot, error) { return discard{}, nil }
func (discard) Commit(rec *Record) {
	if rec != nil {
		ReleaseRecord(rec)
	}
}

// records recycles the records of decisions: a Record is the engine's largest allocation per
// decision (576 B), and on two busy CPUs every allocated byte costs its share of collection
// (BENCHMARKS.md, session 19).
var records = sync.Pool{New: func() any { return new(Record) }}

// ReleaseRecord gives back a record the engine handed to a Recorder, once the Recorder is done
// with it and keeps no pointer to it; the engine may then reuse it for another decision. The
// slices and maps it held are not reused. A record not given back is collected as usual.
func ReleaseRecord(rec *Record) {
	*rec = Record{}
	records.Put(rec)
}

// recordFor is the record of a decision about req.
func recordFor(req *Request, d *Decision, action string, start time.Time) *Record {
	rec := records.Get().(*Record)
	*rec = Record{
		DecisionID:      d.ID,
		At:              d.At,
		Action:          action,
		Client:          req.Client,
		SubjectID:       req.Subject.ID,
		Server:          req.Server,
		SessionID:       req.SessionID,
		Credential:      req.Credential,
		Tool:            req.Operation.Tool,
		Arguments:       req.Operation.Arguments,
		ArgumentsDigest: d.argumentsDigest,
		Outcome:         d.Outcome,
		Reasons:         d.Reasons,
		ApprovalID:      d.ApprovalID,
		PolicyRevision:  d.PolicyRevision,
		Gateway:         req.Gateway,
		Eval:            d.Eval,
		Duration:        time.Since(start),
	}
	return rec
}

// logUnavailable is the decision when no record can be kept: fail closed.
func logUnavailable(d Decision) Decision {
	return d.deny(Reason{Code: ReasonDecisionLogUnavailable, Message: "the decision log cannot take the record of this decision, so it is denied"})
}
