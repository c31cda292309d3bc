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
#   For input.tools (each {"name", "annotations", "definition_hash"}), in the same order, the
#   result and reasons data.mcp.decision gives action "tools/list" with operation.tool (and
#   operation.definition_hash) set to that tool: the reasons of the listing itself, evaluated
#   once, joined with the tool's own reasons. A tool whose result is "deny" is hidden.
# entrypoint: true
tool_verdicts := [tool_verdict(t) | some t in input.tools]

# tool_verdict is one tool's entry. A tool with no reasons of its own shares the listing's
# verdict, which OPA evaluates once per query.
tool_verdict(t) := listing_verdict if {
	tools.clear(t.name)
} else := v if {
	hash := tool_hash(t)
	v := combined(tools.tool_deny(t.name, hash), tools.tool_approve(t.name, hash))
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

# tool_hash is the definition hash the gateway announced for t, "" for none.
default tool_hash(_) := ""

tool_hash(t) := t.definition_hash if is_string(t.definition_hash)
