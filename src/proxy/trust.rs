//! Whether the caller on an open connection may still be served. The handshake checked its
//! certificate once; a connection, and a tunnel, can outlive that. Asked once per request at
//! admission, again for a tunnel at every reload or revocation, and by the listener to close
//! the connections of a revoked caller.
//!
//! It owns the one question of the kill switch, [`Revocations::refuses`], asked with the
//! caller and the delegation token it acts under; it does not verify tokens (that is
//! `crate::delegation`'s).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use super::connection::Connection;
use crate::revocations::Revocations;
use crate::tls::TlsStore;

/// What trust in a caller rests on, besides its handshake.
pub struct Trust {
    /// The current CA bundle: a chain is verified again after it changes.
    pub tls: TlsStore,
    /// The kill switch.
    pub revocations: Arc<Revocations>,
}

impl Trust {
    /// Why the caller on `conn`, acting under the delegation token `jti` if any, may not be
    /// served now: it or its token is revoked (`revoked`), the revocations feed has been
    /// silent past its `max_age` (`revocations_feed_stale`), its certificate is past its
    /// `not_after` (`certificate_expired`), a CA bundle change no longer verifies its chain
    /// (`untrusted_issuer`, checked once per change), or its trust domain is not one
    /// configured (`untrusted_trust_domain`). `None`: it may.
    pub fn refusal(
        &self,
        conn: &Connection,
        jti: Option<&str>,
        now: SystemTime,
    ) -> Option<&'static str> {
        if let Some(refusal) = self.revocations.refusal(&conn.peer, jti) {
            return Some(refusal);
        }
        let now_unix = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        if conn.peer.expired_at(now_unix) {
            return Some("certificate_expired");
        }
        let tls = self.tls.load();
        if conn.verified_ca.load(Ordering::Acquire) != tls.ca_generation {
            if !tls.ca.verifies(&conn.chain) {
                return Some("untrusted_issuer");
            }
            conn.verified_ca.store(tls.ca_generation, Ordering::Release);
        }
        if !conn.trusted_domain {
            return Some("untrusted_trust_domain");
        }
        None
    }

    /// Whether the caller, or the token it acts under, is revoked.
    pub fn revoked(&self, conn: &Connection, jti: Option<&str>) -> bool {
        self.revocations.refuses(&conn.peer, jti)
    }
}
