//! HTTP/1.1 "Hello, World!" with keep-alive and pipelining, parsed with
//! `httparse`, one tasklet per connection — ready for `wrk`:
//!
//! ```text
//! RUST_LOG=warn cargo run --release --example http_hello        # 127.0.0.1:8080
//! wrk -t1 -c100 -d10s http://127.0.0.1:8080/
//! ```
//!
//! HTTPS (built with `--features tls`; any PEM certificate and key):
//!
//! ```text
//! cargo run --release --features tls --example http_hello -- --tls-cert cert.pem --tls-key key.pem
//! wrk -t1 -c100 -d10s https://127.0.0.1:8080/
//! ```
//!
//! By default it runs one worker thread per allowed CPU (a
//! `tasklet::Runtime`), each with its own `StreamServer` on an
//! `SO_REUSEPORT` listener; `--workers 1` is the single-threaded server.
//! `--work-us N` burns N µs of CPU per request (a stand-in for real work,
//! so that a benchmark measures the server, not the load generator).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "tls")]
use tasklet::netio::tls::TlsAcceptor;
use tasklet::netio::{StreamServer, TcpStream, WorkerListeners};
use tasklet::signal::{self, Signal};
use tasklet::sync::Event;

mod common;
use common::args::{self, Args};

const USAGE: &str = "\
http_hello: HTTP/1.1 keep-alive \"Hello, World!\" server (one tasklet per connection)

USAGE:
    http_hello [--addr HOST:PORT] [--workers N] [--work-us N] [--idle-timeout SECS]
               [--request-timeout SECS] [--write-timeout SECS]
               [--tls-cert FILE --tls-key FILE]

OPTIONS:
    --addr HOST:PORT         address to listen on [default: 127.0.0.1:8080]
    --workers N              worker threads, each serving the address
                             (SO_REUSEPORT) [default: the CPUs this process may use]
    --work-us N              CPU time to burn per request, in microseconds [default: 0]
    --idle-timeout SECS      close a connection on which nothing arrives for
                             this long [default: 60]
    --request-timeout SECS   a request (head and body) must arrive complete
                             within this long of its first byte [default: 30]
    --write-timeout SECS     a batch of responses must be taken by the client
                             within this long [default: 30]
    --tls-cert FILE          serve HTTPS with this PEM certificate chain (needs
                             --tls-key, and a build with `--features tls`)
    --tls-key FILE           the PEM private key of --tls-cert
    -h, --help               print this help

Requests are framed strictly (Content-Length or chunked; anything ambiguous
gets a 400 and a close); bodies are read and discarded. Ctrl-C or SIGTERM
stops it.";

/// Microseconds of CPU burnt per request (`--work-us`).
static WORK_US: AtomicU64 = AtomicU64::new(0);

/// Burns `--work-us` of CPU: the stand-in for a handler's real work.
fn simulated_work() {
    let us = WORK_US.load(Ordering::Relaxed);
    if us == 0 {
        return;
    }
    let until = Instant::now() + Duration::from_micros(us);
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

/// The usual response: HTTP/1.1, keep-alive.
const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nServer: tasklet\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
/// [`HELLO`]'s status line and headers, for responses that add a header or
/// (to `HEAD`) have no body.
const HELLO_HEADERS: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: tasklet\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n";
const HELLO_BODY: &[u8] = b"Hello, World!";
const MAX_HEADERS: usize = 32;
/// The largest request head (request line and headers) accepted.
const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size or trailer line accepted in a chunked body.
const MAX_LINE: usize = 4096;
/// How long a connection may take over each part of its life. Each bounds
/// what a client that stalls, trickles, or never reads can hold (a tasklet,
/// a buffer, kernel socket memory).
#[derive(Clone, Copy, Debug)]
struct Limits {
    /// Nothing arrives for this long: close (an idle keep-alive connection,
    /// or a client stalling in the middle of a request). A per-read timeout.
    idle: Duration,
    /// A whole request, from its first byte: a deadline, so a head trickled
    /// one byte at a time cannot hold the connection and its buffer forever.
    request: Duration,
    /// Writing one batch of responses: a deadline, so a client that
    /// pipelines requests but never reads the answers is dropped.
    write: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            idle: Duration::from_secs(60),
            request: Duration::from_secs(30),
            write: Duration::from_secs(30),
        }
    }
}

