//! Upgraded connections (a WebSocket, or another allowed protocol) after the upstream's `101`:
//! bytes are copied both ways until either side closes.
//!
//! A tunnel carries no more request heads, so no request on it is ever decided again. regate
//! keeps judging the tunnel as a whole instead, with what opened it. It is closed:
//! - when the client's certificate expires;
//! - after a CA bundle change, if the client's chain no longer verifies (as on every other
//!   connection, checked at once rather than on a next request that a tunnel never has);
//! - after a policy or data reload, if the new policy denies the request that opened the
//!   tunnel (revocation): that request's `input` is evaluated again, as it was, times
//!   included (not in `--mode audit`, which enforces no policy deny);
//! - at shutdown.
//!
//! Its end is recorded as a [`TunnelRecord`] with the bytes each way and its duration.
//!
//! A tunnel is judged with what it needs ([`Watch`]): trust in the caller
//! ([`super::trust`]), the decision step's [`Decider::judge`], and the recorder; it never
//! sees the rest of the proxy.

use std::borrow::Cow;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use regorus::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;

use super::connection::Connection;
use super::decision::Decider;
use super::record::Recorder;
use super::trust::Trust;
use crate::audit::TunnelRecord;

/// What a tunnel judges itself with, after its request.
pub struct Watch {
    pub trust: Arc<Trust>,
    pub decider: Arc<Decider>,
    pub recorder: Recorder,
    /// Moves on every policy or CA reload that lands.
    pub changes: tokio::sync::watch::Receiver<u64>,
    /// True once shutdown has begun.
    pub shutdown: tokio::sync::watch::Receiver<bool>,
    /// The clock skew forgiven on a delegation token's `exp`.
    pub token_leeway: Duration,
}

/// What the request that opened a tunnel leaves to it.
pub struct Opened {
    pub request_id: String,
    pub protocol: String,
    /// The `input` the policy allowed, evaluated again after every reload.
    pub input: Value,
    pub revision: Arc<str>,
    /// The tunnel holds an upstream connection: it keeps its `--max-upstream-requests` slot.
    pub upstream_slot: OwnedSemaphorePermit,
}

/// Join the client and upstream connections once both have switched.
pub fn spawn(
    watch: Watch,
    conn: Arc<Connection>,
    client: OnUpgrade,
    upstream: OnUpgrade,
    opened: Opened,
) {
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(request.id = %opened.request_id, error = %e, "upgrade failed");
                return;
            }
        };
        run(
            watch,
            &conn,
            TokioIo::new(client),
            TokioIo::new(upstream),
            opened,
        )
        .await;
    });
}

async fn run<C, U>(watch: Watch, conn: &Connection, client: C, upstream: U, opened: Opened)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let start = Instant::now();
    let _open = watch.recorder.metrics.tunnel();
    let from_client = AtomicU64::new(0);
    let from_upstream = AtomicU64::new(0);
    let copy = async {
        let mut client = Counted {
            io: client,
            read: &from_client,
        };
        let mut upstream = Counted {
            io: upstream,
            read: &from_upstream,
        };
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await
    };
    let mut revision = opened.revision.clone();
    let (reason, label) = until_closed(&watch, conn, &opened, &mut revision, copy).await;
    drop(opened.upstream_slot);
    watch.recorder.metrics.tunnel_closed(label);
    watch.recorder.audit.log(&TunnelRecord {
        event: "tunnel_closed",
        request_id: &opened.request_id,
        spiffe_id: conn.peer.spiffe_id.as_ref().map(|s| s.id.as_str()),
        serial: &conn.peer.serial,
        protocol: &opened.protocol,
        reason: &reason,
        policy_revision: &revision,
        bytes_from_client: from_client.load(Ordering::Relaxed),
        bytes_from_upstream: from_upstream.load(Ordering::Relaxed),
        duration_ns: start.elapsed().as_nanos() as u64,
    });
}

/// Run `copy` until either side closes or trust in the tunnel ends: the reason, as the record
/// and the metric say it. `revision` is the policy revision that last judged the tunnel.
async fn until_closed(
    watch: &Watch,
    conn: &Connection,
    opened: &Opened,
    revision: &mut Arc<str>,
    copy: impl std::future::Future<Output = std::io::Result<(u64, u64)>>,
) -> (Cow<'static, str>, &'static str) {
    // The proxy's receiver never marks what it has seen, so a clone sees every reload since
    // start as a change: the tunnel judges itself once at once after any reload, which also
    // covers one that landed between its request's decision and now.
    let mut changes = watch.changes.clone();
    let mut revocations = watch.trust.revocations.subscribe();
    let mut shutdown = watch.shutdown.clone();
    let expiry = tokio::time::sleep_until(expiry(conn.peer.not_after));
    // A tunnel opened under a delegation token lasts no longer than the token, and ends
    // when the token is revoked.
    let delegation = &opened.input["delegation"];
    let jti = delegation["jti"].as_string().ok().map(|s| s.to_string());
    let token_end = delegation["claims"]["exp"].as_f64().ok().map(|exp| {
        let leeway = watch.token_leeway.as_secs() as i64;
        self::expiry((exp.floor() as i64).saturating_add(leeway))
    });
    let token_expiry = sleep_until_some(token_end);
    tokio::pin!(copy, expiry, token_expiry);
    loop {
        tokio::select! {
            copied = &mut copy => return closed(copied),
            () = &mut expiry => return (Cow::Borrowed("certificate_expired"), "certificate_expired"),
            Ok(()) = changes.changed() => {
                if let Some(reason) = watch.trust.refusal(conn, jti.as_deref(), SystemTime::now()) {
                    return (Cow::Borrowed(reason), reason);
                }
                let (decision, judged) = watch.decider.judge(opened.input.clone()).await;
                *revision = judged;
                // Audit mode enforces no policy deny, on a tunnel as on a request.
                if !decision.allowed && watch.decider.enforces() {
                    return (decision.reason, "policy_denied");
                }
            }
            () = &mut token_expiry => return (Cow::Borrowed("token_expired"), "token_expired"),
            Ok(()) = revocations.changed() => {
                if watch.trust.revoked(conn, jti.as_deref()) {
                    return (Cow::Borrowed("revoked"), "revoked");
                }
            }
            () = stopped(&mut shutdown) => return (Cow::Borrowed("shutdown"), "shutdown"),
        }
    }
}

/// How the copy ended. A peer that just goes away (no TLS close_notify, a reset) has closed.
fn closed(copied: std::io::Result<(u64, u64)>) -> (Cow<'static, str>, &'static str) {
    match copied {
        Ok(_) => (Cow::Borrowed("closed"), "closed"),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            (Cow::Borrowed("closed"), "closed")
        }
        Err(e) => {
            tracing::debug!(error = %e, "tunnel failed");
            (Cow::Borrowed("error"), "error")
        }
    }
}

/// Resolves once shutdown has begun (or nobody can say so any more).
pub async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|down| *down).await;
}

/// When a certificate valid until `not_after` (Unix seconds) expires, on the tokio clock.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn expiry(not_after: i64) -> tokio::time::Instant {
    let now_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    // The certificate is valid through its not_after second.
    let left = Duration::from_secs(u64::try_from(not_after - now_unix + 1).unwrap_or(0));
    let now = tokio::time::Instant::now();
    now.checked_add(left)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 86_400))
}

/// An upgraded stream that counts the bytes read from it.
struct Counted<'a, T> {
    io: T,
    read: &'a AtomicU64,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let n = buf.filled().len().saturating_sub(before);
            this.read.fetch_add(n as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
