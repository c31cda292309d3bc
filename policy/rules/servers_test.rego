# Server catalog, ownership and trust classes: each rule firing and not firing.
package mcp.servers_test

import data.mcp.request
import data.mcp_test.fixtures.call_tool
import data.mcp_test.fixtures.codes
import data.mcp_test.fixtures.decide
import data.mcp_test.fixtures.op
import data.mcp_test.fixtures.open_session
import data.mcp_test.fixtures.patched
import data.mcp_test.fixtures.result

# A call of the local "read" tool on server id over transport, with no credential.
local_read(id, transport) := patched({
	"server": {"id": id, "transport": transport},
	"credential": {"audience": []},
	"operation": {"tool": "read"},
})

# A call on the pinned stdio server, launched from digest.
launched(digest) := object.union(local_read("pinned_local", "stdio"), {"server": {"command_digest": digest}})

# server_unknown

test_server_unknown_fires if {
	d := decide(op("resources/read", "ghost"))
	d.reasons == [{"code": "server_unknown", "message": "server \"ghost\" is not in the catalog"}]
	codes(call_tool("ghost", "lookup")) == ["server_unknown"]
	codes(patched({"server": {"id": ""}})) == ["server_unknown"]
	codes(patched({"server": {"id": 7}})) == ["server_unknown"]
	codes(object.remove(patched({}), ["server"])) == ["server_unknown"]
}

test_server_unknown_fires_for_every_mcp_action if {
	every action in request.mcp_actions {
		"server_unknown" in codes(op(action, "ghost"))
	}
}

test_server_unknown_not_for_known_server if {
	every server in ["remote", "local"] {
		not "server_unknown" in codes(op("prompts/get", server))
	}
}

test_server_unknown_fires_in_session_open if {
	decide(open_session(["local", "ghost"])).reasons == [
		{"code": "server_unknown", "message": "server \"ghost\" is not in the catalog"},
	]
	codes(open_session("ghost")) == ["server_unknown"]
	codes(open_session([7])) == ["server_unknown"]
}

test_server_unknown_not_in_session_open_of_known_or_no_servers if {
	result(open_session(["local", "remote"])) == "allow"
	result(open_session([])) == "allow"
	result({"action": "session/open", "client": {"id": "client-1"}}) == "allow"
	result({"action": "session/open", "client": {"id": "client-1"}, "session_request": {"servers": null}}) == "allow"
	result(object.union(open_session([]), {"session_request": {"servers": "local"}})) == "allow"
}

test_server_unknown_not_for_renewal if {
	every server in [{}, {"id": ""}, {"id": "ghost"}, null] {
		not "server_unknown" in codes(object.union(open_session(["ghost"]), {"action": "session/renew", "server": server}))
	}
}

# server_owner_missing

test_server_owner_missing_fires if {
	d := decide(local_read("ownerless", "stdio"))
	d.reasons == [{"code": "server_owner_missing", "message": "server \"ownerless\" has no owner in the catalog"}]
	codes(local_read("blank_owner", "stdio")) == ["server_owner_missing"]
	every action in request.mcp_actions {
		"server_owner_missing" in codes(op(action, "ownerless"))
	}
}

test_server_owner_missing_fires_in_session_open if {
	decide(open_session(["local", "ownerless", "blank_owner"])).reasons == [
		{"code": "server_owner_missing", "message": "server \"blank_owner\" has no owner in the catalog"},
		{"code": "server_owner_missing", "message": "server \"ownerless\" has no owner in the catalog"},
	]
}

test_server_owner_missing_not_for_owned_or_unknown_servers if {
	result(local_read("local", "stdio")) == "allow"
	codes(local_read("ghost", "stdio")) == ["server_unknown"]
	result(open_session(["local", "remote"])) == "allow"
	codes(open_session(["ghost"])) == ["server_unknown"]
}

# server_transport_mismatch

test_server_transport_mismatch_fires if {
	d := decide(local_read("local", "remote"))
	d.reasons == [{
		"code": "server_transport_mismatch",
		"message": "server \"local\" is reached over \"remote\" but the catalog says \"stdio\"",
	}]
	codes(patched({"server": {"transport": "stdio"}})) == ["server_transport_mismatch"]
	every action in request.mcp_actions {
		"server_transport_mismatch" in codes(object.union(op(action, "remote"), {"server": {"transport": "stdio"}}))
	}
}

test_server_transport_mismatch_not_when_matching_or_unsaid if {
	result(local_read("local", "stdio")) == "allow"
	result(local_read("local", "")) == "allow"
	result(local_read("local", null)) == "allow"
	result(local_read("local", "sse")) == "allow"
	result(patched({"server": {"transport": "remote"}})) == "allow"
}

test_server_without_transport_is_remote if {
	untyped := patched({"server": {"id": "untyped", "transport": "remote"}, "operation": {"tool": "ping"}, "credential": {"audience": ["https://untyped.example.com"]}})
	result(untyped) == "allow"
	codes(object.union(untyped, {"server": {"transport": "stdio"}})) == ["server_transport_mismatch"]
	codes(object.union(untyped, {"credential": {"audience": []}})) == ["credential_missing"]
}

# server_pin_missing and server_pin_mismatch

test_server_pin_missing_fires if {
	d := decide(local_read("pinned_local", "stdio"))
	d.reasons == [{
		"code": "server_pin_missing",
		"message": "server \"pinned_local\" is pinned to approved launch digests and the request gives none",
	}]
	codes(launched("")) == ["server_pin_missing"]
	codes(launched(42)) == ["server_pin_missing"]
	every action in request.mcp_actions {
		"server_pin_missing" in codes(op(action, "pinned_local"))
	}
}

test_server_pin_mismatch_fires if {
	d := decide(launched("sha256:evil"))
	d.reasons == [{
		"code": "server_pin_mismatch",
		"message": "server \"pinned_local\" was launched from \"sha256:evil\", which is not an approved launch digest",
	}]
	every action in request.mcp_actions {
		"server_pin_mismatch" in codes(object.union(op(action, "pinned_local"), {"server": {"command_digest": "sha256:evil"}}))
	}
}

test_server_pin_not_for_approved_digests if {
	result(launched("sha256:launch-1")) == "allow"
	result(launched("sha256:launch-2")) == "allow"
}

test_server_pin_not_for_unpinned_servers if {
	result(object.union(local_read("local", "stdio"), {"server": {"command_digest": "sha256:anything"}})) == "allow"
	result(local_read("local", "stdio")) == "allow"
}

test_server_pin_only_for_stdio_servers if {
	pinned_remote := {"servers": {"r": {
		"owner": "o",
		"transport": "remote",
		"resource": "https://remote.example.com",
		"command_digests": ["sha256:x"],
		"tools": {"lookup": {"read_only": true}},
	}}}
	d := data.mcp.decision with input as patched({"server": {"id": "r"}}) with data.catalog as pinned_remote
	d.result == "allow"
}
