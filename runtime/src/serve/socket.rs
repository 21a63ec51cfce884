//! `serve --socket`: one event loop over the listener and every connection, and one worker thread
//! that owns the classifier.
//!
//! Why this shape: the classifier is held only to compute. Reads and writes never wait for it, and
//! it never waits for a client, so a client that stops reading blocks nobody (a thread per
//! connection writing under the classifier's lock did: one full socket buffer stopped the service).
//! Every connection's buffers are bounded both ways: the line being read (`max_request_bytes`),
//! requests read but not answered (`max_pending`, and their bytes `max_request_bytes`), answers
//! not yet taken (`max_outgoing_bytes`).
//! When one fills, the server stops reading that client instead of growing. The worker takes one
//! request per connection per turn, shared by tokens (`shares.rs`: deficit round robin), so a
//! client that pipelines thousands of requests or sends the largest `texts` arrays of the longest
//! texts gets its share of the classifier and no more. Single-text requests of one turn are
//! classified together as one batch.
//! A client that does not take its answers for `write_timeout`, stalls halfway through a line for
//! `read_timeout`, or says nothing for `idle_timeout` is disconnected; a connection past
//! `max_connections` takes the place of the connection idle the longest (idle for at least
//! [`MIN_IDLE_TO_EVICT`]), or, when none is, gets one error line and is closed.
//!
//! Threads: this loop, the worker, and the classifier's own (`--threads`), whatever the clients.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use mio::net::{UnixListener, UnixStream};
use mio::{Events, Interest, Poll, Token, Waker};
use serde_json::{json, Value};

use super::protocol::{self, Request, Texts};
use super::shares::Shares;
use crate::classifier::{Classifier, Prediction};
use crate::error::InputError;
use crate::text::Reading;

/// Single-text requests of one turn classified together (the classifier's batch size).
const SINGLES_PER_BATCH: usize = 8;

/// What one client may hold of the server, and how long it may keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more gets an error line and is closed.
    pub max_connections: usize,
    /// Longest request line; a longer one is answered with an error and its connection closed.
    pub max_request_bytes: usize,
    /// Requests read from one connection and not yet answered; past it, or past
    /// `max_request_bytes` of them, reading that client waits.
    pub max_pending: usize,
    /// Answers to one connection not yet taken by it; past it, reading that client waits.
    pub max_outgoing_bytes: usize,
    /// A request line must end this long after its first byte.
    pub read_timeout: Duration,
    /// A client with answers waiting must take some within this long, or it is disconnected.
    pub write_timeout: Duration,
    /// A connection with nothing to read, run or write is closed after this long.
    pub idle_timeout: Duration,
    /// Permissions of the socket file (owner-only by default: connecting needs write access).
    pub socket_mode: u32,
    /// After a stop: how long answers already computed may take to reach their clients.
    pub stop_grace: Duration,
}

impl Default for Limits {
    /// Sized for a 512 MB Pi Zero 2 W: per connection at most the line being read (1 MiB), requests
    /// queued (under 2 MiB), the one at the worker (1 MiB) and 256 KiB of answers plus one: about
    /// 150 MiB for 32 clients in the worst case.
    fn default() -> Self {
        Limits {
            max_connections: 32,
            max_request_bytes: 1 << 20,
            max_pending: 16,
            max_outgoing_bytes: 256 << 10,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            socket_mode: 0o600,
            stop_grace: Duration::from_millis(1500),
        }
    }
}

/// What a server did, returned when it stops.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServeStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections refused for being over `max_connections`.
    pub rejected: u64,
    /// Answers written in full (requests and error answers).
    pub answered: u64,
    /// Clients disconnected for not taking their answers.
    pub cut_off: u64,
    /// Clients disconnected for a stalled line or for idling.
    pub timed_out: u64,
    /// Requests read but not answered when the stop's grace ran out (their clients did not read).
    pub unanswered_at_stop: u64,
}

