package envoy.authz

import rego.v1

default allow := false

allow if not denied

candidates contains input.attributes.source.address.socketAddress.address

candidates contains trim_space(a) if {
	some a in split(input.attributes.request.http.headers["x-forwarded-for"], ",")
}

matches := net.cidr_contains_matches(data.denied, candidates)

denied if count(matches) > 0
