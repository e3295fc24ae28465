//! One client connection, from TCP accept to close: the TLS handshake (bounded by
//! `--handshake-timeout`), the peer's identity (once), its place under
//! `--max-connections-per-identity`, then HTTP/1.1 or HTTP/2 served by [`Proxy::handle`]
//! until the connection ends, goes idle for `--idle-timeout`, or shutdown begins.
//!
//! [`App::serve`](crate::App::serve) accepts; everything after the accept is here.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use crate::limits;
use crate::metrics;
use crate::proxy::{Connection, Proxy};
use crate::tls::identity::PeerIdentity;
use crate::tls::TlsStore;

/// HTTP/1.1 request heads must arrive within this (or `--idle-timeout`, if shorter).
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Streams one HTTP/2 connection may have open at once.
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 100;
/// After asking an idle connection to close (HTTP/2: GOAWAY), how long before it is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(5);
/// Log lines a client can trigger at will are written at most this often.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(1);

pub(crate) struct ConnTask {
    pub(crate) metrics: Arc<metrics::Metrics>,
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) tls: TlsStore,
    pub(crate) http: Arc<auto::Builder<TokioExecutor>>,
    pub(crate) handshake_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) limits: Arc<limits::ConnLimits>,
    pub(crate) refused: Arc<limits::RateLimited>,
    pub(crate) stop: watch::Receiver<bool>,
}

impl ConnTask {
    /// One client connection, from TCP accept to close. `held` lives as long as the
    /// connection: its place under `--max-connections`, and the shutdown drain.
    pub(crate) async fn run(
        self,
        tcp: TcpStream,
        remote: SocketAddr,
        held: (limits::Slot, mpsc::Sender<()>),
    ) {
        let _ = tcp.set_nodelay(true);
        let Ok(local_addr) = tcp.local_addr() else {
            return;
        };
        // Load the TLS state per handshake: a reload applies to the next connection.
        let state = self.tls.load_full();
        let Some((stream, chain, peer)) = self.handshake(&state, tcp, remote).await else {
            return;
        };
        // One certificate cannot hold every connection: a client the policy denies outright
        // could otherwise sit on silent connections until nobody else gets one.
        let Some(identity_slot) = self.limits.admit_identity(&peer.fingerprint_sha256) else {
            self.metrics.connection_refused("per_identity");
            if let Some(held_back) = self.refused.check() {
                tracing::warn!(
                    client.addr = %remote,
                    peer.serial = %peer.serial,
                    held_back,
                    "connection refused: the certificate holds --max-connections-per-identity"
                );
            }
            return;
        };
        let open = self.metrics.connection();
        let conn = Arc::new(Connection::new(
            &self.proxy,
            chain,
            peer,
            &state,
            remote,
            local_addr,
            Box::new((held, identity_slot, open)),
        ));
        drop(state);
        self.serve(stream, conn, remote).await;
    }

