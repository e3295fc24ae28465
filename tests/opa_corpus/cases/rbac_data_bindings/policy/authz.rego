package envoy.authz

import rego.v1

default allow := false

# RBAC from data: bindings (principal -> roles) in the root data.json,
# role grants in roles/data.json (lands under data.roles).
caller := input.attributes.source.principal

caller_roles contains role if {
	some binding in data.bindings
	binding.principal == caller
	some role in binding.roles
}

allow if {
	some role in caller_roles
	some grant in data.roles[role]
	grant.method == input.attributes.request.http.method
	glob.match(grant.path, ["/"], input.attributes.request.http.path)
}
