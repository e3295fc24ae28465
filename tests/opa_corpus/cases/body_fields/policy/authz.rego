package envoy.authz

import rego.v1

default allow := false

body := object.get(input, "parsed_body", {})

allow if {
	body.firstname == "Charlie"
	object.get(body, ["meta", "source"], "web") == "web"
	not has_secret_key
	count(array.flatten(object.get(body, "tags", []))) <= 3
}

has_secret_key if {
	walk(body, [path, _])
	path[count(path) - 1] == "password"
}
