# Credentials, audience and scopes: each rule firing and not firing.
package mcp.credentials_test

import data.mcp.request
import data.mcp_test.fixtures.call
import data.mcp_test.fixtures.codes
import data.mcp_test.fixtures.decide
import data.mcp_test.fixtures.op
import data.mcp_test.fixtures.open_session
import data.mcp_test.fixtures.patched
import data.mcp_test.fixtures.result

local_read := patched({"server": {"id": "local", "transport": "stdio"}, "operation": {"tool": "read"}})

scoped(scopes) := patched({"operation": {"tool": "scoped"}, "credential": {"scopes": scopes}})

# credential_missing

test_credential_missing_fires if {
	d := decide(patched({"credential": {"audience": []}}))
	d.reasons == [{
		"code": "credential_missing",
		"message": "server \"remote\" is remote and the credential names no audience",
	}]
	codes(object.remove(call, ["credential"])) == ["credential_missing"]
	codes(patched({"credential": {"audience": ""}})) == ["credential_missing"]
	codes(patched({"credential": null})) == ["credential_missing"]
	every action in request.mcp_actions {
		"credential_missing" in codes(object.union(op(action, "remote"), {"credential": {"audience": []}}))
	}
}

test_credential_missing_not_for_stdio_server if {
	result(object.union(local_read, {"credential": {"audience": []}})) == "allow"
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
	codes(patched({"credential": {"audience": "https://other.example.com"}})) == ["audience_mismatch"]
	every action in request.mcp_actions {
		"audience_mismatch" in codes(object.union(op(action, "remote"), {"credential": {"audience": ["https://other.example.com"]}}))
	}
}

test_audience_mismatch_fires_when_catalog_lacks_resource if {
	req := patched({"server": {"id": "no_resource"}, "operation": {"tool": ""}, "action": "tools/list", "credential": {"audience": [""]}})
	codes(req) == ["audience_mismatch"]
	decide(req).reasons[0].message == "credential audience does not include the resource \"\" of server \"no_resource\""
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
	result(object.union(local_read, {"credential": {"audience": ["https://other.example.com"]}})) == "allow"
}

# scope_missing

test_scope_missing_fires_naming_each_missing_scope if {
	d := decide(scoped([]))
	d.result == "deny"
	d.reasons == [
		{"code": "scope_missing", "message": "tool \"scoped\" of server \"remote\" requires scope \"admin:org\", which the credential does not grant"},
		{"code": "scope_missing", "message": "tool \"scoped\" of server \"remote\" requires scope \"repo\", which the credential does not grant"},
	]
	decide(scoped(["repo", "read:org"])).reasons == [
		{"code": "scope_missing", "message": "tool \"scoped\" of server \"remote\" requires scope \"admin:org\", which the credential does not grant"},
	]
	codes(object.remove(scoped([]), ["credential"])) == ["credential_missing", "scope_missing", "scope_missing"]
	codes(scoped(null)) == ["scope_missing", "scope_missing"]
	codes(scoped("REPO admin:org")) == ["scope_missing"]
}

test_scope_missing_not_when_granted if {
	result(scoped(["repo", "admin:org"])) == "allow"
	result(scoped(["openid", "admin:org", "repo"])) == "allow"
	result(scoped("repo admin:org")) == "allow"
	result(scoped("  repo   admin:org ")) == "allow"
}

test_scope_missing_not_for_tools_without_scopes if {
	result(patched({"credential": {"scopes": []}})) == "allow"
}

test_scope_missing_only_for_tools_call if {
	result(object.union(scoped([]), {"action": "tools/list"})) == "allow"
}

test_scope_missing_ignores_malformed_catalog_scopes if {
	catalog := {"servers": {"s": {"owner": "o", "transport": "stdio", "tools": {
		"t": {"read_only": true, "scopes": ["a", 1, null, ""]},
		"u": {"read_only": true, "scopes": "a"},
	}}}}
	t := data.mcp.decision with input as patched({"server": {"id": "s", "transport": ""}, "operation": {"tool": "t"}}) with data.catalog as catalog
	[r.code | some r in t.reasons] == ["scope_missing"]
	u := data.mcp.decision with input as patched({"server": {"id": "s", "transport": ""}, "operation": {"tool": "u"}}) with data.catalog as catalog
	u.result == "allow"
}
