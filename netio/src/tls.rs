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

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub use rustls;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use rustls::{ServerConnection, SupportedCipherSuite};
use tasklet_runtime::sync::Mutex;

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

/// How much ciphertext one read of the socket asks for: a full TLS record
/// (16 KiB of plaintext plus the largest overhead rustls accepts).
const READ_CHUNK: usize = 16 * 1024 + 2048;

/// The crypto provider used by this module's helpers: rustls' *ring*
/// provider, with its default cipher suites and key-exchange groups.
///
/// Build configurations with `ServerConfig::builder_with_provider(crypto_provider())`
/// (or `ClientConfig::…`) to stay independent of which providers other
/// crates enable in rustls.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS connection over the stream `S`: plaintext in, records out.
///
/// Created by [`TlsAcceptor::accept`] or [`TlsConnector::connect`] once the
/// handshake is complete. `Read` and `Write` are implemented for
/// `TlsStream<S>` and for `&TlsStream<S>`, over any [`TlsTransport`] (every
/// netio stream): one tasklet may read while another writes.
///
/// - A read returns `Ok(0)` once the peer has sent `close_notify`; a peer
///   that closes the connection without it (a possible truncation attack)
///   makes the read fail with `ErrorKind::UnexpectedEof`. A record that
///   fails to decrypt or parse fails with `ErrorKind::InvalidData`, after an
///   alert is sent to the peer.
/// - A write encrypts and sends before returning: `flush` has nothing left
///   to do, and nothing is lost if the stream is dropped after a write.
/// - [`shutdown`](Self::shutdown) sends `close_notify`; dropping the stream
///   closes the socket without it (as rustls' `StreamOwned`).
/// - A write interrupted half-way (a kill, a timeout, a write timeout of
///   the socket) may leave part of a record on the wire: the peer will
///   reject what follows, so drop the stream after such an error.
/// - The socket must stay in blocking mode (the default; its timeouts are
///   fine): a record half-written by a non-blocking socket cannot be resumed.
///
/// Internally the rustls state sits in a cell that is only borrowed between
/// parks (feeding received records, taking records to send), never while
/// the socket waits; readers queue on one tasklet lock (the received
/// ciphertext) and writers on another (record order on the wire), so a
/// reader parked on an idle socket never holds up a writer.
pub struct TlsStream<S> {
    io: S,
    conn: RefCell<Connection>,
    /// Ciphertext read from the socket and not yet fed to rustls; serialises readers.
    rd: Mutex<ReadBuf>,
    /// Records taken from rustls on their way to the socket; serialises writers.
    wr: Mutex<Vec<u8>>,
    alpn: Option<Vec<u8>>,
    sni: Option<String>,
    /// `close_notify` sent: writes fail (rustls would encrypt them anyway).
    write_closed: Cell<bool>,
}

