package engine_test

import (
	"bytes"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/arbiter-mcp/arbiter/engine"
)

// decodeJSON decodes arguments as the gRPC service decodes arguments_json: numbers kept as
// written.
func decodeJSON(t *testing.T, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader([]byte(s)))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// decodeFloats decodes arguments as a protobuf Struct carries them: numbers as float64.
func decodeFloats(t *testing.T, s string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestArgumentsDigestIsCanonical(t *testing.T) {
	same := []struct{ a, b string }{
		{`{"n": 1.0}`, `{"n": 1}`},
		{`{"n": 1e3}`, `{"n": 1000}`},
		{`{"n": 100e-2}`, `{"n": 1}`},
		{`{"n": -0.0}`, `{"n": 0}`},
		{`{"n": 0.10}`, `{"n": 0.1}`},
		{`{"n": 1.5E300}`, `{"n": 1.5e300}`},
		{`{"b": [true, null, "x"], "a": {"z": 1, "y": 2}}`, `{"a":{"y":2,"z":1},"b":[true,null,"x"]}`},
	}
	for _, c := range same {
		// Each form against both decodings: JSON text and float64 must agree.
		for _, pair := range [][2]map[string]any{
			{decodeJSON(t, c.a), decodeJSON(t, c.b)},
			{decodeJSON(t, c.a), decodeFloats(t, c.b)},
			{decodeFloats(t, c.a), decodeJSON(t, c.b)},
		} {
			ra, da, err := engine.ArgumentsDigest(pair[0])
			if err != nil {
				t.Fatal(err)
			}
			rb, db, err := engine.ArgumentsDigest(pair[1])
			if err != nil {
				t.Fatal(err)
			}
			if da != db {
				t.Errorf("%s and %s: canonical %s vs %s, want the same", c.a, c.b, ra, rb)
			}
		}
	}

	different := []struct{ a, b string }{
		{`{"n": 9007199254740993}`, `{"n": 9007199254740992}`}, // beyond float64's integers
		{`{"n": 1}`, `{"n": "1"}`},
		{`{"n": 0.1}`, `{"n": 0.2}`},
		{`{"s": "a\u0000"}`, `{"s": "a"}`},
		{`{}`, `{"n": null}`},
	}
	for _, c := range different {
		_, da, _ := engine.ArgumentsDigest(decodeJSON(t, c.a))
		_, db, _ := engine.ArgumentsDigest(decodeJSON(t, c.b))
		if da == db {
			t.Errorf("%s and %s share a digest", c.a, c.b)
		}
	}

	raw, _, err := engine.ArgumentsDigest(decodeJSON(t, `{"q": "say \"hi\"\n\t\u00e9\u2028", "n": [1.0, 2.5, 1e21, 12345678901234567890]}`))
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"n":[1,2.5,1e+21,12345678901234567890],"q":"say \"hi\"\n\t` + "\u00e9\u2028" + `"}`; string(raw) != want {
		t.Errorf("canonical form\n%s\nwant\n%s", raw, want)
	}
	if !json.Valid(raw) {
		t.Errorf("canonical form is not JSON: %s", raw)
	}
	// Long number texts take the float form unless they are plain integers (which, this
	// long, lie beyond float64 and keep their text): never an exact rational of the text.
	long := "1." + strings.Repeat("0", 200000) + "1e5"
	if raw, _, err := engine.ArgumentsDigest(map[string]any{"n": json.Number(long)}); err != nil || string(raw) != `{"n":100000}` {
		t.Errorf("a 200,000-digit fraction: %.40s %v, want {\"n\":100000}", raw, err)
	}
	huge := strings.Repeat("9", 400)
	if raw, _, _ := engine.ArgumentsDigest(map[string]any{"n": json.Number(huge)}); string(raw) != `{"n":`+huge+`}` {
		t.Errorf("an integer beyond float64 lost its digits: %.60s", raw)
	}
	if _, _, err := engine.ArgumentsDigest(map[string]any{"n": math.NaN()}); err == nil {
		t.Error("NaN must be refused")
	}
	if raw, _, _ := engine.ArgumentsDigest(nil); string(raw) != "{}" {
		t.Errorf("no arguments: %s, want {}", raw)
	}
}