    /// The TLS handshake, within `--handshake-timeout`, and the identity the client's leaf
    /// certificate proves; `None` (counted and logged) when either fails.
    async fn handshake(
        &self,
        state: &crate::tls::TlsState,
        tcp: TcpStream,
        remote: SocketAddr,
    ) -> Option<(
        tokio_rustls::server::TlsStream<TcpStream>,
        Vec<rustls_pki_types::CertificateDer<'static>>,
        PeerIdentity,
    )> {
        let acceptor = TlsAcceptor::from(state.server_config.clone());
        let stream = match tokio::time::timeout(self.handshake_timeout, acceptor.accept(tcp)).await
        {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                let reason = handshake_failure(&e);
                self.metrics.handshake_failed(reason);
                tracing::info!(client.addr = %remote, reason, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                self.metrics.handshake_failed("timeout");
                tracing::info!(client.addr = %remote, "TLS handshake timed out");
                return None;
            }
        };
        self.metrics.handshake_ok();
        let (_, session) = stream.get_ref();
        // rustls verified the chain; without a certificate the handshake could not finish.
        let chain = session.peer_certificates().map(<[_]>::to_vec)?;
        let peer = match PeerIdentity::from_der(chain.first()?) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(client.addr = %remote, error = %e, "peer certificate unreadable");
                return None;
            }
        };
        Some((stream, chain, peer))
    }

    /// Serve HTTP/1.1 or HTTP/2 on the connection, each request by [`Proxy::handle`].
    async fn serve(
        self,
        stream: tokio_rustls::server::TlsStream<TcpStream>,
        conn: Arc<Connection>,
        remote: SocketAddr,
    ) {
        let span = tracing::info_span!(
            "conn",
            peer.id = %conn.peer.spiffe_id.as_ref().map_or(conn.peer.subject.as_str(), |s| s.id.as_str()),
            client.addr = %remote,
        );
        let proxy = self.proxy.clone();
        let conn_span = span.clone();
        let served = conn.clone();
        let service = service_fn(move |req| {
            let proxy = proxy.clone();
            let conn = served.clone();
            // HTTP/2 streams run as tasks of their own: name the connection as parent. At debug
            // level, so the default (info) pays nothing per request; the info-level events a
            // request logs carry request.id themselves.
            let span = tracing::debug_span!(parent: &conn_span, "request", request.id = tracing::field::Empty);
            async move { Ok::<_, std::convert::Infallible>(proxy.handle(&conn, req).await) }
                .instrument(span)
        });
        let serving = self
            .http
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        self.close_when_done(serving, &conn).instrument(span).await;
    }

    /// Serve the connection until it ends, asking it to close once it has been idle for
    /// `--idle-timeout` (from the handshake on, so a client that never sends a byte is
    /// closed too) or when shutdown begins. A connection asked to close for idleness that has
    /// not closed after [`CLOSE_GRACE`] is dropped.
    async fn close_when_done<C>(mut self, serving: C, conn: &Connection)
    where
        C: Future<Output = Result<(), Box<dyn std::error::Error + Send + Sync>>> + Graceful,
    {
        tokio::pin!(serving);
        let mut closing: Option<tokio::time::Instant> = None;
        // A revocation that lands while the connection is open closes it; one that landed
        // before is refused request by request (`proxy::trust`).
        let mut revocations = self.proxy.trust.revocations.subscribe();
        let mut draining = *self.stop.borrow();
        if draining {
            serving.as_mut().graceful();
        }
        loop {
            let idle =
                tokio::time::Instant::from_std(conn.activity.idle_deadline(self.idle_timeout));
            tokio::select! {
                result = serving.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = tokio::time::sleep_until(idle), if closing.is_none() && !draining => {
                    if conn.activity.idle_for(self.idle_timeout) {
                        tracing::debug!("closing an idle connection");
                        self.metrics.idle_closed();
                        serving.as_mut().graceful();
                        closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                }
                Ok(()) = revocations.changed(), if closing.is_none() => {
                    if self.proxy.trust.revoked(conn, None) {
                        tracing::warn!("closing the connection: its identity was revoked");
                        self.metrics.revoked_connection_closed();
                        serving.as_mut().graceful();
                        closing = Some(tokio::time::Instant::now() + CLOSE_GRACE);
                    }
                }
                () = sleep_until_some(closing) => return,
                () = crate::proxy::tunnel::stopped(&mut self.stop), if !draining => {
                    draining = true;
                    serving.as_mut().graceful();
                }
            }
        }
    }
}

/// A served connection that can be asked to finish what it is doing and close.
trait Graceful {
    fn graceful(self: std::pin::Pin<&mut Self>);
}

impl<I, S, E> Graceful for auto::UpgradeableConnection<'_, I, S, E>
where
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper::rt::bounds::Http2ServerConnExec<S::Future, S::ResBody>,
{
    fn graceful(self: std::pin::Pin<&mut Self>) {
        self.graceful_shutdown();
    }
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// A bounded name for why a handshake failed, for metrics.
fn handshake_failure(e: &std::io::Error) -> &'static str {
    use rustls::{CertificateError, Error};
    match e.get_ref().and_then(|inner| inner.downcast_ref::<Error>()) {
        Some(Error::NoCertificatesPresented) => "no_certificate",
        Some(Error::InvalidCertificate(
            CertificateError::Expired | CertificateError::ExpiredContext { .. },
        )) => "certificate_expired",
        Some(Error::InvalidCertificate(CertificateError::UnknownIssuer)) => "unknown_issuer",
        Some(Error::InvalidCertificate(_)) => "bad_certificate",
        Some(Error::NoApplicationProtocol | Error::PeerIncompatible(_)) => "incompatible",
        Some(_) => "tls_error",
        None if e.kind() == std::io::ErrorKind::UnexpectedEof => "eof",
        None => "io_error",
    }
}
