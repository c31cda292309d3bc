# Input fields and catalog entries, read once and normalised: a missing or mistyped field
# reads as empty, so no reason rule is silently skipped because a reference was undefined.
package mcp

# MCP operations the policy understands; each must name a catalog server.
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

# Every action the policy decides: mcp_actions plus session_actions. Spelled out rather
# than computed as a union, which would be rebuilt on every evaluation; a test keeps the
# lists in step.
supported_actions := {
	"tools/call",
	"tools/list",
	"resources/read",
	"resources/list",
	"prompts/get",
	"prompts/list",
	"sampling/createMessage",
	"elicitation/create",
	"session/open",
	"session/renew",
}

# Arbiter's own session requests. They name no server in input.server, so no MCP-operation
# rule applies to them; their decision carries the session key (see decision.rego).
session_actions := {"session/open", "session/renew"}

default action := ""

action := input.action if is_string(input.action)

default server_id := ""

server_id := input.server.id if is_string(input.server.id)

default tool_name := ""

tool_name := input.operation.tool if is_string(input.operation.tool)

# Annotation keys are present only when the MCP server set them; absent is not false.
default annotations := {}

annotations := input.operation.annotations if is_object(input.operation.annotations)

default audience := []

audience := input.credential.audience if is_array(input.credential.audience)

# A JWT "aud" claim may be a single string; read it as a one-element list.
audience := [input.credential.audience] if {
	is_string(input.credential.audience)
	input.credential.audience != ""
}

# Servers named by a session/open request. A lone value reads as a one-element list, so a
# malformed request is checked against the catalog rather than taken as naming no server.
default requested_servers := []

requested_servers := input.session_request.servers if is_array(input.session_request.servers)

requested_servers := [servers] if {
	servers := input.session_request.servers
	not is_array(servers)
	servers != null
}

# Renewals of the session so far; a missing or mistyped count reads as none, so a renewal
# still needs what the limits say. The engine always sets it.
default session_renewals := 0

session_renewals := input.session.renewals if is_number(input.session.renewals)

# What a session/renew needs by the limits: "allow", "deny" or, for any other value or
# none, "approval".
default renewal_mode := "approval"

renewal_mode := data.limits.session.renewal if data.limits.session.renewal in {"allow", "deny"}

# Catalog entries are read by their full path, never as the whole catalog: a store read
# may copy what it returns, and the catalog grows with every server.
known_server(id) if is_object(data.catalog.servers[id])

# catalog_server is the catalog entry of the server the operation targets; undefined when
# the server is unknown (or its id is not a string).
catalog_server := server if {
	server := data.catalog.servers[input.server.id]
	is_object(server)
}

# catalog_tool is the catalog entry of the named tool on that server; undefined when either
# is unknown.
catalog_tool := tool if {
	tool := catalog_server.tools[input.operation.tool]
	is_object(tool)
}

# An MCP operation on a server the catalog calls remote: reached with an OAuth token.
remote_server if {
	action in mcp_actions
	catalog_server.transport == "remote"
}

# The token was issued for this server (RFC 8707 resource), ignoring a trailing "/".
audience_matches if {
	resource := catalog_server.resource
	is_string(resource)
	resource != ""
	some aud in audience
	is_string(aud)
	trim_suffix(aud, "/") == trim_suffix(resource, "/")
}

# The catalog is authoritative about a tool's risk. Annotations are untrusted hints from the
# MCP server, so they may only make a tool more restricted than the catalog says.
destructive if catalog_tool.destructive == true

# The catalog does not clear the tool: MCP's defaults apply, under which destructiveHint
# is true unless said otherwise and matters only when readOnlyHint is not true.
destructive if {
	catalog_tool
	not catalog_clears_tool
	not hinted_read_only
	not annotations.destructiveHint == false
}

catalog_clears_tool if catalog_tool.destructive == false

catalog_clears_tool if catalog_tool.read_only == true

# A read-only hint counts unless the catalog explicitly says the tool is not read-only.
hinted_read_only if {
	annotations.readOnlyHint == true
	not catalog_tool.read_only == false
}
