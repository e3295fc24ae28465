# Example 8: a deploy agent that acts only for its team, only in staging, only with the scope.
#
#   query: data.examples.deploy_agent.allow
#   data:  data.json in this directory, at data.examples.deploy_agent
#   run with: --context env=staging (the environment this regate guards)
#
# The deployer agent's certificate says what it is; a delegation token (input.delegation) says
# for whom it acts. It may deploy (POST /deploy/<service>) only when that person is a member
# of the team the token names (its `team` claim), the team owns the service, this regate
# guards staging, and the token grants `deploy:staging`.
package examples.deploy_agent

import rego.v1

deployer := "spiffe://example.org/ns/agents/sa/deployer"

default allow := {"allowed": false, "reason": "not_a_deploy"}

allow := decision if {
	input.attributes.request.http.method == "POST"
	count(input.parsed_path) == 2
	input.parsed_path[0] == "deploy"
}

service := input.parsed_path[1]

team := input.delegation.claims.team

decision := deny("not_the_deployer") if {
	input.peer.spiffe_id != deployer
} else := deny("no_delegation") if {
	not input.delegation
} else := deny("not_staging") if {
	input.context.env != "staging"
} else := deny("scope_missing") if {
	not "deploy:staging" in input.delegation.scope
} else := deny("not_a_team_member") if {
	not input.delegation.subject in object.get(data.examples.deploy_agent.teams, team, [])
} else := deny("not_the_team_s_service") if {
	data.examples.deploy_agent.services[service] != team
} else := {"allowed": true, "reason": "deploy_for_team", "headers": {"x-deploy-for": input.delegation.subject}}

deny(reason) := {"allowed": false, "reason": reason}
