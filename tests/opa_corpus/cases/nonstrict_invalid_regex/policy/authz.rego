package envoy.authz

import rego.v1

# Non-strict evaluation (opa-envoy-plugin): when a builtin in deny's body
# errors, deny is undefined rather than the whole query failing, so
# `not deny` holds and the request is allowed.
default allow := false

allow if not deny

deny if {
	some pattern in data.blocked_patterns
	regex.match(pattern, input.attributes.request.http.path)
}
