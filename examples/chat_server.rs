//! A line-based chat server: every line a client sends is broadcast to every
//! other client. Each client gets two tasklets — the connection handler
//! reads lines, a writer tasklet drains the client's channel — and a
//! bounded channel per client keeps one slow reader from stalling the rest.
//!
//! ```text
//! cargo run --release --example chat_server            # 127.0.0.1:8003
//! nc 127.0.0.1 8003                                     # in two or more terminals
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;

use tasklet::netio::{StreamServer, TcpStream};
use tasklet::sync::{self, Sender, TrySendError};

const USAGE: &str = "\
chat_server: broadcast each line to every other client (two tasklets per client)

USAGE:
    chat_server [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on [default: 127.0.0.1:8003]
    -h, --help         print this help

Connect with `nc HOST PORT`. The first line you send is your nickname.
Ctrl-C or SIGTERM stops the server (clients get 2 s to finish).";

/// How many lines may wait for one slow client before it misses some.
const BACKLOG: usize = 256;

type Clients = Rc<RefCell<HashMap<SocketAddr, Sender<Rc<str>>>>>;

fn broadcast(clients: &Clients, from: SocketAddr, line: &str) {
    let line: Rc<str> = Rc::from(line);
    for (peer, tx) in clients.borrow().iter() {
        if *peer == from {
            continue;
        }
        match tx.try_send(line.clone()) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                log::warn!("{peer} is too slow: a line was dropped for it")
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn handle(stream: TcpStream, peer: SocketAddr, clients: Clients) -> io::Result<()> {
    let stream = Rc::new(stream);
    (&*stream).write_all(b"welcome! your nickname? ")?;
    let mut lines = BufReader::new(&*stream).lines();
    let nick = match lines.next() {
        Some(n) => n?.trim().to_owned(),
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
            (&*out).write_all(line.as_bytes())?;
        }
        Ok(())
    });
    clients.borrow_mut().insert(peer, tx);
    broadcast(&clients, peer, &format!("* {nick} joined\n"));

    // This tasklet: read lines and broadcast them.
    let result = lines.try_for_each(|line| {
        broadcast(&clients, peer, &format!("<{nick}> {}\n", line?));
        Ok(())
    });

    clients.borrow_mut().remove(&peer); // drops the sender: the writer ends
    broadcast(&clients, peer, &format!("* {nick} left\n"));
    let _ = writer.join();
    log::info!("{peer}: '{nick}' left");
    result
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut addr = "127.0.0.1:8003".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            "--addr" => match args.next() {
                Some(v) => addr = v,
                None => {
                    eprintln!("chat_server: --addr needs a value\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("chat_server: unknown argument '{other}'\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    tasklet::dispatch(move || {
        let clients: Clients = Rc::default();
        let server = match StreamServer::bind(addr.as_str(), move |s, peer| {
            handle(s, peer, clients.clone())
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
        server
            .grace_period(Duration::from_secs(2))
            .stop_on_signals(true)
            .serve_forever();
        log::info!("chat server stopped");
        ExitCode::SUCCESS
    })
}
