//! One MCP session: its upstream (one server process, its stdin writer and
//! stdout reader; or one legacy HTTP+SSE connection, see [`crate::legacy`]),
//! and where each of the server's messages goes.
//!
//! Requests from the client get an id of the bridge's own before they reach
//! the server (a session's clients may reuse ids: the gateway lists tools
//! itself inside a client's session), and the answer goes back, with the
//! client's id, to the POST that sent it. Progress goes to the POST whose
//! request asked for it; the server's other notifications and its requests
//! go to the session's GET stream when one is open, else to the oldest POST
//! still waiting that takes SSE, else they wait (bounded) for a GET stream.

use std::collections::{BTreeMap, VecDeque};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{Notify, OwnedSemaphorePermit, mpsc};

use crate::legacy::{HttpClient, LegacyUpstream};
use crate::message::{Kind, Message, SERVER_ERROR};

/// Messages queued towards one HTTP response before the server waits.
pub(crate) const CHANNEL: usize = 64;
/// Lines queued for the server's stdin.
const STDIN_QUEUE: usize = 64;
/// Longest one message may wait for an HTTP response to take it; past it
/// that response is given up (a client that stopped reading).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Server messages kept for a GET stream that is not open yet.
const BACKLOG: usize = 256;
/// Longest line read from the server; a longer one is skipped.
pub(crate) const MAX_LINE: usize = 16 * 1024 * 1024;
/// How long a server gets after its stdin closes, then after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What goes to an HTTP response: a message, and whether it answers the
/// request of the POST (which then ends).
#[derive(Debug, Clone)]
pub(crate) struct Outbound {
    pub json: Bytes,
    pub response: bool,
}

/// A request waiting for its answer.
struct Pending {
    /// The client's id, put back on the answer.
    original: Value,
    progress: Option<Value>,
    /// The POST takes SSE, so other messages may go there too.
    streams: bool,
    tx: mpsc::Sender<Outbound>,
}

struct State {
    next_id: u64,
    /// By the bridge's id; ascending, so the first is the oldest.
    pending: BTreeMap<u64, Pending>,
    /// The GET stream.
    listener: Option<mpsc::Sender<Outbound>>,
    backlog: VecDeque<Outbound>,
    /// Requests in progress and streams open; the session is idle at 0.
    busy: usize,
    idle_since: Instant,
    /// From the `initialize` answer.
    protocol_version: Option<String>,
    closed: bool,
}

pub(crate) struct Session {
    pub id: String,
    /// The upstream's key (the bridge path the session was opened on).
    pub key: String,
    /// Messages for the server, one JSON-RPC message a line.
    outbox: mpsc::Sender<Vec<u8>>,
    state: Mutex<State>,
    kill: Notify,
}

/// Why a message could not reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SendError {
    /// The process has ended (or is being stopped).
    Gone,
    /// It has not read its stdin for [`DELIVERY_TIMEOUT`].
    Stuck,
}

impl Session {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn new(id: String, key: String) -> (Arc<Session>, mpsc::Receiver<Vec<u8>>) {
        let (outbox, lines) = mpsc::channel(STDIN_QUEUE);
        let session = Arc::new(Session {
            id,
            key,
            outbox,
            state: Mutex::new(State {
                next_id: 1,
                pending: BTreeMap::new(),
                listener: None,
                backlog: VecDeque::new(),
                busy: 0,
                idle_since: Instant::now(),
                protocol_version: None,
                closed: false,
            }),
            kill: Notify::new(),
        });
        (session, lines)
    }

