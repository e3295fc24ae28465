package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

path := split(http_request.path, "?")[0]

allow if startswith(path, "/public/")

allow if glob.match("/v1/docs/*/meta", ["/"], path)

allow if glob.match("/assets/**.png", [], path)

allow if regex.match(`^/v[0-9]+/status$`, path)
