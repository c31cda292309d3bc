# METADATA
# title: The request, normalised
# description: >-
#   Input fields read once and normalised: a missing or mistyped field reads as empty. Rules
#   read a field through this package where an absent value must still count (a credential
#   with no audience is "no audience", not "rule does not apply"), and in messages. Where
#   undefined simply means the rule does not apply, rule bodies read input directly: each
#   helper rule is an evaluation of its own, and a decision runs on every MCP call. The tests
#   of input.action that lead every rule body stay on input so that OPA's rule index can skip
#   the rules of other actions without evaluating them.
package mcp.request

# Operations of the MCP protocol the policy understands; each must name a catalog server.
# The rule packages spell this set out again in their guards (see above); a test keeps the
# copies in step.
mcp_actions := {
	"tools/call",
	"tools/list",
	"resources/read",
	"resources/list",
	"prompts/get",
	"prompts/list",
	"sampling/createMessage",
	"elicitation/create",
}

# Arbiter's own session requests. They name no server in input.server, so no MCP-operation
# rule applies to them.
session_actions := {"session/open", "session/renew"}

default action := ""

action := input.action if is_string(input.action)

default client_id := ""

client_id := input.client.id if is_string(input.client.id)

default server_id := ""

server_id := input.server.id if is_string(input.server.id)

# Digest of the command or package the gateway launched a stdio server from, for servers the
# catalog pins (command_digests); "" when the gateway did not say.
default command_digest := ""

command_digest := input.server.command_digest if is_string(input.server.command_digest)

default tool := ""

tool := input.operation.tool if is_string(input.operation.tool)

# Digest of the tool definition the server announced (name, description, schema,
# annotations), as the gateway computes it; "" when not given.
default definition_hash := ""

definition_hash := input.operation.definition_hash if is_string(input.operation.definition_hash)

# Annotation keys are present only when the MCP server set them; absent is not false.
default annotations := {}

annotations := input.operation.annotations if is_object(input.operation.annotations)

# Tool arguments, and the params of a request a server makes (sampling, elicitation), are
# read field by field where a rule needs one (input.operation.arguments.maxTokens), with no
# helper here: a rule that reads the arguments whole makes the engine build all of them for
# every decision, where a field read builds that field only (policy guide, "Only what a
# policy can read is built"). A field of arguments that are not an object is undefined.

default audience := []

audience := input.credential.audience if is_array(input.credential.audience)

# A JWT "aud" claim may be a single string; read it as a one-element list.
audience := [input.credential.audience] if {
	is_string(input.credential.audience)
	input.credential.audience != ""
}

# Scopes the credential grants. An OAuth "scope" claim is one space-separated string; a list
# is taken as it is.
default scopes := set()

scopes := {s | some s in input.credential.scopes; is_string(s)} if is_array(input.credential.scopes)

scopes := {s | some s in split(input.credential.scopes, " "); s != ""} if is_string(input.credential.scopes)

# Servers named by a session/open (or, for a renewal, the session's servers). A lone value
# reads as a one-element list, so a malformed request is checked against the catalog rather
# than taken as naming no server.
default requested_servers := []

requested_servers := input.session_request.servers if is_array(input.session_request.servers)

requested_servers := [servers] if {
	servers := input.session_request.servers
	not is_array(servers)
	servers != null
}

# Renewals of the session so far; a missing or mistyped count reads as none. The engine
# always sets it.
default session_renewals := 0

session_renewals := input.session.renewals if is_number(input.session.renewals)
