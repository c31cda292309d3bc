package bundles

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// DiskStore keeps active bundles and their kept revisions in a directory, so a restart comes
// back on the same revisions. Every file is written atomically: temp file, fsync, rename,
// fsync of the directory.
//
//	DIR/<bundle>/state.json          kept revisions, newest (serving) first
//	DIR/<bundle>/<digest>.tar.gz     the bytes of each kept revision, as pushed
type DiskStore struct {
	dir string
}

// NewDiskStore returns a store under dir, creating it.
func NewDiskStore(dir string) (*DiskStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("bundle store: %w", err)
	}
	return &DiskStore{dir: dir}, nil
}

type diskState struct {
	Kept []Revision `json:"kept"`
}

// Save writes the kept revisions of a bundle: new archives first, then the state file that
// points at them, then old archives are removed. A crash leaves either state intact.
func (s *DiskStore) Save(name string, kept []*loaded) error {
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	st := diskState{}
	want := map[string]bool{}
	for _, k := range kept {
		file := archiveName(k.Digest)
		want[file] = true
		st.Kept = append(st.Kept, k.Revision)
		if _, err := os.Stat(filepath.Join(dir, file)); err == nil {
			continue
		}
		if err := writeAtomic(dir, file, k.raw); err != nil {
			return err
		}
	}
	raw, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	if err := writeAtomic(dir, "state.json", raw); err != nil {
		return err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".tar.gz") && !want[e.Name()] {
			os.Remove(filepath.Join(dir, e.Name()))
		}
	}
	return nil
}

// Delete removes a bundle: its state file first, so a crash midway leaves it deleted.
func (s *DiskStore) Delete(name string) error {
	dir := filepath.Join(s.dir, name)
	if err := os.Remove(filepath.Join(dir, "state.json")); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	syncDir(dir)
	return os.RemoveAll(dir)
}

// stored is one bundle as found on disk.
type stored struct {
	name string
	kept []Revision
	raws [][]byte
}

// load reads every bundle directory. A directory whose state or serving archive is missing,
// unreadable or does not match its digest is reported in problems and skipped, never half
// loaded. Older kept revisions that are damaged are dropped from the history.
func (s *DiskStore) load() (found []stored, problems []string) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, []string{err.Error()}
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		name := e.Name()
		dir := filepath.Join(s.dir, name)
		raw, err := os.ReadFile(filepath.Join(dir, "state.json"))
		if errors.Is(err, fs.ErrNotExist) {
			continue // deleted, or never finished saving
		}
		var st diskState
		if err == nil {
			err = json.Unmarshal(raw, &st)
		}
		if err == nil && len(st.Kept) == 0 {
			err = errors.New("state lists no revision")
		}
		if err != nil {
			problems = append(problems, fmt.Sprintf("bundle %q: state.json: %v", name, err))
			continue
		}
		b := stored{name: name}
		for i, rev := range st.Kept {
			data, err := os.ReadFile(filepath.Join(dir, archiveName(rev.Digest)))
			if err == nil && digestOf(data) != rev.Digest {
				err = fmt.Errorf("content does not match digest %s", rev.Digest)
			}
			if err != nil {
				if i == 0 {
					problems = append(problems, fmt.Sprintf("bundle %q revision %q: %v", name, rev.Revision, err))
					b.kept = nil
					break
				}
				continue
			}
			b.kept = append(b.kept, rev)
			b.raws = append(b.raws, data)
		}
		if len(b.kept) > 0 {
			found = append(found, b)
		}
	}
	return found, problems
}

func archiveName(digest string) string {
	return strings.TrimPrefix(digest, "sha256:") + ".tar.gz"
}

func digestOf(raw []byte) string {
	sum := sha256.Sum256(raw)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// writeAtomic replaces dir/name with data so that readers see the old or the new file, whole.
func writeAtomic(dir, name string, data []byte) error {
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return err
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
