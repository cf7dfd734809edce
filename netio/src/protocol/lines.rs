//! Twisted's `LineReceiver`: [`LineReceiver`] callbacks served as a
//! [`Protocol`] by [`LineProtocol`].

use std::fmt;
use std::io;

use bytes::BytesMut;

use super::{Protocol, Transport};
use crate::codec::{Decoder, LinesCodec};

/// A line-oriented protocol (Twisted's `LineReceiver`): implement it and
/// serve it wrapped in a [`LineProtocol`].
///
/// Lines end in `\n` or `\r\n` and arrive without it; a line longer than the
/// protocol's [`max_length`](LineProtocol::max_length) or not UTF-8 goes to
/// [`line_error`](Self::line_error). [`LineTransport::set_raw_mode`] sends
/// the following bytes — including any already buffered — to
/// [`raw_data_received`](Self::raw_data_received) instead, until
/// [`LineTransport::set_line_mode`].
pub trait LineReceiver {
    /// The connection is up. Default: nothing.
    fn connection_made(&mut self, lines: &mut LineTransport<'_>) {
        let _ = lines;
    }

    /// A line arrived, without its line ending.
    fn line_received(&mut self, line: String, lines: &mut LineTransport<'_>);

    /// Bytes arrived in raw mode. Default: discarded.
    fn raw_data_received(&mut self, data: &[u8], lines: &mut LineTransport<'_>) {
        let _ = (data, lines);
    }

    /// A line was too long (Twisted's `lineLengthExceeded`; the error names
    /// the limit) or not UTF-8. Default: close the connection, as Twisted
    /// does for long lines.
    fn line_error(&mut self, error: io::Error, lines: &mut LineTransport<'_>) {
        log::debug!("tasklet-netio: LineReceiver: {error}; closing the connection");
        lines.lose_connection();
    }

    /// The connection is gone (see [`Protocol::connection_lost`]).
    fn connection_lost(&mut self, reason: Option<io::Error>) {
        let _ = reason;
    }
}

struct LineState {
    raw: bool,
    buf: BytesMut,
    delimiter: Vec<u8>,
}

/// What a [`LineReceiver`] callback gets: the [`Transport`] (by `Deref`)
/// plus `send_line` and the line/raw mode switches.
pub struct LineTransport<'a> {
    transport: &'a Transport,
    state: &'a mut LineState,
}

impl LineTransport<'_> {
    /// Sends `line` followed by the delimiter (`\r\n` unless changed with
    /// [`LineProtocol::delimiter`]).
    pub fn send_line(&self, line: &str) {
        self.transport
            .write_sequence([line.as_bytes(), &self.state.delimiter[..]]);
    }

    /// Delivers the bytes after the current line, and all that follow, to
    /// [`LineReceiver::raw_data_received`] (Twisted's `setRawMode`).
    pub fn set_raw_mode(&mut self) {
        self.state.raw = true;
    }

    /// Back to lines (Twisted's `setLineMode`): `extra` — typically the part
    /// of the raw data after the payload — is parsed as lines first.
    pub fn set_line_mode(&mut self, extra: &[u8]) {
        self.state.raw = false;
        self.state.buf.extend_from_slice(extra);
    }

    /// Whether raw mode is on.
    pub fn is_raw(&self) -> bool {
        self.state.raw
    }

    /// The transport.
    pub fn transport(&self) -> &Transport {
        self.transport
    }
}

impl fmt::Debug for LineTransport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineTransport")
            .field("transport", self.transport)
            .field("raw", &self.state.raw)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for LineTransport<'_> {
    type Target = Transport;
    fn deref(&self) -> &Transport {
        self.transport
    }
}

