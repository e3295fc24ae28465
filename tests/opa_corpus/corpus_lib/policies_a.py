"""Cases: decision objects, package decisions, the OPA Envoy JWT tutorials,
and the io.jwt.* builtins."""

import json

from .inputs import request, bearer, SPIFFE
from .keys import KEYS, token, unsigned, tamper

FAR = 4102444800  # 2100-01-01
NBF = 1514851139
PAST = 1600000000  # 2020-09-13, long expired

PLUGIN = "opa-envoy-plugin internal/internal_test.go"
PRIMER = "OPA docs, Envoy 'Policy Primer via Examples'"
TUTORIAL = "OPA docs, 'Tutorial: Standalone Envoy'"


def basic(user, pw="password"):
    import base64
    return {"authorization": "Basic " + base64.urlsafe_b64encode(f"{user}:{pw}".encode()).decode()}


def case(name, about, query, files, inputs, v0=None):
    c = {"name": name, "about": about, "query": query, "files": files, "inputs": inputs}
    if v0:
        c["v0_files"] = v0
    return c


# ---------------------------------------------------------------------------
# 1. decision objects built from partial rules
# ---------------------------------------------------------------------------

PLUGIN_RBAC = '''package envoy.authz

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
'''

PLUGIN_RBAC_V0 = '''package envoy.authz

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
'''


def tok_hs(role, sub, exp=FAR, name=None, secret_alg="HS256"):
    claims = {"exp": exp, "nbf": NBF, "role": role, "sub": sub}
    return token(name or f"tutorial-{role}-{sub}-{exp}", secret_alg, claims)


ALICE = lambda: tok_hs("guest", "YWxpY2U=")  # noqa: E731  sub = base64url("alice")
BOB = lambda: tok_hs("admin", "Ym9i")  # noqa: E731  sub = base64url("bob")

PRIMER_CONTROLS = '''package envoy.authz

import rego.v1

import input.attributes.request.http

default allow := false

allow if {
	is_token_valid
	action_allowed
}

headers["x-ext-auth-allow"] := "yes"

headers["x-validated-by"] := "security-checkpoint"

request_headers_to_remove := ["one-auth-header", "another-auth-header"]

response_headers_to_add["x-foo"] := "bar"

query_parameters_to_set := {
	"user-role": token.payload.role,
	"tags": ["main-flow", "auth-enabled"],
}

status_code := 200 if {
	allow
} else := 401 if {
	not is_token_valid
} else := 403

body := "Authentication Failed" if status_code == 401

body := "Unauthorized Request" if status_code == 403

dynamic_metadata := {"foo": "bar"}

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http.method == "GET"
	token.payload.role == "guest"
	glob.match("/people/*", ["/"], http.path)
}

action_allowed if {
	http.method == "GET"
	token.payload.role == "admin"
	glob.match("/people/*", ["/"], http.path)
}

action_allowed if {
	http.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}

result["allowed"] := allow

result["headers"] := headers

result["response_headers_to_add"] := response_headers_to_add

result["request_headers_to_remove"] := request_headers_to_remove

result["body"] := body

result["http_status"] := status_code

result["dynamic_metadata"] := dynamic_metadata

result["query_parameters_to_set"] := query_parameters_to_set
'''

DEFAULT_OBJECT = '''package envoy.authz

import rego.v1

# A complete rule with an object default: the decision is always an object.
default result := {"allowed": false, "http_status": 403, "body": "denied by default"}

result := {
	"allowed": true,
	"headers": {"x-caller": input.attributes.source.principal},
	"response_headers_to_add": {"x-policy": "default-object"},
} if {
	startswith(input.attributes.source.principal, "spiffe://example.org/")
	input.attributes.request.http.method in {"GET", "HEAD"}
}
'''

COMPLETE_RULE = '''package envoy.authz

import rego.v1

default allow := false

allow if {
	input.parsed_path[0] == "v1"
	input.attributes.request.http.headers["x-api-key"] == data.api_keys[_]
}

status := 200 if allow
else := 401 if not input.attributes.request.http.headers["x-api-key"]
else := 403

# One complete rule assembling the whole decision.
result := {
	"allowed": allow,
	"http_status": status,
	"headers": {"x-status-reason": reason},
	"body": sprintf("status %d", [status]),
}

reason := "ok" if status == 200
else := "missing key" if status == 401
else := "bad key"
'''

