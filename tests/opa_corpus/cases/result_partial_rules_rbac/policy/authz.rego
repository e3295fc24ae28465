package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allow if {
	roles_for_user[r]
	required_roles[r]
}

allow if {
	input.parsed_path == ["my", "test", "path"]
	input.parsed_query.a == ["1", "2"]
	input.parsed_query.x == ["y"]
}

allow if {
	input.parsed_body.firstname == "foo"
	input.parsed_body.lastname == "bar"
	input.parsed_body.dept.it == "eng"
}

roles_for_user contains r if {
	some r in user_roles[user_name]
}

required_roles contains r if {
	some r, perms in role_perms
	some perm in perms
	perm.method == http_request.method
	perm.path == http_request.path
}

user_name := parsed if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[parsed, _] := split(base64url.decode(encoded), ":")
}

user_roles := {
	"alice": ["guest"],
	"bob": ["admin"],
}

role_perms := {
	"guest": [{"method": "GET", "path": "/productpage"}],
	"admin": [
		{"method": "GET", "path": "/productpage"},
		{"method": "GET", "path": "/api/v1/products"},
	],
}

result.allowed := allow

result.headers := {
	"x-ext-auth-allow": "yes",
	"x-user": user_name,
}

result.request_headers_to_remove := ["authorization", "cookie"]

result.query_parameters_to_remove := ["debug"]

result.query_parameters_to_set := {
	"checked": "true",
	"roles": sort([r | some r in roles_for_user]),
}

result.response_headers_to_add := {"x-authz": "regate-corpus"}
