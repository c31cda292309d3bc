package state

import (
	"encoding/binary"
	"fmt"
	"time"
	"unsafe"
)

// A session's usage is stored encoded, in byte slices the collector does not look into: its
// head (the total, the call counts, the labels and the number of history entries) in one, its
// history entries in another, strings inline. Recording a call decodes the head, which is
// small, and encodes a new one; the history entries are not decoded, and the new entry is
// appended in place (see encUsage). Reading the usage decodes it, with the strings pointing
// into the slices, whose bytes are never written once a reader can see them.

// encUsage is one stored value of a session's usage: head ++ hist is the encoding encodeUsage
// writes. hist is the window of an append-only log: a call appends its entry past the end of
// the latest value's hist, in the same array while it has room, and drops the entries that
// fall out of the window by starting later, so the bytes any value holds never change and the
// history is copied only when the array is full (see withCallHead).
type encUsage struct {
	head []byte
	hist []byte
}

// empty reports whether the usage holds no call.
func (e encUsage) empty() bool { return len(e.head) == 0 && len(e.hist) == 0 }

// encodeUsage encodes u whole. The store writes usage only through withCall; this is the
// form withCall keeps, written in one go.
func encodeUsage(u *Usage) encUsage {
	head := binary.AppendUvarint(appendHead(nil, *u), uint64(len(u.History)))
	var hist []byte
	for _, h := range u.History {
		hist = appendEntry(hist, h.Server, h.Tool, h.Method, h.At)
	}
	return encUsage{head: head, hist: hist}
}

// splitUsage is the encUsage of an encoding as encodeUsage writes it, head ++ hist, split
// where the head ends; a malformed one is left whole in the head, so decoding it fails.
func splitUsage(b []byte) encUsage {
	d := usageDecoder{b: b}
	d.head()
	d.uvarint()
	if d.err != nil {
		return encUsage{head: b}
	}
	n := len(b) - len(d.b)
	return encUsage{head: b[:n:n], hist: d.b}
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

// entrySize is how many bytes appendEntry appends.
func entrySize(server, tool, method string, at time.Time) int {
	n := len(server) + len(tool) + len(method)
	n += uvarintSize(uint64(len(server))) + uvarintSize(uint64(len(tool))) + uvarintSize(uint64(len(method)))
	var b [binary.MaxVarintLen64]byte
	return n + binary.PutVarint(b[:], encodeNanos(at))
}

func uvarintSize(v uint64) int {
	n := 1
	for ; v >= 0x80; v >>= 7 {
		n++
	}
	return n
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
func decodeUsage(e encUsage, history bool) (Usage, error) {
	if e.empty() {
		return Usage{}, nil
	}
	d := usageDecoder{b: e.head}
	u := d.head()
	n := d.uvarint()
	if err := d.end(); err != nil {
		return Usage{}, err
	}
	if n > uint64(len(e.hist)) { // every entry takes at least a byte
		d.fail()
		return Usage{}, d.err
	}
	if history && n > 0 {
		u.History = make([]HistoryEntry, n)
	}
	d.b = e.hist
	for i := range int(n) {
		h := d.entry() // read even when not kept: a malformed history is still an error
		if u.History != nil {
			u.History[i] = h
		}
	}
	return u, d.end()
}

// withCall returns the encoded usage e with call recorded, keeping at most historyLimit
// history entries.
func withCall(e encUsage, call Call, historyLimit int) (encUsage, error) {
	out, _, err := withCallHead(e, call, historyLimit)
	return out, err
}

// withCallHead is withCall, returning also the counts and labels it encoded (their strings
// point into the head and call). It decodes the head, which is small, and encodes a new one.
// The history entries that stay in the window are not decoded or copied: the new entry is
// appended after them in place while their array has room, which is safe because e is the
// latest value of its session (the caller holds the session's cell), so no value has written
// past e.hist's end. When the array is full, the kept entries move to a new one with room for
// about a quarter of the window more: a call copies the history once in that many calls, not
// every time. The dropped entries are skipped, not read through: the store encoded them, and
// every read of the usage reads the whole history through, so a malformed one is still an
// error there.
func withCallHead(e encUsage, call Call, historyLimit int) (encUsage, Usage, error) {
	var u Usage
	var entries uint64
	if !e.empty() {
		d := usageDecoder{b: e.head}
		u = d.head()
		entries = d.uvarint()
		if err := d.end(); err != nil {
			return encUsage{}, Usage{}, err
		}
		if entries > uint64(len(e.hist)) {
			d.fail()
			return encUsage{}, Usage{}, d.err
		}
	}
	// u was decoded here, so its counts are this call's to change.
	n := Usage{Total: u.Total + 1, Calls: countCall(u.Calls, call.Server, call.Tool), Labels: mergeLabels(u.Labels, call.Labels)}
	head := appendHead(make([]byte, 0, len(e.head)+len(call.Server)+len(call.Tool)+8), n)
	if historyLimit <= 0 {
		return encUsage{head: binary.AppendUvarint(head, 0)}, n, nil
	}
	keep := min(int(entries), historyLimit-1)
	d := usageDecoder{b: e.hist}
	for range int(entries) - keep {
		d.entry()
	}
	if d.err != nil || (keep == 0 && len(d.b) != 0) {
		return encUsage{}, Usage{}, d.end()
	}
	kept := d.b
	need := entrySize(call.Server, call.Tool, call.Method, call.At)
	if cap(kept)-len(kept) < need {
		grown := make([]byte, len(kept), len(kept)+need+(len(kept)+need)/4)
		copy(grown, kept)
		kept = grown
	}
	hist := appendEntry(kept, call.Server, call.Tool, call.Method, call.At)
	return encUsage{head: binary.AppendUvarint(head, uint64(keep+1)), hist: hist}, n, nil
}

// UsageVersion names one stored value of a session's usage: every recorded call stores a new
// one, and an unchanged usage keeps its version. It holds the value's head, which each call
// encodes afresh, so a version that a caller keeps is never given to another value.
type UsageVersion struct {
	p *byte
	n int
}

func versionOf(e encUsage) UsageVersion { return UsageVersion{unsafe.SliceData(e.head), len(e.head)} }