REDIRECT = '''package envoy.authz

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
'''

QUERY_PARAMS = '''package envoy.authz

import rego.v1

default allow := false

allow if input.parsed_path[0] == "search"

result.allowed := allow

# Drop every tracking parameter the client sent, set a tenant parameter.
result.query_parameters_to_remove := [k | some k, _ in input.parsed_query; startswith(k, "utm_")]

result.query_parameters_to_set := {"tenant": input.peer.trust_domain, "safe": ["1", "strict"]}

result.request_headers_to_remove := ["x-debug", "x-internal-token"]

result.response_headers_to_add["x-tenant"] := input.peer.trust_domain

result.response_headers_to_add["cache-control"] := "no-store"
'''

ALLOW_KEY_ONLY = '''package envoy.authz

import rego.v1

# Decision objects that are NOT decisions to the plugin: `allow` is not
# `allowed`, and "true" is not a boolean.  Only `allowed: true` allows.
result := {"allow": true, "headers": {"x": "1"}} if input.parsed_path[0] == "allow-key"

result := {"allowed": "true"} if input.parsed_path[0] == "string-true"

result := {"allowed": 1} if input.parsed_path[0] == "number-one"

result := {"allowed": true, "allow": false} if input.parsed_path[0] == "allowed-key"

result := true if input.parsed_path[0] == "bare-true"

result := "allowed" if input.parsed_path[0] == "string"
'''

DYNAMIC_METADATA = '''package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.source.principal in data.trusted

dynamic_metadata["caller"] := input.attributes.source.principal

dynamic_metadata["request_id"] := input.attributes.request.http.headers["x-request-id"]

dynamic_metadata["segments"] := count(input.parsed_path)

result["allowed"] := allow

result["dynamic_metadata"] := dynamic_metadata
'''

# ---------------------------------------------------------------------------
# 2. the package is the decision
# ---------------------------------------------------------------------------

PKG_ALLOWED = '''package envoy.authz

import rego.v1

# Queried as data.envoy.authz: the package object itself is the decision.
default allowed := false

allowed if {
	input.attributes.request.http.method == "GET"
	glob.match("/v1/docs/**", ["/"], input.attributes.request.http.path)
}

headers := {"x-decided-by": "package"}

http_status := 403 if not allowed

body := "forbidden" if not allowed
'''

PKG_NO_DEFAULT = '''package envoy.authz

import rego.v1

# No default: when `allowed` is undefined the package object has no
# `allowed` key, which the plugin reads as a denial.
allowed if input.attributes.source.principal == "spiffe://example.org/ns/agents/sa/summarizer"

response_headers_to_add := {"x-peer-td": input.peer.trust_domain}

request_headers_to_remove := ["x-forwarded-client-cert"]
'''

PKG_NESTED = '''package envoy.authz

import rego.v1

allowed := data.envoy.authz.helpers.ok

headers["x-path-depth"] := format_int(count(input.parsed_path), 10)
'''

PKG_NESTED_HELPERS = '''package envoy.authz.helpers

import rego.v1

default ok := false

ok if {
	some segment in input.parsed_path
	segment == "health"
}
'''

# ---------------------------------------------------------------------------
# 3. the OPA Envoy tutorials
# ---------------------------------------------------------------------------

TUTORIAL_POLICY = '''package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allow if {
	is_token_valid
	action_allowed
}

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http_request.method == "GET"
	token.payload.role == "guest"
	glob.match("/people", ["/"], http_request.path)
}

action_allowed if {
	http_request.method == "GET"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http_request.path)
}

action_allowed if {
	http_request.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http_request.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}
'''

TUTORIAL_POLICY_V0 = '''package envoy.authz

import input.attributes.request.http as http_request

default allow = false

allow {
	is_token_valid
	action_allowed
}

is_token_valid {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed {
	http_request.method == "GET"
	token.payload.role == "guest"
	glob.match("/people", ["/"], http_request.path)
}

action_allowed {
	http_request.method == "GET"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http_request.path)
}

action_allowed {
	http_request.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http_request.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

token = {"valid": valid, "payload": payload} {
	[_, encoded] := split(http_request.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}
'''

