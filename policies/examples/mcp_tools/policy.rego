# Example 7: an MCP tool server behind regate, and a read-only summarizer agent.
#
#   query:                 data.examples.mcp_tools.allow
#   mcp-tools-list-query:  data.examples.mcp_tools.tool_visible
#   data:                  data.json in this directory, at data.examples.mcp_tools
#
# Agents speak MCP (JSON-RPC 2.0) to the tool server: regate reads each request's JSON body
# and shows the call being decided as input.mcp (a batch is decided call by call). The
# summarizer may list tools and call `search` and `read_doc`, never `send_email`, and never
# read under /secret/. When it acts for a person (a verified delegation token), that person's
# scope must cover the tool too.
#
# Each tool takes only the arguments named for it in data.json: a tool server written in Go
# decodes `{"Path": "/secret/a"}` into its `path` field (encoding/json matches field names
# ignoring case), so a check of `arguments.path` alone would let `Path` through. regate
# itself refuses a body whose keys repeat or differ only in case (`ambiguous_body`).
#
# The same grants decide what an agent is shown: with --mcp-tools-list-query naming
# `tool_visible`, regate asks it once per tool of a tools/list result (input.mcp.tool set to
# the tool's name) and removes the tools it is not true for, so the summarizer never learns
# that `send_email` exists.
package examples.mcp_tools

import rego.v1

default allow := {"allowed": false, "reason": "not_an_mcp_call"}

agent := data.examples.mcp_tools.agents[input.peer.spiffe_id]

# The MCP handshake and discovery are always fine for a known agent (`server/discover` is
# 2026-07-28's; `initialize` and `ping` are earlier revisions').
allow := {"allowed": true, "reason": "mcp_handshake"} if {
	agent
	input.mcp.method in {"server/discover", "initialize", "notifications/initialized", "tools/list", "ping"}
}

# A tool the caller may call, its arguments aside: the agent is granted it and, when it acts
# for a person, the person's scope covers it. `allow` decides calls by these two, and
# `tool_visible` shows only such tools in tools/list.
granted(tool) if tool in agent.tools

in_scope(_) if not input.delegation

in_scope(tool) if data.examples.mcp_tools.scopes[tool] in input.delegation.scope

tool_visible if {
	granted(input.mcp.tool)
	in_scope(input.mcp.tool)
}

allow := tool_decision if input.mcp.method == "tools/call"

# The first failing check names the reason.
tool_decision := deny("unknown_agent") if {
	not agent
} else := deny("tool_not_granted") if {
	not granted(input.mcp.tool)
} else := deny("arguments_not_an_object") if {
	not is_object(input.mcp.arguments)
} else := deny("argument_not_allowed") if {
	some name, _ in input.mcp.arguments
	not name in data.examples.mcp_tools.arguments[input.mcp.tool]
} else := deny("secret_path") if {
	startswith(object.get(input.mcp.arguments, "path", ""), "/secret/")
} else := deny("scope_missing") if {
	not in_scope(input.mcp.tool)
} else := {"allowed": true, "reason": "tool_granted", "headers": {"x-mcp-tool": input.mcp.tool}}

deny(reason) := {"allowed": false, "reason": reason}
