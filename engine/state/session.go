package state

import (
	"errors"
	"slices"
	"strings"
	"time"
	"unique"
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
	// Input caches the engine's input form of the lifecycle fields above (nil if not built).
	// It is built when the session records its first call, not when it opens, so sessions
	// that never decide do not carry it; a change of lifecycle drops it (see Config).
	Input any
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

// intern returns the canonical copy of v. The canonical copy lives as long as any session
// uses it, but stays canonical only until a collection finds no handle to it, so sharing is
// per GC cycle: enough for ids that thousands of sessions repeat, with nothing to evict.
func intern(v string) string {
	if v == "" {
		return ""
	}
	return unique.Make(v).Value()
}

// Usage is what a session has done: allowed calls, their history and the labels the policy
// attached. A session that has made no call holds no slice. Treat values returned by the store
// as read-only: every slice is shared between versions and replaced, never written.
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
	// Input is the entry as the policy input shows it, built once when the call is recorded
	// (Config.HistoryInput) and shared by every later version of the session (nil if not built).
	Input any
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

// with returns a new Usage with call recorded, keeping at most historyLimit history entries;
// input, if set, builds the new entry's Input.
func (u *Usage) with(call Call, historyLimit int, input func(*HistoryEntry) any) Usage {
	n := Usage{Total: u.Total + 1}

	n.Calls = countCall(u.Calls, call.Server, call.Tool)
	n.Labels = mergeLabels(u.Labels, call.Labels)

	// The names repeat across calls and sessions and would otherwise keep each request's
	// decoded strings alive for as long as the entry: one shared copy each.
	entry := HistoryEntry{Server: intern(call.Server), Tool: intern(call.Tool), Method: intern(call.Method), At: call.At}
	if input != nil {
		entry.Input = input(&entry)
	}
	if historyLimit > 0 {
		start := 0
		if len(u.History) >= historyLimit {
			start = len(u.History) - historyLimit + 1
		}
		n.History = make([]HistoryEntry, 0, len(u.History)-start+1)
		n.History = append(n.History, u.History[start:]...)
		n.History = append(n.History, entry)
	}
	return n
}

// countCall returns a copy of calls, sorted by server and tool, with one more call to tool of
// server.
func countCall(calls []CallCount, server, tool string) []CallCount {
	i, found := slices.BinarySearchFunc(calls, CallCount{Server: server, Tool: tool}, func(c, key CallCount) int {
		if c.Server != key.Server {
			return strings.Compare(c.Server, key.Server)
		}
		return strings.Compare(c.Tool, key.Tool)
	})
	if found {
		out := slices.Clone(calls)
		out[i].N++
		return out
	}
	out := make([]CallCount, 0, len(calls)+1)
	out = append(out, calls[:i]...)
	out = append(out, CallCount{Server: intern(server), Tool: intern(tool), N: 1})
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
			fresh = append(fresh, intern(l))
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
