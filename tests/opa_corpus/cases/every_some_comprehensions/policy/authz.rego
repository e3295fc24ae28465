package envoy.authz

import rego.v1

default allow := false

headers := input.attributes.request.http.headers

custom := {name: value | some name, value in headers; startswith(name, "x-app-")}

forbidden := {name | some name, _ in headers; name in data.forbidden_headers}

lengths := [count(v) | some v in custom]

allow if {
	count(forbidden) == 0
	every name, value in custom {
		regex.match(`^[a-z0-9-]+$`, value)
		name != "x-app-admin"
	}
	sum(lengths) < 40
}
