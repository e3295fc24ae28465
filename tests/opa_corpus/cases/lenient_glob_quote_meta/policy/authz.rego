package envoy.authz

import rego.v1

default allow := false

# A literal file name from data becomes a glob pattern by quoting it.
allow if {
	some name in data.files
	glob.match(concat("", ["/files/", glob.quote_meta(name)]), ["/"], input.attributes.request.http.headers["x-file"])
}
