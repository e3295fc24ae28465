package envoy.authz

import rego.v1

import input.attributes.request.http

default allow := false

allow if {
	is_token_valid
	action_allowed
}

headers["x-ext-auth-allow"] := "yes"

headers["x-validated-by"] := "security-checkpoint"

request_headers_to_remove := ["one-auth-header", "another-auth-header"]

response_headers_to_add["x-foo"] := "bar"

query_parameters_to_set := {
	"user-role": token.payload.role,
	"tags": ["main-flow", "auth-enabled"],
}

status_code := 200 if {
	allow
} else := 401 if {
	not is_token_valid
} else := 403

body := "Authentication Failed" if status_code == 401

body := "Unauthorized Request" if status_code == 403

dynamic_metadata := {"foo": "bar"}

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http.method == "GET"
	token.payload.role == "guest"
	glob.match("/people/*", ["/"], http.path)
}

action_allowed if {
	http.method == "GET"
	token.payload.role == "admin"
	glob.match("/people/*", ["/"], http.path)
}

action_allowed if {
	http.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}

result["allowed"] := allow

result["headers"] := headers

result["response_headers_to_add"] := response_headers_to_add

result["request_headers_to_remove"] := request_headers_to_remove

result["body"] := body

result["http_status"] := status_code

result["dynamic_metadata"] := dynamic_metadata

result["query_parameters_to_set"] := query_parameters_to_set
