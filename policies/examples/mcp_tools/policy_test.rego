package examples.mcp_tools_test

import rego.v1

import data.examples.mcp_tools

summarizer := "spiffe://example.org/ns/agents/sa/summarizer"

executor := "spiffe://example.org/ns/agents/sa/executor"

tool_call(id, tool, arguments) := decision if {
	decision := mcp_tools.allow with input as {
		"peer": {"spiffe_id": id},
		"mcp": {"method": "tools/call", "tool": tool, "arguments": arguments, "id": 1},
	}
}

test_summarizer_searches if {
	d := tool_call(summarizer, "search", {"q": "rego"})
	d.allowed
	d.headers["x-mcp-tool"] == "search"
}

test_summarizer_reads_docs if tool_call(summarizer, "read_doc", {"path": "/docs/a.md"}).allowed

test_summarizer_never_sends_email if {
	d := tool_call(summarizer, "send_email", {"to": "all@example.org"})
	not d.allowed
	d.reason == "tool_not_granted"
}

test_nobody_reads_secrets if {
	d := tool_call(executor, "read_doc", {"path": "/secret/keys"})
	not d.allowed
	d.reason == "secret_path"
}

test_arguments_not_named_for_the_tool_are_denied if {
	# A Go server would decode `Path` into its `path` field.
	d := tool_call(summarizer, "read_doc", {"Path": "/secret/a"})
	not d.allowed
	d.reason == "argument_not_allowed"
}

test_arguments_must_be_an_object if {
	d := tool_call(summarizer, "search", ["q", "rego"])
	d.reason == "arguments_not_an_object"
}

test_named_arguments_are_fine if tool_call(summarizer, "search", {"q": "rego", "limit": 5}).allowed

test_unknown_agents_call_nothing if {
	d := tool_call("spiffe://example.org/ns/agents/sa/stranger", "search", {})
	d.reason == "unknown_agent"
}

test_handshake_is_fine if {
	d := mcp_tools.allow with input as {"peer": {"spiffe_id": summarizer}, "mcp": {"method": "tools/list", "params": null, "id": 1}}
	d.allowed
}

test_a_person_s_scope_bounds_the_agent if {
	d := mcp_tools.allow with input as {
		"peer": {"spiffe_id": executor},
		"mcp": {"method": "tools/call", "tool": "send_email", "arguments": {}, "id": 1},
		"delegation": {"subject": "alice", "scope": ["docs:read"]},
	}
	d.reason == "scope_missing"
}

test_with_the_scope_the_agent_may if {
	d := mcp_tools.allow with input as {
		"peer": {"spiffe_id": executor},
		"mcp": {"method": "tools/call", "tool": "send_email", "arguments": {}, "id": 1},
		"delegation": {"subject": "alice", "scope": ["mail:send"]},
	}
	d.allowed
}

test_not_an_mcp_call if {
	d := mcp_tools.allow with input as {"peer": {"spiffe_id": summarizer}}
	d.reason == "not_an_mcp_call"
}

visible(id, tool, delegation) if {
	mcp_tools.tool_visible with input as object.union(
		{
			"peer": {"spiffe_id": id},
			"mcp": {"method": "tools/list", "params": null, "id": 1, "tool": tool},
		},
		delegation,
	)
}

test_the_summarizer_is_shown_only_the_tools_it_may_call if {
	visible(summarizer, "search", {})
	visible(summarizer, "read_doc", {})
	not visible(summarizer, "send_email", {})
}

test_the_executor_is_shown_send_email if visible(executor, "send_email", {})

test_a_tool_outside_the_persons_scope_is_not_shown if {
	not visible(executor, "send_email", {"delegation": {"subject": "alice", "scope": ["docs:read"]}})
	visible(executor, "search", {"delegation": {"subject": "alice", "scope": ["docs:read"]}})
}

test_unknown_agents_are_shown_nothing if not visible("spiffe://example.org/ns/agents/sa/stranger", "search", {})

test_what_is_shown_is_what_may_be_called if {
	every tool in ["search", "read_doc", "send_email"] {
		shown(summarizer, tool) == tool_call(summarizer, tool, {}).allowed
	}
}

shown(id, tool) := true if visible(id, tool, {}) else := false

test_2026_clients_discover if {
	d := mcp_tools.allow with input as {"peer": {"spiffe_id": summarizer}, "mcp": {"method": "server/discover", "params": {}, "id": 1}}
	d.allowed
}
