# Unit tests of the default policy. Most tests run against the small fixture catalog below,
# so they do not move when data.json is edited; the tests at the end pin the shipped
# data.json, which the README and the service's tests rely on.
package mcp_test

import data.mcp

# Fixtures.

fixture_catalog := {"servers": {
	"remote": {
		"owner": "team-a",
		"transport": "remote",
		"resource": "https://remote.example.com",
		"tools": {
			"lookup": {"read_only": true, "labels": ["private_data", "external_communication", "private_data"]},
			"update": {"destructive": false},
			"wipe": {"destructive": true},
			"unrated": {},
		},
	},
	"local": {
		"owner": "team-b",
		"transport": "stdio",
		"tools": {
			"read": {"read_only": true},
			"write": {"read_only": false},
			"unrated": {"labels": ["local_write"]},
		},
	},
	"slashed": {
		"owner": "team-c",
		"transport": "remote",
		"resource": "https://slashed.example.com/mcp/",
		"tools": {"ping": {"read_only": true}},
	},
	"no_resource": {"owner": "team-d", "transport": "remote", "tools": {}},
}}

fixture_limits := {
	"session": {"max_calls": 3, "max_ttl_seconds": 1800, "max_renewals": 2},
	"approval": {"scope": "session", "ttl_seconds": 60},
}

# A well-formed tools/call of a read-only tool on the remote server, with a matching token.
call := {
	"action": "tools/call",
	"now": "2025-01-01T00:00:00Z",
	"client": {"id": "client-1", "name": "agent", "version": "1.0", "transport": "remote"},
	"subject": {"id": "alice", "groups": [], "attributes": {}},
	"server": {"id": "remote", "resource": "https://remote.example.com", "transport": "remote"},
	"credential": {
		"scopes": [],
		"audience": ["https://remote.example.com"],
		"issuer": "https://issuer.example.com",
		"client_id": "client-1",
		"expires_at": "2025-01-01T01:00:00Z",
	},
	"operation": {
		"method": "tools/call",
		"tool": "lookup",
		"arguments": {},
		"annotations": {},
		"definition_hash": "",
		"resource_uri": "",
		"prompt_name": "",
	},
	"context": {},
	"session": null,
}

# The same request with a session that has made n tool calls.
with_calls(n) := object.union(call, {"session": {
	"id": "s-1",
	"status": "active",
	"servers": ["remote"],
	"calls": {"total": n, "by_server": {"remote": n}, "by_tool": {"remote": {"lookup": n}}},
	"labels": [],
	"history": [],
}})

# The call request with some fields replaced (objects merge, other values are replaced).
patched(patch) := object.union(call, patch)

# An operation of the given action on server, naming no tool.
op(action, server) := patched({"action": action, "server": {"id": server}, "operation": {"method": action, "tool": ""}})

# A call of tool on server.
call_tool(server, tool) := patched({"server": {"id": server}, "operation": {"tool": tool}})

# A call of tool on the local server with the given annotations.
annotated(tool, annotations) := patched({
	"server": {"id": "local"},
	"operation": {"tool": tool, "annotations": annotations},
})

open_session(servers) := {"action": "session/open", "session": null, "session_request": {"servers": servers, "ttl_seconds": 600}}

# A session/renew of a session bound to the remote server and renewed n times so far.
renew(n) := {
	"action": "session/renew",
	"now": "2025-01-01T00:50:00Z",
	"client": {"id": "client-1", "name": "agent", "version": "1.0", "transport": "remote"},
	"subject": {"id": "alice", "groups": [], "attributes": {}},
	"server": {},
	"credential": {"scopes": [], "audience": []},
	"operation": {},
	"context": {},
	"session": {
		"id": "s-1",
		"status": "active",
		"created_at": "2025-01-01T00:00:00Z",
		"expires_at": "2025-01-01T01:00:00Z",
		"renewals": n,
		"client_id": "client-1",
		"subject_id": "alice",
		"servers": ["remote"],
		"calls": {"total": 1, "by_server": {"remote": 1}, "by_tool": {"remote": {"lookup": 1}}},
		"labels": [],
		"history": [],
	},
	"session_request": {"servers": ["remote"], "ttl_seconds": 600},
}

