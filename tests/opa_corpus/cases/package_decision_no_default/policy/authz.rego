package envoy.authz

import rego.v1

# No default: when `allowed` is undefined the package object has no
# `allowed` key, which the plugin reads as a denial.
allowed if input.attributes.source.principal == "spiffe://example.org/ns/agents/sa/summarizer"

response_headers_to_add := {"x-peer-td": input.peer.trust_domain}

request_headers_to_remove := ["x-forwarded-client-cert"]
