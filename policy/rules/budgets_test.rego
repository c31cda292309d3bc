# Session budgets: each rule firing and not firing.
package mcp.budgets_test

import data.mcp.request
import data.mcp_test.fixtures.call
import data.mcp_test.fixtures.call_tool
import data.mcp_test.fixtures.codes
import data.mcp_test.fixtures.codes_of
import data.mcp_test.fixtures.decide
import data.mcp_test.fixtures.decide_session_limits
import data.mcp_test.fixtures.in_session
import data.mcp_test.fixtures.op
import data.mcp_test.fixtures.result
import data.mcp_test.fixtures.with_calls

# A call of tool on the remote server in a session that called it n times.
tool_called(tool, n) := in_session(
	call_tool("remote", tool),
	{"total": n, "by_server": {"remote": n}, "by_tool": {"remote": {tool: n}}},
	[],
)

# An operation of action on server in a session that has reached the servers given.
reached(action, server, servers) := in_session(
	object.union(op(action, server), {"operation": {"tool": "lookup"}}),
	{"total": count(servers), "by_server": {s: 1 | some s in servers}, "by_tool": {}},
	[],
)

# budget_exhausted

test_budget_exhausted_fires if {
	d := decide(with_calls(3))
	d.reasons == [{"code": "budget_exhausted", "message": "session has used 3 of its 3 tool calls"}]
	codes(with_calls(4)) == ["budget_exhausted"]
}

test_budget_exhausted_not_below_limit if {
	result(with_calls(0)) == "allow"
	result(with_calls(2)) == "allow"
}

test_budget_exhausted_not_without_session if {
	result(call) == "allow"
}

test_budget_exhausted_not_without_max_calls if {
	every session_limits in [{}, {"max_calls": "3"}] {
		decide_session_limits(with_calls(1000), session_limits).result == "allow"
	}
	d := data.mcp.decision with input as with_calls(1000) with data.catalog as data.mcp_test.fixtures.catalog with data.limits as {}
	d.result == "allow"
}

test_budget_exhausted_only_for_tools_call if {
	result(object.union(with_calls(3), {"action": "tools/list", "operation": {"method": "tools/list"}})) == "allow"
}

# tool_budget_exhausted

test_tool_budget_exhausted_fires_at_the_catalog_limit if {
	d := decide(tool_called("limited", 2))
	d.reasons == [{
		"code": "tool_budget_exhausted",
		"message": "session has called tool \"limited\" of server \"remote\" 2 times, its limit is 2",
	}]
	codes(tool_called("limited", 7)) == ["budget_exhausted", "tool_budget_exhausted"]
}

test_tool_budget_exhausted_fires_at_the_default_limit if {
	d := decide_session_limits(tool_called("lookup", 5), {"max_calls_per_tool": 5})
	codes_of(d) == ["tool_budget_exhausted"]
	codes_of(decide_session_limits(tool_called("lookup", 0), {"max_calls_per_tool": 0})) == ["tool_budget_exhausted"]
}

test_tool_budget_catalog_limit_wins_over_default if {
	decide_session_limits(tool_called("limited", 3), {"max_calls_per_tool": 10}).result == "deny"
	decide_session_limits(tool_called("lookup", 3), {"max_calls_per_tool": 10}).result == "allow"
}

test_tool_budget_exhausted_not_below_limit if {
	result(tool_called("limited", 1)) == "allow"
	result(tool_called("limited", 0)) == "allow"
	decide_session_limits(tool_called("lookup", 4), {"max_calls_per_tool": 5}).result == "allow"
}

test_tool_budget_exhausted_not_without_a_limit if {
	every session_limits in [{}, {"max_calls_per_tool": -1}, {"max_calls_per_tool": "5"}, {"max_calls_per_tool": null}] {
		decide_session_limits(tool_called("lookup", 1000), session_limits).result == "allow"
	}
}

test_tool_budget_exhausted_counts_only_this_tool if {
	other := in_session(
		call_tool("remote", "limited"),
		{"total": 9, "by_server": {"remote": 9}, "by_tool": {"remote": {"lookup": 9}}},
		[],
	)
	decide_session_limits(other, {}).result == "allow"
}

test_tool_budget_exhausted_not_without_session if {
	result(call_tool("remote", "limited")) == "allow"
}

test_tool_budget_exhausted_only_for_tools_call if {
	result(object.union(tool_called("limited", 5), {"action": "tools/list"})) == "allow"
}

# server_budget_exhausted

test_server_budget_exhausted_fires if {
	d := decide_session_limits(reached("tools/call", "remote", ["a", "b"]), {"max_servers": 2})
	d.reasons == [{
		"code": "server_budget_exhausted",
		"message": "session has reached 2 distinct servers, its limit; server \"remote\" would be one more",
	}]
	every action in request.mcp_actions {
		"server_budget_exhausted" in codes_of(decide_session_limits(reached(action, "remote", ["a", "b"]), {"max_servers": 2}))
	}
	codes_of(decide_session_limits(reached("tools/call", "remote", []), {"max_servers": 0})) == ["server_budget_exhausted"]
}

test_server_budget_exhausted_not_for_a_server_already_reached if {
	decide_session_limits(reached("tools/call", "remote", ["a", "remote"]), {"max_servers": 2}).result == "allow"
}

test_server_budget_exhausted_not_below_limit if {
	decide_session_limits(reached("tools/call", "remote", ["a"]), {"max_servers": 2}).result == "allow"
	decide_session_limits(reached("tools/call", "remote", []), {"max_servers": 1}).result == "allow"
}

test_server_budget_exhausted_not_without_limit_or_session if {
	every session_limits in [{}, {"max_servers": "2"}, {"max_servers": -1}] {
		decide_session_limits(reached("tools/call", "remote", ["a", "b", "c"]), session_limits).result == "allow"
	}
	decide_session_limits(call, {"max_servers": 0}).result == "allow"
}