impl std::fmt::Display for ServeStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} answers on {} connections; {} refused (too many), {} cut off (not reading), \
             {} timed out, {} unanswered at stop",
            self.answered,
            self.connections,
            self.rejected,
            self.cut_off,
            self.timed_out,
            self.unanswered_at_stop
        )
    }
}

/// Why a server could not start or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    #[error("{0} exists and is not a socket")]
    NotASocket(PathBuf),
    #[error("{0} is in use by another server")]
    InUse(PathBuf),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Stops a running [`Server`] from another thread or a signal.
#[derive(Clone)]
pub struct StopHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl StopHandle {
    /// Asks the server to stop: it accepts and reads no more, answers what it has read (requests
    /// not yet started get a "stopping" error) and returns within `stop_grace` of now.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
    }

    /// Calls [`StopHandle::stop`] on SIGTERM or SIGINT (from a thread of its own).
    pub fn stop_on_signals(&self) -> std::io::Result<()> {
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
        ])?;
        let handle = self.clone();
        std::thread::Builder::new()
            .name("edgebert-signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    handle.stop();
                }
            })?;
        Ok(())
    }
}

/// A bound Unix socket, ready to serve.
pub struct Server {
    poll: Poll,
    listener: UnixListener,
    path: PathBuf,
    limits: Limits,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
const FIRST_CONNECTION: usize = 2;
/// A connection idle this long may be closed to make room for a new client when all are taken.
pub const MIN_IDLE_TO_EVICT: Duration = Duration::from_secs(1);
/// How often timeouts are checked when nothing else happens.
const TICK: Duration = Duration::from_millis(100);

impl Server {
    /// Binds `path` with `limits.socket_mode`. A stale socket file left at `path` is replaced; a
    /// live server's socket, or a file that is not a socket, is an error.
    pub fn bind(path: &Path, limits: Limits) -> Result<Server, ListenError> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(ListenError::NotASocket(path.into()));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(ListenError::InUse(path.into()));
            }
            std::fs::remove_file(path)?;
        }
        let in_path = |e: std::io::Error| {
            ListenError::Io(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        };
        let listener = bind_private(path).map_err(in_path)?;
        std::fs::set_permissions(
            path,
            std::fs::Permissions::from_mode(limits.socket_mode & 0o777),
        )
        .map_err(in_path)?;
        let poll = Poll::new()?;
        let mut listener = listener;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        Ok(Server {
            poll,
            listener,
            path: path.into(),
            limits,
            stop: Arc::new(AtomicBool::new(false)),
            waker,
        })
    }

    /// A handle that stops [`Server::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle {
            stop: Arc::clone(&self.stop),
            waker: Arc::clone(&self.waker),
        }
    }

    /// Serves until stopped ([`StopHandle`]), then removes the socket file and returns what it did.
    pub fn run(self, classifier: Classifier) -> Result<ServeStats, ListenError> {
        let Server {
            mut poll,
            listener,
            path,
            limits,
            stop,
            waker,
        } = self;
        let (jobs_tx, jobs_rx) = mpsc::channel::<Vec<Job>>();
        let (done_tx, done_rx) = mpsc::channel::<Vec<Done>>();
        let worker = {
            let (waker, stop) = (Arc::clone(&waker), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("edgebert-classify".into())
                .spawn(move || work(classifier, &jobs_rx, &done_tx, &waker, &stop))?
        };
        let mut state = Loop {
            limits,
            listener: Some(listener),
            path,
            conns: HashMap::new(),
            shares: Shares::default(),
            next_id: FIRST_CONNECTION,
            worker_busy: false,
            stats: ServeStats::default(),
            stopping_since: None,
            retry_accept: false,
            socket_removed: false,
            scratch: vec![0; 64 << 10],
        };
        let result = state.run(&mut poll, &stop, &jobs_tx, &done_rx);
        state.remove_socket_file();
        drop(jobs_tx);
        // An idle worker ends as soon as its queue closes; a busy one is left to finish alone
        // (the process may end first) rather than hold the stop past its grace.
        if !state.worker_busy {
            let _ = worker.join();
        }
        result.map(|()| state.stats)
    }
}

