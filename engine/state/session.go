package state

import (
	"errors"
	"slices"
	"strings"
	"time"
)

// Status is where a session is in its life. Expiry is not stored: a session whose ExpiresAt has
// passed is expired whatever its stored status (see StatusAt).
type Status string

// Session statuses.
const (
	StatusActive          Status = "active"
	StatusPendingApproval Status = "pending_approval"
	StatusClosed          Status = "closed"
	StatusRevoked         Status = "revoked"
	StatusExpired         Status = "expired"
)

// Errors returned by the store.
var (
	// ErrNotFound means no session has the given id (never opened, or already reaped).
	ErrNotFound = errors.New("session not found")
	// ErrNotActive means the session exists but is closed, revoked, expired or pending.
	ErrNotActive = errors.New("session not active")
	// ErrExists means a session with the id already exists.
	ErrExists = errors.New("session already exists")
)

// Session is a task-scoped grant: its lifecycle, its binding and what it has done. Treat values
// returned by the store as read-only.
type Session struct {
	ID        string
	Status    Status
	ClientID  string
	SubjectID string
	// Servers the session is bound to; empty means any server.
	Servers []string
	// Scopes the session is bound to; empty means the credential's scopes apply as they are.
	Scopes         []string
	CreatedAt      time.Time
	ExpiresAt      time.Time
	Renewals       int
	EndReason      string
	EndedAt        time.Time
	PolicyRevision string
	// Usage is what the session has done (empty until its first allowed call).
	Usage Usage

	// cell is the usage cell the session had when it was read (nil: no call yet), for
	// RecordCallIn to record in without looking the session up again; gen is the generation
	// of the lifecycle read (see Store.Unchanged).
	cell *usageCell
	gen  uint32
}

// Detached returns a copy of s whose strings are its own: a session read from the store shares
// its bucket's text, which a copy kept for long would hold on to. The usage is left out; the
// copy still works with Store.Unchanged and RecordCallIn.
func (s *Session) Detached() *Session {
	c := *s
	c.Usage = Usage{}
	c.ID, c.ClientID, c.SubjectID = strings.Clone(s.ID), strings.Clone(s.ClientID), strings.Clone(s.SubjectID)
	c.EndReason, c.PolicyRevision = strings.Clone(s.EndReason), strings.Clone(s.PolicyRevision)
	c.Servers, c.Scopes = cloneStrings(s.Servers), cloneStrings(s.Scopes)
	return &c
}

func cloneStrings(ss []string) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.Clone(s)
	}
	return out
}

// StatusAt is the session's status at now, with expiry applied.
func (s *Session) StatusAt(now time.Time) Status {
	if (s.Status == StatusActive || s.Status == StatusPendingApproval) && !now.Before(s.ExpiresAt) {
		return StatusExpired
	}
	return s.Status
}

// BoundTo reports whether the session may be used with server.
func (s *Session) BoundTo(server string) bool {
	return len(s.Servers) == 0 || slices.Contains(s.Servers, server)
}

// Usage is what a session has done: allowed calls, their history and the labels the policy
// attached. The store keeps it encoded (see usage_codec.go); a Usage read from the store is a
// fresh decoding whose strings share the stored bytes. Treat it as read-only.
type Usage struct {
	Total uint64
	// Calls counts allowed calls by server and tool, sorted by server, then tool: one slice
	// rather than maps of maps, whose every level is a heap object in every session.
	Calls []CallCount
	// Labels is sorted and free of duplicates.
	Labels []string
	// History holds the most recent allowed calls, oldest first.
	History []HistoryEntry
}

// CallCount is how many allowed calls a session made to one tool of a server. Tool is empty
// for calls that name no tool (resource reads, prompts, listings).
type CallCount struct {
	Server string
	Tool   string
	N      uint64
}

// ServerCalls is the number of allowed calls to server, with or without a tool.
func (u *Usage) ServerCalls(server string) uint64 {
	var n uint64
	for _, c := range u.Calls {
		if c.Server == server {
			n += c.N
		}
	}
	return n
}

// ByServer returns the allowed calls per server, as a fresh map.
func (u *Usage) ByServer() map[string]uint64 {
	if len(u.Calls) == 0 {
		return nil
	}
	out := make(map[string]uint64)
	for _, c := range u.Calls {
		out[c.Server] += c.N
	}
	return out
}

// ByTool returns the allowed calls per server and tool, as fresh maps; calls that name no tool
// are left out.
func (u *Usage) ByTool() map[string]map[string]uint64 {
	var out map[string]map[string]uint64
	for _, c := range u.Calls {
		if c.Tool == "" {
			continue
		}
		if out == nil {
			out = make(map[string]map[string]uint64)
		}
		if out[c.Server] == nil {
			out[c.Server] = make(map[string]uint64)
		}
		out[c.Server][c.Tool] += c.N
	}
	return out
}

// HistoryEntry is one allowed call.
type HistoryEntry struct {
	Server string
	Tool   string
	Method string
	At     time.Time
}

// Call is an allowed operation to record in a session's usage.
type Call struct {
	Server string
	Tool   string
	Method string
	At     time.Time
	// Labels the policy attached to the call; merged into the session's labels.
	Labels []string
}

// countCall returns calls, sorted by server and tool, with one more call to tool of server.
// calls must be the caller's own (a usage just decoded): a tool that has a count already gets
// one more in place; a first call to a tool makes a new slice.
func countCall(calls []CallCount, server, tool string) []CallCount {
	i, found := slices.BinarySearchFunc(calls, CallCount{Server: server, Tool: tool}, func(c, key CallCount) int {
		if c.Server != key.Server {
			return strings.Compare(c.Server, key.Server)
		}
		return strings.Compare(c.Tool, key.Tool)
	})
	if found {
		calls[i].N++
		return calls
	}
	out := make([]CallCount, 0, len(calls)+1)
	out = append(out, calls[:i]...)
	out = append(out, CallCount{Server: server, Tool: tool, N: 1})
	return append(out, calls[i:]...)
}

// mergeLabels returns the sorted union of have (sorted, unique) and add, sharing have when
// nothing is new.
func mergeLabels(have, add []string) []string {
	var fresh []string
	for _, l := range add {
		if l == "" {
			continue
		}
		if _, found := slices.BinarySearch(have, l); !found && !slices.Contains(fresh, l) {
			fresh = append(fresh, l)
		}
	}
	if len(fresh) == 0 {
		return have
	}
	out := make([]string, 0, len(have)+len(fresh))
	out = append(out, have...)
	out = append(out, fresh...)
	slices.Sort(out)
	return out
}

// RevokeFilter selects sessions to revoke; every non-empty field must match.
type RevokeFilter struct {
	SessionID string
	ClientID  string
	SubjectID string
	// ServerID matches sessions bound to the server and unbound sessions that have called it.
	ServerID string
}

// Empty reports whether the filter selects nothing in particular.
func (f RevokeFilter) Empty() bool {
	return f.SessionID == "" && f.ClientID == "" && f.SubjectID == "" && f.ServerID == ""
}

// ListFilter selects sessions to list; empty fields match everything.
type ListFilter struct {
	ClientID  string
	SubjectID string
	// Status compares against StatusAt(Now).
	Status Status
	Now    time.Time
	// After lists sessions whose id sorts after this one (paging).
	After string
	Limit int
}