    /// Starts `command` for a new session; `on_exit` runs once it has
    /// ended (after its last output was routed), with the permit that
    /// counts it among the live processes.
    pub(crate) fn spawn(
        id: String,
        key: String,
        command: &[String],
        permit: OwnedSemaphorePermit,
        on_exit: impl FnOnce(&Session) + Send + 'static,
    ) -> std::io::Result<Arc<Session>> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| std::io::Error::other("no command to run"))?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            // Its own process group, so a stop reaches what it starts too.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the server's pipes are missing"));
        };
        let (session, lines_rx) = Session::new(id, key);
        tracing::info!(session = %session.id, pid = child.id(), "MCP server process started");
        tokio::spawn(supervise(
            session.clone(),
            child,
            stdin,
            stdout,
            lines_rx,
            permit,
            on_exit,
        ));
        Ok(session)
    }

    /// Opens a session on a legacy HTTP+SSE server: connecting happens in
    /// the background, and what the client sends meanwhile waits (bounded)
    /// for the server's endpoint. `on_exit` as for [`Session::spawn`].
    pub(crate) fn connect(
        id: String,
        key: String,
        upstream: LegacyUpstream,
        client: Arc<HttpClient>,
        permit: OwnedSemaphorePermit,
        on_exit: impl FnOnce(&Session) + Send + 'static,
    ) -> Arc<Session> {
        let (session, mut outbox) = Session::new(id, key);
        tracing::info!(session = %session.id, url = %upstream.url, "connecting to a legacy SSE MCP server");
        let running = session.clone();
        tokio::spawn(async move {
            crate::legacy::run(&running, &upstream, &client, &mut outbox).await;
            running.close();
            on_exit(&running);
            drop(permit);
        });
        session
    }

    /// Asks the upstream to stop: a process gets its stdin closed, then
    /// SIGTERM, then SIGKILL; a legacy connection is closed.
    pub(crate) fn stop(&self) {
        self.state().closed = true;
        self.kill.notify_one();
    }

    /// Resolves once [`Session::stop`] was called.
    pub(crate) async fn killed(&self) {
        self.kill.notified().await;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.state().closed
    }

    /// Whether nothing has happened in the session for `idle`.
    pub(crate) fn idle_for(&self, idle: Duration) -> bool {
        let state = self.state();
        state.busy == 0 && state.idle_since.elapsed() >= idle
    }

    pub(crate) fn protocol_version(&self) -> Option<String> {
        self.state().protocol_version.clone()
    }

    pub(crate) fn set_protocol_version(&self, version: &str) {
        self.state().protocol_version = Some(version.to_string());
    }

    /// Marks the session busy until the guard drops.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.state().busy += 1;
        Busy(self.clone())
    }

    /// Registers a request and rewrites its id to the bridge's own; the
    /// answer (and whatever else is routed to this POST) comes on the
    /// returned channel. `None` when the session has ended.
    pub(crate) fn register(
        self: &Arc<Self>,
        message: &mut Message,
        streams: bool,
    ) -> Option<(Registered, mpsc::Receiver<Outbound>)> {
        let (tx, rx) = mpsc::channel(CHANNEL);
        let mut state = self.state();
        if state.closed {
            return None;
        }
        let id = state.next_id;
        state.next_id += 1;
        state.pending.insert(
            id,
            Pending {
                original: message.id().cloned().unwrap_or(Value::Null),
                progress: message.progress_token().cloned(),
                streams,
                tx,
            },
        );
        drop(state);
        message.set_id(Value::from(id));
        Some((
            Registered {
                session: self.clone(),
                id,
            },
            rx,
        ))
    }

    /// A `notifications/cancelled` names the client's id; the server knows
    /// the request by the bridge's.
    pub(crate) fn translate_cancellation(&self, message: &mut Message) {
        let Some(original) = message.cancelled_request().cloned() else {
            return;
        };
        let state = self.state();
        let ours = state
            .pending
            .iter()
            .find(|(_, p)| p.original == original)
            .map(|(id, _)| *id);
        drop(state);
        if let Some(id) = ours {
            message.set_cancelled_request(Value::from(id));
        }
    }

    /// Opens the GET stream: the messages waiting for one come first.
    /// `None` when one is open already or the session has ended.
    pub(crate) fn listen(self: &Arc<Self>) -> Option<(Listening, mpsc::Receiver<Outbound>)> {
        let (tx, rx) = mpsc::channel(CHANNEL + BACKLOG);
        let mut state = self.state();
        if state.closed || state.listener.as_ref().is_some_and(|l| !l.is_closed()) {
            return None;
        }
        while let Some(message) = state.backlog.pop_front() {
            // Capacity covers the whole backlog.
            let _ = tx.try_send(message);
        }
        state.listener = Some(tx);
        drop(state);
        Some((Listening(self.clone()), rx))
    }

    /// Queues one line for the server (its stdin, or a POST).
    pub(crate) async fn send(&self, line: Vec<u8>) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Gone);
        }
        match tokio::time::timeout(DELIVERY_TIMEOUT, self.outbox.send(line)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(SendError::Gone),
            Err(_) => Err(SendError::Stuck),
        }
    }

    /// Where one line of the server's output goes.
    fn route(&self, line: &[u8]) -> Option<(mpsc::Sender<Outbound>, Outbound, bool)> {
        let mut message = match Message::parse(line) {
            Ok(message) => message,
            Err((_, why)) => {
                let shown = String::from_utf8_lossy(&line[..line.len().min(200)]).into_owned();
                tracing::warn!(session = %self.id, why, line = %shown, "the MCP server wrote a line that is not a JSON-RPC message");
                return None;
            }
        };
        let mut state = self.state();
        if message.kind == Kind::Response {
            let Some(pending) = message
                .id()
                .and_then(Value::as_u64)
                .and_then(|id| state.pending.remove(&id))
            else {
                tracing::debug!(session = %self.id, "an answer to no request in flight; dropped");
                return None;
            };
            message.set_id(pending.original);
            let out = Outbound {
                json: message.to_bytes(),
                response: true,
            };
            return Some((pending.tx, out, false));
        }
        let out = Outbound {
            json: message.to_bytes(),
            response: false,
        };
        if let Some(token) = message.reported_progress()
            && let Some(pending) = state
                .pending
                .values()
                .find(|p| p.streams && p.progress.as_ref() == Some(token))
        {
            return Some((pending.tx.clone(), out, false));
        }
        if let Some(listener) = state.listener.as_ref().filter(|l| !l.is_closed()) {
            return Some((listener.clone(), out, true));
        }
        if let Some(pending) = state.pending.values().find(|p| p.streams) {
            return Some((pending.tx.clone(), out, false));
        }
        if state.backlog.len() == BACKLOG {
            state.backlog.pop_front();
            tracing::warn!(session = %self.id, "no stream takes the MCP server's messages; the oldest waiting one was dropped");
        }
        state.backlog.push_back(out);
        None
    }

    /// Delivers one message of the server to where [`Session::route`]
    /// sends it; a response that stopped reading is given up.
    pub(crate) async fn dispatch(&self, line: &[u8]) {
        let Some((tx, out, to_listener)) = self.route(line) else {
            return;
        };
        match tokio::time::timeout(DELIVERY_TIMEOUT, tx.send(out)).await {
            Ok(Ok(())) => {}
            // The POST went away (the client left): nothing to deliver to.
            Ok(Err(_)) => {}
            Err(_) => {
                tracing::warn!(session = %self.id, "a client stopped reading its stream; it is closed");
                if to_listener {
                    let mut state = self.state();
                    if state.listener.as_ref().is_some_and(|l| l.same_channel(&tx)) {
                        state.listener = None;
                    }
                }
            }
        }
    }

    /// Answers every request still waiting with a JSON-RPC error saying
    /// `why`, and closes the session.
    pub(crate) fn fail_pending(&self, why: &str) {
        let mut state = self.state();
        state.closed = true;
        for pending in std::mem::take(&mut state.pending).into_values() {
            let json = crate::message::error(Some(&pending.original), SERVER_ERROR, why);
            // A full channel: the POST learns it from the channel closing.
            let _ = pending.tx.try_send(Outbound {
                json,
                response: true,
            });
        }
    }

    /// Ends the session: every waiting POST learns the server is gone.
    pub(crate) fn close(&self) {
        let mut state = self.state();
        state.closed = true;
        state.pending.clear();
        state.listener = None;
        state.backlog.clear();
    }
}

