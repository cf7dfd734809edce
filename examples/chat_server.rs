//! A line-based chat server: every line a client sends is broadcast to every
//! other client. Each client gets two tasklets — the connection handler
//! reads lines, a writer tasklet drains the client's channel — and a
//! bounded channel per client keeps one slow reader from stalling the rest.
//!
//! ```text
//! cargo run --release --example chat_server            # 127.0.0.1:8003
//! nc 127.0.0.1 8003                                     # in two or more terminals
//! cargo run --release --example chat_server -- --console /tmp/chat.sock
//! socat - UNIX-CONNECT:/tmp/chat.sock                   # dump, stats, kill ID
//! kill -USR1 <pid>                                      # dump to stderr
//! ```

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use tasklet::netio::{StreamServer, TcpStream};
use tasklet::sync::{self, Sender, TrySendError};

mod common;
use common::args::{self, Args};

const USAGE: &str = "\
chat_server: broadcast each line to every other client (two tasklets per client)

USAGE:
    chat_server [--addr HOST:PORT] [--idle-timeout SECS] [--console PATH]

OPTIONS:
    --addr HOST:PORT      address to listen on [default: 127.0.0.1:8003]
    --idle-timeout SECS   disconnect a client that sends nothing (not even its
                          nickname), or takes none of its lines, for this
                          long [default: 300]
    --console PATH        serve the operator console (dump, stats, kill ID)
                          on a Unix socket at PATH, mode 0600
    -h, --help            print this help

Connect with `nc HOST PORT`. The first line you send is your nickname.
Lines are limited to 4096 bytes; a longer one ends the session.
Ctrl-C or SIGTERM stops the server (clients get 2 s to finish).
SIGUSR1 prints every tasklet and what it waits on to stderr.";

/// How many lines may wait for one slow client before it misses some.
const BACKLOG: usize = 256;
/// The longest line a client may send (bytes); a longer one ends its session.
const MAX_LINE: usize = 4096;
/// The longest nickname kept (characters).
const MAX_NICK: usize = 32;
/// How long a client may stay idle by default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// A connected client as the others see it: its outgoing channel, and
/// whether it is currently missing lines (logged once per episode).
struct Client {
    tx: Sender<Rc<str>>,
    dropping: Cell<bool>,
}

type Clients = Rc<RefCell<HashMap<SocketAddr, Client>>>;

