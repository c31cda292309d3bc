# Fixtures shared by the policy's unit tests: a small catalog and limits that do not move when
# data.json is edited, requests built from one well-formed call, and helpers that decide a
# request. This file holds no tests; being a *_test.rego file, it is never part of the
# decision policy the engine loads.
package mcp_test.fixtures

import data.mcp

catalog := {
	"clients": {"client-1": {"owner": "team-a"}},
	"servers": {
		"remote": {
			"owner": "team-a",
			"transport": "remote",
			"resource": "https://remote.example.com",
			"sampling": {"allowed": true, "max_tokens": 1000, "include_context": ["thisServer"]},
			"elicitation": {"modes": ["form", "url"]},
			"tools": {
				"lookup": {"read_only": true, "labels": ["private_data", "external_communication", "private_data"]},
				"update": {"destructive": false},
				"wipe": {"destructive": true},
				"unrated": {},
				"scoped": {"read_only": true, "scopes": ["repo", "admin:org"]},
				"pinned": {"read_only": true, "definition_hash": "sha256:good"},
				"limited": {"read_only": true, "max_calls_per_session": 2},
				"fetch": {"read_only": true, "labels": ["untrusted_content", "external_communication"]},
				"send": {"destructive": false, "labels": ["external_communication"]},
			},
		},
		"local": {
			"owner": "team-b",
			"transport": "stdio",
			"tools": {
				"read": {"read_only": true},
				"write": {"read_only": false},
				"unrated": {"labels": ["local_write"]},
				"secrets": {"read_only": true, "labels": ["private_data"]},
				"inbox": {"read_only": true, "labels": ["untrusted_content"]},
			},
		},
		"pinned_local": {
			"owner": "team-b",
			"transport": "stdio",
			"command_digests": ["sha256:launch-1", "sha256:launch-2"],
			"tools": {"read": {"read_only": true}},
		},
		"slashed": {
			"owner": "team-c",
			"transport": "remote",
			"resource": "https://slashed.example.com/mcp/",
			"tools": {"ping": {"read_only": true}},
		},
		"no_resource": {"owner": "team-d", "transport": "remote", "tools": {}},
		"untyped": {"owner": "team-e", "resource": "https://untyped.example.com", "tools": {"ping": {"read_only": true}}},
		"ownerless": {"transport": "stdio", "tools": {"read": {"read_only": true}}},
		"blank_owner": {"owner": " ", "transport": "stdio", "tools": {"read": {"read_only": true}}},
	},
}

limits := {
	"session": {"max_calls": 3, "max_ttl_seconds": 1800, "max_renewals": 2},
	"approval": {"scope": "session", "ttl_seconds": 60},
}

flows := {"toxic": [{
	"name": "exfiltration",
	"sources": ["private_data", "untrusted_content"],
	"sink": "external_communication",
	"on_match": "approval",
}]}

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

# The call request with some fields replaced (objects merge, other values are replaced).
patched(patch) := object.union(call, patch)

# The call request inside an active session that has made n calls of the tool.
with_calls(n) := patched({"session": {
	"id": "s-1",
	"status": "active",
	"servers": ["remote"],
	"calls": {"total": n, "by_server": {"remote": n}, "by_tool": {"remote": {"lookup": n}}},
	"labels": [],
	"history": [],
}})

# A request in an active session whose calls and labels are given.
in_session(req, calls, labels) := object.union(req, {"session": {
	"id": "s-1",
	"status": "active",
	"servers": [],
	"calls": calls,
	"labels": labels,
	"history": [],
}})

# An operation of the given action on server, naming no tool, with no credential.
op(action, server) := patched({
	"action": action,
	"server": {"id": server, "transport": ""},
	"operation": {"method": action, "tool": ""},
})

# A call of tool on server (the credential still fits the remote server).
call_tool(server, tool) := patched({"server": {"id": server, "transport": ""}, "operation": {"tool": tool}})

# A call of tool on the local server with the given annotations.
annotated(tool, annotations) := patched({
	"server": {"id": "local", "transport": "stdio"},
	"operation": {"tool": tool, "annotations": annotations},
})

# A session/open by client-1 naming servers.
open_session(servers) := {
	"action": "session/open",
	"client": {"id": "client-1"},
	"server": {"id": "", "resource": "", "transport": ""},
	"session": null,
	"session_request": {"servers": servers, "ttl_seconds": 600},
}

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

# decide is the decision on the fixture catalog, limits and flows.
decide(req) := d if {
	d := mcp.decision with input as req
		with data.catalog as catalog
		with data.limits as limits
		with data.flows as flows
}

# decide_limits is the decision with data.limits replaced by l.
decide_limits(req, l) := d if {
	d := mcp.decision with input as req
		with data.catalog as catalog
		with data.limits as l
		with data.flows as flows
}

# decide_session_limits is the decision with limits.session replaced by session_limits.
decide_session_limits(req, session_limits) := decide_limits(req, {"session": session_limits, "approval": limits.approval})

# decide_data is the decision with data.catalog, data.limits and data.flows as given.
decide_data(req, c, l, f) := d if {
	d := mcp.decision with input as req
		with data.catalog as c
		with data.limits as l
		with data.flows as f
}

codes(req) := [r.code | some r in decide(req).reasons]

codes_of(d) := [r.code | some r in d.reasons]

result(req) := decide(req).result

# shipped is the decision on the shipped data.json.
shipped(req) := d if {
	d := mcp.decision with input as req
}

github_call(tool) := object.union(call, {
	"client": {"id": "https://ide.example.com/client.json"},
	"server": {"id": "github", "resource": "https://mcp.github.example.com", "transport": "remote"},
	"credential": {"audience": ["https://mcp.github.example.com"]},
	"operation": {"tool": tool},
})

filesystem_call(tool) := object.union(call, {
	"client": {"id": "https://ide.example.com/client.json"},
	"server": {"id": "filesystem", "resource": "", "transport": "stdio"},
	"credential": {"audience": []},
	"operation": {"tool": tool},
})
