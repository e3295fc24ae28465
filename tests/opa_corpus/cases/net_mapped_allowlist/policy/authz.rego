package envoy.authz

import rego.v1

default allow := false

source_ip := input.attributes.source.address.socketAddress.address

allow if {
	some cidr in data.allowed_cidrs
	net.cidr_contains(cidr, source_ip)
}
