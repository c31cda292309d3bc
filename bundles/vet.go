package bundles

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Limits bound what a pushed bundle may hold, checked before OPA's reader sees it.
type Limits struct {
	// CompressedBytes bounds the pushed body (default 8 MiB).
	CompressedBytes int64
	// UnpackedBytes bounds the sum of all files once decompressed (default 64 MiB).
	UnpackedBytes int64
	// FileBytes bounds any one file (default 16 MiB).
	FileBytes int64
	// Files bounds the number of entries (default 10,000).
	Files int
}

func (l *Limits) setDefaults() {
	if l.CompressedBytes <= 0 {
		l.CompressedBytes = 8 << 20
	}
	if l.UnpackedBytes <= 0 {
		l.UnpackedBytes = 64 << 20
	}
	if l.FileBytes <= 0 {
		l.FileBytes = 16 << 20
	}
	if l.Files <= 0 {
		l.Files = 10000
	}
}

// vetArchive walks the gzip'd tar once, without keeping its content, and refuses what a
// bundle never needs and an attacker would use: a body that is not gzip'd tar, decompression
// bombs, links, devices, absolute paths and paths that climb out with "..".
func vetArchive(raw []byte, l Limits) []Problem {
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		return []Problem{{Kind: KindArchive, Message: "body is not a gzip-compressed tarball: " + err.Error()}}
	}
	defer zr.Close()
	tr := tar.NewReader(zr)
	var total int64
	files := 0
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return []Problem{{Kind: KindArchive, Message: "tarball is corrupt or truncated: " + err.Error()}}
		}
		files++
		if files > l.Files {
			return []Problem{{Kind: KindSize, Message: fmt.Sprintf("more than %d entries", l.Files)}}
		}
		// OPA's own writer roots entries at "/" (opa build writes /data.json), so a leading
		// slash means the bundle root; drive letters and UNC paths are refused.
		name := h.Name
		switch {
		case len(name) >= 2 && name[1] == ':', strings.HasPrefix(name, "\\"):
			return []Problem{{Kind: KindArchive, File: name, Message: "absolute path in the tarball"}}
		case containsDotDot(name):
			return []Problem{{Kind: KindArchive, File: name, Message: "path climbs out of the bundle with \"..\""}}
		}
		switch h.Typeflag {
		case tar.TypeReg, tar.TypeDir:
		case tar.TypeSymlink, tar.TypeLink:
			return []Problem{{Kind: KindArchive, File: name, Message: "links are not allowed in a bundle"}}
		default:
			return []Problem{{Kind: KindArchive, File: name, Message: fmt.Sprintf("entry type %q is not a file or directory", string(h.Typeflag))}}
		}
		// Count what decompression really yields, not what the header claims.
		n, err := io.Copy(io.Discard, io.LimitReader(tr, l.FileBytes+1))
		if err != nil {
			return []Problem{{Kind: KindArchive, File: name, Message: "tarball is corrupt or truncated: " + err.Error()}}
		}
		if n > l.FileBytes {
			return []Problem{{Kind: KindSize, File: name, Message: fmt.Sprintf("file is larger than %d bytes", l.FileBytes)}}
		}
		total += n
		if total > l.UnpackedBytes {
			return []Problem{{Kind: KindSize, Message: fmt.Sprintf("bundle unpacks to more than %d bytes", l.UnpackedBytes)}}
		}
	}
}

func containsDotDot(name string) bool {
	return strings.Contains("/"+strings.ReplaceAll(name, "\\", "/")+"/", "/../")
}
