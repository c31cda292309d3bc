# Unit tests of tool_verdicts: for every tool of a tools/list it must give exactly what the
# decision gives a tools/list about that one tool, so FilterTools shows the same tools whichever
# way it asks.
package mcp_tool_verdicts_test

import data.mcp
import data.mcp_test.fixtures

# Tools of the fixture catalog's remote server and one it does not list, with the hashes a
# gateway could announce.
listed_tools := [
	{"name": "lookup", "annotations": {"readOnlyHint": true}, "definition_hash": ""},
	{"name": "nope", "annotations": {}, "definition_hash": ""},
	{"name": "pinned", "annotations": {}, "definition_hash": "sha256:good"},
	{"name": "pinned", "annotations": {}, "definition_hash": "sha256:evil"},
	{"name": "pinned", "annotations": {}, "definition_hash": ""},
	{"name": "wipe", "annotations": {"destructiveHint": true}, "definition_hash": ""},
	{"name": "read", "annotations": {}, "definition_hash": ""},
]

# Every way data.limits.pinning can treat a changed or missing definition hash.
limit_variants := [
	fixtures.limits,
	object.union(fixtures.limits, {"pinning": {"definition_changed": "approval"}}),
	object.union(fixtures.limits, {"pinning": {"definition_missing": "deny"}}),
	object.union(fixtures.limits, {"pinning": {"definition_missing": "approval", "definition_changed": "approval"}}),
	object.union(fixtures.limits, {"session": {"max_servers": 0}}),
]

# The tools/list FilterTools sends when the policy defines tool_verdicts.
listing(server, tools) := object.union(fixtures.op("tools/list", server), {"tools": tools})

# The tools/list FilterTools sends about one tool otherwise.
about(server, t) := object.union(fixtures.op("tools/list", server), {"operation": {
	"tool": t.name,
	"annotations": t.annotations,
	"definition_hash": t.definition_hash,
}})

verdicts(req, l) := v if {
	v := mcp.tool_verdicts with input as req
		with data.catalog as fixtures.catalog
		with data.limits as l
		with data.flows as fixtures.flows
}

# same_as_each_decision holds when, under limits l, tool_verdicts on every test server agrees
# with the decision about each tool.
same_as_each_decision(l) if {
	every server in ["remote", "local", "nope", "ownerless"] {
		v := verdicts(listing(server, listed_tools), l)
		count(v) == count(listed_tools)
		every i, t in listed_tools {
			d := fixtures.decide_limits(about(server, t), l)
			v[i] == {"result": d.result, "reasons": d.reasons}
		}
	}
}

test_tool_verdicts_are_each_decision_under_fixture_limits if same_as_each_decision(limit_variants[0])

test_tool_verdicts_are_each_decision_when_changed_needs_approval if same_as_each_decision(limit_variants[1])

test_tool_verdicts_are_each_decision_when_missing_is_denied if same_as_each_decision(limit_variants[2])

test_tool_verdicts_are_each_decision_when_both_need_approval if same_as_each_decision(limit_variants[3])

test_tool_verdicts_are_each_decision_with_no_server_budget if same_as_each_decision(limit_variants[4])

test_tool_verdicts_in_session_with_server_budget_spent if {
	req := object.union(listing("local", listed_tools), {"session": {
		"id": "s-1", "status": "active", "servers": [], "labels": [], "history": [],
		"calls": {"total": 1, "by_server": {"remote": 1}, "by_tool": {"remote": {"lookup": 1}}},
	}})
	l := object.union(fixtures.limits, {"session": {"max_servers": 1}})
	v := verdicts(req, l)
	every i, t in listed_tools {
		d := fixtures.decide_limits(object.union(req, {"operation": {"tool": t.name, "definition_hash": t.definition_hash}}), l)
		v[i] == {"result": d.result, "reasons": d.reasons}
		d.result == "deny"
	}
}

test_tool_verdicts_keep_order_and_duplicates if {
	v := verdicts(listing("remote", [listed_tools[1], listed_tools[0], listed_tools[1]]), fixtures.limits)
	[x.result | some x in v] == ["deny", "allow", "deny"]
}

test_tool_verdicts_empty_for_no_tools if {
	verdicts(listing("remote", []), fixtures.limits) == []
}

test_tool_without_definition_hash_counts_as_none if {
	l := object.union(fixtures.limits, {"pinning": {"definition_missing": "deny"}})
	v := verdicts(listing("remote", [{"name": "pinned"}, {"name": "pinned", "definition_hash": 7}]), l)
	[x.reasons[0].code | some x in v] == ["tool_definition_unverified", "tool_definition_unverified"]
}

# The default policy never asks approval for a listing itself; a policy that does gets it on
# every tool without reasons of its own.
test_listing_approval_reaches_tools_without_reasons if {
	reason := {"code": "listing_review", "message": "listings are reviewed"}
	v := mcp.tool_verdicts with input as listing("remote", [listed_tools[0], listed_tools[1]])
		with data.catalog as fixtures.catalog
		with data.limits as fixtures.limits
		with mcp.approval_reasons as {reason}
	v[0] == {"result": "require_approval", "reasons": [reason]}
	v[1].result == "deny"
}
