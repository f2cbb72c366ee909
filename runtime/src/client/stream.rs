//! The consuming side of a server-streaming call: [`Streaming`], a
//! [`futures_util::Stream`] (the `futures` crate's `Stream`) of items that grants the server credit as it is read.
//!
//! The request grants an initial window of `stream_window` items; each time the
//! consumer has taken half the window, a `Credit` frame grants that many again, so the
//! server stays at most one window ahead and the client buffers at most one window.
//! Dropping the stream before its end cancels the call on the server.

use std::{
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures_util::Stream;
use tokio::{sync::mpsc, time::Sleep};

use super::connection::{Connection, StreamEvent};
use crate::IpcError;

/// The items of one server-streaming call, in order, each `Ok(item)`; a failure
/// (the handler's `Status`, a lost connection, the deadline) is the last item, as an
/// `Err`. Generated clients return it from streaming methods.
///
/// Dropping it before the end cancels the call on the server.
///
/// ```ignore
/// use futures_util::StreamExt;
/// let mut events = client.watch(request).await?;
/// while let Some(event) = events.next().await {
///     println!("{:?}", event?);
/// }
/// ```
#[must_use = "a stream does nothing unless polled; dropping it cancels the call"]
pub struct Streaming<T> {
    raw: RawStreaming,
    _items: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("correlation_id", &self.raw.id)
            .field("window", &self.raw.window)
            .field("finished", &self.raw.finished)
            .finish_non_exhaustive()
    }
}

/// The untyped part of [`Streaming`]: encoded items, credit, cancel on drop.
pub(super) struct RawStreaming {
    id: u64,
    items: mpsc::Receiver<StreamEvent>,
    connection: Arc<Connection>,
    window: u32,
    /// Items taken since credit was last granted.
    taken: u32,
    deadline: Option<Pin<Box<Sleep>>>,
    deadline_ms: u64,
    finished: bool,
}

impl RawStreaming {
    pub(super) fn new(
        id: u64,
        items: mpsc::Receiver<StreamEvent>,
        connection: Arc<Connection>,
        window: u32,
        deadline: Option<std::time::Duration>,
    ) -> Self {
        Self {
            id,
            items,
            connection,
            window,
            taken: 0,
            deadline: deadline.map(|after| Box::pin(tokio::time::sleep(after))),
            deadline_ms: deadline.map_or(0, crate::config::millis),
            finished: false,
        }
    }

    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<Option<StreamEvent>> {
        if self.finished {
            return Poll::Ready(None);
        }
        if let Some(deadline) = &mut self.deadline {
            if deadline.as_mut().poll(cx).is_ready() {
                self.finish(true);
                return Poll::Ready(Some(Err(IpcError::DeadlineExceeded {
                    after_ms: self.deadline_ms,
                })));
            }
        }
        match self.items.poll_recv(cx) {
            Poll::Ready(Some(Ok(item))) => {
                self.taken += 1;
                if self.taken >= (self.window / 2).max(1) {
                    self.connection.grant(self.id, self.taken);
                    self.taken = 0;
                }
                Poll::Ready(Some(Ok(item)))
            }
            Poll::Ready(Some(Err(error))) => {
                self.finish(false);
                Poll::Ready(Some(Err(error)))
            }
            Poll::Ready(None) => {
                self.finish(false);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Marks the stream over; `cancel` tells the server to stop it too.
    fn finish(&mut self, cancel: bool) {
        self.finished = true;
        self.deadline = None;
        if cancel {
            self.connection.cancel(self.id);
        }
        self.items.close();
    }
}

impl Drop for RawStreaming {
    fn drop(&mut self) {
        if !self.finished {
            // Still in the call table: the server is producing. Stop it.
            self.connection.cancel(self.id);
        }
    }
}

impl<T> Streaming<T> {
    pub(super) fn new(raw: RawStreaming) -> Self {
        Self {
            raw,
            _items: PhantomData,
        }
    }
}

impl<T: prost::Message + Default> Stream for Streaming<T> {
    type Item = Result<T, IpcError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        match this.raw.poll_raw(cx) {
            Poll::Ready(Some(Ok(bytes))) => match crate::payload::decode::<T>(&bytes) {
                Ok(item) => Poll::Ready(Some(Ok(item))),
                Err(error) => {
                    // An item this client cannot read: the stream cannot go on.
                    this.raw.finish(true);
                    Poll::Ready(Some(Err(error.into())))
                }
            },
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
