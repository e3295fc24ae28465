# Example policy for the regate demo: which workload may call which API.
#
# Identity proves who the caller is (input.peer.spiffe_id, from its mTLS certificate);
# the grants in data.json decide what it may do, per request.
package regate.authz

# regate asks for data.regate.authz.allow. An object lets the policy say why, and pass
# headers to the application. Anything not granted is denied.
default allow := {"allowed": false, "reason": "no_matching_grant"}

# Revocation is checked first and wins over every grant.
allow := {"allowed": false, "reason": "revoked"} if {
	revoked
} else := {
	"allowed": true,
	"reason": "granted",
	"headers": {"x-regate-workload": workload},
} if {
	granted
}

spiffe_id := input.peer.spiffe_id

revoked if spiffe_id in data.revoked.spiffe_ids

revoked if input.peer.serial in data.revoked.serials

# A grant names methods and a path prefix as segments, so /docs does not match /docsecret.
granted if {
	some grant in data.grants[spiffe_id]
	input.attributes.request.http.method in grant.methods
	count(grant.prefix) <= count(input.parsed_path)
	array.slice(input.parsed_path, 0, count(grant.prefix)) == grant.prefix
}

# The workload's short name: the last segment of its SPIFFE ID path.
workload := name if {
	parts := split(spiffe_id, "/")
	name := parts[count(parts) - 1]
}
