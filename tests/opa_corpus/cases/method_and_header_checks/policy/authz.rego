package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allowed_methods := {"GET", "HEAD", "OPTIONS"}

allow if {
	http_request.method in allowed_methods
	not http_request.headers["x-debug"]
}

allow if {
	http_request.method == "POST"
	http_request.headers["content-type"] == "application/json"
	http_request.headers["x-csrf-token"] == "t0ken"
}
