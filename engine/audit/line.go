package audit

import (
	"encoding/hex"
	"encoding/json"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/arbiter-mcp/arbiter/engine"
)

// appendLine appends rec as one JSON line: the bytes encoding/json writes for lineOf(rec),
// written field by field into buf instead of through reflection, a Line, a map of revisions and
// a buffer per record (the writer encodes every decision; TestLinesAreWhatJSONWrites holds the
// two encodings to the same bytes). Arguments are digested (and, if configured, masked and
// logged) here, on the writer's goroutine, not on the decision's.
func (l *Log) appendLine(buf []byte, rec *engine.Record) []byte {
	start := len(buf)
	b := append(buf, `{"decision_id":`...)
	b = appendJSONString(b, rec.DecisionID)
	b = append(b, `,"time":"`...)
	b = rec.At.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","action":`...)
	b = appendJSONString(b, rec.Action)
	b = append(b, `,"result":`...)
	b = appendJSONString(b, string(rec.Outcome))
	b = append(b, `,"reasons":[`...)
	for i, r := range rec.Reasons {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, r.Code)
	}
	b = append(b, `],"client":{`...)
	sep := byte(0)
	field := func(name, value string) {
		if value == "" {
			return
		}
		if sep != 0 {
			b = append(b, sep)
		}
		sep = ','
		b = append(b, '"')
		b = append(b, name...)
		b = append(b, `":`...)
		b = appendJSONString(b, value)
	}
	field("id", rec.Client.ID)
	field("name", rec.Client.Name)
	b = append(b, '}')
	sep = ','
	field("subject_id", rec.SubjectID)
	if rec.Server.ID != "" {
		b = append(b, `,"server":{"id":`...)
		b = appendJSONString(b, rec.Server.ID)
		field("resource", rec.Server.Resource)
		b = append(b, '}')
	}
	if rec.SessionID != "" {
		b = append(b, `,"session":{"id":`...)
		b = appendJSONString(b, rec.SessionID)
		field("status", rec.SessionStatus)
		b = append(b, '}')
	}
	if c := rec.Credential; len(c.Scopes)+len(c.Audience) > 0 || c.ClientID != "" {
		b = append(b, `,"credential":{"scopes":`...)
		b = appendJSONStrings(b, c.Scopes)
		b = append(b, `,"audience":`...)
		b = appendJSONStrings(b, c.Audience)
		field("client_id", c.ClientID)
		b = append(b, '}')
	}
	field("tool", rec.Tool)
	if rec.Action == "tools/call" || rec.Arguments != nil {
		// The digest approvals are bound to, so a record and its approval can be matched.
		if rec.ArgumentsDigest != "" {
			b = append(b, `,"arguments_digest":"`...)
			b = append(b, rec.ArgumentsDigest...)
			b = append(b, '"')
		} else {
			var sum [32]byte
			var err error
			l.canonical, sum, err = engine.AppendArgumentsDigest(l.canonical[:0], rec.Arguments)
			if err == nil {
				b = append(b, `,"arguments_digest":"sha256:`...)
				b = hex.AppendEncode(b, sum[:])
				b = append(b, '"')
			}
		}
		if l.cfg.Arguments {
			if args := l.masked(rec); len(args) > 0 {
				raw, err := json.Marshal(args)
				if err != nil {
					return append(buf[:start], `{"decision_id":`+strconv.Quote(rec.DecisionID)+`,"error":"record could not be encoded"}`+"\n"...)
				}
				b = append(b, `,"arguments":`...)
				b = append(b, raw...)
			}
		}
	}
	field("approval_id", rec.ApprovalID)
	b = append(b, `,"policy_revision":{`...)
	b = appendRevisions(b, rec.PolicyRevision)
	b = append(b, '}')
	field("gateway", rec.Gateway)
	b = append(b, `,"eval_ns":`...)
	b = strconv.AppendInt(b, rec.Eval.Nanoseconds(), 10)
	b = append(b, `,"duration_ns":`...)
	b = strconv.AppendInt(b, rec.Duration.Nanoseconds(), 10)
	if rec.Visible != 0 {
		b = append(b, `,"tools_visible":`...)
		b = strconv.AppendInt(b, int64(rec.Visible), 10)
	}
	if rec.Hidden != 0 {
		b = append(b, `,"tools_hidden":`...)
		b = strconv.AppendInt(b, int64(rec.Hidden), 10)
	}
	field("actor", rec.Actor)
	field("actor_via", rec.ActorVia)
	field("note", rec.Note)
	if len(rec.Affected) > 0 {
		b = append(b, `,"sessions_affected":`...)
		b = appendJSONStrings(b, rec.Affected)
	}
	if ms := rec.ApprovalAge.Milliseconds(); ms != 0 {
		b = append(b, `,"approval_wait_ms":`...)
		b = strconv.AppendInt(b, ms, 10)
	}
	b = append(b, '}', '\n')
	return b
}

// appendRevisions appends the members of Revisions(rev), keys sorted, as encoding/json writes
// a map: one member per name, the last one given.
func appendRevisions(b []byte, rev string) []byte {
	var pairs [][2]string
	for part := range strings.SplitSeq(rev, ",") {
		name, r, ok := strings.Cut(part, "@")
		if !ok {
			name, r = "policy", part
		}
		if name == "" && r == "" {
			continue
		}
		if i := slices.IndexFunc(pairs, func(p [2]string) bool { return p[0] == name }); i >= 0 {
			pairs[i][1] = r
			continue
		}
		pairs = append(pairs, [2]string{name, r})
	}
	slices.SortFunc(pairs, func(a, b [2]string) int { return strings.Compare(a[0], b[0]) })
	for i, p := range pairs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, p[0])
		b = append(b, ':')
		b = appendJSONString(b, p[1])
	}
	return b
}

// appendJSONStrings appends ss as a JSON array ([] for none).
func appendJSONStrings(b []byte, ss []string) []byte {
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

// appendJSONString appends s as encoding/json writes a string: HTML-safe (<, > and & escaped),
// invalid UTF-8 as U+FFFD, and U+2028 and U+2029 escaped.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	start := 0 // s[start:i] is copied as it is
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
