package envoy.authz

import rego.v1

requested := input.attributes.request.http.headers["x-target-cidr"]

zones := net.cidr_merge(data.zones)

valid if net.cidr_is_valid(requested)

overlaps contains z if {
	some z in zones
	net.cidr_intersects(z, requested)
}

default small_hosts := []

small_hosts := net.cidr_expand(requested) if {
	valid
	endswith(requested, "/30")
}

default allow := false

allow if {
	valid
	count(overlaps) == 0
}

result := {"allowed": allow, "headers": {"x-zones": concat(",", sort(zones)), "x-hosts": concat(",", sort(small_hosts))}} if valid

result := {"allowed": false, "body": "invalid cidr"} if not valid
