# Example 1: an allowlist of SPIFFE IDs, each with the methods and path prefixes it may use.
#
#   query: data.examples.spiffe_allowlist.allow
#   data:  data.json in this directory, at data.examples.spiffe_allowlist
#
# The caller's rules are found by indexing data with its SPIFFE ID, so the cost of a
# decision does not grow with the number of callers in the list.
package examples.spiffe_allowlist

default allow := false

allow if {
	some rule in data.examples.spiffe_allowlist.callers[input.peer.spiffe_id]
	method_matches(rule.methods)
	prefix_matches(segments(rule.prefix))
}

method_matches(methods) if "*" in methods

method_matches(methods) if input.attributes.request.http.method in methods

# "/api/cart" -> ["api", "cart"]; "/" -> [], which every path starts with.
segments(prefix) := [s | some s in split(prefix, "/"); s != ""]

# Compared segment by segment on the decoded path, so /api/cart does not match
# /api/cartography, and an encoded trick cannot reach the policy (regate refuses it).
prefix_matches(prefix) if {
	count(prefix) <= count(input.parsed_path)
	array.slice(input.parsed_path, 0, count(prefix)) == prefix
}
