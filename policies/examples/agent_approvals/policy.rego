# Example 9: a person approves what an agent may not do alone, and a budget bounds what it
# may.
#
#   query:  data.examples.agent_approvals.allow
#   data:   data.json in this directory, at data.examples.agent_approvals
#   needs:  an approvals: section (issuers, or local_key), and budgets (memory by default)
#
# The executor agent calls the `send_email` tool of an MCP server. To the company's own
# domain it sends freely, up to 10 e-mails an hour. Anything else (one recipient outside the
# domain is enough) needs a person from group:oncall: the policy denies with an `approval`
# object, regate answers 403 `approval_required` with an approval request, and once someone
# on call approves (a signed token naming the request's digest), the agent repeats the very
# same call with the token in `x-regate-approval`. regate checks the token before the policy
# and shows it as input.approval; the policy checks who approved. A token is used once.
#
# A loop is stopped by the budget: 10 internal e-mails an hour per agent, 3 external ones a
# day, and 100 calls a minute of any tool, each charged all or nothing.
package examples.agent_approvals

import rego.v1

default allow := {"allowed": false, "reason": "not_an_mcp_call"}

settings := data.examples.agent_approvals

agent := settings.agents[input.peer.spiffe_id]

allow := {"allowed": true, "reason": "mcp_handshake"} if {
	agent
	input.mcp.method in {"server/discover", "initialize", "notifications/initialized", "tools/list", "ping"}
}

allow := tool_decision if input.mcp.method == "tools/call"

# Every tool call an agent makes counts against its per-minute budget.
per_minute := {
	"name": "agent_calls",
	"key": concat(":", ["calls", input.peer.spiffe_id]),
	"limit": 100,
	"per": "1m",
}

recipients := input.mcp.arguments.to if is_array(input.mcp.arguments.to)

internal(address) if endswith(lower(address), concat("", ["@", settings.company_domain]))

all_internal if {
	count(recipients) > 0
	every r in recipients {
		internal(r)
	}
}

# Approved by someone on call (input.approval is set only when a valid token for this very
# call came with it).
approved_by_oncall if input.approval.approver in settings.groups.oncall

# The first matching case decides.
tool_decision := deny("unknown_agent") if {
	not agent
} else := deny("tool_not_granted") if {
	not input.mcp.tool in agent.tools
} else := deny("recipients_not_a_list") if {
	input.mcp.tool == "send_email"
	not is_array(input.mcp.arguments.to)
} else := {
	"allowed": true,
	"reason": "internal_email",
	"rate_limits": [
		per_minute,
		{
			"name": "send_email",
			"key": concat(":", ["send_email", input.peer.spiffe_id]),
			"limit": 10,
			"per": "1h",
		},
	],
} if {
	input.mcp.tool == "send_email"
	all_internal
} else := {
	"allowed": true,
	"reason": "external_email_approved",
	"rate_limits": [
		per_minute,
		{
			"name": "external_email",
			"key": concat(":", ["external_email", input.peer.spiffe_id]),
			"limit": 3,
			"per": "24h",
		},
	],
} if {
	input.mcp.tool == "send_email"
	approved_by_oncall
} else := {
	"allowed": false,
	"reason": "external_email",
	"approval": {"ttl": "15m", "approvers": "group:oncall"},
} if {
	input.mcp.tool == "send_email"
} else := {"allowed": true, "reason": "tool_granted", "rate_limits": [per_minute]}

deny(reason) := {"allowed": false, "reason": reason}
