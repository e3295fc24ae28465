"""Fixed test keys, certificates and JWTs for the corpus.

Keys are generated once into ../keys/ and then only read, so that the
committed corpus is stable.  They are test material and protect nothing.
Signed tokens are cached in ../keys/tokens.json, keyed by name together with
a digest of what was signed: ECDSA and RSA-PSS signatures are randomised, so
re-signing on every run would churn the committed cases.
"""

import base64
import datetime
import hashlib
import hmac
import json
import os

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

KEYS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "keys")
TOKENS_FILE = os.path.join(KEYS_DIR, "tokens.json")

NOT_BEFORE = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
NOT_AFTER = datetime.datetime(2100, 1, 1, tzinfo=datetime.timezone.utc)

HS_SECRETS = {"HS256": "secret", "HS384": "corpus-hs384-secret", "HS512": "corpus-hs512-secret"}


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _path(name):
    return os.path.join(KEYS_DIR, name)


def _read(name):
    with open(_path(name), "rb") as f:
        return f.read()


def _write(name, data):
    os.makedirs(KEYS_DIR, exist_ok=True)
    with open(_path(name), "wb") as f:
        f.write(data)


def _pem_private(key):
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _pem_public(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo)


def _cert(subject_cn, key, issuer_cn, issuer_key, serial, ca=False, uri=None, dns=None):
    b = (x509.CertificateBuilder()
         .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "regate corpus"),
                                  x509.NameAttribute(NameOID.COMMON_NAME, subject_cn)]))
         .issuer_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "regate corpus"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, issuer_cn)]))
         .public_key(key.public_key())
         .serial_number(serial)
         .not_valid_before(NOT_BEFORE)
         .not_valid_after(NOT_AFTER)
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                          key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, key_cert_sign=True, crl_sign=True,
                                          encipher_only=False, decipher_only=False), critical=True)
    sans = [x509.UniformResourceIdentifier(u) for u in (uri or [])]
    sans += [x509.DNSName(d) for d in (dns or [])]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _generate():
    """Create every key and certificate once (skipped when keys/ exists)."""
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ec256 = ec.generate_private_key(ec.SECP256R1())
    ec384 = ec.generate_private_key(ec.SECP384R1())
    ed = ed25519.Ed25519PrivateKey.generate()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    for name, key in (("rsa", rsa_key), ("ec256", ec256), ("ec384", ec384), ("ed25519", ed),
                      ("ca", ca_key), ("leaf", leaf_key), ("rogue", rogue_key)):
        _write(name + ".key.pem", _pem_private(key))
        _write(name + ".pub.pem", _pem_public(key))
    _write("rsa.cert.pem", _cert("corpus jwt issuer", rsa_key, "corpus jwt issuer", rsa_key, 1001))
    _write("ca.cert.pem", _cert("corpus ca", ca_key, "corpus ca", ca_key, 2001, ca=True))
    _write("leaf.cert.pem", _cert("summarizer", leaf_key, "corpus ca", ca_key, 2002,
                                  uri=["spiffe://example.org/ns/agents/sa/summarizer"],
                                  dns=["summarizer.agents.svc"]))
    _write("rogue.cert.pem", _cert("summarizer", rogue_key, "corpus ca", rogue_key, 2003,
                                   uri=["spiffe://example.org/ns/agents/sa/summarizer"]))


class _Keys:
    def __init__(self):
        if not os.path.exists(_path("rsa.key.pem")):
            _generate()
        load = serialization.load_pem_private_key
        self.rsa = load(_read("rsa.key.pem"), None)
        self.ec256 = load(_read("ec256.key.pem"), None)
        self.ec384 = load(_read("ec384.key.pem"), None)
        self.ed25519 = load(_read("ed25519.key.pem"), None)
        self.pem = {n: _read(n).decode() for n in os.listdir(KEYS_DIR) if n.endswith(".pem")
                    and ".key." not in n}

    def jwk(self, which, kid=None):
        """Public JWK (as a dict) for 'rsa', 'ec256', 'ec384' or 'ed25519'."""
        key = getattr(self, which).public_key()
        if which == "rsa":
            n = key.public_numbers()
            jwk = {"kty": "RSA", "n": b64url(n.n.to_bytes((n.n.bit_length() + 7) // 8, "big")),
                   "e": b64url(n.e.to_bytes(3, "big"))}
        elif which.startswith("ec"):
            n = key.public_numbers()
            size = 32 if which == "ec256" else 48
            jwk = {"kty": "EC", "crv": "P-256" if size == 32 else "P-384",
                   "x": b64url(n.x.to_bytes(size, "big")), "y": b64url(n.y.to_bytes(size, "big"))}
        else:
            raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64url(raw)}
        if kid:
            jwk["kid"] = kid
        return jwk


KEYS = _Keys()


def _sign(alg, signing_input):
    if alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        return hmac.new(HS_SECRETS[alg].encode(), signing_input, digest).digest()
    h = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}[alg[2:]] \
        if alg != "EdDSA" else None
    if alg.startswith("RS"):
        return KEYS.rsa.sign(signing_input, padding.PKCS1v15(), h)
    if alg.startswith("PS"):
        return KEYS.rsa.sign(signing_input, padding.PSS(mgf=padding.MGF1(h),
                                                        salt_length=h.digest_size), h)
    if alg.startswith("ES"):
        key, size = (KEYS.ec256, 32) if alg == "ES256" else (KEYS.ec384, 48)
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(h)))
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    if alg == "EdDSA":
        return KEYS.ed25519.sign(signing_input)
    raise ValueError(alg)


def _load_cache():
    if os.path.exists(TOKENS_FILE):
        with open(TOKENS_FILE, encoding="utf-8") as f:
            return json.load(f)
    return {}


_CACHE = _load_cache()


def token(name, alg, claims, header_extra=None):
    """A signed compact JWT; `name` keys the cache in keys/tokens.json."""
    header = {"alg": alg, "typ": "JWT"}
    header.update(header_extra or {})
    signing_input = (b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())
                     + "." + b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()))
    digest = hashlib.sha256(signing_input.encode()).hexdigest()
    hit = _CACHE.get(name)
    if hit and hit["signed"] == digest:
        return hit["token"]
    tok = signing_input + "." + b64url(_sign(alg, signing_input.encode()))
    _CACHE[name] = {"signed": digest, "token": tok}
    with open(TOKENS_FILE, "w", encoding="utf-8") as f:
        f.write(json.dumps(_CACHE, sort_keys=True, indent=2) + "\n")
    return tok


def unsigned(claims, alg="none"):
    """An `alg: none` token (empty signature)."""
    header = {"alg": alg, "typ": "JWT"}
    return (b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
            + b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()) + ".")


def tamper(tok):
    """Same header and claims, corrupted signature."""
    head, payload, sig = tok.split(".")
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    return ".".join([head, payload, flipped])
