package envoy.authz

import rego.v1

tier := "gold" if {
	input.attributes.source.principal in data.gold
} else := "silver" if {
	endswith(input.attributes.source.principal, "/planner")
} else := "bronze"

kind(path) := "admin" if startswith(path, "/admin")

kind(path) := "api" if startswith(path, "/api")

kind(path) := "other" if {
	not startswith(path, "/admin")
	not startswith(path, "/api")
}

limit("gold") := 1000

limit("silver") := 100

limit(t) := 10 if not t in {"gold", "silver"}

default allow := false

allow if {
	kind(input.attributes.request.http.path) != "admin"
	limit(tier) >= 100
}

allow if {
	kind(input.attributes.request.http.path) == "other"
}

result := {"allowed": allow, "headers": {"x-tier": tier, "x-limit": format_int(limit(tier), 10)}}
