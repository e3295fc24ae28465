package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.source.principal in data.trusted

dynamic_metadata["caller"] := input.attributes.source.principal

dynamic_metadata["request_id"] := input.attributes.request.http.headers["x-request-id"]

dynamic_metadata["segments"] := count(input.parsed_path)

result["allowed"] := allow

result["dynamic_metadata"] := dynamic_metadata
