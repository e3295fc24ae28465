package envoy.authz

import rego.v1

import input.attributes.request.http

default allow := false

allow if {
	is_token_valid
	action_allowed
}

allow if input.parsed_path == ["people"]

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http.method == "GET"
	token.payload.role in {"guest", "admin"}
	glob.match("/people/*", ["/"], http.path)
}

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}
