# Tool catalog, pinning, risk and labels: each rule firing and not firing.
package mcp.tools_test

import data.mcp.tools
import data.mcp_test.fixtures.annotated
import data.mcp_test.fixtures.call
import data.mcp_test.fixtures.call_tool
import data.mcp_test.fixtures.catalog as fixture_catalog
import data.mcp_test.fixtures.codes
import data.mcp_test.fixtures.codes_of
import data.mcp_test.fixtures.decide
import data.mcp_test.fixtures.decide_limits
import data.mcp_test.fixtures.op
import data.mcp_test.fixtures.patched
import data.mcp_test.fixtures.result
import data.mcp_test.fixtures.with_calls

# A tools/list that FilterTools sends for one tool.
listed(server, tool) := object.union(op("tools/list", server), {"operation": {"tool": tool}})

# The pinned tool, with the definition hash the gateway reports.
pinned(hash) := object.union(call_tool("remote", "pinned"), {"operation": {"definition_hash": hash}})

pinning(p) := {"pinning": p}

# tool_unknown

test_tool_unknown_fires_on_call if {
	codes(call_tool("remote", "nope")) == ["tool_unknown"]
	codes(call_tool("remote", "")) == ["tool_unknown"]
	codes(call_tool("local", "lookup")) == ["tool_unknown"]
	codes(object.remove(call_tool("remote", "unrated"), ["operation"])) == ["tool_unknown"]
}

test_tool_unknown_fires_on_filtered_tools_list if {
	d := decide(listed("local", "nope"))
	d.reasons == [{"code": "tool_unknown", "message": "tool \"nope\" is not in the catalog of server \"local\""}]
}

test_tool_unknown_not_for_known_tool if {
	not "tool_unknown" in codes(call_tool("local", "read"))
	result(listed("remote", "lookup")) == "allow"
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

# tool_definition_changed

test_tool_definition_changed_denied_by_default if {
	d := decide(pinned("sha256:evil"))
	d == {
		"result": "deny",
		"reasons": [{
			"code": "tool_definition_changed",
			"message": "tool \"pinned\" of server \"remote\" has definition hash \"sha256:evil\", not the pinned \"sha256:good\"",
		}],
		"labels": [],
		"obligations": {},
	}
	codes_of(decide_limits(pinned("sha256:evil"), pinning({"definition_changed": "deny"}))) == ["tool_definition_changed"]
	codes_of(decide_limits(pinned("sha256:evil"), pinning({"definition_changed": "maybe"}))) == ["tool_definition_changed"]
	decide_limits(pinned("sha256:evil"), pinning({"definition_changed": "maybe"})).result == "deny"
}

test_tool_definition_changed_requires_approval_when_data_says if {
	d := decide_limits(pinned("sha256:evil"), pinning({"definition_changed": "approval"}))
	d.result == "require_approval"
	codes_of(d) == ["tool_definition_changed"]
}

test_tool_definition_changed_hides_tool_from_filtered_list if {
	codes(object.union(listed("remote", "pinned"), {"operation": {"definition_hash": "sha256:evil"}})) == ["tool_definition_changed"]
}

test_tool_definition_changed_not_when_hash_matches if {
	result(pinned("sha256:good")) == "allow"
	result(object.union(listed("remote", "pinned"), {"operation": {"definition_hash": "sha256:good"}})) == "allow"
}

test_tool_definition_changed_not_for_unpinned_tool if {
	result(object.union(call, {"operation": {"definition_hash": "sha256:whatever"}})) == "allow"
}

test_tool_definition_changed_not_for_other_actions if {
	result(object.union(op("resources/read", "remote"), {"operation": {"tool": "pinned", "definition_hash": "sha256:evil"}})) == "allow"
}

# tool_definition_unverified

test_tool_definition_unverified_allowed_by_default if {
	result(pinned("")) == "allow"
	result(object.union(pinned(""), {"operation": {"definition_hash": null}})) == "allow"
	decide_limits(pinned(""), pinning({"definition_missing": "allow"})).result == "allow"
}

test_tool_definition_unverified_fires_when_data_says if {
	a := decide_limits(pinned(""), pinning({"definition_missing": "approval"}))
	a.result == "require_approval"
	a.reasons == [{
		"code": "tool_definition_unverified",
		"message": "tool \"pinned\" of server \"remote\" is pinned and the request carries no definition hash",
	}]
	d := decide_limits(pinned(""), pinning({"definition_missing": "deny"}))
	d.result == "deny"
	codes_of(d) == ["tool_definition_unverified"]
}

test_tool_definition_unverified_not_with_a_hash_or_without_pin if {
	decide_limits(pinned("sha256:good"), pinning({"definition_missing": "deny"})).result == "allow"
	decide_limits(call, pinning({"definition_missing": "deny"})).result == "allow"
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
	result(listed("remote", "wipe")) == "allow"
}

test_destructive_tool_not_for_unknown_tool if {
	codes(call_tool("remote", "nope")) == ["tool_unknown"]
	a := tools.approve with input as call_tool("remote", "nope") with data.catalog as fixture_catalog
	a == set()
}

# labels

test_labels_of_called_tool_sorted_and_deduplicated if {
	decide(call).labels == ["external_communication", "private_data"]
	decide(annotated("unrated", {"destructiveHint": false})).labels == ["local_write"]
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
	decide(listed("remote", "lookup")).labels == []
}

test_labels_ignore_malformed_catalog_labels if {
	catalog := {"servers": {"s": {"owner": "o", "transport": "stdio", "tools": {
		"t": {"read_only": true, "labels": ["a", 1, null]},
		"u": {"read_only": true, "labels": "a"},
	}}}}
	l1 := tools.labels with input as call_tool("s", "t") with data.catalog as catalog
	l1 == ["a"]
	l2 := tools.labels with input as call_tool("s", "u") with data.catalog as catalog
	l2 == []
}
