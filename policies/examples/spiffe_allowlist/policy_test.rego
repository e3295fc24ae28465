package examples.spiffe_allowlist_test

import data.examples.spiffe_allowlist

frontend := "spiffe://example.org/ns/web/sa/frontend"

prober := "spiffe://example.org/ns/ops/sa/prober"

admin := "spiffe://example.org/ns/ops/sa/admin"

# Only the fields this policy reads; `regate policy eval --show-input` prints a whole one.
request(id, method, path) := {
	"peer": {"spiffe_id": id},
	"attributes": {"request": {"http": {"method": method}}},
	"parsed_path": path,
}

test_frontend_reads_the_catalog if {
	spiffe_allowlist.allow with input as request(frontend, "GET", ["api", "catalog", "42"])
}

test_frontend_cannot_write_the_catalog if {
	not spiffe_allowlist.allow with input as request(frontend, "POST", ["api", "catalog"])
}

test_frontend_empties_its_cart if {
	spiffe_allowlist.allow with input as request(frontend, "DELETE", ["api", "cart", "7"])
}

test_prefix_matches_whole_segments_only if {
	not spiffe_allowlist.allow with input as request(frontend, "GET", ["api", "cartography"])
}

test_prober_reaches_only_healthz if {
	spiffe_allowlist.allow with input as request(prober, "HEAD", ["healthz"])
	not spiffe_allowlist.allow with input as request(prober, "GET", ["api", "catalog"])
}

test_admin_wildcard_allows_any_method_anywhere if {
	spiffe_allowlist.allow with input as request(admin, "PATCH", ["anything", "at", "all"])
	spiffe_allowlist.allow with input as request(admin, "GET", [""])
}

test_unknown_caller_is_denied if {
	not spiffe_allowlist.allow with input as request("spiffe://example.org/ns/x/sa/y", "GET", ["api", "catalog"])
}

test_caller_without_spiffe_id_is_denied if {
	not spiffe_allowlist.allow with input as request(null, "GET", ["healthz"])
}

test_a_new_caller_is_one_data_entry if {
	spiffe_allowlist.allow with input as request("spiffe://example.org/ns/web/sa/search", "GET", ["api", "catalog"])
		with data.examples.spiffe_allowlist.callers["spiffe://example.org/ns/web/sa/search"] as [{"methods": ["GET"], "prefix": "/api/catalog"}]
}
