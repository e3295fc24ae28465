//! Signed checkpoints: the Ed25519 key regate signs the decision log's checkpoints with
//! (`--decision-log-signing-key`), the public key `regate audit verify --public-key` checks
//! them with, and the bytes a signature covers. It neither writes the log nor walks it.
//!
//! A checkpoint cannot sign its own `chain`: the signature is a member of the line, and the
//! line's `chain` hashes every member but itself. So it signs its `seq` and the `chain` it
//! links to (`previous_chain`, the line before it), which covers every line before it. The
//! signed bytes are ASCII, one field a line, so an auditor can rebuild them with `printf`:
//!
//! ```text
//! regate decision log checkpoint v1\n<seq, decimal>\n<previous_chain, 64 hex, or null>\n
//! ```

use std::path::{Path, PathBuf};

use ring::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey, ED25519};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivatePkcs8KeyDer, SubjectPublicKeyInfoDer};

/// The first line of the signed bytes: what they are, and the version of their layout.
pub const DOMAIN: &str = "regate decision log checkpoint v1";

/// An Ed25519 SubjectPublicKeyInfo is this fixed DER prefix and the 32-byte key (RFC 8410
/// section 4: the algorithm identifier has no parameters).
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// The bytes a checkpoint's signature covers: [`DOMAIN`], its `seq` and its
/// `previous_chain` (`null` when it starts a chain), each followed by a newline.
pub fn signed_bytes(seq: u64, previous_chain: Option<&str>) -> Vec<u8> {
    format!("{DOMAIN}\n{seq}\n{}\n", previous_chain.unwrap_or("null")).into_bytes()
}

/// Why a key file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} holds no PEM {label:?} block", path.display())]
    NotPem {
        path: PathBuf,
        label: &'static str,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    /// ring's rejection is not a `std::error::Error` (its `std` feature is off), so its
    /// reason is carried as text.
    #[error("{} is not an Ed25519 key ({reason})", path.display())]
    NotEd25519 { path: PathBuf, reason: String },
}

/// The private key checkpoints are signed with.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey").finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Read an Ed25519 private key, PKCS#8 in PEM (`BEGIN PRIVATE KEY`), as OpenSSL
    /// (`openssl genpkey -algorithm ed25519`) and `regate dev-certs` write it.
    pub fn load(path: &Path) -> Result<SigningKey, KeyError> {
        let pem = read(path)?;
        let der = PrivatePkcs8KeyDer::from_pem_slice(&pem).map_err(|source| KeyError::NotPem {
            path: path.to_path_buf(),
            label: "PRIVATE KEY",
            source,
        })?;
        // OpenSSL writes PKCS#8 v1, without the public key; the checked form wants v2.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der.secret_pkcs8_der()).map_err(
            |rejected| KeyError::NotEd25519 {
                path: path.to_path_buf(),
                reason: rejected.to_string(),
            },
        )?;
        Ok(SigningKey { pair })
    }

    /// The signature of the checkpoint at `seq` that links to `previous_chain`, in hex.
    pub fn sign(&self, seq: u64, previous_chain: Option<&str>) -> String {
        let signature = self.pair.sign(&signed_bytes(seq, previous_chain));
        crate::tls::identity::hex(signature.as_ref())
    }

    /// An Ed25519 signature over `data` (for tokens signed with the same kind of key, such
    /// as approvals).
    pub fn sign_bytes(&self, data: &[u8]) -> Vec<u8> {
        self.pair.sign(data).as_ref().to_vec()
    }

    /// The public half, for checking what this key signed.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            raw: self.pair.public_key().as_ref().to_vec(),
        }
    }
}

/// The public key checkpoints are checked with.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// The 32-byte Ed25519 key.
    raw: Vec<u8>,
}

impl PublicKey {
    /// Read an Ed25519 public key, a SubjectPublicKeyInfo in PEM (`BEGIN PUBLIC KEY`), as
    /// `openssl pkey -pubout` and `regate dev-certs` write it.
    pub fn load(path: &Path) -> Result<PublicKey, KeyError> {
        let pem = read(path)?;
        let der =
            SubjectPublicKeyInfoDer::from_pem_slice(&pem).map_err(|source| KeyError::NotPem {
                path: path.to_path_buf(),
                label: "PUBLIC KEY",
                source,
            })?;
        match der.strip_prefix(&ED25519_SPKI_PREFIX[..]) {
            Some(raw) if raw.len() == 32 => Ok(PublicKey { raw: raw.to_vec() }),
            _ => Err(KeyError::NotEd25519 {
                path: path.to_path_buf(),
                reason: "another algorithm".into(),
            }),
        }
    }

