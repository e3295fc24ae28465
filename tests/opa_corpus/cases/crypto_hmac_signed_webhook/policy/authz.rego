package envoy.authz

import rego.v1

default allow := false

headers := input.attributes.request.http.headers

allow if {
	expected := crypto.hmac.sha256(concat(".", [headers["x-timestamp"], input.attributes.request.http.body]), data.webhook_secret)
	crypto.hmac.equal(expected, headers["x-signature"])
}

allow if {
	expected := crypto.hmac.sha512(input.attributes.request.http.body, data.webhook_secret)
	crypto.hmac.equal(expected, trim_prefix(headers["x-signature-512"], "sha512="))
}
