package envoy.authz

import rego.v1

deny if to_number(input.attributes.request.http.headers["x-priority"]) > 5

default allow := false

allow if {
	not deny
	input.attributes.request.http.headers["x-priority"]
	to_number(input.attributes.request.http.headers["x-priority"]) >= 0
}

allow if {
	not deny
	input.attributes.request.http.headers["x-override"] == "1"
}
