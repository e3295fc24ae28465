"""Build input documents shaped like the ones regate hands to policies.

The shape is an Envoy ext_authz v3 CheckRequest in protojson (as
opa-envoy-plugin builds it) plus regate's extras (`peer`, `context`), as
printed by `regate policy eval --show-input`.  Everything is deterministic:
request ids are derived from the request line.
"""

import copy
import hashlib
import json
import urllib.parse

from .keys import KEYS

SPIFFE = "spiffe://example.org/ns/agents/sa/summarizer"
REQUEST_TIME = "2026-11-23T21:08:03.09907283Z"


def _request_id(*parts):
    h = hashlib.sha256("|".join(parts).encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:32]}"


def xfcc(spiffe=SPIFFE, cert_pem=None, subject=None):
    """An Envoy-style x-forwarded-client-cert value."""
    parts = ["Hash=" + hashlib.sha256(spiffe.encode()).hexdigest()]
    if cert_pem:
        parts.append("Cert=\"" + urllib.parse.quote(cert_pem, safe="") + "\"")
    parts.append("Subject=\"" + (subject or f"CN={spiffe.rsplit('/', 1)[-1]}") + "\"")
    parts.append("URI=" + spiffe)
    return ";".join(parts)


def peer(spiffe=SPIFFE):
    if spiffe is None:
        return None
    td = spiffe[len("spiffe://"):].split("/", 1)[0]
    path = spiffe[len("spiffe://") + len(td):]
    return {
        "spiffe_id": spiffe,
        "trust_domain": td,
        "path": path,
        "uri_sans": [spiffe],
        "dns_sans": [],
        "serial": "01",
        "subject": "CN=" + spiffe.rsplit("/", 1)[-1],
        "issuer": "CN=regate dev CA",
        "fingerprint_sha256": hashlib.sha256(spiffe.encode()).hexdigest(),
        "not_before": "2026-11-23T20:08:03Z",
        "not_after": "2026-11-24T21:08:03Z",
        "age_seconds": 3600,
        "expires_in_seconds": 82800,
    }


def request(method="GET", path="/", headers=None, *, src="127.0.0.1", src_port=40000,
            spiffe=SPIFFE, body=None, parsed_body=None, time=REQUEST_TIME,
            authority="localhost", drop_headers=(), protocol="HTTP/1.1"):
    """A full input document.

    headers: extra request headers (lower-case names) merged over the defaults.
    body: raw body string; parsed_body defaults to json.loads(body) when the
    body is JSON.  spiffe=None models a peer without a SPIFFE id.
    """
    rid = _request_id(method, path, json.dumps(headers or {}, sort_keys=True), src)
    hdrs = {
        ":authority": authority,
        ":method": method,
        ":path": path,
        ":scheme": "https",
        "host": authority,
        "x-forwarded-for": src,
        "x-forwarded-proto": "https",
        "x-request-id": rid,
    }
    if spiffe:
        hdrs["x-forwarded-client-cert"] = xfcc(spiffe)
    if body is not None:
        hdrs["content-length"] = str(len(body.encode()))
        hdrs.setdefault("content-type", "application/json")
    hdrs.update(headers or {})
    for h in drop_headers:
        hdrs.pop(h, None)
    u = urllib.parse.urlsplit(path)
    segs = u.path.lstrip("/").split("/")
    parsed_path = [urllib.parse.unquote(s) for s in segs]
    parsed_query = {}
    for k, v in urllib.parse.parse_qsl(u.query, keep_blank_values=True):
        parsed_query.setdefault(k, []).append(v)
    http = {"headers": hdrs, "host": authority, "id": rid, "method": method, "path": path,
            "protocol": protocol, "scheme": "https"}
    if body is not None:
        http["body"] = body
    source = {"address": {"socketAddress": {"address": src, "portValue": src_port}}}
    if spiffe:
        source["principal"] = spiffe
    doc = {
        "attributes": {
            "destination": {"address": {"socketAddress": {"address": "127.0.0.1",
                                                          "portValue": 8443}},
                            "principal": "localhost"},
            "request": {"http": http, "time": time},
            "source": source,
        },
        "context": {},
        "parsed_path": parsed_path,
        "parsed_query": parsed_query,
        "version": {"encoding": "protojson", "ext_authz": "v3"},
    }
    p = peer(spiffe)
    if p:
        doc["peer"] = p
    if body is not None:
        if parsed_body is None:
            try:
                parsed_body = json.loads(body)
            except ValueError:
                parsed_body = None
        if parsed_body is not None:
            doc["parsed_body"] = parsed_body
        doc["truncated_body"] = False
    return doc


def bearer(tok):
    return {"authorization": "Bearer " + tok}
