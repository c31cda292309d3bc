package bundles

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/loader"
)

// BuildOptions tune Build.
type BuildOptions struct {
	// Revision is written to the manifest (required unless the directory's .manifest has one).
	Revision string
	// SigningKey is a PEM private key (RS256, ES256) or an HMAC secret (HS256), or a file
	// holding one; when set, the bundle is signed (.signatures.json).
	SigningKey string
	// SigningAlg is the JWS algorithm (default RS256).
	SigningAlg string
	// KeyID names the verification key the service should use (default "default").
	KeyID string
}

// Build reads dir with OPA's loader as a bundle (its .manifest, data files and *.rego,
// tests included) and writes it as a gzip'd tarball, signed when a key is given, exactly as
// `opa build` and `opa sign` would lay it out.
func Build(dir string, opts BuildOptions, w io.Writer) error {
	// Read through an fs.FS rooted at dir, so paths inside the bundle are relative to it
	// (/mcp/policy.rego), not to the machine that built it.
	b, err := loader.NewFileLoader().WithFS(os.DirFS(dir)).WithRegoVersion(ast.RegoV1).AsBundle(".")
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	if opts.Revision != "" {
		b.Manifest.Revision = opts.Revision
	}
	if b.Manifest.Revision == "" {
		return fmt.Errorf("no revision: pass --revision or set one in %s/.manifest", dir)
	}
	if opts.SigningKey != "" {
		alg := opts.SigningAlg
		if alg == "" {
			alg = "RS256"
		}
		keyID := opts.KeyID
		if keyID == "" {
			keyID = "default"
		}
		if err := b.GenerateSignature(bundle.NewSigningConfig(opts.SigningKey, alg, ""), keyID, false); err != nil {
			return fmt.Errorf("sign: %w", err)
		}
	}
	if err := bundle.NewWriter(w).Write(*b); err != nil {
		return fmt.Errorf("write bundle: %w", err)
	}
	return nil
}

// Info describes a bundle file.
type Info struct {
	Revision   string         `json:"revision"`
	Roots      []string       `json:"roots"`
	Metadata   map[string]any `json:"metadata,omitempty"`
	Digest     string         `json:"digest"`
	Size       int64          `json:"size"`
	Signed     bool           `json:"signed"`
	Modules    []string       `json:"modules"`
	Tests      int            `json:"test_modules"`
	DataRoots  []string       `json:"data"`
	Unverified bool           `json:"signature_not_verified"`
}

// Inspect vets and reads a bundle file without activating it; the signature is checked
// only when verification is given.
func Inspect(raw []byte, verification *bundle.VerificationConfig) (Info, error) {
	var l Limits
	l.setDefaults()
	if ps := vetArchive(raw, l); len(ps) > 0 {
		return Info{}, rejected(ps...)
	}
	r := bundle.NewReader(bytes.NewReader(raw)).WithRegoVersion(ast.RegoV1).WithSizeLimitBytes(l.FileBytes)
	if verification != nil {
		r = r.WithBundleVerificationConfig(verification)
	} else {
		r = r.WithSkipBundleVerification(true)
	}
	b, err := r.Read()
	if err != nil {
		return Info{}, rejected(readProblems(err, verification != nil)...)
	}
	info := Info{
		Revision:   b.Manifest.Revision,
		Roots:      rootsOf(&b),
		Metadata:   b.Manifest.Metadata,
		Digest:     digestOf(raw),
		Size:       int64(len(raw)),
		Signed:     len(b.Signatures.Signatures) > 0,
		Unverified: verification == nil,
		Modules:    []string{},
		DataRoots:  []string{},
	}
	for _, m := range b.Modules {
		info.Modules = append(info.Modules, m.Path)
		if strings.HasSuffix(m.Path, "_test.rego") {
			info.Tests++
		}
	}
	for k := range b.Data {
		info.DataRoots = append(info.DataRoots, k)
	}
	slices.Sort(info.DataRoots)
	return info, nil
}