fn broadcast(clients: &Clients, from: SocketAddr, line: &str) {
    let line: Rc<str> = Rc::from(line);
    for (peer, c) in clients.borrow().iter() {
        if *peer == from {
            continue;
        }
        match c.tx.try_send(line.clone()) {
            Ok(()) => {
                if c.dropping.replace(false) {
                    log::info!("{peer} caught up");
                }
            }
            Err(TrySendError::Full(_)) => {
                if !c.dropping.replace(true) {
                    log::warn!("{peer} is too slow: lines are dropped for it until it catches up");
                }
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Reads one line (without its `\n` or `\r\n`) of at most [`MAX_LINE`]
/// bytes; invalid UTF-8 is replaced, not fatal. `None` at end of input; an
/// `InvalidData` error for a longer line, so that a client that never sends
/// a newline cannot make the server buffer without bound.
fn read_line(r: &mut impl BufRead) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            break; // EOF: a last line without newline still counts
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        line.extend_from_slice(&buf[..take]);
        r.consume(take);
        // The limit is on the text: its "\n" or "\r\n" does not count (a
        // trailing '\r' may be the first half of a "\r\n" not read yet).
        let mut text = line.len() - usize::from(done);
        if line[..text].ends_with(b"\r") {
            text -= 1;
        }
        if text > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line longer than {MAX_LINE} bytes"),
            ));
        }
        if done {
            break;
        }
    }
    if line.is_empty() {
        return Ok(None);
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn handle(stream: TcpStream, peer: SocketAddr, clients: Clients, idle: Duration) -> io::Result<()> {
    // Silent for `idle` (reads), or not reading (writes): disconnected.
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
    let stream = Rc::new(stream);
    (&*stream).write_all(b"welcome! your nickname? ")?;
    let mut reader = BufReader::new(&*stream);
    let nick = match read_line(&mut reader)? {
        Some(n) => n.trim().chars().take(MAX_NICK).collect::<String>(),
        None => return Ok(()),
    };
    let nick = if nick.is_empty() {
        peer.to_string()
    } else {
        nick
    };
    log::info!("{peer}: joined as '{nick}'");

    // The writer tasklet: everything for this client goes through its channel.
    let (tx, rx) = sync::channel::<Rc<str>>(BACKLOG);
    let out = stream.clone();
    let writer = tasklet::spawn(move || -> io::Result<()> {
        for line in rx.iter() {
            if let Err(e) = (&*out).write_all(line.as_bytes()) {
                // A client that stopped reading: end its session (the
                // reading tasklet sees the shutdown).
                let _ = out.shutdown(Shutdown::Both);
                return Err(e);
            }
        }
        Ok(())
    });
    clients.borrow_mut().insert(
        peer,
        Client {
            tx,
            dropping: Cell::new(false),
        },
    );
    broadcast(&clients, peer, &format!("* {nick} joined\n"));
    // However this tasklet ends — the client leaves, fails, or the
    // operator kills it from the console — the client is taken out of the
    // chat and the others are told.
    let mut left = Left {
        clients: &clients,
        peer,
        nick: &nick,
        stream: &stream,
        gone: false,
    };

    // This tasklet: read lines and broadcast them. After each line the
    // writers it woke run first (a yield), so a client sending a burst of
    // lines cannot fill the channels of clients that keep up: only a client
    // whose socket is full misses lines.
    let result = loop {
        match read_line(&mut reader) {
            Ok(Some(line)) => {
                broadcast(&clients, peer, &format!("<{nick}> {line}\n"));
                tasklet::yield_now();
            }
            Ok(None) => break Ok(()),
            Err(e) => {
                if e.kind() == io::ErrorKind::InvalidData {
                    let _ = (&*stream).write_all(format!("* bye: {e}\n").as_bytes());
                }
                break Err(e);
            }
        }
    };

    left.leave();
    let _ = writer.join(); // it sends what was queued, then ends
    result
}

/// A client in the chat, taken out by [`Left::leave`] or, if its tasklet
/// ends without that (killed), when dropped.
struct Left<'a> {
    clients: &'a Clients,
    peer: SocketAddr,
    nick: &'a str,
    stream: &'a TcpStream,
    gone: bool,
}

impl Left<'_> {
    /// Takes the client out of the table (dropping its sender, so its
    /// writer ends once it has sent what is queued) and tells the others.
    fn leave(&mut self) {
        if std::mem::replace(&mut self.gone, true) {
            return;
        }
        let (peer, nick) = (self.peer, self.nick);
        self.clients.borrow_mut().remove(&peer);
        broadcast(self.clients, peer, &format!("* {nick} left\n"));
        log::info!("{peer}: '{nick}' left");
    }
}

impl Drop for Left<'_> {
    fn drop(&mut self) {
        if !self.gone {
            // Killed: out of the chat, and off the connection at once.
            self.leave();
            let _ = self.stream.shutdown(Shutdown::Both);
        }
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut addr = "127.0.0.1:8003".to_owned();
    let mut idle = IDLE_TIMEOUT;
    let mut console = None;
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            "--console" => console = Some(args.value()),
            "--idle-timeout" => idle = args.value_with(args::seconds),
            _ => args.unknown(),
        }
    }
    tasklet::dispatch(move || {
        let clients: Clients = Rc::default();
        let server = match StreamServer::bind(addr.as_str(), move |s, peer| {
            handle(s, peer, clients.clone(), idle)
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chat_server: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        log::info!(
            "chat server listening on {} (Ctrl-C to stop)",
            server.local_addr()
        );
        // `kill -USR1 <pid>`: every tasklet and what it waits on, to stderr.
        let _dumper = tasklet::dump_on_signal(tasklet::signal::Signal::Usr1);
        let _console = match console.as_deref().map(tasklet::console::spawn) {
            None => None,
            Some(Ok(c)) => {
                log::info!("operator console on {}", console.as_deref().unwrap_or(""));
                Some(c)
            }
            Some(Err(e)) => {
                eprintln!("chat_server: cannot serve the console: {e}");
                return ExitCode::FAILURE;
            }
        };
        server
            .grace_period(Duration::from_secs(2))
            .stop_on_signals(true)
            .serve_forever();
        log::info!("chat server stopped");
        ExitCode::SUCCESS
    })
}
