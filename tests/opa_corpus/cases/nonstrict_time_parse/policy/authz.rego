package envoy.authz

import rego.v1

# Non-strict evaluation (opa-envoy-plugin): when a builtin in deny's body
# errors, deny is undefined rather than the whole query failing, so
# `not deny` holds and the request is allowed.
default allow := false

allow if not deny

deny if {
	t := time.parse_rfc3339_ns(input.attributes.request.http.headers["x-not-before"])
	t > time.parse_rfc3339_ns(input.attributes.request.time)
}