/// Keeps the session busy (not idle) while it lives.
pub(crate) struct Busy(Arc<Session>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.busy = state.busy.saturating_sub(1);
        state.idle_since = Instant::now();
    }
}

/// A request in flight; forgotten when its POST goes away.
pub(crate) struct Registered {
    session: Arc<Session>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.session.state().pending.remove(&self.id);
    }
}

/// The open GET stream; closed when its response goes away.
pub(crate) struct Listening(Arc<Session>);

impl Drop for Listening {
    fn drop(&mut self) {
        let mut state = self.0.state();
        if state.listener.as_ref().is_some_and(mpsc::Sender::is_closed) {
            state.listener = None;
        }
    }
}

/// Runs one server process to its end.
async fn supervise(
    session: Arc<Session>,
    mut child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
    lines: mpsc::Receiver<Vec<u8>>,
    permit: OwnedSemaphorePermit,
    on_exit: impl FnOnce(&Session),
) {
    let mut writer = tokio::spawn(write_lines(stdin, lines));
    let reader = tokio::spawn(read_lines(session.clone(), stdout));
    let status = tokio::select! {
        status = child.wait() => status,
        () = session.kill.notified() => stop(&mut child, &mut writer).await,
    };
    writer.abort();
    // Its last words (an answer written just before exiting) still count.
    let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
    session.close();
    on_exit(&session);
    drop(permit);
    match status {
        Ok(status) => {
            tracing::info!(session = %session.id, %status, "MCP server process ended");
        }
        Err(error) => {
            tracing::warn!(session = %session.id, %error, "MCP server process could not be waited for");
        }
    }
}

