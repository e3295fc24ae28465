//! OPA's `crypto.*` builtins: digests, HMACs and X.509 certificate parsing, plus the
//! Go-compatible base64, PEM and DER helpers that `jwt` shares.
//!
//! `crypto.x509.parse_certificates` gives what OPA gives: Go's `x509.Certificate` marshalled
//! to JSON, with OPA's extra `URIStrings`. Every field is present with Go's names; the ones
//! filled from the certificate are listed in [`cert_value`]. Name constraints and certificate
//! policies are always `null`/`false`/`0` here (Go would fill them when a certificate has
//! those extensions); `Extensions` lists them all, raw, as Go does.

use std::collections::BTreeMap;

use regorus::Value;
use ring::{digest, hmac, signature};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::x509::{SubjectPublicKeyInfo, X509Name};

use super::type_name;

/// Every builtin this module adds: (OPA name, arity, function).
pub const BUILTINS: &[(&str, u8, super::Builtin)] = &[
    ("crypto.sha256", 1, sha256),
    ("crypto.sha1", 1, sha1),
    ("crypto.md5", 1, md5),
    ("crypto.hmac.sha256", 2, hmac_sha256),
    ("crypto.hmac.sha512", 2, hmac_sha512),
    ("crypto.hmac.sha1", 2, hmac_sha1),
    ("crypto.hmac.md5", 2, hmac_md5),
    ("crypto.hmac.equal", 2, hmac_equal),
    ("crypto.x509.parse_certificates", 1, parse_certificates),
    (
        "crypto.x509.parse_and_verify_certificates",
        1,
        parse_and_verify_certificates,
    ),
];

// ---------------------------------------------------------------- operands

/// OPA's type error for a non-string operand (`pos` counts from 1).
pub(crate) fn string_operand<'a>(
    args: &'a [Value],
    pos: usize,
    name: &str,
) -> Result<&'a str, String> {
    match args.get(pos - 1) {
        Some(Value::String(s)) => Ok(s),
        Some(v) => Err(format!(
            "{name}: operand {pos} must be string but got {}",
            type_name(v)
        )),
        None => Err(format!("{name}: missing operand {pos}")),
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

// ---------------------------------------------------------------- base64, as Go's encoding/base64

const STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Go's padded, non-strict decoding (`base64.StdEncoding` / `URLEncoding`): `\r` and `\n`
/// are skipped, padding is required, trailing bits are ignored. The error is Go's message.
fn go_b64_decode(input: &[u8], alphabet: &[u8; 64]) -> Result<Vec<u8>, String> {
    let mut table = [255u8; 256];
    for (i, c) in alphabet.iter().enumerate() {
        table[usize::from(*c)] = i as u8;
    }
    let err = |at: usize| format!("illegal base64 data at input byte {at}");
    let mut out = Vec::with_capacity(input.len() / 4 * 3);
    let mut quantum = [0u8; 4];
    let mut n = 0usize;
    let mut i = 0usize;
    while i < input.len() {
        let c = input[i];
        if c == b'\r' || c == b'\n' {
            i += 1;
            continue;
        }
        if c == b'=' {
            // Padding: allowed as the 3rd or 4th character of the last quantum only.
            if n < 2 {
                return Err(err(i));
            }
            let mut j = i + 1;
            let skip_nl = |mut j: usize| {
                while j < input.len() && (input[j] == b'\r' || input[j] == b'\n') {
                    j += 1;
                }
                j
            };
            if n == 2 {
                j = skip_nl(j);
                if j >= input.len() || input[j] != b'=' {
                    return Err(err(if j >= input.len() { input.len() } else { j }));
                }
                j += 1;
            }
            j = skip_nl(j);
            if j < input.len() {
                return Err(err(j));
            }
            let v = (u32::from(quantum[0]) << 18)
                | (u32::from(quantum[1]) << 12)
                | (u32::from(quantum[2]) << 6);
            out.push((v >> 16) as u8);
            if n == 3 {
                out.push((v >> 8) as u8);
            }
            return Ok(out);
        }
        let d = table[usize::from(c)];
        if d == 255 {
            return Err(err(i));
        }
        quantum[n] = d;
        n += 1;
        if n == 4 {
            let v = (u32::from(quantum[0]) << 18)
                | (u32::from(quantum[1]) << 12)
                | (u32::from(quantum[2]) << 6)
                | u32::from(quantum[3]);
            out.extend_from_slice(&[(v >> 16) as u8, (v >> 8) as u8, v as u8]);
            n = 0;
        }
        i += 1;
    }
    if n != 0 {
        // Go reports the position where the incomplete quantum began... approximately.
        return Err(err(input.len().saturating_sub(n)));
    }
    Ok(out)
}

pub(crate) fn std_b64_decode(s: &[u8]) -> Result<Vec<u8>, String> {
    go_b64_decode(s, STD)
}

pub fn b64_encode(bytes: &[u8], alphabet_url: bool, pad: bool) -> String {
    let alphabet = if alphabet_url { URL } else { STD };
    let mut s = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let v = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for k in 0..=chunk.len() {
            s.push(alphabet[((v >> (18 - 6 * k)) & 63) as usize] as char);
        }
        if pad {
            for _ in chunk.len()..3 {
                s.push('=');
            }
        }
    }
    s
}

/// OPA's `base64url.decode`: unpadded input is padded first (RFC 7515 appendix C).
pub(crate) fn b64url_decode_opa(s: &str) -> Result<Vec<u8>, String> {
    let mut padded = s.to_string();
    if !s.ends_with('=') {
        match s.len() % 4 {
            0 => {}
            2 => padded.push_str("=="),
            3 => padded.push('='),
            _ => return Err(format!("illegal base64url string: {s}")),
        }
    }
    go_b64_decode(padded.as_bytes(), URL)
}

// ---------------------------------------------------------------- PEM, as Go's encoding/pem

pub(crate) struct PemBlock {
    pub kind: String,
    pub bytes: Vec<u8>,
}

