# Sampling and elicitation: each rule firing and not firing.
package mcp.server_requests_test

import data.mcp_test.fixtures.codes
import data.mcp_test.fixtures.decide
import data.mcp_test.fixtures.op
import data.mcp_test.fixtures.result

# A sampling/createMessage from server with the given params.
sampling(server, params) := object.union(op("sampling/createMessage", server), {"operation": {"arguments": params}})

# An elicitation/create from server with the given params.
elicitation(server, params) := object.union(op("elicitation/create", server), {"operation": {"arguments": params}})

# sampling_not_allowed

test_sampling_not_allowed_fires if {
	d := decide(sampling("local", {}))
	d.reasons == [{"code": "sampling_not_allowed", "message": "server \"local\" may not request sampling"}]
	codes(sampling("slashed", {"maxTokens": 10})) == ["audience_mismatch", "sampling_not_allowed"]
}

test_sampling_not_allowed_unless_allowed_is_true if {
	every sampling_entry in [{"allowed": "true"}, {"allowed": false}, {}, true, null] {
		catalog := {"servers": {"s": {"owner": "o", "transport": "stdio", "sampling": sampling_entry, "tools": {}}}}
		d := data.mcp.decision with input as sampling("s", {}) with data.catalog as catalog
		[r.code | some r in d.reasons] == ["sampling_not_allowed"]
	}
}

test_sampling_not_allowed_not_when_catalog_allows if {
	result(sampling("remote", {})) == "allow"
	result(sampling("remote", {"maxTokens": 1000, "includeContext": "none"})) == "allow"
}

test_sampling_not_allowed_not_for_unknown_server if {
	codes(sampling("ghost", {})) == ["server_unknown"]
}

# sampling_context_not_allowed

test_sampling_context_not_allowed_fires if {
	d := decide(sampling("remote", {"includeContext": "allServers"}))
	d.reasons == [{
		"code": "sampling_context_not_allowed",
		"message": "server \"remote\" may not request sampling with includeContext \"allServers\"",
	}]
	catalog := {"servers": {"s": {"owner": "o", "transport": "stdio", "sampling": {"allowed": true}, "tools": {}}}}
	t := data.mcp.decision with input as sampling("s", {"includeContext": "thisServer"}) with data.catalog as catalog
	[r.code | some r in t.reasons] == ["sampling_context_not_allowed"]
}

test_sampling_context_not_allowed_not_when_listed_or_none if {
	result(sampling("remote", {"includeContext": "thisServer"})) == "allow"
	result(sampling("remote", {"includeContext": "none"})) == "allow"
	result(sampling("remote", {"includeContext": 3})) == "allow"
}

test_sampling_context_not_allowed_not_when_sampling_is_not_allowed if {
	codes(sampling("local", {"includeContext": "allServers"})) == ["sampling_not_allowed"]
}

# sampling_tokens_exceeded

test_sampling_tokens_exceeded_fires if {
	d := decide(sampling("remote", {"maxTokens": 1001}))
	d.reasons == [{"code": "sampling_tokens_exceeded", "message": "server \"remote\" asks for 1001 tokens, more than its 1000"}]
}

test_sampling_tokens_exceeded_not_within_limit_or_without_one if {
	result(sampling("remote", {"maxTokens": 1000})) == "allow"
	result(sampling("remote", {"maxTokens": "5000"})) == "allow"
	catalog := {"servers": {"s": {"owner": "o", "transport": "stdio", "sampling": {"allowed": true, "max_tokens": "10"}, "tools": {}}}}
	d := data.mcp.decision with input as sampling("s", {"maxTokens": 100000}) with data.catalog as catalog
	d.result == "allow"
}

# elicitation_not_allowed

test_elicitation_not_allowed_fires if {
	d := decide(elicitation("local", {}))
	d.reasons == [{"code": "elicitation_not_allowed", "message": "server \"local\" may not request form elicitation"}]
	codes(elicitation("local", {"mode": "url", "url": "https://phish.example.com"})) == ["elicitation_not_allowed"]
	codes(elicitation("remote", {"mode": "telepathy"})) == ["elicitation_not_allowed"]
	catalog := {"servers": {"s": {"owner": "o", "transport": "stdio", "elicitation": {"modes": ["form"]}, "tools": {}}}}
	u := data.mcp.decision with input as elicitation("s", {"mode": "url"}) with data.catalog as catalog
	u.reasons == [{"code": "elicitation_not_allowed", "message": "server \"s\" may not request url elicitation"}]
}

test_elicitation_not_allowed_not_for_listed_modes if {
	result(elicitation("remote", {})) == "allow"
	result(elicitation("remote", {"mode": "form"})) == "allow"
	result(elicitation("remote", {"mode": "url", "url": "https://login.example.com"})) == "allow"
	result(elicitation("remote", {"mode": 7})) == "allow"
}

test_elicitation_not_allowed_not_for_unknown_server if {
	codes(elicitation("ghost", {})) == ["server_unknown"]
}