decide(req) := d if {
	d := mcp.decision with input as req with data.catalog as fixture_catalog with data.limits as fixture_limits
}

# The decision under the fixture limits with limits.session replaced by session_limits.
decide_session_limits(req, session_limits) := d if {
	limits := {"session": session_limits, "approval": fixture_limits.approval}
	d := mcp.decision with input as req with data.catalog as fixture_catalog with data.limits as limits
}

codes(req) := [r.code | some r in decide(req).reasons]

result(req) := decide(req).result

# The decision document.

test_decision_defined_for_empty_input if {
	d := mcp.decision with input as {}
	d.result == "deny"
	codes({}) == ["action_unsupported"]
}

test_decision_defined_for_malformed_input if {
	every req in [
		{"action": 42},
		{"action": "tools/call", "server": "remote", "operation": [], "credential": null, "session": "x"},
		{"action": "tools/call", "server": {"id": 7}, "operation": {"tool": null, "annotations": "x"}},
		{"action": "session/open", "session_request": {"servers": {"id": "remote"}}},
		{"action": "session/open", "session_request": {"servers": [1, null]}},
		"not an object",
	] {
		decide(req).result == "deny"
	}
}

# The engine checks the session before the policy runs; a malformed one still gets a
# decision, and a renewal count that is not a number reads as none.
test_decision_defined_for_malformed_renewal if {
	every req in [
		{"action": "session/renew"},
		{"action": "session/renew", "session": null, "session_request": null},
		{"action": "session/renew", "session": "x", "server": "x", "session_request": "x"},
		{"action": "session/renew", "session": {"renewals": "9"}},
		{"action": "session/renew", "session": {"renewals": null}},
	] {
		decide(req).reasons == [{"code": "renewal_requires_approval", "message": "session renewal requires approval (renewals so far: 0)"}]
		decide(req).session == {"max_ttl_seconds": 1800}
	}
}

test_decision_defined_without_catalog_or_limits if {
	d := mcp.decision with input as call with data.catalog as null with data.limits as null
	d.result == "deny"
	[r.code | some r in d.reasons] == ["server_unknown"]
	o := mcp.decision with input as open_session(["remote"]) with data.catalog as null with data.limits as null
	o.result == "deny"
	o.session == {"max_ttl_seconds": 3600}
	r := mcp.decision with input as renew(5) with data.catalog as null with data.limits as null
	r.result == "require_approval"
	r.session == {"max_ttl_seconds": 3600}
}

test_allow_shape if {
	decide(call) == {
		"result": "allow",
		"reasons": [],
		"labels": ["external_communication", "private_data"],
		"obligations": {},
	}
}

test_deny_shape if {
	d := decide(call_tool("remote", "nope"))
	d == {
		"result": "deny",
		"reasons": [{"code": "tool_unknown", "message": "tool \"nope\" is not in the catalog of server \"remote\""}],
		"labels": [],
		"obligations": {},
	}
}

test_require_approval_shape if {
	decide(call_tool("remote", "wipe")) == {
		"result": "require_approval",
		"reasons": [{"code": "destructive_tool", "message": "tool \"wipe\" of server \"remote\" is destructive"}],
		"labels": [],
		"obligations": {},
		"approval": {"scope": "session", "ttl_seconds": 60},
	}
}

test_deny_wins_over_approval if {
	d := decide(object.union(with_calls(3), {"operation": {"tool": "wipe"}}))
	d.result == "deny"
	[r.code | some r in d.reasons] == ["budget_exhausted"]
	not d.approval
}

