//! The response body of every request: the upstream's, streamed, or regate's own. It holds the
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
    inner: Either<Incoming, Full<Bytes>>,
    held: Held,
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
            inner: Either::Right(Full::new(bytes)),
            held: Held::default(),
        }
    }

    pub(super) fn upstream(body: Incoming) -> Body {
        Body {
            inner: Either::Left(body),
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
    type Error = <Either<Incoming, Full<Bytes>> as hyper::body::Body>::Error;

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
