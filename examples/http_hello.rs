//! HTTP/1.1 "Hello, World!" with keep-alive and pipelining, parsed with
//! `httparse`, one tasklet per connection — ready for `wrk`:
//!
//! ```text
//! RUST_LOG=warn cargo run --release --example http_hello        # 127.0.0.1:8080
//! wrk -t1 -c100 -d10s http://127.0.0.1:8080/
//! ```

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use tasklet::netio::{StreamServer, TcpStream};

const USAGE: &str = "\
http_hello: HTTP/1.1 keep-alive \"Hello, World!\" server (one tasklet per connection)

USAGE:
    http_hello [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on [default: 127.0.0.1:8080]
    -h, --help         print this help

Ctrl-C or SIGTERM stops it.";

const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nServer: tasklet\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
const BAD: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
const MAX_HEADERS: usize = 32;
const MAX_REQUEST: usize = 64 * 1024;

/// Serves requests on one connection until the client closes or asks to.
fn serve(mut s: TcpStream, peer: SocketAddr) -> io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut filled = 0;
    let mut out = Vec::with_capacity(4096);
    loop {
        if filled == buf.len() {
            if buf.len() >= MAX_REQUEST {
                s.write_all(BAD)?;
                return Ok(());
            }
            buf.resize(buf.len() * 2, 0);
        }
        let n = s.read(&mut buf[filled..])?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        // Answer every complete request in the buffer (pipelining), then write once.
        let mut start = 0;
        let mut close = false;
        while start < filled {
            let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[start..filled]) {
                Ok(httparse::Status::Complete(len)) => {
                    let mut body = 0usize;
                    let mut keep_alive = req.version == Some(1);
                    for h in req.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            body = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = h.value.to_ascii_lowercase();
                            if v == b"close" {
                                keep_alive = false;
                            } else if v == b"keep-alive" {
                                keep_alive = true;
                            }
                        }
                    }
                    if filled - start < len + body {
                        break; // the body is not all here yet
                    }
                    start += len + body;
                    out.extend_from_slice(HELLO);
                    if !keep_alive {
                        close = true;
                        break;
                    }
                }
                Ok(httparse::Status::Partial) => break,
                Err(e) => {
                    log::debug!("{peer}: bad request: {e}");
                    out.extend_from_slice(BAD);
                    close = true;
                    break;
                }
            }
        }
        if !out.is_empty() {
            s.write_all(&out)?;
            out.clear();
        }
        if close {
            return Ok(());
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut addr = "127.0.0.1:8080".to_owned();
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
                    eprintln!("http_hello: --addr needs a value\n\n{USAGE}");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("http_hello: unknown argument '{other}'\n\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    tasklet::dispatch(move || {
        let server = match StreamServer::bind(addr.as_str(), serve) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("http_hello: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        log::info!(
            "http_hello listening on http://{} (Ctrl-C to stop)",
            server.local_addr()
        );
        server
            .grace_period(Duration::from_millis(500))
            .stop_on_signals(true)
            .serve_forever();
        log::info!("http_hello stopped");
        ExitCode::SUCCESS
    })
}
