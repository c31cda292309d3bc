# Package mcp is Arbiter's default MCP governance policy: the entry point, and how the reasons
# of the rule packages combine into one decision.
#
# The engine queries data.mcp.decision for every operation. The rule is defined for any
# input, even {} or a malformed one, so the engine never has to guess: an undefined result
# would be a policy_error on its side, which hides the real reason from the caller.
#
# Each rule package under rules/ contributes two sets of reasons, deny and approve, each
# reason {"code", "message"}. Helpers live in lib/: request.rego (the input, normalised),
# catalog.rego (look-ups in data.catalog) and settings.rego (data.limits with defaults).
package mcp

import data.mcp.budgets
import data.mcp.credentials
import data.mcp.flows
import data.mcp.request
import data.mcp.server_requests
import data.mcp.servers
import data.mcp.sessions
import data.mcp.settings
import data.mcp.tools

# METADATA
# title: MCP decision
# description: >-
#   allow, deny or require_approval for one MCP operation or session request, with the
#   reasons, the called tool's catalog labels, obligations for the gateway, when a human
#   must approve, how far the approval reaches and, for session/open and session/renew, the
#   longest lifetime the session may be granted.
# entrypoint: true
decision := object.union(verdict, {"session": sessions.ceiling}) if {
	# On every result kind: a request that needs approval is granted later, and the engine
	# clamps that session too.
	input.action in {"session/open", "session/renew"}
} else := verdict

# verdict is the decision without the session key.
# The default policy hands the gateway no obligations; the key is always present so the
# engine can pass it on without checking. (A literal rather than a rule of its own: every rule
# a decision reads is an evaluation, with its own cost, on every MCP call.)
verdict := {
	"result": "deny",
	"reasons": ordered(deny_reasons),
	"labels": tools.labels,
	"obligations": {},
} if {
	# Deny wins: an approval reason never softens a deny, and is not reported beside it.
	count(deny_reasons) > 0
} else := {
	"result": "require_approval",
	"reasons": ordered(approval_reasons),
	"labels": tools.labels,
	"obligations": {},
	"approval": {"scope": settings.approval_scope, "ttl_seconds": settings.approval_ttl},
} if {
	count(approval_reasons) > 0
} else := {
	"result": "allow",
	"reasons": [],
	"labels": tools.labels,
	"obligations": {},
}

# deny_reasons gathers the deny reasons of every rule package; one that fires denies. Each
# package is asked only about the actions it has rules for: OPA's rule index then skips the
# others without evaluating them.
deny_reasons contains r if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create", "session/open"}
	some r in servers.deny
}

deny_reasons contains r if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	some r in credentials.deny
}

deny_reasons contains r if {
	input.action in {"tools/call", "tools/list"}
	some r in tools.deny
}

deny_reasons contains r if {
	input.action in {"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get", "prompts/list", "sampling/createMessage", "elicitation/create"}
	some r in budgets.deny
}

deny_reasons contains r if {
	input.action == "tools/call"
	some r in flows.deny
}

deny_reasons contains r if {
	input.action in {"session/open", "session/renew"}
	some r in sessions.deny
}

deny_reasons contains r if {
	input.action in {"sampling/createMessage", "elicitation/create"}
	some r in server_requests.deny
}

# action_unsupported: the action is missing, or is not one this policy knows: the MCP
# operations of data.mcp.request.mcp_actions and Arbiter's session requests, spelled out here
# because a literal costs every decision less than a rule look-up (a test keeps them in step).
deny_reasons contains action_unsupported if not input.action

deny_reasons contains action_unsupported if {
	not input.action in {
		"tools/call", "tools/list", "resources/read", "resources/list", "prompts/get",
		"prompts/list", "sampling/createMessage", "elicitation/create",
		"session/open", "session/renew",
	}
}

action_unsupported := {
	"code": "action_unsupported",
	"message": sprintf("action %q is not supported", [request.action]),
}

# approval_reasons gathers the reasons a human must approve the request for.
approval_reasons contains r if {
	input.action in {"tools/call", "tools/list"}
	some r in tools.approve
}

approval_reasons contains r if {
	input.action == "tools/call"
	some r in flows.approve
}

approval_reasons contains r if {
	input.action in {"session/open", "session/renew"}
	some r in sessions.approve
}

# ordered turns a set of reasons into an array sorted by code, then message, so the same
# input always yields the same decision document. Every reason is an object with exactly the
# keys "code" and "message", and Rego orders such objects by code, then message: sort does it
# in one built-in call, without building a comprehension per decision that has reasons.
ordered(reasons) := sort(reasons)
