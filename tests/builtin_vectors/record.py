#!/usr/bin/env python3
"""Record OPA's answers for the JWT and crypto builtins regate implements.

The oracle is OPA itself, embedded by the PyPI package `opa-golib-python-bindings`
(module `opa_bindings`, OPA 1.20, strict builtin errors). Keys, certificates and
tokens are generated once into keys/ (RSA and ECDSA signatures are randomized, so
they are kept, not re-minted); re-running this script with keys/ present rewrites
vectors.json byte for byte the same.

    python3 tests/builtin_vectors/record.py
"""

import base64
import datetime
import hashlib
import hmac
import ipaddress
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = os.path.join(HERE, "keys")


# ---------------------------------------------------------------- key material


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def cjson(v):
    return json.dumps(v, separators=(",", ":"), sort_keys=True).encode()


def int_b64url(n, length=None):
    if length is None:
        length = (n.bit_length() + 7) // 8
    return b64url(n.to_bytes(length, "big"))


def generate():
    """Generate keys/material.json: keys, certificates and signed tokens."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    m = {}
    priv = {}
    priv["rsa"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv["rsa2"] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    priv["ec256"] = ec.generate_private_key(ec.SECP256R1())
    priv["ec384"] = ec.generate_private_key(ec.SECP384R1())
    priv["ec521"] = ec.generate_private_key(ec.SECP521R1())
    priv["ed25519"] = ed25519.Ed25519PrivateKey.generate()
    priv["ca"] = ec.generate_private_key(ec.SECP256R1())
    priv["ca2"] = ec.generate_private_key(ec.SECP256R1())

    def pem_pub(k):
        return k.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()

    def pem_priv(k):
        return k.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    nb = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    na = datetime.datetime(2049, 12, 31, 23, 59, 59, tzinfo=datetime.timezone.utc)

    def name(cn, org=None, ou=None, country=None):
        attrs = []
        if country:
            attrs.append(x509.NameAttribute(NameOID.COUNTRY_NAME, country))
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        if ou:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, ou))
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        return x509.Name(attrs)

    def cert(subject_key, subject, issuer, issuer_key, serial, ca=False, sans=None, eku=None):
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(issuer)
            .public_key(subject_key.public_key())
            .serial_number(serial)
            .not_valid_before(nb)
            .not_valid_after(na)
        )
        if ca:
            b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            b = b.add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=False,
                    data_encipherment=False, key_agreement=False, key_cert_sign=True,
                    crl_sign=True, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
        else:
            b = b.add_extension(
                x509.KeyUsage(
                    digital_signature=True, content_commitment=False, key_encipherment=True,
                    data_encipherment=False, key_agreement=False, key_cert_sign=False,
                    crl_sign=False, encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
        if sans:
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        if eku:
            b = b.add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        if isinstance(issuer_key, ed25519.Ed25519PrivateKey):
            c = b.sign(issuer_key, None)
        else:
            c = b.sign(issuer_key, hashes.SHA256())
        return c.public_bytes(serialization.Encoding.PEM).decode()

    ca_name = name("regate test CA", org="regate", country="NL")
    m["ca_cert"] = cert(priv["ca"], ca_name, ca_name, priv["ca"], 1, ca=True)
    m["ca2_cert"] = cert(priv["ca2"], name("other CA"), name("other CA"), priv["ca2"], 2, ca=True)
    m["leaf_cert"] = cert(
        priv["ec256"],
        name("svc.example.com", org="regate", ou="payments"),
        ca_name,
        priv["ca"],
        0x1234567890ABCDEF1234,
        sans=[
            x509.DNSName("svc.example.com"),
            x509.DNSName("*.svc.example.com"),
            x509.UniformResourceIdentifier("spiffe://example.org/ns/default/sa/svc"),
            x509.RFC822Name("ops@example.com"),
            x509.IPAddress(ipaddress.ip_address("10.1.2.3")),
            x509.IPAddress(ipaddress.ip_address("2001:db8::1")),
        ],
        eku=[ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    m["rsa_cert"] = cert(priv["rsa"], name("rsa signer"), name("rsa signer"), priv["rsa"], 3)
    m["ec384_cert"] = cert(priv["ec384"], name("ec384 signer"), name("ec384 signer"), priv["ec384"], 4)
    m["ed25519_cert"] = cert(
        priv["ed25519"], name("ed25519 signer"), name("ed25519 signer"), priv["ed25519"], 5
    )
    for k in ("rsa", "rsa2", "ec256", "ec384", "ec521", "ed25519"):
        m[k + "_pub"] = pem_pub(priv[k])
        m[k + "_priv"] = pem_priv(priv[k])

    # JWKs of the public keys
    def jwk(k, **extra):
        pub = k.public_key()
        if isinstance(pub, rsa.RSAPublicKey):
            n = pub.public_numbers()
            d = {"kty": "RSA", "n": int_b64url(n.n), "e": int_b64url(n.e)}
        elif isinstance(pub, ec.EllipticCurvePublicKey):
            n = pub.public_numbers()
            crv, size = {256: ("P-256", 32), 384: ("P-384", 48), 521: ("P-521", 66)}[pub.curve.key_size]
            d = {"kty": "EC", "crv": crv, "x": int_b64url(n.x, size), "y": int_b64url(n.y, size)}
        else:
            raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            d = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        d.update(extra)
        return d

    m["rsa_jwk"] = json.dumps(jwk(priv["rsa"]))
    m["ec256_jwk"] = json.dumps(jwk(priv["ec256"]))
    m["ed25519_jwk"] = json.dumps(jwk(priv["ed25519"]))
    m["jwks"] = json.dumps(
        {
            "keys": [
                jwk(priv["rsa2"], kid="k-rsa2", alg="RS256", use="sig"),
                jwk(priv["rsa"], kid="k-rsa", alg="RS256", use="sig"),
                jwk(priv["ec256"], kid="k-ec", alg="ES256"),
                jwk(priv["ed25519"], kid="k-ed"),
            ]
        }
    )
    m["jwks_noalg"] = json.dumps({"keys": [jwk(priv["rsa2"], kid="a"), jwk(priv["rsa"], kid="b")]})
    m["jwks_oaep"] = json.dumps({"keys": [jwk(priv["rsa"], kid="k-rsa", alg="RSA-OAEP")]})
    m["jwks_wrongkid"] = json.dumps({"keys": [jwk(priv["rsa2"], kid="k-rsa", alg="RS256"), jwk(priv["rsa"], kid="x")]})

    m["hmac_secret"] = "s3cr3t-for-regate-tests"
    m["hmac_secret2"] = "another-secret"
    m["oct_jwk"] = json.dumps({"kty": "oct", "k": b64url(m["hmac_secret"].encode())})

    # ------------------------------------------------------------ tokens
    def sign(alg, key, signing_input):
        if alg.startswith("HS"):
            h = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
            return hmac.new(key.encode(), signing_input, h).digest()
        hs = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
        if alg.startswith("RS"):
            return key.sign(signing_input, padding.PKCS1v15(), hs[alg[2:]])
        if alg.startswith("PS"):
            h = hs[alg[2:]]
            return key.sign(signing_input, padding.PSS(mgf=padding.MGF1(h), salt_length=h.digest_size), h)
        if alg.startswith("ES"):
            der = key.sign(signing_input, ec.ECDSA(hs[alg[2:]]))
            r, s = decode_dss_signature(der)
            size = (key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        if alg == "EdDSA":
            return key.sign(signing_input)
        if alg == "none":
            return b""
        raise ValueError(alg)

    def token(alg, key, payload, header=None, raw_payload=None):
        h = {"alg": alg, "typ": "JWT"}
        if header is not None:
            h.update(header)
            h = {k: v for k, v in h.items() if v is not None}
        p = raw_payload if raw_payload is not None else cjson(payload)
        si = (b64url(cjson(h)) + "." + b64url(p)).encode()
        return si.decode() + "." + b64url(sign(alg, key, si))

    claims = {
        "iss": "https://issuer.example",
        "sub": "alice",
        "aud": "regate",
        "iat": 1700000000,
        "nbf": 1700000000,
        "exp": 1900000000,
        "roles": ["admin", "dev"],
        "nested": {"a": 1, "b": [True, None, 2.5]},
    }
    t = {}
    for alg, k in [
        ("RS256", "rsa"), ("RS384", "rsa"), ("RS512", "rsa"),
        ("PS256", "rsa"), ("PS384", "rsa"), ("PS512", "rsa"),
        ("ES256", "ec256"), ("ES384", "ec384"), ("ES512", "ec521"),
        ("EdDSA", "ed25519"),
    ]:
        t[alg] = token(alg, priv[k], claims)
    for alg in ("HS256", "HS384", "HS512"):
        t[alg] = token(alg, m["hmac_secret"], claims)
    t["RS256_rsa2"] = token("RS256", priv["rsa2"], claims)
    t["RS256_kid_rsa"] = token("RS256", priv["rsa"], claims, header={"kid": "k-rsa"})
    t["RS256_kid_unknown"] = token("RS256", priv["rsa"], claims, header={"kid": "nope"})
    t["ES256_kid_ec"] = token("ES256", priv["ec256"], claims, header={"kid": "k-ec"})
    t["EdDSA_kid_ed"] = token("EdDSA", priv["ed25519"], claims, header={"kid": "k-ed"})
    t["no_aud"] = token("RS256", priv["rsa"], {k: v for k, v in claims.items() if k != "aud"})
    t["aud_list"] = token("RS256", priv["rsa"], dict(claims, aud=["other", "regate"]))
    t["aud_number"] = token("RS256", priv["rsa"], dict(claims, aud=5))
    t["no_iss"] = token("RS256", priv["rsa"], {k: v for k, v in claims.items() if k != "iss"})
    t["no_times"] = token("HS256", m["hmac_secret"], {"sub": "bob", "aud": "regate"})
    t["no_times_no_aud"] = token("HS256", m["hmac_secret"], {"sub": "bob"})
    t["exp_string"] = token("HS256", m["hmac_secret"], dict(claims, exp="1900000000"))
    t["nbf_string"] = token("HS256", m["hmac_secret"], dict(claims, nbf="1700000000"))
    t["exp_float"] = token("HS256", m["hmac_secret"], dict(claims, exp=1800000000.5))
    t["array_payload"] = token("HS256", m["hmac_secret"], None, raw_payload=b"[1,2]")
    t["bad_json_payload"] = token("HS256", m["hmac_secret"], None, raw_payload=b"{not json")
    t["alg_none"] = token("none", None, claims)
    t["no_alg"] = token("HS256", m["hmac_secret"], claims, header={"alg": None})
    t["alg_number"] = token("HS256", m["hmac_secret"], claims, header={"alg": 256})
    t["crit_unknown"] = token("HS256", m["hmac_secret"], claims, header={"crit": ["foo"], "foo": 1})
    t["crit_known"] = token("HS256", m["hmac_secret"], claims, header={"crit": ["kid"], "kid": "x"})
    t["enc_header"] = token("HS256", m["hmac_secret"], claims, header={"enc": "A128GCM"})
    inner = token("HS256", m["hmac_secret"], claims)
    t["nested"] = token("HS256", m["hmac_secret"], None, header={"cty": "JWT"}, raw_payload=inner.encode())
    t["nested_quoted"] = token(
        "HS256", m["hmac_secret"], None, header={"cty": "JWT"}, raw_payload=json.dumps(inner).encode()
    )
    hp = t["HS256"].split(".")
    t["two_parts"] = hp[0] + "." + hp[1]
    t["four_parts"] = t["HS256"] + ".x"
    t["no_dots"] = "abcdef"
    t["bad_b64_header"] = "!!!." + hp[1] + "." + hp[2]
    t["bad_b64_sig"] = hp[0] + "." + hp[1] + ".a"
    t["bad_b64_payload"] = hp[0] + ".a." + hp[2]
    t["bad_json_header"] = b64url(b"{nope") + "." + hp[1] + "." + hp[2]
    t["padded"] = hp[0] + "." + hp[1] + "." + hp[2] + "=" * ((4 - len(hp[2]) % 4) % 4)
    t["tampered"] = hp[0] + "." + b64url(cjson(dict(claims, sub="mallory"))) + "." + hp[2]
    t["ES256_der_sig"] = t["ES256"].rsplit(".", 1)[0] + "." + b64url(
        priv["ec256"].sign(t["ES256"].rsplit(".", 1)[0].encode(), ec.ECDSA(hashes.SHA256()))
    )
    m["tokens"] = t
    return m


def generate_extra(m):
    """Certificates added after the first material: an intermediate CA, a leaf under it with
    AIA, CRL distribution points and key identifiers, and an expired leaf."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import AuthorityInformationAccessOID, ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key(m["ca_priv"].encode(), None) if "ca_priv" in m else None
    root_key = ec.generate_private_key(ec.SECP384R1())
    inter_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    del ca_key

    def nm(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def build(subject, issuer, key, issuer_key, serial, nb, na, ca, extra=()):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(serial).not_valid_before(nb).not_valid_after(na))
        b = b.add_extension(x509.BasicConstraints(ca=ca, path_length=0 if ca and serial == 11 else None), critical=True)
        b = b.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        for ext, crit in extra:
            b = b.add_extension(ext, critical=crit)
        h = hashes.SHA384() if isinstance(issuer_key.curve, ec.SECP384R1) else hashes.SHA256()
        return b.sign(issuer_key, h).public_bytes(serialization.Encoding.PEM).decode()

    nb = datetime.datetime(2020, 1, 1, tzinfo=datetime.timezone.utc)
    na = datetime.datetime(2049, 12, 31, tzinfo=datetime.timezone.utc)
    m["x_root"] = build(nm("x root"), nm("x root"), root_key, root_key, 10, nb, na, True)
    m["x_inter"] = build(nm("x intermediate"), nm("x root"), inter_key, root_key, 11, nb, na, True)
    aia = x509.AuthorityInformationAccess([
        x509.AccessDescription(AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier("http://ocsp.example.com")),
        x509.AccessDescription(AuthorityInformationAccessOID.CA_ISSUERS, x509.UniformResourceIdentifier("http://ca.example.com/inter.crt")),
    ])
    crl = x509.CRLDistributionPoints([x509.DistributionPoint(
        full_name=[x509.UniformResourceIdentifier("http://crl.example.com/x.crl")],
        relative_name=None, reasons=None, crl_issuer=None)])
    san = x509.SubjectAlternativeName([
        x509.DNSName("api.example.com"),
        x509.UniformResourceIdentifier("https://user@api.example.com:8443/a%20b?q=1#frag"),
        x509.UniformResourceIdentifier("urn:uuid:6e8bc430-9c3a-11d9-9669-0800200c9a66"),
    ])
    eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH,
                                 x509.ObjectIdentifier("1.2.3.4.5")])
    m["x_leaf"] = build(nm("api.example.com"), nm("x intermediate"), leaf_key, inter_key, 12, nb, na, False,
                        [(aia, False), (crl, False), (san, False), (eku, False)])
    m["x_leaf_client_only"] = build(nm("client"), nm("x intermediate"), leaf_key, inter_key, 13, nb, na, False,
                                    [(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)])
    m["x_leaf_expired"] = build(nm("old"), nm("x intermediate"), leaf_key, inter_key, 14, nb,
                                datetime.datetime(2021, 1, 1, tzinfo=datetime.timezone.utc), False)
    m["x_leaf_by_leaf"] = build(nm("sub"), nm("api.example.com"), inter_key, leaf_key, 15, nb, na, False)


