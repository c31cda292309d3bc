# METADATA
# title: Toxic flows
# description: >-
#   Tools carry labels in the catalog (private_data, untrusted_content,
#   external_communication, ...). An allowed call adds its tool's labels to the session
#   (see labels in tools.rego), so the policy knows what the session has touched. A toxic flow
#   in data.flows.toxic names the labels that must all have been seen (sources) and the label
#   of a tool that would complete it (sink): once a session has read private data and ingested
#   untrusted content, a tool that communicates externally could carry the data out on an
#   attacker's instructions. Such a call needs approval, or is denied, per the flow's on_match.
package mcp.flows

import data.mcp.catalog
import data.mcp.request

# toxic_flow: the call would complete a toxic flow: approved by a human, or denied when the
# flow's on_match says "deny". The labels the call itself adds count too: a tool that both
# fetches untrusted content and sends requests out completes the flow alone once private data
# has been read. Only tools with catalog labels get past the first lines.
approve contains toxic_flow(flow) if {
	input.action == "tools/call"
	some flow in data.flows.toxic
	flow.sink in catalog.tool.labels
	not flow.on_match == "deny"
	not source_missing(flow)
}

deny contains toxic_flow(flow) if {
	input.action == "tools/call"
	some flow in data.flows.toxic
	flow.sink in catalog.tool.labels
	flow.on_match == "deny"
	not source_missing(flow)
}

# source_missing(flow) holds when a source label of the flow has been seen neither in the
# session nor on the called tool.
source_missing(flow) if {
	some source in flow.sources
	not source in object.get(input, ["session", "labels"], [])
	not source in catalog.tool.labels
}

source_missing(flow) if not is_array(object.get(flow, "sources", null))

toxic_flow(flow) := {
	"code": "toxic_flow",
	"message": sprintf(
		"tool %q of server %q is labelled %q and the session has seen %v: flow %q",
		[request.tool, request.server_id, flow.sink, sort(flow.sources), object.get(flow, "name", "")],
	),
}
