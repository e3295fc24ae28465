//! What regate knows about one client connection, computed once at the handshake, and how
//! busy the connection is (for `--idle-timeout`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::HeaderValue;
use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;

use super::Proxy;
use crate::policy::input::ConnInput;
use crate::request::headers::xfcc;
use crate::tls::identity::PeerIdentity;
use crate::tls::TlsState;

/// One client connection, shared by its requests and by a tunnel it turns into.
pub struct Connection {
    pub peer: PeerIdentity,
    /// SHA-256 of the peer's certificate (DER): what a bound delegation token names.
    pub(super) cert_sha256: Vec<u8>,
    /// The chain the peer presented, leaf first, kept to re-verify after a CA change.
    pub(super) chain: Vec<CertificateDer<'static>>,
    /// The CA generation this chain last verified against.
    pub(super) verified_ca: AtomicU64,
    pub(super) input: ConnInput,
    pub(super) xfcc: HeaderValue,
    pub(super) xff: HeaderValue,
    /// False when trust domains are configured and the peer is in none of them.
    pub(super) trusted_domain: bool,
    pub activity: Arc<Activity>,
    /// `--max-upstream-requests-per-connection`.
    pub(super) upstream_slots: Arc<Semaphore>,
    /// Whom the bytes of its inspected bodies are charged to: the SPIFFE ID, else the
    /// certificate's fingerprint.
    pub(super) budget_key: Arc<str>,
    /// Its identity's entry in the inventory, counted open as long as the connection is.
    pub(super) inventory: crate::identities::Presence,
    /// Whatever must live exactly as long as the connection: its places in the connection
    /// limits, the open-connections gauge, the shutdown drain.
    _held: Box<dyn Send + Sync>,
}

impl Connection {
    /// The caller's SPIFFE ID, when its certificate has one.
    pub fn spiffe_id(&self) -> Option<&str> {
        self.peer.spiffe_id.as_ref().map(|s| s.id.as_str())
    }

    pub fn new(
        proxy: &Proxy,
        chain: Vec<CertificateDer<'static>>,
        peer: PeerIdentity,
        tls: &TlsState,
        remote: SocketAddr,
        local_addr: SocketAddr,
        held: Box<dyn Send + Sync>,
    ) -> Connection {
        let local = &tls.cert.local;
        let trusted_domain = peer.in_trust_domains(&proxy.trust_domains);
        let xfcc = HeaderValue::from_str(&xfcc(&peer, local))
            .unwrap_or_else(|_| HeaderValue::from_static("Hash=invalid"));
        let xff = HeaderValue::from_str(&remote.ip().to_canonical().to_string())
            .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
        let cert_sha256 = chain
            .first()
            .map(|leaf| {
                ring::digest::digest(&ring::digest::SHA256, leaf.as_ref())
                    .as_ref()
                    .to_vec()
            })
            .unwrap_or_default();
        let budget_key = match &peer.spiffe_id {
            Some(id) => Arc::from(id.id.as_str()),
            None => Arc::from(peer.fingerprint_sha256.as_str()),
        };
        Connection {
            budget_key,
            inventory: proxy.identities.connected(&peer),
            cert_sha256,
            input: ConnInput::new(&peer, local, remote, local_addr, proxy.context.clone()),
            peer,
            chain,
            verified_ca: AtomicU64::new(tls.ca_generation),
            xfcc,
            xff,
            trusted_domain,
            activity: Arc::new(Activity::new()),
            upstream_slots: Arc::new(Semaphore::new(proxy.limits.upstream_per_connection)),
            _held: held,
        }
    }
}

/// Requests in flight on a connection (from request head to the end of the response body)
/// and when the last one ended.
pub struct Activity {
    base: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `base` when the connection was last busy.
    last_ms: AtomicU64,
}

/// One request in flight; ends when dropped (with the response body).
pub struct InFlight(Arc<Activity>);

impl Activity {
    fn new() -> Activity {
        Activity {
            base: Instant::now(),
            in_flight: AtomicUsize::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(self.clone())
    }

    fn touch(&self) {
        let ms = self.base.elapsed().as_millis() as u64;
        self.last_ms.fetch_max(ms, Ordering::AcqRel);
    }

    /// When the connection will have been idle for `timeout`, if nothing happens before;
    /// while a request is in flight, a time to look again.
    pub fn idle_deadline(&self, timeout: Duration) -> Instant {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return Instant::now() + timeout;
        }
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Acquire)) + timeout
    }

    /// Whether nothing has been in flight for `timeout`.
    pub fn idle_for(&self, timeout: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && Instant::now() >= self.idle_deadline(timeout)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