test_reasons_sorted_by_code_then_message if {
	req := patched({
		"server": {"id": "ghost"},
		"action": "session/open",
		"session_request": {"servers": ["zeta", "remote", "alpha"]},
	})
	decide(req).reasons == [
		{"code": "server_unknown", "message": "server \"alpha\" is not in the catalog"},
		{"code": "server_unknown", "message": "server \"zeta\" is not in the catalog"},
	]
	codes(object.union(with_calls(5), {"credential": {"audience": []}})) == ["budget_exhausted", "credential_missing"]
}

# approval

test_approval_from_limits if {
	decide(call_tool("remote", "wipe")).approval == {"scope": "session", "ttl_seconds": 60}
}

test_approval_defaults_without_limits if {
	d := mcp.decision with input as call_tool("remote", "wipe") with data.catalog as fixture_catalog with data.limits as {}
	d.approval == {"scope": "once", "ttl_seconds": 900}
}

test_approval_ignores_invalid_limits if {
	d := mcp.decision with input as call_tool("remote", "wipe")
		with data.catalog as fixture_catalog
		with data.limits as {"approval": {"scope": "forever", "ttl_seconds": -5}}
	d.approval == {"scope": "once", "ttl_seconds": 900}
}

test_no_approval_on_allow if {
	not decide(call).approval
}

# labels

test_labels_of_called_tool_sorted_and_deduplicated if {
	decide(call).labels == ["external_communication", "private_data"]
	decide(call_tool("local", "unrated")).labels == ["local_write"]
}

test_labels_kept_on_deny if {
	d := decide(with_calls(3))
	d.result == "deny"
	d.labels == ["external_communication", "private_data"]
}

test_labels_empty_for_tool_without_labels if {
	decide(call_tool("remote", "update")).labels == []
}

test_labels_empty_for_other_actions if {
	decide(object.union(op("tools/list", "remote"), {"operation": {"tool": "lookup"}})).labels == []
}

test_labels_ignore_malformed_catalog_labels if {
	catalog := {"servers": {"s": {"transport": "stdio", "tools": {"t": {"read_only": true, "labels": ["a", 1, null]}, "u": {"read_only": true, "labels": "a"}}}}}
	l1 := mcp.labels with input as call_tool("s", "t") with data.catalog as catalog
	l1 == ["a"]
	l2 := mcp.labels with input as call_tool("s", "u") with data.catalog as catalog
	l2 == []
}

# action_unsupported

test_supported_actions_are_mcp_actions_and_session_actions if {
	mcp.session_actions == {"session/open", "session/renew"}
	mcp.supported_actions == mcp.mcp_actions | mcp.session_actions
}

test_action_unsupported_fires if {
	every action in ["tools/delete", "session/extend", "session/close", "", "TOOLS/CALL", "Session/Renew"] {
		req := object.union(op("tools/list", "remote"), {"action": action})
		codes(req) == ["action_unsupported"]
	}
	codes({"action": 42}) == ["action_unsupported"]
	decide({"action": "session/extend"}).reasons[0].message == "action \"session/extend\" is not supported"
}

test_action_unsupported_not_for_supported_actions if {
	every action in mcp.mcp_actions {
		result(object.union(op(action, "remote"), {"operation": {"tool": "lookup"}})) == "allow"
	}
	result(open_session(["remote"])) == "allow"
	not "action_unsupported" in codes(renew(0))
	decide_session_limits(renew(0), {"renewal": "allow"}).result == "allow"
}

# server_unknown

test_server_unknown_fires if {
	d := decide(op("resources/read", "ghost"))
	d.reasons == [{"code": "server_unknown", "message": "server \"ghost\" is not in the catalog"}]
	codes(call_tool("ghost", "lookup")) == ["server_unknown"]
	codes(patched({"server": {"id": ""}})) == ["server_unknown"]
}

test_server_unknown_fires_for_every_mcp_action if {
	every action in mcp.mcp_actions {
		"server_unknown" in codes(op(action, "ghost"))
	}
}

