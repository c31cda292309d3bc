# METADATA
# title: Sampling and elicitation
# description: >-
#   Requests a server makes of the client are decisions too. sampling/createMessage asks the
#   client's model to generate text, on the user's account and possibly with context from
#   other servers; elicitation/create asks the user for input, or (url mode) sends the user to
#   a web page. The catalog says what each server may ask for; by default, nothing. The gateway
#   passes the request's params as input.operation.arguments.
package mcp.server_requests

import data.mcp.catalog
import data.mcp.request

# sampling_not_allowed: the catalog does not let this server request sampling.
deny contains {
	"code": "sampling_not_allowed",
	"message": sprintf("server %q may not request sampling", [request.server_id]),
} if {
	input.action == "sampling/createMessage"
	catalog.server
	not catalog.server.sampling.allowed == true
}

# sampling_context_not_allowed: the server asks the client to include context beyond what the
# catalog allows (includeContext "thisServer" or "allServers"; "allServers" would hand this
# server what other servers returned).
deny contains {
	"code": "sampling_context_not_allowed",
	"message": sprintf("server %q may not request sampling with includeContext %q", [request.server_id, context]),
} if {
	input.action == "sampling/createMessage"
	catalog.server.sampling.allowed == true
	context := input.operation.arguments.includeContext
	is_string(context)
	context != "none"
	not context in allowed_contexts
}

default allowed_contexts := []

allowed_contexts := catalog.server.sampling.include_context if is_array(catalog.server.sampling.include_context)

# sampling_tokens_exceeded: the server asks for more tokens than the catalog grants it.
deny contains {
	"code": "sampling_tokens_exceeded",
	"message": sprintf("server %q asks for %v tokens, more than its %v", [request.server_id, input.operation.arguments.maxTokens, max_tokens]),
} if {
	input.action == "sampling/createMessage"
	max_tokens := catalog.server.sampling.max_tokens
	is_number(max_tokens)
	is_number(input.operation.arguments.maxTokens)
	input.operation.arguments.maxTokens > max_tokens
}

# elicitation_not_allowed: the catalog does not let this server elicit input in this mode
# ("form", the default, or "url").
deny contains {
	"code": "elicitation_not_allowed",
	"message": sprintf("server %q may not request %s elicitation", [request.server_id, mode]),
} if {
	input.action == "elicitation/create"
	catalog.server
	mode := elicitation_mode
	not mode in allowed_modes
}

default elicitation_mode := "form"

elicitation_mode := input.operation.arguments.mode if is_string(input.operation.arguments.mode)

default allowed_modes := []

allowed_modes := catalog.server.elicitation.modes if is_array(catalog.server.elicitation.modes)
