//! The gevent echo server: accept in a loop, one tasklet per client, echo
//! until EOF — thousands of clients on one thread.
//!
//! ```text
//! cargo run --release --example echo_server                  # 127.0.0.1:8001
//! cargo run --release --example echo_server -- --addr 0.0.0.0:9000
//! RUST_LOG=warn cargo run --release --example echo_server    # quiet (benchmarks)
//! ```
//!
//! Try it with `nc 127.0.0.1 8001`, or load it with the `echo_client`
//! example. Ctrl-C (or SIGTERM) stops it cleanly: it stops accepting,
//! closes every connection and exits 0.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tasklet::netio::{TcpListener, TcpStream};
use tasklet::signal::{self, Signal};

const USAGE: &str = "\
echo_server: the gevent echo server on tasklets (one tasklet per client)

USAGE:
    echo_server [--addr HOST:PORT] [--idle-timeout SECS]

OPTIONS:
    --addr HOST:PORT      address to listen on [default: 127.0.0.1:8001]
    --idle-timeout SECS   disconnect a client that sends nothing, or takes
                          nothing of its echo, for this long [default: 300]
    -h, --help            print this help

Logs connects and disconnects at level info (set RUST_LOG=warn to silence them).
Ctrl-C or SIGTERM stops the server cleanly.";

/// How long a client may stay idle by default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// Echoes everything the client sends until it closes its side, or stays
/// idle (sends nothing, or takes none of its echo) for `idle`.
fn handle(mut client: TcpStream, idle: Duration) -> io::Result<u64> {
    client.set_read_timeout(Some(idle))?;
    client.set_write_timeout(Some(idle))?;
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
    )
}

fn serve(listener: TcpListener, idle: Duration) {
    loop {
        match listener.accept() {
            Ok((client, peer)) => {
                log::info!("{peer}: connected");
                tasklet::spawn(move || match handle(client, idle) {
                    Ok(bytes) => log::info!("{peer}: disconnected ({bytes} bytes echoed)"),
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
                log::warn!("accept failed: {e}");
                tasklet::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// Parses a number of seconds (fractions allowed) given to `flag`.
fn parse_secs(flag: &str, v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{flag}: '{v}' is not a positive number of seconds"))
}

fn parse_args() -> Result<Option<(String, Duration)>, String> {
    let mut addr = "127.0.0.1:8001".to_owned();
    let mut idle = IDLE_TIMEOUT;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => return Ok(None),
            "--addr" => {
                addr = args
                    .next()
                    .ok_or("--addr needs a value, e.g. --addr 127.0.0.1:8001")?
            }
            s if s.starts_with("--addr=") => addr = s["--addr=".len()..].to_owned(),
            "--idle-timeout" => {
                let v = args
                    .next()
                    .ok_or("--idle-timeout needs a value in seconds")?;
                idle = parse_secs(&a, &v)?;
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    Ok(Some((addr, idle)))
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let (addr, idle) = match parse_args() {
        Ok(Some(a)) => a,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("echo_server: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    tasklet::dispatch(move || {
        let listener = match TcpListener::bind(addr.as_str()) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("echo_server: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let local: SocketAddr = listener
            .local_addr()
            .expect("a bound listener has an address");
        log::info!("echo server listening on {local} (Ctrl-C to stop)");
        let acceptor = tasklet::spawn(move || serve(listener, idle));
        match signal::wait(&[Signal::Int, Signal::Term]) {
            Ok(sig) => log::info!("{sig:?} received: shutting down"),
            Err(e) => log::error!("cannot wait for signals: {e}; stopping"),
        }
        // Stop accepting (the listener closes), then let `dispatch` close
        // every remaining connection as it kills their tasklets.
        acceptor.kill();
        let _ = acceptor.join();
        log::info!("echo server stopped");
        ExitCode::SUCCESS
    })
}
