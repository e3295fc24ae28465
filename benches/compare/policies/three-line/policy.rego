package regate.authz

# Three conditions: the caller in a set, the method, a path prefix.
default allow := false

allow if {
	input.peer.spiffe_id in {"spiffe://example.org/ns/agents/sa/summarizer", "spiffe://example.org/ns/agents/sa/executor"}
	input.attributes.request.http.method == "GET"
	input.parsed_path[0] == "api"
}
