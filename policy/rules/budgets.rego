# METADATA
# title: Session budgets
# description: >-
#   How much one session may do, from data.limits.session: tool calls in total (max_calls),
#   calls of one tool (max_calls_per_tool, or the tool's own max_calls_per_session in the
#   catalog, which wins), and how many distinct servers it may reach (max_servers). The engine
#   counts allowed calls in the session under a lock, so a budget holds exactly under
#   concurrent calls. Outside a session no budget applies. Each rule reads its limit first:
#   a limit data does not set costs a decision next to nothing.
package mcp.budgets

import data.mcp.catalog
import data.mcp.request

# budget_exhausted: the session has made as many tool calls as the limits allow.
deny contains {
	"code": "budget_exhausted",
	"message": sprintf("session has used %v of its %v tool calls", [total, max_calls]),
} if {
	input.action == "tools/call"
	limits := data.limits.session
	max_calls := limits.max_calls
	is_number(max_calls)
	total := input.session.calls.total
	is_number(total)
	total >= max_calls
}

# tool_budget_exhausted: the session has called this tool as often as the catalog allows.
deny contains tool_budget_exhausted(limit) if {
	input.action == "tools/call"
	limit := catalog.tool.max_calls_per_session
	is_number(limit)
	limit >= 0
	tool_calls >= limit
}

# tool_budget_exhausted: ... or as often as the default for every tool allows.
deny contains tool_budget_exhausted(limit) if {
	input.action == "tools/call"
	limits := data.limits.session
	limit := limits.max_calls_per_tool
	is_number(limit)
	limit >= 0
	not is_number(object.get(catalog.tool, "max_calls_per_session", null))
	tool_calls >= limit
}

# tool_calls is how often the session has called the tool; undefined outside a session.
tool_calls := object.get(input.session.calls.by_tool, [input.server.id, input.operation.tool], 0)

tool_budget_exhausted(limit) := {
	"code": "tool_budget_exhausted",
	"message": sprintf(
		"session has called tool %q of server %q %v times, its limit is %v",
		[request.tool, request.server_id, tool_calls, limit],
	),
}

# server_budget_exhausted: the operation would take the session to one server more than it
# may reach.
deny contains {
	"code": "server_budget_exhausted",
	"message": sprintf(
		"session has reached %v distinct servers, its limit; server %q would be one more",
		[count(by_server), request.server_id],
	),
} if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	limits := data.limits.session
	max_servers := limits.max_servers
	is_number(max_servers)
	max_servers >= 0
	by_server := input.session.calls.by_server
	is_object(by_server)
	not by_server[input.server.id]
	count(by_server) >= max_servers
}
