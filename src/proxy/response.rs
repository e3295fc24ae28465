//! The response body of every request: the upstream's, streamed; the upstream's as a step
//! rewrites it on the way ([`Streamed`]: a `tools/list` result in events); or regate's own.
//! It holds the
//! request's places (in flight on its connection, its upstream slots) until it is sent or
//! dropped, and the unread body of a request answered without forwarding, which it reads to
//! its end (within bounds) once the answer is out.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::sync::OwnedSemaphorePermit;

use super::connection::InFlight;
use crate::request::body::{drain_later, Replay};

/// Every response body regate sends.
pub struct Body {
    inner: Either<Either<Incoming, Full<Bytes>>, Streamed>,
    held: Held,
}

/// An error of a body, as the server sends it on.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The frames of a body another task writes: the upstream's, rewritten as they pass. The
/// channel is bounded, so the writer waits for the client, and it sees the client go away
/// when this is dropped.
pub struct Streamed {
    frames: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
}

impl Streamed {
    /// A body fed through a channel of `capacity` frames, and the sending end.
    pub fn channel(
        capacity: usize,
    ) -> (
        tokio::sync::mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
        Streamed,
    ) {
        let (tx, frames) = tokio::sync::mpsc::channel(capacity);
        (tx, Streamed { frames })
    }
}

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.get_mut().frames.poll_recv(cx)
    }
}

/// What a response holds until it is sent: only ever dropped, which lets each go.
#[derive(Default)]
pub(super) struct Held {
    pub(super) _in_flight: Option<InFlight>,
    pub(super) _slots: Option<Slots>,
    /// The body of a request answered without forwarding.
    pub(super) _unread: Option<Unread>,
}

/// The body of a request answered without forwarding: read to its end (within bounds) once
/// the answer is sent and this is dropped.
pub(super) struct Unread(pub(super) Replay);

impl Drop for Unread {
    fn drop(&mut self) {
        let body = std::mem::replace(&mut self.0, Replay::empty());
        drain_later(body);
    }
}

/// A request's places in the upstream limits.
pub(super) struct Slots {
    pub(super) _connection: OwnedSemaphorePermit,
    pub(super) _total: OwnedSemaphorePermit,
}

impl Body {
    /// A body regate makes itself.
    pub fn own(bytes: Bytes) -> Body {
        Body {
            inner: Either::Left(Either::Right(Full::new(bytes))),
            held: Held::default(),
        }
    }

    pub(super) fn upstream(body: Incoming) -> Body {
        Body {
            inner: Either::Left(Either::Left(body)),
            held: Held::default(),
        }
    }

    /// The upstream's body as another task rewrites it.
    pub(super) fn streamed(body: Streamed) -> Body {
        Body {
            inner: Either::Right(body),
            held: Held::default(),
        }
    }

    /// Hold `held` until this body is sent or dropped.
    pub(super) fn hold(&mut self, held: Held) {
        self.held = held;
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.held = Held::default();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
