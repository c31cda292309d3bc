package bundles_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/keys"

	"github.com/arbiter-mcp/arbiter/bundles"
	"github.com/arbiter-mcp/arbiter/engine"
)

// activator is the engine, adapted as the service's composition root adapts it.
type activator struct{ e *engine.Engine }

func (a activator) Prepare(ctx context.Context, p bundles.Policy) (func(), error) {
	pq, err := a.e.Prepare(ctx, engine.Policy(p))
	if err != nil {
		return nil, err
	}
	return func() { a.e.Swap(pq) }, nil
}

const fallbackSrc = "package mcp\n\ndecision := {\"result\": \"deny\", \"reasons\": [{\"code\": \"fallback\"}]}\n"

// policySrc allows servers listed in data.catalog.servers and names itself in a reason.
func policySrc(tag string) string {
	return `package mcp

decision := {"result": "allow", "reasons": [{"code": "` + tag + `", "message": "m"}]} if {
	data.catalog.servers[input.server.id]
} else := {"result": "deny", "reasons": [{"code": "server_unknown", "message": "m"}]}
`
}

func newEngine(t *testing.T) *engine.Engine {
	t.Helper()
	e, err := engine.New(context.Background(), engine.Config{}, engine.Policy{
		Revision: "default@test",
		Modules:  map[string]*ast.Module{"fallback.rego": ast.MustParseModule(fallbackSrc)},
	})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func newManager(t *testing.T, e *engine.Engine, cfg bundles.Config) *bundles.Manager {
	t.Helper()
	cfg.Fallback = bundles.Policy{Revision: "default@test", Modules: map[string]*ast.Module{"fallback.rego": ast.MustParseModule(fallbackSrc)}}
	if cfg.Limits.FileBytes == 0 {
		cfg.Limits = bundles.Limits{CompressedBytes: 1 << 20, UnpackedBytes: 2 << 20, FileBytes: 256 << 10}
	}
	return bundles.NewManager(cfg, activator{e})
}

// build makes a bundle the way `opa build` does, with OPA's loader and writer (through
// bundles.Build), from files written to a directory; opts may sign it.
func build(t *testing.T, files map[string]string, opts bundles.BuildOptions) []byte {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var buf bytes.Buffer
	if err := bundles.Build(dir, opts, &buf); err != nil {
		t.Fatalf("build bundle: %v", err)
	}
	return buf.Bytes()
}

func policyBundle(t *testing.T, rev string) []byte {
	t.Helper()
	return build(t, map[string]string{
		".manifest":            `{"roots": ["mcp", "mcp_test"]}`,
		"mcp/policy.rego":      policySrc("policy-" + rev),
		"mcp/policy_test.rego": "package mcp_test\n\nimport data.mcp\n\ntest_unknown_denied if mcp.decision.result == \"deny\" with input as {\"server\": {\"id\": \"nope\"}}\n",
	}, bundles.BuildOptions{Revision: rev})
}

func catalogBundle(t *testing.T, rev string, servers ...string) []byte {
	t.Helper()
	cat := map[string]any{}
	for _, s := range servers {
		cat[s] = map[string]any{"owner": "team"}
	}
	raw, _ := json.Marshal(map[string]any{"servers": cat})
	return build(t, map[string]string{".manifest": `{"roots": ["catalog"]}`, "catalog/data.json": string(raw)}, bundles.BuildOptions{Revision: rev})
}

// policyAndCatalog is an active bundle with roots ["catalog"] and a policy in package
// catalog.mcp (named by the manifest's entry point), so a pushed "policy" bundle with roots
// ["mcp"] is checked against it.
func policyAndCatalog(t *testing.T) []byte {
	t.Helper()
	return build(t, map[string]string{
		".manifest":              `{"roots": ["catalog"], "metadata": {"entrypoint": "data.catalog.mcp.decision"}}`,
		"catalog/data.json":      `{"servers": {"github": {"owner": "team"}}}`,
		"catalog/mcp/entry.rego": "package catalog.mcp\n\ndecision := {\"result\": \"allow\"}\n",
	}, bundles.BuildOptions{Revision: "c1"})
}

func decide(t *testing.T, e *engine.Engine, server string) engine.Decision {
	t.Helper()
	d, err := e.Decide(context.Background(), &engine.Request{Client: engine.Client{ID: "c"}, Server: engine.Server{ID: server}, Operation: engine.Operation{Method: "tools/call", Tool: "x"}})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestPushRollbackDeleteAndTwoBundles(t *testing.T) {
	e := newEngine(t)
	m := newManager(t, e, bundles.Config{})
	ctx := context.Background()

	st, err := m.Push(ctx, "policy", policyBundle(t, "p1"), "alice")
	if err != nil {
		t.Fatal(err)
	}
	if st.Revision.Revision != "p1" || !strings.HasPrefix(st.Digest, "sha256:") || st.PushedBy != "alice" || st.Roots[0] != "mcp" {
		t.Fatalf("status after push: %+v", st)
	}
	if d := decide(t, e, "github"); d.Outcome != engine.Deny || d.PolicyRevision != "policy@p1" {
		t.Fatalf("no catalog yet: %+v", d)
	}
	if _, err := m.Push(ctx, "catalog", catalogBundle(t, "c1", "github"), "platform"); err != nil {
		t.Fatal(err)
	}
	d := decide(t, e, "github")
	if d.Outcome != engine.Allow || d.PolicyRevision != "catalog@c1,policy@p1" || d.Reasons[0].Code != "policy-p1" {
		t.Fatalf("two bundles with disjoint roots should serve together: %+v", d)
	}

	if _, err := m.Push(ctx, "policy", policyBundle(t, "p2"), "alice"); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, e, "github"); d.Reasons[0].Code != "policy-p2" {
		t.Fatalf("new revision should decide: %+v", d)
	}
	st, err = m.Rollback(ctx, "policy", "", "bob")
	if err != nil {
		t.Fatal(err)
	}
	if d := decide(t, e, "github"); d.Reasons[0].Code != "policy-p1" || st.Revision.Revision != "p1" || st.Previous[0].Revision != "p2" {
		t.Fatalf("rollback should bring p1 back: %+v %+v", d, st)
	}
	if _, err := m.Rollback(ctx, "policy", "p2", "bob"); err != nil {
		t.Fatalf("rollback to a named revision: %v", err)
	}
	if _, err := m.Rollback(ctx, "policy", "p9", "bob"); err != bundles.ErrNoRevision {
		t.Fatalf("rollback to an unknown revision: %v", err)
	}

	// Deleting the policy bundle would leave data without an entry point: refused.
	if _, err := m.Delete(ctx, "policy"); err == nil || !strings.Contains(err.Error(), "entry point") {
		t.Fatalf("deleting the only policy: %v", err)
	}
	if _, err := m.Delete(ctx, "catalog"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Delete(ctx, "policy"); err != nil {
		t.Fatal(err)
	}
	if d := decide(t, e, "github"); d.PolicyRevision != "default@test" {
		t.Fatalf("with no bundle left the default serves: %+v", d)
	}
	if _, err := m.Delete(ctx, "policy"); err != bundles.ErrNotFound {
		t.Fatalf("deleting twice: %v", err)
	}
}

func TestPersistenceAndRestore(t *testing.T) {
	dir := t.TempDir()
	store, err := bundles.NewDiskStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	m := newManager(t, newEngine(t), bundles.Config{Store: store})
	for _, rev := range []string{"p1", "p2", "p3"} {
		if _, err := m.Push(ctx, "policy", policyBundle(t, rev), "alice"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Push(ctx, "catalog", catalogBundle(t, "c1", "github"), "platform"); err != nil {
		t.Fatal(err)
	}

	// A restart: a new engine and manager over the same directory.
	e2 := newEngine(t)
	m2 := newManager(t, e2, bundles.Config{Store: store})
	problems, err := m2.Restore(ctx)
	if err != nil || len(problems) > 0 {
		t.Fatalf("restore: %v %v", problems, err)
	}
	if d := decide(t, e2, "github"); d.PolicyRevision != "catalog@c1,policy@p3" || d.Outcome != engine.Allow {
		t.Fatalf("after restart: %+v", d)
	}
	st, _ := m2.Get("policy")
	if len(st.Previous) != 2 || st.Previous[0].Revision != "p2" || st.PushedBy != "alice" {
		t.Fatalf("restored history: %+v", st)
	}
	if _, err := m2.Rollback(ctx, "policy", "", "bob"); err != nil {
		t.Fatalf("rollback after restart: %v", err)
	}

	// A corrupt stored bundle is reported and skipped; the others still load.
	entries, _ := filepath.Glob(filepath.Join(dir, "catalog", "*.tar.gz"))
	if len(entries) != 1 {
		t.Fatalf("catalog archives: %v", entries)
	}
	if err := os.WriteFile(entries[0], []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	e3 := newEngine(t)
	problems, err = newManager(t, e3, bundles.Config{Store: store}).Restore(ctx)
	if err != nil || len(problems) != 1 || !strings.Contains(problems[0], "catalog") {
		t.Fatalf("restore with a corrupt bundle: %v %v", problems, err)
	}
	if d := decide(t, e3, "github"); d.PolicyRevision != "policy@p2" {
		t.Fatalf("the sound bundle should serve alone: %+v", d)
	}
}

// rawTarGz writes entries as given, for archives no honest tool would make.
func rawTarGz(t *testing.T, entries ...*tar.Header) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, h := range entries {
		body := make([]byte, h.Size)
		if h.Typeflag == tar.TypeReg {
			for i := range body {
				body[i] = 'x'
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(body)
		}
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

func rsaKeys(t *testing.T) (privFile, pubFile string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	privFile, pubFile = filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)}), 0o600)
	os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
	return privFile, pubFile
}

func verification(t *testing.T, pubFile string) *bundle.VerificationConfig {
	t.Helper()
	key, err := keys.NewKeyConfig(pubFile, "RS256", "")
	if err != nil {
		t.Fatal(err)
	}
	return bundle.NewVerificationConfig(map[string]*bundle.KeyConfig{"default": key}, "default", "", nil)
}

// tamper rewrites one file of a gzip'd tarball, keeping everything else (and the signature).
func tamper(t *testing.T, raw []byte, file, content string) []byte {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	tw := tar.NewWriter(zw)
	found := false
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		body := new(bytes.Buffer)
		body.ReadFrom(tr)
		if strings.TrimPrefix(h.Name, "/") == file {
			body = bytes.NewBufferString(content)
			h.Size = int64(body.Len())
			found = true
		}
		tw.WriteHeader(h)
		tw.Write(body.Bytes())
	}
	tw.Close()
	zw.Close()
	if !found {
		t.Fatalf("no %s in the bundle", file)
	}
	return out.Bytes()
}

func TestBadBundleCorpus(t *testing.T) {
	priv, pub := rsaKeys(t)
	otherPriv, _ := rsaKeys(t)
	signed := func(files map[string]string, key string) []byte {
		return build(t, files, bundles.BuildOptions{Revision: "s1", SigningKey: key})
	}
	goodFiles := map[string]string{".manifest": `{"roots": ["mcp"]}`, "mcp/policy.rego": policySrc("signed")}
	var bomb bytes.Buffer
	{
		zw := gzip.NewWriter(&bomb)
		tw := tar.NewWriter(zw)
		tw.WriteHeader(&tar.Header{Name: "data.json", Typeflag: tar.TypeReg, Size: 3 << 20, Mode: 0o644})
		tw.Write(make([]byte, 3<<20))
		tw.Close()
		zw.Close()
	}
	full := policyBundle(t, "x")

	cases := []struct {
		name     string
		body     []byte
		verify   bool
		kind     string
		contains string
	}{
		{"not gzip", []byte("this is not a bundle"), false, bundles.KindArchive, "not a gzip"},
		{"truncated gzip", full[:len(full)/2], false, bundles.KindArchive, "truncated"},
		{"decompression bomb", bomb.Bytes(), false, bundles.KindSize, "larger than"},
		{"path traversal", rawTarGz(t, &tar.Header{Name: "../escape.rego", Typeflag: tar.TypeReg, Size: 4, Mode: 0o644}), false, bundles.KindArchive, "climbs out"},
		{"absolute path", rawTarGz(t, &tar.Header{Name: "C:/Windows/policy.rego", Typeflag: tar.TypeReg, Size: 4, Mode: 0o644}), false, bundles.KindArchive, "absolute path"},
		{"UNC path", rawTarGz(t, &tar.Header{Name: `\\server\share\policy.rego`, Typeflag: tar.TypeReg, Size: 4, Mode: 0o644}), false, bundles.KindArchive, "absolute path"},
		{"symlink", rawTarGz(t, &tar.Header{Name: "mcp/link.rego", Typeflag: tar.TypeSymlink, Linkname: "/etc/passwd"}), false, bundles.KindArchive, "links are not allowed"},
		{"hardlink", rawTarGz(t, &tar.Header{Name: "mcp/link.rego", Typeflag: tar.TypeLink, Linkname: "mcp/policy.rego"}), false, bundles.KindArchive, "links are not allowed"},
		{"oversized file", rawTarGz(t, &tar.Header{Name: "data.json", Typeflag: tar.TypeReg, Size: 300 << 10, Mode: 0o644}), false, bundles.KindSize, "larger than"},
		{"invalid rego", rawTarGzFiles(t, map[string]string{".manifest": `{"revision": "r", "roots": ["mcp"]}`, "mcp/p.rego": "package mcp\n\ndecision := {\n"}), false, bundles.KindBundle, "/mcp/p.rego"},
		{"rego v0 syntax", rawTarGzFiles(t, map[string]string{".manifest": `{"revision": "r", "roots": ["mcp"]}`, "mcp/p.rego": "package mcp\n\ndecision = {\"result\": \"allow\"} { true }\n"}), false, bundles.KindBundle, "/mcp/p.rego"},
		{"missing entry point", build(t, map[string]string{".manifest": `{"roots": ["other"]}`, "other/p.rego": "package other\n\nx := 1\n"}, bundles.BuildOptions{Revision: "r"}), false, bundles.KindEntrypoint, "data.mcp.decision is not defined"},
		{"wrong result shape", build(t, map[string]string{".manifest": `{"roots": ["mcp"]}`, "mcp/p.rego": "package mcp\n\ndecision := \"allow\"\n"}, bundles.BuildOptions{Revision: "r"}), false, bundles.KindEntrypoint, "malformed policy result"},
		{"failing bundle test", build(t, map[string]string{".manifest": `{"roots": ["mcp", "mcp_test"]}`, "mcp/p.rego": policySrc("t"),
			"mcp/p_test.rego": "package mcp_test\n\nimport data.mcp\n\ntest_everything_allowed if mcp.decision.result == \"allow\" with input as {}\n"}, bundles.BuildOptions{Revision: "r"}), false, bundles.KindTest, "test_everything_allowed failed"},
		{"overlapping roots", build(t, map[string]string{".manifest": `{"roots": ["catalog/servers"]}`, "catalog/servers/data.json": `{"x": {}}`}, bundles.BuildOptions{Revision: "r"}), false, bundles.KindRoots, "overlaps root \"catalog\""},
		{"data outside roots", rawTarGzFiles(t, map[string]string{".manifest": `{"revision": "r", "roots": ["mcp"]}`, "mcp/p.rego": policySrc("d"), "limits/data.json": `{"max": 1}`}), false, bundles.KindBundle, "limits"},
		{"bad json data", rawTarGzFiles(t, map[string]string{".manifest": `{"revision": "r", "roots": ["mcp"]}`, "mcp/p.rego": policySrc("j"), "mcp/data.json": `{"a": `}), false, bundles.KindBundle, "data.json"},
		{"missing manifest revision", rawTarGzFiles(t, map[string]string{".manifest": `{"roots": ["mcp"]}`, "mcp/p.rego": policySrc("n")}), false, bundles.KindBundle, "no revision"},
		{"overlapping roots in one manifest", rawTarGzFiles(t, map[string]string{".manifest": `{"revision": "r", "roots": ["mcp", "mcp/x"]}`, "mcp/p.rego": policySrc("o")}), false, bundles.KindBundle, "overlapped roots"},
		{"unsigned when signatures are required", build(t, goodFiles, bundles.BuildOptions{Revision: "u"}), true, bundles.KindSignature, ".signatures.json"},
		{"signed with the wrong key", signed(goodFiles, otherPriv), true, bundles.KindSignature, "verif"},
		{"tampered after signing", tamper(t, signed(goodFiles, priv), "mcp/policy.rego", "package mcp\n\ndecision := {\"result\": \"allow\"}\n"), true, bundles.KindSignature, "digest"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t)
			cfg := bundles.Config{}
			if tc.verify {
				cfg.Verification = verification(t, pub)
			}
			m := newManager(t, e, cfg)
			ctx := context.Background()
			if tc.kind == bundles.KindRoots {
				if _, err := m.Push(ctx, "catalog", policyAndCatalog(t), "platform"); err != nil {
					t.Fatal(err)
				}
			}
			before, engineBefore := m.Revision(), e.Revision()
			_, err := m.Push(ctx, "policy", tc.body, "mallory")
			rej, ok := err.(*bundles.RejectedError)
			if !ok {
				t.Fatalf("push error %v (%T), want a rejection", err, err)
			}
			var hit bool
			for _, p := range rej.Problems {
				if p.Kind == tc.kind && strings.Contains(p.Message+" "+p.File, tc.contains) {
					hit = true
				}
			}
			if !hit {
				t.Fatalf("problems %+v lack kind %s mentioning %q", rej.Problems, tc.kind, tc.contains)
			}
			if m.Revision() != before || e.Revision() != engineBefore {
				t.Fatalf("a rejected bundle changed what serves: %s -> %s", before, e.Revision())
			}
			if _, err := m.Get("policy"); err != bundles.ErrNotFound {
				t.Fatal("a rejected bundle must not be listed")
			}
		})
	}

	// The same policy signed with the right key is accepted.
	e := newEngine(t)
	m := newManager(t, e, bundles.Config{Verification: verification(t, pub)})
	st, err := m.Push(context.Background(), "policy", signed(goodFiles, priv), "alice")
	if err != nil || !st.Signed {
		t.Fatalf("a correctly signed bundle: %+v %v", st, err)
	}
}

