# METADATA
# title: Server catalog, ownership and trust classes
# description: >-
#   Every server a request reaches must be in the catalog with an owner. Local (stdio) and
#   remote servers are different trust classes: the gateway must reach a server the way the
#   catalog says, and a stdio server the catalog pins must have been launched from an approved
#   command or package. (The credential a remote server needs is checked in credentials.rego.)
#
#   Every rule body starts with a test of input.action against constants, which OPA's rule
#   index evaluates once for all rules, and reads input and catalog entries directly: a
#   decision runs on every MCP call.
package mcp.servers

import data.mcp.catalog
import data.mcp.request

# server_unknown: the MCP operation targets a server that is not in the catalog.
deny contains {
	"code": "server_unknown",
	"message": sprintf("server %q is not in the catalog", [request.server_id]),
} if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	not catalog.server
}

# server_unknown: a session may be bound only to catalog servers.
deny contains {
	"code": "server_unknown",
	"message": sprintf("server %q is not in the catalog", [id]),
} if {
	input.action == "session/open"
	some id in request.requested_servers
	not catalog.server_by_id(id)
}

# server_owner_missing: nobody answers for the server, so nothing may reach it. An owner is a
# string that is not blank.
deny contains owner_missing if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	not is_string(object.get(catalog.server, "owner", null))
}

deny contains owner_missing if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	owner := catalog.server.owner
	is_string(owner)
	trim_space(owner) == ""
}

owner_missing := {
	"code": "server_owner_missing",
	"message": sprintf("server %q has no owner in the catalog", [request.server_id]),
}

# server_owner_missing: nor may a session be bound to it.
deny contains {
	"code": "server_owner_missing",
	"message": sprintf("server %q has no owner in the catalog", [id]),
} if {
	input.action == "session/open"
	some id in request.requested_servers
	s := catalog.server_by_id(id)
	not catalog.owned(s)
}

# server_transport_mismatch: the gateway reached the server over another transport than the
# catalog's: a "local" server that is in fact remote, or a remote id shadowed by a local one.
# A server whose transport the catalog does not state is a remote one (see catalog.rego).
deny contains transport_mismatch if {
	input.server.transport == "stdio"
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	s := catalog.server
	not s.transport == "stdio"
}

deny contains transport_mismatch if {
	input.server.transport == "remote"
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	catalog.server.transport == "stdio"
}

transport_mismatch := {
	"code": "server_transport_mismatch",
	"message": sprintf(
		"server %q is reached over %q but the catalog says %q",
		[request.server_id, input.server.transport, catalog.trust_class(catalog.server)],
	),
}

# server_pin_missing: the catalog pins the stdio server's launch command or package, and the
# gateway did not say what it launched (input.server.command_digest).
deny contains {
	"code": "server_pin_missing",
	"message": sprintf("server %q is pinned to approved launch digests and the request gives none", [request.server_id]),
} if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	s := catalog.server
	digests := s.command_digests
	s.transport == "stdio"
	count(digests) > 0
	request.command_digest == ""
}

# server_pin_mismatch: the stdio server was launched from a command or package the catalog
# does not approve.
deny contains {
	"code": "server_pin_mismatch",
	"message": sprintf("server %q was launched from %q, which is not an approved launch digest", [request.server_id, request.command_digest]),
} if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	s := catalog.server
	digests := s.command_digests
	s.transport == "stdio"
	count(digests) > 0
	request.command_digest != ""
	not request.command_digest in digests
}
