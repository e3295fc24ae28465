package envoy.authz

import rego.v1

default allow := false

now := time.parse_rfc3339_ns(input.attributes.request.time)

allow if {
	[hour, _, _] := time.clock([now, "Europe/Berlin"])
	hour >= 8
	hour < 18
	not time.weekday(now) in {"Saturday", "Sunday"}
}

allow if {
	[year, _, _] := time.date(now)
	year < 2000
}