def load_material():
    path = os.path.join(KEYS, "material.json")
    if os.path.exists(path):
        with open(path) as f:
            m = json.load(f)
        if "x_root" not in m:
            generate_extra(m)
            with open(path, "w") as f:
                json.dump(m, f, indent=2, sort_keys=True)
                f.write("\n")
            for k in ("x_root", "x_inter", "x_leaf", "x_leaf_client_only", "x_leaf_expired", "x_leaf_by_leaf"):
                with open(os.path.join(KEYS, k + ".pem"), "w") as f:
                    f.write(m[k])
    if not os.path.exists(path):
        os.makedirs(KEYS, exist_ok=True)
        m = generate()
        with open(path, "w") as f:
            json.dump(m, f, indent=2, sort_keys=True)
            f.write("\n")
        # The PEM files, for people and tools.
        for k, v in m.items():
            if isinstance(v, str) and v.startswith("-----BEGIN"):
                with open(os.path.join(KEYS, k + ".pem"), "w") as f:
                    f.write(v)
    with open(path) as f:
        return json.load(f)


# ---------------------------------------------------------------- the vectors


def cases(m):
    t = m["tokens"]
    T = 1800000000 * 10**9  # inside every token's [nbf, exp)
    sec = m["hmac_secret"]
    out = []

    def add(name, builtin, *args):
        args = list(args)
        # The tokens carry aud "regate"; OPA rejects a token with an aud claim unless the
        # constraints name it, so every decode_verify case but the aud/ ones names it.
        if (builtin == "io.jwt.decode_verify" and not name.startswith("decode_verify/aud/")
                and isinstance(args[1], dict) and ("cert" in args[1] or "secret" in args[1])
                and "aud" not in args[1]):
            args[1] = dict(args[1], aud="regate")
        out.append((name, builtin, args))

    # io.jwt.decode
    for k in ["RS256", "ES256", "EdDSA", "HS256", "nested", "nested_quoted", "array_payload",
              "bad_json_payload", "alg_none", "enc_header", "two_parts", "four_parts", "no_dots",
              "bad_b64_header", "bad_b64_sig", "bad_b64_payload", "bad_json_header", "padded",
              "crit_unknown", "no_alg"]:
        add("decode/" + k, "io.jwt.decode", t[k])
    add("decode/not_a_string", "io.jwt.decode", 5)

    # io.jwt.decode_verify
    dv = "io.jwt.decode_verify"
    for alg, cert in [("RS256", m["rsa_cert"]), ("RS384", m["rsa_pub"]), ("RS512", m["rsa_jwk"]),
                      ("PS256", m["rsa_cert"]), ("PS384", m["rsa_pub"]), ("PS512", m["rsa_jwk"]),
                      ("ES256", m["ec256_pub"]), ("ES384", m["ec384_cert"]), ("EdDSA", m["ed25519_pub"]),
                      ("ES256", m["leaf_cert"]), ("EdDSA", m["ed25519_cert"]), ("EdDSA", m["ed25519_jwk"]),
                      ("ES256", m["ec256_jwk"])]:
        add(f"decode_verify/{alg}/ok/{cert[:22].strip()}", dv, t[alg], {"cert": cert, "time": T})
    for alg in ("HS256", "HS384", "HS512"):
        add(f"decode_verify/{alg}/ok", dv, t[alg], {"secret": sec, "time": T})
    add("decode_verify/HS256/oct_jwk_cert", dv, t["HS256"], {"cert": m["oct_jwk"], "time": T})
    add("decode_verify/HS256/wrong_secret", dv, t["HS256"], {"secret": m["hmac_secret2"], "time": T})
    add("decode_verify/RS256/with_secret", dv, t["RS256"], {"secret": sec, "time": T})
    add("decode_verify/HS256/with_cert", dv, t["HS256"], {"cert": m["rsa_pub"], "time": T})
    add("decode_verify/RS256/wrong_key", dv, t["RS256_rsa2"], {"cert": m["rsa_pub"], "time": T})
    add("decode_verify/RS256/ec_key", dv, t["RS256"], {"cert": m["ec256_pub"], "time": T})
    add("decode_verify/ES256/rsa_key", dv, t["ES256"], {"cert": m["rsa_pub"], "time": T})
    add("decode_verify/ES384/p256_key", dv, t["ES384"], {"cert": m["ec256_pub"], "time": T})
    add("decode_verify/ES256/der_signature", dv, t["ES256_der_sig"], {"cert": m["ec256_pub"], "time": T})
    add("decode_verify/tampered", dv, t["tampered"], {"secret": sec, "time": T})
    add("decode_verify/padded_sig", dv, t["padded"], {"secret": sec, "time": T})
    # JWKS
    for k in ("RS256", "RS256_kid_rsa", "RS256_kid_unknown", "ES256_kid_ec", "EdDSA_kid_ed", "ES256",
              "EdDSA", "RS256_rsa2", "PS256", "HS256"):
        add(f"decode_verify/jwks/{k}", dv, t[k], {"cert": m["jwks"], "time": T})
    add("decode_verify/jwks_noalg/RS256", dv, t["RS256"], {"cert": m["jwks_noalg"], "time": T})
    add("decode_verify/jwks_oaep/RS256", dv, t["RS256_kid_rsa"], {"cert": m["jwks_oaep"], "time": T})
    add("decode_verify/jwks_wrongkid/RS256", dv, t["RS256_kid_rsa"], {"cert": m["jwks_wrongkid"], "time": T})
    add("decode_verify/jwks_empty", dv, t["RS256"], {"cert": '{"keys": []}', "time": T})
    # time
    for name, tm in [("before_nbf", 1699999999 * 10**9), ("at_nbf", 1700000000 * 10**9),
                     ("at_exp", 1900000000 * 10**9), ("just_before_exp", 1900000000 * 10**9 - 1),
                     ("after_exp", 1900000001 * 10**9), ("zero", 0), ("float", 1.8e18)]:
        add(f"decode_verify/time/{name}", dv, t["HS256"], {"secret": sec, "time": tm})
    add("decode_verify/time/exp_float_before", dv, t["exp_float"], {"secret": sec, "time": 1800000000 * 10**9})
    add("decode_verify/time/exp_float_at", dv, t["exp_float"], {"secret": sec, "time": 1800000000500000000})
    add("decode_verify/time/exp_float_after", dv, t["exp_float"], {"secret": sec, "time": 1800000001 * 10**9})
    add("decode_verify/time/negative", dv, t["HS256"], {"secret": sec, "time": -1})
    add("decode_verify/time/string", dv, t["HS256"], {"secret": sec, "time": "now"})
    add("decode_verify/no_times_wallclock", dv, t["no_times"], {"secret": sec, "aud": "regate"})
    add("decode_verify/exp_string", dv, t["exp_string"], {"secret": sec, "time": T})
    add("decode_verify/nbf_string", dv, t["nbf_string"], {"secret": sec, "time": T})
    # iss / aud
    add("decode_verify/iss/ok", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T, "iss": "https://issuer.example"})
    add("decode_verify/iss/wrong", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T, "iss": "https://evil"})
    add("decode_verify/iss/missing_claim", dv, t["no_iss"], {"cert": m["rsa_pub"], "time": T, "iss": "https://issuer.example"})
    add("decode_verify/iss/not_string", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T, "iss": 5})
    add("decode_verify/aud/ok", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T, "aud": "regate"})
    add("decode_verify/aud/wrong", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T, "aud": "other-svc"})
    add("decode_verify/aud/no_constraint", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T})
    add("decode_verify/aud/empty_constraint", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T, "aud": ""})
    add("decode_verify/aud/list_ok", dv, t["aud_list"], {"cert": m["rsa_pub"], "time": T, "aud": "regate"})
    add("decode_verify/aud/list_wrong", dv, t["aud_list"], {"cert": m["rsa_pub"], "time": T, "aud": "x"})
    add("decode_verify/aud/number", dv, t["aud_number"], {"cert": m["rsa_pub"], "time": T, "aud": "5"})
    add("decode_verify/aud/no_claim_with_constraint", dv, t["no_aud"], {"cert": m["rsa_pub"], "time": T, "aud": "regate"})
    add("decode_verify/aud/no_claim_no_constraint", dv, t["no_aud"], {"cert": m["rsa_pub"], "time": T})
    add("decode_verify/aud/not_string", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T, "aud": ["regate"]})
    # alg
    add("decode_verify/alg/ok", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T, "alg": "RS256"})
    add("decode_verify/alg/mismatch", dv, t["RS256"], {"cert": m["rsa_pub"], "time": T, "alg": "RS512"})
    add("decode_verify/alg/ps_vs_rs", dv, t["PS256"], {"cert": m["rsa_pub"], "time": T, "alg": "RS256"})
    add("decode_verify/alg_none/secret", dv, t["alg_none"], {"secret": sec, "time": T})
    add("decode_verify/alg_none/cert", dv, t["alg_none"], {"cert": m["rsa_pub"], "time": T})
    add("decode_verify/no_alg", dv, t["no_alg"], {"secret": sec, "time": T})
    add("decode_verify/alg_number", dv, t["alg_number"], {"secret": sec, "time": T})
    add("decode_verify/crit_unknown", dv, t["crit_unknown"], {"secret": sec, "time": T})
    add("decode_verify/crit_known", dv, t["crit_known"], {"secret": sec, "time": T})
    add("decode_verify/nested", dv, t["nested"], {"secret": sec, "time": T, "aud": "regate"})
    add("decode_verify/enc_header", dv, t["enc_header"], {"secret": sec, "time": T})
    # malformed tokens
    for k in ("two_parts", "four_parts", "no_dots", "bad_b64_header", "bad_b64_sig", "bad_b64_payload",
              "bad_json_header", "bad_json_payload", "array_payload"):
        add(f"decode_verify/malformed/{k}", dv, t[k], {"secret": sec, "time": T})
    add("decode_verify/malformed/not_a_string", dv, 5, {"secret": sec, "time": T})
    # bad constraints
    add("decode_verify/constraints/unknown_key", dv, t["HS256"], {"secret": sec, "time": T, "foo": 1})
    add("decode_verify/constraints/no_key", dv, t["HS256"], {"time": T})
    add("decode_verify/constraints/empty", dv, t["HS256"], {})
    add("decode_verify/constraints/empty_secret", dv, t["HS256"], {"secret": "", "time": T})
    add("decode_verify/constraints/cert_and_secret", dv, t["HS256"], {"secret": sec, "cert": m["rsa_pub"], "time": T})
    add("decode_verify/constraints/cert_not_string", dv, t["RS256"], {"cert": 5, "time": T})
    add("decode_verify/constraints/secret_not_string", dv, t["HS256"], {"secret": 5, "time": T})
    add("decode_verify/constraints/alg_not_string", dv, t["HS256"], {"secret": sec, "alg": 5, "time": T})
    add("decode_verify/constraints/not_object", dv, t["HS256"], "secret")
    add("decode_verify/constraints/invalid_pem", dv, t["RS256"],
        {"cert": "-----BEGIN CERTIFICATE-----\nMIIBnotreallyDER\n-----END CERTIFICATE-----\n", "time": T})
    add("decode_verify/constraints/private_key_pem", dv, t["RS256"], {"cert": m["rsa_priv"], "time": T})
    add("decode_verify/constraints/pem_trailing_data", dv, t["RS256"], {"cert": m["rsa_pub"] + "junk", "time": T})
    add("decode_verify/constraints/pem_two_blocks", dv, t["RS256"], {"cert": m["rsa_pub"] + m["rsa_pub"], "time": T})
    add("decode_verify/constraints/pem_leading_text", dv, t["RS256"], {"cert": "hello\n" + m["rsa_pub"], "time": T})
    add("decode_verify/constraints/pem_no_final_newline", dv, t["RS256"], {"cert": m["rsa_pub"].rstrip("\n"), "time": T})
    add("decode_verify/constraints/pem_crlf", dv, t["RS256"], {"cert": m["rsa_pub"].replace("\n", "\r\n"), "time": T})
    add("decode_verify/constraints/not_pem_not_json", dv, t["RS256"], {"cert": "garbage", "time": T})
    add("decode_verify/constraints/jwk_missing_n", dv, t["RS256"], {"cert": '{"kty":"RSA","e":"AQAB"}', "time": T})
    add("decode_verify/constraints/jwk_bad_kty", dv, t["RS256"], {"cert": '{"kty":"XYZ"}', "time": T})

    # io.jwt.verify_*
    fams = {
        "rs256": ("RS256", m["rsa_pub"]), "rs384": ("RS384", m["rsa_cert"]), "rs512": ("RS512", m["rsa_jwk"]),
        "ps256": ("PS256", m["rsa_pub"]), "ps384": ("PS384", m["rsa_cert"]), "ps512": ("PS512", m["rsa_jwk"]),
        "es256": ("ES256", m["ec256_pub"]), "es384": ("ES384", m["ec384_cert"]), "es512": ("ES512", m["ec521_pub"]),
        "eddsa": ("EdDSA", m["ed25519_pub"]),
    }
    for short, (alg, key) in fams.items():
        b = "io.jwt.verify_" + short
        add(f"verify_{short}/ok", b, t[alg], key)
        add(f"verify_{short}/wrong_key_type", b, t[alg], m["rsa_pub"] if not alg.startswith(("RS", "PS")) else m["ec256_pub"])
        add(f"verify_{short}/wrong_key", b, t[alg], m["rsa2_pub"] if alg.startswith(("RS", "PS")) else m["ec384_pub"] if alg != "ES384" else m["ec256_pub"])
        add(f"verify_{short}/jwks", b, t[alg], m["jwks"])
        add(f"verify_{short}/tampered_sig", b, t[alg].rsplit(".", 1)[0] + "." + t["HS256"].rsplit(".", 1)[1], key)
        add(f"verify_{short}/two_parts", b, t["two_parts"], key)
        add(f"verify_{short}/bad_key", b, t[alg], "garbage")
        add(f"verify_{short}/bad_sig_b64", b, t[alg].rsplit(".", 1)[0] + ".a", key)
    add("verify_rs256/cert", "io.jwt.verify_rs256", t["RS256"], m["rsa_cert"])
    add("verify_rs256/jwk", "io.jwt.verify_rs256", t["RS256"], m["rsa_jwk"])
    add("verify_rs256/jwks_kid", "io.jwt.verify_rs256", t["RS256_kid_rsa"], m["jwks"])
    add("verify_rs256/jwks_wrongkid", "io.jwt.verify_rs256", t["RS256_kid_rsa"], m["jwks_wrongkid"])
    add("verify_rs256/jwks_noalg", "io.jwt.verify_rs256", t["RS256"], m["jwks_noalg"])
    add("verify_rs256/ps_token", "io.jwt.verify_rs256", t["PS256"], m["rsa_pub"])
    add("verify_rs256/rs384_token", "io.jwt.verify_rs256", t["RS384"], m["rsa_pub"])
    add("verify_rs256/private_key", "io.jwt.verify_rs256", t["RS256"], m["rsa_priv"])
    add("verify_rs256/bad_header_still_checked", "io.jwt.verify_rs256", t["bad_json_header"], m["rsa_pub"])
    add("verify_es256/leaf_cert", "io.jwt.verify_es256", t["ES256"], m["leaf_cert"])
    add("verify_es256/der_sig", "io.jwt.verify_es256", t["ES256_der_sig"], m["ec256_pub"])
    add("verify_es256/jwk", "io.jwt.verify_es256", t["ES256"], m["ec256_jwk"])
    add("verify_eddsa/jwk", "io.jwt.verify_eddsa", t["EdDSA"], m["ed25519_jwk"])
    add("verify_eddsa/cert", "io.jwt.verify_eddsa", t["EdDSA"], m["ed25519_cert"])
    for short, alg in (("hs256", "HS256"), ("hs384", "HS384"), ("hs512", "HS512")):
        b = "io.jwt.verify_" + short
        add(f"verify_{short}/ok", b, t[alg], sec)
        add(f"verify_{short}/wrong_secret", b, t[alg], m["hmac_secret2"])
        add(f"verify_{short}/empty_secret", b, t[alg], "")
        add(f"verify_{short}/other_alg_token", b, t["HS256" if alg != "HS256" else "HS512"], sec)
        add(f"verify_{short}/two_parts", b, t["two_parts"], sec)
        add(f"verify_{short}/bad_sig_b64", b, t[alg].rsplit(".", 1)[0] + ".a", sec)
        add(f"verify_{short}/secret_not_string", b, t[alg], 5)
    add("verify_hs256/tampered", "io.jwt.verify_hs256", t["tampered"], sec)
    add("verify_hs256/bad_header_ignored", "io.jwt.verify_hs256", t["bad_json_header"], sec)
    add("verify_hs256/padded", "io.jwt.verify_hs256", t["padded"], sec)

    # crypto digests and HMACs
    for s in ("", "abc", "héllo wörld ✓", "a" * 200):
        short = s[:12]
        add(f"sha256/{short}", "crypto.sha256", s)
        add(f"sha1/{short}", "crypto.sha1", s)
        add(f"md5/{short}", "crypto.md5", s)
        for h in ("sha256", "sha512", "sha1", "md5"):
            add(f"hmac.{h}/{short}", "crypto.hmac." + h, s, "key")
            add(f"hmac.{h}/longkey/{short}", "crypto.hmac." + h, s, "k" * 150)
    add("md5/not_string", "crypto.md5", 5)
    add("hmac.equal/same", "crypto.hmac.equal", "abc", "abc")
    add("hmac.equal/different", "crypto.hmac.equal", "abc", "abd")
    add("hmac.equal/length", "crypto.hmac.equal", "abc", "abcd")
    add("hmac.equal/empty", "crypto.hmac.equal", "", "")

    # x509
    leaf_der = pem_to_der(m["leaf_cert"])
    chain = m["leaf_cert"] + m["ca_cert"]
    pc = "crypto.x509.parse_certificates"
    add("x509.parse/leaf_pem", pc, m["leaf_cert"])
    add("x509.parse/chain_pem", pc, chain)
    add("x509.parse/rsa_pem", pc, m["rsa_cert"])
    add("x509.parse/ed25519_pem", pc, m["ed25519_cert"])
    add("x509.parse/ec384_pem", pc, m["ec384_cert"])
    add("x509.parse/b64_der", pc, base64.b64encode(leaf_der).decode())
    add("x509.parse/b64_pem", pc, base64.b64encode(chain.encode()).decode())
    add("x509.parse/b64_der_concat", pc, base64.b64encode(leaf_der + pem_to_der(m["ca_cert"])).decode())
    add("x509.parse/garbage", pc, "garbage")
    add("x509.parse/empty", pc, "")
    add("x509.parse/invalid_pem", pc, "-----BEGIN CERTIFICATE-----\nMIIBnotreallyDER\n-----END CERTIFICATE-----\n")
    add("x509.parse/public_key_pem", pc, m["rsa_pub"])
    add("x509.parse/not_string", pc, 5)
    add("x509.parse/x_leaf", pc, m["x_leaf"])
    add("x509.parse/x_chain", pc, m["x_root"] + m["x_inter"] + m["x_leaf"])
    pv = "crypto.x509.parse_and_verify_certificates"
    add("x509.verify/three_chain", pv, m["x_root"] + m["x_inter"] + m["x_leaf"])
    add("x509.verify/three_chain_missing_inter", pv, m["x_root"] + m["x_leaf"])
    add("x509.verify/client_only_eku", pv, m["x_root"] + m["x_inter"] + m["x_leaf_client_only"])
    add("x509.verify/expired_leaf", pv, m["x_root"] + m["x_inter"] + m["x_leaf_expired"])
    add("x509.verify/issued_by_non_ca_leaf", pv, m["x_root"] + m["x_inter"] + m["x_leaf"] + m["x_leaf_by_leaf"])
    add("x509.verify/root_and_inter_only", pv, m["x_root"] + m["x_inter"])
    add("x509.verify/chain", pv, chain)
    add("x509.verify/root_first", pv, m["ca_cert"] + m["leaf_cert"])
    add("x509.verify/root_first_wrong_root", pv, m["ca2_cert"] + m["leaf_cert"])
    add("x509.verify/root_first_b64", pv, base64.b64encode((m["ca_cert"] + m["leaf_cert"]).encode()).decode())
    add("x509.verify/wrong_root", pv, m["leaf_cert"] + m["ca2_cert"])
    add("x509.verify/single", pv, m["leaf_cert"])
    add("x509.verify/root_only", pv, m["ca_cert"])
    add("x509.verify/garbage", pv, "garbage")
    add("x509.verify/b64_chain", pv, base64.b64encode(chain.encode()).decode())
    return out


