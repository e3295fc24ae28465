# DEV ONLY: a stand-in identity provider, to mint delegation tokens for the walkthrough in
# docs/securing-ai-agents.md with regate itself:
#
#   regate policy eval --policies certs-dev/idp --query data.mint.token --raw --skip-sample \
#       --input <(echo '{"sub": "alice", "scope": "docs:read", "actor": "summarizer"}')
#
# The key in key.json signs; ../idp.jwks.json is its public half, which regate.agents.yaml
# trusts. Never use either outside a laptop.
package mint

import rego.v1

now := floor(time.now_ns() / 1000000000)

claims := {
	"iss": "https://idp.dev.example",
	"aud": "regate",
	"sub": input.sub,
	"scope": object.get(input, "scope", ""),
	"act": {"sub": object.get(input, "actor", "summarizer")},
	"jti": sprintf("dev-%d", [now]),
	"iat": now,
	"exp": now + object.get(input, "ttl", 3600),
}

token := io.jwt.encode_sign({"alg": "ES256", "kid": "dev-idp", "typ": "JWT"}, claims, data.signing_key)
