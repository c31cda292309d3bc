# Package mcp is Arbiter's default MCP governance policy.
#
# The engine queries data.mcp.decision for every operation. The rule is defined for any
# input, even {} or a malformed one, so the engine never has to guess: an undefined result
# would be a policy_error on its side, which hides the real reason from the caller.
#
# Reason rules live in rules.rego, input and catalog look-ups in catalog.rego.
package mcp

# METADATA
# title: MCP decision
# description: >-
#   allow, deny or require_approval for one MCP operation or session request, with the
#   reasons, the called tool's catalog labels, obligations for the gateway, when a human
#   must approve, how far the approval reaches and, for session/open and session/renew, the
#   longest lifetime the session may be granted.
# entrypoint: true
decision := object.union(verdict, {"session": session_ceiling}) if {
	# On every result kind: a request that needs approval is granted later, and the engine
	# clamps that session too. session_actions spelled out: a literal costs every decision
	# less than a rule look-up; a test keeps the two in step.
	action in {"session/open", "session/renew"}
} else := verdict

# verdict is the decision without the session key.
verdict := {
	"result": "deny",
	"reasons": ordered(deny_reasons),
	"labels": labels,
	"obligations": obligations,
} if {
	# Deny wins: an approval reason never softens a deny, and is not reported beside it.
	count(deny_reasons) > 0
} else := {
	"result": "require_approval",
	"reasons": ordered(approval_reasons),
	"labels": labels,
	"obligations": obligations,
	"approval": approval,
} if {
	count(approval_reasons) > 0
} else := {
	"result": "allow",
	"reasons": [],
	"labels": labels,
	"obligations": obligations,
}

# ordered turns a set of reasons into an array sorted by code, then message, so the same
# input always yields the same decision document.
ordered(reasons) := [{"code": code, "message": message} |
	some [code, message] in sort([[r.code, r.message] | some r in reasons])
]

# labels are the called tool's catalog labels. The engine records them in the session when
# the call is allowed, so later rules can see, say, that private data was read.
default labels := []

labels := sort({label | some label in catalog_tool.labels; is_string(label)}) if {
	action == "tools/call"
	is_array(catalog_tool.labels)
}

# The default policy hands the gateway no obligations; the key is always present so the
# engine can pass it on without checking.
obligations := {}

# approval says how far a human's approval reaches: "once" (one call) or "session" (the
# rest of the session), and how long the request waits for an answer.
approval := {"scope": approval_scope, "ttl_seconds": approval_ttl}

default approval_scope := "once"

approval_scope := data.limits.approval.scope if data.limits.approval.scope in {"once", "session"}

default approval_ttl := 900

approval_ttl := ttl if {
	ttl := data.limits.approval.ttl_seconds
	is_number(ttl)
	ttl > 0
}

# session_ceiling bounds the session being opened or renewed: the engine clamps the
# lifetime it grants to max_ttl_seconds.
session_ceiling := {"max_ttl_seconds": session_max_ttl}

# A positive whole number of seconds; anything else reads as absent, so the default holds.
default session_max_ttl := 3600

session_max_ttl := ttl if {
	ttl := data.limits.session.max_ttl_seconds
	is_number(ttl)
	ttl > 0
	ttl == floor(ttl)
}
