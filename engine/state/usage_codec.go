package state

import (
	"encoding/binary"
	"fmt"
	"unsafe"
)

// A session's usage is stored encoded, as one byte slice the collector does not look into:
// its total, its call counts, its labels and its history, strings inline. Recording a call
// decodes the usage, adds the call and encodes a new slice; reading it decodes it, with the
// strings pointing into the slice, which is never written once encoded.

func encodeUsage(u *Usage) []byte {
	size := 16
	for _, c := range u.Calls {
		size += len(c.Server) + len(c.Tool) + 12
	}
	for _, l := range u.Labels {
		size += len(l) + 2
	}
	for _, h := range u.History {
		size += len(h.Server) + len(h.Tool) + len(h.Method) + 16
	}
	b := make([]byte, 0, size)
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
	b = binary.AppendUvarint(b, uint64(len(u.History)))
	for _, h := range u.History {
		b = appendString(appendString(appendString(b, h.Server), h.Tool), h.Method)
		b = binary.AppendVarint(b, encodeNanos(h.At))
	}
	return b
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
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *usageDecoder) varint() int64 {
	v, n := binary.Varint(d.b)
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

func decodeUsage(b []byte) (Usage, error) {
	var u Usage
	if len(b) == 0 {
		return u, nil
	}
	d := usageDecoder{b: b}
	u.Total = d.uvarint()
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
	if n := d.count(); n > 0 {
		u.History = make([]HistoryEntry, n)
		for i := range u.History {
			u.History[i] = HistoryEntry{Server: d.str(), Tool: d.str(), Method: d.str(), At: decodeNanos(d.varint())}
		}
	}
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	return u, d.err
}

// withCall returns the encoded usage enc with call recorded, keeping at most historyLimit
// history entries. It decodes the counts and labels, which are few, and copies the history
// entries it keeps as they are encoded: a call costs one new slice, not a decoding of the
// whole history.
func withCall(enc []byte, call Call, historyLimit int) ([]byte, error) {
	d := usageDecoder{b: enc}
	var u Usage
	if len(enc) > 0 {
		u.Total = d.uvarint()
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
	}
	// The history as encoded: its count, then each entry's bytes; find where the kept ones start.
	var entries int
	if len(enc) > 0 {
		entries = d.count()
	}
	keep := min(entries, max(historyLimit-1, 0))
	for range entries - keep {
		d.str()
		d.str()
		d.str()
		d.varint()
	}
	kept := d.b
	for range keep {
		d.str()
		d.str()
		d.str()
		d.varint()
	}
	if d.err != nil || len(d.b) != 0 {
		return nil, fmt.Errorf("session usage is malformed")
	}

	n := Usage{Total: u.Total + 1, Calls: countCall(u.Calls, call.Server, call.Tool), Labels: mergeLabels(u.Labels, call.Labels)}
	b := make([]byte, 0, len(enc)+len(call.Server)+len(call.Tool)+len(call.Method)+32)
	b = binary.AppendUvarint(b, n.Total)
	b = binary.AppendUvarint(b, uint64(len(n.Calls)))
	for _, c := range n.Calls {
		b = appendString(appendString(b, c.Server), c.Tool)
		b = binary.AppendUvarint(b, c.N)
	}
	b = binary.AppendUvarint(b, uint64(len(n.Labels)))
	for _, l := range n.Labels {
		b = appendString(b, l)
	}
	if historyLimit <= 0 {
		return binary.AppendUvarint(b, 0), nil
	}
	b = binary.AppendUvarint(b, uint64(keep+1))
	b = append(b, kept...)
	b = appendString(appendString(appendString(b, call.Server), call.Tool), call.Method)
	return binary.AppendVarint(b, encodeNanos(call.At)), nil
}
