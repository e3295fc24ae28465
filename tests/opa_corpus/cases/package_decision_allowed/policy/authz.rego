package envoy.authz

import rego.v1

# Queried as data.envoy.authz: the package object itself is the decision.
default allowed := false

allowed if {
	input.attributes.request.http.method == "GET"
	glob.match("/v1/docs/**", ["/"], input.attributes.request.http.path)
}

headers := {"x-decided-by": "package"}

http_status := 403 if not allowed

body := "forbidden" if not allowed