fn get_line(data: &[u8]) -> (&[u8], &[u8]) {
    let (line, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    let mut end = line.len();
    while end > 0 && matches!(line[end - 1], b' ' | b'\t' | b'\r') {
        end -= 1;
    }
    (&line[..end], rest)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Go's `pem.Decode`: the first PEM block and the rest, or `None` (and all of `data`).
pub(crate) fn pem_decode(data: &[u8]) -> (Option<PemBlock>, &[u8]) {
    const START: &[u8] = b"\n-----BEGIN ";
    const END: &[u8] = b"\n-----END ";
    const DASHES: &[u8] = b"-----";
    let mut rest = data;
    loop {
        if rest.starts_with(&START[1..]) {
            rest = &rest[START.len() - 1..];
        } else if let Some(i) = find(rest, START) {
            rest = &rest[i + START.len()..];
        } else {
            return (None, data);
        }
        let (type_line, after) = get_line(rest);
        rest = after;
        if !type_line.ends_with(DASHES) {
            continue;
        }
        let kind = &type_line[..type_line.len() - DASHES.len()];
        let mut headers = 0usize;
        let mut eof = false;
        loop {
            if rest.is_empty() {
                eof = true;
                break;
            }
            let (line, next) = get_line(rest);
            if !line.contains(&b':') {
                break;
            }
            headers += 1;
            rest = next;
        }
        if eof {
            return (None, data);
        }
        let (end_index, trailer_index) = if headers == 0 && rest.starts_with(&END[1..]) {
            (0usize, END.len() - 1)
        } else {
            match find(rest, END) {
                Some(i) => (i, i + END.len()),
                None => continue,
            }
        };
        let trailer = &rest[trailer_index..];
        let trailer_len = kind.len() + DASHES.len();
        if trailer.len() < trailer_len {
            continue;
        }
        let rest_of_end_line = &trailer[trailer_len..];
        let trailer = &trailer[..trailer_len];
        if !trailer.starts_with(kind) || !trailer.ends_with(DASHES) {
            continue;
        }
        if !get_line(rest_of_end_line).0.is_empty() {
            continue;
        }
        let body: Vec<u8> = rest[..end_index]
            .iter()
            .copied()
            .filter(|b| *b != b' ' && *b != b'\t')
            .collect();
        let Ok(bytes) = std_b64_decode(&body) else {
            continue;
        };
        let (_, after) = get_line(&rest[end_index + END.len() - 1..]);
        return (
            Some(PemBlock {
                kind: String::from_utf8_lossy(kind).into_owned(),
                bytes,
            }),
            after,
        );
    }
}

// ---------------------------------------------------------------- DER, the little we read by hand

/// One DER TLV: (tag, content, rest).
pub(crate) fn der_tlv(data: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *data.first()?;
    let first = *data.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*data.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    if end > data.len() {
        return None;
    }
    Some((tag, &data[hdr..end], &data[end..]))
}

/// The arcs of an OID's content octets.
pub(crate) fn oid_arcs(content: &[u8]) -> Vec<u64> {
    let mut arcs = Vec::new();
    let mut v: u64 = 0;
    for (i, b) in content.iter().enumerate() {
        v = (v << 7) | u64::from(b & 0x7f);
        if b & 0x80 == 0 {
            if arcs.is_empty() && i < content.len() {
                let (a, b2) = if v < 40 {
                    (0, v)
                } else if v < 80 {
                    (1, v - 40)
                } else {
                    (2, v - 80)
                };
                arcs.push(a);
                arcs.push(b2);
            } else {
                arcs.push(v);
            }
            v = 0;
        }
    }
    arcs
}

fn oid_value(arcs: &[u64]) -> Value {
    Value::from(arcs.iter().map(|a| Value::from(*a)).collect::<Vec<_>>())
}

/// A big-endian unsigned integer as a regorus number (exact, however large).
pub(crate) fn big_uint(bytes: &[u8]) -> Value {
    // Repeated division by 10^9 over base-2^32 limbs.
    let mut limbs: Vec<u32> = Vec::new();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    let bytes = &bytes[skip..];
    let lead = bytes.len() % 4;
    if lead > 0 {
        limbs.push(
            bytes[..lead]
                .iter()
                .fold(0u32, |a, b| (a << 8) | u32::from(*b)),
        );
    }
    for c in bytes[lead..].chunks(4) {
        limbs.push(c.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)));
    }
    let mut groups: Vec<u32> = Vec::new();
    while limbs.iter().any(|l| *l != 0) {
        let mut rem: u64 = 0;
        for l in limbs.iter_mut() {
            let cur = (rem << 32) | u64::from(*l);
            *l = (cur / 1_000_000_000) as u32;
            rem = cur % 1_000_000_000;
        }
        groups.push(rem as u32);
    }
    let mut s = match groups.last() {
        Some(g) => g.to_string(),
        None => "0".to_string(),
    };
    for g in groups.iter().rev().skip(1) {
        s.push_str(&format!("{g:09}"));
    }
    Value::from_numeric_string(&s).unwrap_or(Value::Null)
}

// ---------------------------------------------------------------- digests

fn digest_hex(
    args: &[Value],
    name: &str,
    alg: &'static digest::Algorithm,
) -> Result<Value, String> {
    let s = string_operand(args, 1, name)?;
    Ok(Value::from(hex(digest::digest(alg, s.as_bytes()).as_ref())))
}

fn sha256(args: &[Value]) -> Result<Value, String> {
    digest_hex(args, "crypto.sha256", &digest::SHA256)
}

fn sha1(args: &[Value]) -> Result<Value, String> {
    digest_hex(args, "crypto.sha1", &digest::SHA1_FOR_LEGACY_USE_ONLY)
}

fn md5(args: &[Value]) -> Result<Value, String> {
    let s = string_operand(args, 1, "crypto.md5")?;
    Ok(Value::from(hex(&md5_digest(s.as_bytes()))))
}

fn hmac_with(args: &[Value], name: &str, alg: hmac::Algorithm) -> Result<Value, String> {
    let msg = string_operand(args, 1, name)?;
    let key = string_operand(args, 2, name)?;
    let key = hmac::Key::new(alg, key.as_bytes());
    Ok(Value::from(hex(hmac::sign(&key, msg.as_bytes()).as_ref())))
}

fn hmac_sha256(args: &[Value]) -> Result<Value, String> {
    hmac_with(args, "crypto.hmac.sha256", hmac::HMAC_SHA256)
}

fn hmac_sha512(args: &[Value]) -> Result<Value, String> {
    hmac_with(args, "crypto.hmac.sha512", hmac::HMAC_SHA512)
}

fn hmac_sha1(args: &[Value]) -> Result<Value, String> {
    hmac_with(
        args,
        "crypto.hmac.sha1",
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
    )
}

