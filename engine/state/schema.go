// Package state is Arbiter's in-memory session store, built on go-memdb. Objects read from the
// store are shared and immutable: every change inserts a fresh copy.
package state

import (
	"encoding/binary"
	"fmt"
	"time"

	memdb "github.com/hashicorp/go-memdb"
)

// Table names.
const (
	tableSessions  = "sessions"
	tableApprovals = "approvals"
)

// Index names.
const (
	indexID      = "id"
	indexExpiry  = "expiry"
	indexRequest = "request"
	indexSession = "session"
)

func schema() *memdb.DBSchema {
	return &memdb.DBSchema{
		Tables: map[string]*memdb.TableSchema{
			tableSessions:  sessionsTableSchema(),
			tableApprovals: approvalsTableSchema(),
		},
	}
}

// sessionsTableSchema holds sessions, their lifecycle and their usage in one object, under the
// id index alone. Each index entry costs a session about five heap objects (a radix leaf and
// node, their two watch channels and the key) that the collector marks on every cycle, and
// with a million sessions that marking is what moves decision latency. So listing and revoking
// by client, subject or server, counting and reaping scan the id index instead (admin and
// background paths; see Store.Revoke and Store.Reap), and an allowed call rewrites one entry.
func sessionsTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableSessions,
		Indexes: map[string]*memdb.IndexSchema{
			// id serves lookups on every decision, paging in id order, and the scans.
			indexID: {
				Name:    indexID,
				Unique:  true,
				Indexer: stringFieldIndex{field: func(o any) string { return o.(*Session).ID }},
			},
		},
	}
}

// stringFieldIndex indexes a string field through a typed accessor rather than memdb's
// reflection-based StringFieldIndex, because the sessions table is written on every allowed call.
type stringFieldIndex struct {
	field func(any) string
}

func (ix stringFieldIndex) FromObject(obj any) (bool, []byte, error) {
	v := ix.field(obj)
	if v == "" {
		return false, nil, nil
	}
	return true, terminated(v), nil
}

func (ix stringFieldIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("string index takes one argument, got %d", len(args))
	}
	v, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("string index argument is %T, not string", args[0])
	}
	return terminated(v), nil
}

// terminated appends the NUL that keeps "a" from being a prefix match of "ab".
func terminated(v string) []byte {
	b := make([]byte, len(v)+1)
	copy(b, v)
	return b
}

// approvalsTableSchema holds approvals. They are made at human pace, so listing filters scan.
func approvalsTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableApprovals,
		Indexes: map[string]*memdb.IndexSchema{
			// id serves Get, Resolve and Watch.
			indexID: {
				Name:    indexID,
				Unique:  true,
				Indexer: stringFieldIndex{field: func(o any) string { return o.(*Approval).ID }},
			},
			// request finds the approvals of one exact request: a pending one to reuse, a grant
			// to apply, a denial to repeat.
			indexRequest: {
				Name:    indexRequest,
				Indexer: stringFieldIndex{field: func(o any) string { return o.(*Approval).RequestKey }},
			},
			// session serves listing a session's approvals.
			indexSession: {
				Name:         indexSession,
				AllowMissing: true, // a call outside any session can need approval too
				Indexer:      stringFieldIndex{field: func(o any) string { return o.(*Approval).SessionID }},
			},
			// expiry is walked in time order by the reaper.
			indexExpiry: {
				Name:    indexExpiry,
				Indexer: timeFieldIndex{field: func(o any) time.Time { return o.(*Approval).ExpiresAt }},
			},
		},
	}
}

// timeFieldIndex indexes a time as 8 big-endian bytes of Unix nanoseconds, so the radix tree
// iterates in time order. memdb appends the primary key, so equal times do not collide.
type timeFieldIndex struct {
	field func(any) time.Time
}

func (ix timeFieldIndex) FromObject(obj any) (bool, []byte, error) {
	return true, encodeTime(ix.field(obj)), nil
}

func (ix timeFieldIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("time index takes one argument, got %d", len(args))
	}
	t, ok := args[0].(time.Time)
	if !ok {
		return nil, fmt.Errorf("time index argument is %T, not time.Time", args[0])
	}
	return encodeTime(t), nil
}

func encodeTime(t time.Time) []byte {
	var b [8]byte
	n := t.UnixNano()
	if n < 0 {
		n = 0
	}
	binary.BigEndian.PutUint64(b[:], uint64(n))
	return b[:]
}
