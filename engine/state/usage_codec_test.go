package state

import (
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestUsageRoundTrips(t *testing.T) {
	for _, u := range []Usage{
		{},
		{Total: 1, Calls: []CallCount{{Server: "fs", N: 1}}},
		{
			Total:  1 << 40,
			Calls:  []CallCount{{Server: "fs", Tool: "read", N: 3}, {Server: "github", Tool: "", N: 1 << 33}},
			Labels: []string{"private_data", "ünïcode", strings.Repeat("l", 300)},
			History: []HistoryEntry{
				{Server: "fs", Tool: "read", Method: "tools/call", At: t0},
				{Server: "github", Method: "resources/read", At: time.Time{}},
				{Server: "", Tool: "", Method: "", At: t0.Add(-time.Hour)},
			},
		},
	} {
		got, err := decodeUsage(encodeUsage(&u), true)
		if err != nil {
			t.Fatalf("decode %+v: %v", u, err)
		}
		if !reflect.DeepEqual(got, u) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, u)
		}
		// Without the history: everything else, and no history.
		got, err = decodeUsage(encodeUsage(&u), false)
		want := u
		want.History = nil
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("without history: %+v, %v; want %+v", got, err, want)
		}
	}
}

// TestMalformedUsageIsAnError: the store decodes only what it encoded, but a bug must show as
// an error (a decision fails closed), not as a session with less usage than it has.
func TestMalformedUsageIsAnError(t *testing.T) {
	u := Usage{Total: 2, Calls: []CallCount{{Server: "fs", Tool: "read", N: 2}}, History: []HistoryEntry{{Server: "fs", Tool: "read", Method: "tools/call", At: t0}}}
	whole := encodeUsage(&u)
	enc := append(whole.head[:len(whole.head):len(whole.head)], whole.hist...)
	for _, bad := range [][]byte{
		enc[:len(enc)-1],                   // cut short
		append(enc[:len(enc):len(enc)], 0), // trailing bytes
		{0x05, 0xff},                       // a count larger than what follows
		{0x01, 0x00, 0x00, 0x02, 0x00},     // more history entries than bytes
	} {
		for _, history := range []bool{true, false} {
			if _, err := decodeUsage(splitUsage(bad), history); err == nil {
				t.Errorf("decodeUsage(%x, history %v) succeeded", bad, history)
			}
		}
	}
}

// with is the model withCall is checked against: a new Usage with call recorded, keeping at
// most historyLimit history entries.
func (u *Usage) with(call Call, historyLimit int) Usage {
	n := Usage{Total: u.Total + 1}

	n.Calls = countCall(slices.Clone(u.Calls), call.Server, call.Tool) // u stays as it was
	n.Labels = mergeLabels(u.Labels, call.Labels)

	entry := HistoryEntry{Server: call.Server, Tool: call.Tool, Method: call.Method, At: call.At}
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

// TestWithCallMatchesTheModel records a sequence of calls with withCall, on the encoded
// usage, and with the decoded model, under several history limits.
func TestWithCallMatchesTheModel(t *testing.T) {
	calls := []Call{
		{Server: "fs", Tool: "read", Method: "tools/call", At: t0, Labels: []string{"private_data"}},
		{Server: "github", Tool: "", Method: "resources/read", At: t0.Add(time.Second)},
		{Server: "fs", Tool: "read", Method: "tools/call", At: t0.Add(2 * time.Second), Labels: []string{"untrusted_content", "private_data"}},
		{Server: "fs", Tool: "write", Method: "tools/call", At: t0.Add(3 * time.Second)},
		{Server: "a", Tool: "ünïcode", Method: "tools/call", At: time.Time{}},
	}
	for _, limit := range []int{0, 1, 2, 3, 32} {
		var enc encUsage
		var model Usage
		// Every value stays as it was stored: a later call appends its history entry in place,
		// and must never write where an earlier value reads.
		var values []encUsage
		var models []Usage
		for round := range 40 {
			for _, c := range calls {
				var err error
				if enc, err = withCall(enc, c, limit); err != nil {
					t.Fatal(err)
				}
				model = model.with(c, limit)
				got, err := decodeUsage(enc, true)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, model) {
					t.Fatalf("limit %d, round %d, after %+v:\n got %+v\nwant %+v", limit, round, c, got, model)
				}
				values, models = append(values, enc), append(models, model)
			}
		}
		for i, v := range values {
			if got, err := decodeUsage(v, true); err != nil || !reflect.DeepEqual(got, models[i]) {
				t.Fatalf("limit %d: value %d changed after later calls:\n got %+v, %v\nwant %+v", limit, i, got, err, models[i])
			}
		}
	}
	if _, err := withCall(splitUsage([]byte{0x01, 0x09}), calls[0], 32); err == nil {
		t.Error("withCall on malformed usage succeeded")
	}
}

// TestEntrySize: entrySize is exactly what appendEntry appends, so a history array sized by it
// holds the entry without growing again.
func TestEntrySize(t *testing.T) {
	for _, c := range []struct {
		server, tool, method string
		at                   time.Time
	}{
		{"", "", "", time.Time{}},
		{"fs", "read", "tools/call", t0},
		{strings.Repeat("s", 127), strings.Repeat("t", 128), strings.Repeat("m", 1<<14), time.Unix(0, 1)},
		{"ünïcode", "", "resources/read", time.Unix(0, -1)},
	} {
		if got, want := entrySize(c.server, c.tool, c.method, c.at), len(appendEntry(nil, c.server, c.tool, c.method, c.at)); got != want {
			t.Errorf("entrySize(%d, %d, %d bytes, %v) = %d, appendEntry appends %d", len(c.server), len(c.tool), len(c.method), c.at, got, want)
		}
	}
}
