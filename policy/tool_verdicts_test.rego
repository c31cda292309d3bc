# Unit tests of tool_verdicts: for every tool of a tools/list it must give exactly what the
# decision gives a tools/list about that one tool, so FilterTools shows the same tools whichever
# way it asks.
package mcp_tool_verdicts_test

import data.mcp
import data.mcp_test.fixtures

# Tools of the fixture catalog's remote server and one it does not list, in three listings
# (a server lists each name once), so the pinned tool is announced with every kind of hash.
listings := [
	[
		{"name": "lookup", "annotations": {"readOnlyHint": true}, "definition_hash": ""},
		{"name": "nope", "annotations": {}, "definition_hash": ""},
		{"name": "pinned", "annotations": {}, "definition_hash": "sha256:good"},
		{"name": "wipe", "annotations": {"destructiveHint": true}, "definition_hash": ""},
		{"name": "read", "annotations": {}, "definition_hash": ""},
	],
	[
		{"name": "pinned", "annotations": {}, "definition_hash": "sha256:evil"},
		{"name": "nope", "annotations": {}, "definition_hash": "sha256:any"},
	],
	[{"name": "pinned", "annotations": {}, "definition_hash": ""}],
]

# verdict_of is the decision tool_verdicts v gives tool t.
verdict_of(v, t) := object.get(v.tools, t.name, v.listing)

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
		every tools in listings {
			v := verdicts(listing(server, tools), l)
			every t in tools {
				d := fixtures.decide_limits(about(server, t), l)
				verdict_of(v, t) == {"result": d.result, "reasons": d.reasons}
			}
		}
	}
}

test_tool_verdicts_are_each_decision_under_fixture_limits if same_as_each_decision(limit_variants[0])

test_tool_verdicts_are_each_decision_when_changed_needs_approval if same_as_each_decision(limit_variants[1])

test_tool_verdicts_are_each_decision_when_missing_is_denied if same_as_each_decision(limit_variants[2])

test_tool_verdicts_are_each_decision_when_both_need_approval if same_as_each_decision(limit_variants[3])

test_tool_verdicts_are_each_decision_with_no_server_budget if same_as_each_decision(limit_variants[4])

test_tool_verdicts_in_session_with_server_budget_spent if {
	req := object.union(listing("local", listings[0]), {"session": {
		"id": "s-1", "status": "active", "servers": [], "labels": [], "history": [],
		"calls": {"total": 1, "by_server": {"remote": 1}, "by_tool": {"remote": {"lookup": 1}}},
	}})
	l := object.union(fixtures.limits, {"session": {"max_servers": 1}})
	v := verdicts(req, l)
	every t in listings[0] {
		d := fixtures.decide_limits(object.union(req, {"operation": {"tool": t.name, "definition_hash": t.definition_hash}}), l)
		verdict_of(v, t) == {"result": d.result, "reasons": d.reasons}
		d.result == "deny"
	}
}

# Only the tools whose verdict can differ from the listing's are named.
test_tool_verdicts_name_only_tools_with_checks if {
	v := verdicts(listing("remote", listings[0]), fixtures.limits)
	object.keys(v.tools) == {"nope", "pinned", "read"}
	v.listing == {"result": "allow", "reasons": []}
	v.tools.pinned == v.listing
}

test_tool_verdicts_for_no_tools if {
	verdicts(listing("remote", []), fixtures.limits) == {"listing": {"result": "allow", "reasons": []}, "tools": {}}
}

test_tool_without_definition_hash_counts_as_none if {
	l := object.union(fixtures.limits, {"pinning": {"definition_missing": "deny"}})
	every tools in [[{"name": "pinned"}], [{"name": "pinned", "definition_hash": 7}]] {
		v := verdicts(listing("remote", tools), l)
		v.tools.pinned.reasons[0].code == "tool_definition_unverified"
	}
}

# The default policy never asks approval for a listing itself; a policy that does gets it on
# every tool without reasons of its own.
test_listing_approval_reaches_tools_without_reasons if {
	reason := {"code": "listing_review", "message": "listings are reviewed"}
	v := mcp.tool_verdicts with input as listing("remote", [listings[0][0], listings[0][1]])
		with data.catalog as fixtures.catalog
		with data.limits as fixtures.limits
		with mcp.approval_reasons as {reason}
	v.listing == {"result": "require_approval", "reasons": [reason]}
	v.tools.nope.result == "deny"
}