fn hmac_md5(args: &[Value]) -> Result<Value, String> {
    let msg = string_operand(args, 1, "crypto.hmac.md5")?;
    let key = string_operand(args, 2, "crypto.hmac.md5")?;
    let mut k = if key.len() > 64 {
        md5_digest(key.as_bytes()).to_vec()
    } else {
        key.as_bytes().to_vec()
    };
    k.resize(64, 0);
    let mut inner: Vec<u8> = k.iter().map(|b| b ^ 0x36).collect();
    inner.extend_from_slice(msg.as_bytes());
    let mut outer: Vec<u8> = k.iter().map(|b| b ^ 0x5c).collect();
    outer.extend_from_slice(&md5_digest(&inner));
    Ok(Value::from(hex(&md5_digest(&outer))))
}

fn hmac_equal(args: &[Value]) -> Result<Value, String> {
    let a = string_operand(args, 1, "crypto.hmac.equal")?;
    let b = string_operand(args, 2, "crypto.hmac.equal")?;
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return Ok(Value::from(false));
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    Ok(Value::from(diff == 0))
}

/// MD5 (RFC 1321). ring has none, and it is too small to bring in a crate for.
pub(crate) fn md5_digest(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: [u32; 64] =
        std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32);
    let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    for block in msg.chunks(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ])
        });
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        h[0] = h[0].wrapping_add(a);
        h[1] = h[1].wrapping_add(b);
        h[2] = h[2].wrapping_add(c);
        h[3] = h[3].wrapping_add(d);
    }
    let mut out = [0u8; 16];
    for (i, w) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

// ---------------------------------------------------------------- public keys

/// A public (or, for HMAC, secret) key, as Go's crypto types tell them apart.
#[derive(Clone, Debug)]
pub(crate) enum PublicKey {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point; `bits` is the curve's size (256, 384, 521).
    Ec {
        bits: u16,
        point: Vec<u8>,
    },
    Ed25519(Vec<u8>),
    Secret(Vec<u8>),
    Other,
}

const OID_RSA: &[u64] = &[1, 2, 840, 113549, 1, 1, 1];
const OID_EC: &[u64] = &[1, 2, 840, 10045, 2, 1];
const OID_ED25519: &[u64] = &[1, 3, 101, 112];
const OID_DSA: &[u64] = &[1, 2, 840, 10040, 4, 1];

fn curve_bits(params: &[u64]) -> Option<u16> {
    match params {
        [1, 2, 840, 10045, 3, 1, 7] => Some(256),
        [1, 3, 132, 0, 34] => Some(384),
        [1, 3, 132, 0, 35] => Some(521),
        [1, 3, 132, 0, 33] => Some(224),
        _ => None,
    }
}

/// The key of a SubjectPublicKeyInfo, or Go's error when Go cannot parse it.
pub(crate) fn spki_key(spki: &SubjectPublicKeyInfo<'_>) -> Result<PublicKey, String> {
    let alg = oid_arcs(spki.algorithm.algorithm.as_bytes());
    let data = spki.subject_public_key.data.as_ref();
    if alg == OID_RSA {
        let parsed = spki
            .parsed()
            .map_err(|_| "x509: failed to parse RSA public key".to_string())?;
        if let x509_parser::public_key::PublicKey::RSA(rsa) = parsed {
            let strip = |b: &[u8]| b[b.iter().take_while(|x| **x == 0).count()..].to_vec();
            return Ok(PublicKey::Rsa {
                n: strip(rsa.modulus),
                e: strip(rsa.exponent),
            });
        }
        return Err("x509: failed to parse RSA public key".into());
    }
    if alg == OID_EC {
        let params = spki
            .algorithm
            .parameters
            .as_ref()
            .and_then(|p| p.as_oid().ok())
            .map(|o| oid_arcs(o.as_bytes()))
            .unwrap_or_default();
        let bits = curve_bits(&params).ok_or("x509: unsupported elliptic curve")?;
        if data.first() != Some(&4) || data.len() != 1 + 2 * usize::from(bits).div_ceil(8) {
            return Err("x509: failed to unmarshal elliptic curve point".into());
        }
        return Ok(PublicKey::Ec {
            bits,
            point: data.to_vec(),
        });
    }
    if alg == OID_ED25519 {
        if data.len() != 32 {
            return Err("x509: wrong Ed25519 public key size".into());
        }
        return Ok(PublicKey::Ed25519(data.to_vec()));
    }
    if alg == OID_DSA {
        return Ok(PublicKey::Other);
    }
    Err("x509: unknown public key algorithm".into())
}

// ---------------------------------------------------------------- signatures

