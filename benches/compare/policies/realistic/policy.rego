package regate.authz

# A realistic grant policy: 20 grants in data (SPIFFE ID, methods, path globs, environments),
# a revocation list, and a decision object with a reason and a header for the application.
default allow := {"allowed": false, "reason": "no_matching_grant"}

allow := {"allowed": false, "reason": "revoked"} if revoked

allow := {
	"allowed": true,
	"reason": concat(":", ["grant", matching[0]]),
	"headers": {"x-regate-grant": matching[0]},
} if {
	not revoked
	count(matching) > 0
}

matching := [grant.name |
	some grant in data.grants
	grant.spiffe_id == input.peer.spiffe_id
	input.attributes.request.http.method in grant.methods
	input.context.env in grant.environments
	some pattern in grant.paths
	glob.match(pattern, ["/"], input.attributes.request.http.path)
]

revoked if input.peer.serial in data.revoked.serials

revoked if input.peer.spiffe_id in data.revoked.spiffe_ids
