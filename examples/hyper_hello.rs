//! The benchmark peer of `http_hello`: HTTP/1.1 "Hello, World!" on hyper
//! and tokio's current-thread runtime (or, with `--workers N`, tokio's
//! multi-thread runtime with N workers). `--work-us N` burns N µs of CPU per
//! request, as `http_hello --work-us` does.
//!
//! ```text
//! cargo run --release --example hyper_hello -- --addr 127.0.0.1:8081
//! cargo run --release --example hyper_hello -- --workers 2 --work-us 20
//! ```

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

mod common;
use common::args::{self, Args};

const USAGE: &str = "\
hyper_hello: HTTP/1.1 \"Hello, World!\" on hyper + tokio current-thread (benchmark peer)

USAGE:
    hyper_hello [--addr HOST:PORT] [--workers N] [--work-us N]

OPTIONS:
    --addr HOST:PORT   address to listen on [default: 127.0.0.1:8081]
    --workers N        tokio multi-thread runtime with N workers
                       [default: tokio current-thread]
    --work-us N        CPU time to burn per request, in microseconds [default: 0]
    -h, --help         print this help";

/// Microseconds of CPU burnt per request (`--work-us`).
static WORK_US: AtomicU64 = AtomicU64::new(0);

async fn hello(_: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let us = WORK_US.load(Ordering::Relaxed);
    if us > 0 {
        let until = Instant::now() + Duration::from_micros(us);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
    }
    let mut r = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    r.headers_mut().insert(
        "content-type",
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    Ok(r)
}

fn main() {
    let mut addr = "127.0.0.1:8081".to_owned();
    let mut workers: Option<usize> = None;
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            "--workers" => workers = Some(args.value_with(args::positive)),
            "--work-us" => WORK_US.store(args.parse(), Ordering::Relaxed),
            _ => args.unknown(),
        }
    }
    let rt = match workers {
        None => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
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
