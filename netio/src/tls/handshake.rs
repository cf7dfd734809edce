//! [`TlsAcceptor`] and [`TlsConnector`]: the two sides of a handshake,
//! turning a connected stream into a [`TlsStream`].

use std::fmt;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, Connection, ServerConfig, ServerConnection};

use super::stream::tls_error;
use super::{TlsStream, TlsTransport};

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
/// See the [module example](super).
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
/// See the [module example](super).
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
