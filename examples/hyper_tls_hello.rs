//! HTTPS "Hello, World!" on hyper 1 + tokio-rustls (ring provider), tokio
//! current-thread: the benchmark peer of `http_hello --tls-cert/--tls-key`
//! (see `benches/tls_compare.sh`).
//!
//! ```text
//! cargo run --release --example hyper_tls_hello -- --tls-cert cert.pem --tls-key key.pem
//! ```

use std::convert::Infallible;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

mod common;
use common::args::Args;

const USAGE: &str = "\
hyper_tls_hello: HTTPS \"Hello, World!\" on hyper + tokio-rustls, tokio current-thread (benchmark peer)

USAGE:
    hyper_tls_hello --tls-cert FILE --tls-key FILE [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on [default: 127.0.0.1:8444]
    --tls-cert FILE    PEM certificate chain
    --tls-key FILE     PEM private key
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
    let mut addr = "127.0.0.1:8444".to_owned();
    let (mut cert, mut key) = (None, None);
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            "--tls-cert" => cert = Some(args.value()),
            "--tls-key" => key = Some(args.value()),
            _ => args.unknown(),
        }
    }
    let (Some(cert), Some(key)) = (cert, key) else {
        args.fail("--tls-cert and --tls-key are required");
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert)
        .and_then(|it| it.collect())
        .unwrap_or_else(|e| panic!("{cert}: {e}"));
    let key = PrivateKeyDer::from_pem_file(&key).unwrap_or_else(|e| panic!("{key}: {e}"));
    let mut config =
        ServerConfig::builder_with_provider(rustls::crypto::ring::default_provider().into())
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .expect("certificate and key");
    config.alpn_protocols = vec![b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    let acceptor = TlsAcceptor::from(std::sync::Arc::new(config));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = TcpListener::bind(&addr).await.expect("bind");
        eprintln!(
            "hyper_tls_hello listening on https://{}",
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
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            });
        }
    });
}