// rawTarGzFiles writes a bundle tarball directly, for content OPA's own tools refuse to write.
func rawTarGzFiles(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for name, content := range files {
		tw.WriteHeader(&tar.Header{Name: "/" + name, Typeflag: tar.TypeReg, Size: int64(len(content)), Mode: 0o644})
		tw.Write([]byte(content))
	}
	tw.Close()
	zw.Close()
	return buf.Bytes()
}

// TestOPAWriterAndSigner proves compatibility with bundles made by OPA's own Go code, the
// code behind `opa build` and `opa sign`, without going through Arbiter's builder.
func TestOPAWriterAndSigner(t *testing.T) {
	priv, pub := rsaKeys(t)
	src := policySrc("opa")
	roots := []string{"mcp"}
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: "opa-1", Roots: &roots},
		Data:     map[string]any{},
		Modules:  []bundle.ModuleFile{{URL: "/mcp/policy.rego", Path: "/mcp/policy.rego", Raw: []byte(src), Parsed: ast.MustParseModule(src)}},
	}
	if err := b.GenerateSignature(bundle.NewSigningConfig(priv, "RS256", ""), "default", false); err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	e := newEngine(t)
	m := newManager(t, e, bundles.Config{Verification: verification(t, pub)})
	if _, err := m.Push(context.Background(), "policy", buf.Bytes(), "ci"); err != nil {
		t.Fatalf("a bundle written and signed by OPA's code: %v", err)
	}
	if e.Revision() != "policy@opa-1" {
		t.Fatalf("revision %s", e.Revision())
	}
}

