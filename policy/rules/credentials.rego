# METADATA
# title: Credentials, audience and scopes
# description: >-
#   A remote server is reached only with an OAuth token issued for it (RFC 8707 resource in
#   the audience), so a token minted for one server cannot be replayed at another. A tool may
#   require scopes; each missing scope is a reason of its own that names it. Arbiter sees the
#   claims of a token the gateway has validated, never the token.
package mcp.credentials

import data.mcp.catalog
import data.mcp.request

# credential_missing: a remote server is reached only with a token bound to it. A server whose
# transport the catalog does not state counts as remote. (audience_matches comes before the
# rest in both rules: for a remote server it is the common case, and it settles both.)
deny contains {
	"code": "credential_missing",
	"message": sprintf("server %q is remote and the credential names no audience", [request.server_id]),
} if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	s := catalog.server
	not s.transport == "stdio"
	not audience_matches
	count(request.audience) == 0
}

# audience_mismatch: the token was issued for another resource (token replay across servers).
deny contains {
	"code": "audience_mismatch",
	"message": sprintf(
		"credential audience does not include the resource %q of server %q",
		[object.get(catalog.server, "resource", ""), request.server_id],
	),
} if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	s := catalog.server
	not s.transport == "stdio"
	not audience_matches
	count(request.audience) > 0
}

# The token was issued for this server's resource, ignoring a trailing "/". The audience is a
# list of strings, or one string (a JWT "aud" claim may be either).
audience_matches if {
	resource := catalog.server.resource
	is_string(resource)
	resource != ""
	some aud in input.credential.audience
	is_string(aud)
	trim_suffix(aud, "/") == trim_suffix(resource, "/")
}

audience_matches if {
	resource := catalog.server.resource
	is_string(resource)
	resource != ""
	aud := input.credential.audience
	is_string(aud)
	trim_suffix(aud, "/") == trim_suffix(resource, "/")
}

# scope_missing: the tool needs a scope the credential does not grant; one reason per scope.
deny contains {
	"code": "scope_missing",
	"message": sprintf("tool %q of server %q requires scope %q, which the credential does not grant", [request.tool, request.server_id, scope]),
} if {
	input.action == "tools/call"
	some scope in catalog.tool.scopes
	is_string(scope)
	scope != ""
	not scope in request.scopes
}
