# Example 2: a policy written for OPA's Envoy plugin (opa-envoy-plugin), unchanged.
#
#   query: data.envoy.authz.allow   (run regate with --query data.envoy.authz.allow)
#
# It is Rego v0, as many opa-envoy-plugin policies are: rule bodies without the keyword,
# `default allow = false`, `=` for values. regate parses a file as v1 first and, when that
# fails, as v0. It reads only the Envoy-shaped part of input: attributes.source.principal
# (the caller's SPIFFE ID), attributes.request.http, parsed_path and parsed_query.
package envoy.authz

import input.attributes.request.http as http_request

default allow = false

allow = response {
	http_request.method == "GET"
	input.parsed_path[0] == "people"
	response := {
		"allowed": true,
		"headers": {"x-ext-auth-allow": "yes"},
		"response_headers_to_add": {"x-ext-auth-decision": "allow"},
		"request_headers_to_remove": ["x-debug-user"],
	}
}

allow = response {
	http_request.method == "POST"
	input.parsed_path == ["people"]
	admin
	response := {
		"allowed": true,
		"headers": {"x-ext-auth-allow": "yes"},
	}
}

allow = response {
	http_request.method == "DELETE"
	input.parsed_path[0] == "people"
	not admin
	response := {
		"allowed": false,
		"http_status": 403,
		"body": "only the HR portal may delete people",
		"headers": {"x-ext-auth-allow": "no"},
	}
}

allow = response {
	input.parsed_query.debug == ["true"]
	http_request.method == "GET"
	input.parsed_path[0] == "debug"
	response := {
		"allowed": true,
		"query_parameters_to_remove": ["debug"],
	}
}

admin {
	input.attributes.source.principal == "spiffe://example.org/ns/hr/sa/admin-portal"
}
