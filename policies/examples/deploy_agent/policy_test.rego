package examples.deploy_agent_test

import rego.v1

import data.examples.deploy_agent

deployer := "spiffe://example.org/ns/agents/sa/deployer"

request(peer, env, service, delegation) := object.union(
	{
		"peer": {"spiffe_id": peer},
		"context": {"env": env},
		"attributes": {"request": {"http": {"method": "POST"}}},
		"parsed_path": ["deploy", service],
	},
	delegation,
)

alice(scope) := {"delegation": {"subject": "alice", "scope": scope, "claims": {"team": "payments"}}}

test_deploys_for_a_member_in_staging if {
	d := deploy_agent.allow with input as request(deployer, "staging", "ledger", alice(["deploy:staging"]))
	d.allowed
	d.headers["x-deploy-for"] == "alice"
}

test_never_in_production if {
	d := deploy_agent.allow with input as request(deployer, "prod", "ledger", alice(["deploy:staging"]))
	d.reason == "not_staging"
}

test_needs_the_scope if {
	d := deploy_agent.allow with input as request(deployer, "staging", "ledger", alice(["deploy:prod"]))
	d.reason == "scope_missing"
}

test_only_for_members_of_the_token_s_team if {
	carol := {"delegation": {"subject": "carol", "scope": ["deploy:staging"], "claims": {"team": "payments"}}}
	d := deploy_agent.allow with input as request(deployer, "staging", "ledger", carol)
	d.reason == "not_a_team_member"
}

test_only_the_team_s_services if {
	d := deploy_agent.allow with input as request(deployer, "staging", "indexer", alice(["deploy:staging"]))
	d.reason == "not_the_team_s_service"
}

test_needs_a_delegation if {
	d := deploy_agent.allow with input as request(deployer, "staging", "ledger", {})
	d.reason == "no_delegation"
}

test_only_the_deployer_agent if {
	d := deploy_agent.allow with input as request("spiffe://example.org/ns/agents/sa/summarizer", "staging", "ledger", alice(["deploy:staging"]))
	d.reason == "not_the_deployer"
}
