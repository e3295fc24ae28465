"""Cases: crypto/x509, mapped IPv4 addresses and net.*, non-strict builtin errors."""

import base64
import hashlib
import hmac
import urllib.parse

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .inputs import request, xfcc, SPIFFE
from .keys import KEYS
from .policies_a import case

REF = "OPA policy reference"


def der_b64(pem):
    cert = x509.load_pem_x509_certificate(pem.encode())
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


def nonstrict(name, what, deny_body, good, bad, extra_rules=""):
    pol = f'''package envoy.authz

import rego.v1

# Non-strict evaluation (opa-envoy-plugin): when a builtin in deny's body
# errors, deny is undefined rather than the whole query failing, so
# `not deny` holds and the request is allowed.
default allow := false

allow if not deny

deny if {{
{deny_body}
}}
{extra_rules}'''
    return case(name, f"`allow if not deny` where deny's body errors on {what} (non-strict builtin errors, "
                      "as opa-envoy-plugin evaluates); OPA docs 'Strict built-in errors'",
                "data.envoy.authz.allow", {"authz.rego": pol}, {"fine": good, "builtin_error": bad})


def cases():
    out = []

    # --- crypto hashes and HMAC --------------------------------------------
    body = '{"amount":10,"to":"bob"}'
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    out.append(case(
        "crypto_body_digests",
        "content digests: crypto.sha256 / crypto.sha1 / crypto.md5 of the body compared to headers; " + REF,
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

body := input.attributes.request.http.body

allow if {
	input.attributes.request.http.headers["x-content-sha256"] == crypto.sha256(body)
	input.attributes.request.http.headers["x-content-sha1"] == crypto.sha1(body)
	input.attributes.request.http.headers["x-content-md5"] == crypto.md5(body)
}

allow if {
	hex_digest := crypto.sha256(body)
	input.attributes.request.http.headers.digest == sprintf("sha-256=%s", [base64.encode(hex.decode(hex_digest))])
}
'''},
        {
            "all_hashes": request("POST", "/pay", {"x-content-sha256": hashlib.sha256(body.encode()).hexdigest(),
                                                   "x-content-sha1": hashlib.sha1(body.encode()).hexdigest(),
                                                   "x-content-md5": hashlib.md5(body.encode()).hexdigest()}, body=body),
            "digest_header": request("POST", "/pay", {"digest": "sha-256=" + digest}, body=body),
            "wrong_md5": request("POST", "/pay", {"x-content-sha256": hashlib.sha256(body.encode()).hexdigest(),
                                                  "x-content-sha1": hashlib.sha1(body.encode()).hexdigest(),
                                                  "x-content-md5": "0" * 32}, body=body),
        }))

    secret = "corpus-webhook-secret"
    ts = "1764000000"
    sig = hmac.new(secret.encode(), (ts + "." + body).encode(), hashlib.sha256).hexdigest()
    sig512 = hmac.new(secret.encode(), body.encode(), hashlib.sha512).hexdigest()
    out.append(case(
        "crypto_hmac_signed_webhook",
        "signed webhooks: crypto.hmac.sha256 over timestamp.body, crypto.hmac.sha512, "
        "constant-time crypto.hmac.equal; " + REF,
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

headers := input.attributes.request.http.headers

allow if {
	expected := crypto.hmac.sha256(concat(".", [headers["x-timestamp"], input.attributes.request.http.body]), data.webhook_secret)
	crypto.hmac.equal(expected, headers["x-signature"])
}

allow if {
	expected := crypto.hmac.sha512(input.attributes.request.http.body, data.webhook_secret)
	crypto.hmac.equal(expected, trim_prefix(headers["x-signature-512"], "sha512="))
}
''', "data.json": {"webhook_secret": secret}},
        {
            "sha256_ok": request("POST", "/hook", {"x-timestamp": ts, "x-signature": sig}, body=body),
            "sha512_ok": request("POST", "/hook", {"x-signature-512": "sha512=" + sig512}, body=body),
            "sha256_bad": request("POST", "/hook", {"x-timestamp": "1764000001", "x-signature": sig}, body=body),
        }))

    # --- x509 ----------------------------------------------------------------
    leaf, rogue, ca = KEYS.pem["leaf.cert.pem"], KEYS.pem["rogue.cert.pem"], KEYS.pem["ca.cert.pem"]
    xfcc_policy = '''package envoy.authz

import rego.v1

default allow := false

# Envoy's x-forwarded-client-cert: `Key=value;Key="quoted"` pairs.
xfcc := {k: trim(v, "\\"") |
	some part in split(input.attributes.request.http.headers["x-forwarded-client-cert"], ";")
	[k, v] := split(part, "=")
}

# Cert= carries the URL-encoded PEM; its base64 has '=' padding, so split
# on the first '=' only.
cert_pem := urlquery.decode(trim(substring(part, 5, -1), "\\"")) if {
	some part in split(input.attributes.request.http.headers["x-forwarded-client-cert"], ";")
	startswith(part, "Cert=")
}

certs := crypto.x509.parse_certificates(cert_pem)

allow if {
	some uri in certs[0].URIStrings
	uri == input.attributes.source.principal
	certs[0].Subject.CommonName == "summarizer"
	xfcc.URI == uri
}
'''

    def with_cert(pem, spiffe=SPIFFE):
        return request("GET", "/v1/x", {"x-forwarded-client-cert": xfcc(spiffe, cert_pem=pem)}, spiffe=spiffe)

    out.append(case(
        "x509_xfcc_parse_certificates",
        "crypto.x509.parse_certificates of the URL-encoded PEM in x-forwarded-client-cert Cert=, "
        "URIStrings/Subject checks; Envoy XFCC + " + REF,
        "data.envoy.authz.allow",
        {"authz.rego": xfcc_policy},
        {"leaf": with_cert(leaf), "other_principal": with_cert(leaf, "spiffe://example.org/ns/agents/sa/planner"),
         "no_cert_field": request("GET", "/v1/x"),
         "ca_cert": with_cert(ca)}))

    chain_policy = '''package envoy.authz

import rego.v1

default allow := false

# A header carries "<base64 DER leaf>,<base64 DER CA>" or a PEM bundle
# (base64 of the PEMs), root first; OPA returns the verified chain leaf first.
chain := concat("\\n", [sprintf("-----BEGIN CERTIFICATE-----\\n%s\\n-----END CERTIFICATE-----", [c]) |
	some c in split(input.attributes.request.http.headers["x-client-chain"], ",")
])

verified := crypto.x509.parse_and_verify_certificates(chain)

allow if {
	[ok, certs] := verified
	ok
	certs[0].Subject.CommonName == "summarizer"
}

verified_pem := crypto.x509.parse_and_verify_certificates(base64.decode(input.attributes.request.http.headers["x-client-pem"]))

allow if {
	[ok, certs] := verified_pem
	ok
	"summarizer.agents.svc" in certs[0].DNSNames
}
'''
    out.append(case(
        "x509_parse_and_verify_chain",
        "crypto.x509.parse_and_verify_certificates on a header-borne base64 DER chain and a base64 PEM "
        "bundle; " + REF,
        "data.envoy.authz.allow",
        {"authz.rego": chain_policy},
        {"good_chain": request("GET", "/", {"x-client-chain": ",".join([der_b64(ca), der_b64(leaf)])}),
         "rogue_chain": request("GET", "/", {"x-client-chain": ",".join([der_b64(ca), der_b64(rogue)])}),
         "pem_bundle": request("GET", "/", {"x-client-pem": base64.b64encode((ca + leaf).encode()).decode()}),
         "leaf_only": request("GET", "/", {"x-client-chain": der_b64(leaf)})}))

    # --- mapped addresses ----------------------------------------------------
    src = lambda a: request("GET", "/v1/x", src=a)  # noqa: E731
    out.append(case(
        "net_mapped_allowlist",
        "IPv4 CIDR allowlist (net.cidr_contains) with IPv4-mapped IPv6 sources (::ffff:a.b.c.d) from "
        "a dual-stack listener; " + REF + " net.*",
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

source_ip := input.attributes.source.address.socketAddress.address

allow if {
	some cidr in data.allowed_cidrs
	net.cidr_contains(cidr, source_ip)
}
''', "data.json": {"allowed_cidrs": ["203.0.113.0/24", "10.0.0.0/8", "2001:db8::/32"]}},
        {"v4": src("203.0.113.9"), "mapped_v4": src("::ffff:203.0.113.9"), "mapped_other": src("::ffff:198.51.100.7"),
         "v6": src("2001:db8::1"), "mapped_hex": src("::ffff:cb00:7109"), "v4_outside": src("192.0.2.1")}))

    out.append(case(
        "net_mapped_denylist",
        "`allow if not denied` with net.cidr_contains_matches over a denylist; mapped IPv4 sources "
        "and x-forwarded-for; " + REF + " net.*",
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

default allow := false

allow if not denied

candidates contains input.attributes.source.address.socketAddress.address

candidates contains trim_space(a) if {
	some a in split(input.attributes.request.http.headers["x-forwarded-for"], ",")
}

matches := net.cidr_contains_matches(data.denied, candidates)

denied if count(matches) > 0
''', "data.json": {"denied": {"bogon": "198.18.0.0/15", "abuse": "203.0.113.0/28"}}},
        {"clean": request("GET", "/", src="192.0.2.10"),
         "mapped_denied": request("GET", "/", src="::ffff:203.0.113.9"),
         "mapped_outside": request("GET", "/", src="::ffff:203.0.113.200"),
         "xff_denied": request("GET", "/", {"x-forwarded-for": "192.0.2.1, 198.19.0.5"}, src="192.0.2.1")}))

    out.append(case(
        "net_cidr_helpers",
        "net.cidr_is_valid, net.cidr_intersects, net.cidr_merge, net.cidr_expand over data-driven "
        "network zones and a header-supplied CIDR; " + REF + " net.*",
        "data.envoy.authz.result",
        {"authz.rego": '''package envoy.authz

import rego.v1

requested := input.attributes.request.http.headers["x-target-cidr"]

zones := net.cidr_merge(data.zones)

valid if net.cidr_is_valid(requested)

overlaps contains z if {
	some z in zones
	net.cidr_intersects(z, requested)
}

default small_hosts := []

small_hosts := net.cidr_expand(requested) if {
	valid
	endswith(requested, "/30")
}

default allow := false

allow if {
	valid
	count(overlaps) == 0
}

result := {"allowed": allow, "headers": {"x-zones": concat(",", sort(zones)), "x-hosts": concat(",", sort(small_hosts))}} if valid

result := {"allowed": false, "body": "invalid cidr"} if not valid
''', "data.json": {"zones": ["10.0.0.0/25", "10.0.0.128/25", "192.168.1.0/24", "192.168.1.0/25"]}},
        {"disjoint": request("GET", "/", {"x-target-cidr": "172.16.0.0/30"}),
         "overlapping": request("GET", "/", {"x-target-cidr": "10.0.0.64/26"}),
         "invalid": request("GET", "/", {"x-target-cidr": "10.0.0.300/24"}),
         "mapped": request("GET", "/", {"x-target-cidr": "::ffff:192.168.1.0/120"})}))

    # --- non-strict builtin errors ------------------------------------------
    h = "input.attributes.request.http.headers"
    out.append(nonstrict("nonstrict_division_by_zero", "division by zero",
                         f"\tto_number({h}[\"x-total\"]) / to_number({h}[\"x-parts\"]) > 10",
                         request("GET", "/", {"x-total": "100", "x-parts": "20"}),
                         request("GET", "/", {"x-total": "100", "x-parts": "0"})))
    out.append(nonstrict("nonstrict_to_number", "to_number(\"lots\")",
                         f"\tto_number({h}[\"x-quota\"]) > 100",
                         request("GET", "/", {"x-quota": "5"}),
                         request("GET", "/", {"x-quota": "lots"})))
    out.append(nonstrict("nonstrict_bad_base64", "base64.decode of invalid base64",
                         f"\tdecoded := base64.decode({h}[\"x-blob\"])\n\tcontains(decoded, \"evil\")",
                         request("GET", "/", {"x-blob": base64.b64encode(b"nice").decode()}),
                         request("GET", "/", {"x-blob": "!!!not-base64"})))
    out.append(nonstrict("nonstrict_cidr_with_port", "net.cidr_contains with an address:port",
                         f"\tnet.cidr_contains(\"198.51.100.0/24\", {h}[\"x-real-ip\"])",
                         request("GET", "/", {"x-real-ip": "192.0.2.1"}),
                         request("GET", "/", {"x-real-ip": "198.51.100.7:8080"})))
    out.append(nonstrict("nonstrict_invalid_regex", "an invalid regex from data in regex.match",
                         "\tsome pattern in data.blocked_patterns\n\tregex.match(pattern, input.attributes.request.http.path)",
                         request("GET", "/ok"), request("GET", "/admin")))
    out[-1]["files"]["data.json"] = {"blocked_patterns": ["^/admin(", "^/secret"]}
    out[-1]["inputs"]["valid_pattern_hit"] = request("GET", "/secret/x")
    out.append(nonstrict("nonstrict_json_unmarshal", "json.unmarshal of garbage",
                         f"\tdoc := json.unmarshal({h}[\"x-claims\"])\n\tdoc.admin == false",
                         request("GET", "/", {"x-claims": '{"admin": true}'}),
                         request("GET", "/", {"x-claims": "{admin: yes"})))
    out.append(nonstrict("nonstrict_time_parse", "time.parse_rfc3339_ns of garbage",
                         f"\tt := time.parse_rfc3339_ns({h}[\"x-not-before\"])\n\tt > time.parse_rfc3339_ns(input.attributes.request.time)",
                         request("GET", "/", {"x-not-before": "2020-01-01T00:00:00Z"}),
                         request("GET", "/", {"x-not-before": "yesterday"})))
    # A strict-mode error that non-strict mode does NOT hide: conflicting values.
    out.append(case(
        "nonstrict_conflict_still_errors",
        "complete rule with conflicting values is an eval_conflict_error even when builtin errors are "
        "non-strict (the decision errors, so the plugin denies); OPA docs 'Complete Definitions'",
        "data.envoy.authz.allow",
        {"authz.rego": '''package envoy.authz

import rego.v1

allow := true if input.parsed_path[0] == "a"

allow := false if input.attributes.request.http.method == "DELETE"
'''},
        {"get_a": request("GET", "/a"), "delete_a": request("DELETE", "/a"), "delete_b": request("DELETE", "/b")}))
    return out
