//! The wrapper around every accepted TCP connection.
//!
//! engineioxide owns a websocket once hyper hands it over, and it can only
//! drop a connection, not say why. This wrapper sits below both and gives the
//! server five things they lack:
//!
//! * **A size limit read from frame headers.** Once the connection has
//!   switched protocols, every client frame header is read as it passes; a
//!   message announced above `--max-payload-bytes` is cut off before its
//!   payload is read, and the client gets close code 1009.
//! * **A close with a reason, from anywhere.** A [`ConnHandle`] (in every
//!   request's extensions, and by Engine.IO session id in [`Connections`])
//!   asks the connection to close: a close frame with a code and reason is
//!   put between two outgoing frames, then the connection ends. The client
//!   reconnects by itself ("transport close").
//! * **Escaped event names.** Text messages are rewritten as they pass so
//!   that a name with JSON escapes gets an error ack instead of closing the
//!   connection (see [`crate::edge::escaped_names`]).
//! * **Large frames in pieces.** A client frame over 4 KiB reaches the
//!   websocket parser cut into pieces, so its read buffer never grows to the
//!   largest message a client sent (see [`crate::edge::ws_split`]).
//! * **Write stalls.** How long the connection has been unable to write
//!   (the client stopped reading) is kept, so slow consumers can be found.
//!
//! The connection's [`Slot`] lives here, so the counts drop when it closes.

use std::collections::HashMap;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use crate::edge::conn_limits::Slot;
use crate::edge::outgoing::{Outgoing, Plan};
use crate::edge::parser_mismatch;
use crate::edge::ws_frames::{CLOSE_TOO_BIG, FrameTracker, Scan, close_frame};
use crate::edge::ws_split::FrameSplitter;

/// What the rest of the server may ask of one connection.
#[derive(Debug, Default)]
pub struct ConnShared {
    close_request: Mutex<Option<(u16, String)>>,
    closing: AtomicBool,
    read_waker: AtomicWaker,
    /// Milliseconds (since [`epoch`]) at which writes started to block; 0 when not blocked.
    blocked_since_ms: AtomicU64,
    websocket: AtomicBool,
    /// The Engine.IO session upgraded on this connection, if any.
    sid: OnceLock<String>,
    /// Success acks queued for this websocket and not yet written: they are
    /// counted once written (see `reply`).
    success_acks: Mutex<std::collections::HashSet<crate::edge::ws_frames::AckKey>>,
    /// A plain client's websocket (`plain::bridge`): its frames are not
    /// Socket.IO packets, and the bridge counts the acks it writes.
    bridged: AtomicBool,
}

/// A handle to one connection (cheap to clone; does not keep it open).
#[derive(Debug, Clone)]
pub struct ConnHandle(pub Arc<ConnShared>);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    // +1 so that 0 can mean "not blocked".
    epoch().elapsed().as_millis() as u64 + 1
}

impl ConnHandle {
    /// Ends the connection: a websocket gets a close frame with `code` and
    /// `reason` first. Idempotent: true for the first request only.
    pub fn close(&self, code: u16, reason: &str) -> bool {
        if self.0.closing.swap(true, Ordering::AcqRel) {
            return false;
        }
        if let Ok(mut req) = self.0.close_request.lock() {
            *req = Some((code, reason.to_string()));
        }
        self.0.read_waker.wake();
        true
    }

    /// A success ack with this key is about to be queued: count it once its
    /// frame is written.
    pub fn expect_success_ack(&self, key: crate::edge::ws_frames::AckKey) {
        if self.0.bridged.load(Ordering::Acquire) {
            return;
        }
        if let Ok(mut acks) = self.0.success_acks.lock() {
            acks.insert(key);
        }
    }

    /// The ack was not queued after all.
    pub fn forget_success_ack(&self, key: &crate::edge::ws_frames::AckKey) {
        if let Ok(mut acks) = self.0.success_acks.lock() {
            acks.remove(key);
        }
    }

    /// Marks the connection as a plain client's (see `ConnShared::bridged`).
    pub fn mark_bridged(&self) {
        self.0.bridged.store(true, Ordering::Release);
    }

    /// How long writes have been blocked (the peer is not reading), if they are.
    pub fn write_blocked_for(&self) -> Option<Duration> {
        match self.0.blocked_since_ms.load(Ordering::Acquire) {
            0 => None,
            since => Some(Duration::from_millis(now_ms().saturating_sub(since))),
        }
    }