/// Where a connection is in the request it is reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Discarding this many more bytes of a `Content-Length` body.
    Body(u64),
    /// In a chunked body, before a chunk-size line.
    ChunkSize,
    /// Discarding this many more bytes of chunk data.
    ChunkData(u64),
    /// Before the CRLF that ends a chunk's data.
    ChunkEnd,
    /// Reading trailer lines up to the empty line that ends the body.
    Trailers,
}

/// What the head of a request says about the rest of it.
struct Request {
    body: State,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
    expect_continue: bool,
}

/// A request the server refuses: the status line, sent before closing.
struct Reject(&'static str);

impl Reject {
    const BAD_REQUEST: Reject = Reject("400 Bad Request");
    const TOO_LARGE: Reject = Reject("431 Request Header Fields Too Large");
    const NOT_IMPLEMENTED: Reject = Reject("501 Not Implemented");

    fn response(&self) -> Vec<u8> {
        format!(
            "HTTP/1.1 {}\r\nServer: tasklet\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.0
        )
        .into_bytes()
    }
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Reads the framing of a request from its head: how long its body is
/// (`Content-Length` or chunked; RFC 9112 section 6), whether the connection
/// stays open after it, whether the client waits for `100 Continue`.
fn framing(req: &httparse::Request<'_, '_>) -> Result<Request, Reject> {
    let http10 = req.version == Some(0);
    let mut r = Request {
        body: State::Body(0),
        head_only: req.method == Some("HEAD"),
        keep_alive: !http10,
        http10,
        expect_continue: false,
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only (no sign, no spaces inside), and every copy equal:
            // anything else could make us and a proxy disagree on where the
            // next request starts.
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(Reject::BAD_REQUEST);
            }
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(Reject::BAD_REQUEST)?;
            if length.is_some_and(|l| l != n) {
                return Err(Reject::BAD_REQUEST);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only "chunked" alone is understood (gzip etc. are not).
            if http10 || chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(if http10 {
                    Reject::BAD_REQUEST
                } else {
                    Reject::NOT_IMPLEMENTED
                });
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                r.keep_alive = false;
            } else if has_token(h.value, "keep-alive") {
                r.keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("expect") && has_token(h.value, "100-continue") {
            r.expect_continue = !http10;
        }
    }
    r.body = match (chunked, length) {
        (true, Some(_)) => return Err(Reject::BAD_REQUEST),
        (true, None) => State::ChunkSize,
        (false, n) => State::Body(n.unwrap_or(0)),
    };
    Ok(r)
}

/// One connection's request reader: a state machine fed with whatever bytes
/// have arrived. Bodies are discarded as they stream in (never buffered), so
/// a request of any size is served in constant memory.
struct Conn {
    state: State,
    /// The request being read (set once its head is parsed).
    req: Option<Request>,
    /// Requests answered so far.
    answered: u64,
}

impl Conn {
    /// Consumes what it can of `data`, appending responses to `out`.
    /// Returns how many bytes were consumed and whether the connection must
    /// close once `out` is written.
    fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            match self.state {
                State::Head => {
                    if rest.is_empty() {
                        return (pos, false);
                    }
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut req = httparse::Request::new(&mut headers);
                    let parsed = req.parse(rest);
                    let reject = match parsed {
                        Ok(httparse::Status::Complete(len)) => match framing(&req) {
                            Ok(r) => {
                                pos += len;
                                if r.expect_continue && r.body != State::Body(0) {
                                    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                                }
                                self.state = r.body;
                                self.req = Some(r);
                                continue;
                            }
                            Err(reject) => reject,
                        },
                        Ok(httparse::Status::Partial) if rest.len() < MAX_HEAD => {
                            return (pos, false)
                        }
                        Ok(httparse::Status::Partial) => Reject::TOO_LARGE,
                        Err(httparse::Error::TooManyHeaders) => Reject::TOO_LARGE,
                        Err(e) => {
                            log::debug!("bad request: {e}");
                            Reject::BAD_REQUEST
                        }
                    };
                    out.extend_from_slice(&reject.response());
                    return (pos, true);
                }
                State::Body(0) => {
                    if self.respond(out) {
                        return (pos, true);
                    }
                }
                State::Body(n) | State::ChunkData(n) => {
                    let take = n.min(rest.len() as u64);
                    pos += take as usize;
                    let left = n - take;
                    self.state = match self.state {
                        State::Body(_) => State::Body(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    if left > 0 {
                        return (pos, false);
                    }
                }
                State::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        pos += used;
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if rest.len() < MAX_LINE => return (pos, false),
                    _ => {
                        out.extend_from_slice(&Reject::BAD_REQUEST.response());
                        return (pos, true);
                    }
                },
                State::ChunkEnd => {
                    if rest.len() < 2 {
                        return (pos, false);
                    }
                    if &rest[..2] != b"\r\n" {
                        out.extend_from_slice(&Reject::BAD_REQUEST.response());
                        return (pos, true);
                    }
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        pos += i + 1;
                        if rest[..i].trim_ascii().is_empty() && self.respond(out) {
                            return (pos, true);
                        }
                    }
                    None if rest.len() < MAX_LINE => return (pos, false),
                    None => {
                        out.extend_from_slice(&Reject::BAD_REQUEST.response());
                        return (pos, true);
                    }
                },
            }
        }
    }

    /// The request is complete: queues its response and gets ready for the
    /// next one. Returns whether the connection closes after it.
    fn respond(&mut self, out: &mut Vec<u8>) -> bool {
        self.state = State::Head;
        self.answered += 1;
        let Some(r) = self.req.take() else {
            return false;
        };
        simulated_work();
        if r.keep_alive && !r.http10 && !r.head_only {
            out.extend_from_slice(HELLO);
            return false;
        }
        out.extend_from_slice(HELLO_HEADERS);
        if !r.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else {
            out.extend_from_slice(b"Connection: keep-alive\r\n"); // HTTP/1.0 asked for it
        }
        out.extend_from_slice(b"\r\n");
        if !r.head_only {
            out.extend_from_slice(HELLO_BODY);
        }
        !r.keep_alive
    }
}

