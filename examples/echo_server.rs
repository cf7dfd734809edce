//! The gevent echo server: accept in a loop, one tasklet per client, echo
//! until EOF — thousands of clients on one thread.
//!
//! ```text
//! cargo run --release --example echo_server                  # 127.0.0.1:8001
//! cargo run --release --example echo_server -- --addr 0.0.0.0:9000
//! RUST_LOG=warn cargo run --release --example echo_server    # quiet (benchmarks)
//! cargo run --release --example echo_server -- --workers 1     # one thread
//! cargo run --release --features tls --example echo_server -- --tls-cert cert.pem --tls-key key.pem
//! ```
//!
//! With `--tls-cert`/`--tls-key` it echoes over TLS (try
//! `openssl s_client -connect 127.0.0.1:8001`).
//!
//! Try it with `nc 127.0.0.1 8001`, or load it with the `echo_client`
//! example. Ctrl-C (or SIGTERM) stops it cleanly: it stops accepting,
//! closes every connection and exits 0.
//!
//! By default it runs one worker thread per allowed CPU (a
//! `tasklet::Runtime`), each accepting on its own `SO_REUSEPORT` listener
//! on the same address; `--workers 1` is the single-threaded server.
//! `kill -USR1 <pid>` prints every tasklet and what it waits on to stderr
//! (`tasklet::dump_on_signal`).

use std::io::{self, Read, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tasklet::netio::{TcpListener, TcpStream};
use tasklet::signal::{self, Signal};
use tasklet::sync::Event;

mod common;
use common::args::{self, Args};

const USAGE: &str = "\
echo_server: the gevent echo server on tasklets (one tasklet per client)

USAGE:
    echo_server [--addr HOST:PORT] [--workers N] [--idle-timeout SECS]
                [--tls-cert FILE --tls-key FILE]

OPTIONS:
    --addr HOST:PORT      address to listen on [default: 127.0.0.1:8001]
    --workers N           worker threads, each accepting on the address
                          (SO_REUSEPORT) [default: the CPUs this process may use]
    --idle-timeout SECS   disconnect a client that sends nothing, or takes
                          nothing of its echo, for this long [default: 300]
    --tls-cert FILE       echo over TLS with this PEM certificate chain (needs
                          --tls-key, and a build with `--features tls`)
    --tls-key FILE        the PEM private key of --tls-cert
    -h, --help            print this help

Logs connects and disconnects at level info (set RUST_LOG=warn to silence them).
Ctrl-C or SIGTERM stops the server cleanly.";

/// How long a client may stay idle by default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The TLS acceptor, when serving TLS.
#[cfg(feature = "tls")]
type Tls = Option<tasklet::netio::tls::TlsAcceptor>;
#[cfg(not(feature = "tls"))]
type Tls = Option<std::convert::Infallible>;

/// Serves one client: plain, or a TLS handshake first and close_notify at
/// the end. A client idle (sending nothing, or taking none of its echo) for
/// `idle` is disconnected.
fn serve_client(client: TcpStream, tls: &Tls, idle: Duration) -> io::Result<u64> {
    client.set_read_timeout(Some(idle))?;
    client.set_write_timeout(Some(idle))?;
    match tls {
        None => handle(&client),
        #[cfg(feature = "tls")]
        Some(acceptor) => {
            let tls = acceptor
                .accept(client)
                .map_err(|e| io::Error::new(e.kind(), Handshake(e)))?;
            let n = handle(&tls)?;
            tls.shutdown()?;
            Ok(n)
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match *never {},
    }
}

/// Echoes everything the client sends until it closes its side.
/// A TLS handshake that failed: not done within its 10 s, a client that
/// does not speak TLS… (logged as such, not as the idle timeout).
#[cfg(feature = "tls")]
#[derive(Debug)]
struct Handshake(io::Error);

#[cfg(feature = "tls")]
impl std::fmt::Display for Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TLS handshake failed: {}", self.0)
    }
}

#[cfg(feature = "tls")]
impl std::error::Error for Handshake {}

fn handle(mut client: impl Read + Write) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        client.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Errors that only mean the client went away abruptly.
fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            // A TLS client that closed without close_notify.
            | io::ErrorKind::UnexpectedEof
    )
}