test_server_unknown_not_for_known_server if {
	every server in ["remote", "local"] {
		not "server_unknown" in codes(op("prompts/get", server))
	}
}

test_server_unknown_in_session_open if {
	decide(open_session(["local", "ghost"])).reasons == [
		{"code": "server_unknown", "message": "server \"ghost\" is not in the catalog"},
	]
}

test_session_open_allowed_with_known_or_no_servers if {
	result(open_session(["local", "remote"])) == "allow"
	result(open_session([])) == "allow"
	result({"action": "session/open"}) == "allow"
	result({"action": "session/open", "session_request": {"servers": null}}) == "allow"
	result({"action": "session/open", "session_request": {"servers": "local"}}) == "allow"
}

test_server_unknown_not_for_unsupported_action if {
	codes(object.union(op("tools/list", "ghost"), {"action": "tools/delete"})) == ["action_unsupported"]
}

# tool_unknown

test_tool_unknown_fires_on_call if {
	codes(call_tool("remote", "nope")) == ["tool_unknown"]
	codes(call_tool("remote", "")) == ["tool_unknown"]
	codes(call_tool("local", "lookup")) == ["tool_unknown"]
}

test_tool_unknown_fires_on_filtered_tools_list if {
	d := decide(object.union(op("tools/list", "local"), {"operation": {"tool": "nope"}}))
	d.reasons == [{"code": "tool_unknown", "message": "tool \"nope\" is not in the catalog of server \"local\""}]
}

test_tool_unknown_not_for_known_tool if {
	not "tool_unknown" in codes(call_tool("local", "read"))
	result(object.union(op("tools/list", "remote"), {"operation": {"tool": "lookup"}})) == "allow"
}

test_tool_unknown_not_for_unfiltered_tools_list if {
	result(op("tools/list", "local")) == "allow"
}

test_tool_unknown_not_for_other_actions if {
	result(object.union(op("resources/read", "local"), {"operation": {"tool": "nope"}})) == "allow"
}

test_tool_unknown_not_for_unknown_server if {
	codes(call_tool("ghost", "nope")) == ["server_unknown"]
}

# credential_missing

test_credential_missing_fires if {
	d := decide(patched({"credential": {"audience": []}}))
	d.reasons == [{
		"code": "credential_missing",
		"message": "server \"remote\" is remote and the credential names no audience",
	}]
	codes(object.remove(call, ["credential"])) == ["credential_missing"]
	codes(patched({"credential": {"audience": ""}})) == ["credential_missing"]
	codes(object.union(op("resources/list", "remote"), {"credential": {"audience": []}})) == ["credential_missing"]
}

test_credential_missing_not_for_stdio_server if {
	result(patched({"server": {"id": "local"}, "operation": {"tool": "read"}, "credential": {"audience": []}})) == "allow"
}

test_credential_missing_not_with_audience if {
	not "credential_missing" in codes(call)
}

test_credential_rules_not_for_session_open if {
	result(object.union(open_session(["remote"]), {"server": {"id": "remote"}, "credential": {"audience": []}})) == "allow"
}

# audience_mismatch

test_audience_mismatch_fires if {
	d := decide(patched({"credential": {"audience": ["https://other.example.com"]}}))
	d.reasons == [{
		"code": "audience_mismatch",
		"message": "credential audience does not include the resource \"https://remote.example.com\" of server \"remote\"",
	}]
	codes(patched({"credential": {"audience": ["https://remote.example.com/other"]}})) == ["audience_mismatch"]
	codes(patched({"credential": {"audience": [42]}})) == ["audience_mismatch"]
}

test_audience_mismatch_fires_when_catalog_lacks_resource if {
	codes(patched({"server": {"id": "no_resource"}, "operation": {"tool": ""}, "action": "tools/list", "credential": {"audience": [""]}})) == ["audience_mismatch"]
}

