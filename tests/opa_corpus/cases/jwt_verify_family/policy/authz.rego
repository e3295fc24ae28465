package envoy.authz

import rego.v1

default allow := false

token := trim_prefix(input.attributes.request.http.headers.authorization, "Bearer ")

alg := io.jwt.decode(token)[0].alg

allow if {
	alg == "RS256"
	io.jwt.verify_rs256(token, data.keys.rsa_cert)
}

allow if {
	alg == "RS384"
	io.jwt.verify_rs384(token, data.keys.rsa_pub)
}

allow if {
	alg == "RS512"
	io.jwt.verify_rs512(token, data.keys.rsa_cert)
}

allow if {
	alg == "PS256"
	io.jwt.verify_ps256(token, data.keys.rsa_pub)
}

allow if {
	alg == "PS384"
	io.jwt.verify_ps384(token, data.keys.rsa_jwks)
}

allow if {
	alg == "ES256"
	io.jwt.verify_es256(token, data.keys.ec256_pub)
}

allow if {
	alg == "ES384"
	io.jwt.verify_es384(token, data.keys.ec384_pub)
}

allow if {
	alg == "HS256"
	io.jwt.verify_hs256(token, "secret")
}

allow if {
	alg == "HS384"
	io.jwt.verify_hs384(token, "corpus-hs384-secret")
}

allow if {
	alg == "HS512"
	io.jwt.verify_hs512(token, "corpus-hs512-secret")
}
