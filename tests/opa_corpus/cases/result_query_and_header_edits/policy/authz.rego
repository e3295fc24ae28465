package envoy.authz

import rego.v1

default allow := false

allow if input.parsed_path[0] == "search"

result.allowed := allow

# Drop every tracking parameter the client sent, set a tenant parameter.
result.query_parameters_to_remove := [k | some k, _ in input.parsed_query; startswith(k, "utm_")]

result.query_parameters_to_set := {"tenant": input.peer.trust_domain, "safe": ["1", "strict"]}

result.request_headers_to_remove := ["x-debug", "x-internal-token"]

result.response_headers_to_add["x-tenant"] := input.peer.trust_domain

result.response_headers_to_add["cache-control"] := "no-store"