test_audience_mismatch_not_for_matching_audience if {
	result(call) == "allow"
	result(patched({"credential": {"audience": ["https://other.example.com", "https://remote.example.com"]}})) == "allow"
	result(patched({"credential": {"audience": "https://remote.example.com"}})) == "allow"
}

test_audience_mismatch_tolerates_trailing_slash if {
	result(patched({"credential": {"audience": ["https://remote.example.com/"]}})) == "allow"
	slashed := patched({"server": {"id": "slashed"}, "operation": {"tool": "ping"}})
	result(object.union(slashed, {"credential": {"audience": ["https://slashed.example.com/mcp"]}})) == "allow"
	result(object.union(slashed, {"credential": {"audience": ["https://slashed.example.com/mcp/"]}})) == "allow"
}

test_audience_mismatch_not_for_stdio_server if {
	result(patched({"server": {"id": "local"}, "operation": {"tool": "read"}, "credential": {"audience": ["https://other.example.com"]}})) == "allow"
}

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
	every limits in [{}, {"session": {}}, {"session": {"max_calls": "3"}}] {
		d := mcp.decision with input as with_calls(1000) with data.catalog as fixture_catalog with data.limits as limits
		d.result == "allow"
	}
}

test_budget_exhausted_only_for_tools_call if {
	result(object.union(with_calls(3), {"action": "tools/list", "operation": {"method": "tools/list"}})) == "allow"
}

# destructive_tool

test_destructive_tool_fires_for_catalog_destructive if {
	codes(call_tool("remote", "wipe")) == ["destructive_tool"]
}

test_destructive_catalog_overrides_reassuring_annotations if {
	req := patched({"operation": {"tool": "wipe", "annotations": {"readOnlyHint": true, "destructiveHint": false}}})
	result(req) == "require_approval"
}

test_destructive_tool_not_when_catalog_clears if {
	every tool in ["lookup", "update"] {
		req := patched({"operation": {"tool": tool, "annotations": {"readOnlyHint": false, "destructiveHint": true}}})
		result(req) == "allow"
	}
}

test_destructive_tool_fires_when_unrated_and_hints_absent if {
	codes(annotated("unrated", {})) == ["destructive_tool"]
	codes(call_tool("remote", "unrated")) == ["destructive_tool"]
	codes(annotated("unrated", null)) == ["destructive_tool"]
	codes(object.remove(call_tool("remote", "unrated"), ["operation"])) == ["tool_unknown"]
	no_annotations := json.remove(call_tool("remote", "unrated"), ["operation/annotations"])
	codes(no_annotations) == ["destructive_tool"]
}

test_destructive_tool_fires_when_unrated_and_hinted_destructive if {
	result(annotated("unrated", {"destructiveHint": true})) == "require_approval"
	result(annotated("unrated", {"readOnlyHint": false})) == "require_approval"
	result(annotated("unrated", {"destructiveHint": "false"})) == "require_approval"
}

test_destructive_tool_not_when_unrated_and_hinted_safe if {
	result(annotated("unrated", {"destructiveHint": false})) == "allow"
	result(annotated("unrated", {"readOnlyHint": true})) == "allow"
	result(annotated("unrated", {"readOnlyHint": true, "destructiveHint": true})) == "allow"
}

test_read_only_hint_ignored_when_catalog_says_not_read_only if {
	result(annotated("write", {"readOnlyHint": true})) == "require_approval"
	result(annotated("write", {})) == "require_approval"
	result(annotated("write", {"destructiveHint": false})) == "allow"
}

test_destructive_tool_only_for_tools_call if {
	list := object.union(op("tools/list", "remote"), {"operation": {"tool": "wipe"}})
	result(list) == "allow"
}

test_destructive_undefined_for_unknown_tool if {
	not mcp.destructive with input as call_tool("remote", "nope") with data.catalog as fixture_catalog
}

# session/renew

renew_codes(req, session_limits) := [r.code | some r in decide_session_limits(req, session_limits).reasons]

