package state

import (
	"encoding/binary"
	"fmt"
	"time"
	"unsafe"
)

// A session's usage is stored encoded, as one byte slice the collector does not look into:
// its total, its call counts, its labels and its history, strings inline. Recording a call
// decodes the usage, adds the call and encodes a new slice; reading it decodes it, with the
// strings pointing into the slice, which is never written once encoded.

// encodeUsage encodes u whole. The store writes usage only through withCall; this is the
// form withCall keeps, written in one go.
func encodeUsage(u *Usage) []byte {
	b := appendHead(nil, *u)
	b = binary.AppendUvarint(b, uint64(len(u.History)))
	for _, h := range u.History {
		b = appendEntry(b, h.Server, h.Tool, h.Method, h.At)
	}
	return b
}

// appendHead appends what precedes the history: the total, the call counts and the labels.
func appendHead(b []byte, u Usage) []byte {
	b = binary.AppendUvarint(b, u.Total)
	b = binary.AppendUvarint(b, uint64(len(u.Calls)))
	for _, c := range u.Calls {
		b = appendString(appendString(b, c.Server), c.Tool)
		b = binary.AppendUvarint(b, c.N)
	}
	b = binary.AppendUvarint(b, uint64(len(u.Labels)))
	for _, l := range u.Labels {
		b = appendString(b, l)
	}
	return b
}

func appendEntry(b []byte, server, tool, method string, at time.Time) []byte {
	b = appendString(appendString(appendString(b, server), tool), method)
	return binary.AppendVarint(b, encodeNanos(at))
}

func appendString(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// usageDecoder reads what encodeUsage wrote. A malformed slice sets err; the store only ever
// decodes slices it encoded, so that is a bug, reported rather than read past.
type usageDecoder struct {
	b   []byte
	err error
}

func (d *usageDecoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	return advance(d, v, n)
}

func (d *usageDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
	return advance(d, v, n)
}

// advance consumes the n bytes a varint read took, or fails when it read none.
func advance[T uint64 | int64](d *usageDecoder, v T, n int) T {
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *usageDecoder) str() string {
	n := d.uvarint()
	if n == 0 || d.err != nil {
		return ""
	}
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := unsafe.String(&d.b[0], int(n))
	d.b = d.b[n:]
	return s
}

// count reads a length, bounded by what is left (every element takes at least a byte).
func (d *usageDecoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *usageDecoder) fail() {
	if d.err == nil {
		d.err = fmt.Errorf("session usage is malformed")
	}
	d.b = nil
}

// head reads what appendHead wrote into a Usage without history.
func (d *usageDecoder) head() Usage {
	u := Usage{Total: d.uvarint()}
	if n := d.count(); n > 0 {
		u.Calls = make([]CallCount, n)
		for i := range u.Calls {
			u.Calls[i] = CallCount{Server: d.str(), Tool: d.str(), N: d.uvarint()}
		}
	}
	if n := d.count(); n > 0 {
		u.Labels = make([]string, n)
		for i := range u.Labels {
			u.Labels[i] = d.str()
		}
	}
	return u
}

func (d *usageDecoder) entry() HistoryEntry {
	return HistoryEntry{Server: d.str(), Tool: d.str(), Method: d.str(), At: decodeNanos(d.varint())}
}

// end fails unless the whole slice was read.
func (d *usageDecoder) end() error {
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return d.err
}

// decodeUsage reads usage encodeUsage or withCall wrote, with its history only when history
// is true; the history is read through either way, so a malformed one is always an error.
func decodeUsage(b []byte, history bool) (Usage, error) {
	if len(b) == 0 {
		return Usage{}, nil
	}
	d := usageDecoder{b: b}
	u := d.head()
	n := d.count()
	if history && n > 0 {
		u.History = make([]HistoryEntry, n)
	}
	for i := range n {
		e := d.entry() // read even when not kept: a malformed history is still an error
		if u.History != nil {
			u.History[i] = e
		}
	}
	return u, d.end()
}

// withCall returns the encoded usage enc with call recorded, keeping at most historyLimit
// history entries. It decodes the counts and labels, which are few, and copies the history
// entries it keeps as they are encoded: a call costs one new slice, not a decoding of the
// whole history.
func withCall(enc []byte, call Call, historyLimit int) ([]byte, error) {
	b, _, err := withCallHead(enc, call, historyLimit)
	return b, err
}

// withCallHead is withCall, returning also the counts and labels it encoded (their strings
// point into enc and call).
func withCallHead(enc []byte, call Call, historyLimit int) ([]byte, Usage, error) {
	d := usageDecoder{b: enc}
	var u Usage
	entries := 0
	if len(enc) > 0 {
		u = d.head()
		entries = d.count()
	}
	// Skip the entries that drop out of the window; the kept ones are copied as they are. They
	// are not read through here: the store encoded them, and every read of the usage reads the
	// whole history through, so a malformed one is still an error there.
	keep := min(entries, max(historyLimit-1, 0))
	for range entries - keep {
		d.entry()
	}
	kept := d.b
	if d.err != nil || (keep == 0 && len(kept) != 0) {
		return nil, Usage{}, d.end()
	}

	n := Usage{Total: u.Total + 1, Calls: countCall(u.Calls, call.Server, call.Tool), Labels: mergeLabels(u.Labels, call.Labels)}
	b := appendHead(make([]byte, 0, len(enc)+len(call.Server)+len(call.Tool)+len(call.Method)+32), n)
	if historyLimit <= 0 {
		return binary.AppendUvarint(b, 0), n, nil
	}
	b = binary.AppendUvarint(b, uint64(keep+1))
	b = append(b, kept...)
	return appendEntry(b, call.Server, call.Tool, call.Method, call.At), n, nil
}

// UsageVersion names one stored value of a session's usage: every recorded call stores a new
// one, and an unchanged usage keeps its version. It holds the stored bytes, so a version that a
// caller keeps is never given to another value.
type UsageVersion struct {
	p *byte
	n int
}

func versionOf(enc []byte) UsageVersion { return UsageVersion{unsafe.SliceData(enc), len(enc)} }
