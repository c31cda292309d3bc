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

// sessionsTableSchema holds the sessions in buckets (see bucket.go), under the bucket number.
func sessionsTableSchema() *memdb.TableSchema {
	return &memdb.TableSchema{
		Name: tableSessions,
		Indexes: map[string]*memdb.IndexSchema{
			indexID: {Name: indexID, Unique: true, Indexer: bucketIndex{}},
		},
	}
}

// bucketIndex indexes a bucket by its number, as three 4-bit digits, most significant first,
// so scans visit buckets in order. With one byte per digit every radix node has at most 16
// edges: a write copies the nodes on its path, and with two 8-bit digits the second level's
// nodes had 256 edges, 4 KB to copy on every recorded call with a large store.
type bucketIndex struct{}

func bucketKey(k uint16) []byte {
	return []byte{byte(k >> 8 & 0xf), byte(k >> 4 & 0xf), byte(k & 0xf)}
}

func (bucketIndex) FromObject(obj any) (bool, []byte, error) {
	return true, bucketKey(obj.(*bucket).key), nil
}

func (bucketIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("bucket index takes one argument, got %d", len(args))
	}
	k, ok := args[0].(uint16)
	if !ok {
		return nil, fmt.Errorf("bucket index argument is %T, not uint16", args[0])
	}
	return bucketKey(k), nil
}

// stringFieldIndex indexes a string field through a typed accessor rather than memdb's
// reflection-based StringFieldIndex.
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
