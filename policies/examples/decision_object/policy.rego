# Example 6: a decision object. Beyond allow or deny, the policy chooses the reason for the
# decision log, the status and body a denied client gets, headers for the application or
# the client, and query parameters to drop.
#
#   query: data.examples.decision_object.allow
#   data:  data.json in this directory, at data.examples.decision_object
#
# Every field is listed in docs/policy-input.md#the-decision. A field of the wrong type
# makes the whole decision a deny (policy_invalid_result), even when allowed is true.
package examples.decision_object

callers := data.examples.decision_object.teams

caller := callers[input.peer.spiffe_id]

default allow := {
	"allowed": false,
	"reason": "unknown_caller",
	"http_status": 403,
	"body": {"error": "unknown caller", "docs": "https://wiki.example.org/regate#access"},
	"headers": {"content-type": "application/json"},
}

# Maintenance comes first: a 503 with Retry-After, which clients and meshes understand,
# rather than a 403 that looks like a permission problem.
allow := {
	"allowed": false,
	"reason": "maintenance",
	"http_status": 503,
	"body": "down for maintenance; retry in two minutes",
	"headers": {"retry-after": "120"},
} if {
	input.context.maintenance == "on"
} else := {
	"allowed": false,
	"reason": "no_route",
	"http_status": 404,
	"body": "no such route for your team",
} if {
	caller
	not input.parsed_path[0] in caller.routes
} else := {
	"allowed": true,
	"reason": "routed",
	# To the application: who is calling, as data says, not as the client claims.
	"headers": {
		"x-caller-team": caller.team,
		"x-caller-tier": caller.tier,
	},
	# A client must not be able to pose as a user through a debugging header or flag.
	"request_headers_to_remove": ["x-debug-user"],
	"query_parameters_to_remove": ["debug"],
	# To the client, on allow and deny alike.
	"response_headers_to_add": {"x-served-by-team": caller.team},
} if {
	caller
}
