package engine

import (
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// ManifestEntrypointKey is the .manifest metadata key naming a bundle's entry point, for
// example {"metadata": {"entrypoint": "data.acme.mcp.decision"}}.
const ManifestEntrypointKey = "entrypoint"

// PolicyFromBundle turns a bundle read by OPA's bundle reader into a policy named name. The
// revision is "name@" plus the manifest's revision; test modules (*_test.rego) are left out of
// the decision policy.
func PolicyFromBundle(name string, b *bundle.Bundle) Policy {
	p := Policy{
		Revision: name + "@" + b.Manifest.Revision,
		Modules:  make(map[string]*ast.Module, len(b.Modules)),
		Data:     b.Data,
	}
	for _, m := range b.Modules {
		if strings.HasSuffix(m.Path, "_test.rego") {
			continue
		}
		p.Modules[name+"/"+strings.TrimPrefix(m.Path, "/")] = m.Parsed
	}
	if ep, ok := b.Manifest.Metadata[ManifestEntrypointKey].(string); ok {
		p.Entrypoint = ep
	}
	return p
}
