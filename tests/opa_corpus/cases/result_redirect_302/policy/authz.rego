package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allow if http_request.headers.cookie
allow if startswith(http_request.path, "/public/")

is_browser if contains(http_request.headers.accept, "text/html")

redirect_to := sprintf("https://login.example.org/auth?return=%s", [urlquery.encode(http_request.path)])

result["allowed"] := allow

result["http_status"] := 302 if {
	not allow
	is_browser
}

result["http_status"] := 401 if {
	not allow
	not is_browser
}

result["headers"] := {"location": redirect_to} if {
	not allow
	is_browser
}

result["body"] := "login required" if not allow
