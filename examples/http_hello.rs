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
use tasklet::netio::{StreamServer, TcpStream};
use tasklet::signal::{self, Signal};
use tasklet::sync::Event;

mod common;
use common::args::{self, Args};
#[path = "http_hello/framing.rs"]
mod framing;
use framing::{Conn, State};

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
                             within this long of its first byte, and a TLS
                             handshake complete within this long [default: 30]
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

/// Serves HTTPS on one connection: the handshake (bounded as a whole by
/// the request timeout, set on the acceptor, and each read by the idle
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
    let mut conn = Conn::new();
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
        for _ in answered..conn.answered {
            simulated_work();
        }
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
    // rustls warns on every connection from a client that sends an IP
    // address as its server name (wrk, curl https://127.0.0.1/…): errors only.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rustls=error"),
    )
    .init();
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
            // Both HTTP/1 versions it speaks: a client that offers only
            // "http/1.0" (`curl --http1.0`) is served, not refused.
            config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
            // A handshake gets the time a request gets, as a whole: a
            // client trickling its hello a byte at a time is cut off.
            Some(TlsAcceptor::new(std::sync::Arc::new(config)).handshake_timeout(limits.request))
        }
        Some(Err(e)) => {
            eprintln!("http_hello: {e}");
            return ExitCode::FAILURE;
        }
    };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let workers = common::workers::count(workers);
    let listeners = match common::workers::bind("http_hello", &addr, workers) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let local = listeners.local_addr();
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
