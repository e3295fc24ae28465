# Example 5: rules on context: the environment regate runs in, the time of the request and
# the age of the caller's certificate.
#
#   query: data.examples.context_rules.allow
#   data:  data.json in this directory, at data.examples.context_rules
#
# input.context is what the operator set with `regate run --context env=prod`;
# input.attributes.request.time is the time regate received the request (RFC 3339, UTC);
# input.peer.age_seconds is how long ago the caller's certificate became valid.
package examples.context_rules

# Not `settings`: a rule of that name would be data.examples.context_rules.settings itself.
config := data.examples.context_rules.settings

reads := {"GET", "HEAD", "OPTIONS"}

default allow := {"allowed": false, "reason": "unknown_environment"}

# Checked in order; the first that applies decides.
allow := {"allowed": false, "reason": "certificate_too_old"} if {
	environment
	# SPIRE rotates SVIDs well within a day; an older certificate was not rotated, and may
	# be a copied one. Refuse it even though it has not expired yet.
	input.peer.age_seconds > config.max_certificate_age_seconds
} else := {"allowed": true, "reason": "read"} if {
	environment
	input.attributes.request.http.method in reads
} else := {"allowed": true, "reason": "write_in_window"} if {
	environment
	in_write_window
} else := {"allowed": false, "reason": "outside_write_window"} if {
	environment
}

# Fail closed: a proxy started without --context env, or with an unknown one, allows nothing.
environment := config.environments[input.context.env]

# An environment without a write window takes writes at any time. (`not` is true for an
# undefined environment too: that is why every branch of allow names `environment`.)
in_write_window if {
	not environment.write_window
}

in_write_window if {
	window := environment.write_window
	ns := time.parse_rfc3339_ns(input.attributes.request.time)
	time.weekday([ns, "UTC"]) in window.days
	[hour, _, _] := time.clock([ns, "UTC"])
	window.start_hour <= hour
	hour < window.end_hour
}
