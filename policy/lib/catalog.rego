# METADATA
# title: Catalog look-ups
# description: >-
#   The server and client catalog of data.json (data.catalog), read by the full path of one
#   entry, never as the whole catalog: a store read may copy what it returns, and the catalog
#   grows with every server. Every look-up is undefined when the entry is missing or is not
#   an object.
package mcp.catalog

# server is the catalog entry of the server the operation targets.
server := s if {
	s := data.catalog.servers[input.server.id]
	is_object(s)
}

# tool is the catalog entry of the named tool on that server.
tool := t if {
	t := server.tools[input.operation.tool]
	is_object(t)
}

# tool_named is the catalog entry of tool name on that server, for a request about several
# tools (data.mcp.tool_verdicts); the same look-up as tool, which is written out because it
# runs on every decision and a function call costs more.
tool_named(name) := t if {
	t := server.tools[name]
	is_object(t)
}

# server_by_id is the catalog entry of server id, for requests that name servers in a list.
server_by_id(id) := s if {
	s := data.catalog.servers[id]
	is_object(s)
}

# A client is known when the catalog lists its id (OAuth client_id or Client ID Metadata
# Document URL) under data.catalog.clients.
known_client(id) if is_object(data.catalog.clients[id])

# owned says a catalog server names an owner: someone answers for it.
owned(s) if {
	is_string(s.owner)
	trim_space(s.owner) != ""
}

# trust_class is "stdio" for a server the catalog says is local (launched by the host over
# stdio), and "remote" for every other: a server whose transport the catalog does not state is
# held to the stricter rules of remote servers.
trust_class(s) := "stdio" if s.transport == "stdio"

else := "remote"
