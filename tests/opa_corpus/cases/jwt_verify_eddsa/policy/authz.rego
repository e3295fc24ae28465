package envoy.authz

import rego.v1

default allow := false

allow if io.jwt.verify_eddsa(trim_prefix(input.attributes.request.http.headers.authorization, "Bearer "), data.ed25519_pub)
