# METADATA
# title: Settings
# description: >-
#   Knobs of data.limits that several rules read, each with the value that holds when
#   data.json leaves it out or gives something unusable. A deployment changes these in data,
#   not Rego. (Knobs only one rule reads are read there, by their full path, so OPA's rule
#   index can skip the rule when data says it does not apply.)
package mcp.settings

# positive_int(x) holds for a positive whole number.
positive_int(x) if {
	is_number(x)
	x > 0
	x == floor(x)
}

# Approvals: how far a grant reaches ("once" or "session") and how long a request waits.
default approval_scope := "once"

approval_scope := data.limits.approval.scope if data.limits.approval.scope in {"once", "session"}

default approval_ttl := 900

approval_ttl := data.limits.approval.ttl_seconds if positive_int(data.limits.approval.ttl_seconds)

# Session lifetime ceiling for any open or renewal, in seconds.
default session_max_ttl := 3600

session_max_ttl := data.limits.session.max_ttl_seconds if positive_int(data.limits.session.max_ttl_seconds)

# The lifetime ceiling of sessions that involve a server of a trust class; undefined when
# data sets none for the class.
class_max_ttl(class) := ttl if {
	ttl := data.limits.trust_classes[class].max_ttl_seconds
	positive_int(ttl)
}

# What a session/renew needs: "allow", "deny" or, for any other value or none, "approval".
default renewal_mode := "approval"

renewal_mode := data.limits.session.renewal if data.limits.session.renewal in {"allow", "deny"}

# How many times a session may be renewed; undefined (no limit) unless data sets a number.
max_renewals := data.limits.session.max_renewals if is_number(data.limits.session.max_renewals)