/// Closes after a final response so the client gets to read it: closing a
/// socket with unread request bytes would reset the connection and could
/// destroy the response in flight. Sends FIN, then discards what the client
/// still sends, for at most a second and 1 MiB.
fn linger_close(s: &TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 8192];
    let mut left = 1usize << 20;
    let mut r = s;
    while left > 0 {
        let now = Instant::now();
        if now >= deadline || s.set_read_timeout(Some(deadline - now)).is_err() {
            return;
        }
        match r.read(&mut sink) {
            Ok(n) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

/// Serves requests on one connection until the client closes or asks to,
/// or overruns one of its `limits` (then fails with `TimedOut`).
fn serve(s: TcpStream, peer: SocketAddr, limits: Limits) -> io::Result<()> {
    s.set_read_timeout(Some(limits.idle))?;
    serve_stream(&s, &s, peer, limits, linger_close)
}

/// Serves HTTPS on one connection: the handshake (bounded by the idle
/// timeout), then requests as [`serve`]; a final response is followed by
/// close_notify.
#[cfg(feature = "tls")]
fn serve_tls(
    acceptor: &TlsAcceptor,
    s: TcpStream,
    peer: SocketAddr,
    limits: Limits,
) -> io::Result<()> {
    s.set_read_timeout(Some(limits.idle))?;
    let tls = acceptor.accept(s)?;
    serve_stream(&tls, tls.get_ref(), peer, limits, |tls| {
        let _ = tls.shutdown();
        linger_close(tls.get_ref());
    })
}

/// Serves requests read from `s` until the client closes or asks to, then
/// calls `close`; or until it overruns one of its `limits`, set on its
/// socket `sock` (then fails with `TimedOut`). Pipelined requests are
/// answered in order, with one write per batch.
fn serve_stream<S: Read + Write>(
    mut s: S,
    sock: &TcpStream,
    peer: SocketAddr,
    limits: Limits,
    close: impl FnOnce(S),
) -> io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    let mut conn = Conn {
        state: State::Head,
        req: None,
        answered: 0,
    };
    // Whether the read deadline runs (a request has begun).
    let mut in_request = false;
    loop {
        if filled == buf.len() {
            // Only a request head (or a chunk line) can fill the buffer:
            // `feed` refuses one past MAX_HEAD, so this stays bounded.
            buf.resize(buf.len() * 2, 0);
        }
        let n = s.read(&mut buf[filled..])?;
        if n == 0 {
            if filled > 0 || conn.state != State::Head {
                log::debug!("{peer}: closed in the middle of a request");
            }
            return Ok(());
        }
        if !in_request {
            // The first bytes of a request: its deadline starts.
            sock.set_read_deadline(Some(Instant::now() + limits.request))?;
            in_request = true;
        }
        filled += n;
        let answered = conn.answered;
        let (used, close_after) = conn.feed(&buf[..filled], &mut out);
        if !out.is_empty() {
            sock.set_write_deadline(Some(Instant::now() + limits.write))?;
            s.write_all(&out)?;
            out.clear();
        }
        if close_after {
            close(s);
            return Ok(());
        }
        buf.copy_within(used..filled, 0);
        filled -= used;
        if conn.answered != answered {
            // Requests were answered: the next one (pipelined bytes of it
            // may be here already) gets its own deadline.
            in_request = filled > 0 || conn.state != State::Head;
            let next = in_request.then(|| Instant::now() + limits.request);
            sock.set_read_deadline(next)?;
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut addr = "127.0.0.1:8080".to_owned();
    let (mut tls_cert, mut tls_key) = (None::<String>, None::<String>);
    let mut limits = Limits::default();
    let mut workers: Option<usize> = None;
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            "--tls-cert" => tls_cert = Some(args.value()),
            "--tls-key" => tls_key = Some(args.value()),
            "--workers" => workers = Some(args.value_with(args::positive)),
            "--work-us" => WORK_US.store(args.parse(), Ordering::Relaxed),
            "--idle-timeout" => limits.idle = args.value_with(args::seconds),
            "--request-timeout" => limits.request = args.value_with(args::seconds),
            "--write-timeout" => limits.write = args.value_with(args::seconds),
            _ => args.unknown(),
        }
    }
    let tls = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => Some((cert, key)),
        _ => args::fail(USAGE, "--tls-cert and --tls-key go together"),
    };
    #[cfg(not(feature = "tls"))]
    if tls.is_some() {
        eprintln!(
            "http_hello: built without TLS: run it with \
             `cargo run --release --features tls --example http_hello -- ...`"
        );
        return ExitCode::from(2);
    }
    #[cfg(feature = "tls")]
    let tls = match tls.map(|(cert, key)| tasklet::netio::tls::server_config_from_pem(cert, key)) {
        None => None,
        Some(Ok(mut config)) => {
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Some(TlsAcceptor::new(std::sync::Arc::new(config)))
        }
        Some(Err(e)) => {
            eprintln!("http_hello: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let workers =
        workers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    // Bind before starting the workers, so a bad address fails at once; each
    // worker then serves its own listener on that address.
    let listeners = match WorkerListeners::bind(addr.as_str(), workers) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("http_hello: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listeners.local_addr();
    // Catch SIGINT/SIGTERM from here on (queued for the waiter on worker 0),
    // so one that arrives before that waiter runs still stops us cleanly.
    if let Err(e) = signal::handle(&[Signal::Int, Signal::Term]) {
        eprintln!("http_hello: cannot handle SIGINT/SIGTERM: {e}");
        return ExitCode::FAILURE;
    }
    log::info!(
        "http_hello listening on {scheme}://{local} with {workers} worker(s) (Ctrl-C to stop)"
    );
    // Set on SIGINT/SIGTERM (or when a worker fails); every worker waits for
    // it, then stops its own server (`tasklet::sync::Event` works across
    // threads).
    let stop = Arc::new(Event::new());
    let codes = tasklet::Runtime::new()
        .workers(workers)
        .name("http")
        .run(move || {
            let listener = match listeners.listener() {
                Ok(l) => l,
                Err(e) => {
                    log::error!("cannot listen on {local}: {e}");
                    stop.set(); // the whole server stops
                    return ExitCode::FAILURE;
                }
            };
            #[cfg(feature = "tls")]
            let server = match tls.clone() {
                Some(acceptor) => StreamServer::new(listener, move |s, peer| {
                    serve_tls(&acceptor, s, peer, limits)
                }),
                None => StreamServer::new(listener, move |s, peer| serve(s, peer, limits)),
            };
            #[cfg(not(feature = "tls"))]
            let server = StreamServer::new(listener, move |s, peer| serve(s, peer, limits));
            let server = match server {
                Ok(s) => s.start(),
                Err(e) => {
                    log::error!("cannot serve on {local}: {e}");
                    stop.set(); // the whole server stops
                    return ExitCode::FAILURE;
                }
            };
            if tasklet::worker_index() == Some(0) {
                // One signal waiter for the process, so no worker can miss it.
                let stop = stop.clone();
                tasklet::spawn(move || {
                    match signal::wait(&[Signal::Int, Signal::Term]) {
                        Ok(sig) => log::info!("{sig:?} received: shutting down"),
                        Err(e) => log::error!("cannot wait for signals: {e}; stopping"),
                    }
                    stop.set();
                });
            }
            stop.wait();
            server.stop(Duration::from_millis(500));
            ExitCode::SUCCESS
        });
    log::info!("http_hello stopped");
    if codes.iter().all(|c| *c == ExitCode::SUCCESS) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
