# METADATA
# title: Sessions
# description: >-
#   Opening and renewing Arbiter sessions (actions session/open and session/renew). Opening a
#   session may need a human's approval for a client the catalog does not know, or for
#   servers of a trust class (data.limits.session.unknown_client,
#   data.limits.trust_classes.CLASS.session_open). The agent cannot renew its own session
#   without approval by default. Every open or renewal is capped at a lifetime: the smallest
#   of limits.session.max_ttl_seconds and the ceilings of the trust classes of the servers
#   involved.
package mcp.sessions

import data.mcp.catalog
import data.mcp.request
import data.mcp.settings

# client_unknown: the client opening the session is not in data.catalog.clients: approved or
# denied when limits.session.unknown_client says "approval" or "deny", allowed otherwise.
approve contains client_unknown if {
	data.limits.session.unknown_client == "approval"
	input.action == "session/open"
	not catalog.known_client(request.client_id)
}

deny contains client_unknown if {
	data.limits.session.unknown_client == "deny"
	input.action == "session/open"
	not catalog.known_client(request.client_id)
}

client_unknown := {
	"code": "client_unknown",
	"message": sprintf("client %q is not in the catalog", [request.client_id]),
}

# server_trust_class: the session names a server of a trust class that needs approval to open
# a session on, or that sessions may not be opened on at all, per
# limits.trust_classes.CLASS.session_open ("allow" when absent).
approve contains trust_class_reason(id, class, "requires approval") if {
	input.action == "session/open"
	some id in request.requested_servers
	class := catalog.trust_class(catalog.server_by_id(id))
	data.limits.trust_classes[class].session_open == "approval"
}

deny contains trust_class_reason(id, class, "is not allowed") if {
	input.action == "session/open"
	some id in request.requested_servers
	class := catalog.trust_class(catalog.server_by_id(id))
	data.limits.trust_classes[class].session_open == "deny"
}

trust_class_reason(id, class, outcome) := {
	"code": "server_trust_class",
	"message": sprintf("a session on %s server %q %s", [class, id, outcome]),
}

# renewal_not_allowed: the limits forbid renewing sessions (limits.session.renewal "deny").
deny contains {
	"code": "renewal_not_allowed",
	"message": "session renewal is not allowed",
} if {
	input.action == "session/renew"
	settings.renewal_mode == "deny"
}

# renewal_limit: the session has been renewed as often as the limits allow.
deny contains {
	"code": "renewal_limit",
	"message": sprintf("session has used %v of its %v renewals", [request.session_renewals, settings.max_renewals]),
} if {
	input.action == "session/renew"
	request.session_renewals >= settings.max_renewals
}

# renewal_requires_approval: a human approves each renewal unless the limits say "allow" or
# "deny": an agent cannot keep its own access alive.
approve contains {
	"code": "renewal_requires_approval",
	"message": sprintf("session renewal requires approval (renewals so far: %v)", [request.session_renewals]),
} if {
	input.action == "session/renew"
	settings.renewal_mode == "approval"
}

# max_ttl is the longest lifetime, in seconds, the open or renewal may grant: the global
# ceiling, lowered by the ceiling of each trust class among the (known) servers involved.
max_ttl := min({settings.session_max_ttl} | {ttl |
	some id in request.requested_servers
	ttl := settings.class_max_ttl(catalog.trust_class(catalog.server_by_id(id)))
})

# ceiling is the session key of the decision for session/open and session/renew.
ceiling := {"max_ttl_seconds": max_ttl}
