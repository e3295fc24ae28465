package envoy.authz

import rego.v1

default allow := false

# A header carries "<base64 DER leaf>,<base64 DER CA>" or a PEM bundle
# (base64 of the PEMs), root first; OPA returns the verified chain leaf first.
chain := concat("\n", [sprintf("-----BEGIN CERTIFICATE-----\n%s\n-----END CERTIFICATE-----", [c]) |
	some c in split(input.attributes.request.http.headers["x-client-chain"], ",")
])

verified := crypto.x509.parse_and_verify_certificates(chain)

allow if {
	[ok, certs] := verified
	ok
	certs[0].Subject.CommonName == "summarizer"
}

verified_pem := crypto.x509.parse_and_verify_certificates(base64.decode(input.attributes.request.http.headers["x-client-pem"]))

allow if {
	[ok, certs] := verified_pem
	ok
	"summarizer.agents.svc" in certs[0].DNSNames
}
