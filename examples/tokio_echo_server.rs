//! The benchmark peer of `echo_server`: the same echo server on tokio's
//! current-thread runtime (one task per client, 16 KiB buffer).
//!
//! ```text
//! cargo run --release --example tokio_echo_server -- --addr 127.0.0.1:8002
//! ```

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

mod common;
use common::args::Args;

const USAGE: &str = "\
tokio_echo_server: echo server on tokio's current-thread runtime (benchmark peer)

USAGE:
    tokio_echo_server [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on [default: 127.0.0.1:8002]
    -h, --help         print this help";

fn main() {
    let mut addr = "127.0.0.1:8002".to_owned();
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            _ => args.unknown(),
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!(
            "tokio echo server listening on {}",
            listener.local_addr().unwrap()
        );
        loop {
            let (mut s, _) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
}
