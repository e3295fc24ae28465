package envoy.authz

import rego.v1

default allow := false

allow if {
	input.parsed_path == ["people"]
	input.parsed_query.lang == ["en"]
	input.parsed_query.id == ["1", "2"]
}

allow if {
	input.parsed_path[0] == "search"
	count(input.parsed_query.q) == 1
	every v in input.parsed_query.q { count(v) <= 10 }
}
