package envoy.authz

import rego.v1

default allow := false

# Envoy's x-forwarded-client-cert: `Key=value;Key="quoted"` pairs.
xfcc := {k: trim(v, "\"") |
	some part in split(input.attributes.request.http.headers["x-forwarded-client-cert"], ";")
	[k, v] := split(part, "=")
}

# Cert= carries the URL-encoded PEM; its base64 has '=' padding, so split
# on the first '=' only.
cert_pem := urlquery.decode(trim(substring(part, 5, -1), "\"")) if {
	some part in split(input.attributes.request.http.headers["x-forwarded-client-cert"], ";")
	startswith(part, "Cert=")
}

certs := crypto.x509.parse_certificates(cert_pem)

allow if {
	some uri in certs[0].URIStrings
	uri == input.attributes.source.principal
	certs[0].Subject.CommonName == "summarizer"
	xfcc.URI == uri
}