#[derive(Default)]
struct ReadBuf {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl<S> TlsStream<S>
where
    S: TlsTransport,
{
    fn new(io: S, conn: Connection) -> TlsStream<S> {
        TlsStream {
            io,
            conn: RefCell::new(conn),
            rd: Mutex::new(ReadBuf::default()),
            wr: Mutex::new(Vec::new()),
            alpn: None,
            sni: None,
            write_closed: Cell::new(false),
        }
    }

    /// Drives the handshake to completion.
    fn handshake(&mut self) -> io::Result<()> {
        loop {
            self.flush_tls()?;
            let (handshaking, wants_read) = {
                let c = self.conn.borrow();
                (c.is_handshaking(), c.wants_read())
            };
            if !handshaking {
                break;
            }
            if !wants_read {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS handshake stalled: rustls neither reads nor writes",
                ));
            }
            let mut rd = self.rd.lock();
            if rd.start == rd.end && self.fill(&mut rd)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "TLS handshake: the peer closed the connection",
                ));
            }
            self.feed(&mut rd)?;
        }
        let c = self.conn.borrow();
        self.alpn = c.alpn_protocol().map(<[u8]>::to_vec);
        self.sni = match &*c {
            Connection::Server(s) => s.server_name().map(str::to_owned),
            Connection::Client(_) => None,
        };
        Ok(())
    }

    /// Reads ciphertext from the socket into the (empty) read buffer; parks
    /// with no borrow of the rustls state held. Returns the byte count (0 at
    /// end of file).
    fn fill(&self, rd: &mut ReadBuf) -> io::Result<usize> {
        if rd.buf.len() < READ_CHUNK {
            rd.buf.resize(READ_CHUNK, 0);
        }
        rd.start = 0;
        rd.end = 0;
        let n = self.io.io().read(&mut rd.buf)?;
        rd.end = n;
        Ok(n)
    }

    /// Feeds the buffered ciphertext to rustls and processes it; an end of
    /// file when the buffer is empty. Sends whatever rustls wants to send
    /// in response (alerts, key updates), without waiting for a writer.
    fn feed(&self, rd: &mut ReadBuf) -> io::Result<()> {
        let result = {
            let mut conn = self.conn.borrow_mut();
            let mut result = Ok(());
            if rd.start == rd.end {
                // End of file: let rustls record it (a 0-byte read).
                if let Err(e) = conn.read_tls(&mut io::empty()) {
                    result = Err(e);
                } else if let Err(e) = conn.process_new_packets() {
                    result = Err(tls_error(e));
                }
            }
            let mut fed = 0;
            while result.is_ok() && rd.start < rd.end {
                let mut chunk = &rd.buf[rd.start..rd.end];
                match conn.read_tls(&mut chunk) {
                    Ok(0) => {
                        // close_notify received: whatever follows is ignored.
                        rd.start = rd.end;
                    }
                    Ok(n) => {
                        rd.start += n;
                        fed += n;
                    }
                    // Received plaintext is full: the rest waits for a reader
                    // (who has plaintext to take, so the next feed progresses).
                    Err(e) if e.kind() == io::ErrorKind::Other && fed > 0 => break,
                    Err(e) => result = Err(e),
                }
                if let Err(e) = conn.process_new_packets() {
                    result = Err(tls_error(e));
                }
            }
            result
        };
        // An alert on error, a key update or a ticket otherwise: if a writer
        // holds the write lock, it sends these with its own records.
        if let Some(mut out) = self.wr.try_lock() {
            let flushed = self.flush_locked(&mut out);
            if result.is_ok() {
                flushed?;
            }
        }
        result
    }

    /// Sends every record rustls has queued.
    fn flush_tls(&self) -> io::Result<()> {
        let mut out = self.wr.lock();
        self.flush_locked(&mut out)
    }

    fn flush_locked(&self, out: &mut Vec<u8>) -> io::Result<()> {
        loop {
            out.clear();
            {
                let mut conn = self.conn.borrow_mut();
                if !conn.wants_write() {
                    return Ok(());
                }
                conn.write_tls(out)?;
            }
            self.io.io().write_all(out)?;
        }
    }

    fn check_writable(&self) -> io::Result<()> {
        if self.write_closed.get() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "TLS stream shut down for writing (close_notify sent)",
            ));
        }
        Ok(())
    }

    /// Sends `close_notify`: the peer's reads end with `Ok(0)`. Writing
    /// afterwards fails with `BrokenPipe`; reading may go on until the peer's own
    /// `close_notify`. The socket stays open (close it by dropping the
    /// stream, or half-close it through [`get_ref`](Self::get_ref)).
    pub fn shutdown(&self) -> io::Result<()> {
        let mut out = self.wr.lock();
        if !self.write_closed.replace(true) {
            self.conn.borrow_mut().send_close_notify();
        }
        self.flush_locked(&mut out)
    }
}