/// Verify a signature made over `msg` by `key` with the named JWS-style scheme; `false` when
/// the key type does not fit or ring cannot check it. ECDSA signatures are DER.
pub(crate) fn verify_with(key: &PublicKey, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
    match (key, scheme) {
        (PublicKey::Rsa { n, e }, Scheme::RsaPkcs1(h) | Scheme::RsaPss(h)) => {
            let components = signature::RsaPublicKeyComponents {
                n: n.as_slice(),
                e: e.as_slice(),
            };
            match (scheme, h) {
                (Scheme::RsaPkcs1(_), Hash::Sha256) => components
                    .verify(
                        &signature::RSA_PKCS1_1024_8192_SHA256_FOR_LEGACY_USE_ONLY,
                        msg,
                        sig,
                    )
                    .is_ok(),
                (Scheme::RsaPkcs1(_), Hash::Sha384) => components
                    .verify(&signature::RSA_PKCS1_2048_8192_SHA384, msg, sig)
                    .is_ok(),
                (Scheme::RsaPkcs1(_), Hash::Sha512) => components
                    .verify(
                        &signature::RSA_PKCS1_1024_8192_SHA512_FOR_LEGACY_USE_ONLY,
                        msg,
                        sig,
                    )
                    .is_ok(),
                (_, Hash::Sha256) => components
                    .verify(&signature::RSA_PSS_2048_8192_SHA256, msg, sig)
                    .is_ok(),
                (_, Hash::Sha384) => components
                    .verify(&signature::RSA_PSS_2048_8192_SHA384, msg, sig)
                    .is_ok(),
                (_, Hash::Sha512) => components
                    .verify(&signature::RSA_PSS_2048_8192_SHA512, msg, sig)
                    .is_ok(),
            }
        }
        (PublicKey::Ec { bits, point }, Scheme::EcdsaDer(h)) => {
            let alg: &'static signature::EcdsaVerificationAlgorithm = match (bits, h) {
                (256, Hash::Sha256) => &signature::ECDSA_P256_SHA256_ASN1,
                (256, Hash::Sha384) => &signature::ECDSA_P256_SHA384_ASN1,
                (384, Hash::Sha256) => &signature::ECDSA_P384_SHA256_ASN1,
                (384, Hash::Sha384) => &signature::ECDSA_P384_SHA384_ASN1,
                _ => return false,
            };
            signature::UnparsedPublicKey::new(alg, point)
                .verify(msg, sig)
                .is_ok()
        }
        (PublicKey::Ed25519(k), Scheme::Ed25519) => {
            signature::UnparsedPublicKey::new(&signature::ED25519, k)
                .verify(msg, sig)
                .is_ok()
        }
        _ => false,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Scheme {
    RsaPkcs1(Hash),
    RsaPss(Hash),
    EcdsaDer(Hash),
    Ed25519,
}

/// DER `SEQUENCE { INTEGER r, INTEGER s }` from two big-endian unsigned integers.
pub(crate) fn ecdsa_der(r: &[u8], s: &[u8]) -> Vec<u8> {
    fn int(v: &[u8], out: &mut Vec<u8>) {
        let v = &v[v.iter().take_while(|b| **b == 0).count()..];
        let mut content = Vec::with_capacity(v.len() + 1);
        if v.is_empty() || v[0] & 0x80 != 0 {
            content.push(0);
        }
        content.extend_from_slice(v);
        out.push(0x02);
        push_len(content.len(), out);
        out.extend_from_slice(&content);
    }
    fn push_len(len: usize, out: &mut Vec<u8>) {
        if len < 0x80 {
            out.push(len as u8);
        } else if len < 0x100 {
            out.extend_from_slice(&[0x81, len as u8]);
        } else {
            out.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]);
        }
    }
    let mut body = Vec::new();
    int(r, &mut body);
    int(s, &mut body);
    let mut out = vec![0x30];
    push_len(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

// ---------------------------------------------------------------- X.509

/// Parse concatenated DER certificates, as Go's `x509.ParseCertificates`.
fn parse_der_certs(der: &[u8]) -> Result<Vec<X509Certificate<'_>>, String> {
    let mut certs = Vec::new();
    let mut rest = der;
    while !rest.is_empty() {
        let (r, cert) = X509Certificate::from_der(rest)
            .map_err(|_| "x509: malformed certificate".to_string())?;
        certs.push(cert);
        rest = r;
    }
    Ok(certs)
}

/// OPA's reading of a certificate string: PEM, or base64 of PEM or of DER.
fn certs_der(input: &str) -> Result<Vec<u8>, String> {
    let bytes = if input.starts_with("-----BEGIN") {
        input.as_bytes().to_vec()
    } else {
        let b = std_b64_decode(input.as_bytes())?;
        if !b.starts_with(b"-----BEGIN") {
            return Ok(b);
        }
        b
    };
    let mut rest: &[u8] = &bytes;
    let mut der = Vec::new();
    while !rest.is_empty() {
        let (block, r) = pem_decode(rest);
        let Some(block) = block else { break };
        if block.kind != "CERTIFICATE" {
            return Err(format!(
                "PEM block type is '{}', expected CERTIFICATE",
                block.kind
            ));
        }
        der.extend_from_slice(&block.bytes);
        rest = r;
    }
    Ok(der)
}

fn parse_certificates(args: &[Value]) -> Result<Value, String> {
    let input = string_operand(args, 1, "crypto.x509.parse_certificates")?;
    let der = certs_der(input)?;
    let certs = parse_der_certs(&der)?;
    Ok(Value::from(
        certs.iter().map(cert_value).collect::<Vec<_>>(),
    ))
}

fn parse_and_verify_certificates(args: &[Value]) -> Result<Value, String> {
    let input = string_operand(args, 1, "crypto.x509.parse_and_verify_certificates")?;
    let unverified = || Value::from(vec![Value::from(false), Value::new_array()]);
    let Ok(der) = certs_der(input) else {
        return Ok(unverified());
    };
    let Ok(certs) = parse_der_certs(&der) else {
        return Ok(unverified());
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    match verify_chain(&certs, now) {
        Some(chain) => Ok(Value::from(vec![
            Value::from(true),
            Value::from(chain.iter().map(|c| cert_value(c)).collect::<Vec<_>>()),
        ])),
        None => Ok(unverified()),
    }
}

/// OPA's chain check: the first certificate is the root, the last the leaf, the ones between
/// intermediates; Go's `Verify` with default options (now, server-auth usage). The chain
/// found, leaf first.
fn verify_chain<'c, 'a>(
    certs: &'c [X509Certificate<'a>],
    now: i64,
) -> Option<Vec<&'c X509Certificate<'a>>> {
    if certs.len() < 2 {
        return None;
    }
    let root = &certs[0];
    let leaf = &certs[certs.len() - 1];
    let intermediates = &certs[1..certs.len() - 1];
    let time_ok = |c: &X509Certificate<'_>| {
        let v = c.validity();
        v.not_before.timestamp() <= now && now <= v.not_after.timestamp()
    };
    if !time_ok(leaf) || has_unhandled_critical(leaf) {
        return None;
    }
    let mut chain = vec![leaf];
    if leaf.as_raw() == root.as_raw() {
        return eku_ok(&chain).then_some(chain);
    }
    let mut budget = SIGNATURE_CHECKS;
    if !extend(&mut chain, root, intermediates, &time_ok, &mut budget) {
        return None;
    }
    eku_ok(&chain).then_some(chain)
}

/// Go stops a chain search after this many signature checks; so does regate, so that a
/// request cannot hold an evaluation thread with a web of certificates that sign each other.
const SIGNATURE_CHECKS: usize = 100;