/// Binds with no access for others from the first instant (the umask), before the mode is set.
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: umask only swaps the process's file-creation mask; restored right after.
        let old = unsafe { libc::umask(0o177) };
        let bound = UnixListener::bind(path);
        unsafe { libc::umask(old) };
        bound
    }
    #[cfg(not(target_os = "linux"))]
    {
        UnixListener::bind(path)
    }
}

/// A request read from a connection, or the state of one under way.
enum Item {
    Line(Vec<u8>),
    /// Answered as it is (an over-long or stalled line).
    Error(Value),
    /// A `texts` request with some of its texts classified.
    Partial(Box<Partial>),
}

struct Partial {
    id: Value,
    top_k: Option<usize>,
    texts: Vec<String>,
    results: Vec<Result<Prediction, InputError>>,
}

struct Job {
    conn: usize,
    item: Item,
    /// Tokens this connection may use this turn (a `texts` request stops after them; one text
    /// at least).
    budget: usize,
}

enum Outcome {
    /// One answer line, newline included.
    Answer(Vec<u8>),
    /// Not finished: back to the front of its connection's queue.
    Again(Item),
}

struct Done {
    conn: usize,
    outcome: Outcome,
    /// Tokens classified for it this turn.
    spent: usize,
}

const STOPPING: &str = "server is stopping: request not run";
const STOPPED_MID: &str = "server is stopping: request not finished";

