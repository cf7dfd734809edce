//! The benchmark peer of `http_hello`: HTTP/1.1 "Hello, World!" on hyper
//! and tokio's current-thread runtime.
//!
//! ```text
//! cargo run --release --example hyper_hello -- --addr 127.0.0.1:8081
//! ```

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const USAGE: &str = "\
hyper_hello: HTTP/1.1 \"Hello, World!\" on hyper + tokio current-thread (benchmark peer)

USAGE:
    hyper_hello [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on [default: 127.0.0.1:8081]
    -h, --help         print this help";

async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut r = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

fn main() {
    let mut addr = "127.0.0.1:8081".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "-h" | "--help" => {
                println!("{USAGE}");
                return;
            }
            "--addr" => match args.next() {
                Some(v) => addr = v,
                None => {
                    eprintln!("hyper_hello: --addr needs a value\n\n{USAGE}");
                    std::process::exit(2);
                }
            },
            other => {
                eprintln!("hyper_hello: unknown argument '{other}'\n\n{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!(
            "hyper_hello listening on http://{}",
            listener.local_addr().unwrap()
        );
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            });
        }
    });
}
