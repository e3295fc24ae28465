package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.method == "GET"

result["allowed"] := allow

result["body"] := strings.render_template("{{.method}} on {{.path}} is not allowed for {{.who}}", {
	"method": input.attributes.request.http.method,
	"path": input.attributes.request.http.path,
	"who": input.peer.spiffe_id,
}) if not allow