/// The worker: takes a turn's jobs, answers them, hands the answers back and wakes the loop.
fn work(
    mut classifier: Classifier,
    jobs: &mpsc::Receiver<Vec<Job>>,
    done: &mpsc::Sender<Vec<Done>>,
    waker: &Waker,
    stop: &AtomicBool,
) {
    for turn in jobs {
        let answers = run_turn(&mut classifier, turn, stop);
        if done.send(answers).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

/// Answers one turn: single texts together in batches, each `texts` request
/// its budget of tokens further. Once stopping, nothing new starts: the flag is read before
/// every batch, so a stop waits for one batch at most, however many clients take part.
fn run_turn(classifier: &mut Classifier, turn: Vec<Job>, stop: &AtomicBool) -> Vec<Done> {
    let stopping = || stop.load(Ordering::SeqCst);
    let line = |v: Value| {
        let mut bytes = v.to_string().into_bytes();
        bytes.push(b'\n');
        Outcome::Answer(bytes)
    };
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(turn.len());
    let mut spent = vec![0; turn.len()];
    let mut singles: Vec<(usize, Value, Option<usize>, String)> = Vec::new();
    let mut partials: Vec<(usize, Box<Partial>)> = Vec::new();
    let conns: Vec<usize> = turn.iter().map(|j| j.conn).collect();
    let budgets: Vec<usize> = turn.iter().map(|j| j.budget).collect();
    for (ix, job) in turn.into_iter().enumerate() {
        outcomes.push(match job.item {
            Item::Error(v) => Some(line(v)),
            Item::Line(l) if stopping() => Some(line(protocol::error(
                &protocol::request_id(&l),
                STOPPING.into(),
            ))),
            Item::Line(l) => match protocol::parse(&l) {
                Err(v) => Some(line(v)),
                Ok(Request {
                    id,
                    texts: Texts::One(text),
                    top_k,
                }) => {
                    singles.push((ix, id, top_k, text));
                    None
                }
                Ok(Request {
                    id,
                    texts: Texts::Many(texts),
                    top_k,
                }) => {
                    let results = Vec::with_capacity(texts.len());
                    let p = Partial {
                        id,
                        top_k,
                        texts,
                        results,
                    };
                    partials.push((ix, Box::new(p)));
                    None
                }
            },
            Item::Partial(p) if stopping() => {
                Some(line(protocol::error(&p.id, STOPPED_MID.into())))
            }
            Item::Partial(p) => {
                partials.push((ix, p));
                None
            }
        });
    }
    for group in singles.chunks(SINGLES_PER_BATCH) {
        let results = if stopping() {
            Err(STOPPING.to_string())
        } else {
            let texts: Vec<&str> = group.iter().map(|s| s.3.as_str()).collect();
            classifier.classify_batch(&texts).map_err(|e| e.to_string())
        };
        for (n, (ix, id, top_k, _)) in group.iter().enumerate() {
            outcomes[*ix] = Some(line(match &results {
                Ok(r) => match r.get(n) {
                    Some(r) => {
                        spent[*ix] = cost(r);
                        protocol::one_json(id, *top_k, r)
                    }
                    None => protocol::error(id, InputError::Empty.to_string()),
                },
                Err(e) => protocol::error(id, e.clone()),
            }));
        }
    }
    for (ix, mut p) in partials {
        if stopping() {
            outcomes[ix] = Some(line(protocol::error(&p.id, STOPPED_MID.into())));
            continue;
        }
        let start = p.results.len();
        let readings = within_budget(classifier, &p.texts[start..], budgets[ix]);
        outcomes[ix] = Some(match classifier.classify_read(&readings) {
            Err(e) => line(protocol::error(&p.id, e.to_string())),
            Ok(r) => {
                spent[ix] = r.iter().map(cost).sum();
                p.results.extend(r);
                if p.results.len() == p.texts.len() {
                    line(protocol::many_json(&p.id, p.top_k, &p.results))
                } else {
                    Outcome::Again(Item::Partial(p))
                }
            }
        });
    }
    conns
        .into_iter()
        .zip(outcomes)
        .zip(spent)
        .filter_map(|((conn, outcome), spent)| {
            outcome.map(|outcome| Done {
                conn,
                outcome,
                spent,
            })
        })
        .collect()
}

/// What classifying a text cost, in tokens (a text refused before the model costs one).
fn cost(result: &Result<Prediction, InputError>) -> usize {
    result.as_ref().map_or(1, |p| p.tokens.max(1))
}

/// The first of `texts` that a `budget` of tokens starts, read: another while some is left, one
/// at least (what goes over is charged as a debt, see [`Shares`]).
fn within_budget(
    classifier: &Classifier,
    texts: &[String],
    budget: usize,
) -> Vec<Result<Reading, InputError>> {
    let mut used = 0;
    let mut read = Vec::new();
    for text in texts {
        if !read.is_empty() && used >= budget {
            break;
        }
        let r = classifier.read(text);
        used += r.as_ref().map_or(1, |r| r.tokens().max(1));
        read.push(r);
    }
    read
}

/// One client's connection.
struct Conn {
    stream: UnixStream,
    /// The line being read (without its newline).
    line: Vec<u8>,
    /// When the unfinished line began.
    line_since: Option<Instant>,
    pending: VecDeque<Item>,
    /// Bytes of the request lines in `pending`.
    pending_bytes: usize,
    /// One of its requests is with the worker.
    at_worker: bool,
    out: Vec<u8>,
    written: usize,
    /// Last progress writing, or when answers started waiting.
    write_since: Instant,
    /// Last byte read or written.
    seen: Instant,
    /// Still reading requests (false after EOF, a stalled line, or a stop).
    reading: bool,
    /// Edge-triggered readiness: bytes may be waiting to be read.
    may_read: bool,
    /// Reading or writing failed: the client is gone.
    broken: bool,
}

impl Conn {
    fn new(stream: UnixStream, now: Instant) -> Conn {
        Conn {
            stream,
            line: Vec::new(),
            line_since: None,
            pending: VecDeque::new(),
            pending_bytes: 0,
            at_worker: false,
            out: Vec::new(),
            written: 0,
            write_since: now,
            seen: now,
            reading: true,
            may_read: true,
            broken: false,
        }
    }

    fn waiting_out(&self) -> usize {
        self.out.len() - self.written
    }

    /// Reading waits while this client has enough queued either way.
    fn full(&self, limits: &Limits) -> bool {
        self.pending.len() >= limits.max_pending
            || self.pending_bytes >= limits.max_request_bytes
            || self.waiting_out() >= limits.max_outgoing_bytes
    }

    /// Nothing read, queued, at the worker or waiting to be written.
    fn drained(&self) -> bool {
        self.pending.is_empty() && !self.at_worker && self.waiting_out() == 0
    }

    fn read(&mut self, limits: &Limits, scratch: &mut [u8], now: Instant) {
        while self.reading && self.may_read && !self.broken && !self.full(limits) {
            match self.stream.read(scratch) {
                Ok(0) => {
                    // EOF: a last line without its newline is still a request.
                    if !self.line.is_empty() {
                        self.end_line();
                    }
                    self.reading = false;
                }
                Ok(n) => {
                    self.seen = now;
                    self.take(&scratch[..n], limits, now);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.may_read = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.broken = true;
                    self.reading = false;
                }
            }
        }
    }

    fn take(&mut self, mut bytes: &[u8], limits: &Limits, now: Instant) {
        while self.reading {
            let (part, end) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], Some(i + 1)),
                None => (bytes, None),
            };
            if self.line.len() + part.len() > limits.max_request_bytes {
                // Answered, then closed: reading the rest of a line that may be gigabytes long
                // would cost the server what the client chooses.
                self.stop_reading(protocol::too_long(limits.max_request_bytes));
                return;
            }
            self.line.extend_from_slice(part);
            let Some(end) = end else {
                break;
            };
            self.end_line();
            bytes = &bytes[end..];
        }
        self.line_since = if self.line.is_empty() {
            None
        } else {
            self.line_since.or(Some(now))
        };
    }

    /// Reads no more from this client; `last` is answered after what it sent before.
    fn stop_reading(&mut self, last: Value) {
        self.pending.push_back(Item::Error(last));
        self.reading = false;
        self.line = Vec::new();
        self.line_since = None;
    }

    fn end_line(&mut self) {
        self.line_since = None;
        let mut line = std::mem::take(&mut self.line);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !line.iter().all(u8::is_ascii_whitespace) {
            self.pending_bytes += line.len();
            self.pending.push_back(Item::Line(line));
        }
    }

    fn queue_answer(&mut self, answer: &[u8], now: Instant) {
        if self.waiting_out() == 0 {
            self.write_since = now;
        }
        self.out.extend_from_slice(answer);
    }

    fn flush(&mut self, now: Instant) {
        while self.waiting_out() > 0 && !self.broken {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => self.broken = true,
                Ok(n) => {
                    self.written += n;
                    self.write_since = now;
                    self.seen = now;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.broken = true,
            }
        }
        if self.waiting_out() == 0 {
            self.out.clear();
            self.written = 0;
            if self.out.capacity() > 64 << 10 {
                self.out.shrink_to(64 << 10);
            }
        }
    }

    /// Whether this connection should close now, and why.
    fn verdict(&mut self, limits: &Limits, now: Instant) -> Verdict {
        if self.broken {
            return Verdict::Close(Close::Gone);
        }
        if self.waiting_out() > 0 && now - self.write_since >= limits.write_timeout {
            return Verdict::Close(Close::NotReading);
        }
        if let Some(since) = self.line_since {
            if self.reading && now - since >= limits.read_timeout {
                // Answered in order, after what it sent before; closed once that is written.
                let secs = limits.read_timeout.as_secs_f64();
                let e = format!("request line not finished within {secs} s; closing");
                self.stop_reading(json!({"id": null, "error": e}));
                return Verdict::Stalled;
            }
        }
        if !self.drained() {
            return Verdict::Keep;
        }
        if !self.reading {
            return Verdict::Close(Close::Done);
        }
        let idle = self.line.is_empty();
        if idle && now - self.seen >= limits.idle_timeout {
            Verdict::Close(Close::Idle)
        } else {
            Verdict::Keep
        }
    }
}

