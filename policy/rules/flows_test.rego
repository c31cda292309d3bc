# Toxic flows: the rule firing and not firing.
package mcp.flows_test

import data.mcp_test.fixtures.call
import data.mcp_test.fixtures.call_tool
import data.mcp_test.fixtures.catalog as fixture_catalog
import data.mcp_test.fixtures.codes
import data.mcp_test.fixtures.decide
import data.mcp_test.fixtures.decide_data
import data.mcp_test.fixtures.flows as fixture_flows
import data.mcp_test.fixtures.in_session
import data.mcp_test.fixtures.limits as fixture_limits
import data.mcp_test.fixtures.result

# A call of tool on server in a session that has seen labels.
after(labels, server, tool) := in_session(
	object.union(call_tool(server, tool), {"server": {"transport": ""}}),
	{"total": 1, "by_server": {}, "by_tool": {}},
	labels,
)

# The decision on the fixture catalog and limits with the given flows.
with_flows(req, flows) := decide_data(req, fixture_catalog, fixture_limits, flows)

test_toxic_flow_fires_when_sink_follows_both_sources if {
	d := decide(after(["private_data", "untrusted_content"], "remote", "send"))
	d == {
		"result": "require_approval",
		"reasons": [{
			"code": "toxic_flow",
			"message": "tool \"send\" of server \"remote\" is labelled \"external_communication\" and the session has seen [\"private_data\", \"untrusted_content\"]: flow \"exfiltration\"",
		}],
		"labels": ["external_communication"],
		"obligations": {},
		"approval": {"scope": "session", "ttl_seconds": 60},
	}
}

test_toxic_flow_counts_the_labels_of_the_call_itself if {
	# fetch ingests untrusted content and communicates: private data read earlier is enough.
	codes(after(["private_data"], "remote", "fetch")) == ["toxic_flow"]

	# lookup reads private data and communicates: untrusted content seen earlier is enough.
	codes(after(["untrusted_content"], "remote", "lookup")) == ["toxic_flow"]
}

test_toxic_flow_denies_when_the_flow_says if {
	deny_flow := {"toxic": [object.union(fixture_flows.toxic[0], {"on_match": "deny"})]}
	d := with_flows(after(["private_data", "untrusted_content"], "remote", "send"), deny_flow)
	d.result == "deny"
	[r.code | some r in d.reasons] == ["toxic_flow"]
	no_mode := {"toxic": [object.remove(fixture_flows.toxic[0], ["on_match"])]}
	with_flows(after(["private_data", "untrusted_content"], "remote", "send"), no_mode).result == "require_approval"
}

test_toxic_flow_not_with_a_source_missing if {
	result(after(["private_data"], "remote", "send")) == "allow"
	result(after(["untrusted_content"], "remote", "send")) == "allow"
	result(after([], "remote", "fetch")) == "allow"
	result(after([], "remote", "lookup")) == "allow"
}

test_toxic_flow_not_for_a_tool_that_is_not_a_sink if {
	result(after(["private_data", "untrusted_content"], "local", "secrets")) == "allow"
	result(after(["private_data", "untrusted_content"], "remote", "update")) == "allow"
}

test_toxic_flow_not_outside_a_session_or_for_other_actions if {
	result(call_tool("remote", "send")) == "allow"
	result(object.union(after(["private_data", "untrusted_content"], "remote", "send"), {"action": "tools/list"})) == "allow"
}

test_toxic_flow_not_without_flows if {
	every flows in [{}, {"toxic": []}, {"toxic": [{"name": "x"}]}, {"toxic": [{"name": "x", "sink": "external_communication"}]}, {"toxic": ["x"]}, {"toxic": [{"name": "x", "sink": "external_communication", "sources": "private_data"}]}, null] {
		with_flows(after(["private_data", "untrusted_content"], "remote", "send"), flows).result == "allow"
	}
}

test_toxic_flow_reports_each_flow_completed if {
	two := {"toxic": [
		fixture_flows.toxic[0],
		{"name": "leak", "sources": ["private_data"], "sink": "external_communication", "on_match": "deny"},
	]}
	d := with_flows(after(["private_data", "untrusted_content"], "remote", "send"), two)
	d.result == "deny"
	count(d.reasons) == 1
	contains(d.reasons[0].message, "flow \"leak\"")
	a := with_flows(after(["private_data"], "remote", "send"), {"toxic": [two.toxic[1]]})
	a.result == "deny"
	result(object.union(call, {"session": {"labels": null, "calls": {"total": 0}}})) == "allow"
}