test_renewal_requires_approval_shape if {
	decide(renew(1)) == {
		"result": "require_approval",
		"reasons": [{"code": "renewal_requires_approval", "message": "session renewal requires approval (renewals so far: 1)"}],
		"labels": [],
		"obligations": {},
		"approval": {"scope": "session", "ttl_seconds": 60},
		"session": {"max_ttl_seconds": 1800},
	}
}

test_renewal_requires_approval_fires_by_default if {
	codes(renew(0)) == ["renewal_requires_approval"]
	every renewal in ["approval", "ALLOW", "Deny", "", true, null, 1, ["allow"]] {
		renew_codes(renew(0), {"renewal": renewal}) == ["renewal_requires_approval"]
	}
	d := mcp.decision with input as renew(0) with data.catalog as fixture_catalog with data.limits as {}
	d.reasons == [{"code": "renewal_requires_approval", "message": "session renewal requires approval (renewals so far: 0)"}]
	d.approval == {"scope": "once", "ttl_seconds": 900}
}

test_renewal_requires_approval_not_when_allowed if {
	d := decide_session_limits(renew(1), {"renewal": "allow"})
	d == {
		"result": "allow",
		"reasons": [],
		"labels": [],
		"obligations": {},
		"session": {"max_ttl_seconds": 3600},
	}
}

test_renewal_requires_approval_not_when_denied if {
	d := decide_session_limits(renew(0), {"renewal": "deny"})
	d.result == "deny"
	not "renewal_requires_approval" in [r.code | some r in d.reasons]
	not d.approval
}

test_renewal_requires_approval_only_for_renew if {
	result(open_session(["remote"])) == "allow"
	result(with_calls(1)) == "allow"
	result(object.union(with_calls(1), {"session": {"renewals": 7}})) == "allow"
}

test_renewal_not_allowed_fires if {
	d := decide_session_limits(renew(0), {"renewal": "deny"})
	d == {
		"result": "deny",
		"reasons": [{"code": "renewal_not_allowed", "message": "session renewal is not allowed"}],
		"labels": [],
		"obligations": {},
		"session": {"max_ttl_seconds": 3600},
	}
}

test_renewal_not_allowed_not_otherwise if {
	every renewal in ["allow", "approval", "DENY", false] {
		not "renewal_not_allowed" in renew_codes(renew(0), {"renewal": renewal})
	}
	not "renewal_not_allowed" in codes(renew(0))
}

test_renewal_not_allowed_only_for_renew if {
	decide_session_limits(open_session(["remote"]), {"renewal": "deny"}).result == "allow"
	decide_session_limits(with_calls(1), {"renewal": "deny"}).result == "allow"
}

test_renewal_limit_fires if {
	d := decide(renew(2))
	d == {
		"result": "deny",
		"reasons": [{"code": "renewal_limit", "message": "session has used 2 of its 2 renewals"}],
		"labels": [],
		"obligations": {},
		"session": {"max_ttl_seconds": 1800},
	}
	codes(renew(3)) == ["renewal_limit"]
	renew_codes(renew(0), {"max_renewals": 0}) == ["renewal_limit"]
	renew_codes(renew(1), {"max_renewals": 1, "renewal": "allow"}) == ["renewal_limit"]
}

test_renewal_limit_wins_over_approval if {
	d := decide(renew(2))
	d.result == "deny"
	not d.approval
	not "renewal_requires_approval" in codes(renew(2))
}

test_renewal_limit_reported_with_renewal_not_allowed if {
	decide_session_limits(renew(5), {"max_renewals": 2, "renewal": "deny"}).reasons == [
		{"code": "renewal_limit", "message": "session has used 5 of its 2 renewals"},
		{"code": "renewal_not_allowed", "message": "session renewal is not allowed"},
	]
}

