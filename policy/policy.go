// Package policy holds Arbiter's default MCP governance policy: the Rego modules of package
// mcp (entry point data.mcp.decision), their unit tests, and data.json, an example server
// catalog with session and approval limits. The service runs on it until an operator pushes
// a bundle of its own.
package policy

import (
	"embed"
	"io/fs"
)

// tree holds the policy files laid out like an OPA bundle directory: the entry point and
// data.json at its root, the helper packages in lib/ and the rule packages in rules/. The Rego
// unit tests are embedded too, so a loader can run them before activating the policy, as it
// does for a pushed bundle. examples/ is test data, not policy, and stays out; so do
// README.md and the Go files. A new directory of Rego must be named here as well.
//
//go:embed *.rego data.json lib/*.rego rules/*.rego
var tree embed.FS

// FS returns the embedded policy: *.rego and data.json at the top of the tree and the Rego
// of lib/ and rules/, ready for OPA's loader or bundle reader.
func FS() fs.FS {
	return tree
}
