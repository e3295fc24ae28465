package envoy.authz

default allow = false

caller = input.attributes.source.principal

caller_roles[role] {
	binding := data.bindings[_]
	binding.principal == caller
	role := binding.roles[_]
}

allow {
	role := caller_roles[_]
	grant := data.roles[role][_]
	grant.method == input.attributes.request.http.method
	glob.match(grant.path, ["/"], input.attributes.request.http.path)
}
