# METADATA
# title: Tool catalog, pinning and risk
# description: >-
#   A tool must be in its server's catalog to be called or shown. A tool whose definition no
#   longer matches the pinned hash (a "rug pull") is denied or needs approval, as
#   data.limits.pinning says. Risk comes from the catalog first; MCP annotations are hints from
#   the server and may only make a tool more restricted than the catalog says.
package mcp.tools

import data.mcp.catalog
import data.mcp.request

# tool_unknown: the tool called, or asked about in a filtered tools/list, is not in the
# server's catalog, so it is neither callable nor shown.
deny contains tool_unknown if {
	input.action == "tools/call"
	not catalog.tool
	catalog.server
}

deny contains tool_unknown if {
	input.action == "tools/list"
	request.tool != ""
	not catalog.tool
	catalog.server
}

tool_unknown := {
	"code": "tool_unknown",
	"message": sprintf("tool %q is not in the catalog of server %q", [request.tool, request.server_id]),
}

# tool_definition_changed: the server now describes the tool differently from the definition
# the catalog pinned (a "rug pull"): denied, or approved by a human when
# limits.pinning.definition_changed is "approval". A tools/list that FilterTools asks about
# one tool is checked too, so a changed tool is hidden when it would be denied.
deny contains definition_changed if {
	input.action in {"tools/call", "tools/list"}
	pinned := catalog.tool.definition_hash
	is_string(pinned)
	pinned != ""
	request.definition_hash != ""
	request.definition_hash != pinned
	not data.limits.pinning.definition_changed == "approval"
}

approve contains definition_changed if {
	data.limits.pinning.definition_changed == "approval"
	input.action in {"tools/call", "tools/list"}
	pinned := catalog.tool.definition_hash
	is_string(pinned)
	pinned != ""
	request.definition_hash != ""
	request.definition_hash != pinned
}

definition_changed := {
	"code": "tool_definition_changed",
	"message": sprintf(
		"tool %q of server %q has definition hash %q, not the pinned %q",
		[request.tool, request.server_id, request.definition_hash, catalog.pinned_hash],
	),
}

# tool_definition_unverified: the catalog pins the tool's definition and the gateway sent no
# hash to check it against: denied or approved when limits.pinning.definition_missing says
# "deny" or "approval", allowed otherwise.
deny contains definition_unverified if {
	data.limits.pinning.definition_missing == "deny"
	input.action in {"tools/call", "tools/list"}
	pinned := catalog.tool.definition_hash
	is_string(pinned)
	pinned != ""
	request.definition_hash == ""
}

approve contains definition_unverified if {
	data.limits.pinning.definition_missing == "approval"
	input.action in {"tools/call", "tools/list"}
	pinned := catalog.tool.definition_hash
	is_string(pinned)
	pinned != ""
	request.definition_hash == ""
}

definition_unverified := {
	"code": "tool_definition_unverified",
	"message": sprintf("tool %q of server %q is pinned and the request carries no definition hash", [request.tool, request.server_id]),
}

# destructive_tool: a human approves each destructive call. The catalog is authoritative
# about a tool's risk: a tool it marks destructive needs approval whatever its annotations say.
approve contains destructive_tool if {
	input.action == "tools/call"
	catalog.tool.destructive == true
}

# destructive_tool: a tool the catalog neither marks destructive nor clears (destructive
# false, or read_only true) is judged by MCP's defaults, under which destructiveHint is true
# unless said otherwise and matters only when readOnlyHint is not true. Annotations are the
# server's own hints: they can clear only a tool the catalog leaves unrated.
approve contains destructive_tool if {
	input.action == "tools/call"
	tool := catalog.tool
	not tool.destructive == false
	not tool.read_only == true
	not tool.destructive == true
	not input.operation.annotations.destructiveHint == false
	not hinted_read_only
}

destructive_tool := {
	"code": "destructive_tool",
	"message": sprintf("tool %q of server %q is destructive", [request.tool, request.server_id]),
}

# A read-only hint counts unless the catalog explicitly says the tool is not read-only.
hinted_read_only if {
	request.annotations.readOnlyHint == true
	not catalog.tool.read_only == false
}

# labels are the called tool's catalog labels, sorted. The engine records them in the session
# when the call is allowed, so later rules (flows.rego) can see, say, that private data was
# read.
default labels := []

labels := sort({l | some l in catalog.tool.labels; is_string(l)}) if input.action == "tools/call"
