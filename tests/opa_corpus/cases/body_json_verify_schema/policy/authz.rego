package envoy.authz

import rego.v1

default allow := false

allow if {
	[ok, _] := json.verify_schema(input.parsed_body.schema)
	ok
	input.parsed_body.schema.type == "object"
}
