package examples.context_rules_test

import data.examples.context_rules

# Friday 2026-01-30, 09:30 and 21:30 UTC; Saturday 2026-01-31, 10:00 UTC.
friday_morning := "2026-01-30T09:30:00Z"

friday_night := "2026-01-30T21:30:00Z"

saturday := "2026-01-31T10:00:00Z"

hour := 3600

request(env, method, time, age) := r if {
	r := {
		"context": {"env": env},
		"attributes": {"request": {"time": time, "http": {"method": method}}},
		"peer": {"age_seconds": age},
	}
}

decide(r) := d if {
	d := context_rules.allow with input as r
}

test_prod_reads_at_any_time if {
	r := request("prod", "GET", saturday, hour)
	decide(r).reason == "read"
}

test_prod_writes_in_the_window if {
	r := request("prod", "POST", friday_morning, hour)
	decide(r) == {"allowed": true, "reason": "write_in_window"}
}

test_prod_refuses_writes_at_night if {
	r := request("prod", "DELETE", friday_night, hour)
	decide(r) == {"allowed": false, "reason": "outside_write_window"}
}

test_prod_refuses_writes_at_the_weekend if {
	r := request("prod", "PUT", saturday, hour)
	decide(r).reason == "outside_write_window"
}

test_the_window_ends_before_its_end_hour if {
	r := request("prod", "POST", "2026-01-30T18:00:00Z", hour)
	decide(r).reason == "outside_write_window"
}

test_staging_writes_at_any_time if {
	r := request("staging", "POST", saturday, hour)
	decide(r).allowed
}

test_old_certificates_are_refused if {
	r := request("dev", "GET", friday_morning, 2 * 24 * hour)
	decide(r) == {"allowed": false, "reason": "certificate_too_old"}
}

test_a_certificate_just_under_the_limit_is_accepted if {
	r := request("prod", "GET", friday_morning, (24 * hour) - 1)
	decide(r).allowed
}

test_unknown_or_missing_environment_allows_nothing if {
	decide(request("qa", "GET", friday_morning, hour)).reason == "unknown_environment"
	r := {"attributes": {"request": {"time": friday_morning, "http": {"method": "GET"}}}, "peer": {"age_seconds": 1}}
	decide(r).reason == "unknown_environment"
}
