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

# The three checks on one tool below are functions of the tool's name and of the definition
# hash the request announces ("" for none): the rules ask them about the tool in the request,
# and data.mcp.tool_verdicts asks them about every tool of a tools/list in one evaluation
# (through tool_deny and tool_approve). data.limits.pinning decides whether a changed or an
# unverified definition is denied or approved.
deny contains r if {
	input.action == "tools/call"
	not catalog.tool
	r := unknown(request.tool)
}

# A tools/list names a tool when FilterTools asks about one tool, so a tool that would be
# denied is hidden; the listing itself (no tool) is not checked here.
deny contains r if {
	input.action == "tools/list"
	request.tool != ""
	not catalog.tool
	r := unknown(request.tool)
}

deny contains r if {
	entry := pinned_tool
	about_a_tool
	not changed_needs_approval
	r := changed(request.tool, entry, request.definition_hash)
}

approve contains r if {
	entry := pinned_tool
	changed_needs_approval
	about_a_tool
	r := changed(request.tool, entry, request.definition_hash)
}

deny contains r if {
	entry := pinned_tool
	data.limits.pinning.definition_missing == "deny"
	about_a_tool
	r := unverified(request.tool, entry, request.definition_hash)
}

approve contains r if {
	entry := pinned_tool
	data.limits.pinning.definition_missing == "approval"
	about_a_tool
	r := unverified(request.tool, entry, request.definition_hash)
}

# pinned_tool is the catalog entry of the tool in the request when it pins a definition; most
# tools pin none, and the four rules above stop at it.
pinned_tool := catalog.tool if pins(catalog.tool)

about_a_tool if input.action == "tools/call"

about_a_tool if {
	input.action == "tools/list"
	request.tool != ""
}

changed_needs_approval if data.limits.pinning.definition_changed == "approval"

# tool_deny(name, hash) is the set of deny reasons the rules above give tool name announced
# with hash; tool_approve(name, hash) the set of approval reasons.
tool_deny(name, hash) := {r | not catalog.tool_named(name); r := unknown(name)} | {r |
	not changed_needs_approval
	r := changed(name, catalog.tool_named(name), hash)
} | {r |
	data.limits.pinning.definition_missing == "deny"
	r := unverified(name, catalog.tool_named(name), hash)
}

tool_approve(name, hash) := {r |
	changed_needs_approval
	r := changed(name, catalog.tool_named(name), hash)
} | {r |
	data.limits.pinning.definition_missing == "approval"
	r := unverified(name, catalog.tool_named(name), hash)
}

# For a tools/list about many tools at once (input.tools, see data.mcp.tool_verdicts): the
# listed tools the three checks may hold for. unknown_listed are those the catalog does not
# list (the server being in the catalog); pinned_listed those it pins a definition for. For
# any other listed tool none of the checks can hold, whatever hash is announced. Computed
# with look-ups and set operations, a few per tool.
listed_names := {t.name | some t in input.tools}

known_listed := {name |
	some name in listed_names
	is_object(catalog.server.tools[name])
}

default unknown_listed := set()

unknown_listed := listed_names - known_listed if catalog.server

pinned_listed := {name |
	some name in known_listed
	hash := catalog.server.tools[name].definition_hash
	is_string(hash)
	hash != ""
}

# tool_unknown: the tool called, or asked about in a filtered tools/list, is not in the
# server's catalog (the rules check that), so it is neither callable nor shown.
unknown(name) := {
	"code": "tool_unknown",
	"message": sprintf("tool %q is not in the catalog of server %q", [name, request.server_id]),
} if catalog.server

# tool_definition_changed: the server now describes the tool differently from the definition
# its catalog entry pinned (a "rug pull"): denied, or approved by a human when
# limits.pinning.definition_changed is "approval".
changed(name, entry, hash) := {
	"code": "tool_definition_changed",
	"message": sprintf("tool %q of server %q has definition hash %q, not the pinned %q", [name, request.server_id, hash, entry.definition_hash]),
} if {
	pins(entry)
	hash != ""
	hash != entry.definition_hash
}

# tool_definition_unverified: the catalog pins the tool's definition and the gateway sent no
# hash to check it against: denied or approved when limits.pinning.definition_missing says
# "deny" or "approval", allowed otherwise.
unverified(name, entry, hash) := {
	"code": "tool_definition_unverified",
	"message": sprintf("tool %q of server %q is pinned and the request carries no definition hash", [name, request.server_id]),
} if {
	pins(entry)
	hash == ""
}

pins(entry) if {
	is_string(entry.definition_hash)
	entry.definition_hash != ""
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