enum Verdict {
    Keep,
    /// A line stalled: its error answer is queued and reading stops.
    Stalled,
    Close(Close),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// Read to the end and answered in full, or stopped reading after a stalled line.
    Done,
    Gone,
    NotReading,
    Idle,
}

/// The event loop's state.
struct Loop {
    limits: Limits,
    listener: Option<UnixListener>,
    path: PathBuf,
    conns: HashMap<usize, Conn>,
    /// Connections in turn order and their shares of the classifier.
    shares: Shares,
    next_id: usize,
    worker_busy: bool,
    stats: ServeStats,
    stopping_since: Option<Instant>,
    /// Accepting failed for lack of resources (file descriptors): try again on the next tick.
    retry_accept: bool,
    socket_removed: bool,
    scratch: Vec<u8>,
}

impl Loop {
    fn run(
        &mut self,
        poll: &mut Poll,
        stop: &AtomicBool,
        jobs: &mpsc::Sender<Vec<Job>>,
        done: &mpsc::Receiver<Vec<Done>>,
    ) -> Result<(), ListenError> {
        let mut events = Events::with_capacity(256);
        loop {
            let more_to_read = self
                .conns
                .values()
                .any(|c| c.reading && c.may_read && !c.full(&self.limits));
            let timeout = if more_to_read { Duration::ZERO } else { TICK };
            if let Err(e) = poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    return Err(e.into());
                }
            }
            let now = Instant::now();
            let mut accept = self.retry_accept;
            for event in &events {
                match event.token() {
                    LISTENER => accept = true,
                    WAKER => {}
                    Token(id) => {
                        if let Some(c) = self.conns.get_mut(&id) {
                            if event.is_readable() || event.is_read_closed() || event.is_error() {
                                c.may_read = true;
                            }
                            if event.is_writable() {
                                c.flush(now);
                            }
                            // Both ways closed (not a half-close): the client is gone, and
                            // what it asked for is not worth computing.
                            if event.is_write_closed() {
                                c.broken = true;
                            }
                        }
                    }
                }
            }
            if stop.load(Ordering::SeqCst) && self.stopping_since.is_none() {
                self.begin_stop(poll, now);
            }
            if accept && self.listener.is_some() {
                self.accept(poll, now);
            }
            while let Ok(answers) = done.try_recv() {
                self.worker_busy = false;
                for d in answers {
                    let Some(c) = self.conns.get_mut(&d.conn) else {
                        continue;
                    };
                    c.at_worker = false;
                    self.shares.charge(d.conn, d.spent);
                    match d.outcome {
                        Outcome::Answer(bytes) => {
                            c.queue_answer(&bytes, now);
                            self.stats.answered += 1;
                        }
                        Outcome::Again(item) => c.pending.push_front(item),
                    }
                }
            }
            for c in self.conns.values_mut() {
                c.read(&self.limits, &mut self.scratch, now);
                c.flush(now);
            }
            self.close_finished(poll, now);
            if !self.worker_busy {
                let turn = self.next_turn();
                if !turn.is_empty() {
                    if jobs.send(turn).is_err() {
                        return Err(std::io::Error::other("the classifier's worker stopped").into());
                    }
                    self.worker_busy = true;
                }
            }
            if let Some(since) = self.stopping_since {
                if self.conns.is_empty() {
                    return Ok(());
                }
                if now - since >= self.limits.stop_grace {
                    for c in self.conns.values() {
                        self.stats.unanswered_at_stop +=
                            (c.pending.len() + usize::from(c.at_worker)) as u64;
                    }
                    return Ok(());
                }
            }
        }
    }

    fn accept(&mut self, poll: &Poll, now: Instant) {
        self.retry_accept = false;
        loop {
            let Some(listener) = &self.listener else {
                return;
            };
            let mut stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of file descriptors, say: the queued connections wait for a tick.
                    eprintln!("serve: accept: {e}");
                    self.retry_accept = true;
                    return;
                }
            };
            if self.conns.len() >= self.limits.max_connections && !self.evict_idle(poll, now) {
                self.stats.rejected += 1;
                let max = self.limits.max_connections;
                let busy =
                    json!({"id": null, "error": format!("server busy: {max} connections open")});
                // Best effort: the new socket has room for one line; then it is closed.
                let _ = stream.write_all(format!("{busy}\n").as_bytes());
                if self.stats.rejected.is_power_of_two() {
                    eprintln!(
                        "serve: refused a connection over --max-connections {max} ({} so far)",
                        self.stats.rejected
                    );
                }
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) = poll.registry().register(&mut stream, Token(id), interest) {
                eprintln!("serve: connection: {e}");
                continue;
            }
            self.conns.insert(id, Conn::new(stream, now));
            self.shares.join(id);
            self.stats.connections += 1;
        }
    }

    /// Makes room for a new client by closing the connection idle the longest, if one has been
    /// idle (nothing read, queued or waiting) for [`MIN_IDLE_TO_EVICT`]: clients that merely
    /// hold connections open cannot lock out the ones that ask.
    fn evict_idle(&mut self, poll: &Poll, now: Instant) -> bool {
        let idlest = self
            .conns
            .iter()
            .filter(|(_, c)| c.reading && c.drained() && c.line.is_empty())
            .filter(|(_, c)| now - c.seen >= MIN_IDLE_TO_EVICT)
            .min_by_key(|(_, c)| c.seen)
            .map(|(&id, _)| id);
        let Some(id) = idlest else {
            return false;
        };
        self.close(poll, id);
        self.stats.timed_out += 1;
        true
    }

    fn close(&mut self, poll: &Poll, id: usize) -> Option<Conn> {
        let mut c = self.conns.remove(&id)?;
        let _ = poll.registry().deregister(&mut c.stream);
        self.shares.leave(id);
        Some(c)
    }

    /// One request from each connection that has one, none at the worker, and its share of the
    /// classifier left ([`Shares`]).
    fn next_turn(&mut self) -> Vec<Job> {
        let conns = &mut self.conns;
        let ready = |id: usize| {
            conns
                .get(&id)
                .is_some_and(|c| !c.at_worker && !c.broken && !c.pending.is_empty())
        };
        let mut turn = Vec::new();
        for (id, budget) in self.shares.next_turn(ready) {
            let Some(c) = conns.get_mut(&id) else {
                continue;
            };
            if let Some(item) = c.pending.pop_front() {
                if let Item::Line(line) = &item {
                    c.pending_bytes -= line.len();
                }
                c.at_worker = true;
                turn.push(Job {
                    conn: id,
                    item,
                    budget,
                });
            }
        }
        turn
    }

    fn close_finished(&mut self, poll: &Poll, now: Instant) {
        let mut closing = Vec::new();
        for (&id, c) in self.conns.iter_mut() {
            match c.verdict(&self.limits, now) {
                Verdict::Keep => {}
                Verdict::Stalled => self.stats.timed_out += 1,
                Verdict::Close(why) => closing.push((id, why)),
            }
        }
        for (id, why) in closing {
            let Some(c) = self.close(poll, id) else {
                continue;
            };
            match why {
                Close::NotReading => {
                    self.stats.cut_off += 1;
                    eprintln!(
                        "serve: disconnected a client that took no answer for {} s ({} bytes waiting)",
                        self.limits.write_timeout.as_secs_f64(),
                        c.waiting_out()
                    );
                }
                Close::Idle => self.stats.timed_out += 1,
                Close::Done | Close::Gone => {}
            }
        }
    }

    fn begin_stop(&mut self, poll: &Poll, now: Instant) {
        self.stopping_since = Some(now);
        if let Some(mut listener) = self.listener.take() {
            let _ = poll.registry().deregister(&mut listener);
        }
        self.remove_socket_file();
        for c in self.conns.values_mut() {
            c.reading = false;
            c.line = Vec::new();
            c.line_since = None;
        }
    }

    /// Once: after a stop, another server may bind the same path.
    fn remove_socket_file(&mut self) {
        if !std::mem::replace(&mut self.socket_removed, true) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