type tokens map[string]bool // token -> admin

func (tk tokens) Authorize(header string) (string, bool, bool) {
	tok, _ := strings.CutPrefix(header, "Bearer ")
	admin, ok := tk[tok]
	return tok, admin, ok
}

func TestHTTPAPI(t *testing.T) {
	e := newEngine(t)
	m := newManager(t, e, bundles.Config{})
	srv := httptest.NewServer(bundles.Handler(m, tokens{"admin-token": true, "gateway-token": false}))
	defer srv.Close()
	do := func(method, path, token string, body []byte) (int, map[string]any) {
		req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	good := policyBundle(t, "h1")
	if code, _ := do("PUT", "/v1/bundles/policy", "", good); code != http.StatusUnauthorized {
		t.Fatalf("no token: %d", code)
	}
	if code, _ := do("PUT", "/v1/bundles/policy", "gateway-token", good); code != http.StatusForbidden {
		t.Fatalf("gateway token: %d", code)
	}
	if e.Revision() != "default@test" {
		t.Fatal("refused pushes changed the policy")
	}
	code, out := do("PUT", "/v1/bundles/policy", "admin-token", good)
	if code != http.StatusOK || out["policy_revision"] != "policy@h1" || out["bundle"].(map[string]any)["digest"] == "" {
		t.Fatalf("push: %d %v", code, out)
	}
	code, out = do("PUT", "/v1/bundles/policy", "admin-token", []byte("junk"))
	if code != http.StatusBadRequest || len(out["problems"].([]any)) == 0 {
		t.Fatalf("bad push: %d %v", code, out)
	}
	if code, _ := do("PUT", "/v1/bundles/policy", "admin-token", make([]byte, 2<<20)); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized push: %d", code)
	}
	if code, _ := do("PUT", "/v1/bundles/Bad%20Name", "admin-token", good); code != http.StatusBadRequest {
		t.Fatalf("bad name: %d", code)
	}
	if code, out := do("GET", "/v1/bundles", "admin-token", nil); code != http.StatusOK || len(out["bundles"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, out)
	}
	if code, _ := do("GET", "/v1/bundles/nope", "admin-token", nil); code != http.StatusNotFound {
		t.Fatalf("get unknown: %d", code)
	}
	if code, _ := do("POST", "/v1/bundles/policy/rollback", "admin-token", nil); code != http.StatusNotFound {
		t.Fatalf("rollback with nothing kept: %d", code)
	}
	if code, _ := do("DELETE", "/v1/bundles/policy", "admin-token", nil); code != http.StatusOK || e.Revision() != "default@test" {
		t.Fatalf("delete: %d %s", code, e.Revision())
	}
}

