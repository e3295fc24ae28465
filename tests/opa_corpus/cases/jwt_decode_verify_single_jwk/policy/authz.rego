package envoy.authz

import rego.v1

default allow := false

token := t if {
	[kind, t] := split(input.attributes.request.http.headers.authorization, " ")
	kind == "Bearer"
}

decoded := io.jwt.decode_verify(token, {"cert": json.marshal(data.jwk), "aud": "regate-corpus"})

allow if {
	[valid, _, payload] := decoded
	valid
	payload.sub == "alice"
}

result["allowed"] := allow

result["headers"] := {"x-jwt-alg": decoded[1].alg} if decoded[0]

result["http_status"] := 401 if not allow