/// The MCP stdio shutdown: close stdin, wait; SIGTERM, wait; SIGKILL. The
/// signals go to the process group, so helpers it started stop too.
async fn stop(
    child: &mut Child,
    writer: &mut tokio::task::JoinHandle<()>,
) -> std::io::Result<ExitStatus> {
    writer.abort();
    let _ = writer.await;
    if let Ok(status) = tokio::time::timeout(STOP_GRACE, child.wait()).await {
        return status;
    }
    let group = child
        .id()
        .and_then(|pid| i32::try_from(pid).ok())
        .and_then(rustix::process::Pid::from_raw);
    if let Some(group) = group {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        if let Ok(status) = tokio::time::timeout(STOP_GRACE, child.wait()).await {
            return status;
        }
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
    child.kill().await?;
    child.wait().await
}

async fn write_lines(mut stdin: ChildStdin, mut lines: mpsc::Receiver<Vec<u8>>) {
    while let Some(line) = lines.recv().await {
        if let Err(error) = stdin.write_all(&line).await {
            tracing::debug!(%error, "the MCP server's stdin is closed");
            return;
        }
        if let Err(error) = stdin.flush().await {
            tracing::debug!(%error, "the MCP server's stdin is closed");
            return;
        }
    }
}

async fn read_lines(session: Arc<Session>, stdout: ChildStdout) {
    let mut reader = tokio::io::BufReader::new(stdout);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut reader, &mut line).await {
            Ok(Line::End) => return,
            Ok(Line::TooLong) => {
                tracing::warn!(session = %session.id, limit = MAX_LINE, "the MCP server wrote a line longer than the bridge reads; skipped");
                continue;
            }
            Ok(Line::Read) => {}
            Err(error) => {
                tracing::warn!(session = %session.id, %error, "reading the MCP server's stdout failed");
                return;
            }
        }
        if line.trim_ascii().is_empty() {
            continue;
        }
        session.dispatch(&line).await;
    }
}

enum Line {
    Read,
    /// Longer than [`MAX_LINE`]: read past and dropped.
    TooLong,
    End,
}

/// Reads up to and without the next `\n`, holding at most [`MAX_LINE`].
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> std::io::Result<Line> {
    let mut too_long = false;
    loop {
        let buffer = reader.fill_buf().await?;
        if buffer.is_empty() {
            return Ok(if line.is_empty() && !too_long {
                Line::End
            } else if too_long {
                Line::TooLong
            } else {
                Line::Read
            });
        }
        let (chunk, done) = match buffer.iter().position(|b| *b == b'\n') {
            Some(at) => (&buffer[..at], Some(at + 1)),
            None => (buffer, None),
        };
        if !too_long {
            if line.len() + chunk.len() > MAX_LINE {
                too_long = true;
                line.clear();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buffer.len());
        reader.consume(used);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Read });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_split_and_bounded() {
        let long = vec![b'x'; MAX_LINE + 10];
        let mut input = b"one\n\ntwo".to_vec();
        input.push(b'\n');
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nthree");
        let mut reader = tokio::io::BufReader::new(&input[..]);
        let mut seen = Vec::new();
        loop {
            let mut line = Vec::new();
            match read_line(&mut reader, &mut line).await.unwrap() {
                Line::End => break,
                Line::TooLong => seen.push("<too long>".to_string()),
                Line::Read => seen.push(String::from_utf8(line).unwrap()),
            }
        }
        assert_eq!(seen, ["one", "", "two", "<too long>", "three"]);
    }
}
