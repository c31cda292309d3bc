package audit

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/arbiter-mcp/arbiter/engine"
)

// TestLinesAreWhatJSONWrites: the hand-written encoding of a record is, byte for byte, what
// encoding/json writes for the documented Line, over records with every field present or
// absent and strings with everything JSON escapes (quotes, control characters, HTML
// characters, invalid UTF-8, U+2028), with arguments logged (masked) or digested only.
func TestLinesAreWhatJSONWrites(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 27))
	pieces := []string{"", "a", "dec_1", "é", "日本", "\"", "\\", "<b>", "&amp;", "\n", "\r\t", "\b\f", "\x00", "\x1f", "\x7f",
		"\xff", "\xc3", "\u2028", "\u2029", "😀", "tools/call", "policy@1", " "}
	str := func() string {
		var s string
		for range rng.IntN(4) {
			s += pieces[rng.IntN(len(pieces))]
		}
		return s
	}
	strs := func() []string {
		if rng.IntN(3) == 0 {
			return nil
		}
		out := make([]string, rng.IntN(3))
		for i := range out {
			out[i] = str()
		}
		return out
	}
	revisions := []string{"", "default@9a2f", "catalog@42,policy@7", "policy@7,catalog@42", "a@1,a@2", "x", ",", "@", "a@1,,b@2", "<p>@&"}
	for _, logArgs := range []bool{false, true} {
		l, err := New(Config{Arguments: logArgs, Mask: []string{"/password", "/headers/authorization"}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close(t.Context())
		for i := range 3000 {
			rec := &engine.Record{
				DecisionID: str(), At: time.Unix(int64(rng.IntN(2e9)), int64(rng.IntN(1e9))).In(time.FixedZone("x", 3600)),
				Action: []string{"tools/call", "tools/list", "session/open", str()}[rng.IntN(4)], Outcome: engine.Outcome(str()),
				Client: engine.Client{ID: str(), Name: str()}, SubjectID: str(), Server: engine.Server{ID: str(), Resource: str()},
				SessionID: str(), SessionStatus: str(), Tool: str(), ApprovalID: str(), Gateway: str(),
				Credential:     engine.Credential{Scopes: strs(), Audience: strs(), ClientID: str()},
				PolicyRevision: revisions[rng.IntN(len(revisions))],
				Eval:           time.Duration(rng.Int64N(1e9)), Duration: time.Duration(rng.Int64N(1e9) - 1e3),
				Visible: rng.IntN(3) - 1, Hidden: rng.IntN(3), Actor: str(), ActorVia: str(), Note: str(), Affected: strs(),
				ApprovalAge: time.Duration(rng.Int64N(3e9)),
			}
			for range rng.IntN(3) {
				rec.Reasons = append(rec.Reasons, engine.Reason{Code: str(), Message: str()})
			}
			switch rng.IntN(4) {
			case 0:
			case 1:
				rec.Arguments = map[string]any{}
			default:
				rec.Arguments = map[string]any{str(): str(), "password": str(), "n": json.Number("1.50"), "f": rng.Float64(),
					"headers": map[string]any{"authorization": str(), str(): []any{str(), nil, true}}}
			}
			if rng.IntN(3) == 0 { // the digest a require_approval decision computed already
				rec.ArgumentsDigest = "sha256:" + strings.Repeat("0f", 32)
			}
			want, err := json.Marshal(l.lineOf(rec))
			if err != nil {
				t.Fatal(err)
			}
			want = append(want, '\n')
			if got := l.encode(nil, rec); string(got) != string(want) {
				t.Fatalf("record %d (arguments logged %v):\nwrote %s\njson  %s", i, logArgs, got, want)
			}
		}
	}
}
