package envoy.authz

import rego.v1

expires := time.parse_rfc3339_ns(input.attributes.request.http.headers["x-expires"])

deny if expires < time.parse_rfc3339_ns(input.attributes.request.time)

default allow := false

allow if not deny

result := {"allowed": allow, "headers": {"x-parsed": parsed}}

default parsed := "no"

parsed := "yes" if expires
