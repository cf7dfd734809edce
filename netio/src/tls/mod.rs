//! TLS on [rustls](https://docs.rs/rustls) 0.23 (feature `tls`): gevent's
//! `ssl.wrap_socket`, Twisted's `startTLS`, tokio-rustls' shape.
//!
//! - [`TlsAcceptor::accept`] runs the server side of a handshake over any
//!   netio stream (a [`TcpStream`](crate::TcpStream), a
//!   [`UnixStream`](crate::UnixStream), …) and returns a [`TlsStream`];
//!   [`TlsConnector::connect`] runs the client side.
//! - [`TlsStream`] implements `Read` and `Write`, also through a shared
//!   reference, so one tasklet may read while another writes, as with the
//!   plain sockets.
//! - Every wait is a wait of the underlying socket: the socket's read and
//!   write timeouts apply to the handshake and to every record;
//!   [`TlsAcceptor::handshake_timeout`] bounds a whole handshake (a client
//!   trickling one byte at a time cannot hold a server tasklet forever);
//!   `tasklet::timeout` and `JoinHandle::kill` interrupt any of them, and an
//!   interrupted handshake leaves nothing behind (the stream, its buffers and
//!   the rustls state are dropped and the socket closed).
//! - [`load_certs`], [`load_private_key`], [`load_root_certs`] and
//!   [`server_config_from_pem`] read PEM files with errors that name the file
//!   and what is wrong with it.
//!
//! The crypto provider is *ring* ([`crypto_provider`]): it builds with a C
//! compiler only, and quickly. The configuration helpers here name it
//! explicitly, so an application that also links rustls' aws-lc-rs provider
//! does not hit rustls' "no process-level provider" panic.
//!
//! ```
//! use std::io::{Read, Write};
//! use std::sync::Arc;
//! use tasklet::netio::tls::{self, rustls, TlsAcceptor, TlsConnector};
//! use tasklet::netio::{TcpListener, TcpStream};
//!
//! // A throwaway self-signed certificate (use `server_config_from_pem` with real files).
//! let ck = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
//! let cert = rustls::pki_types::CertificateDer::from(ck.cert.der().to_vec());
//! let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
//!
//! let server_cfg = rustls::ServerConfig::builder_with_provider(tls::crypto_provider())
//!     .with_safe_default_protocol_versions().unwrap()
//!     .with_no_client_auth()
//!     .with_single_cert(vec![cert.clone()], key).unwrap();
//! let mut roots = rustls::RootCertStore::empty();
//! roots.add(cert).unwrap();
//! let client_cfg = rustls::ClientConfig::builder_with_provider(tls::crypto_provider())
//!     .with_safe_default_protocol_versions().unwrap()
//!     .with_root_certificates(roots)
//!     .with_no_client_auth();
//!
//! tasklet::dispatch(move || {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     let acceptor = TlsAcceptor::new(Arc::new(server_cfg));
//!     tasklet::spawn(move || -> std::io::Result<()> {
//!         let (tcp, _) = listener.accept()?;
//!         let mut tls = acceptor.accept(tcp)?;
//!         assert_eq!(tls.server_name(), Some("localhost"));
//!         let mut buf = [0; 5];
//!         tls.read_exact(&mut buf)?;
//!         tls.write_all(&buf)?;
//!         tls.shutdown() // close_notify
//!     });
//!
//!     let connector = TlsConnector::new(Arc::new(client_cfg));
//!     let mut tls = connector.connect("localhost", TcpStream::connect(addr).unwrap()).unwrap();
//!     tls.write_all(b"hello").unwrap();
//!     let mut echo = String::new();
//!     tls.read_to_string(&mut echo).unwrap(); // Ok at the close_notify
//!     assert_eq!(echo, "hello");
//! });
//! ```

mod handshake;
mod pem;
mod stream;

use std::io::{Read, Write};
use std::sync::Arc;

pub use rustls;
use rustls::crypto::CryptoProvider;

pub use handshake::{TlsAcceptor, TlsConnector};
pub use pem::{load_certs, load_private_key, load_root_certs, server_config_from_pem};
pub use stream::TlsStream;

/// A stream TLS runs over: one that can be read and written through a
/// shared reference, so that a reading tasklet and a writing tasklet can
/// use it at once. Implemented for netio's [`TcpStream`](crate::TcpStream)
/// and [`UnixStream`](crate::UnixStream) (and std's, which block the
/// thread); implement it for another stream type by handing out the
/// reference (or a handle) that reads and writes it.
///
/// ```
/// use std::io;
/// use tasklet::netio::tls::TlsTransport;
///
/// /// A TCP stream that counts the connections it was used for.
/// struct Tagged { inner: tasklet::netio::TcpStream, tag: u32 }
///
/// impl TlsTransport for Tagged {
///     type Io<'a> = &'a tasklet::netio::TcpStream;
///     fn io(&self) -> Self::Io<'_> {
///         &self.inner
///     }
/// }
/// ```
pub trait TlsTransport {
    /// What reads and writes the stream: usually `&'a Self`.
    type Io<'a>: Read + Write
    where
        Self: 'a;

    /// The reader/writer for one operation.
    fn io(&self) -> Self::Io<'_>;
}

macro_rules! impl_tls_transport {
    ($($ty:ty),*) => {$(
        impl TlsTransport for $ty {
            type Io<'a> = &'a $ty;

            #[inline]
            fn io(&self) -> &$ty {
                self
            }
        }
    )*};
}

impl_tls_transport!(
    crate::TcpStream,
    crate::UnixStream,
    std::net::TcpStream,
    std::os::unix::net::UnixStream
);

/// The crypto provider used by this module's helpers: rustls' *ring*
/// provider, with its default cipher suites and key-exchange groups.
///
/// Build configurations with `ServerConfig::builder_with_provider(crypto_provider())`
/// (or `ClientConfig::…`) to stay independent of which providers other
/// crates enable in rustls.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
