"""Cases: everyday authz idioms and the leniency checks."""

from .inputs import request, SPIFFE
from .policies_a import case, basic

REF = "OPA policy reference"
PLANNER = "spiffe://example.org/ns/agents/sa/planner"


def cases():
    out = []

    rbac = '''package envoy.authz

import rego.v1

default allow := false

# RBAC from data: bindings (principal -> roles) in the root data.json,
# role grants in roles/data.json (lands under data.roles).
caller := input.attributes.source.principal

caller_roles contains role if {
	some binding in data.bindings
	binding.principal == caller
	some role in binding.roles
}

allow if {
	some role in caller_roles
	some grant in data.roles[role]
	grant.method == input.attributes.request.http.method
	glob.match(grant.path, ["/"], input.attributes.request.http.path)
}
'''
    rbac_v0 = '''package envoy.authz

default allow = false

caller = input.attributes.source.principal

caller_roles[role] {
	binding := data.bindings[_]
	binding.principal == caller
	role := binding.roles[_]
}

allow {
	role := caller_roles[_]
	grant := data.roles[role][_]
	grant.method == input.attributes.request.http.method
	glob.match(grant.path, ["/"], input.attributes.request.http.path)
}
'''
    out.append(case(
        "rbac_data_bindings",
        "RBAC from data documents (bindings in data.json, roles in roles/data.json) keyed by the "
        "SPIFFE principal, glob.match paths; OPA docs 'Role-based access control'",
        "data.envoy.authz.allow",
        {"authz.rego": rbac,
         "data.json": {"bindings": [{"principal": SPIFFE, "roles": ["reader"]},
                                    {"principal": PLANNER, "roles": ["reader", "writer"]}]},
         "roles/data.json": {"reader": [{"method": "GET", "path": "/v1/docs/*"}],
                             "writer": [{"method": "PUT", "path": "/v1/docs/*"},
                                        {"method": "DELETE", "path": "/v1/docs/*"}]}},
        {"reader_get": request("GET", "/v1/docs/a"), "reader_put": request("PUT", "/v1/docs/a", body="{}"),
         "writer_put": request("PUT", "/v1/docs/a", body="{}", spiffe=PLANNER),
         "reader_deep": request("GET", "/v1/docs/a/b"), "unknown": request("GET", "/v1/docs/a", spiffe="spiffe://example.org/x")},
        v0={"authz.rego": rbac_v0}))

    out.append(case(
        "path_prefix_matching",
        "path rules with startswith, glob.match (with and without delimiters) and regex.match; "
        "OPA Envoy primer / " + REF,
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

path := split(http_request.path, "?")[0]

allow if startswith(path, "/public/")

allow if glob.match("/v1/docs/*/meta", ["/"], path)

allow if glob.match("/assets/**.png", [], path)

allow if regex.match(`^/v[0-9]+/status$`, path)
'''},
        {"public": request("GET", "/public/a/b?x=1"), "docs_meta": request("GET", "/v1/docs/a/meta"),
         "docs_meta_deep": request("GET", "/v1/docs/a/b/meta"), "asset": request("GET", "/assets/img/x.png"),
         "status": request("GET", "/v2/status"), "status_suffix": request("GET", "/v2/status/x"),
         "nothing": request("GET", "/private")}))

    method = '''package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allowed_methods := {"GET", "HEAD", "OPTIONS"}

allow if {
	http_request.method in allowed_methods
	not http_request.headers["x-debug"]
}

allow if {
	http_request.method == "POST"
	http_request.headers["content-type"] == "application/json"
	http_request.headers["x-csrf-token"] == "t0ken"
}
'''
    method_v0 = '''package envoy.authz

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
'''
    out.append(case(
        "method_and_header_checks",
        "method allowlist set with `in`, header presence/absence and value checks; OPA Envoy primer",
        "data.envoy.authz.allow",
        {"authz.rego": method},
        {"get": request("GET", "/"), "get_debug": request("GET", "/", {"x-debug": "1"}),
         "post_csrf": request("POST", "/", {"x-csrf-token": "t0ken"}, body="{}"),
         "post_no_csrf": request("POST", "/", body="{}"), "delete": request("DELETE", "/")},
        v0={"authz.rego": method_v0}))

    out.append(case(
        "parsed_query_checks",
        "parsed_path and parsed_query (multi-valued) checks; OPA Envoy primer 'parsed_query' example",
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

allow if {
	input.parsed_path == ["people"]
	input.parsed_query.lang == ["en"]
	input.parsed_query.id == ["1", "2"]
}

allow if {
	input.parsed_path[0] == "search"
	count(input.parsed_query.q) == 1
	every v in input.parsed_query.q { count(v) <= 10 }
}
'''},
        {"people": request("GET", "/people?lang=en&id=1&id=2"), "people_one_id": request("GET", "/people?lang=en&id=1"),
         "search_short": request("GET", "/search?q=opa"), "search_long": request("GET", "/search?q=aaaaaaaaaaaaaaaaaaa"),
         "search_twice": request("GET", "/search?q=a&q=b")}))

    spiffe = '''package envoy.authz

import rego.v1

default allow := false

principal := input.attributes.source.principal

trust_domain := td if {
	startswith(principal, "spiffe://")
	td := split(trim_prefix(principal, "spiffe://"), "/")[0]
}

# The URI field of Envoy's x-forwarded-client-cert header.
xfcc_uri := trim_prefix(part, "URI=") if {
	some part in split(input.attributes.request.http.headers["x-forwarded-client-cert"], ";")
	startswith(part, "URI=")
}

allow if {
	trust_domain == "example.org"
	regex.match(`^spiffe://example\\.org/ns/agents/sa/[a-z]+$`, principal)
	xfcc_uri == principal
}
'''
    spiffe_v0 = '''package envoy.authz

default allow = false

principal = input.attributes.source.principal

trust_domain = td {
	startswith(principal, "spiffe://")
	td := split(trim_prefix(principal, "spiffe://"), "/")[0]
}

xfcc_uri = trim_prefix(part, "URI=") {
	part := split(input.attributes.request.http.headers["x-forwarded-client-cert"], ";")[_]
	startswith(part, "URI=")
}

allow {
	trust_domain == "example.org"
	regex.match(`^spiffe://example\\.org/ns/agents/sa/[a-z]+$`, principal)
	xfcc_uri == principal
}
'''
    mismatch = request("GET", "/")
    mismatch["attributes"]["request"]["http"]["headers"]["x-forwarded-client-cert"] = "Hash=00;URI=" + PLANNER
    out.append(case(
        "spiffe_principal_and_xfcc",
        "SPIFFE checks on attributes.source.principal plus the URI field of x-forwarded-client-cert; "
        "opa-envoy-plugin spiffe test / Istio examples",
        "data.envoy.authz.allow",
        {"authz.rego": spiffe},
        {"summarizer": request("GET", "/"), "other_td": request("GET", "/", spiffe="spiffe://evil.org/ns/agents/sa/x"),
         "bad_name": request("GET", "/", spiffe="spiffe://example.org/ns/agents/sa/Upper1"),
         "xfcc_mismatch": mismatch, "no_principal": request("GET", "/", spiffe=None)},
        v0={"authz.rego": spiffe_v0}))

    istio = '''package istio.authz

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
'''
    istio_v0 = '''package istio.authz

import input.attributes.request.http as http_request
import input.parsed_path

default allow = false

allow {
	parsed_path[0] == "health"
	http_request.method == "GET"
}

allow {
	roles_for_user[r]
	required_roles[r]
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
'''
    out.append(case(
        "istio_quickstart_basic_auth",
        "opa-envoy-plugin examples/istio/quick_start.yaml policy (package istio.authz, "
        "`import input.parsed_path`, basic-auth user roles)",
        "data.istio.authz.allow",
        {"policy.rego": istio},
        {"health": request("GET", "/health"), "alice_page": request("GET", "/productpage", basic("alice")),
         "alice_api": request("GET", "/api/v1/products", basic("alice")),
         "bob_api": request("GET", "/api/v1/products", basic("bob"))},
        v0={"policy.rego": istio_v0}))

    out.append(case(
        "time_window",
        "business-hours window from input.attributes.request.time via time.parse_rfc3339_ns, "
        "time.clock, time.weekday, time.date; " + REF + " time.*",
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

now := time.parse_rfc3339_ns(input.attributes.request.time)

allow if {
	[hour, _, _] := time.clock([now, "Europe/Berlin"])
	hour >= 8
	hour < 18
	not time.weekday(now) in {"Saturday", "Sunday"}
}

allow if {
	[year, _, _] := time.date(now)
	year < 2000
}
'''},
        {"monday_evening": request("GET", "/"),
         "monday_morning": request("GET", "/", time="2026-11-23T09:15:00.5Z"),
         "saturday_morning": request("GET", "/", time="2026-11-28T09:15:00Z"),
         "offset_time": request("GET", "/", time="2026-11-24T10:00:00+02:00"),
         "old": request("GET", "/", time="1999-12-31T23:59:59Z")}))

    schema = {"type": "object", "required": ["name", "amount"],
              "properties": {"name": {"type": "string", "minLength": 1},
                             "amount": {"type": "number", "minimum": 0, "maximum": 1000}},
              "additionalProperties": False}
    out.append(case(
        "body_json_match_schema",
        "JSON body validated with json.match_schema against a schema from data; " + REF + " json.match_schema",
        "data.envoy.authz.result",
        {"authz.rego": '''package envoy.authz

import rego.v1

check := json.match_schema(input.parsed_body, data.schemas.payment)

default allow := false

allow if check[0]

result["allowed"] := allow

result["body"] := json.marshal([e.error | some e in check[1]]) if not allow
''', "schemas/data.json": {"payment": schema}},
        {"valid": request("POST", "/pay", body='{"name":"bob","amount":10}'),
         "too_much": request("POST", "/pay", body='{"name":"bob","amount":5000}'),
         "extra": request("POST", "/pay", body='{"name":"bob","amount":1,"x":1}')}))

    out.append(case(
        "body_json_verify_schema",
        "json.verify_schema of a schema carried in the body, then a body field check; " + REF,
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

allow if {
	[ok, _] := json.verify_schema(input.parsed_body.schema)
	ok
	input.parsed_body.schema.type == "object"
}
'''},
        {"good_schema": request("POST", "/schemas", body='{"schema":{"type":"object","properties":{"a":{"type":"string"}}}}'),
         "bad_schema": request("POST", "/schemas", body='{"schema":{"type":"objekt"}}')}))

    out.append(case(
        "body_fields",
        "JSON body checks on parsed_body with object.get defaults, walk and array.flatten; OPA Envoy primer parsed_body example",
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

body := object.get(input, "parsed_body", {})

allow if {
	body.firstname == "Charlie"
	object.get(body, ["meta", "source"], "web") == "web"
	not has_secret_key
	count(array.flatten(object.get(body, "tags", []))) <= 3
}

has_secret_key if {
	walk(body, [path, _])
	path[count(path) - 1] == "password"
}
'''},
        {"plain": request("POST", "/people", body='{"firstname":"Charlie","lastname":"Opa"}'),
         "nested_password": request("POST", "/people", body='{"firstname":"Charlie","meta":{"auth":{"password":"x"}}}'),
         "too_many_tags": request("POST", "/people", body='{"firstname":"Charlie","tags":[["a","b"],["c",["d"]]]}'),
         "api_source": request("POST", "/people", body='{"firstname":"Charlie","meta":{"source":"api"}}'),
         "no_body": request("GET", "/people")}))

    out.append(case(
        "regex_globs_match",
        "regex.globs_match between a caller's path glob from data and the request; " + REF,
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

allow if {
	some glob in data.grants[input.attributes.source.principal]
	regex.globs_match(glob, input.attributes.request.http.path)
}
''', "data.json": {"grants": {SPIFFE: ["/v1/docs/.*", "/v2/(a|b)"]}}},
        {"docs": request("GET", "/v1/docs/a"), "v2b": request("GET", "/v2/b"), "v2c": request("GET", "/v2/c")}))

    out.append(case(
        "render_template_body",
        "deny body from strings.render_template (separate case: newer builtin); " + REF,
        "data.envoy.authz.result",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

allow if input.attributes.request.http.method == "GET"

result["allowed"] := allow

result["body"] := strings.render_template("{{.method}} on {{.path}} is not allowed for {{.who}}", {
	"method": input.attributes.request.http.method,
	"path": input.attributes.request.http.path,
	"who": input.peer.spiffe_id,
}) if not allow
'''},
        {"get": request("GET", "/v1/x"), "post": request("POST", "/v1/x", body="{}")}))

    out.append(case(
        "every_some_comprehensions",
        "every / some ... in / set, array and object comprehensions over headers and data; OPA docs 'Policy Language'",
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

headers := input.attributes.request.http.headers

custom := {name: value | some name, value in headers; startswith(name, "x-app-")}

forbidden := {name | some name, _ in headers; name in data.forbidden_headers}

lengths := [count(v) | some v in custom]

allow if {
	count(forbidden) == 0
	every name, value in custom {
		regex.match(`^[a-z0-9-]+$`, value)
		name != "x-app-admin"
	}
	sum(lengths) < 40
}
''', "data.json": {"forbidden_headers": ["x-internal", "x-override"]}},
        {"clean": request("GET", "/", {"x-app-id": "abc-1", "x-app-zone": "eu"}),
         "bad_value": request("GET", "/", {"x-app-id": "ABC!"}),
         "admin_header": request("GET", "/", {"x-app-admin": "yes"}),
         "forbidden": request("GET", "/", {"x-internal": "1"})}))

    out.append(case(
        "else_chains_and_functions",
        "`else` chains and functions with multiple bodies (tier lookup, path classification); OPA docs 'Functions' and 'Else'",
        "data.envoy.authz.result",
        {"authz.rego": '''package envoy.authz

import rego.v1

tier := "gold" if {
	input.attributes.source.principal in data.gold
} else := "silver" if {
	endswith(input.attributes.source.principal, "/planner")
} else := "bronze"

kind(path) := "admin" if startswith(path, "/admin")

kind(path) := "api" if startswith(path, "/api")

kind(path) := "other" if {
	not startswith(path, "/admin")
	not startswith(path, "/api")
}

limit("gold") := 1000

limit("silver") := 100

limit(t) := 10 if not t in {"gold", "silver"}

default allow := false

allow if {
	kind(input.attributes.request.http.path) != "admin"
	limit(tier) >= 100
}

allow if {
	kind(input.attributes.request.http.path) == "other"
}

result := {"allowed": allow, "headers": {"x-tier": tier, "x-limit": format_int(limit(tier), 10)}}
''', "data.json": {"gold": [SPIFFE]}},
        {"gold_api": request("GET", "/api/x"), "silver_api": request("GET", "/api/x", spiffe=PLANNER),
         "bronze_api": request("GET", "/api/x", spiffe="spiffe://example.org/ns/a/sa/b"),
         "bronze_other": request("GET", "/home", spiffe="spiffe://example.org/ns/a/sa/b"),
         "gold_admin": request("GET", "/admin/x")}))

    out.append(case(
        "semver_and_units",
        "client version gate with semver.compare/semver.is_valid and a size limit with units.parse_bytes; " + REF,
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

headers := input.attributes.request.http.headers

default allow := false

allow if {
	v := trim_prefix(headers["x-client-version"], "v")
	semver.is_valid(v)
	semver.compare(v, "1.4.0") >= 0
	to_number(object.get(headers, "content-length", "0")) <= units.parse_bytes("1KiB")
}
'''},
        {"new": request("GET", "/", {"x-client-version": "v1.10.0"}), "old": request("GET", "/", {"x-client-version": "1.3.9"}),
         "invalid": request("GET", "/", {"x-client-version": "1.x"}),
         "big_body": request("POST", "/", {"x-client-version": "2.0.0"}, body="x" * 1100)}))

    # --- leniency (OPA rejects; an implementation must too) -----------------
    out.append(case(
        "lenient_rfc3339_forms",
        "time.parse_rfc3339_ns on header timestamps with a space separator, lowercase 't'/'z' "
        "(OPA rejects these: the deny rule errors and is undefined, so not deny allows); Go time.RFC3339",
        "data.envoy.authz.result",
        {"authz.rego": '''package envoy.authz

import rego.v1

expires := time.parse_rfc3339_ns(input.attributes.request.http.headers["x-expires"])

deny if expires < time.parse_rfc3339_ns(input.attributes.request.time)

default allow := false

allow if not deny

result := {"allowed": allow, "headers": {"x-parsed": parsed}}

default parsed := "no"

parsed := "yes" if expires
'''},
        {"canonical_past": request("GET", "/", {"x-expires": "2020-01-01T00:00:00Z"}),
         "canonical_future": request("GET", "/", {"x-expires": "2030-01-01T00:00:00Z"}),
         "space_separator": request("GET", "/", {"x-expires": "2020-01-01 00:00:00Z"}),
         "lowercase_t": request("GET", "/", {"x-expires": "2020-01-01t00:00:00Z"}),
         "lowercase_z": request("GET", "/", {"x-expires": "2020-01-01T00:00:00z"})}))

    out.append(case(
        "lenient_to_number_space",
        "to_number(\" 1\") and to_number(\"1 \") error in OPA (the deny body is undefined); OPA to_number",
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

deny if to_number(input.attributes.request.http.headers["x-priority"]) > 5

default allow := false

allow if {
	not deny
	input.attributes.request.http.headers["x-priority"]
	to_number(input.attributes.request.http.headers["x-priority"]) >= 0
}

allow if {
	not deny
	input.attributes.request.http.headers["x-override"] == "1"
}
'''},
        {"plain": request("GET", "/", {"x-priority": "1"}), "leading_space": request("GET", "/", {"x-priority": " 9"}),
         "trailing_space_override": request("GET", "/", {"x-priority": "9 ", "x-override": "1"}),
         "high": request("GET", "/", {"x-priority": "9"})}))

    out.append(case(
        "lenient_glob_quote_meta",
        "glob.quote_meta of names containing ?, [, ], * then glob.match: quoted metacharacters must "
        "match only themselves; " + REF,
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

# A literal file name from data becomes a glob pattern by quoting it.
allow if {
	some name in data.files
	glob.match(concat("", ["/files/", glob.quote_meta(name)]), ["/"], input.attributes.request.http.headers["x-file"])
}
''', "data.json": {"files": ["report?.txt", "a[1].txt", "star*.log", "{x,y}.md"]}},
        {"literal_question": request("GET", "/", {"x-file": "/files/report?.txt"}),
         "question_as_wildcard": request("GET", "/", {"x-file": "/files/reportX.txt"}),
         "literal_brackets": request("GET", "/", {"x-file": "/files/a[1].txt"}),
         "bracket_as_class": request("GET", "/", {"x-file": "/files/a1.txt"}),
         "literal_star": request("GET", "/", {"x-file": "/files/star*.log"}),
         "star_as_wildcard": request("GET", "/", {"x-file": "/files/starfoo.log"}),
         "literal_braces": request("GET", "/", {"x-file": "/files/{x,y}.md"}),
         "brace_alternative": request("GET", "/", {"x-file": "/files/x.md"})}))
    return out
