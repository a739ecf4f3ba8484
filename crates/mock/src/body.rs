//! Response bodies: a single buffer, or a pre-rendered stream of frames that
//! is released frame by frame on real timers and can abort mid-way.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// How long an aborting stream waits before failing, so the frames it already
/// produced reach the socket: hyper drops its unflushed write buffer when a
/// body errors.
const FLUSH_BEFORE_ABORT: Duration = Duration::from_millis(5);

/// The error a body yields to make hyper abort the connection (HTTP/1.1) or
/// reset the stream (HTTP/2), simulating an upstream that died mid-response.
#[derive(Debug, thiserror::Error)]
#[error("tollgate-mock: injected disconnect")]
pub(crate) struct Disconnect;

/// Body of every response the mock sends.
#[derive(Debug)]
pub(crate) enum MockBody {
    Full(Option<Bytes>),
    Stream(FrameStream),
    /// Frames as they are sent; ends when every sender is gone (the legacy
    /// SSE transport's stream).
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

impl MockBody {
    pub(crate) fn full(bytes: impl Into<Bytes>) -> Self {
        Self::Full(Some(bytes.into()))
    }

    /// A complete body that is cut in half: the headers announce the full
    /// length, half the bytes are sent, then the connection is aborted.
    pub(crate) fn truncated(bytes: Bytes) -> Self {
        let len = bytes.len();
        Self::Stream(FrameStream {
            exact_len: Some(len as u64),
            marks: vec![(len / 2, Duration::ZERO), (len, Duration::ZERO)],
            data: bytes,
            consumed: 0,
            next: 0,
            remaining_before_abort: Some(1),
            sleep: None,
            armed: false,
        })
    }
}

/// Frames rendered into one buffer; `marks` holds each frame's end offset and
/// the delay before it is released. Frames are zero-copy slices of `data`.
#[derive(Debug)]
pub(crate) struct FrameStream {
    data: Bytes,
    marks: Vec<(usize, Duration)>,
    consumed: usize,
    next: usize,
    /// Frames still allowed before aborting; `None` never aborts.
    remaining_before_abort: Option<u32>,
    exact_len: Option<u64>,
    sleep: Option<Pin<Box<Sleep>>>,
    /// Whether `sleep` currently waits for frame `next`.
    armed: bool,
}

impl FrameStream {
    /// Waits `delay` on the reused timer, counted from the first poll for this frame.
    fn poll_delay(&mut self, cx: &mut Context<'_>, delay: Duration) -> Poll<()> {
        if !self.armed {
            let deadline = Instant::now() + delay;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        if let Some(sleep) = &mut self.sleep {
            ready!(sleep.as_mut().poll(cx));
        }
        self.armed = false;
        Poll::Ready(())
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Disconnect>>> {
        let Some(&(end, delay)) = self.marks.get(self.next) else {
            return Poll::Ready(None);
        };
        if self.remaining_before_abort == Some(0) {
            ready!(self.poll_delay(cx, FLUSH_BEFORE_ABORT));
            // Fail from now on; hyper does not poll again after an error.
            self.next = self.marks.len();
            return Poll::Ready(Some(Err(Disconnect)));
        }
        if !delay.is_zero() {
            ready!(self.poll_delay(cx, delay));
        }
        let frame = self.data.split_to(end - self.consumed);
        self.consumed = end;
        self.next += 1;
        if let Some(remaining) = &mut self.remaining_before_abort {
            *remaining -= 1;
        }
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }
}

impl Body for MockBody {
    type Data = Bytes;
    type Error = Disconnect;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Disconnect>>> {
        match self.get_mut() {
            Self::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Self::Stream(stream) => stream.poll_next(cx),
            Self::Channel(frames) => frames.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(bytes) => bytes.as_ref().is_none_or(Bytes::is_empty),
            Self::Stream(stream) => stream.next >= stream.marks.len(),
            Self::Channel(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Stream(stream) => stream
                .exact_len
                .map(SizeHint::with_exact)
                .unwrap_or_default(),
            Self::Channel(_) => SizeHint::default(),
        }
    }
}

/// Renders a stream's frames into one buffer (one allocation for the whole
/// response) and records where each frame ends.
#[derive(Debug)]
pub(crate) struct StreamBuilder {
    buf: Vec<u8>,
    marks: Vec<(usize, Duration)>,
}

impl StreamBuilder {
    pub(crate) fn with_capacity(bytes: usize, frames: usize) -> Self {
        Self {
            buf: Vec::with_capacity(bytes),
            marks: Vec::with_capacity(frames),
        }
    }

    /// The buffer the current frame is written into.
    pub(crate) fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    /// Ends the current frame; it is released `delay` after the previous one.
    pub(crate) fn end_frame(&mut self, delay: Duration) {
        self.marks.push((self.buf.len(), delay));
    }

    pub(crate) fn finish(self, disconnect_after: Option<u32>) -> MockBody {
        MockBody::Stream(FrameStream {
            data: Bytes::from(self.buf),
            marks: self.marks,
            consumed: 0,
            next: 0,
            remaining_before_abort: disconnect_after,
            exact_len: None,
            sleep: None,
            armed: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn frames_are_released_separately_with_delays() {
        let mut b = StreamBuilder::with_capacity(16, 3);
        b.buf().extend_from_slice(b"one");
        b.end_frame(Duration::from_millis(20));
        b.buf().extend_from_slice(b"two");
        b.end_frame(Duration::ZERO);
        b.buf().extend_from_slice(b"three");
        b.end_frame(Duration::from_millis(20));
        let mut body = b.finish(None);
        let start = std::time::Instant::now();
        let mut frames = Vec::new();
        while let Some(frame) = body.frame().await {
            frames.push(frame.unwrap().into_data().unwrap());
        }
        assert_eq!(frames, ["one", "two", "three"]);
        assert!(start.elapsed() >= Duration::from_millis(40));
    }

    #[tokio::test]
    async fn disconnect_after_yields_error() {
        let mut b = StreamBuilder::with_capacity(16, 3);
        for part in ["a", "b", "c"] {
            b.buf().extend_from_slice(part.as_bytes());
            b.end_frame(Duration::ZERO);
        }
        let mut body = b.finish(Some(2));
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "a"
        );
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "b"
        );
        assert!(body.frame().await.unwrap().is_err());
    }

    #[tokio::test]
    async fn truncated_announces_full_length() {
        let mut body = MockBody::truncated(Bytes::from_static(b"0123456789"));
        assert_eq!(body.size_hint().exact(), Some(10));
        assert_eq!(
            body.frame().await.unwrap().unwrap().into_data().unwrap(),
            "01234"
        );
        assert!(body.frame().await.unwrap().is_err());
    }
}
