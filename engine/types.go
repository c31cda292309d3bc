// Package engine is Arbiter's decision engine: it evaluates a prepared Rego policy over an MCP
// operation and the session's state, applies the rules no policy may override, and moves the
// session's state with the decision. It knows OPA and the session store, never gRPC or HTTP.
package engine

import (
	"time"

	"github.com/arbiter-mcp/arbiter/engine/state"
)

// Outcome is the answer to one operation.
type Outcome string

// Outcomes a policy may return.
const (
	Allow           Outcome = "allow"
	Deny            Outcome = "deny"
	RequireApproval Outcome = "require_approval"
)

// Actions Arbiter evaluates besides MCP methods.
const (
	ActionSessionOpen  = "session/open"
	ActionSessionRenew = "session/renew"
	// ActionToolsList is the action FilterTools asks the policy about (through
	// ToolVerdictsRule, or once per tool).
	ActionToolsList = "tools/list"
)

// Reason codes the engine itself produces. Policies add their own.
const (
	ReasonPolicyError          = "policy_error"
	ReasonSessionUnknown       = "session_unknown"
	ReasonSessionRevoked       = "session_revoked"
	ReasonSessionClosed        = "session_closed"
	ReasonSessionExpired       = "session_expired"
	ReasonSessionPending       = "session_pending_approval"
	ReasonSessionMismatch      = "session_mismatch"
	ReasonSessionServerUnbound = "session_server_not_bound"
)

// Request is one MCP operation to decide, with who asks and on whose behalf.
type Request struct {
	// SessionID names the Arbiter session; empty for a call outside any session.
	SessionID  string
	Client     Client
	Subject    Subject
	Server     Server
	Credential Credential
	Operation  Operation
	// Context is free-form and reaches the policy as input.context.
	Context map[string]any
	// ContextFrom, when Context is nil, gives the context if and when the serving policy reads
	// input.context: a caller that holds it in another form (the gRPC service: a protobuf
	// Struct) then converts it only for a policy that reads it. Unlike Context, which is
	// checked on every request, what it gives is checked only when read.
	ContextFrom func() map[string]any
	// Gateway is the authenticated caller, recorded on the approvals its calls ask for.
	Gateway string
}

// Client is the AI application making the request.
type Client struct {
	ID        string
	Name      string
	Version   string
	Transport string
}

// Subject is the human on whose behalf the agent acts.
type Subject struct {
	ID         string
	Groups     []string
	Attributes map[string]any
	// AttributesFrom, when Attributes is nil, gives them if and when the serving policy reads
	// input.subject.attributes (as Request.ContextFrom).
	AttributesFrom func() map[string]any
}

// Server is the MCP server addressed.
type Server struct {
	ID        string
	Resource  string
	Transport string
	// CommandDigest identifies what a stdio server was launched from.
	CommandDigest string
}

// Credential holds claims of a token the gateway has validated.
type Credential struct {
	Scopes    []string
	Audience  []string
	Issuer    string
	ClientID  string
	ExpiresAt time.Time
}

// Operation is the MCP request.
type Operation struct {
	Method string
	Tool   string
	// Arguments is the decoded JSON object of the tool arguments (nil for none).
	Arguments      map[string]any
	Annotations    Annotations
	DefinitionHash string
	ResourceURI    string
	PromptName     string
}

// Annotations are MCP tool annotations; nil means the server did not set the hint.
type Annotations struct {
	ReadOnly    *bool
	Destructive *bool
	Idempotent  *bool
	OpenWorld   *bool
}

// Reason explains a decision.
type Reason struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ApprovalRequest is what the policy asks of an approval when it requires one.
type ApprovalRequest struct {
	// Scope is "once" or "session".
	Scope string `json:"scope"`
	TTL   time.Duration
}

// Decision is the engine's answer.
type Decision struct {
	ID             string
	Outcome        Outcome
	Reasons        []Reason
	PolicyRevision string
	// Obligations is free-form JSON the policy hands the gateway.
	Obligations map[string]any
	// Labels the policy attached to the operation; recorded in the session on allow.
	Labels []string
	// Approval is what the policy asked of an approval (RequireApproval only).
	Approval *ApprovalRequest
	// ApprovalID names the approval record the decision waits on, or the grant or denial
	// that decided it; ApprovalExpiresAt is when that record lapses.
	ApprovalID        string
	ApprovalExpiresAt time.Time
	// maxTTL is the session lifetime ceiling the policy set for session/open and renew.
	maxTTL time.Duration
	// sessionStatus is the status of the named session when the decision was made.
	sessionStatus string
	// argumentsDigest is the arguments' digest ("sha256:..."), when the approvals gate
	// computed it, for the record to carry.
	argumentsDigest string
	// At is the decision time (input.now).
	At time.Time
	// Eval is how long policy evaluation took (zero when no policy ran).
	Eval time.Duration
}

// Tool is one tool to filter.
type Tool struct {
	Name           string
	Annotations    Annotations
	DefinitionHash string
}

// ToolVerdict is the decision for one tool of a FilterTools request.
type ToolVerdict struct {
	Name    string
	Outcome Outcome
	Reasons []Reason
}

// Filtered is the answer to FilterTools.
type Filtered struct {
	ID             string
	PolicyRevision string
	Tools          []ToolVerdict
}

// OpenRequest asks for a new session.
type OpenRequest struct {
	Client  Client
	Subject Subject
	Servers []Server
	// Scopes binds the session to these scopes (see state.Session.Scopes).
	Scopes     []string
	Credential Credential
	TTL        time.Duration
	Context    map[string]any
	// ContextFrom is as Request.ContextFrom.
	ContextFrom func() map[string]any
	// Gateway is the authenticated caller.
	Gateway string
}

// RenewRequest asks to extend a session. The client and subject must be the session's own.
type RenewRequest struct {
	SessionID string
	Client    Client
	Subject   Subject
	TTL       time.Duration
	Context   map[string]any
	// ContextFrom is as Request.ContextFrom.
	ContextFrom func() map[string]any
	Gateway     string
}

// SessionInfo is a session as callers see it: lifecycle, usage and status at a given time.
type SessionInfo struct {
	Session *state.Session
	Usage   *state.Usage
	Status  state.Status
}