/// Depth-first, as Go: try the root, then each unused intermediate, each only if it may sign
/// what is below it.
fn extend<'c, 'a>(
    chain: &mut Vec<&'c X509Certificate<'a>>,
    root: &'c X509Certificate<'a>,
    intermediates: &'c [X509Certificate<'a>],
    time_ok: &dyn Fn(&X509Certificate<'_>) -> bool,
    budget: &mut usize,
) -> bool {
    let Some(current) = chain.last().copied() else {
        return false;
    };
    if chain.len() > 10 {
        return false;
    }
    // The intermediates already in the chain sit below the next parent.
    let below = chain.len() - 1;
    if current.issuer().as_raw() == root.subject().as_raw()
        && time_ok(root)
        && may_sign(root, below, true)
        && spend(budget)
        && signed_by(current, root)
    {
        chain.push(root);
        return true;
    }
    for inter in intermediates {
        if chain.iter().any(|c| c.as_raw() == inter.as_raw()) {
            continue;
        }
        if current.issuer().as_raw() != inter.subject().as_raw()
            || !time_ok(inter)
            || !may_sign(inter, below, false)
        {
            continue;
        }
        if !spend(budget) {
            return false;
        }
        if !signed_by(current, inter) {
            continue;
        }
        chain.push(inter);
        if extend(chain, root, intermediates, time_ok, budget) {
            return true;
        }
        chain.pop();
    }
    false
}

fn spend(budget: &mut usize) -> bool {
    match budget.checked_sub(1) {
        Some(left) => {
            *budget = left;
            true
        }
        None => false,
    }
}

/// Whether `parent` may sign a certificate with `below` intermediates under it, as Go's
/// `isValid` has it: an intermediate must be a CA by its basic constraints (a root need not);
/// any parent's path length bounds the intermediates below it; no certificate may carry a
/// critical extension regate does not understand. Go ignores key usage here, and so does
/// regate. Name constraints are not checked, so a parent that carries them signs nothing
/// here: refusing is the side to err on.
fn may_sign(parent: &X509Certificate<'_>, below: usize, is_root: bool) -> bool {
    if has_unhandled_critical(parent) {
        return false;
    }
    match parent.basic_constraints() {
        Ok(Some(bc)) => {
            if !is_root && !bc.value.ca {
                return false;
            }
            if let Some(n) = bc.value.path_len_constraint {
                if below > n as usize {
                    return false;
                }
            }
        }
        Ok(None) if !is_root => return false,
        Ok(None) => {}
        Err(_) => return false,
    }
    matches!(parent.name_constraints(), Ok(None))
}

/// Go's default key usage check: server auth, through every certificate of the chain.
fn eku_ok(chain: &[&X509Certificate<'_>]) -> bool {
    for c in chain {
        if let Some((known, unknown)) = ext_key_usages(c) {
            if known.is_empty() && unknown.is_empty() {
                continue;
            }
            if !known.iter().any(|u| matches!(u, 0 | 1 | 10 | 11)) {
                return false;
            }
        }
    }
    true
}

fn has_unhandled_critical(c: &X509Certificate<'_>) -> bool {
    const HANDLED: &[&[u64]] = &[
        &[2, 5, 29, 15],
        &[2, 5, 29, 19],
        &[2, 5, 29, 17],
        &[2, 5, 29, 30],
        &[2, 5, 29, 31],
        &[2, 5, 29, 35],
        &[2, 5, 29, 37],
        &[2, 5, 29, 32],
        &[2, 5, 29, 14],
        &[2, 5, 29, 33],
        &[2, 5, 29, 36],
        &[2, 5, 29, 54],
        &[1, 3, 6, 1, 5, 5, 7, 1, 1],
    ];
    c.extensions()
        .iter()
        .any(|e| e.critical && !HANDLED.contains(&oid_arcs(e.oid.as_bytes()).as_slice()))
}

/// Whether `child`'s signature verifies under `parent`'s key. SHA-1 and MD5 signatures are
/// refused, as Go refuses them.
fn signed_by(child: &X509Certificate<'_>, parent: &X509Certificate<'_>) -> bool {
    let Ok(key) = spki_key(parent.public_key()) else {
        return false;
    };
    let alg = oid_arcs(child.signature_algorithm.algorithm.as_bytes());
    let scheme = match alg.as_slice() {
        [1, 2, 840, 113549, 1, 1, 11] => Scheme::RsaPkcs1(Hash::Sha256),
        [1, 2, 840, 113549, 1, 1, 12] => Scheme::RsaPkcs1(Hash::Sha384),
        [1, 2, 840, 113549, 1, 1, 13] => Scheme::RsaPkcs1(Hash::Sha512),
        [1, 2, 840, 113549, 1, 1, 10] => match pss_hash(&child.signature_algorithm) {
            Some(h) => Scheme::RsaPss(h),
            None => return false,
        },
        [1, 2, 840, 10045, 4, 3, 2] => Scheme::EcdsaDer(Hash::Sha256),
        [1, 2, 840, 10045, 4, 3, 3] => Scheme::EcdsaDer(Hash::Sha384),
        [1, 3, 101, 112] => Scheme::Ed25519,
        _ => return false,
    };
    verify_with(
        &key,
        scheme,
        child.tbs_certificate.as_ref(),
        child.signature_value.data.as_ref(),
    )
}

fn pss_hash(alg: &x509_parser::x509::AlgorithmIdentifier<'_>) -> Option<Hash> {
    let params = alg.parameters.as_ref()?;
    let data: &[u8] = params.data;
    // The hash algorithm's OID appears first in the parameters.
    if find(
        data,
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
    )
    .is_some()
    {
        Some(Hash::Sha256)
    } else if find(
        data,
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x02],
    )
    .is_some()
    {
        Some(Hash::Sha384)
    } else if find(
        data,
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x03],
    )
    .is_some()
    {
        Some(Hash::Sha512)
    } else {
        None
    }
}

/// Go's `ExtKeyUsage` and `UnknownExtKeyUsage`, in the extension's order; `None` without
/// the extension.
fn ext_key_usages(c: &X509Certificate<'_>) -> Option<(Vec<u64>, Vec<Vec<u64>>)> {
    let ext = c
        .extensions()
        .iter()
        .find(|e| oid_arcs(e.oid.as_bytes()) == [2, 5, 29, 37])?;
    let (_, mut seq, _) = der_tlv(ext.value)?;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    while let Some((tag, content, rest)) = der_tlv(seq) {
        seq = rest;
        if tag != 0x06 {
            continue;
        }
        let arcs = oid_arcs(content);
        let id = match arcs.as_slice() {
            [2, 5, 29, 37, 0] => Some(0),
            [1, 3, 6, 1, 5, 5, 7, 3, n @ 1..=9] => Some(*n),
            [1, 3, 6, 1, 4, 1, 311, 10, 3, 3] => Some(10),
            [2, 16, 840, 1, 113730, 4, 1] => Some(11),
            [1, 3, 6, 1, 4, 1, 311, 2, 1, 22] => Some(12),
            [1, 3, 6, 1, 4, 1, 311, 61, 1, 1] => Some(13),
            _ => None,
        };
        match id {
            Some(i) => known.push(i),
            None => unknown.push(arcs),
        }
    }
    Some((known, unknown))
}

