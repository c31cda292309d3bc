# Package mcp, continued: the verdict on every tool of a tools/list in one evaluation.
#
# FilterTools asks which tools of one server a client may see. Asking data.mcp.decision once
# per tool would evaluate every rule once per tool, though only three checks depend on the
# tool. When the policy defines tool_verdicts next to its decision rule, the engine evaluates
# it once instead, with input.tools set to the tools and input.operation.tool empty.
package mcp

import data.mcp.tools

# METADATA
# title: tools/list verdicts
# description: >-
#   For the tools of input.tools (each {"name", "annotations", "definition_hash"}; names are
#   unique), the result and reasons data.mcp.decision gives action "tools/list" with
#   operation.tool (and operation.definition_hash) set to that tool, as
#   {"listing": D, "tools": {NAME: D}}: "tools" holds the tools whose decision differs from
#   the listing's own, "listing" is the decision for every other tool. A tool whose result
#   is "deny" is hidden.
# entrypoint: true
tool_verdicts := {"listing": listing_verdict, "tools": checked_verdicts}

# checked_verdicts holds the verdicts of the listed tools one of the tool checks may hold for.
# An unknown tool's checks do not depend on the definition hash; a pinned tool's do.
checked_verdicts[name] := combined(tools.tool_deny(name, ""), tools.tool_approve(name, "")) if {
	some name in tools.unknown_listed
}

checked_verdicts[name] := combined(tools.tool_deny(name, hash), tools.tool_approve(name, hash)) if {
	some name in tools.pinned_listed
	hash := announced_hash[name]
}

# announced_hash is the definition hash each listed tool was announced with, "" for none.
announced_hash[t.name] := tool_hash(object.get(t, "definition_hash", "")) if {
	some t in input.tools
}

combined(d, a) := listing_verdict if {
	count(d) == 0
	count(a) == 0
} else := {"result": "deny", "reasons": ordered(deny_reasons | d)} if {
	count(deny_reasons | d) > 0
} else := {"result": "require_approval", "reasons": ordered(approval_reasons | a)}

# listing_verdict is the verdict on the listing itself, with no tool named.
listing_verdict := {"result": "deny", "reasons": ordered(deny_reasons)} if {
	count(deny_reasons) > 0
} else := {"result": "require_approval", "reasons": ordered(approval_reasons)} if {
	count(approval_reasons) > 0
} else := {"result": "allow", "reasons": []}

# tool_hash is the definition hash as the checks take it: "" for none or one not a string.
default tool_hash(_) := ""

tool_hash(h) := h if is_string(h)
