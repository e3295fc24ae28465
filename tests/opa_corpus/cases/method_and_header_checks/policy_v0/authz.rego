package envoy.authz

import input.attributes.request.http as http_request

default allow = false

allowed_methods = {"GET", "HEAD", "OPTIONS"}

allow {
	allowed_methods[http_request.method]
	not http_request.headers["x-debug"]
}

allow {
	http_request.method == "POST"
	http_request.headers["content-type"] == "application/json"
	http_request.headers["x-csrf-token"] == "t0ken"
}
