//! A TCP port forwarder (proxy): every accepted connection is connected to
//! `--to`, and two tasklets copy bytes both ways until each side closes.
//!
//! ```text
//! cargo run --release --example echo_server &                  # 127.0.0.1:8001
//! cargo run --release --example port_forward -- --listen 127.0.0.1:8004 --to 127.0.0.1:8001
//! cargo run --release --example echo_client -- --addr 127.0.0.1:8004
//! ```

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use tasklet::netio::{StreamServer, TcpStream};

mod common;
use common::args::Args;

const USAGE: &str = "\
port_forward: forward TCP connections (two copying tasklets per connection)

USAGE:
    port_forward [--listen HOST:PORT] [--to HOST:PORT]

OPTIONS:
    --listen HOST:PORT   address to accept on [default: 127.0.0.1:8004]
    --to HOST:PORT       address to forward to; host names are resolved
                         without blocking [default: 127.0.0.1:8001]
    -h, --help           print this help

Ctrl-C or SIGTERM stops it (open connections get 1 s to finish).";

/// Copies `from` to `to` until EOF, then half-closes `to` so the other side
/// sees the end too. Returns the byte count.
///
/// On an error (a peer reset, a write to a closed peer) both connections are
/// shut down: the pump of the other direction may be parked on a peer that
/// will never read or write again, and the shutdown wakes it with EOF or an
/// error instead of leaving both connections open forever.
fn pump(from: &TcpStream, to: &TcpStream) -> io::Result<u64> {
    let r = copy(from, to);
    match r {
        // The peer may already be gone: nothing left to tell it then.
        Ok(_) => {
            let _ = to.shutdown(Shutdown::Write);
        }
        Err(_) => {
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        }
    }
    r
}

fn copy(mut from: &TcpStream, mut to: &TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 32 * 1024];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        to.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

fn forward(client: TcpStream, peer: SocketAddr, target: Rc<str>) -> io::Result<()> {
    // Resolution and connection together are bounded: an unreachable target
    // (SYNs dropped) would otherwise hold the client for the kernel's
    // two-minute connect timeout.
    let connect = tasklet::timeout(CONNECT_TIMEOUT, || TcpStream::connect(&*target));
    let upstream = match connect.map_err(io::Error::from).and_then(|r| r) {
        Ok(u) => u,
        Err(e) => {
            log::warn!("{peer}: cannot connect to {target}: {e}");
            return Err(e);
        }
    };
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    log::info!("{peer}: forwarding to {target}");
    let client = Rc::new(client);
    let upstream = Rc::new(upstream);
    let (c, u) = (client.clone(), upstream.clone());
    let up = tasklet::spawn(move || pump(&c, &u));
    let down = pump(&upstream, &client);
    let up = up
        .join()
        .unwrap_or_else(|e| Err(io::Error::other(e.to_string())));
    match (up, down) {
        (Ok(up), Ok(down)) => {
            log::info!("{peer}: closed ({up} bytes up, {down} bytes down)");
            Ok(())
        }
        (Err(e), _) | (_, Err(e)) => {
            log::info!("{peer}: closed with error: {e}");
            Err(e)
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut listen = "127.0.0.1:8004".to_owned();
    let mut to = "127.0.0.1:8001".to_owned();
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--listen" => listen = args.value(),
            "--to" => to = args.value(),
            _ => args.unknown(),
        }
    }
    tasklet::dispatch(move || {
        let target: Rc<str> = Rc::from(to.as_str());
        let server = match StreamServer::bind(listen.as_str(), move |s, peer| {
            forward(s, peer, target.clone())
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("port_forward: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        log::info!(
            "forwarding {} -> {to} (Ctrl-C to stop)",
            server.local_addr()
        );
        server
            .grace_period(Duration::from_secs(1))
            .stop_on_signals(true)
            .serve_forever();
        log::info!("port_forward stopped");
        ExitCode::SUCCESS
    })
}
