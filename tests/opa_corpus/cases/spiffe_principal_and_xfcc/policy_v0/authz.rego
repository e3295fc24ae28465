package envoy.authz

default allow = false

principal = input.attributes.source.principal

trust_domain = td {
	startswith(principal, "spiffe://")
	td := split(trim_prefix(principal, "spiffe://"), "/")[0]
}

xfcc_uri = trim_prefix(part, "URI=") {
	part := split(input.attributes.request.http.headers["x-forwarded-client-cert"], ";")[_]
	startswith(part, "URI=")
}

allow {
	trust_domain == "example.org"
	regex.match(`^spiffe://example\.org/ns/agents/sa/[a-z]+$`, principal)
	xfcc_uri == principal
}
