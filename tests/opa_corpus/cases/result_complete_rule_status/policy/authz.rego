package envoy.authz

import rego.v1

default allow := false

allow if {
	input.parsed_path[0] == "v1"
	input.attributes.request.http.headers["x-api-key"] == data.api_keys[_]
}

status := 200 if allow
else := 401 if not input.attributes.request.http.headers["x-api-key"]
else := 403

# One complete rule assembling the whole decision.
result := {
	"allowed": allow,
	"http_status": status,
	"headers": {"x-status-reason": reason},
	"body": sprintf("status %d", [status]),
}

reason := "ok" if status == 200
else := "missing key" if status == 401
else := "bad key"