/// Serves a [`LineReceiver`] as a [`Protocol`], framing with
/// [`LinesCodec`].
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// use tasklet::netio::protocol::{LineProtocol, LineReceiver, LineTransport};
/// use tasklet::netio::{StreamServer, TcpStream};
///
/// /// Answers each line with its length; "bye" closes.
/// struct Counter;
///
/// impl LineReceiver for Counter {
///     fn line_received(&mut self, line: String, lines: &mut LineTransport<'_>) {
///         if line == "bye" {
///             lines.lose_connection();
///         } else {
///             lines.send_line(&line.len().to_string());
///         }
///     }
/// }
///
/// tasklet::dispatch(|| {
///     let server = StreamServer::bind_protocol("127.0.0.1:0", |_| {
///         LineProtocol::new(Counter).max_length(100)
///     })
///     .unwrap()
///     .start();
///     let mut c = TcpStream::connect(server.local_addr()).unwrap();
///     c.write_all(b"hello\r\nworld!\nbye\n").unwrap();
///     let replies: Vec<String> = BufReader::new(&c).lines().map(|l| l.unwrap()).collect();
///     assert_eq!(replies, ["5", "6"]); // then the server closed the connection
/// });
/// ```
pub struct LineProtocol<R> {
    receiver: R,
    codec: LinesCodec,
    state: LineState,
}

impl<R: LineReceiver> LineProtocol<R> {
    /// Wraps `receiver`, with Twisted's defaults: lines of at most 16384
    /// bytes, `\r\n` as the delimiter `send_line` appends.
    pub fn new(receiver: R) -> LineProtocol<R> {
        LineProtocol {
            receiver,
            codec: LinesCodec::new().max_length(16384),
            state: LineState {
                raw: false,
                buf: BytesMut::new(),
                delimiter: b"\r\n".to_vec(),
            },
        }
    }

    /// Caps a line at `max` bytes (Twisted's `MAX_LENGTH`): a longer one
    /// goes to [`LineReceiver::line_error`] and is never buffered whole.
    pub fn max_length(mut self, max: usize) -> LineProtocol<R> {
        self.codec = LinesCodec::new().max_length(max);
        self
    }

    /// What `send_line` appends (default `\r\n`).
    pub fn delimiter(mut self, delimiter: &[u8]) -> LineProtocol<R> {
        self.state.delimiter = delimiter.to_vec();
        self
    }

    /// The receiver.
    pub fn get_ref(&self) -> &R {
        &self.receiver
    }

    /// The receiver, mutably.
    pub fn get_mut(&mut self) -> &mut R {
        &mut self.receiver
    }

    /// Delivers what is buffered, in the current mode, until nothing is left
    /// or the connection closes.
    fn deliver(&mut self, t: &Transport) {
        while !t.is_closing() {
            let mut lines = LineTransport {
                transport: t,
                state: &mut self.state,
            };
            if lines.state.raw {
                if lines.state.buf.is_empty() {
                    return;
                }
                let data = lines.state.buf.split();
                self.receiver.raw_data_received(&data, &mut lines);
                continue;
            }
            match self.codec.decode(&mut lines.state.buf) {
                Ok(Some(line)) => self.receiver.line_received(line, &mut lines),
                Ok(None) => return,
                Err(e) => self.receiver.line_error(e, &mut lines),
            }
        }
    }
}

impl<R: LineReceiver> Protocol for LineProtocol<R> {
    fn connection_made(&mut self, transport: &Transport) {
        let mut lines = LineTransport {
            transport,
            state: &mut self.state,
        };
        self.receiver.connection_made(&mut lines);
        self.deliver(transport);
    }

    fn data_received(&mut self, data: &[u8], transport: &Transport) {
        if self.state.raw && self.state.buf.is_empty() {
            // The common raw-mode case: no copy.
            let mut lines = LineTransport {
                transport,
                state: &mut self.state,
            };
            self.receiver.raw_data_received(data, &mut lines);
        } else {
            self.state.buf.extend_from_slice(data);
        }
        self.deliver(transport);
    }

    fn connection_lost(&mut self, reason: Option<io::Error>) {
        self.receiver.connection_lost(reason);
    }
}

impl<R: fmt::Debug> fmt::Debug for LineProtocol<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LineProtocol")
            .field("receiver", &self.receiver)
            .field("raw", &self.state.raw)
            .field("buffered", &self.state.buf.len())
            .finish()
    }
}
