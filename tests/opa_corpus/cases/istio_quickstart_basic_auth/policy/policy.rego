package istio.authz

import rego.v1

import input.attributes.request.http as http_request
import input.parsed_path

default allow := false

allow if {
	parsed_path[0] == "health"
	http_request.method == "GET"
}

allow if {
	some r in roles_for_user
	r in required_roles
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

user_roles := {"alice": ["guest"], "bob": ["admin"]}

role_perms := {
	"guest": [{"method": "GET", "path": "/productpage"}],
	"admin": [
		{"method": "GET", "path": "/productpage"},
		{"method": "GET", "path": "/api/v1/products"},
	],
}