impl<S> TlsStream<S> {
    /// The underlying stream (to read its address, set its timeouts…).
    /// Reading or writing it directly corrupts the TLS session.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The underlying stream, mutably (see [`get_ref`](Self::get_ref)).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// Unwraps the underlying stream, dropping the TLS state (without
    /// sending `close_notify`).
    pub fn into_inner(self) -> S {
        self.io
    }

    /// The application protocol agreed by ALPN (e.g. `b"h2"`, `b"http/1.1"`),
    /// if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The server name (SNI) the client asked for, on the server side; on
    /// the client side, `None` (the caller chose it).
    pub fn server_name(&self) -> Option<&str> {
        self.sni.as_deref()
    }

    /// Whether this is the server side of the connection.
    pub fn is_server(&self) -> bool {
        matches!(&*self.conn.borrow(), Connection::Server(_))
    }

    /// The negotiated protocol version (TLS 1.2 or 1.3).
    pub fn protocol_version(&self) -> Option<rustls::ProtocolVersion> {
        self.conn.borrow().protocol_version()
    }

    /// The negotiated cipher suite.
    pub fn negotiated_cipher_suite(&self) -> Option<SupportedCipherSuite> {
        self.conn.borrow().negotiated_cipher_suite()
    }

    /// The certificate chain the peer presented (the server's; a client's
    /// only when the server asked for one), end-entity first.
    pub fn peer_certificates(&self) -> Option<Vec<CertificateDer<'static>>> {
        self.conn.borrow().peer_certificates().map(<[_]>::to_vec)
    }
}

impl<S> Read for &TlsStream<S>
where
    S: TlsTransport,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let this: &TlsStream<S> = self;
        loop {
            match this.conn.borrow_mut().reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            let mut rd = this.rd.lock();
            // Another reader may have brought plaintext while we queued.
            match this.conn.borrow_mut().reader().read(buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                r => return r,
            }
            if rd.start == rd.end {
                this.fill(&mut rd)?;
            }
            this.feed(&mut rd)?;
        }
    }
}

impl<S> Write for &TlsStream<S>
where
    S: TlsTransport,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let mut out = self.wr.lock();
        self.check_writable()?;
        let n = self.conn.borrow_mut().writer().write(buf)?;
        self.flush_locked(&mut out)?;
        Ok(n)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        if bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        let mut out = self.wr.lock();
        self.check_writable()?;
        let n = self.conn.borrow_mut().writer().write_vectored(bufs)?;
        self.flush_locked(&mut out)?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tls()
    }
}

impl<S> Read for TlsStream<S>
where
    S: TlsTransport,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl<S> Write for TlsStream<S>
where
    S: TlsTransport,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        (&*self).write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        (&*self).flush()
    }
}

impl<S: fmt::Debug> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("io", &self.io)
            .field("server", &self.is_server())
            .field("protocol", &self.protocol_version())
            .field("alpn", &self.alpn.as_deref().map(String::from_utf8_lossy))
            .field("sni", &self.sni)
            .finish()
    }
}

/// A rustls error as an `io::Error` (`InvalidData`: the peer sent
/// something TLS rejects, or the configurations do not agree).
fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Runs `f` within `limit`, inside a dispatcher (outside one, the socket's
/// timeouts are the only bound).
fn bounded<T>(limit: Option<Duration>, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    match limit {
        Some(d) if tasklet_runtime::hub::in_dispatcher() => tasklet_runtime::timeout(d, f)
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("TLS handshake not complete after {d:?}"),
                ))
            }),
        _ => f(),
    }
}

/// The server side: runs TLS handshakes on accepted streams (tokio-rustls'
/// `TlsAcceptor`). Cheap to clone; share one per server.
///
/// See the [module example](self).
#[derive(Clone)]
pub struct TlsAcceptor {
    config: Arc<ServerConfig>,
    handshake_timeout: Option<Duration>,
}