def pem_to_der(pem):
    body = "".join(line for line in pem.strip().splitlines() if not line.startswith("-----"))
    return base64.b64decode(body)


def record():
    from opa_bindings import OpaEngine, OpaError

    m = load_material()
    engine = OpaEngine()
    engine.add_policy("vectors.rego", "package vectors\n")
    vectors = []
    for name, builtin, args in cases(m):
        call = builtin + "(" + ", ".join(f"input.args[{i}]" for i in range(len(args))) + ")"
        v = {"name": name, "builtin": builtin, "args": args, "value": None, "error": None}
        try:
            rs = engine.eval_query("x := " + call, {"args": args})
            if not rs:
                v["error"] = "undefined"
            else:
                v["value"] = rs[0]["x"]
        except OpaError as e:
            msg = e.message
            marker = "eval_builtin_error: " + builtin + ": "
            if marker in msg:
                msg = msg.split(marker, 1)[1]
            v["error"] = msg
        vectors.append(v)
    names = [v["name"] for v in vectors]
    dup = {n for n in names if names.count(n) > 1}
    if dup:
        sys.exit(f"duplicate vector names: {sorted(dup)}")
    with open(os.path.join(HERE, "vectors.json"), "w") as f:
        json.dump(vectors, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    print(f"{len(vectors)} vectors, {sum(1 for v in vectors if v['error'])} errors")


if __name__ == "__main__":
    record()
