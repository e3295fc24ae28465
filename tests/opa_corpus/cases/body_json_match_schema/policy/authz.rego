package envoy.authz

import rego.v1

check := json.match_schema(input.parsed_body, data.schemas.payment)

default allow := false

allow if check[0]

result["allowed"] := allow

result["body"] := json.marshal([e.error | some e in check[1]]) if not allow
