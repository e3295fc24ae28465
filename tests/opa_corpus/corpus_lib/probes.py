"""One-expression probes over the builtins authz policies use.

Each line is `name | expression`.  record.py evaluates each as
`package probe\\nimport rego.v1\\nx := <expr>` (query data.probe.x), strict
and non-strict.  No clock- or randomness-dependent builtins.
"""

from .keys import KEYS, token

PROBES = r'''
# --- strings ---
concat_basic | concat(",", ["a", "b", "c"])
concat_set | concat("-", {"b", "a"})
contains_true | contains("abcdef", "cde")
contains_empty | contains("abc", "")
startswith_true | startswith("/v1/docs", "/v1")
endswith_false | endswith("/v1/docs", "/v1")
format_int_hex | format_int(255, 16)
format_int_float | format_int(3.9, 10)
format_int_negative | format_int(-10, 2)
indexof_found | indexof("hello", "l")
indexof_missing | indexof("hello", "z")
indexof_unicode | indexof("héllo", "l")
indexof_n | indexof_n("banana", "an")
lower_unicode | lower("ÄBC")
upper_basic | upper("abc")
replace_all | replace("a.b.c", ".", "/")
split_basic | split("a,b,,c", ",")
split_empty_delim | split("abc", "")
sprintf_mixed | sprintf("%s=%d (%v) %.2f", ["n", 7, [1, "x"], 3.14159])
sprintf_missing | sprintf("%s %s", ["only"])
sprintf_quoted | sprintf("%q", ["a\"b"])
substring_basic | substring("abcdef", 1, 3)
substring_neg_len | substring("abcdef", 2, -1)
substring_past_end | substring("abc", 5, 2)
substring_neg_start | substring("abc", -1, 2)
substring_unicode | substring("héllo", 1, 2)
trim_basic | trim("--x--", "-")
trim_left | trim_left("xxabc", "x")
trim_right | trim_right("abcxx", "x")
trim_prefix_basic | trim_prefix("Bearer abc", "Bearer ")
trim_prefix_absent | trim_prefix("Basic abc", "Bearer ")
trim_suffix_basic | trim_suffix("a.json", ".json")
trim_space_unicode | trim_space(" \t x \n")
strings_reverse | strings.reverse("abc")
strings_count | strings.count("cheese", "e")
strings_replace_n | strings.replace_n({"a": "1", "b": "2"}, "abcab")
strings_any_prefix | strings.any_prefix_match(["/v1/x", "/v2/y"], ["/v2", "/v3"])
strings_any_suffix | strings.any_suffix_match("file.json", [".yaml", ".json"])
render_template_basic | strings.render_template("{{.a}}-{{.b}}", {"a": 1, "b": "x"})
render_template_missing | strings.render_template("{{.missing}}", {"a": 1})
lower_number_error | lower(json.unmarshal("1"))
# --- regex and glob ---
regex_match_anchored | regex.match("^/v[0-9]+/", "/v12/x")
regex_match_unanchored | regex.match("b+", "abbbc")
regex_invalid | regex.match("(", "x")
regex_is_valid_false | regex.is_valid("a(")
regex_is_valid_true | regex.is_valid("a(b)")
regex_split | regex.split("[,;]", "a,b;c")
regex_find_n | regex.find_n("[0-9]+", "a1b22c333", 2)
regex_find_all | regex.find_n("[0-9]+", "a1b22c333", -1)
regex_submatch | regex.find_all_string_submatch_n("(\\w+)=(\\w+)", "a=1 b=2", -1)
regex_replace | regex.replace("a1b2", "[0-9]", "#")
regex_template_match | regex.template_match("urn:foo:{.*}", "urn:foo:bar:baz", "{", "}")
regex_globs_match_true | regex.globs_match("a.*b", "a.+b")
regex_globs_match_false | regex.globs_match("a[0-9]", "a[a-z]")
regex_unicode_class | regex.match("^\\p{L}+$", "héllo")
regex_re2_no_lookahead | regex.match("a(?=b)", "ab")
glob_star_delim | glob.match("/api/*", ["/"], "/api/a/b")
glob_doublestar | glob.match("/api/**", ["/"], "/api/a/b")
glob_no_delims_default | glob.match("*.example.org", [], "a.b.example.org")
glob_dot_delim | glob.match("*.example.org", ["."], "a.b.example.org")
glob_null_delims | glob.match("a*c", null, "a.c")
glob_question | glob.match("file?.txt", [], "file1.txt")
glob_class | glob.match("[a-c]x", [], "bx")
glob_negated_class | glob.match("[!a-c]x", [], "bx")
glob_alternatives | glob.match("{api,www}.example.org", ["."], "www.example.org")
glob_escape | glob.match("a\\*b", [], "a*b")
glob_escape_no_wild | glob.match("a\\*b", [], "axb")
glob_invalid_pattern | glob.match("[a-", [], "a")
glob_quote_meta_q | glob.quote_meta("a?b")
glob_quote_meta_brackets | glob.quote_meta("[x]")
glob_quote_meta_all | glob.quote_meta("*?[]{},\\")
glob_quoted_matches_self | glob.match(glob.quote_meta("a[1]?"), [], "a[1]?")
glob_quoted_not_class | glob.match(glob.quote_meta("a[1]"), [], "a1")
glob_empty_pattern | glob.match("", [], "")
# --- net ---
cidr_contains_mapped_v4 | net.cidr_contains("203.0.113.0/24", "::ffff:203.0.113.9")
cidr_contains_v4 | net.cidr_contains("203.0.113.0/24", "203.0.113.9")
cidr_contains_v4_outside | net.cidr_contains("203.0.113.0/24", "203.0.114.9")
cidr_contains_mapped_outside | net.cidr_contains("203.0.113.0/24", "::ffff:198.51.100.1")
cidr_contains_mapped_hex | net.cidr_contains("203.0.113.0/24", "::ffff:cb00:7109")
cidr_contains_v6_in_mapped_net | net.cidr_contains("::ffff:203.0.113.0/120", "203.0.113.9")
cidr_contains_v6 | net.cidr_contains("2001:db8::/32", "2001:db8::1")
cidr_contains_v4_in_v6 | net.cidr_contains("2001:db8::/32", "203.0.113.9")
cidr_contains_subnet | net.cidr_contains("10.0.0.0/8", "10.1.0.0/16")
cidr_contains_supernet | net.cidr_contains("10.1.0.0/16", "10.0.0.0/8")
cidr_contains_with_port | net.cidr_contains("10.0.0.0/8", "10.0.0.1:80")
cidr_contains_bad_cidr | net.cidr_contains("10.0.0.0/33", "10.0.0.1")
cidr_contains_zone | net.cidr_contains("fe80::/10", "fe80::1%eth0")
cidr_contains_leading_zero | net.cidr_contains("10.0.0.0/8", "010.0.0.1")
cidr_contains_loopback_mapped | net.cidr_contains("127.0.0.0/8", "::ffff:127.0.0.1")
cidr_contains_matches_mapped | net.cidr_contains_matches(["203.0.113.0/24", "10.0.0.0/8"], ["::ffff:203.0.113.9", "10.1.1.1"])
cidr_contains_matches_object | net.cidr_contains_matches({"a": "10.0.0.0/8", "b": "192.168.0.0/16"}, "10.2.3.4")
cidr_contains_matches_tuples | net.cidr_contains_matches([["10.0.0.0/8", "x"]], {"ip1": "10.0.0.5"})
cidr_intersects_true | net.cidr_intersects("10.0.0.0/8", "10.1.0.0/16")
cidr_intersects_false | net.cidr_intersects("10.0.0.0/8", "11.0.0.0/8")
cidr_intersects_mapped | net.cidr_intersects("::ffff:10.0.0.0/104", "10.0.0.0/8")
cidr_intersects_bad | net.cidr_intersects("10.0.0.0", "10.0.0.0/8")
cidr_merge_adjacent | net.cidr_merge(["10.0.0.0/25", "10.0.0.128/25"])
cidr_merge_nested | net.cidr_merge(["192.168.0.0/16", "192.168.1.0/24", "10.0.0.1"])
cidr_merge_v6 | net.cidr_merge(["2001:db8::/33", "2001:db8:8000::/33"])
cidr_merge_set | net.cidr_merge({"10.0.0.0/24", "10.0.1.0/24"})
cidr_merge_bad | net.cidr_merge(["10.0.0.0/40"])
cidr_expand_30 | net.cidr_expand("192.168.0.0/30")
cidr_expand_32 | net.cidr_expand("192.168.0.7/32")
cidr_expand_unaligned | net.cidr_expand("192.168.0.5/30")
cidr_expand_v6_126 | net.cidr_expand("2001:db8::/126")
cidr_is_valid_true | net.cidr_is_valid("10.0.0.0/8")
cidr_is_valid_no_prefix | net.cidr_is_valid("10.0.0.0")
cidr_is_valid_v6 | net.cidr_is_valid("::ffff:10.0.0.0/104")
cidr_is_valid_bad_octet | net.cidr_is_valid("10.0.0.256/8")
cidr_is_valid_number | net.cidr_is_valid(json.unmarshal("10"))
# --- time (fixed instants only) ---
parse_rfc3339_basic | time.parse_rfc3339_ns("2026-11-23T21:08:03.09907283Z")
parse_rfc3339_offset | time.parse_rfc3339_ns("2026-11-23T23:08:03+02:00")
parse_rfc3339_space | time.parse_rfc3339_ns("2026-11-23 21:08:03Z")
parse_rfc3339_lower_t | time.parse_rfc3339_ns("2026-11-23t21:08:03Z")
parse_rfc3339_lower_z | time.parse_rfc3339_ns("2026-11-23T21:08:03z")
parse_rfc3339_no_zone | time.parse_rfc3339_ns("2026-11-23T21:08:03")
parse_rfc3339_garbage | time.parse_rfc3339_ns("yesterday")
parse_rfc3339_leap_day | time.parse_rfc3339_ns("2024-02-29T00:00:00Z")
parse_rfc3339_bad_day | time.parse_rfc3339_ns("2023-02-29T00:00:00Z")
parse_rfc3339_epoch | time.parse_rfc3339_ns("1970-01-01T00:00:00Z")
parse_rfc3339_pre_epoch | time.parse_rfc3339_ns("1969-12-31T23:59:59Z")
parse_ns_layout | time.parse_ns("2006-01-02", "2026-11-23")
parse_ns_bad | time.parse_ns("2006-01-02", "23/11/2026")
parse_duration_ns | time.parse_duration_ns("1h30m")
parse_duration_ms | time.parse_duration_ns("250ms")
parse_duration_bad | time.parse_duration_ns("1 hour")
time_clock_utc | time.clock(1795554483099072830)
time_clock_tz | time.clock([1795554483099072830, "America/New_York"])
time_clock_bad_tz | time.clock([1795554483099072830, "Mars/Olympus"])
time_date | time.date(1795554483099072830)
time_weekday | time.weekday(1795554483099072830)
time_weekday_tz | time.weekday([1795554483099072830, "Asia/Tokyo"])
time_add_date | time.add_date(1795554483099072830, 0, 1, 7)
time_diff | time.diff(1795554483099072830, 1700000000000000000)
time_format | time.format(1795554483099072830)
time_format_tz_layout | time.format([1795554483099072830, "UTC", "2006-01-02"])
# --- encoding ---
base64_encode | base64.encode("hello?")
base64_decode | base64.decode("aGVsbG8/")
base64_decode_no_padding | base64.decode("aGVsbG8")
base64_decode_invalid | base64.decode("!!!")
base64_decode_url_alphabet | base64.decode("aGVsbG8_")
base64_is_valid_true | base64.is_valid("aGVsbG8/")
base64_is_valid_false | base64.is_valid("aGVsbG8")
base64url_encode | base64url.encode("hello?")
base64url_encode_no_pad | base64url.encode_no_pad("hello?")
base64url_decode | base64url.decode("aGVsbG8_")
base64url_decode_no_padding | base64url.decode("YWxpY2U")
base64url_decode_padded | base64url.decode("YWxpY2U=")
base64url_decode_invalid | base64url.decode("a+b/")
hex_encode | hex.encode("hi!")
hex_decode | hex.decode("686921")
hex_decode_odd | hex.decode("686")
urlquery_encode | urlquery.encode("a b&c=d/é")
urlquery_decode | urlquery.decode("a+b%26c%3Dd")
urlquery_decode_bad | urlquery.decode("%zz")
urlquery_encode_object | urlquery.encode_object({"b": ["2", "1"], "a": "x y"})
urlquery_decode_object | urlquery.decode_object("a=1&a=2&b=x%20y")
json_marshal_sorted | json.marshal({"b": 1, "a": [true, null]})
json_marshal_indent | json.marshal_with_options({"a": 1}, {"pretty": true, "indent": "  "})
json_unmarshal | json.unmarshal("{\"a\": [1, 2.5, \"x\"]}")
json_unmarshal_garbage | json.unmarshal("{a: 1")
json_unmarshal_trailing | json.unmarshal("{} x")
json_is_valid_false | json.is_valid("{\"a\":")
json_filter | json.filter({"a": {"b": 1, "c": 2}, "d": 3}, ["a/b", "d"])
json_remove | json.remove({"a": {"b": 1, "c": 2}, "d": 3}, ["a/b"])
json_patch | json.patch({"a": 1}, [{"op": "add", "path": "/b", "value": 2}])
yaml_marshal | yaml.marshal({"a": [1, "x"]})
yaml_unmarshal | yaml.unmarshal("a: [1, x]\nb: {c: true}")
yaml_unmarshal_bad | yaml.unmarshal("a: [1")
yaml_is_valid | yaml.is_valid("a: 1")
# --- numbers ---
to_number_string | to_number("42")
to_number_float | to_number("-1.5e3")
to_number_leading_space | to_number(" 1")
to_number_trailing_space | to_number("1 ")
to_number_word | to_number("lots")
to_number_bool | to_number(true)
to_number_null | to_number(null)
to_number_hex | to_number("0x10")
to_number_inf | to_number("Inf")
to_number_plus | to_number("+5") == 5
div_zero | 1 / 0
rem_zero | 1 % 0
div_exact | 10 / 4
rem_float | 7.5 % 2
big_int | 9007199254740993 + 0
round_half | round(2.5)
ceil_floor | [ceil(1.2), floor(-1.2), abs(-3)]
numbers_range | numbers.range(1, 5)
numbers_range_desc | numbers.range(3, 1)
numbers_range_step | numbers.range_step(0, 10, 3)
sum_max_min | [sum([1, 2.5]), max([3, 1]), min({4, 2})]
max_empty | max([])
units_parse_bytes_kib | units.parse_bytes("1KiB")
units_parse_bytes_kb | units.parse_bytes("1KB")
units_parse_bytes_plain | units.parse_bytes("512")
units_parse_bytes_bad | units.parse_bytes("lots")
units_parse_milli | units.parse("100m")
units_parse_giga | units.parse("2G")
units_parse_gi | units.parse("2Gi")
bits_ops | [bits.and(12, 10), bits.or(12, 10), bits.xor(12, 10), bits.lsh(1, 4), bits.rsh(16, 2)]
# --- semver ---
semver_compare_lt | semver.compare("1.2.3", "1.10.0")
semver_compare_pre | semver.compare("1.0.0-rc.1", "1.0.0")
semver_is_valid_v | semver.is_valid("v1.2.3")
semver_is_valid_true | semver.is_valid("1.2.3-alpha+build")
semver_compare_invalid | semver.compare("1.2", "1.2.0")
# --- objects, arrays, sets, types ---
object_get_default | object.get({"a": 1}, "b", "dflt")
object_get_path | object.get({"a": {"b": {"c": 3}}}, ["a", "b", "c"], 0)
object_get_path_missing | object.get({"a": {"b": 1}}, ["a", "x"], "none")
object_get_array_key | object.get({"a": ["x", "y"]}, ["a", 1], "none")
object_keys | object.keys({"b": 1, "a": 2})
object_remove | object.remove({"a": 1, "b": 2, "c": 3}, ["a", "c"])
object_filter | object.filter({"a": 1, "b": 2}, {"b"})
object_union | object.union({"a": {"x": 1}, "b": 2}, {"a": {"y": 2}, "b": 3})
object_union_n | object.union_n([{"a": 1}, {"b": 2}, {"a": 3}])
object_subset | object.subset({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}})
array_concat | array.concat([1, 2], [3])
array_slice | array.slice([1, 2, 3, 4], 1, 3)
array_slice_clamped | array.slice([1, 2, 3], -1, 10)
array_reverse | array.reverse([1, 2, 3])
array_flatten | array.flatten([1, [2, [3, [4]]], []])
sort_mixed | sort([3, "a", null, true, 1, [1], {"a": 1}])
sort_strings | sort(["b", "B", "a", "é"])
count_string_unicode | count("héllo")
count_object | count({"a": 1, "b": 2})
set_union | {1, 2} | {2, 3}
set_intersection | {1, 2} & {2, 3}
set_difference | {1, 2} - {2, 3}
union_sets | union({{1}, {2, 3}})
intersection_sets | intersection({{1, 2}, {2, 3}})
in_array | "b" in ["a", "b"]
in_object_value | 1 in {"a": 1}
in_with_key | "a", 1 in {"a": 1}
type_names | [type_name(null), type_name(1), type_name("s"), type_name([]), type_name({}), type_name(set())]
is_checks | [is_number(1.5), is_string(1), is_boolean(false), is_array(set()), is_set(set()), is_object({}), is_null(null)]
equal_int_float | 1 == 1.0
compare_types | [null < false, false < 0, 0 < "", "" < [], [] < {}]
array_compare | [1, 2] < [1, 3]
object_key_number | {1: "a", 1.0: "b"}
walk_paths | [p | walk({"a": [1, {"b": 2}]}, [p, _])]
comprehension_obj_conflict | {k: v | some k in ["a", "a"]; some v in [1, 2]}
string_concat_plus | json.unmarshal("\"a\"") + json.unmarshal("1")
array_index_oob | [1, 2][count("abcde")]
object_lookup_chain | {"a": {"b": null}}.a.b
# --- uuid ---
uuid_parse | uuid.parse("3890d59a-5e89-430d-b2fc-8408ed6721d4")
uuid_parse_bad | uuid.parse("not-a-uuid")
uuid_parse_upper | uuid.parse("3890D59A-5E89-430D-B2FC-8408ED6721D4")
# --- crypto ---
sha256_hello | crypto.sha256("hello")
sha1_hello | crypto.sha1("hello")
md5_hello | crypto.md5("hello")
sha256_empty | crypto.sha256("")
sha256_unicode | crypto.sha256("é")
hmac_sha256 | crypto.hmac.sha256("message", "key")
hmac_sha512 | crypto.hmac.sha512("message", "key")
hmac_sha1 | crypto.hmac.sha1("message", "key")
hmac_md5 | crypto.hmac.md5("message", "key")
hmac_equal_true | crypto.hmac.equal("abc", "abc")
hmac_equal_false | crypto.hmac.equal("abc", "abd")
x509_parse_garbage | crypto.x509.parse_certificates("not a cert")
x509_verify_garbage | crypto.x509.parse_and_verify_certificates("not a cert")
x509_parse_rsa_key_pem | crypto.x509.parse_rsa_private_key("nope")
# --- json schema ---
match_schema_ok | json.match_schema({"a": 1}, {"type": "object", "properties": {"a": {"type": "integer"}}})
match_schema_fail | json.match_schema({"a": "x"}, {"type": "object", "properties": {"a": {"type": "integer"}}})
match_schema_string_schema | json.match_schema({"a": 1}, "{\"type\": \"object\", \"required\": [\"b\"]}")
match_schema_bad_schema | json.match_schema({"a": 1}, {"type": "objekt"})
verify_schema_ok | json.verify_schema({"type": "string", "minLength": 2})
verify_schema_bad | json.verify_schema({"type": 12})
# --- jwt (fixed tokens built below) ---
'''


