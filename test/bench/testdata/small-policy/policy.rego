package mcp

# A small MCP policy: tools allowed by name per server, the credential's audience checked for
# remote servers; everything that is not a tool call is allowed.

default decision := {"result": "deny", "reasons": [{"code": "tool_not_allowed", "message": "the tool is not allowed on this server"}]}

decision := {"result": "allow", "reasons": []} if {
	input.action != "tools/call"
}

decision := {"result": "allow", "reasons": []} if {
	input.action == "tools/call"
	input.operation.tool in data.allow[input.server.id]
	audience_ok
}

audience_ok if input.server.transport != "remote"

audience_ok if {
	input.server.transport == "remote"
	input.server.resource in input.credential.audience
}
