// Package bundles activates OPA bundles pushed to a running Arbiter: it vets and reads them
// with OPA's bundle reader, verifies signatures, compiles them together with the other active
// bundles, runs their own Rego tests, persists them, and only then swaps them in. It knows
// OPA's bundle format, not the engine: the engine is reached through Activator.
package bundles

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// Policy is what the active bundles add up to, in the shape the engine compiles. It has the
// same fields as engine.Policy, so the composition root converts one into the other.
type Policy struct {
	Revision   string
	Modules    map[string]*ast.Module
	Data       map[string]any
	Entrypoint string
}

// Activator is what the manager needs from the decision engine: compile and check a policy
// without serving it, returning the function that swaps it in.
type Activator interface {
	Prepare(ctx context.Context, p Policy) (activate func(), err error)
}

// Problem kinds, as reported to the operator.
const (
	KindSize       = "size"
	KindArchive    = "archive"
	KindBundle     = "bundle"
	KindSignature  = "signature"
	KindRoots      = "roots"
	KindCompile    = "compile"
	KindEntrypoint = "entrypoint"
	KindTest       = "test"
	KindStorage    = "storage"
)

// Problem is one reason a bundle was refused.
type Problem struct {
	Kind    string `json:"kind"`
	Message string `json:"message"`
	File    string `json:"file,omitempty"`
	Line    int    `json:"line,omitempty"`
}

// RejectedError lists every problem found in a refused bundle. Nothing changed.
type RejectedError struct {
	Problems []Problem
}

func (e *RejectedError) Error() string {
	msgs := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		loc := ""
		if p.File != "" {
			loc = p.File
			if p.Line > 0 {
				loc += fmt.Sprintf(":%d", p.Line)
			}
			loc += ": "
		}
		msgs[i] = p.Kind + ": " + loc + p.Message
	}
	return "bundle rejected: " + strings.Join(msgs, "; ")
}

func rejected(ps ...Problem) error { return &RejectedError{Problems: ps} }