fn obj(entries: Vec<(&str, Value)>) -> Value {
    Value::from(
        entries
            .into_iter()
            .map(|(k, v)| (Value::from(k), v))
            .collect::<BTreeMap<_, _>>(),
    )
}

fn str_list_or_null(v: Vec<String>) -> Value {
    if v.is_empty() {
        Value::Null
    } else {
        Value::from(v.into_iter().map(Value::from).collect::<Vec<_>>())
    }
}

fn b64_or_null(b: Option<&[u8]>) -> Value {
    match b {
        Some(b) => Value::from(b64_encode(b, false, true)),
        None => Value::Null,
    }
}

/// Go's `pkix.Name` from an X.509 name.
fn name_value(name: &X509Name<'_>) -> Value {
    let mut names = Vec::new();
    let mut lists: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut common = String::new();
    let mut serial = String::new();
    for attr in name.iter_attributes() {
        let arcs = oid_arcs(attr.attr_type().as_bytes());
        let value = attr_string(attr);
        names.push(obj(vec![
            ("Type", oid_value(&arcs)),
            (
                "Value",
                value.clone().map(Value::from).unwrap_or(Value::Null),
            ),
        ]));
        let Some(value) = value else { continue };
        if let [2, 5, 4, n] = arcs.as_slice() {
            match n {
                3 => common = value,
                5 => serial = value,
                6 => lists.entry("Country").or_default().push(value),
                7 => lists.entry("Locality").or_default().push(value),
                8 => lists.entry("Province").or_default().push(value),
                9 => lists.entry("StreetAddress").or_default().push(value),
                10 => lists.entry("Organization").or_default().push(value),
                11 => lists.entry("OrganizationalUnit").or_default().push(value),
                17 => lists.entry("PostalCode").or_default().push(value),
                _ => {}
            }
        }
    }
    let mut entries = vec![
        ("CommonName", Value::from(common)),
        ("SerialNumber", Value::from(serial)),
        ("Names", Value::from(names)),
        ("ExtraNames", Value::Null),
    ];
    for key in [
        "Country",
        "Locality",
        "Province",
        "StreetAddress",
        "Organization",
        "OrganizationalUnit",
        "PostalCode",
    ] {
        entries.push((key, str_list_or_null(lists.remove(key).unwrap_or_default())));
    }
    obj(entries)
}

fn attr_string(attr: &x509_parser::x509::AttributeTypeAndValue<'_>) -> Option<String> {
    if let Ok(s) = attr.as_str() {
        return Some(s.to_string());
    }
    let any = attr.attr_value();
    let data: &[u8] = any.data;
    match any.tag().0 {
        // T61String: Go reads it as ISO-8859-1.
        20 => Some(data.iter().map(|b| char::from(*b)).collect()),
        // BMPString: UCS-2 big-endian.
        30 => {
            let units: Vec<u16> = data
                .chunks(2)
                .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                .collect();
            String::from_utf16(&units).ok()
        }
        // UniversalString
        28 => data
            .chunks(4)
            .map(|c| {
                char::from_u32(u32::from_be_bytes([
                    c[0],
                    *c.get(1)?,
                    *c.get(2)?,
                    *c.get(3)?,
                ]))
            })
            .collect(),
        _ => None,
    }
}

fn go_time(ts: i64) -> Value {
    match time::OffsetDateTime::from_unix_timestamp(ts) {
        Ok(t) => Value::from(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        )),
        Err(_) => Value::Null,
    }
}

fn signature_algorithm(c: &X509Certificate<'_>) -> u64 {
    match oid_arcs(c.signature_algorithm.algorithm.as_bytes()).as_slice() {
        [1, 2, 840, 113549, 1, 1, 2] => 1,
        [1, 2, 840, 113549, 1, 1, 4] => 2,
        [1, 2, 840, 113549, 1, 1, 5] => 3,
        [1, 2, 840, 113549, 1, 1, 11] => 4,
        [1, 2, 840, 113549, 1, 1, 12] => 5,
        [1, 2, 840, 113549, 1, 1, 13] => 6,
        [1, 2, 840, 10040, 4, 3] => 7,
        [2, 16, 840, 1, 101, 3, 4, 3, 2] => 8,
        [1, 2, 840, 10045, 4, 1] => 9,
        [1, 2, 840, 10045, 4, 3, 2] => 10,
        [1, 2, 840, 10045, 4, 3, 3] => 11,
        [1, 2, 840, 10045, 4, 3, 4] => 12,
        [1, 2, 840, 113549, 1, 1, 10] => match pss_hash(&c.signature_algorithm) {
            Some(Hash::Sha256) => 13,
            Some(Hash::Sha384) => 14,
            Some(Hash::Sha512) => 15,
            _ => 0,
        },
        [1, 3, 101, 112] => 16,
        _ => 0,
    }
}

fn public_key_value(spki: &SubjectPublicKeyInfo<'_>) -> (u64, Value) {
    match spki_key(spki) {
        Ok(PublicKey::Rsa { n, e }) => (1, obj(vec![("N", big_uint(&n)), ("E", big_uint(&e))])),
        Ok(PublicKey::Ec { bits, point }) => {
            let size = usize::from(bits).div_ceil(8);
            (
                3,
                obj(vec![
                    ("Curve", Value::new_object()),
                    ("X", big_uint(&point[1..1 + size])),
                    ("Y", big_uint(&point[1 + size..])),
                ]),
            )
        }
        Ok(PublicKey::Ed25519(k)) => (4, Value::from(b64_encode(&k, false, true))),
        Ok(PublicKey::Other) => (2, Value::Null),
        _ => (0, Value::Null),
    }
}

