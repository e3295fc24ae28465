package envoy.authz

import rego.v1

# A complete rule with an object default: the decision is always an object.
default result := {"allowed": false, "http_status": 403, "body": "denied by default"}

result := {
	"allowed": true,
	"headers": {"x-caller": input.attributes.source.principal},
	"response_headers_to_add": {"x-policy": "default-object"},
} if {
	startswith(input.attributes.source.principal, "spiffe://example.org/")
	input.attributes.request.http.method in {"GET", "HEAD"}
}
