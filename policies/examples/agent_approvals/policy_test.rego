package examples.agent_approvals_test

import rego.v1

import data.examples.agent_approvals

executor := "spiffe://example.org/ns/agents/sa/executor"

send(to) := call("send_email", {"to": to, "subject": "hi", "body": "…"}, null)

send_approved(to, approver) := call("send_email", {"to": to, "subject": "hi", "body": "…"}, approver)

call(tool, arguments, approver) := decision if {
	approval := {"approver": approver, "issuer": "regate:local"}
	decision := agent_approvals.allow with input as object.union(
		{
			"peer": {"spiffe_id": executor},
			"mcp": {"method": "tools/call", "tool": tool, "arguments": arguments, "id": 1},
		},
		{k: v | some k, v in {"approval": approval}; approver != null},
	)
}

test_internal_email_is_sent_within_a_budget if {
	d := send(["carol@example.org", "Dave@Example.org"])
	d.allowed
	d.reason == "internal_email"
	some limit in d.rate_limits
	limit.name == "send_email"
	limit.limit == 10
	limit.per == "1h"
	limit.key == concat(":", ["send_email", executor])
}

test_one_external_recipient_needs_oncall if {
	d := send(["carol@example.org", "someone@elsewhere.example"])
	not d.allowed
	d.reason == "external_email"
	d.approval.approvers == "group:oncall"
	d.approval.ttl == "15m"
}

test_a_lookalike_domain_is_external if {
	d := send(["mallory@notexample.org"])
	d.reason == "external_email"
}

test_oncall_approval_lets_it_through_with_a_tighter_budget if {
	d := send_approved(["someone@elsewhere.example"], "alice@example.org")
	d.allowed
	d.reason == "external_email_approved"
	some limit in d.rate_limits
	limit.name == "external_email"
	limit.limit == 3
}

test_an_approver_off_call_is_asked_again if {
	d := send_approved(["someone@elsewhere.example"], "mallory@example.org")
	not d.allowed
	d.reason == "external_email"
}

test_recipients_must_be_a_list if {
	d := send("someone@elsewhere.example")
	d.reason == "recipients_not_a_list"
}

test_other_tools_count_against_the_minute if {
	d := call("search", {"q": "rego"}, null)
	d.allowed
	[limit] := d.rate_limits
	limit.name == "agent_calls"
	limit.limit == 100
}

test_unknown_agents_are_denied if {
	d := agent_approvals.allow with input as {
		"peer": {"spiffe_id": "spiffe://example.org/ns/agents/sa/stranger"},
		"mcp": {"method": "tools/call", "tool": "search", "arguments": {}, "id": 1},
	}
	d.reason == "unknown_agent"
}
