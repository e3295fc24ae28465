package envoy.authz

import rego.v1

default allow := false

allow if {
	some glob in data.grants[input.attributes.source.principal]
	regex.globs_match(glob, input.attributes.request.http.path)
}
