package envoy.authz

import rego.v1

default allow := false

principal := input.attributes.source.principal

trust_domain := td if {
	startswith(principal, "spiffe://")
	td := split(trim_prefix(principal, "spiffe://"), "/")[0]
}

# The URI field of Envoy's x-forwarded-client-cert header.
xfcc_uri := trim_prefix(part, "URI=") if {
	some part in split(input.attributes.request.http.headers["x-forwarded-client-cert"], ";")
	startswith(part, "URI=")
}

allow if {
	trust_domain == "example.org"
	regex.match(`^spiffe://example\.org/ns/agents/sa/[a-z]+$`, principal)
	xfcc_uri == principal
}
