# Example 4: a kill switch. Revoked identities, certificate serials and whole trust domains
# are listed in data and checked before anything else, with reason "revoked".
#
#   query: data.examples.kill_switch.allow
#   data:  data.json in this directory, at data.examples.kill_switch
#
# Revoking is a data change: edit revoked.json (or push it from your incident tooling) and
# regate reloads it without a restart; the next request on every open connection sees it.
# The lists are objects keyed by what they revoke, so each check is one lookup, however
# long the list grows. The values say why, for the people reading the file.
package examples.kill_switch

# An else chain is evaluated in order: a revoked caller never reaches a grant.
allow := {"allowed": false, "reason": "revoked"} if {
	is_revoked
} else := {"allowed": true, "reason": "granted"} if {
	input.attributes.request.http.method in data.examples.kill_switch.grants[input.peer.spiffe_id]
} else := {"allowed": false, "reason": "no_matching_grant"}

is_revoked if data.examples.kill_switch.revoked.spiffe_ids[input.peer.spiffe_id]

is_revoked if data.examples.kill_switch.revoked.serials[input.peer.serial]

is_revoked if data.examples.kill_switch.revoked.trust_domains[input.peer.trust_domain]
