package envoy.authz.helpers

import rego.v1

default ok := false

ok if {
	some segment in input.parsed_path
	segment == "health"
}
