package envoy.authz

import input.attributes.request.http as http_request

default allow = false

allow {
	roles_for_user[r]
	required_roles[r]
}

allow {
	input.parsed_path = ["my", "test", "path"]
	input.parsed_query.a = ["1", "2"]
	input.parsed_query.x = ["y"]
}

allow {
	input.parsed_body.firstname == "foo"
	input.parsed_body.lastname == "bar"
	input.parsed_body.dept.it == "eng"
}

roles_for_user[r] {
	r := user_roles[user_name][_]
}

required_roles[r] {
	perm := role_perms[r][_]
	perm.method = http_request.method
	perm.path = http_request.path
}

user_name = parsed {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[parsed, _] := split(base64url.decode(encoded), ":")
}

user_roles = {
	"alice": ["guest"],
	"bob": ["admin"]
}

role_perms = {
	"guest": [
		{"method": "GET", "path": "/productpage"},
	],
	"admin": [
		{"method": "GET", "path": "/productpage"},
		{"method": "GET", "path": "/api/v1/products"},
	],
}

result.allowed = allow

result.headers = {
	"x-ext-auth-allow": "yes",
	"x-user": user_name,
}

result.request_headers_to_remove = ["authorization", "cookie"]

result.query_parameters_to_remove = ["debug"]

result.query_parameters_to_set = {
	"checked": "true",
	"roles": sort([r | roles_for_user[r]]),
}

result.response_headers_to_add = {"x-authz": "regate-corpus"}