impl TlsAcceptor {
    /// An acceptor for `config` (certificates, ALPN protocols, client
    /// authentication…), with no handshake timeout.
    pub fn new(config: Arc<ServerConfig>) -> TlsAcceptor {
        TlsAcceptor {
            config,
            handshake_timeout: None,
        }
    }

    /// Bounds every handshake as a whole (inside a dispatcher): one that has
    /// not completed after `limit` fails with `ErrorKind::TimedOut` and the
    /// stream is closed. The socket's own timeouts bound each wait anyway;
    /// this also stops a client trickling one byte at a time.
    pub fn handshake_timeout(mut self, limit: Duration) -> TlsAcceptor {
        self.handshake_timeout = Some(limit);
        self
    }

    /// The server configuration.
    pub fn config(&self) -> &Arc<ServerConfig> {
        &self.config
    }

    /// Runs the server side of a handshake over `stream` (parking the
    /// tasklet as the socket waits) and returns the TLS stream.
    ///
    /// On failure the stream is dropped (closed); a peer that sent
    /// something other than TLS gets an alert first and the error is
    /// `ErrorKind::InvalidData`; one that closed the connection,
    /// `UnexpectedEof`; a socket timeout or the
    /// [handshake timeout](Self::handshake_timeout), `TimedOut`.
    pub fn accept<S>(&self, stream: S) -> io::Result<TlsStream<S>>
    where
        S: TlsTransport,
    {
        let conn = ServerConnection::new(self.config.clone()).map_err(tls_error)?;
        let mut tls = TlsStream::<S>::new(stream, Connection::Server(conn));
        bounded(self.handshake_timeout, || tls.handshake())?;
        Ok(tls)
    }
}

impl fmt::Debug for TlsAcceptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsAcceptor")
            .field("alpn_protocols", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// The client side: runs TLS handshakes on connected streams
/// (tokio-rustls' `TlsConnector`). Cheap to clone.
///
/// See the [module example](self).
#[derive(Clone)]
pub struct TlsConnector {
    config: Arc<ClientConfig>,
    handshake_timeout: Option<Duration>,
}

impl TlsConnector {
    /// A connector for `config` (trusted roots, ALPN protocols, client
    /// certificate…), with no handshake timeout.
    pub fn new(config: Arc<ClientConfig>) -> TlsConnector {
        TlsConnector {
            config,
            handshake_timeout: None,
        }
    }

    /// Bounds every handshake as a whole (see
    /// [`TlsAcceptor::handshake_timeout`]).
    pub fn handshake_timeout(mut self, limit: Duration) -> TlsConnector {
        self.handshake_timeout = Some(limit);
        self
    }

    /// The client configuration.
    pub fn config(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// Runs the client side of a handshake over `stream`, checking the
    /// server's certificate against `server_name` (a DNS name, sent as SNI,
    /// or an IP address), and returns the TLS stream.
    ///
    /// Fails with `ErrorKind::InvalidInput` for a malformed name, and as
    /// [`TlsAcceptor::accept`] otherwise (a certificate the configuration
    /// does not trust is `InvalidData`).
    pub fn connect<S>(&self, server_name: &str, stream: S) -> io::Result<TlsStream<S>>
    where
        S: TlsTransport,
    {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("invalid TLS server name {server_name:?}: {e}"),
            )
        })?;
        let conn = ClientConnection::new(self.config.clone(), name).map_err(tls_error)?;
        let mut tls = TlsStream::<S>::new(stream, Connection::Client(conn));
        bounded(self.handshake_timeout, || tls.handshake())?;
        Ok(tls)
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector")
            .field("alpn_protocols", &self.config.alpn_protocols)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

/// An error about the PEM file `path`: `kind`, and a message naming the file.
fn file_error(path: &Path, kind: io::ErrorKind, what: impl fmt::Display) -> io::Error {
    io::Error::new(kind, format!("{}: {what}", path.display()))
}

fn pem_error(path: &Path, e: pem::Error) -> io::Error {
    match e {
        pem::Error::Io(e) => file_error(path, e.kind(), format_args!("cannot read: {e}")),
        e => file_error(
            path,
            io::ErrorKind::InvalidData,
            format_args!("not a valid PEM file: {e}"),
        ),
    }
}

/// Reads every certificate (`-----BEGIN CERTIFICATE-----` section) of the
/// PEM file `path`, in order: a server's chain, end-entity first, or a set
/// of trusted roots.
///
/// Errors name the file: one that cannot be read keeps the I/O error's kind
/// (e.g. `NotFound`); bad PEM or a file with no certificate is `InvalidData`.
pub fn load_certs(path: impl AsRef<Path>) -> io::Result<Vec<CertificateDer<'static>>> {
    let path = path.as_ref();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(
            path,
            io::ErrorKind::InvalidData,
            "no certificate found (expected a PEM \"BEGIN CERTIFICATE\" section)",
        ));
    }
    Ok(certs)
}