/// A URI as Go's `url.URL` marshals: a simple split good for the URIs of certificates
/// (`spiffe://`, `https://`, `urn:`); percent-escapes are decoded into `Path`/`Fragment`.
fn url_value(uri: &str) -> Value {
    let mut scheme = String::new();
    let mut rest = uri;
    if let Some(i) = uri.find(':') {
        let cand = &uri[..i];
        if !cand.is_empty()
            && cand.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && cand
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        {
            scheme = cand.to_ascii_lowercase();
            rest = &uri[i + 1..];
        }
    }
    let (rest, fragment) = match rest.find('#') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (rest, query) = match rest.find('?') {
        Some(i) => (&rest[..i], Some(&rest[i + 1..])),
        None => (rest, None),
    };
    let (mut host, mut path, mut opaque, mut user) =
        (String::new(), String::new(), String::new(), Value::Null);
    if !scheme.is_empty() && !rest.starts_with('/') {
        opaque = rest.to_string();
    } else if let Some(auth) = rest.strip_prefix("//") {
        let (authority, p) = match auth.find('/') {
            Some(i) => (&auth[..i], &auth[i..]),
            None => (auth, ""),
        };
        let authority = match authority.rfind('@') {
            Some(i) => {
                user = Value::new_object();
                &authority[i + 1..]
            }
            None => authority,
        };
        host = authority.to_string();
        path = percent_decode(p);
    } else {
        path = percent_decode(rest);
    }
    obj(vec![
        ("Scheme", Value::from(scheme)),
        ("Opaque", Value::from(opaque)),
        ("User", user),
        ("Host", Value::from(host)),
        ("Path", Value::from(path)),
        ("RawPath", Value::from("")),
        ("OmitHost", Value::from(false)),
        ("ForceQuery", Value::from(query == Some(""))),
        ("RawQuery", Value::from(query.unwrap_or(""))),
        (
            "Fragment",
            Value::from(fragment.map(percent_decode).unwrap_or_default()),
        ),
        ("RawFragment", Value::from("")),
    ])
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// One certificate as OPA gives it. Filled from the certificate: Raw*, Signature,
/// SignatureAlgorithm, PublicKeyAlgorithm, PublicKey, Version, SerialNumber, Issuer, Subject,
/// NotBefore, NotAfter, KeyUsage, Extensions, ExtKeyUsage, UnknownExtKeyUsage,
/// BasicConstraintsValid, IsCA, MaxPathLen, MaxPathLenZero, SubjectKeyId, AuthorityKeyId,
/// OCSPServer, IssuingCertificateURL, DNSNames, EmailAddresses, IPAddresses, URIs, URIStrings,
/// CRLDistributionPoints. The name-constraint and policy fields keep their zero values.
pub(crate) fn cert_value(c: &X509Certificate<'_>) -> Value {
    let tbs = &c.tbs_certificate;
    let (pk_alg, pk) = public_key_value(tbs.public_key());
    let mut key_usage = 0u64;
    let (mut bc_valid, mut is_ca, mut max_path, mut max_path_zero) = (false, false, 0i64, false);
    let (mut ski, mut aki): (Option<&[u8]>, Option<&[u8]>) = (None, None);
    let (mut ocsp, mut issuing, mut crldp) = (Vec::new(), Vec::new(), Vec::new());
    let (mut dns, mut emails, mut ips, mut uris) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut extensions = Vec::new();
    for ext in tbs.extensions() {
        extensions.push(obj(vec![
            ("Id", oid_value(&oid_arcs(ext.oid.as_bytes()))),
            ("Critical", Value::from(ext.critical)),
            ("Value", Value::from(b64_encode(ext.value, false, true))),
        ]));
        match ext.parsed_extension() {
            ParsedExtension::KeyUsage(ku) => key_usage = u64::from(ku.flags & 0x1ff),
            ParsedExtension::BasicConstraints(bc) => {
                bc_valid = true;
                is_ca = bc.ca;
                match bc.path_len_constraint {
                    Some(n) => {
                        max_path = i64::from(n);
                        max_path_zero = n == 0;
                    }
                    None => max_path = -1,
                }
            }
            ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0),
            ParsedExtension::AuthorityKeyIdentifier(a) => {
                aki = a.key_identifier.as_ref().map(|k| k.0)
            }
            ParsedExtension::AuthorityInfoAccess(aia) => {
                for ad in &aia.accessdescs {
                    if let GeneralName::URI(u) = &ad.access_location {
                        match oid_arcs(ad.access_method.as_bytes()).as_slice() {
                            [1, 3, 6, 1, 5, 5, 7, 48, 1] => ocsp.push(u.to_string()),
                            [1, 3, 6, 1, 5, 5, 7, 48, 2] => issuing.push(u.to_string()),
                            _ => {}
                        }
                    }
                }
            }
            ParsedExtension::CRLDistributionPoints(points) => {
                for p in points.iter() {
                    if let Some(x509_parser::extensions::DistributionPointName::FullName(names)) =
                        &p.distribution_point
                    {
                        for n in names {
                            if let GeneralName::URI(u) = n {
                                crldp.push(u.to_string());
                            }
                        }
                    }
                }
            }
            ParsedExtension::SubjectAlternativeName(san) => {
                for n in &san.general_names {
                    match n {
                        GeneralName::DNSName(d) => dns.push(d.to_string()),
                        GeneralName::RFC822Name(e) => emails.push(e.to_string()),
                        GeneralName::URI(u) => uris.push(u.to_string()),
                        GeneralName::IPAddress(ip) => match ip.len() {
                            4 => ips.push(
                                std::net::Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]).to_string(),
                            ),
                            16 => {
                                let mut a = [0u8; 16];
                                a.copy_from_slice(ip);
                                let v6 = std::net::Ipv6Addr::from(a);
                                ips.push(match v6.to_ipv4_mapped() {
                                    Some(v4) => v4.to_string(),
                                    None => v6.to_string(),
                                });
                            }
                            _ => {}
                        },
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (eku, unknown_eku) = match ext_key_usages(c) {
        Some((k, u)) => (
            if k.is_empty() {
                Value::Null
            } else {
                Value::from(k.into_iter().map(Value::from).collect::<Vec<_>>())
            },
            if u.is_empty() {
                Value::Null
            } else {
                Value::from(u.iter().map(|a| oid_value(a)).collect::<Vec<_>>())
            },
        ),
        None => (Value::Null, Value::Null),
    };
    let uri_values = if uris.is_empty() {
        Value::Null
    } else {
        Value::from(uris.iter().map(|u| url_value(u)).collect::<Vec<_>>())
    };
    let serial = big_uint(tbs.raw_serial());
    let raw_cert = c.as_raw();
    obj(vec![
        ("Raw", Value::from(b64_encode(raw_cert, false, true))),
        (
            "RawTBSCertificate",
            Value::from(b64_encode(tbs.as_ref(), false, true)),
        ),
        (
            "RawSubjectPublicKeyInfo",
            Value::from(b64_encode(tbs.public_key().raw, false, true)),
        ),
        (
            "RawSubject",
            Value::from(b64_encode(tbs.subject().as_raw(), false, true)),
        ),
        (
            "RawIssuer",
            Value::from(b64_encode(tbs.issuer().as_raw(), false, true)),
        ),
        (
            "Signature",
            Value::from(b64_encode(c.signature_value.data.as_ref(), false, true)),
        ),
        ("SignatureAlgorithm", Value::from(signature_algorithm(c))),
        ("PublicKeyAlgorithm", Value::from(pk_alg)),
        ("PublicKey", pk),
        ("Version", Value::from(u64::from(tbs.version().0) + 1)),
        ("SerialNumber", serial),
        ("Issuer", name_value(tbs.issuer())),
        ("Subject", name_value(tbs.subject())),
        ("NotBefore", go_time(tbs.validity().not_before.timestamp())),
        ("NotAfter", go_time(tbs.validity().not_after.timestamp())),
        ("KeyUsage", Value::from(key_usage)),
        (
            "Extensions",
            if extensions.is_empty() {
                Value::Null
            } else {
                Value::from(extensions)
            },
        ),
        ("ExtraExtensions", Value::Null),
        ("UnhandledCriticalExtensions", Value::Null),
        ("ExtKeyUsage", eku),
        ("UnknownExtKeyUsage", unknown_eku),
        ("BasicConstraintsValid", Value::from(bc_valid)),
        ("IsCA", Value::from(is_ca)),
        ("MaxPathLen", Value::from(max_path)),
        ("MaxPathLenZero", Value::from(max_path_zero)),
        ("SubjectKeyId", b64_or_null(ski)),
        ("AuthorityKeyId", b64_or_null(aki)),
        ("OCSPServer", str_list_or_null(ocsp)),
        ("IssuingCertificateURL", str_list_or_null(issuing)),
        ("DNSNames", str_list_or_null(dns)),
        ("EmailAddresses", str_list_or_null(emails)),
        ("IPAddresses", str_list_or_null(ips)),
        ("URIs", uri_values),
        ("URIStrings", str_list_or_null(uris)),
        ("PermittedDNSDomainsCritical", Value::from(false)),
        ("PermittedDNSDomains", Value::Null),
        ("ExcludedDNSDomains", Value::Null),
        ("PermittedIPRanges", Value::Null),
        ("ExcludedIPRanges", Value::Null),
        ("PermittedEmailAddresses", Value::Null),
        ("ExcludedEmailAddresses", Value::Null),
        ("PermittedURIDomains", Value::Null),
        ("ExcludedURIDomains", Value::Null),
        ("CRLDistributionPoints", str_list_or_null(crldp)),
        ("PolicyIdentifiers", Value::Null),
        ("Policies", Value::Null),
        ("InhibitAnyPolicy", Value::from(0u64)),
        ("InhibitAnyPolicyZero", Value::from(false)),
        ("InhibitPolicyMapping", Value::from(0u64)),
        ("InhibitPolicyMappingZero", Value::from(false)),
        ("RequireExplicitPolicy", Value::from(0u64)),
        ("RequireExplicitPolicyZero", Value::from(false)),
        ("PolicyMappings", Value::Null),
    ])
}

#[cfg(test)]
pub(crate) fn md5_hex(s: &str) -> String {
    hex(&md5_digest(s.as_bytes()))
}

#[cfg(test)]
mod chain_tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, Issuer, KeyPair,
    };

    fn params(cn: &str, ca: IsCa) -> CertificateParams {
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.is_ca = ca;
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(1);
        p
    }

    /// root, intermediate, leaf: the order OPA takes them in.
    fn chain(root_ca: IsCa, inter_ca: IsCa) -> String {
        let root_key = KeyPair::generate().unwrap();
        let root_params = params("root", root_ca);
        let root = root_params.self_signed(&root_key).unwrap();
        let root_issuer = Issuer::new(root_params, root_key);
        let inter_key = KeyPair::generate().unwrap();
        let inter_params = params("inter", inter_ca);
        let inter = inter_params.signed_by(&inter_key, &root_issuer).unwrap();
        let inter_issuer = Issuer::new(inter_params, inter_key);
        let leaf_key = KeyPair::generate().unwrap();
        let leaf = params("leaf", IsCa::NoCa)
            .signed_by(&leaf_key, &inter_issuer)
            .unwrap();
        format!("{}{}{}", root.pem(), inter.pem(), leaf.pem())
    }

    fn verifies(pem: &str) -> bool {
        let got = parse_and_verify_certificates(&[Value::from(pem)]).unwrap();
        got[0] == Value::from(true)
    }

    #[test]
    fn chains_verify_only_within_their_constraints() {
        let ca = || IsCa::Ca(BasicConstraints::Unconstrained);
        assert!(verifies(&chain(ca(), ca())));
        // The root allows no intermediate below it.
        let zero = IsCa::Ca(BasicConstraints::Constrained(0));
        assert!(!verifies(&chain(zero, ca())));
        // An intermediate that is not a CA signs nothing.
        assert!(!verifies(&chain(ca(), IsCa::ExplicitNoCa)));
        assert!(!verifies(&chain(ca(), IsCa::NoCa)));
    }

    #[test]
    fn a_web_of_cross_signed_intermediates_ends_the_search() {
        // Twelve CAs with one name and one key: each signs every other. The leaf names them
        // as its issuer, and the root is someone else. Without a budget, the search would
        // try every ordering of them, hundreds of millions of signature checks.
        let key_pem = KeyPair::generate().unwrap().serialize_pem();
        let key = || KeyPair::from_pem(&key_pem).unwrap();
        let root_params = params("root", IsCa::Ca(BasicConstraints::Unconstrained));
        let root = root_params
            .self_signed(&KeyPair::generate().unwrap())
            .unwrap();
        let web = params("web", IsCa::Ca(BasicConstraints::Unconstrained));
        let web_issuer = Issuer::new(web.clone(), key());
        let mut pem = root.pem();
        for serial in 1..=12u64 {
            let mut p = web.clone();
            p.serial_number = Some(serial.into());
            pem.push_str(&p.signed_by(&key(), &web_issuer).unwrap().pem());
        }
        let leaf = params("leaf", IsCa::NoCa)
            .signed_by(&KeyPair::generate().unwrap(), &web_issuer)
            .unwrap();
        pem.push_str(&leaf.pem());
        assert!(!verifies(&pem));
    }
}
