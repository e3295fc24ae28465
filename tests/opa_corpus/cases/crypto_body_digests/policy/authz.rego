package envoy.authz

import rego.v1

default allow := false

body := input.attributes.request.http.body

allow if {
	input.attributes.request.http.headers["x-content-sha256"] == crypto.sha256(body)
	input.attributes.request.http.headers["x-content-sha1"] == crypto.sha1(body)
	input.attributes.request.http.headers["x-content-md5"] == crypto.md5(body)
}

allow if {
	hex_digest := crypto.sha256(body)
	input.attributes.request.http.headers.digest == sprintf("sha-256=%s", [base64.encode(hex.decode(hex_digest))])
}