PRIMER_PEOPLE = '''package envoy.authz

import rego.v1

import input.attributes.request.http

default allow := false

allow if {
	is_token_valid
	action_allowed
}

allow if input.parsed_path == ["people"]

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http.method == "GET"
	token.payload.role in {"guest", "admin"}
	glob.match("/people/*", ["/"], http.path)
}

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}
'''

ISSUER = "https://issuer.example.org/"
AUDIENCE = "regate-corpus"


def jwks_json():
    return json.dumps({"keys": [dict(KEYS.jwk("rsa", "corpus-rsa"), alg="RS256", use="sig"),
                                dict(KEYS.jwk("ec256", "corpus-ec"), alg="ES256", use="sig")]},
                      indent=2)


def jwks_policy():
    return '''package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

# The JWKS is inlined as a raw string, as in the OPA Envoy docs' JWKS example
# (which fetches it with http.send; regate policies cannot call out).
jwks := `''' + jwks_json() + '''`

default allow := false

allow if {
	is_token_valid
	action_allowed
}

bearer_token := t if {
	v := http_request.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, count("Bearer "), -1)
}

verified := [valid, header, payload] if {
	constraints := {"cert": jwks, "iss": "''' + ISSUER + '''", "aud": "''' + AUDIENCE + '''"}
	[valid, header, payload] := io.jwt.decode_verify(bearer_token, constraints)
}

is_token_valid if verified[0]

claims := verified[2]

action_allowed if {
	http_request.method == "GET"
	"read" in split(claims.scope, " ")
	glob.match("/api/*", ["/"], http_request.path)
}

action_allowed if {
	http_request.method == "POST"
	"write" in split(claims.scope, " ")
	glob.match("/api/*", ["/"], http_request.path)
}
'''


def rs(name, claims, kid="corpus-rsa", alg="RS256"):
    return token(name, alg, claims, {"kid": kid} if kid else None)


def std_claims(**kw):
    c = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": FAR, "nbf": NBF, "iat": NBF,
         "scope": "read"}
    c.update(kw)
    return c


JWT_DECODE_CLAIMS = '''package envoy.authz

import rego.v1

default allow := false

allow if {
	is_post
	is_dogs
	claims.username == "alice"
}

allow if {
	input.attributes.request.http.method == "GET"
	io.jwt.verify_hs256(bearer_token, "secret")
	claims.role == "guest"
}

is_post if input.attributes.request.http.method == "POST"

is_dogs if input.parsed_path == ["pets", "dogs"]

claims := payload if {
	# Verify first, then decode: the OPA playground's "JWT Decoding" example.
	io.jwt.verify_hs256(bearer_token, "secret")
	[_, payload, _] := io.jwt.decode(bearer_token)
}

bearer_token := t if {
	v := input.attributes.request.http.headers.authorization
	startswith(v, "Bearer ")
	t := substring(v, count("Bearer "), -1)
}
'''