/// Reads the first private key of the PEM file `path` (PKCS#8
/// `BEGIN PRIVATE KEY`, PKCS#1 `BEGIN RSA PRIVATE KEY` or SEC1
/// `BEGIN EC PRIVATE KEY`).
///
/// Errors name the file, as [`load_certs`]'s; a file holding certificates
/// but no key says so.
pub fn load_private_key(path: impl AsRef<Path>) -> io::Result<PrivateKeyDer<'static>> {
    let path = path.as_ref();
    let mut saw_cert = false;
    for item in
        <(pem::SectionKind, Vec<u8>)>::pem_file_iter(path).map_err(|e| pem_error(path, e))?
    {
        let (kind, der) = item.map_err(|e| pem_error(path, e))?;
        if kind == pem::SectionKind::Certificate {
            saw_cert = true;
        }
        if let Some(key) = PrivateKeyDer::from_pem(kind, der) {
            return Ok(key);
        }
    }
    let what = if saw_cert {
        "no private key found (the file holds certificates: is it the certificate file?)"
    } else {
        "no private key found (expected a PEM \"BEGIN PRIVATE KEY\", \"BEGIN RSA PRIVATE KEY\" \
         or \"BEGIN EC PRIVATE KEY\" section)"
    };
    Err(file_error(path, io::ErrorKind::InvalidData, what))
}

/// Reads the certificates of the PEM file `path` into a root store, for a
/// client that trusts a private CA (or a self-signed server).
///
/// Errors name the file, as [`load_certs`]'s; a certificate rustls cannot
/// use as a trust anchor is `InvalidData`.
pub fn load_root_certs(path: impl AsRef<Path>) -> io::Result<RootCertStore> {
    let path = path.as_ref();
    let mut roots = RootCertStore::empty();
    for (i, cert) in load_certs(path)?.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            file_error(
                path,
                io::ErrorKind::InvalidData,
                format_args!("certificate {} is not a usable trust anchor: {e}", i + 1),
            )
        })?;
    }
    Ok(roots)
}

/// A server configuration (ring provider, TLS 1.2 and 1.3, no client
/// authentication) serving the certificate chain of the PEM file
/// `cert_path` with the key of `key_path`.
///
/// Set `alpn_protocols` on the result as needed, then wrap it in an `Arc`
/// for [`TlsAcceptor::new`]. Errors name the file at fault; a key that does
/// not match the certificate is `InvalidInput`, naming both.
pub fn server_config_from_pem(
    cert_path: impl AsRef<Path>,
    key_path: impl AsRef<Path>,
) -> io::Result<ServerConfig> {
    let (cert_path, key_path) = (cert_path.as_ref(), key_path.as_ref());
    let certs = load_certs(cert_path)?;
    let key = load_private_key(key_path)?;
    ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "certificate {} with key {}: {e}",
                    cert_path.display(),
                    key_path.display()
                ),
            )
        })
}
