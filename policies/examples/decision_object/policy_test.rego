package examples.decision_object_test

import data.examples.decision_object

summarizer := "spiffe://example.org/ns/agents/sa/summarizer"

request(id, path, context) := r if {
	r := {"peer": {"spiffe_id": id}, "parsed_path": path, "context": context}
}

decide(r) := d if {
	d := decision_object.allow with input as r
}

test_allow_carries_headers_for_the_application if {
	d := decide(request(summarizer, ["docs", "a"], {}))
	d.allowed
	d.reason == "routed"
	d.headers == {"x-caller-team": "docs", "x-caller-tier": "batch"}
	d.request_headers_to_remove == ["x-debug-user"]
	d.query_parameters_to_remove == ["debug"]
	d.response_headers_to_add["x-served-by-team"] == "docs"
}

test_a_route_outside_the_team_is_404_with_a_body if {
	d := decide(request(summarizer, ["cart", "1"], {}))
	not d.allowed
	d.http_status == 404
	d.reason == "no_route"
	d.body == "no such route for your team"
}

test_unknown_caller_gets_a_json_body if {
	d := decide(request("spiffe://example.org/ns/x/sa/y", ["docs"], {}))
	d.http_status == 403
	d.body.error == "unknown caller"
	d.headers["content-type"] == "application/json"
}

test_maintenance_is_503_with_retry_after_for_everyone if {
	d := decide(request(summarizer, ["docs"], {"maintenance": "on"}))
	d.http_status == 503
	d.headers["retry-after"] == "120"
	d2 := decide(request("spiffe://example.org/ns/x/sa/y", ["docs"], {"maintenance": "on"}))
	d2.reason == "maintenance"
}
