# Reason rules. Each adds {"code", "message"} to deny_reasons or approval_reasons; the codes
# are a contract with gateways and dashboards, so rename none of them.
package mcp

# action_unsupported: the action is not one this policy knows.
deny_reasons contains {
	"code": "action_unsupported",
	"message": sprintf("action %q is not supported", [action]),
} if {
	not action in supported_actions
}

# server_unknown: the MCP operation targets a server that is not in the catalog.
deny_reasons contains {
	"code": "server_unknown",
	"message": sprintf("server %q is not in the catalog", [server_id]),
} if {
	action in mcp_actions
	not catalog_server
}

# server_unknown: a session may be bound only to catalog servers.
deny_reasons contains {
	"code": "server_unknown",
	"message": sprintf("server %q is not in the catalog", [id]),
} if {
	action == "session/open"
	some id in requested_servers
	not known_server(id)
}

# tool_unknown: the tool called, or asked about in a filtered tools/list, is not in the
# server's catalog, so it is neither callable nor shown.
deny_reasons contains {
	"code": "tool_unknown",
	"message": sprintf("tool %q is not in the catalog of server %q", [tool_name, server_id]),
} if {
	names_tool
	catalog_server
	not catalog_tool
}

names_tool if action == "tools/call"

names_tool if {
	action == "tools/list"
	tool_name != ""
}

# credential_missing: a remote server is reached only with a token bound to it.
deny_reasons contains {
	"code": "credential_missing",
	"message": sprintf("server %q is remote and the credential names no audience", [server_id]),
} if {
	remote_server
	count(audience) == 0
}

# audience_mismatch: the token was issued for another resource (token replay across servers).
deny_reasons contains {
	"code": "audience_mismatch",
	"message": sprintf(
		"credential audience does not include the resource %q of server %q",
		[object.get(catalog_server, "resource", ""), server_id],
	),
} if {
	remote_server
	count(audience) > 0
	not audience_matches
}

# budget_exhausted: the session has made as many tool calls as the limits allow.
deny_reasons contains {
	"code": "budget_exhausted",
	"message": sprintf("session has used %v of its %v tool calls", [total, max_calls]),
} if {
	action == "tools/call"
	max_calls := data.limits.session.max_calls
	is_number(max_calls)
	total := input.session.calls.total
	is_number(total)
	total >= max_calls
}

# destructive_tool: a human approves each destructive call (see destructive in catalog.rego).
approval_reasons contains {
	"code": "destructive_tool",
	"message": sprintf("tool %q of server %q is destructive", [tool_name, server_id]),
} if {
	action == "tools/call"
	destructive
}

# renewal_not_allowed: the limits forbid renewing sessions (limits.session.renewal "deny").
deny_reasons contains {
	"code": "renewal_not_allowed",
	"message": "session renewal is not allowed",
} if {
	action == "session/renew"
	renewal_mode == "deny"
}

# renewal_limit: the session has been renewed as often as the limits allow.
deny_reasons contains {
	"code": "renewal_limit",
	"message": sprintf("session has used %v of its %v renewals", [session_renewals, max_renewals]),
} if {
	action == "session/renew"
	max_renewals := data.limits.session.max_renewals
	is_number(max_renewals)
	session_renewals >= max_renewals
}

# renewal_requires_approval: a human approves each renewal unless the limits say "allow"
# or "deny" (see renewal_mode in catalog.rego).
approval_reasons contains {
	"code": "renewal_requires_approval",
	"message": sprintf("session renewal requires approval (renewals so far: %v)", [session_renewals]),
} if {
	action == "session/renew"
	renewal_mode == "approval"
}
