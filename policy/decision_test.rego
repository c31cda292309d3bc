# Unit tests of the entry point: the decision document, how reasons combine, the session key,
# action_unsupported, and the shipped data.json, which the README, the examples and the
# service's tests rely on. Each rule package's tests sit beside it in rules/.
package mcp_test

import data.mcp
import data.mcp.request
import data.mcp_test.fixtures.call
import data.mcp_test.fixtures.call_tool
import data.mcp_test.fixtures.catalog as fixture_catalog
import data.mcp_test.fixtures.codes
import data.mcp_test.fixtures.codes_of
import data.mcp_test.fixtures.decide
import data.mcp_test.fixtures.decide_data
import data.mcp_test.fixtures.decide_limits
import data.mcp_test.fixtures.decide_session_limits
import data.mcp_test.fixtures.filesystem_call
import data.mcp_test.fixtures.flows as fixture_flows
import data.mcp_test.fixtures.github_call
import data.mcp_test.fixtures.op
import data.mcp_test.fixtures.open_session
import data.mcp_test.fixtures.patched
import data.mcp_test.fixtures.renew
import data.mcp_test.fixtures.result
import data.mcp_test.fixtures.shipped
import data.mcp_test.fixtures.with_calls

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
		{"action": "sampling/createMessage", "server": {"id": "remote"}, "operation": {"arguments": "x"}},
		{"action": "elicitation/create", "server": {"id": "local"}, "operation": {"arguments": {"mode": 3}}},
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

test_decision_defined_without_catalog_limits_or_flows if {
	d := mcp.decision with input as call with data.catalog as null with data.limits as null with data.flows as null
	d.result == "deny"
	codes_of(d) == ["server_unknown"]
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
	codes_of(d) == ["budget_exhausted"]
	not d.approval
}

