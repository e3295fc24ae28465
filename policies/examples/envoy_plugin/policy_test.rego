package envoy.authz_test

import data.envoy.authz

hr_portal := "spiffe://example.org/ns/hr/sa/admin-portal"

directory := "spiffe://example.org/ns/web/sa/directory"

# The Envoy-shaped fields this policy reads, as regate fills them.
request(principal, method, path, query) := {
	"attributes": {
		"source": {"principal": principal},
		"request": {"http": {"method": method, "headers": {}}},
	},
	"parsed_path": path,
	"parsed_query": query,
}

test_anyone_reads_people if {
	d := authz.allow with input as request(directory, "GET", ["people", "alice"], {})
	d.allowed
	d.headers["x-ext-auth-allow"] == "yes"
	d.request_headers_to_remove == ["x-debug-user"]
}

test_only_the_hr_portal_adds_people if {
	authz.allow.allowed with input as request(hr_portal, "POST", ["people"], {})
	not authz.allow with input as request(directory, "POST", ["people"], {})
}

test_delete_is_refused_with_a_body if {
	d := authz.allow with input as request(directory, "DELETE", ["people", "alice"], {})
	d.allowed == false
	d.http_status == 403
	d.body == "only the HR portal may delete people"
}

test_hr_portal_delete_falls_to_the_default if {
	# No rule grants it: the default `false` is a plain deny.
	authz.allow == false with input as request(hr_portal, "DELETE", ["people", "alice"], {})
}

test_debug_parameter_is_stripped if {
	d := authz.allow with input as request(directory, "GET", ["debug"], {"debug": ["true"]})
	d.query_parameters_to_remove == ["debug"]
}