test_renewal_limit_not_below_limit if {
	codes(renew(0)) == ["renewal_requires_approval"]
	codes(renew(1)) == ["renewal_requires_approval"]
	decide_session_limits(renew(1), {"max_renewals": 2, "renewal": "allow"}).result == "allow"
}

test_renewal_limit_not_without_max_renewals if {
	every session_limits in [{}, {"max_renewals": "2"}, {"max_renewals": null}] {
		renew_codes(renew(1000), session_limits) == ["renewal_requires_approval"]
	}
}

test_renewal_limit_counts_missing_renewals_as_none if {
	no_count := json.remove(renew(0), ["session/renewals"])
	codes(no_count) == ["renewal_requires_approval"]
	renew_codes(no_count, {"max_renewals": 0}) == ["renewal_limit"]
	codes(object.union(renew(0), {"session": {"renewals": "5"}})) == ["renewal_requires_approval"]
}

test_renewal_limit_only_for_renew if {
	renewed := object.union(with_calls(1), {"session": {"renewals": 9}})
	result(renewed) == "allow"
	result(object.union(open_session(["remote"]), {"session": {"renewals": 9}})) == "allow"
}

test_renew_not_checked_against_catalog_servers if {
	every server in [{}, {"id": ""}, {"id": "ghost"}, null] {
		codes(object.union(renew(0), {"server": server})) == ["renewal_requires_approval"]
	}
	codes(object.remove(renew(0), ["server"])) == ["renewal_requires_approval"]
	ghosts := object.union(renew(0), {"session_request": {"servers": ["ghost"]}, "session": {"servers": ["ghost"]}})
	codes(ghosts) == ["renewal_requires_approval"]
}

test_renew_not_subject_to_mcp_operation_rules if {
	req := object.union(renew(0), {
		"server": {"id": "remote"},
		"credential": {"audience": ["https://other.example.com"]},
		"operation": {"tool": "wipe"},
		"session": {"calls": {"total": 99}},
	})
	codes(req) == ["renewal_requires_approval"]
	decide(req).labels == []
}

# The session key: the lifetime ceiling of session/open and session/renew.

test_session_key_on_every_result_of_session_actions if {
	every action in mcp.session_actions {
		decide({"action": action}).session == {"max_ttl_seconds": 1800}
	}
	every req in [
		open_session(["remote"]),
		open_session(["ghost"]),
		renew(0),
		renew(2),
	] {
		decide(req).session == {"max_ttl_seconds": 1800}
	}
	decide_session_limits(renew(0), {"renewal": "allow", "max_ttl_seconds": 1800}).session == {"max_ttl_seconds": 1800}
	{result(open_session(["remote"])), result(open_session(["ghost"])), result(renew(0)), result(renew(2))} == {"allow", "deny", "require_approval"}
}

test_session_key_shape_on_session_open if {
	decide(open_session(["remote"])) == {
		"result": "allow",
		"reasons": [],
		"labels": [],
		"obligations": {},
		"session": {"max_ttl_seconds": 1800},
	}
	decide(open_session(["ghost"])) == {
		"result": "deny",
		"reasons": [{"code": "server_unknown", "message": "server \"ghost\" is not in the catalog"}],
		"labels": [],
		"obligations": {},
		"session": {"max_ttl_seconds": 1800},
	}
}

test_session_key_absent_for_other_actions if {
	every action in mcp.mcp_actions {
		not decide(object.union(op(action, "remote"), {"operation": {"tool": "lookup"}})).session
		not decide(op(action, "ghost")).session
	}
	not decide(call_tool("remote", "wipe")).session
	not decide(object.union(renew(0), {"action": "session/extend"})).session
	not decide({}).session
	not decide({"action": 42}).session
}

test_session_max_ttl_from_limits if {
	every ttl in [1, 60, 86400] {
		decide_session_limits(open_session([]), {"max_ttl_seconds": ttl}).session == {"max_ttl_seconds": ttl}
	}
}