fn serve(listener: TcpListener, tls: Tls, idle: Duration) {
    let tls = std::rc::Rc::new(tls);
    // Accept failures in a row (EMFILE and friends): warned about once per
    // episode, not every retry.
    let mut failing = 0u64;
    loop {
        match listener.accept() {
            Ok((client, peer)) => {
                if failing > 0 {
                    log::warn!("accepting again after {failing} failed attempt(s)");
                    failing = 0;
                }
                log::info!("{peer}: connected");
                let tls = tls.clone();
                tasklet::spawn(move || match serve_client(client, &tls, idle) {
                    Ok(bytes) => log::info!("{peer}: disconnected ({bytes} bytes echoed)"),
                    #[cfg(feature = "tls")]
                    Err(e) if e.get_ref().is_some_and(|e| e.is::<Handshake>()) => {
                        log::info!("{peer}: disconnected: {e}")
                    }
                    // A client that resets or idles is routine, not worth a warning.
                    Err(e) if is_disconnect(&e) => log::info!("{peer}: disconnected: {e}"),
                    Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                        log::info!("{peer}: disconnected: idle for {idle:?}")
                    }
                    Err(e) => log::warn!("{peer}: disconnected with error: {e}"),
                });
            }
            Err(e) => {
                // EMFILE and friends: say so and breathe instead of spinning.
                if failing == 0 {
                    log::warn!("accept failed: {e} (retrying every 100 ms)");
                } else {
                    log::debug!("accept failed again: {e}");
                }
                failing += 1;
                tasklet::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// Reads the certificate and key named by `--tls-cert`/`--tls-key`, if given.
fn load_tls(cert: Option<String>, key: Option<String>) -> Result<Tls, String> {
    match (cert, key) {
        (None, None) => Ok(None),
        #[cfg(feature = "tls")]
        (Some(cert), Some(key)) => {
            let config = tasklet::netio::tls::server_config_from_pem(cert, key)
                .map_err(|e| e.to_string())?;
            let acceptor = tasklet::netio::tls::TlsAcceptor::new(std::sync::Arc::new(config))
                .handshake_timeout(std::time::Duration::from_secs(10));
            Ok(Some(acceptor))
        }
        #[cfg(not(feature = "tls"))]
        (Some(_), Some(_)) => Err("built without TLS: run it with \
             `cargo run --release --features tls --example echo_server -- ...`"
            .into()),
        _ => Err("--tls-cert and --tls-key go together".into()),
    }
}

fn main() -> ExitCode {
    // rustls warns on every connection from a client that sends an IP
    // address as its server name (wrk, curl https://127.0.0.1/…): errors only.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rustls=error"),
    )
    .init();
    let mut addr = "127.0.0.1:8001".to_owned();
    let mut workers = None;
    let mut idle = IDLE_TIMEOUT;
    let (mut cert, mut key) = (None, None);
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            "--workers" => workers = Some(args.value_with(args::positive)),
            "--idle-timeout" => idle = args.value_with(args::seconds),
            "--tls-cert" => cert = Some(args.value()),
            "--tls-key" => key = Some(args.value()),
            _ => args.unknown(),
        }
    }
    let tls = match load_tls(cert, key) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("echo_server: {e}");
            return ExitCode::from(2);
        }
    };
    let what = if tls.is_some() { "TLS echo" } else { "echo" };
    let workers = common::workers::count(workers);
    let listeners = match common::workers::bind("echo_server", &addr, workers) {
        Ok(l) => l,
        Err(code) => return code,
    };
    let local = listeners.local_addr();
    log::info!("{what} server listening on {local} with {workers} worker(s) (Ctrl-C to stop)");
    // Set on SIGINT/SIGTERM (or when a worker fails); every worker waits for
    // it, then stops its own acceptor (`tasklet::sync::Event` works across
    // threads).
    let stop = Arc::new(Event::new());
    let codes = tasklet::Runtime::new()
        .workers(workers)
        .name("echo")
        .run(move || {
            let listener = match listeners.listener() {
                Ok(l) => l,
                Err(e) => {
                    log::error!("cannot listen on {local}: {e}");
                    stop.set(); // the whole server stops
                    return ExitCode::FAILURE;
                }
            };
            // `Copy` without the `tls` feature, `Clone` with it.
            #[allow(clippy::clone_on_copy)]
            let tls = tls.clone();
            let acceptor = tasklet::spawn(move || serve(listener, tls, idle));
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
            // `kill -USR1 <pid>`: worker 0's tasklets and what they wait on,
            // to stderr.
            let _dumper =
                (tasklet::worker_index() == Some(0)).then(|| tasklet::dump_on_signal(Signal::Usr1));
            stop.wait();
            // Stop accepting (the listener closes), then let the worker close
            // every remaining connection as it kills their tasklets.
            acceptor.kill();
            let _ = acceptor.join();
            ExitCode::SUCCESS
        });
    log::info!("echo server stopped");
    if codes.iter().all(|c| *c == ExitCode::SUCCESS) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
