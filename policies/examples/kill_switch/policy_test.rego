package examples.kill_switch_test

import data.examples.kill_switch

summarizer := "spiffe://example.org/ns/agents/sa/summarizer"

executor := "spiffe://example.org/ns/agents/sa/executor"

request(id, serial, method) := {
	"peer": {
		"spiffe_id": id,
		"serial": serial,
		"trust_domain": split(id, "/")[2],
	},
	"attributes": {"request": {"http": {"method": method}}},
}

decide(req) := d if {
	d := kill_switch.allow with input as req
}

test_granted_callers_are_allowed if {
	decide(request(executor, "01", "POST")).reason == "granted"
}

test_revoked_identity_is_denied_despite_its_grant if {
	d := decide(request("spiffe://example.org/ns/agents/sa/compromised", "02", "GET"))
	not d.allowed
	d.reason == "revoked"
}

test_revoked_serial_is_denied if {
	d := decide(request(summarizer, "0badc0ffee", "GET"))
	d.reason == "revoked"
}

test_revoked_trust_domain_is_denied if {
	d := decide(request("spiffe://partner.example/ns/x/sa/y", "03", "GET"))
	d.reason == "revoked"
}

# Both `with`s sit on the rule itself. Written as `decide(request(…)) with data… as …`,
# this test came out undefined under regorus 0.14.1 (OPA passes it); binding the request to
# a variable first also works. See docs/policy-guide.md, known differences.
test_revocation_wins_over_every_grant if {
	d := kill_switch.allow with input as request(summarizer, "01", "GET")
		with data.examples.kill_switch.revoked.spiffe_ids as {summarizer: {"ticket": "INC-9"}}
	d.reason == "revoked"
}

test_an_empty_kill_switch_revokes_nobody if {
	d := kill_switch.allow with input as request("spiffe://example.org/ns/agents/sa/compromised", "02", "GET")
		with data.examples.kill_switch.revoked as {}
	d.reason == "granted"
}

test_ungranted_methods_are_denied if {
	d := decide(request(summarizer, "01", "DELETE"))
	d.reason == "no_matching_grant"
}
