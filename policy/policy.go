// Package policy holds Arbiter's default MCP governance policy: the Rego modules of package
// mcp (entry point data.mcp.decision), their unit tests, and data.json, an example server
// catalog with session and approval limits. The service runs on it until an operator pushes
// a bundle of its own.
package policy

import (
	"embed"
	"io/fs"
)

// tree holds the policy files at its root, laid out like an OPA bundle directory. The Rego
// unit tests are embedded too, so a loader can run them before activating the policy, as it
// does for a pushed bundle. When the policy grows sub-packages in directories, name those
// directories here as well.
//
//go:embed *.rego *.json
var tree embed.FS

// FS returns the embedded policy: *.rego and data.json at the top of the tree, ready for
// OPA's loader or bundle reader.
func FS() fs.FS {
	return tree
}
