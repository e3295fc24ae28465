package envoy.authz

import rego.v1

allow := true if input.parsed_path[0] == "a"

allow := false if input.attributes.request.http.method == "DELETE"