    pub fn is_websocket(&self) -> bool {
        self.0.websocket.load(Ordering::Acquire)
    }
}

/// Every open connection, so that stalled ones can be found, and the
/// websocket that carries each upgraded Engine.IO session.
#[derive(Debug, Default)]
pub struct Connections {
    next_id: AtomicU64,
    all: Mutex<HashMap<u64, Weak<ConnShared>>>,
    by_sid: Mutex<HashMap<String, Weak<ConnShared>>>,
    /// Connection state recovery's view of outgoing packets, when it is on.
    pub frames: OnceLock<Arc<crate::recovery::frames::Frames>>,
}

impl Connections {
    fn add(&self, shared: &Arc<ConnShared>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut all) = self.all.lock() {
            all.insert(id, Arc::downgrade(shared));
        }
        id
    }

    fn remove(&self, id: u64, shared: &ConnShared) {
        if let Ok(mut all) = self.all.lock() {
            all.remove(&id);
        }
        if let Some(sid) = shared.sid.get()
            && let Ok(mut by_sid) = self.by_sid.lock()
        {
            by_sid.remove(sid);
        }
    }

    /// Records that the websocket `conn` carries Engine.IO session `sid`
    /// (an upgrade from long-polling).
    pub fn bind_sid(&self, sid: &str, conn: &ConnHandle) {
        if conn.0.sid.set(sid.to_string()).is_ok()
            && let Ok(mut by_sid) = self.by_sid.lock()
        {
            by_sid.insert(sid.to_string(), Arc::downgrade(&conn.0));
        }
    }

    /// The websocket carrying session `sid`, when it was upgraded from polling.
    pub fn by_sid(&self, sid: &str) -> Option<ConnHandle> {
        let by_sid = self.by_sid.lock().ok()?;
        by_sid.get(sid)?.upgrade().map(ConnHandle)
    }

    /// The websockets whose writes have been blocked for at least `min`.
    pub fn stalled(&self, min: Duration) -> Vec<ConnHandle> {
        let Ok(all) = self.all.lock() else {
            return Vec::new();
        };
        all.values()
            .filter_map(Weak::upgrade)
            .map(ConnHandle)
            .filter(|c| c.is_websocket() && c.write_blocked_for().is_some_and(|d| d >= min))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.all.lock().map(|a| a.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

enum Phase {
    Http,
    /// The 101 answer is being written; this many bytes of it are left.
    SwitchingProtocols(usize),
    Websocket,
}

enum Closing {
    Open,
    /// A close frame waits for the next frame boundary; `.1` bytes are written.
    Queued(Vec<u8>, usize),
    /// The close frame is out (or there was no websocket): the connection is over.
    Done,
}

/// A TCP connection with the guards of the module doc.
pub struct GuardedIo {
    inner: TcpStream,
    shared: Arc<ConnShared>,
    registry: Arc<Connections>,
    id: u64,
    max_message: u64,
    phase: Phase,
    read_frames: FrameTracker,
    /// Cuts large client frames into pieces (see [`crate::edge::ws_split`]).
    splitter: FrameSplitter,
    /// Output of the splitter that did not fit the last read.
    carry: Vec<u8>,
    write_frames: FrameTracker,
    closing: Closing,
    /// Started when closing begins: how long the peer has to take the rest
    /// of the frame in flight and the close frame.
    close_grace: Option<Pin<Box<tokio::time::Sleep>>>,
    /// The server ended this websocket: linger on drop (see [`linger`]).
    server_closed: bool,
    /// Outgoing frames decided for connection state recovery (see
    /// [`crate::edge::outgoing`]), when it is on.
    outgoing: Option<Outgoing>,
    /// A frame written instead of the one the writer gave, and how much of
    /// it is out.
    replacement: Vec<u8>,
    replacement_pos: usize,
    _slot: Arc<Slot>,
}

/// How long a closing websocket waits for a peer that does not read (a slow
/// consumer) before its close frame is given up and the connection dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

impl GuardedIo {
    pub fn new(
        inner: TcpStream,
        slot: Arc<Slot>,
        registry: Arc<Connections>,
        max_message: u64,
        msgpack: bool,
    ) -> Self {
        let shared = Arc::new(ConnShared::default());
        let id = registry.add(&shared);
        let outgoing = registry.frames.get().cloned().map(Outgoing::new);
        GuardedIo {
            inner,
            shared,
            registry,
            id,
            max_message,
            phase: Phase::Http,
            // With msgpack every Socket.IO packet is binary: a text one is
            // a client with the wrong parser (see `parser_mismatch`).
            read_frames: if msgpack {
                FrameTracker::rewriting_names_refusing_text()
            } else {
                FrameTracker::rewriting_names()
            },
            splitter: FrameSplitter::default(),
            carry: Vec::new(),
            write_frames: FrameTracker::tracking_acks(),
            closing: Closing::Open,
            close_grace: None,
            server_closed: false,
            outgoing,
            replacement: Vec::new(),
            replacement_pos: 0,
            _slot: slot,
        }
    }

    pub fn handle(&self) -> ConnHandle {
        ConnHandle(self.shared.clone())
    }

    /// Turns a close request into a queued close frame (or the end, for plain HTTP).
    fn take_close_request(&mut self) {
        if !matches!(self.closing, Closing::Open) {
            return;
        }
        let request = self
            .shared
            .close_request
            .lock()
            .ok()
            .and_then(|mut r| r.take());
        if let Some((code, reason)) = request {
            self.start_closing(code, &reason);
        }
    }

    fn start_closing(&mut self, code: u16, reason: &str) {
        self.server_closed = matches!(self.phase, Phase::Websocket);
        self.closing = match self.phase {
            Phase::Websocket => Closing::Queued(close_frame(code, reason), 0),
            _ => Closing::Done,
        };
    }

    /// True once a closing connection's peer has not taken its bytes for
    /// [`CLOSE_GRACE`]: the connection is then over without a close frame
    /// (so that reads, which wait for pending writes, end too).
    fn grace_over(&mut self, cx: &mut Context<'_>) -> bool {
        if !matches!(self.closing, Closing::Queued(..)) {
            return false;
        }
        let grace = self
            .close_grace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(CLOSE_GRACE)));
        if grace.as_mut().poll(cx).is_pending() {
            return false;
        }
        tracing::debug!("peer does not read; dropping the connection without a close frame");
        self.closing = Closing::Done;
        true
    }

    /// Writes the queued close frame if the outgoing stream is between two
    /// frames. Ready once it is out (or cannot be written).
    fn poll_send_close(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if let Some(res) = self.poll_replacement(cx) {
                if res.is_pending() && !self.grace_over(cx) {
                    return Poll::Pending;
                }
                // Could not finish it: the connection ends without it.
                self.replacement = Vec::new();
                self.replacement_pos = 0;
            }
            let Closing::Queued(frame, written) = &mut self.closing else {
                return Poll::Ready(());
            };
            if !self.write_frames.at_boundary() {
                return if self.grace_over(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                };
            }
            match Pin::new(&mut self.inner).poll_write(cx, &frame[*written..]) {
                Poll::Ready(Ok(n)) if n > 0 => {
                    *written += n;
                    if *written == frame.len() {
                        self.closing = Closing::Done;
                    }
                }
                Poll::Ready(_) => {
                    self.closing = Closing::Done;
                }
                Poll::Pending if self.grace_over(cx) => return Poll::Ready(()),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Writes the rest of a replacement frame. `None` once it is all out.
    fn poll_replacement(&mut self, cx: &mut Context<'_>) -> Option<Poll<io::Result<usize>>> {
        while self.replacement_pos < self.replacement.len() {
            let rest = std::mem::take(&mut self.replacement);
            let res = Pin::new(&mut self.inner).poll_write(cx, &rest[self.replacement_pos..]);
            match res {
                Poll::Ready(Ok(n)) if n > 0 => {
                    self.note_write(true);
                    self.after_write(&rest[self.replacement_pos..self.replacement_pos + n]);
                    self.replacement_pos += n;
                    self.replacement = rest;
                }
                Poll::Ready(Ok(_)) => return Some(Poll::Ready(Ok(0))),
                Poll::Ready(Err(e)) => return Some(Poll::Ready(Err(e))),
                Poll::Pending => {
                    self.note_write(false);
                    self.replacement = rest;
                    return Some(Poll::Pending);
                }
            }
        }
        self.replacement = Vec::new();
        self.replacement_pos = 0;
        None
    }

    fn note_write(&mut self, ready: bool) {
        let since = &self.shared.blocked_since_ms;
        if ready {
            since.store(0, Ordering::Release);
        } else if since.load(Ordering::Acquire) == 0 {
            since.store(now_ms(), Ordering::Release);
        }
    }

    /// Follows what was written: the end of a 101 answer switches the
    /// connection to websocket frames.
    fn after_write(&mut self, written: &[u8]) {
        let mut rest = written;
        if let Phase::Http = self.phase
            && rest.starts_with(b"HTTP/1.1 101 ")
        {
            let head_len = rest
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|p| p + 4)
                // The head did not fit this write: assume it ends with it.
                .unwrap_or(rest.len());
            self.phase = Phase::SwitchingProtocols(head_len);
        }
        if let Phase::SwitchingProtocols(left) = self.phase {
            let n = left.min(rest.len());
            rest = &rest[n..];
            if left == n {
                self.phase = Phase::Websocket;
                self.shared.websocket.store(true, Ordering::Release);
            } else {
                self.phase = Phase::SwitchingProtocols(left - n);
            }
        }
        if let Phase::Websocket = self.phase {
            self.write_frames.scan(rest, u64::MAX);
            let written = self.write_frames.take_written_acks();
            if !written.is_empty() {
                let mut expected = self
                    .shared
                    .success_acks
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                // One count per frame: the first of its possible keys that
                // was expected (see `ws_frames::msgpack_ack_keys`).
                let n = written
                    .iter()
                    .filter(|keys| keys.iter().any(|k| expected.remove(k)))
                    .count();
                drop(expected);
                crate::metrics::acks_written(n as u64);
            }
        }
    }
}

impl Drop for GuardedIo {
    fn drop(&mut self) {
        self.registry.remove(self.id, &self.shared);
        if self.server_closed {
            linger(&self.inner, self._slot.clone());
        }
    }
}

/// How long a websocket the server closed keeps reading (and discarding)
/// what its peer still sends.
const LINGER: Duration = Duration::from_secs(2);

/// Closing a TCP socket with unread incoming bytes makes the kernel send a
/// reset, and a reset makes the peer's kernel throw away what it had
/// received and not yet read: acks already written would vanish. So, like
/// nginx's lingering close, a duplicate of the socket is half-closed (FIN
/// after the written bytes) and drained for [`LINGER`] before it closes; it
/// keeps its place in the connection caps meanwhile.
fn linger(stream: &TcpStream, slot: Arc<Slot>) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    // SAFETY: dup returns a new descriptor that the std stream then owns.
    let fd = unsafe { libc::dup(stream.as_raw_fd()) };
    if fd < 0 {
        return;
    }
    let std = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let _ = std.shutdown(std::net::Shutdown::Write);
    rt.spawn(async move {
        let Ok(mut s) = TcpStream::from_std(std) else {
            return;
        };
        let mut buf = vec![0u8; 16 * 1024];
        let drain = async {
            use tokio::io::AsyncReadExt;
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
        drop(slot);
    });
}

impl AsyncRead for GuardedIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.shared.read_waker.register(cx.waker());
        this.take_close_request();
        if !matches!(this.closing, Closing::Open) {
            // Try to get the close frame out now; if the writer is in the
            // middle of a frame, it goes out after it (see poll_write). The
            // reader sees the end of the stream either way.
            let _ = this.poll_send_close(cx);
            return Poll::Ready(Ok(()));
        }
        if let Phase::Websocket = this.phase
            && !this.carry.is_empty()
        {
            let n = this.carry.len().min(buf.remaining());
            buf.put_slice(&this.carry[..n]);
            this.carry.drain(..n);
            if this.carry.is_empty() {
                this.carry = Vec::new();
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            let before = buf.filled().len();
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
            let Phase::Websocket = this.phase else {
                return Poll::Ready(Ok(()));
            };
            if buf.filled().len() == before {
                return Poll::Ready(Ok(()));
            }
            let new = &buf.filled()[before..];
            let scan = this.read_frames.scan(new, this.max_message);
            let patches = this.read_frames.take_patches();
            if !patches.is_empty() {
                let new = &mut buf.filled_mut()[before..];
                for (at, byte) in patches {
                    new[at] = byte;
                }
            }
            let refused = scan != Scan::Fine;
            match scan {
                Scan::Fine => {}
                Scan::TooBig { at } => {
                    buf.set_filled(before + at);
                    tracing::info!(
                        limit = this.max_message,
                        "websocket message over --max-payload-bytes; closing with 1009"
                    );
                    crate::metrics::limit_hit("max_payload_bytes");
                    this.start_closing(
                        CLOSE_TOO_BIG,
                        &format!("message larger than {} bytes", this.max_message),
                    );
                    let _ = this.poll_send_close(cx);
                }
                Scan::TextPacket { at } => {
                    buf.set_filled(before + at);
                    parser_mismatch::seen("websocket");
                    this.start_closing(parser_mismatch::CLOSE_UNSUPPORTED, parser_mismatch::REASON);
                    let _ = this.poll_send_close(cx);
                }
            }
            // Large frames go on in pieces (see `ws_split`).
            if let Some(out) = this.splitter.feed(&buf.filled()[before..]) {
                buf.set_filled(before);
                let fit = out.len().min(buf.remaining());
                buf.put_slice(&out[..fit]);
                this.carry.extend_from_slice(&out[fit..]);
                if out.is_empty() && !refused {
                    // Only the start of a header: nothing to hand on yet,
                    // and an empty read would mean the end.
                    continue;
                }
            }
            return Poll::Ready(Ok(()));
        }
    }
}

