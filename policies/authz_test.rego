package regate.authz_test

import data.regate.authz

summarizer := "spiffe://example.org/ns/agents/sa/summarizer"

executor := "spiffe://example.org/ns/agents/sa/executor"

req(id, method, path_segments) := {
	"peer": {"spiffe_id": id, "serial": "01"},
	"attributes": {"request": {"http": {"method": method}}},
	"parsed_path": path_segments,
}

test_summarizer_reads_docs if {
	d := authz.allow with input as req(summarizer, "GET", ["docs", "readme"])
	d.allowed
	d.headers["x-regate-workload"] == "summarizer"
}

test_summarizer_cannot_delete_reports if {
	d := authz.allow with input as req(summarizer, "DELETE", ["api", "reports", "1"])
	not d.allowed
	d.reason == "no_matching_grant"
}

test_summarizer_cannot_run_tools if {
	d := authz.allow with input as req(summarizer, "POST", ["api", "tools", "shell", "run"])
	not d.allowed
}

test_executor_runs_tools if {
	d := authz.allow with input as req(executor, "POST", ["api", "tools", "shell", "run"])
	d.allowed
}

test_prefix_is_by_segment if {
	d := authz.allow with input as req(summarizer, "GET", ["docsecret"])
	not d.allowed
}

test_unknown_identity_is_denied if {
	d := authz.allow with input as req("spiffe://example.org/ns/x/sa/y", "GET", ["docs"])
	not d.allowed
}

test_revoked_identity_is_denied_first if {
	d := authz.allow with input as req(summarizer, "GET", ["docs"])
		with data.revoked.spiffe_ids as [summarizer]
	not d.allowed
	d.reason == "revoked"
}

test_revoked_serial_is_denied if {
	d := authz.allow with input as req(executor, "GET", ["docs"])
		with data.revoked.serials as ["01"]
	d.reason == "revoked"
}
