# Example 3: tool permissions for AI agents.
#
#   query: data.examples.agent_tools.allow
#   data:  data.json in this directory, at data.examples.agent_tools
#
# Agents call tools through the application as POST /tools/<tool>/<action> (GET for reads).
# Each agent, by SPIFFE ID, has a mode and the tool actions granted to it; the tool catalog
# says what each action does. A read_only agent may only use actions whose effect is
# "read", whatever it was granted; an executing agent may use any action it was granted.
package examples.agent_tools

# This package shares its path with its data (data.examples.agent_tools), so a rule must not
# take the name of a data key: `agents := data.examples.agent_tools.agents` would define
# the very document it reads.
catalog := data.examples.agent_tools.tools

# Which methods each effect may be called with.
methods := {
	"read": {"GET", "POST"},
	"write": {"POST"},
	"execute": {"POST"},
}

default allow := {"allowed": false, "reason": "not_a_tool_call"}

allow := tool_decision if {
	tool
	action
}

tool := input.parsed_path[1] if {
	count(input.parsed_path) == 3
	input.parsed_path[0] == "tools"
}

action := input.parsed_path[2] if tool

agent := data.examples.agent_tools.agents[input.peer.spiffe_id]

effect := catalog[tool].actions[action].effect

# The first failing check names the reason; only a call that passes them all is allowed.
tool_decision := deny("unknown_agent") if {
	not agent
} else := deny("unknown_tool_action") if {
	not effect
} else := deny("tool_not_granted") if {
	not action in object.get(agent.tools, tool, [])
} else := deny("read_only_agent") if {
	agent.mode == "read_only"
	effect != "read"
} else := deny("method_not_allowed") if {
	not input.attributes.request.http.method in methods[effect]
} else := {
	"allowed": true,
	"reason": "tool_granted",
	# The application learns what regate checked, not just that it passed.
	"headers": {
		"x-agent-mode": agent.mode,
		"x-agent-tool": concat("/", [tool, action]),
		"x-agent-effect": effect,
	},
}

deny(reason) := {"allowed": false, "reason": reason}