impl AsyncWrite for GuardedIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        this.take_close_request();
        // A replacement frame already counted as written goes out whole
        // before anything else, a close frame included.
        if !matches!(this.closing, Closing::Done)
            && let Some(res) = this.poll_replacement(cx)
        {
            return res;
        }
        match this.closing {
            Closing::Open => {}
            Closing::Queued(..) if this.write_frames.at_boundary() => {
                if this.poll_send_close(cx).is_pending() {
                    return Poll::Pending;
                }
                // Nothing may follow a close frame; the writer's own close
                // and anything after it are dropped.
                return Poll::Ready(Ok(buf.len()));
            }
            // Finish the frame in flight first, no further.
            Closing::Queued(..) => {}
            Closing::Done => return Poll::Ready(Ok(buf.len())),
        }
        let mut limit = match (&this.closing, this.write_frames.bytes_to_boundary()) {
            (Closing::Queued(..), Some(n)) => (n as usize).min(buf.len()),
            (Closing::Queued(..), None) => 1,
            _ => buf.len(),
        };
        if let (Phase::Websocket, Closing::Open) = (&this.phase, &this.closing)
            && this.outgoing.is_some()
        {
            let at_boundary = this.write_frames.at_boundary();
            let to_boundary = this.write_frames.bytes_to_boundary();
            let upgraded = this.shared.sid.get().map(String::as_str);
            let plan = this
                .outgoing
                .as_mut()
                .map(|o| o.plan(buf, at_boundary, to_boundary, upgraded));
            match plan {
                Some(Plan::Write(n)) => limit = limit.min(n),
                Some(Plan::Skip(n)) => return Poll::Ready(Ok(n)),
                Some(Plan::Replace { consumed, frame }) => {
                    this.replacement = frame;
                    this.replacement_pos = 0;
                    if let Some(Poll::Ready(Err(e))) = this.poll_replacement(cx) {
                        return Poll::Ready(Err(e));
                    }
                    return Poll::Ready(Ok(consumed));
                }
                None => {}
            }
        }
        let res = Pin::new(&mut this.inner).poll_write(cx, &buf[..limit]);
        match &res {
            Poll::Ready(Ok(n)) => {
                this.note_write(true);
                this.after_write(&buf[..*n]);
                if let Some(o) = &mut this.outgoing {
                    o.wrote(*n);
                }
            }
            Poll::Ready(Err(_)) => this.note_write(true),
            // Closing, and the peer does not take the frame in flight: the
            // rest is dropped with the connection.
            Poll::Pending if this.grace_over(cx) => return Poll::Ready(Ok(buf.len())),
            Poll::Pending => this.note_write(false),
        }
        res
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_replacement(cx) {
            Some(Poll::Pending) => return Poll::Pending,
            Some(Poll::Ready(Err(e))) => return Poll::Ready(Err(e)),
            _ => {}
        }
        if let Closing::Queued(..) = this.closing
            && this.poll_send_close(cx).is_pending()
        {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        match this.poll_replacement(cx) {
            Some(Poll::Pending) => return Poll::Pending,
            Some(Poll::Ready(Err(e))) => return Poll::Ready(Err(e)),
            _ => {}
        }
        if let Closing::Queued(..) = this.closing
            && this.poll_send_close(cx).is_pending()
        {
            return Poll::Pending;
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }

    // hyper then writes each answer as one buffer, which is what lets
    // `after_write` see the 101 head whole.
    fn is_write_vectored(&self) -> bool {
        false
    }
}
