//! Framing in blocking style: turn a byte stream into frames and back.
//!
//! The mental model is `tokio-util`'s: a [`Decoder`] cuts frames off the
//! front of a [`BytesMut`] read buffer, an [`Encoder`] appends frames to a
//! write buffer, and [`Framed`] couples a codec with any `Read + Write`
//! stream ([`TcpStream`](crate::TcpStream), [`UnixStream`](crate::UnixStream),
//! a TLS stream…). Where tokio's `Framed` is a `Stream`/`Sink`, this one has
//! plain methods that park the tasklet: [`Framed::recv`], [`Framed::send`],
//! and [`Framed::feed`] + [`Framed::flush`] for pipelining.
//!
//! Codecs: [`LinesCodec`] (text lines, with Twisted's `MAX_LENGTH` as
//! [`LinesCodec::max_length`]), [`LengthDelimitedCodec`] (big-endian `u32`
//! length prefix), [`BytesCodec`] (whatever bytes arrived), and
//! [`RespCodec`] (Redis's RESP2, requests and replies).
//!
//! Bad input is an `io::Error` of kind `InvalidData` (or `UnexpectedEof` for
//! a stream that ends in the middle of a frame) that says what was wrong and
//! names the limit that was hit; a codec never panics on input, and never
//! lets a peer make it buffer more than its limit.
//!
//! ```
//! use tasklet::netio::codec::{Framed, LinesCodec};
//! use tasklet::netio::{TcpListener, TcpStream};
//!
//! tasklet::dispatch(|| {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let addr = listener.local_addr().unwrap();
//!     tasklet::spawn(move || {
//!         let (s, _) = listener.accept().unwrap();
//!         let mut lines = Framed::new(s, LinesCodec::new().max_length(1024));
//!         // One read call per request line; EOF ends the loop.
//!         while let Some(line) = lines.recv()? {
//!             lines.send(line.to_uppercase())?;
//!         }
//!         Ok::<_, std::io::Error>(())
//!     });
//!     let mut client = Framed::new(TcpStream::connect(addr).unwrap(), LinesCodec::new());
//!     client.send("hello").unwrap();
//!     assert_eq!(client.recv().unwrap().as_deref(), Some("HELLO"));
//! });
//! ```

use std::io;

pub use bytes::{Buf, BufMut, Bytes, BytesMut};

mod framed;
mod length;
mod lines;
mod resp;

pub use framed::{Framed, FramedParts};
pub use length::LengthDelimitedCodec;
pub use lines::LinesCodec;
pub use resp::{Resp, RespCodec};

/// Cuts frames off the front of a read buffer (`tokio_util::codec::Decoder`
/// with `io::Error` as its error type).
pub trait Decoder {
    /// The frame type.
    type Item;

    /// Decodes one frame from the front of `buf`, removing its bytes, or
    /// returns `Ok(None)` if `buf` does not hold a whole frame yet (more
    /// bytes will be appended and `decode` called again). A decoder may
    /// consume bytes without producing a frame (e.g. to skip or to parse
    /// incrementally); it must not rely on seeing them again.
    ///
    /// An error reports bad input; the stream is usually not worth reading
    /// further, although some codecs ([`LinesCodec`]) can resynchronise.
    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>>;

    /// Called when the stream has ended: decodes a last frame from what is
    /// left. The default decodes normally and reports leftover bytes that do
    /// not form a whole frame as an `UnexpectedEof` error.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "stream ended in the middle of a frame ({} bytes left over)",
                    buf.len()
                ),
            )),
        }
    }
}

/// Appends frames to a write buffer (`tokio_util::codec::Encoder` with
/// `io::Error` as its error type).
pub trait Encoder<Item> {
    /// Encodes `item` at the end of `dst`. On error nothing is appended.
    fn encode(&mut self, item: Item, dst: &mut BytesMut) -> io::Result<()>;
}

/// A codec that passes bytes through unchanged: each decoded frame is
/// whatever arrived since the last one (a `BytesMut`), and `Bytes`, byte
/// slices or `BytesMut` are encoded as they are.
///
/// Useful as the "raw mode" of a connection: switch a [`Framed`] to it with
/// [`Framed::map_codec`] and no buffered byte is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BytesCodec;

impl BytesCodec {
    /// A new `BytesCodec`.
    pub fn new() -> BytesCodec {
        BytesCodec
    }
}

impl Decoder for BytesCodec {
    type Item = BytesMut;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if buf.is_empty() {
            Ok(None)
        } else {
            Ok(Some(buf.split()))
        }
    }
}

impl Encoder<Bytes> for BytesCodec {
    fn encode(&mut self, item: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

impl Encoder<BytesMut> for BytesCodec {
    fn encode(&mut self, item: BytesMut, dst: &mut BytesMut) -> io::Result<()> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

impl Encoder<&[u8]> for BytesCodec {
    fn encode(&mut self, item: &[u8], dst: &mut BytesMut) -> io::Result<()> {
        dst.extend_from_slice(item);
        Ok(())
    }
}

impl Encoder<Vec<u8>> for BytesCodec {
    fn encode(&mut self, item: Vec<u8>, dst: &mut BytesMut) -> io::Result<()> {
        dst.extend_from_slice(&item);
        Ok(())
    }
}

/// An `InvalidData` error with `msg`.
pub(crate) fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_codec_takes_everything_and_nothing_from_empty() {
        let mut c = BytesCodec::new();
        let mut buf = BytesMut::from(&b"abc"[..]);
        assert_eq!(c.decode(&mut buf).unwrap().unwrap(), &b"abc"[..]);
        assert!(buf.is_empty());
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(c.decode_eof(&mut buf).unwrap().is_none());
        let mut out = BytesMut::new();
        c.encode(&b"x"[..], &mut out).unwrap();
        c.encode(Bytes::from_static(b"y"), &mut out).unwrap();
        assert_eq!(out, &b"xy"[..]);
    }
}