def probes():
    out = []
    for line in PROBES.strip().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name, expr = (s.strip() for s in line.split(" | ", 1))
        out.append({"name": name, "expr": expr})
    out.extend(jwt_probes())
    return out


def q(s):
    """A Rego string literal (raw strings can't hold backquotes; JSON-escape)."""
    import json
    return json.dumps(s)


def jwt_probes():
    hs = token("probe-hs256", "HS256", {"sub": "alice", "exp": 4102444800, "iss": "corpus"})
    rs = token("probe-rs256", "RS256", {"sub": "alice", "exp": 4102444800})
    es = token("probe-es256", "ES256", {"sub": "alice", "nbf": 4000000000})
    cert = KEYS.pem["rsa.cert.pem"]
    leaf, ca = KEYS.pem["leaf.cert.pem"], KEYS.pem["ca.cert.pem"]
    p = [
        ("jwt_decode_hs256", f"io.jwt.decode({q(hs)})"),
        ("jwt_decode_malformed", 'io.jwt.decode("a.b")'),
        ("jwt_decode_bad_json", 'io.jwt.decode("eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln")'),
        ("jwt_decode_bad_base64", 'io.jwt.decode("!!!.!!!.!!!")'),
        ("jwt_verify_hs256_ok", f"io.jwt.verify_hs256({q(hs)}, \"secret\")"),
        ("jwt_verify_hs256_wrong", f"io.jwt.verify_hs256({q(hs)}, \"other\")"),
        ("jwt_verify_hs384_on_hs256", f"io.jwt.verify_hs384({q(hs)}, \"secret\")"),
        ("jwt_verify_rs256_cert", f"io.jwt.verify_rs256({q(rs)}, {q(cert)})"),
        ("jwt_verify_rs256_bad_key", f"io.jwt.verify_rs256({q(rs)}, \"not a key\")"),
        ("jwt_verify_es256_pub", f"io.jwt.verify_es256({q(es)}, {q(KEYS.pem['ec256.pub.pem'])})"),
        ("jwt_decode_verify_secret", f"io.jwt.decode_verify({q(hs)}, {{\"secret\": \"secret\", \"iss\": \"corpus\"}})"),
        ("jwt_decode_verify_wrong_iss", f"io.jwt.decode_verify({q(hs)}, {{\"secret\": \"secret\", \"iss\": \"other\"}})"),
        ("jwt_decode_verify_time_past_exp", f"io.jwt.decode_verify({q(hs)}, {{\"secret\": \"secret\", \"time\": 4102444801000000000}})"),
        ("jwt_decode_verify_nbf_future", f"io.jwt.decode_verify({q(es)}, {{\"cert\": {q(KEYS.pem['ec256.pub.pem'])}, \"time\": 1700000000000000000}})"),
        ("jwt_decode_verify_alg_mismatch", f"io.jwt.decode_verify({q(rs)}, {{\"cert\": {q(cert)}, \"alg\": \"RS512\"}})"),
        ("jwt_decode_verify_no_key", f"io.jwt.decode_verify({q(hs)}, {{}})"),
        ("jwt_decode_verify_unknown_constraint", f"io.jwt.decode_verify({q(hs)}, {{\"secret\": \"secret\", \"bogus\": 1}})"),
        ("jwt_decode_verify_malformed", 'io.jwt.decode_verify("x.y", {"secret": "secret"})'),
        ("jwt_encode_sign_hs256", 'io.jwt.encode_sign({"alg": "HS256", "typ": "JWT"}, {"sub": "a"}, {"kty": "oct", "k": "c2VjcmV0"})'),
        ("x509_parse_leaf", f"[c.Subject.CommonName | some c in crypto.x509.parse_certificates({q(leaf)})]"),
        ("x509_parse_leaf_uris", f"crypto.x509.parse_certificates({q(leaf)})[0].URIStrings"),
        ("x509_verify_chain_ok", f"crypto.x509.parse_and_verify_certificates({q(ca + leaf)})[0]"),
        ("x509_verify_chain_reversed", f"crypto.x509.parse_and_verify_certificates({q(leaf + ca)})[0]"),
        ("x509_parse_keypair_missing", f"crypto.x509.parse_certificate_request({q(leaf)})"),
    ]
    return [{"name": n, "expr": e} for n, e in p]
