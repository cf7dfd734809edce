//! [`TlsStream`]: plaintext in, records out, over any [`TlsTransport`].

use std::cell::{Cell, RefCell};
use std::fmt;
use std::io::{self, Read, Write};

use rustls::pki_types::CertificateDer;
use rustls::{Connection, SupportedCipherSuite};
use tasklet_runtime::sync::Mutex;

use super::TlsTransport;

/// How much ciphertext one read of the socket asks for: a full TLS record
/// (16 KiB of plaintext plus the largest overhead rustls accepts).
const READ_CHUNK: usize = 16 * 1024 + 2048;

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
///
/// [`TlsAcceptor::accept`]: super::TlsAcceptor::accept
/// [`TlsConnector::connect`]: super::TlsConnector::connect
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
    pub(super) fn new(io: S, conn: Connection) -> TlsStream<S> {
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
    pub(super) fn handshake(&mut self) -> io::Result<()> {
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
pub(super) fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}
