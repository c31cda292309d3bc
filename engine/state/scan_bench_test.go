package state

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// BenchmarkScans times the store's admin and background paths, which scan every session, on a
// store of a million idle sessions (built once, ~20 s):
//
//	go test -run '^$' -bench 'BenchmarkScans' -benchtime 5x ./engine/state/
func BenchmarkScans(b *testing.B) {
	s := scanStore(b)
	now := t0.Add(time.Minute)
	b.Run("list-first-page", func(b *testing.B) {
		for range b.N {
			if page, _, err := s.List(ListFilter{Limit: 100, Now: now}); err != nil || len(page) != 100 {
				b.Fatal(len(page), err)
			}
		}
	})
	b.Run("list-by-client", func(b *testing.B) {
		for range b.N {
			if page, _, err := s.List(ListFilter{ClientID: "client-0042", Limit: 100, Now: now}); err != nil || len(page) != 100 {
				b.Fatal(len(page), err)
			}
		}
	})
	client := 500
	b.Run("revoke-by-client", func(b *testing.B) {
		for range b.N {
			// Each round revokes another client's 1,000 sessions.
			client++
			ids, err := s.Revoke(RevokeFilter{ClientID: fmt.Sprintf("client-%04d", client)}, "bench", now)
			if err != nil || len(ids) != scanSessions/scanClients {
				b.Fatal(len(ids), err)
			}
		}
	})
	b.Run("reap-nothing", func(b *testing.B) {
		for range b.N {
			if n, err := s.Reap(t0); err != nil || n != 0 {
				b.Fatal(n, err)
			}
		}
	})
	// Not a scan: the write every allowed decision makes, on a store this size.
	b.Run("record-call", func(b *testing.B) {
		b.ReportAllocs()
		at := now
		for b.Loop() {
			at = at.Add(time.Millisecond)
			if _, err := s.RecordCall("ses_00000007", Call{Server: "github", Tool: "create_issue", Method: "tools/call", At: at}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("counts", func(b *testing.B) {
		for range b.N {
			if counts, _ := s.Counts(now); counts[StatusActive]+counts[StatusRevoked] != scanSessions {
				b.Fatal(counts)
			}
		}
	})
}

const (
	scanSessions = 1_000_000
	scanClients  = 1_000
)

var scanOnce = sync.OnceValues(func() (*Store, error) {
	s, err := New(Config{})
	if err != nil {
		return nil, err
	}
	for i := range scanSessions {
		err := s.Open(&Session{
			ID:        fmt.Sprintf("ses_%08d", i),
			Status:    StatusActive,
			ClientID:  fmt.Sprintf("client-%04d", i%scanClients),
			SubjectID: fmt.Sprintf("user-%07d@example.com", i),
			Servers:   []string{"github", "filesystem"},
			CreatedAt: t0,
			ExpiresAt: t0.Add(time.Hour),
		}, nil)
		if err != nil {
			return nil, err
		}
	}
	return s, nil
})

func scanStore(b *testing.B) *Store {
	b.Helper()
	s, err := scanOnce()
	if err != nil {
		b.Fatal(err)
	}
	return s
}
