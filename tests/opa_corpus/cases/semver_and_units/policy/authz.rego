package envoy.authz

import rego.v1

headers := input.attributes.request.http.headers

default allow := false

allow if {
	v := trim_prefix(headers["x-client-version"], "v")
	semver.is_valid(v)
	semver.compare(v, "1.4.0") >= 0
	to_number(object.get(headers, "content-length", "0")) <= units.parse_bytes("1KiB")
}
