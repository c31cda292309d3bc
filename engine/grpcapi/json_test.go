package grpcapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// referenceDecode is how the service decoded arguments before decodeJSONObject: a json.Decoder
// with UseNumber. ok is false for input it refuses; trailing is true when one value decoded
// and more input followed.
func referenceDecode(raw []byte) (v any, ok, trailing bool) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return nil, false, false
	}
	// Only space may follow: anything else, even a stray ] or } that Decoder.More lets
	// through, is trailing data.
	rest := bytes.TrimLeft(raw[dec.InputOffset():], " \t\r\n")
	return v, true, len(rest) > 0
}

// jsonCorpus is valid and invalid JSON, the seeds of FuzzDecodeJSONObject.
var jsonCorpus = []string{
	`{}`, ` { } `, "{\n\t\"a\" : 1 }\r\n", `{"a":1,"a":2}`, `{"path":"/tmp/x","n":-1.5e+10,"z":0,"t":true,"f":false,"u":null}`,
	`{"a":[1,[2,[3,{}]],[]],"b":{"c":{"d":"e"}}}`, `{"s":"\"\\\/\b\f\n\r\t\u0041\u00e9\u20ac"}`, `{"e":"😀 é 日本"}`,
	`{"pair":"\ud83d\ude00"}`, `{"lone":"\ud83d"}`, `{"lone2":"\ud83dx"}`, `{"low":"\ude00"}`, `{"hi-hi":"\ud83d\ud83d"}`,
	`{"bad-pair":"\ud83d\u0041"}`, "{\"bad\":\"\xff\xfe\"}", "{\"cut\":\"\xe6\x97\"}", `{"fffd":"` + "\xef\xbf\xbd" + `"}`,
	`{"n":0.0}`, `{"n":1E5}`, `{"n":-0}`, `{"n":123456789012345678901234567890}`,
	// refused
	``, ` `, `[]`, `"s"`, `1`, `null`, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`, `{"a" 1}`, `{a:1}`, `{'a':1}`,
	`{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":1e+}`, `{"a":+1}`, `{"a":tru}`, `{"a":nul}`, `{"a":falsey}`,
	`{"a":"x}`, "{\"a\":\"\n\"}", "{\"a\":\"\x01\"}", `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12g4"}`, `{"a":[1,2}`, `{"a":[1 2]}`,
	`{} {}`, `{}}`, `{}]`, `{} x`, `{}` + "\x00", `{"a":NaN}`, `{"a":Infinity}`, "\ufeff{}",
}

// deepJSON nests arrays past encoding/json's limit, and up to it. (Not fuzzing seeds: the
// fuzzer spends its time minimising what grows from inputs this large.)
var deepJSON = []string{
	`{"a":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
	`{"a":` + strings.Repeat("[", 9990) + strings.Repeat("]", 9990) + `}`,
	`{"a":` + strings.Repeat(`{"b":`, 9990) + "1" + strings.Repeat("}", 9990) + `}`,
}

// TestDecodeJSONObjectAsEncodingJSON: on every input of the corpus, decodeJSONObject gives the
// value json.Decoder gives with UseNumber, or refuses what it refuses.
func TestDecodeJSONObjectAsEncodingJSON(t *testing.T) {
	for _, in := range append(jsonCorpus, deepJSON...) {
		checkAgainstReference(t, []byte(in))
	}
}

func FuzzDecodeJSONObject(f *testing.F) {
	for _, in := range jsonCorpus {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkAgainstReference(t, raw) })
}

func checkAgainstReference(t *testing.T, raw []byte) {
	t.Helper()
	want, ok, trailing := referenceDecode(raw)
	got, err := decodeJSONObject(raw)
	_, isObject := want.(map[string]any)
	switch {
	case !ok:
		if err == nil {
			t.Errorf("%q: decoded %v, encoding/json refuses it", raw, got)
		}
	case trailing:
		if !errors.Is(err, errTrailing) {
			t.Errorf("%q: error %v, want %v", raw, err, errTrailing)
		}
	case !isObject:
		if !errors.Is(err, errNotObject) {
			t.Errorf("%q: error %v, want %v", raw, err, errNotObject)
		}
	case err != nil:
		t.Errorf("%q: %v, encoding/json decodes %v", raw, err, want)
	case !reflect.DeepEqual(map[string]any(got), want):
		t.Errorf("%q:\ndecoded       %#v\nencoding/json %#v", raw, got, want)
	}
}

// BenchmarkDecodeArguments decodes a file write's arguments (1.4 KB, a string with escapes)
// and a search's (150 B), as the benchmark harness's load sends them.
func BenchmarkDecodeArguments(b *testing.B) {
	for name, raw := range map[string][]byte{
		"write-1.4KB": []byte(`{"path":"/src/ledger/reconcile_test.go","content":"` + strings.Repeat(`\tif got := Reconcile(a, b); got != want {\n`, 30) +
			`","mode":"0644","create":true,"tags":["a","b","c"],"size":1234}`),
		"search-150B": []byte(`{"query": "is:open label:bug reconcile ledger", "repo": "payments/ledger", "per_page": 30, "sort": "updated", "order": "desc"}`),
	} {
		b.Run(name+"/decodeJSONObject", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeJSONObject(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(name+"/encoding-json", func(b *testing.B) {
			b.SetBytes(int64(len(raw)))
			b.ReportAllocs()
			for b.Loop() {
				if _, ok, _ := referenceDecode(raw); !ok {
					b.Fatal("refused")
				}
			}
		})
	}
}
