package examples.agent_tools_test

import data.examples.agent_tools

summarizer := "spiffe://example.org/ns/agents/sa/summarizer"

executor := "spiffe://example.org/ns/agents/sa/executor"

call(id, method, path) := decision if {
	decision := agent_tools.allow with input as {
		"peer": {"spiffe_id": id},
		"attributes": {"request": {"http": {"method": method}}},
		"parsed_path": path,
	}
}

test_read_only_agent_searches if {
	d := call(summarizer, "POST", ["tools", "search", "query"])
	d.allowed
	d.headers["x-agent-mode"] == "read_only"
	d.headers["x-agent-tool"] == "search/query"
}

test_read_only_agent_reads_issues_with_get if {
	call(summarizer, "GET", ["tools", "github", "get_issue"]).allowed
}

test_read_only_agent_cannot_write_even_when_granted if {
	# create_issue is in the summarizer's grants, but it writes.
	d := call(summarizer, "POST", ["tools", "github", "create_issue"])
	not d.allowed
	d.reason == "read_only_agent"
}

test_read_only_agent_cannot_run_the_shell if {
	d := call(summarizer, "POST", ["tools", "shell", "run"])
	d.reason == "tool_not_granted"
}

test_executing_agent_runs_the_shell if {
	d := call(executor, "POST", ["tools", "shell", "run"])
	d.allowed
	d.headers["x-agent-effect"] == "execute"
}

test_executing_agent_cannot_execute_with_get if {
	d := call(executor, "GET", ["tools", "shell", "run"])
	d.reason == "method_not_allowed"
}

test_grants_are_per_action if {
	d := call(executor, "POST", ["tools", "github", "merge_pull_request"])
	d.reason == "tool_not_granted"
}

test_actions_not_in_the_catalog_are_refused if {
	d := call(executor, "POST", ["tools", "shell", "format_disk"])
	d.reason == "unknown_tool_action"
}

test_unknown_agents_are_refused if {
	d := call("spiffe://example.org/ns/agents/sa/stranger", "POST", ["tools", "search", "query"])
	d.reason == "unknown_agent"
}

test_other_paths_are_not_tool_calls if {
	d := call(executor, "GET", ["docs", "readme"])
	not d.allowed
	d.reason == "not_a_tool_call"
	d2 := call(executor, "POST", ["tools", "shell"])
	d2.reason == "not_a_tool_call"
}

test_demoting_an_agent_is_a_data_change if {
	demoted := {executor: {"mode": "read_only", "tools": {"shell": ["run"]}}}
	d := call(executor, "POST", ["tools", "shell", "run"]) with data.examples.agent_tools.agents as demoted
	d.reason == "read_only_agent"
}
