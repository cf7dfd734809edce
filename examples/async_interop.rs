//! A tasklet HTTP server whose handler calls an *async* HTTP client: each
//! request to the front end is answered with what a back end said, fetched
//! with `hyper`'s async client over a `tokio::net::TcpStream` through
//! `tasklet::block_on`. The back end is a hyper server running on the
//! tokio runtime that the `tokio` feature starts in the background.
//!
//! ```text
//! RUST_LOG=info cargo run --release --features tokio --example async_interop
//! curl http://127.0.0.1:8080/hello
//! ```
//!
//! The handler is plain blocking-style code (one tasklet per connection);
//! only the call into the async library goes through `block_on`, which parks
//! that tasklet alone while the back end answers.

use std::convert::Infallible;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tasklet::netio::{StreamServer, TcpStream};

mod common;
use common::args::Args;

const USAGE: &str = "\
async_interop: tasklet HTTP front end calling an async (hyper) back end via block_on

USAGE:
    async_interop [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on [default: 127.0.0.1:8080]
    -h, --help         print this help";

const MAX_HEAD: usize = 16 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The back end: a hyper server on the background tokio runtime.
fn start_backend() -> io::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    let rt = tasklet::tokio::handle();
    let listener = {
        let _in_tokio = rt.enter();
        tokio::net::TcpListener::from_std(listener)?
    };
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<_>| async move {
                    let body = format!("back end saw {}", req.uri().path());
                    Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// One keep-alive connection to the back end per front-end connection.
struct Backend {
    addr: SocketAddr,
    conn: Option<SendRequest<Empty<Bytes>>>,
}

impl Backend {
    /// GETs `path` from the back end: async code, run by `block_on` (only
    /// this tasklet waits).
    fn get(&mut self, path: &str) -> Result<String, BoxError> {
        let addr = self.addr;
        let conn = &mut self.conn;
        tasklet::block_on(async move {
            if conn.as_ref().is_none_or(|c| c.is_closed()) {
                let stream = tokio::net::TcpStream::connect(addr).await?;
                let (send, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                // Drives the connection on tokio's worker.
                tokio::spawn(connection);
                *conn = Some(send);
            }
            let send = conn.as_mut().expect("connected above");
            send.ready().await?;
            let req = hyper::Request::get(path)
                .header("host", addr.to_string())
                .body(Empty::new())?;
            let resp = send.send_request(req).await?;
            let body = resp.into_body().collect().await?.to_bytes();
            Ok(String::from_utf8_lossy(&body).into_owned())
        })
    }
}

/// The front end's per-connection handler: blocking-style, one tasklet.
fn serve(stream: TcpStream, backend: SocketAddr) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut backend = Backend {
        addr: backend,
        conn: None,
    };
    let mut buf = Vec::with_capacity(4096);
    loop {
        // Read one request head (GET-style requests; bodies are refused).
        let (path, len) = loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf) {
                Ok(httparse::Status::Complete(len)) => {
                    let has_body = req.headers.iter().any(|h| {
                        h.name.eq_ignore_ascii_case("transfer-encoding")
                            || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
                    });
                    if has_body {
                        (&stream).write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?;
                        return Ok(());
                    }
                    break (req.path.unwrap_or("/").to_owned(), len);
                }
                Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
                _ => {
                    (&stream).write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")?;
                    return Ok(());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = (&stream).read(&mut chunk)?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        buf.drain(..len);
        let t0 = Instant::now();
        let (status, body) = match backend.get(&path) {
            Ok(said) => (
                "200 OK",
                format!("{said} ({} us round trip)\n", t0.elapsed().as_micros()),
            ),
            Err(e) => {
                log::warn!("back end call failed: {e}");
                ("502 Bad Gateway", format!("back end failed: {e}\n"))
            }
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        (&stream).write_all(head.as_bytes())?;
        (&stream).write_all(body.as_bytes())?;
    }
}

fn main() -> ExitCode {
    env_logger::init();
    let mut addr = "127.0.0.1:8080".to_owned();
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            _ => args.unknown(),
        }
    }
    tasklet::dispatch(move || {
        let backend = match start_backend() {
            Ok(a) => a,
            Err(e) => {
                eprintln!("async_interop: cannot start the back end: {e}");
                return ExitCode::FAILURE;
            }
        };
        let server = match StreamServer::bind(addr.as_str(), move |s, _| serve(s, backend)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("async_interop: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        log::info!(
            "async_interop listening on http://{} (back end on {backend}; Ctrl-C to stop)",
            server.local_addr()
        );
        server
            .grace_period(Duration::from_millis(500))
            .stop_on_signals(true)
            .serve_forever();
        log::info!("async_interop stopped");
        ExitCode::SUCCESS
    })
}
