//! The hand-written benchmark peer of `echo_server`: one thread, one
//! `mio::Poll`, one 16 KiB buffer shared by every connection — the least a
//! readiness-based echo server can do, and so the limit `echo_server` is
//! measured against (`benches/echo_compare.sh`).
//!
//! ```text
//! cargo run --release --example mio_echo_server -- --addr 127.0.0.1:8003
//! ```
//!
//! Per readable event it reads into the shared buffer and writes each piece
//! straight back, until the read would block — or until a read comes back
//! short of the buffer, which (TCP, edge-triggered) means the receive queue
//! is drained, so the `EAGAIN` read is skipped as tokio and `echo_server`
//! skip it: one `recvfrom` and one `sendto` per message. Only a connection
//! whose peer does not take its echo keeps bytes of its own (a pending
//! tail, sent on the next writable event; it is not read meanwhile).

use std::io::{self, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

mod common;
use common::args::Args;

const USAGE: &str = "\
mio_echo_server: hand-written mio event loop echo server (benchmark peer)

USAGE:
    mio_echo_server [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on [default: 127.0.0.1:8003]
    -h, --help         print this help";

const LISTENER: Token = Token(usize::MAX);

/// One client: its socket and the echo it could not send yet.
struct Conn {
    stream: TcpStream,
    pending: Vec<u8>,
}

/// What to do with a connection after serving an event.
enum Next {
    Keep,
    Close,
}

fn main() {
    let mut addr: std::net::SocketAddr = ([127, 0, 0, 1], 8003).into();
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.parse(),
            _ => args.unknown(),
        }
    }
    if let Err(e) = serve(addr) {
        eprintln!("mio_echo_server: {e}");
        std::process::exit(1);
    }
}

fn serve(addr: std::net::SocketAddr) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut events = Events::with_capacity(1024);
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    eprintln!("mio echo server listening on {}", listener.local_addr()?);
    let mut conns: Vec<Option<Conn>> = Vec::new();
    let mut free: Vec<usize> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        poll.poll(&mut events, None).or_else(|e| {
            if e.kind() == io::ErrorKind::Interrupted {
                Ok(())
            } else {
                Err(e)
            }
        })?;
        for ev in events.iter() {
            if ev.token() == LISTENER {
                accept_all(&poll, &listener, &mut conns, &mut free);
                continue;
            }
            let slot = ev.token().0;
            let Some(conn) = conns.get_mut(slot).and_then(Option::as_mut) else {
                continue;
            };
            let next = if !conn.pending.is_empty() {
                // Blocked on a slow reader: only a writable event helps.
                match flush(conn) {
                    Ok(true) => echo(conn, &mut buf, ev.is_read_closed()),
                    Ok(false) => Next::Keep,
                    Err(_) => Next::Close,
                }
            } else if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                echo(conn, &mut buf, ev.is_read_closed())
            } else {
                Next::Keep
            };
            if let Next::Close = next {
                // Dropping the stream closes it, which also removes it from epoll.
                conns[slot] = None;
                free.push(slot);
            }
        }
    }
}

/// Accepts every pending connection (the listener is edge-triggered).
fn accept_all(
    poll: &Poll,
    listener: &TcpListener,
    conns: &mut Vec<Option<Conn>>,
    free: &mut Vec<usize>,
) {
    loop {
        match listener.accept() {
            Ok((mut stream, _)) => {
                let slot = free.pop().unwrap_or_else(|| {
                    conns.push(None);
                    conns.len() - 1
                });
                let interest = Interest::READABLE.add(Interest::WRITABLE);
                if let Err(e) = poll.registry().register(&mut stream, Token(slot), interest) {
                    eprintln!("mio_echo_server: register failed: {e}");
                    free.push(slot);
                    continue;
                }
                conns[slot] = Some(Conn {
                    stream,
                    pending: Vec::new(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                // EMFILE and friends: the next connection's event retries.
                eprintln!("mio_echo_server: accept failed: {e}");
                return;
            }
        }
    }
}

/// Reads and echoes until the socket is drained. `closing`: the event said
/// the peer shut its side, so read on to the end-of-file even after a short
/// read (no further event will come).
fn echo(conn: &mut Conn, buf: &mut [u8], closing: bool) -> Next {
    loop {
        match conn.stream.read(buf) {
            Ok(0) => return Next::Close,
            Ok(n) => {
                match conn.stream.write(&buf[..n]) {
                    Ok(w) if w == n => {}
                    Ok(w) => {
                        conn.pending.extend_from_slice(&buf[w..n]);
                        return Next::Keep;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        conn.pending.extend_from_slice(&buf[..n]);
                        return Next::Keep;
                    }
                    Err(_) => return Next::Close,
                }
                if n < buf.len() && !closing {
                    // A short read drained the receive queue: the next data
                    // raises a new edge.
                    return Next::Keep;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Next::Keep,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => return Next::Close,
        }
    }
}

/// Sends the pending tail; `Ok(true)` once it is all out.
fn flush(conn: &mut Conn) -> io::Result<bool> {
    while !conn.pending.is_empty() {
        match conn.stream.write(&conn.pending) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(w) => {
                conn.pending.drain(..w);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}
