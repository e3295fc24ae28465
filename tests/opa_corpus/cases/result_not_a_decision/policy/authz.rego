package envoy.authz

import rego.v1

# Decision objects that are NOT decisions to the plugin: `allow` is not
# `allowed`, and "true" is not a boolean.  Only `allowed: true` allows.
result := {"allow": true, "headers": {"x": "1"}} if input.parsed_path[0] == "allow-key"

result := {"allowed": "true"} if input.parsed_path[0] == "string-true"

result := {"allowed": 1} if input.parsed_path[0] == "number-one"

result := {"allowed": true, "allow": false} if input.parsed_path[0] == "allowed-key"

result := true if input.parsed_path[0] == "bare-true"

result := "allowed" if input.parsed_path[0] == "string"
