package state

import (
	"errors"
	"time"
)

// ApprovalStatus is where an approval is. Expiry and use are derived (see StatusAt).
type ApprovalStatus string

// Approval statuses.
const (
	ApprovalPending  ApprovalStatus = "pending"
	ApprovalApproved ApprovalStatus = "approved"
	ApprovalDenied   ApprovalStatus = "denied"
	ApprovalExpired  ApprovalStatus = "expired"
	// ApprovalConsumed is an approved "once" grant that a call has used.
	ApprovalConsumed ApprovalStatus = "consumed"
)

// ApprovalKind says what an approval unblocks.
type ApprovalKind string

// Approval kinds.
const (
	KindOperation    ApprovalKind = "operation"
	KindSessionOpen  ApprovalKind = "session_open"
	KindSessionRenew ApprovalKind = "session_renew"
)

// Grant scopes.
const (
	ScopeOnce    = "once"
	ScopeSession = "session"
)

// Errors of approval operations.
var (
	ErrApprovalNotFound = errors.New("approval not found")
	ErrApprovalResolved = errors.New("approval already resolved")
	ErrApprovalExpired  = errors.New("approval expired")
	// ErrGrantUsed means a "once" grant was consumed by another call first.
	ErrGrantUsed = errors.New("approval grant already used")
)

// Reason is a policy reason kept with an approval.
type Reason struct {
	Code    string
	Message string
}

// Approval is a human decision asked for by a require_approval answer: what was asked, why,
// and how it was resolved. Treat values returned by the store as read-only.
type Approval struct {
	ID   string
	Kind ApprovalKind
	// Status is pending, approved or denied; see StatusAt for the status at a given time.
	Status ApprovalStatus
	// RequestKey binds the approval to one request: session, client, subject, server,
	// method, tool and argument digest. Identical requests share it.
	RequestKey      string
	SessionID       string
	ClientID        string
	SubjectID       string
	ServerID        string
	Method          string
	Tool            string
	ArgumentsDigest string
	// Arguments is the canonical JSON of the tool arguments, shown to the approver.
	Arguments []byte
	Reasons   []Reason
	// Scope is ScopeOnce or ScopeSession.
	Scope string
	// GrantTTL is how long an approved grant stays usable after resolution.
	GrantTTL time.Duration
	// SessionTTL is the lifetime granted when a session_open or session_renew approval is
	// approved; SessionCap is the latest expiry the session may reach.
	SessionTTL time.Duration
	SessionCap time.Time

	CreatedAt time.Time
	// ExpiresAt is when a pending approval lapses, or an approved grant stops being usable.
	ExpiresAt  time.Time
	ResolvedAt time.Time
	ResolvedBy string
	Note       string
	ConsumedAt time.Time
	// ConsumedBy is the decision that used a "once" grant.
	ConsumedBy     string
	DecisionID     string
	PolicyRevision string
	// RequestedBy is the authenticated gateway whose call asked for the approval.
	RequestedBy string
}

// StatusAt is the approval's status at now.
func (a *Approval) StatusAt(now time.Time) ApprovalStatus {
	switch {
	case a.Status == ApprovalApproved && a.Scope == ScopeOnce && !a.ConsumedAt.IsZero():
		return ApprovalConsumed
	case !now.Before(a.ExpiresAt):
		return ApprovalExpired
	default:
		return a.Status
	}
}

func (a *Approval) copy() *Approval {
	c := *a
	return &c
}

// ApprovalFilter selects approvals to list; empty fields match everything.
type ApprovalFilter struct {
	Status    ApprovalStatus
	SessionID string
	ClientID  string
	SubjectID string
	ServerID  string
	Now       time.Time
	After     string
	Limit     int
}

func (f ApprovalFilter) matches(a *Approval) bool {
	return (f.Status == "" || a.StatusAt(f.Now) == f.Status) &&
		(f.SessionID == "" || a.SessionID == f.SessionID) &&
		(f.ClientID == "" || a.ClientID == f.ClientID) &&
		(f.SubjectID == "" || a.SubjectID == f.SubjectID) &&
		(f.ServerID == "" || a.ServerID == f.ServerID) &&
		a.ID > f.After
}
