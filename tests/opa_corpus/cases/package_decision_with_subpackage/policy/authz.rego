package envoy.authz

import rego.v1

allowed := data.envoy.authz.helpers.ok

headers["x-path-depth"] := format_int(count(input.parsed_path), 10)