test_every_reason_reported_sorted_by_code_then_message if {
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

test_approval_reasons_from_several_packages_combine if {
	req := object.union(call_tool("remote", "fetch"), {
		"operation": {"definition_hash": ""},
		"session": {"labels": ["private_data"], "calls": {"total": 0}},
	})
	d := decide(req)
	d.result == "require_approval"
	codes_of(d) == ["toxic_flow"]
	wiped := decide_limits(
		object.union(call_tool("remote", "pinned"), {"operation": {"definition_hash": "sha256:bad"}}),
		{"pinning": {"definition_changed": "approval"}},
	)
	codes_of(wiped) == ["tool_definition_changed"]
	several := decide_limits(
		object.union(call_tool("remote", "wipe"), {"action": "tools/call"}),
		{"pinning": {"definition_missing": "approval"}},
	)
	codes_of(several) == ["destructive_tool"]
	ordered := decide_data(
		object.union(call_tool("remote", "wipe"), {"session": {"labels": ["private_data", "untrusted_content"], "calls": {"total": 0}}}),
		object.union(fixture_catalog, {"servers": {"remote": {"tools": {"wipe": {"labels": ["external_communication"]}}}}}),
		{},
		fixture_flows,
	)
	codes_of(ordered) == ["destructive_tool", "toxic_flow"]
}

# approval

test_approval_from_limits if {
	decide(call_tool("remote", "wipe")).approval == {"scope": "session", "ttl_seconds": 60}
}

test_approval_defaults_without_limits if {
	d := decide_limits(call_tool("remote", "wipe"), {})
	d.approval == {"scope": "once", "ttl_seconds": 900}
}

test_approval_ignores_invalid_limits if {
	d := decide_limits(call_tool("remote", "wipe"), {"approval": {"scope": "forever", "ttl_seconds": -5}})
	d.approval == {"scope": "once", "ttl_seconds": 900}
	f := decide_limits(call_tool("remote", "wipe"), {"approval": {"ttl_seconds": 1.5}})
	f.approval == {"scope": "once", "ttl_seconds": 900}
}

test_no_approval_on_allow if {
	not decide(call).approval
}

# action_unsupported

test_supported_actions_are_mcp_actions_and_session_actions if {
	request.session_actions == {"session/open", "session/renew"}
	count(request.mcp_actions) == 8
	every action in request.mcp_actions | request.session_actions {
		not "action_unsupported" in codes({"action": action})
	}
}

test_action_unsupported_fires if {
	every action in ["tools/delete", "session/extend", "session/close", "", "TOOLS/CALL", "Session/Renew"] {
		req := object.union(op("tools/list", "remote"), {"action": action})
		codes(req) == ["action_unsupported"]
	}
	codes({"action": 42}) == ["action_unsupported"]
	decide({"action": "session/extend"}).reasons[0].message == "action \"session/extend\" is not supported"
	decide({"action": 42}).reasons[0].message == "action \"\" is not supported"
}

test_action_unsupported_not_for_supported_actions if {
	every action in request.mcp_actions {
		not "action_unsupported" in codes(object.union(op(action, "remote"), {"operation": {"tool": "lookup"}}))
	}
	result(open_session(["remote"])) == "allow"
	not "action_unsupported" in codes(renew(0))
	decide_session_limits(renew(0), {"renewal": "allow"}).result == "allow"
}

test_action_unsupported_alone if {
	codes(object.union(op("tools/list", "ghost"), {"action": "tools/delete"})) == ["action_unsupported"]
}

# The session key: the lifetime ceiling of session/open and session/renew.

test_session_key_on_every_result_of_session_actions if {
	every action in request.session_actions {
		decide({"action": action}).session == {"max_ttl_seconds": 1800}
	}
	every req in [open_session(["local"]), open_session(["ghost"]), renew(0), renew(2)] {
		decide(req).session == {"max_ttl_seconds": 1800}
	}
	{result(open_session(["local"])), result(open_session(["ghost"])), result(renew(0)), result(renew(2))} == {"allow", "deny", "require_approval"}
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
	every action in request.mcp_actions {
		not decide(object.union(op(action, "remote"), {"operation": {"tool": "lookup"}})).session
		not decide(op(action, "ghost")).session
	}
	not decide(call_tool("remote", "wipe")).session
	not decide(object.union(renew(0), {"action": "session/extend"})).session
	not decide({}).session
	not decide({"action": 42}).session
}

# Other MCP operations on known servers are allowed when the catalog has nothing against them.

test_other_operations_allowed_on_known_servers if {
	every action in ["resources/read", "resources/list", "prompts/get", "prompts/list"] {
		result(op(action, "local")) == "allow"
		result(op(action, "remote")) == "allow"
	}
	every action in ["sampling/createMessage", "elicitation/create"] {
		result(op(action, "remote")) == "allow"
	}
}

# The shipped data.json.

ide := {"id": "https://ide.example.com/client.json"}

test_shipped_catalog_allows_and_labels if {
	shipped(github_call("search_issues")).result == "allow"
	shipped(github_call("search_issues")).labels == []
	d := shipped(github_call("create_issue"))
	d.result == "allow"
	d.labels == ["external_communication"]
	r := shipped(filesystem_call("read_file"))
	r.result == "allow"
	r.labels == ["private_data"]
	shipped(filesystem_call("write_file")).result == "allow"
	shipped(filesystem_call("list_directory")).result == "allow"
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
	shipped(object.union(filesystem_call("move_file"), {"operation": {"annotations": {"readOnlyHint": true}}})).result == "allow"
}

test_shipped_catalog_denies if {
	codes_of(shipped(github_call("drop_database"))) == ["tool_unknown"]
	codes_of(shipped(object.union(github_call("search_issues"), {"server": {"id": "slack"}}))) == ["server_unknown"]
	replay := object.union(github_call("search_issues"), {"credential": {"audience": ["https://mcp.slack.example.com"]}})
	codes_of(shipped(replay)) == ["audience_mismatch"]
	codes_of(shipped(object.union(github_call("search_issues"), {"credential": {"audience": []}}))) == ["credential_missing"]
}

test_shipped_scopes if {
	codes_of(shipped(github_call("get_file_contents"))) == ["scope_missing"]
	shipped(object.union(github_call("get_file_contents"), {"credential": {"scopes": ["repo"]}})).result == "allow"
}

test_shipped_session_budget if {
	shipped(object.union(github_call("search_issues"), {"session": {"calls": {"total": 99}}})).result == "allow"
	shipped(object.union(github_call("search_issues"), {"session": {"calls": {"total": 100}}})).result == "deny"
}

test_shipped_server_budget if {
	four := {"total": 4, "by_server": {"a": 1, "b": 1, "c": 1, "d": 1}}
	codes_of(shipped(object.union(github_call("search_issues"), {"session": {"calls": four}}))) == ["server_budget_exhausted"]
	three := {"total": 3, "by_server": {"a": 1, "b": 1, "c": 1}}
	shipped(object.union(github_call("search_issues"), {"session": {"calls": three}})).result == "allow"
}

test_shipped_toxic_flow if {
	research := object.union(call, {
		"server": {"id": "research", "transport": "remote"},
		"credential": {"audience": ["https://mcp.research.example.com"]},
		"operation": {"tool": "web_search"},
	})
	shipped(research).result == "allow"
	tainted := object.union(research, {"session": {"labels": ["private_data"], "calls": {"total": 1}}})
	d := shipped(tainted)
	d.result == "require_approval"
	codes_of(d) == ["toxic_flow"]
	exfil := object.union(github_call("create_issue"), {"session": {"labels": ["private_data", "untrusted_content"], "calls": {"total": 2}}})
	codes_of(shipped(exfil)) == ["toxic_flow"]
}

test_shipped_pinning if {
	git := object.union(call, {
		"server": {"id": "git", "transport": "stdio", "command_digest": "sha256:cffdd50d2f2d229bb0bddd91277eb3f97fbd07c8daa5c486d317de6ef53813d6"},
		"credential": {"audience": []},
		"operation": {"tool": "git_status", "definition_hash": "sha256:be261472ae776a08f7f47cf125196057463e7913cadaee2fcdf3653d815aea0d"},
	})
	shipped(git).result == "allow"
	codes_of(shipped(object.union(git, {"operation": {"definition_hash": "sha256:0000"}}))) == ["tool_definition_changed"]
	shipped(object.union(git, {"operation": {"definition_hash": "sha256:0000"}})).result == "deny"
	unverified := shipped(object.union(git, {"operation": {"definition_hash": ""}}))
	unverified.result == "require_approval"
	codes_of(unverified) == ["tool_definition_unverified"]
	codes_of(shipped(object.union(git, {"server": {"command_digest": ""}}))) == ["server_pin_missing"]
	codes_of(shipped(object.union(git, {"server": {"command_digest": "sha256:1111"}}))) == ["server_pin_mismatch"]
}

test_shipped_sampling_and_elicitation if {
	research := object.union(op("sampling/createMessage", "research"), {"credential": {"audience": ["https://mcp.research.example.com"]}})
	shipped(research).result == "allow"
	codes_of(shipped(object.union(research, {"operation": {"arguments": {"includeContext": "allServers"}}}))) == ["sampling_context_not_allowed"]
	github := object.union(op("sampling/createMessage", "github"), {"credential": {"audience": ["https://mcp.github.example.com"]}})
	codes_of(shipped(github)) == ["sampling_not_allowed"]
	elicit := object.union(github, {"action": "elicitation/create"})
	shipped(elicit).result == "allow"
	codes_of(shipped(object.union(elicit, {"operation": {"arguments": {"mode": "url"}}}))) == ["elicitation_not_allowed"]
	codes_of(shipped(object.union(op("elicitation/create", "filesystem"), {"credential": {"audience": []}}))) == ["elicitation_not_allowed"]
}

test_shipped_session_open if {
	# The clients of the README and the service's tests are known: an open naming no
	# servers, stdio servers or remote ones is allowed.
	every client in ["ide-agent", "https://ide.example.com/client.json"] {
		every servers in [[], ["filesystem"], ["github"], ["github", "filesystem"]] {
			shipped(object.union(open_session(servers), {"client": {"id": client}})).result == "allow"
		}
	}
	d := shipped(object.union(open_session([]), {"client": {"id": "https://stranger.example.com/client.json"}}))
	d.result == "require_approval"
	codes_of(d) == ["client_unknown"]
}

test_shipped_session_lifetime if {
	shipped(object.union(open_session(["filesystem"]), {"client": ide})).session == {"max_ttl_seconds": 3600}
	shipped(object.union(open_session([]), {"client": ide})).session == {"max_ttl_seconds": 3600}
	shipped(object.union(open_session(["github", "filesystem"]), {"client": ide})).session == {"max_ttl_seconds": 1800}
	shipped(renew(0)).session == {"max_ttl_seconds": 3600}
	shipped(object.union(renew(0), {"session_request": {"servers": ["github"]}})).session == {"max_ttl_seconds": 1800}
	not shipped(github_call("search_issues")).session
}

test_shipped_session_renewal if {
	d := shipped(renew(0))
	d.result == "require_approval"
	codes_of(d) == ["renewal_requires_approval"]
	d.approval == {"scope": "once", "ttl_seconds": 900}
	shipped(renew(2)).result == "require_approval"
	codes_of(shipped(renew(3))) == ["renewal_limit"]
	shipped(renew(3)).reasons[0].message == "session has used 3 of its 3 renewals"
}

test_shipped_annotations_are_hints_only if {
	# Hints cannot clear a tool the catalog calls destructive, nor make a read-only one
	# need approval.
	shipped(object.union(filesystem_call("delete_file"), {"operation": {"annotations": {"readOnlyHint": true, "destructiveHint": false}}})).result == "require_approval"
	shipped(object.union(filesystem_call("read_file"), {"operation": {"annotations": {"readOnlyHint": false, "destructiveHint": true}}})).result == "allow"
}
