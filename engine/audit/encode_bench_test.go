package audit

import (
	"strings"
	"testing"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
)

// benchRecord is an allowed tools/call as the load of the benchmark harness makes it: a
// session, a credential, arguments of about 1.6 KB.
func benchRecord() *engine.Record {
	return &engine.Record{
		DecisionID: "dec_06h1k9v18y2ehekykw8sq7pfhnawfz13", At: time.Date(2026, 11, 26, 21, 0, 0, 123456789, time.UTC),
		Action: "tools/call", Client: engine.Client{ID: "https://agent-0001.example.com/.well-known/client.json", Name: "ide-agent"},
		SubjectID: "user-000001@example.com", Server: engine.Server{ID: "filesystem"},
		SessionID: "ses_06h1k9v18y2ehekykw8sq7pfhn", SessionStatus: "active",
		Credential: engine.Credential{Scopes: []string{"repo", "read:org"}, Audience: []string{"https://mcp.github.example.com"}, ClientID: "ide"},
		Tool:       "write_file",
		Arguments:  map[string]any{"path": "/src/ledger/reconcile_test.go", "content": strings.Repeat("\tif got := Reconcile(a, b); got != want {\n", 36)},
		Outcome:    engine.Allow, PolicyRevision: "bench@r0", Eval: 180 * time.Microsecond, Duration: 240 * time.Microsecond,
	}
}

// BenchmarkEncode writes benchRecord's line, computing the arguments' digest as for an allowed
// call, and taking it from the record as for a require_approval answer, whose gate computed it.
func BenchmarkEncode(b *testing.B) {
	carried := benchRecord()
	_, carried.ArgumentsDigest, _ = engine.ArgumentsDigest(carried.Arguments)
	for _, bc := range []struct {
		name string
		rec  *engine.Record
	}{{"digest computed", benchRecord()}, {"digest carried", carried}} {
		b.Run(bc.name, func(b *testing.B) {
			l := &Log{}
			var buf []byte
			b.ReportAllocs()
			for b.Loop() {
				buf = l.encode(buf[:0], bc.rec)
			}
			b.SetBytes(int64(len(buf)))
		})
	}
}