def cases():
    out = []

    # --- idiom 1: decision objects ------------------------------------------
    out.append(case(
        "result_partial_rules_rbac",
        f"partial result.* rules (allowed/headers/request_headers_to_remove/query_parameters_to_*/"
        f"response_headers_to_add) over basic-auth RBAC, parsed_path/query/body; {PLUGIN} testAuthzServer",
        "data.envoy.authz.result",
        {"authz.rego": PLUGIN_RBAC},
        {
            "bob_products": request("GET", "/api/v1/products", basic("bob")),
            "alice_products": request("GET", "/api/v1/products", basic("alice")),
            "alice_productpage": request("GET", "/productpage", basic("alice")),
            "query_match": request("GET", "/my/test/path?a=1&a=2&x=y"),
            "body_match": request("POST", "/people", body='{"firstname":"foo","lastname":"bar","dept":{"it":"eng"}}'),
            "no_auth": request("GET", "/api/v1/products"),
        },
        v0={"authz.rego": PLUGIN_RBAC_V0}))

    alice, bob = ALICE(), BOB()
    out.append(case(
        "result_primer_additional_controls",
        f"result[\"allowed\"] := allow etc. with headers, http_status from an else chain, body, "
        f"dynamic_metadata, query_parameters_to_set; {PRIMER} 'Example Policy with Additional Controls'",
        "data.envoy.authz.result",
        {"authz.rego": PRIMER_CONTROLS},
        {
            "guest_get": request("GET", "/people/1", bearer(alice)),
            "admin_post": request("POST", "/people", bearer(bob), body='{"firstname":"Charlie","lastname":"Opa"}'),
            "admin_post_self": request("POST", "/people", bearer(bob), body='{"firstname":"Bob","lastname":"Opa"}'),
            "guest_post": request("POST", "/people", bearer(alice), body='{"firstname":"Charlie","lastname":"Opa"}'),
            "no_token": request("GET", "/people/1"),
        }))

    out.append(case(
        "result_default_object",
        "`default result := {\"allowed\": false, ...}` complete-rule decision object; "
        f"{PRIMER} 'Output Document' fields",
        "data.envoy.authz.result",
        {"authz.rego": DEFAULT_OBJECT},
        {
            "spiffe_get": request("GET", "/v1/docs/a"),
            "spiffe_post": request("POST", "/v1/docs/a", body="{}"),
            "foreign_td": request("GET", "/v1/docs/a", spiffe="spiffe://evil.example/ns/x/sa/y"),
        }))

    out.append(case(
        "result_complete_rule_status",
        "`result := {\"allowed\": allow, \"http_status\": ..., ...}` complete rule with else chains, "
        "api keys from data.json; opa-envoy-plugin README 'Example Policy with Object Response'",
        "data.envoy.authz.result",
        {"authz.rego": COMPLETE_RULE, "data.json": {"api_keys": ["k-123", "k-456"]}},
        {
            "good_key": request("GET", "/v1/items", {"x-api-key": "k-456"}),
            "bad_key": request("GET", "/v1/items", {"x-api-key": "nope"}),
            "no_key": request("GET", "/v1/items"),
            "good_key_wrong_path": request("GET", "/v2/items", {"x-api-key": "k-123"}),
        }))

    out.append(case(
        "result_redirect_302",
        "deny with http_status 302 and a location header for browsers, 401 otherwise; "
        f"result[...] partial rules as in {PRIMER} 'Output Document'",
        "data.envoy.authz.result",
        {"authz.rego": REDIRECT},
        {
            "browser_no_cookie": request("GET", "/app/home?tab=1", {"accept": "text/html,application/xhtml+xml"}),
            "api_no_cookie": request("GET", "/app/home", {"accept": "application/json"}),
            "with_cookie": request("GET", "/app/home", {"accept": "text/html", "cookie": "session=abc"}),
            "public": request("GET", "/public/logo.png", {"accept": "text/html"}),
        }))

    out.append(case(
        "result_query_and_header_edits",
        "result.query_parameters_to_remove/_to_set, request_headers_to_remove, "
        f"response_headers_to_add partial object; {PLUGIN} query parameter tests",
        "data.envoy.authz.result",
        {"authz.rego": QUERY_PARAMS},
        {
            "search": request("GET", "/search?q=opa&utm_source=x&utm_medium=y"),
            "other": request("GET", "/admin?utm_campaign=z"),
        }))

    out.append(case(
        "result_not_a_decision",
        "objects without a boolean `allowed` (allow: true, allowed: \"true\", allowed: 1), bare true, "
        "a string; opa-envoy-plugin envoyauth.EvalResult.IsAllowed semantics",
        "data.envoy.authz.result",
        {"authz.rego": ALLOW_KEY_ONLY},
        {
            "allow_key": request("GET", "/allow-key"),
            "string_true": request("GET", "/string-true"),
            "number_one": request("GET", "/number-one"),
            "allowed_key": request("GET", "/allowed-key"),
            "bare_true": request("GET", "/bare-true"),
            "string": request("GET", "/string"),
            "undefined": request("GET", "/nothing"),
        }))

    out.append(case(
        "result_dynamic_metadata",
        f"dynamic_metadata partial object and result[...] rules; {PLUGIN} dynamic metadata tests",
        "data.envoy.authz.result",
        {"authz.rego": DYNAMIC_METADATA,
         "data.json": {"trusted": [SPIFFE, "spiffe://example.org/ns/agents/sa/planner"]}},
        {
            "trusted": request("GET", "/v1/a/b"),
            "untrusted": request("GET", "/v1/a/b", spiffe="spiffe://example.org/ns/agents/sa/intruder"),
        }))

    # --- idiom 2: the package is the decision --------------------------------
    out.append(case(
        "package_decision_allowed",
        "query names the package (data.envoy.authz) whose `allowed` is the decision, with headers, "
        "http_status and body siblings; opa-envoy-plugin README (path: envoy/authz)",
        "data.envoy.authz",
        {"authz.rego": PKG_ALLOWED},
        {
            "docs_get": request("GET", "/v1/docs/a/b"),
            "docs_delete": request("DELETE", "/v1/docs/a"),
            "other_get": request("GET", "/v1/users"),
        }))

    out.append(case(
        "package_decision_no_default",
        "package-as-decision where `allowed` may be undefined (no key => deny); opa-envoy-plugin README",
        "data.envoy.authz",
        {"authz.rego": PKG_NO_DEFAULT},
        {
            "summarizer": request("GET", "/x"),
            "planner": request("GET", "/x", spiffe="spiffe://example.org/ns/agents/sa/planner"),
        }))

    out.append(case(
        "package_decision_with_subpackage",
        "package-as-decision where a sub-package (envoy.authz.helpers) appears in the decision object; "
        "opa-envoy-plugin README / OPA docs on wrapper packages",
        "data.envoy.authz",
        {"authz.rego": PKG_NESTED, "helpers/helpers.rego": PKG_NESTED_HELPERS},
        {
            "health": request("GET", "/svc/health"),
            "other": request("GET", "/svc/data"),
        }))

    # --- idiom 3: the tutorials ---------------------------------------------
    expired = tok_hs("admin", "Ym9i", exp=PAST)
    out.append(case(
        "tutorial_standalone_envoy",
        f"{TUTORIAL}: io.jwt.decode_verify with a secret, time.now_ns nbf/exp, role and glob.match, "
        "parsed_body firstname vs base64url.decode(sub)",
        "data.envoy.authz.allow",
        {"policy.rego": TUTORIAL_POLICY},
        {
            "alice_list": request("GET", "/people", bearer(alice)),
            "bob_list": request("GET", "/people", bearer(bob)),
            "bob_create": request("POST", "/people", bearer(bob), body='{"firstname":"Foo", "lastname":"Bar"}'),
            "bob_create_self": request("POST", "/people", bearer(bob), body='{"firstname":"Bob", "lastname":"Bar"}'),
            "alice_create": request("POST", "/people", bearer(alice), body='{"firstname":"Foo", "lastname":"Bar"}'),
            "expired": request("GET", "/people", bearer(expired)),
            "bad_signature": request("GET", "/people", bearer(tamper(bob))),
            "other_secret": request("GET", "/people", bearer(tok_hs("admin", "Ym9i", name="tutorial-hs384", secret_alg="HS384"))),
            "no_header": request("GET", "/people"),
        },
        v0={"policy.rego": TUTORIAL_POLICY_V0}))

    out.append(case(
        "primer_people_glob",
        f"{PRIMER}: `import input.attributes.request.http`, glob.match(\"/people/*\", [\"/\"], ...), "
        "allow on parsed_path == [\"people\"]",
        "data.envoy.authz.allow",
        {"authz.rego": PRIMER_PEOPLE},
        {
            "guest_item": request("GET", "/people/1", bearer(alice)),
            "guest_deep": request("GET", "/people/1/pets", bearer(alice)),
            "anon_people": request("GET", "/people?lang=en"),
            "anon_item": request("GET", "/people/1"),
        }))

    valid = rs("jwks-valid", std_claims(scope="read write"))
    out.append(case(
        "jwks_decode_verify_iss_aud",
        "OPA docs Envoy/OAuth JWKS example: bearer_token via substring, io.jwt.decode_verify with "
        "{cert: <JWKS>, iss, aud}, scopes; tokens valid/expired/wrong iss/wrong aud/bad sig/alg none/malformed",
        "data.envoy.authz.allow",
        {"authz.rego": jwks_policy()},
        {
            "valid_get": request("GET", "/api/items", bearer(valid)),
            "valid_post": request("POST", "/api/items", bearer(valid), body='{"a":1}'),
            "read_only_post": request("POST", "/api/items", bearer(rs("jwks-read", std_claims())), body='{"a":1}'),
            "ec_key_get": request("GET", "/api/items", bearer(token("jwks-ec", "ES256", std_claims(), {"kid": "corpus-ec"}))),
            "expired": request("GET", "/api/items", bearer(rs("jwks-expired", std_claims(exp=PAST)))),
            "wrong_iss": request("GET", "/api/items", bearer(rs("jwks-iss", std_claims(iss="https://evil.example/"))))  ,
            "wrong_aud": request("GET", "/api/items", bearer(rs("jwks-aud", std_claims(aud="someone-else")))),
            "aud_list": request("GET", "/api/items", bearer(rs("jwks-aud-list", std_claims(aud=["x", AUDIENCE]))))  ,
            "bad_signature": request("GET", "/api/items", bearer(tamper(valid))),
            "alg_none": request("GET", "/api/items", bearer(unsigned(std_claims()))),
            "malformed": request("GET", "/api/items", bearer("not.a.jwt")),
            "basic_auth": request("GET", "/api/items", basic("alice")),
        }))

    out.append(case(
        "jwt_decode_after_verify_hs256",
        "OPA playground 'JWT Decoding' example: io.jwt.verify_hs256 then io.jwt.decode, bearer_token "
        "via startswith/substring",
        "data.envoy.authz.allow",
        {"authz.rego": JWT_DECODE_CLAIMS},
        {
            "alice_post_dogs": request("POST", "/pets/dogs", bearer(token("play-alice", "HS256", {"username": "alice", "role": "admin"})), body='{"name":"rex"}'),
            "bob_post_dogs": request("POST", "/pets/dogs", bearer(token("play-bob", "HS256", {"username": "bob", "role": "guest"})), body='{"name":"rex"}'),
            "bob_get": request("GET", "/pets/cats", bearer(token("play-bob", "HS256", {"username": "bob", "role": "guest"}))),
            "forged": request("POST", "/pets/dogs", bearer(tamper(token("play-alice", "HS256", {"username": "alice", "role": "admin"}))), body='{}'),
        }))

    out.extend(jwt_builtin_cases())
    return out