test_session_max_ttl_defaults_when_absent_or_invalid if {
	every session_limits in [
		{},
		{"max_ttl_seconds": 0},
		{"max_ttl_seconds": -60},
		{"max_ttl_seconds": 1.5},
		{"max_ttl_seconds": "1800"},
		{"max_ttl_seconds": null},
	] {
		decide_session_limits(open_session([]), session_limits).session == {"max_ttl_seconds": 3600}
		decide_session_limits(renew(0), session_limits).session == {"max_ttl_seconds": 3600}
	}
	d := mcp.decision with input as renew(0) with data.catalog as fixture_catalog with data.limits as {}
	d.session == {"max_ttl_seconds": 3600}
}

# Other MCP operations on known servers are allowed.

test_other_operations_allowed_on_known_servers if {
	every action in ["resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"] {
		result(op(action, "local")) == "allow"
		result(op(action, "remote")) == "allow"
	}
}

# The shipped data.json.

shipped(req) := d if {
	d := mcp.decision with input as req
}

github_call(tool) := object.union(call, {
	"server": {"id": "github", "resource": "https://mcp.github.example.com", "transport": "remote"},
	"credential": {"audience": ["https://mcp.github.example.com"]},
	"operation": {"tool": tool},
})

filesystem_call(tool) := object.union(call, {
	"server": {"id": "filesystem", "resource": "", "transport": "stdio"},
	"credential": {"audience": []},
	"operation": {"tool": tool},
})

test_shipped_catalog_allows_and_labels if {
	shipped(github_call("search_issues")).result == "allow"
	d := shipped(github_call("create_issue"))
	d.result == "allow"
	d.labels == ["external_communication"]
	r := shipped(filesystem_call("read_file"))
	r.result == "allow"
	r.labels == ["private_data"]
	shipped(filesystem_call("write_file")).result == "allow"
}

test_shipped_catalog_requires_approval_for_destructive_tools if {
	d := shipped(github_call("delete_repository"))
	d.result == "require_approval"
	d.approval == {"scope": "once", "ttl_seconds": 900}
	shipped(filesystem_call("delete_file")).result == "require_approval"
	shipped(filesystem_call("move_file")).result == "require_approval"
}

test_shipped_catalog_trusts_safe_hint_on_unrated_tool if {
	shipped(object.union(github_call("add_comment"), {"operation": {"annotations": {"destructiveHint": false}}})).result == "allow"
	shipped(github_call("add_comment")).result == "require_approval"
}

test_shipped_catalog_denies if {
	[r.code | some r in shipped(github_call("drop_database")).reasons] == ["tool_unknown"]
	[r.code | some r in shipped(object.union(github_call("search_issues"), {"server": {"id": "slack"}})).reasons] == ["server_unknown"]
	replay := object.union(github_call("search_issues"), {"credential": {"audience": ["https://mcp.slack.example.com"]}})
	[r.code | some r in shipped(replay).reasons] == ["audience_mismatch"]
}

test_shipped_session_budget if {
	shipped(object.union(github_call("search_issues"), {"session": {"calls": {"total": 99}}})).result == "allow"
	shipped(object.union(github_call("search_issues"), {"session": {"calls": {"total": 100}}})).result == "deny"
}

test_shipped_session_lifetime if {
	shipped(object.union(open_session(["github", "filesystem"]), {"session": null})).session == {"max_ttl_seconds": 3600}
	shipped(renew(0)).session == {"max_ttl_seconds": 3600}
	not shipped(github_call("search_issues")).session
}

test_shipped_session_renewal if {
	d := shipped(renew(0))
	d.result == "require_approval"
	[r.code | some r in d.reasons] == ["renewal_requires_approval"]
	d.approval == {"scope": "once", "ttl_seconds": 900}
	shipped(renew(2)).result == "require_approval"
	[r.code | some r in shipped(renew(3)).reasons] == ["renewal_limit"]
	shipped(renew(3)).reasons[0].message == "session has used 3 of its 3 renewals"
}