// TestConcurrentPushesUnderLoad: 20 pushes, some concurrent, while decisions flow; every
// decision succeeds and ends on a revision that was pushed.
func TestConcurrentPushesUnderLoad(t *testing.T) {
	e := newEngine(t)
	m := newManager(t, e, bundles.Config{})
	ctx := context.Background()
	if _, err := m.Push(ctx, "policy", policyBundle(t, "r0"), "p"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Push(ctx, "catalog", catalogBundle(t, "c1", "github"), "p"); err != nil {
		t.Fatal(err)
	}
	bodies := make([][]byte, 20)
	for i := range bodies {
		bodies[i] = policyBundle(t, "r"+string(rune('a'+i)))
	}
	stop := make(chan struct{})
	var decided, failed atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				d, err := e.Decide(ctx, &engine.Request{Client: engine.Client{ID: "c"}, Server: engine.Server{ID: "github"}, Operation: engine.Operation{Method: "tools/call", Tool: "x"}})
				if err != nil || (d.Outcome != engine.Allow && d.PolicyRevision != "catalog@c1") {
					failed.Add(1)
				}
				decided.Add(1)
			}
		})
	}
	var pushes sync.WaitGroup
	for i := range bodies {
		pushes.Go(func() {
			if _, err := m.Push(ctx, "policy", bodies[i], "p"); err != nil {
				t.Errorf("push %d: %v", i, err)
			}
		})
	}
	pushes.Wait()
	close(stop)
	wg.Wait()
	if failed.Load() != 0 || decided.Load() == 0 {
		t.Fatalf("%d of %d decisions failed during pushes", failed.Load(), decided.Load())
	}
	st, _ := m.Get("policy")
	if len(st.Previous) != 4 {
		t.Fatalf("kept %d previous revisions, want the default 4 (5 in all)", len(st.Previous))
	}
}