# ---------------------------------------------------------------------------
# 4. io.jwt.* builtins, one key format per case
# ---------------------------------------------------------------------------

def jwt_builtin_cases():
    out = []
    rsa_cert = KEYS.pem["rsa.cert.pem"]
    ec_pub = KEYS.pem["ec256.pub.pem"]

    def verify_case(name, about, constraints_expr, files, tokens):
        pol = '''package envoy.authz

import rego.v1

default allow := false

token := t if {
	[kind, t] := split(input.attributes.request.http.headers.authorization, " ")
	kind == "Bearer"
}

decoded := io.jwt.decode_verify(token, ''' + constraints_expr + ''')

allow if {
	[valid, _, payload] := decoded
	valid
	payload.sub == "alice"
}

result["allowed"] := allow

result["headers"] := {"x-jwt-alg": decoded[1].alg} if decoded[0]

result["http_status"] := 401 if not allow
'''
        files = dict(files)
        files["authz.rego"] = pol
        return case(name, about, "data.envoy.authz.result", files,
                    {k: request("GET", "/v1/x", bearer(v)) for k, v in tokens.items()})

    good_rs = rs("cert-rs256", std_claims(), kid=None)
    out.append(verify_case(
        "jwt_decode_verify_cert_pem",
        "io.jwt.decode_verify with {\"cert\": <PEM certificate>} from data.json; OPA policy reference 'Token Verification'",
        "{\"cert\": data.jwt.cert, \"aud\": \"" + AUDIENCE + "\"}",
        {"data.json": {"jwt": {"cert": rsa_cert}}},
        {"valid": good_rs, "tampered": tamper(good_rs),
         "other_alg_hs256": tok_hs("guest", "alice", name="cert-hs"),
         "expired": rs("cert-expired", std_claims(exp=PAST), kid=None),
         "not_yet_valid": rs("cert-nbf", std_claims(nbf=4000000000), kid=None)}))

    good_es = token("pub-es256", "ES256", std_claims())
    out.append(verify_case(
        "jwt_decode_verify_pubkey_pem",
        "io.jwt.decode_verify with {\"cert\": <PEM public key>} (ES256) and an alg constraint; OPA policy reference",
        "{\"cert\": data.jwt.pub, \"alg\": \"ES256\"}",
        {"jwt/data.json": {"pub": ec_pub}},
        {"valid_no_aud": token("pub-es256-noaud", "ES256", {k: v for k, v in std_claims().items() if k != "aud"}),
         "aud_but_no_aud_constraint": good_es, "tampered": tamper(good_es),
         "rs256_token": good_rs}))

    good_es384 = token("jwk-es384", "ES384", std_claims(), {"kid": "k384"})
    out.append(verify_case(
        "jwt_decode_verify_single_jwk",
        "io.jwt.decode_verify with a single JWK (EC P-384, ES384) as cert; OPA policy reference",
        "{\"cert\": json.marshal(data.jwk), \"aud\": \"" + AUDIENCE + "\"}",
        {"data.yaml": "jwk:\n" + "".join(f"  {k}: \"{v}\"\n" for k, v in KEYS.jwk("ec384", "k384").items())},
        {"valid": good_es384, "tampered": tamper(good_es384), "es256": good_es}))

    out.append(verify_case(
        "jwt_decode_verify_time_iss",
        "io.jwt.decode_verify with fixed `time` (ns) and `iss`/`aud` constraints against a secret; OPA policy reference",
        "{\"secret\": \"secret\", \"time\": 1700000000000000000, \"iss\": \"" + ISSUER + "\", \"aud\": \"" + AUDIENCE + "\"}",
        {},
        {"valid_at_time": token("time-valid", "HS256", std_claims(exp=1800000000)),
         "expired_at_time": token("time-expired", "HS256", std_claims(exp=1650000000)),
         "nbf_after_time": token("time-nbf", "HS256", std_claims(nbf=1750000000)),
         "no_aud": token("time-noaud", "HS256", {k: v for k, v in std_claims().items() if k != "aud"}),
         "wrong_iss": token("time-iss", "HS256", std_claims(iss="https://other/"))}))

    # verify_* family: one policy checks each algorithm with its own builtin.
    family = '''package envoy.authz

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
'''
    keys_data = {"keys": {"rsa_cert": rsa_cert, "rsa_pub": KEYS.pem["rsa.pub.pem"],
                          "rsa_jwks": json.dumps({"keys": [KEYS.jwk("rsa", "corpus-rsa")]}),
                          "ec256_pub": ec_pub, "ec384_pub": KEYS.pem["ec384.pub.pem"]}}
    claims = {"sub": "alice", "exp": FAR}
    toks = {}
    for alg in ("RS256", "RS384", "RS512", "PS256", "PS384", "ES256", "ES384", "HS256", "HS384", "HS512"):
        toks[alg.lower()] = token("family-" + alg, alg, claims)
    toks["rs256_tampered"] = tamper(toks["rs256"])
    toks["es256_tampered"] = tamper(toks["es256"])
    toks["hs512_tampered"] = tamper(toks["hs512"])
    toks["ps256_header_says_rs256"] = unsigned(claims, "RS256")[:-1] + toks["ps256"].split(".")[2]
    out.append(case(
        "jwt_verify_family",
        "io.jwt.verify_rs256/rs384/rs512/ps256/ps384/es256/es384/hs256/hs384/hs512 with PEM certs, "
        "PEM keys, a JWKS string and secrets; OPA policy reference 'Token Verification'",
        "data.envoy.authz.allow",
        {"authz.rego": family, "data.json": keys_data},
        {k: request("GET", "/v1/x", bearer(v)) for k, v in toks.items()}))

    ed = token("eddsa", "EdDSA", claims)
    out.append(case(
        "jwt_verify_eddsa",
        "io.jwt.verify_eddsa with an Ed25519 PEM key (separate case: newer builtin); OPA policy reference",
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

allow if io.jwt.verify_eddsa(trim_prefix(input.attributes.request.http.headers.authorization, "Bearer "), data.ed25519_pub)
''', "data.json": {"ed25519_pub": KEYS.pem["ed25519.pub.pem"]}},
        {"valid": request("GET", "/", bearer(ed)), "tampered": request("GET", "/", bearer(tamper(ed)))}))
    return out