    /// The 32 bytes of the key.
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }

    /// Whether `signature` (hex) is this key's over the checkpoint at `seq` that links to
    /// `previous_chain`.
    pub fn verifies(&self, seq: u64, previous_chain: Option<&str>, signature: &str) -> bool {
        let Some(signature) = unhex(signature) else {
            return false;
        };
        UnparsedPublicKey::new(&ED25519, &self.raw)
            .verify(&signed_bytes(seq, previous_chain), &signature)
            .is_ok()
    }
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Lowercase or uppercase hex to bytes; `None` for anything else.
fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    /// A fresh key pair in PEM, as `regate dev-certs` writes it: (private, public).
    fn pem_pair() -> (String, String) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        (key.serialize_pem(), key.public_key_pem())
    }

    fn written(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_signed_bytes_are_the_domain_seq_and_previous_chain_one_a_line() {
        let chain = "ab".repeat(32);
        assert_eq!(
            signed_bytes(42, Some(&chain)),
            format!("regate decision log checkpoint v1\n42\n{chain}\n").into_bytes()
        );
        assert_eq!(
            signed_bytes(1, None),
            b"regate decision log checkpoint v1\n1\nnull\n".to_vec()
        );
    }

    #[test]
    fn a_signature_verifies_with_its_public_key_only_over_what_was_signed() {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = pem_pair();
        let key = SigningKey::load(&written(dir.path(), "k", &private)).unwrap();
        let public = PublicKey::load(&written(dir.path(), "p", &public)).unwrap();
        let chain = "0f".repeat(32);
        let signature = key.sign(7, Some(&chain));
        assert_eq!(signature.len(), 128);
        assert!(public.verifies(7, Some(&chain), &signature));
        assert!(key.public_key().verifies(7, Some(&chain), &signature));
        assert!(!public.verifies(8, Some(&chain), &signature));
        assert!(!public.verifies(7, Some(&"1f".repeat(32)), &signature));
        assert!(!public.verifies(7, None, &signature));
        assert!(!public.verifies(7, Some(&chain), "not hex"));

        let (_, other) = pem_pair();
        let other = PublicKey::load(&written(dir.path(), "o", &other)).unwrap();
        assert!(!other.verifies(7, Some(&chain), &signature));
    }

    /// Made with `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key inside) and
    /// `openssl pkey -pubout`; the signature with `openssl pkeyutl -sign -rawin` over
    /// `signed_bytes(42, Some("ab" x 32))`.
    const OPENSSL_KEY: &str = "-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIFW/fATkkv8jO8cE1/MSvKpIfMQy0NRsEnWV8b87QY8P
-----END PRIVATE KEY-----
";
    const OPENSSL_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAHJiquxLHLlEX/SbfZkhDZjhPq4S1UXitUEUkmwRl8j4=
-----END PUBLIC KEY-----
";
    const OPENSSL_SIGNATURE: &str = "6c63f0c7e96d823f81ac548f2eb811e1fa609c701a04a65c4527eebd\
        b594ed8cb8f72d92578d2d015e59ed1cd719f068f8ded08b830b79c803388b24767c4603";

    #[test]
    fn openssl_keys_load_and_openssl_signs_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::load(&written(dir.path(), "k", OPENSSL_KEY)).unwrap();
        let public = PublicKey::load(&written(dir.path(), "p", OPENSSL_PUBLIC)).unwrap();
        let chain = "ab".repeat(32);
        // Ed25519 is deterministic: the same key over the same bytes gives the same signature.
        assert_eq!(key.sign(42, Some(&chain)), OPENSSL_SIGNATURE);
        assert!(public.verifies(42, Some(&chain), OPENSSL_SIGNATURE));
        assert_eq!(key.public_key().raw, public.raw);
    }

    #[test]
    fn a_file_that_is_not_an_ed25519_key_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let missing = SigningKey::load(&dir.path().join("none")).unwrap_err();
        assert!(matches!(missing, KeyError::Read { .. }), "{missing}");
        let not_pem = SigningKey::load(&written(dir.path(), "t", "hello")).unwrap_err();
        assert!(matches!(not_pem, KeyError::NotPem { .. }), "{not_pem}");
        let ecdsa = rcgen::KeyPair::generate().unwrap();
        let wrong = SigningKey::load(&written(dir.path(), "e", &ecdsa.serialize_pem()));
        assert!(matches!(wrong, Err(KeyError::NotEd25519 { .. })));
        let wrong = PublicKey::load(&written(dir.path(), "ep", &ecdsa.public_key_pem()));
        assert!(matches!(wrong, Err(KeyError::NotEd25519 { .. })));
        // A private key where the public one is expected is not a PUBLIC KEY block.
        let (private, _) = pem_pair();
        let swapped = PublicKey::load(&written(dir.path(), "s", &private));
        assert!(matches!(swapped, Err(KeyError::NotPem { .. })));
    }
}
