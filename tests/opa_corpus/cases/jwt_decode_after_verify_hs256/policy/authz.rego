package envoy.authz

import rego.v1

default allow := false

allow if {
	is_post
	is_dogs
	claims.username == "alice"
}

allow if {
	input.attributes.request.http.method == "GET"
	io.jwt.verify_hs256(bearer_token, "secret")
	claims.role == "guest"
}

is_post if input.attributes.request.http.method == "POST"

is_dogs if input.parsed_path == ["pets", "dogs"]

claims := payload if {
	# Verify first, then decode: the OPA playground's "JWT Decoding" example.
	io.jwt.verify_hs256(bearer_token, "secret")
	[_, payload, _] := io.jwt.decode(bearer_token)
}

bearer_token := t if {
	v := input.attributes.request.http.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, count("Bearer "), -1)
}
