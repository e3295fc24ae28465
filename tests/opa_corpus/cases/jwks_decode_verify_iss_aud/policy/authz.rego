package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

# The JWKS is inlined as a raw string, as in the OPA Envoy docs' JWKS example
# (which fetches it with http.send; regate policies cannot call out).
jwks := `{
  "keys": [
    {
      "kty": "RSA",
      "n": "tDIrcCH965Wo5oyM48TveaLr3Dq1YLNACYIZ4pnnQwBTtnnGcWTkGHZKmrMrrNbZgwTy04_FfryoQ-a_0xWXcJ7-u8cyzaIE_w0dIgctvcYRYBrFApHndiIBus5SWAhxd6oW5gkCJ8fNV_tu84IYRtN7W9Y3l9iuuvgwO6JGyFhatfw29PHjH7HbL-n05CxjDyA0Q0MRDHvsQgSrrweIop40SOW7ZMgRSbi_5paGG4lQn7IKQliPLQIka4mKsRAScfOAo_8ZdXWjLItqV3MVEhZKfva-nokWmj7eld_CrIuYrXW8gunYSXWZVSygsMRIw8aWkv_VEgLKPZU5Ck0-Nw",
      "e": "AQAB",
      "kid": "corpus-rsa",
      "alg": "RS256",
      "use": "sig"
    },
    {
      "kty": "EC",
      "crv": "P-256",
      "x": "8Di8YfavYSFVSVX41ajQgcG9TWTQROsbBCoWvVWeerQ",
      "y": "69GEc7RYVDBvwIGmWLLTsVgYj91unXo-Zuorf2zi3Qw",
      "kid": "corpus-ec",
      "alg": "ES256",
      "use": "sig"
    }
  ]
}`

default allow := false

allow if {
	is_token_valid
	action_allowed
}

bearer_token := t if {
	v := http_request.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, count("Bearer "), -1)
}

verified := [valid, header, payload] if {
	constraints := {"cert": jwks, "iss": "https://issuer.example.org/", "aud": "regate-corpus"}
	[valid, header, payload] := io.jwt.decode_verify(bearer_token, constraints)
}

is_token_valid if verified[0]

claims := verified[2]

action_allowed if {
	http_request.method == "GET"
	"read" in split(claims.scope, " ")
	glob.match("/api/*", ["/"], http_request.path)
}

action_allowed if {
	http_request.method == "POST"
	"write" in split(claims.scope, " ")
	glob.match("/api/*", ["/"], http_request.path)
}