// Errors of bundle operations besides RejectedError.
var (
	ErrNotFound   = errors.New("no such bundle")
	ErrNoRevision = errors.New("no such revision kept")
	ErrBadName    = errors.New("bundle names are 1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit")
)

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,63}$`)

// Revision is one kept revision of a bundle.
type Revision struct {
	Revision    string    `json:"revision"`
	Digest      string    `json:"digest"`
	Size        int64     `json:"size"`
	ActivatedAt time.Time `json:"activated_at"`
	PushedBy    string    `json:"pushed_by"`
	Signed      bool      `json:"signed"`
}

// Status describes an active bundle.
type Status struct {
	Name  string   `json:"name"`
	Roots []string `json:"roots"`
	Revision
	// Previous are the other kept revisions, newest first, for rollback.
	Previous []Revision `json:"previous"`
}

// Config tunes a Manager.
type Config struct {
	Limits Limits
	// Verification, when set, makes a valid signature mandatory (OPA's .signatures.json).
	Verification *bundle.VerificationConfig
	// Keep is how many revisions of each bundle are kept for rollback (default 5).
	Keep int
	// Store persists bundles; nil keeps them in memory only.
	Store *DiskStore
	// Fallback serves when no bundle is active (the embedded default policy).
	Fallback Policy
	// TestTimeout bounds a bundle's own Rego tests (default 30s).
	TestTimeout time.Duration
	// OnActivation is told the outcome of every push, rollback and delete:
	// "activated" or "rejected".
	OnActivation func(bundle, outcome string)
	Clock        func() time.Time
	Logger       *slog.Logger
}

// Manager keeps the set of active bundles. Changes are serialised; reads see a consistent set.
type Manager struct {
	cfg       Config
	activator Activator

	mu      sync.Mutex // serialises changes
	active  map[string]*entry
	current string // revision of what serves
}

// entry is one active bundle and the revisions kept for it, newest first; kept[0] serves.
type entry struct {
	name string
	kept []*loaded
}

// loaded is a bundle revision read and verified, with its raw bytes for persistence.
type loaded struct {
	Revision
	raw    []byte
	bundle *bundle.Bundle
}

// NewManager returns a manager serving cfg.Fallback until bundles are pushed or restored.
func NewManager(cfg Config, activator Activator) *Manager {
	cfg.Limits.setDefaults()
	if cfg.Keep <= 0 {
		cfg.Keep = 5
	}
	if cfg.TestTimeout <= 0 {
		cfg.TestTimeout = 30 * time.Second
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.OnActivation == nil {
		cfg.OnActivation = func(string, string) {}
	}
	return &Manager{cfg: cfg, activator: activator, active: map[string]*entry{}, current: cfg.Fallback.Revision}
}

// Push vets, reads, verifies, compiles and tests the gzip'd tarball raw as bundle name and,
// only if all of that succeeds, persists it and makes it serve. On any problem nothing
// changes and the error is a *RejectedError listing every problem found.
func (m *Manager) Push(ctx context.Context, name string, raw []byte, pushedBy string) (Status, error) {
	if !nameRE.MatchString(name) {
		return Status{}, ErrBadName
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	l, err := m.read(raw, pushedBy)
	if err != nil {
		m.cfg.OnActivation(name, "rejected")
		return Status{}, err
	}
	st, err := m.activate(ctx, name, l)
	m.outcome(name, err)
	return st, err
}

// Rollback makes an earlier kept revision of name serve again: the previous one, or the one
// whose manifest revision (or digest) is revision. It is checked like a push.
func (m *Manager) Rollback(ctx context.Context, name, revision, by string) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.active[name]
	if !ok {
		return Status{}, ErrNotFound
	}
	var target *loaded
	for _, k := range e.kept[1:] {
		if revision == "" || k.Revision.Revision == revision || k.Digest == revision {
			target = k
			break
		}
	}
	if target == nil {
		return Status{}, ErrNoRevision
	}
	again := *target
	again.PushedBy = by
	st, err := m.activate(ctx, name, &again)
	m.outcome(name, err)
	return st, err
}

// Delete stops serving bundle name. When it was the last one, the fallback policy serves.
func (m *Manager) Delete(ctx context.Context, name string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.active[name]; !ok {
		return "", ErrNotFound
	}
	rest := m.without(name)
	p, err := m.compose(rest)
	if err == nil {
		var activate func()
		if activate, err = m.prepare(ctx, p); err == nil {
			if m.cfg.Store != nil {
				if err = m.cfg.Store.Delete(name); err != nil {
					err = rejected(Problem{Kind: KindStorage, Message: err.Error()})
				}
			}
			if err == nil {
				activate()
				delete(m.active, name)
				m.current = p.Revision
			}
		}
	}
	m.outcome(name, err)
	return m.current, err
}

// List describes every active bundle, by name.
func (m *Manager) List() []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(m.active))
	for _, name := range sortedNames(m.active) {
		out = append(out, m.status(m.active[name]))
	}
	return out
}

// Get describes one active bundle.
func (m *Manager) Get(name string) (Status, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.active[name]
	if !ok {
		return Status{}, ErrNotFound
	}
	return m.status(e), nil
}

// Revision is the revision of what serves now.
func (m *Manager) Revision() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.current
}

// read vets raw and reads it with OPA's bundle reader, verifying the signature when keys
// are configured.
func (m *Manager) read(raw []byte, pushedBy string) (*loaded, error) {
	if int64(len(raw)) > m.cfg.Limits.CompressedBytes {
		return nil, rejected(Problem{Kind: KindSize, Message: fmt.Sprintf("body is larger than %d bytes", m.cfg.Limits.CompressedBytes)})
	}
	if ps := vetArchive(raw, m.cfg.Limits); len(ps) > 0 {
		return nil, rejected(ps...)
	}
	r := bundle.NewReader(bytes.NewReader(raw)).
		WithSizeLimitBytes(m.cfg.Limits.FileBytes).
		WithRegoVersion(ast.RegoV1).
		WithProcessAnnotations(true)
	if m.cfg.Verification != nil {
		r = r.WithBundleVerificationConfig(m.cfg.Verification)
	} else {
		r = r.WithSkipBundleVerification(true)
	}
	b, err := r.Read()
	if err != nil {
		return nil, rejected(readProblems(err, m.cfg.Verification != nil)...)
	}
	if b.Manifest.Revision == "" {
		return nil, rejected(Problem{Kind: KindBundle, File: ".manifest", Message: "the manifest has no revision; Arbiter attributes every decision to a revision, so set one (opa build --revision R, arbiter bundle build --revision R)"})
	}
	sum := sha256.Sum256(raw)
	return &loaded{
		Revision: Revision{
			Revision:    b.Manifest.Revision,
			Digest:      "sha256:" + hex.EncodeToString(sum[:]),
			Size:        int64(len(raw)),
			ActivatedAt: m.cfg.Clock(),
			PushedBy:    pushedBy,
			Signed:      len(b.Signatures.Signatures) > 0,
		},
		raw:    raw,
		bundle: &b,
	}, nil
}

// activate checks l as bundle name together with the other active bundles, persists it and
// swaps it in.
func (m *Manager) activate(ctx context.Context, name string, l *loaded) (Status, error) {
	if ps := m.rootProblems(name, l.bundle); len(ps) > 0 {
		return Status{}, rejected(ps...)
	}
	next := m.without(name)
	e := &entry{name: name, kept: m.history(name, l)}
	next[name] = e
	p, err := m.compose(next)
	if err != nil {
		return Status{}, err
	}
	if err := m.runTests(ctx, name, l.bundle, p); err != nil {
		return Status{}, err
	}
	activate, err := m.prepare(ctx, p)
	if err != nil {
		return Status{}, err
	}
	if m.cfg.Store != nil {
		if err := m.cfg.Store.Save(name, e.kept); err != nil {
			return Status{}, rejected(Problem{Kind: KindStorage, Message: "could not persist the bundle, so it was not activated: " + err.Error()})
		}
	}
	activate()
	m.active = next
	m.current = p.Revision
	m.cfg.Logger.Info("bundle activated", slog.String("bundle", name), slog.String("revision", l.Revision.Revision),
		slog.String("digest", l.Digest), slog.String("pushed_by", l.PushedBy), slog.String("policy_revision", p.Revision))
	return m.status(e), nil
}

// history puts l first in name's kept revisions, dropping an older copy of the same bytes
// and anything past the limit.
func (m *Manager) history(name string, l *loaded) []*loaded {
	kept := []*loaded{l}
	if e, ok := m.active[name]; ok {
		for _, k := range e.kept {
			if k.Digest != l.Digest && len(kept) < m.cfg.Keep {
				kept = append(kept, k)
			}
		}
	}
	return kept
}

// without returns a copy of the active set minus name.
func (m *Manager) without(name string) map[string]*entry {
	out := make(map[string]*entry, len(m.active)+1)
	for k, v := range m.active {
		if k != name {
			out[k] = v
		}
	}
	return out
}

func (m *Manager) outcome(name string, err error) {
	if err != nil {
		m.cfg.OnActivation(name, "rejected")
		return
	}
	m.cfg.OnActivation(name, "activated")
}

// rootProblems refuses roots that overlap another active bundle's, as OPA does.
func (m *Manager) rootProblems(name string, b *bundle.Bundle) []Problem {
	var ps []Problem
	for _, other := range sortedNames(m.active) {
		if other == name {
			continue
		}
		ob := m.active[other].kept[0].bundle
		for _, r := range rootsOf(b) {
			for _, or := range rootsOf(ob) {
				if bundle.RootPathsOverlap(r, or) {
					ps = append(ps, Problem{Kind: KindRoots, File: ".manifest",
						Message: fmt.Sprintf("root %q overlaps root %q of active bundle %q", r, or, other)})
				}
			}
		}
	}
	return ps
}

func rootsOf(b *bundle.Bundle) []string {
	if b.Manifest.Roots == nil {
		return []string{""}
	}
	return *b.Manifest.Roots
}

// compose adds the given bundles up to one policy; with none, the fallback serves.
func (m *Manager) compose(set map[string]*entry) (Policy, error) {
	if len(set) == 0 {
		return m.cfg.Fallback, nil
	}
	p := Policy{Modules: map[string]*ast.Module{}, Data: map[string]any{}}
	var revs []string
	for _, name := range sortedNames(set) {
		b := set[name].kept[0].bundle
		revs = append(revs, name+"@"+b.Manifest.Revision)
		for _, mod := range b.Modules {
			if !strings.HasSuffix(mod.Path, "_test.rego") {
				p.Modules[moduleName(name, mod.Path)] = mod.Parsed
			}
		}
		mergeData(p.Data, b.Data)
		if ep, ok := b.Manifest.Metadata[EntrypointKey].(string); ok {
			if p.Entrypoint != "" && p.Entrypoint != ep {
				return Policy{}, rejected(Problem{Kind: KindEntrypoint, File: ".manifest",
					Message: fmt.Sprintf("bundle %q names entry point %s, another active bundle names %s", name, ep, p.Entrypoint)})
			}
			p.Entrypoint = ep
		}
	}
	p.Revision = strings.Join(revs, ",")
	return p, nil
}

// EntrypointKey is the .manifest metadata key that names the decision rule, for example
// {"metadata": {"entrypoint": "data.acme.mcp.decision"}}.
const EntrypointKey = "entrypoint"

// moduleName keeps module names of different bundles apart and reads well in errors.
func moduleName(bundleName, path string) string {
	return bundleName + "/" + strings.TrimPrefix(path, "/")
}

// prepare compiles p through the activator, turning compile errors into problems.
func (m *Manager) prepare(ctx context.Context, p Policy) (func(), error) {
	activate, err := m.activator.Prepare(ctx, p)
	if err != nil {
		return nil, rejected(compileProblems(err)...)
	}
	return activate, nil
}

// mergeData copies src into dst. Bundle roots are disjoint, so objects merge and nothing is
// overwritten.
func mergeData(dst, src map[string]any) {
	for k, v := range src {
		sub, isObj := v.(map[string]any)
		have, haveObj := dst[k].(map[string]any)
		switch {
		case isObj && haveObj:
			mergeData(have, sub)
		case isObj:
			cp := make(map[string]any, len(sub))
			mergeData(cp, sub)
			dst[k] = cp
		default:
			dst[k] = v
		}
	}
}

func (m *Manager) status(e *entry) Status {
	head := e.kept[0]
	st := Status{Name: e.name, Roots: rootsOf(head.bundle), Revision: head.Revision, Previous: []Revision{}}
	for _, k := range e.kept[1:] {
		st.Previous = append(st.Previous, k.Revision)
	}
	return st
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	return names
}

// readProblems turns an error of OPA's bundle reader into problems, with locations when the
// error carries them.
func readProblems(err error, verifying bool) []Problem {
	var astErrs ast.Errors
	if errors.As(err, &astErrs) {
		ps := make([]Problem, 0, len(astErrs))
		for _, e := range astErrs {
			p := Problem{Kind: KindBundle, Message: e.Message}
			if e.Location != nil {
				p.File, p.Line = e.Location.File, e.Location.Row
			}
			ps = append(ps, p)
		}
		return ps
	}
	msg := err.Error()
	kind := KindBundle
	if verifying && (strings.Contains(msg, "signature") || strings.Contains(msg, "verif") || strings.Contains(msg, "digest") || strings.Contains(msg, "hash")) {
		kind = KindSignature
	}
	return []Problem{{Kind: kind, Message: msg}}
}

// compileProblems turns an activation error into problems, one per compiler error.
func compileProblems(err error) []Problem {
	var astErrs ast.Errors
	if errors.As(err, &astErrs) {
		ps := make([]Problem, 0, len(astErrs))
		for _, e := range astErrs {
			p := Problem{Kind: KindCompile, Message: e.Message}
			if e.Location != nil {
				p.File, p.Line = e.Location.File, e.Location.Row
			}
			ps = append(ps, p)
		}
		return ps
	}
	kind := KindCompile
	if strings.Contains(err.Error(), "entry point") {
		kind = KindEntrypoint
	}
	return []Problem{{Kind: kind, Message: err.Error()}}
}

// Restore activates the bundles found in the store, as they were before a restart. A stored
// bundle that is damaged, or no longer verifies, is reported and skipped; if the rest do not
// compile together, Restore fails and nothing is activated.
func (m *Manager) Restore(ctx context.Context) (problems []string, err error) {
	if m.cfg.Store == nil {
		return nil, nil
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	found, problems := m.cfg.Store.load()
	next := map[string]*entry{}
	for _, s := range found {
		e := &entry{name: s.name}
		for i, raw := range s.raws {
			l, err := m.read(raw, s.kept[i].PushedBy)
			if err != nil {
				problems = append(problems, fmt.Sprintf("bundle %q revision %q: %v", s.name, s.kept[i].Revision, err))
				if i == 0 {
					e.kept = nil
					break
				}
				continue
			}
			l.Revision = s.kept[i]
			e.kept = append(e.kept, l)
		}
		if len(e.kept) > 0 {
			next[s.name] = e
		}
	}
	for _, p := range problems {
		m.cfg.Logger.Error("stored bundle skipped", slog.String("problem", p))
	}
	if len(next) == 0 {
		return problems, nil
	}
	p, err := m.compose(next)
	if err != nil {
		return problems, err
	}
	activate, err := m.prepare(ctx, p)
	if err != nil {
		return problems, fmt.Errorf("stored bundles do not compile together: %w", err)
	}
	activate()
	m.active = next
	m.current = p.Revision
	for _, name := range sortedNames(next) {
		m.cfg.Logger.Info("bundle restored", slog.String("bundle", name), slog.String("revision", next[name].kept[0].Revision.Revision))
	}
	return problems, nil
}
