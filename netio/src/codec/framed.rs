//! [`Framed`]: a codec over a blocking-style stream.

use std::fmt;
use std::io::{self, Read, Write};

use bytes::{Buf, BytesMut};

use super::{Decoder, Encoder};

/// Initial read buffer capacity, and the least room a read is given.
const READ_CHUNK: usize = 8 * 1024;
/// The most one read asks for.
const MAX_READ: usize = 64 * 1024;
/// [`Framed::feed`] writes out once this much is buffered.
const WRITE_HIGH_WATER: usize = 128 * 1024;

/// A stream and a codec: [`recv`](Self::recv) decodes the next frame,
/// [`send`](Self::send) encodes and writes one.
///
/// Works over any `Read + Write` — a [`TcpStream`](crate::TcpStream), a
/// [`UnixStream`](crate::UnixStream), `&TcpStream` (to share the socket
/// with a writer tasklet), a TLS stream, a `std::io::Cursor` in a test —
/// and parks the tasklet where the stream does.
///
/// - **One read per frame.** `recv` first decodes from bytes it already
///   holds and reads only when they do not make a whole frame; with the
///   cooperative sockets, a request/response loop costs one `recv(2)` per
///   request.
/// - **Pipelining.** [`feed`](Self::feed) encodes into the write buffer
///   without writing (beyond 128 KiB it writes out, so memory stays
///   bounded), [`flush`](Self::flush) writes it all, and
///   [`recv_buffered`](Self::recv_buffered) decodes only what is already
///   read: answer every buffered request, then flush once.
/// - **End of stream.** `recv` returns `Ok(None)` at a clean end of stream
///   and an `UnexpectedEof` error if it ends in the middle of a frame
///   (see [`Decoder::decode_eof`]).
/// - **Switching codecs.** [`map_codec`](Self::map_codec) swaps the codec
///   and keeps both buffers; `Framed` also implements `Read`, which hands
///   out buffered bytes before reading the stream, and
///   [`into_parts`](Self::into_parts) returns the stream with the bytes read
///   but not yet decoded. No buffered byte is lost when a connection leaves
///   line mode for raw bytes (Twisted's `setRawMode`).
///
/// ```
/// use std::io::Read;
/// use tasklet::netio::codec::{BytesCodec, Framed, LinesCodec};
///
/// // A header line announces a 5-byte body (a RESP bulk string, an HTTP
/// // body…): read the line, then the body as raw bytes.
/// let wire = std::io::Cursor::new(b"SIZE 5\nhello\nnext\n".to_vec());
/// let mut lines = Framed::new(wire, LinesCodec::new());
/// assert_eq!(lines.recv().unwrap().as_deref(), Some("SIZE 5"));
/// let mut body = [0u8; 6];
/// lines.read_exact(&mut body).unwrap(); // buffered bytes come first
/// assert_eq!(&body, b"hello\n");
/// // Or keep the buffer and change codec:
/// let mut raw = lines.map_codec(|_| BytesCodec::new());
/// assert_eq!(&raw.recv().unwrap().unwrap()[..], b"next\n");
/// assert!(raw.recv().unwrap().is_none());
/// ```
pub struct Framed<S, C> {
    io: S,
    codec: C,
    read_buf: BytesMut,
    write_buf: BytesMut,
    eof: bool,
}

/// The pieces of a [`Framed`]: the stream, the codec, the bytes read but
/// not decoded, and the bytes encoded but not written.
#[derive(Debug)]
pub struct FramedParts<S, C> {
    /// The stream.
    pub io: S,
    /// The codec.
    pub codec: C,
    /// Bytes read from `io` that no frame has consumed yet.
    pub read_buf: BytesMut,
    /// Bytes encoded but not yet written to `io`.
    pub write_buf: BytesMut,
}

impl<S, C> FramedParts<S, C> {
    /// Parts with empty buffers.
    pub fn new(io: S, codec: C) -> FramedParts<S, C> {
        FramedParts {
            io,
            codec,
            read_buf: BytesMut::new(),
            write_buf: BytesMut::new(),
        }
    }
}

impl<S, C> Framed<S, C> {
    /// Frames `io` with `codec`.
    pub fn new(io: S, codec: C) -> Framed<S, C> {
        Framed {
            io,
            codec,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            write_buf: BytesMut::new(),
            eof: false,
        }
    }

    /// Rebuilds a `Framed` from parts (e.g. bytes another reader buffered).
    pub fn from_parts(parts: FramedParts<S, C>) -> Framed<S, C> {
        Framed {
            io: parts.io,
            codec: parts.codec,
            read_buf: parts.read_buf,
            write_buf: parts.write_buf,
            eof: false,
        }
    }

    /// Splits into the stream, the codec and both buffers: the bytes read
    /// but not decoded are in `read_buf`, nothing is lost.
    pub fn into_parts(self) -> FramedParts<S, C> {
        FramedParts {
            io: self.io,
            codec: self.codec,
            read_buf: self.read_buf,
            write_buf: self.write_buf,
        }
    }

    /// The stream, dropping the codec and the buffers (see
    /// [`into_parts`](Self::into_parts) to keep them).
    pub fn into_inner(self) -> S {
        self.io
    }

    /// Replaces the codec, keeping the stream and both buffers.
    pub fn map_codec<C2>(self, f: impl FnOnce(C) -> C2) -> Framed<S, C2> {
        Framed {
            io: self.io,
            codec: f(self.codec),
            read_buf: self.read_buf,
            write_buf: self.write_buf,
            eof: self.eof,
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.io
    }

    /// The stream, mutably (reading or writing it directly bypasses the
    /// buffers).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.io
    }

    /// The codec.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// The codec, mutably (e.g. to change its limits or mode).
    pub fn codec_mut(&mut self) -> &mut C {
        &mut self.codec
    }

    /// Bytes read but not yet decoded.
    pub fn read_buffer(&self) -> &BytesMut {
        &self.read_buf
    }

    /// Bytes read but not yet decoded, mutably.
    pub fn read_buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.read_buf
    }

    /// Bytes encoded but not yet written.
    pub fn write_buffer(&self) -> &BytesMut {
        &self.write_buf
    }

    /// Bytes encoded but not yet written, mutably (to append pre-encoded
    /// bytes; [`flush`](Self::flush) writes them).
    pub fn write_buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.write_buf
    }
}

impl<S: Read, C: Decoder> Framed<S, C> {
    /// Reads the next frame: `Ok(None)` at a clean end of stream, an
    /// `UnexpectedEof` error at an end of stream inside a frame, and the
    /// codec's error for bad input. Reads only when the buffered bytes do
    /// not hold a whole frame.
    pub fn recv(&mut self) -> io::Result<Option<C::Item>> {
        loop {
            if self.eof {
                return self.codec.decode_eof(&mut self.read_buf);
            }
            if let Some(frame) = self.codec.decode(&mut self.read_buf)? {
                return Ok(Some(frame));
            }
            if self.fill()? == 0 {
                self.eof = true;
            }
        }
    }

    /// Decodes a frame from the bytes already read, never reading: `Ok(None)`
    /// if they do not hold a whole frame. With [`feed`](Self::feed), it
    /// answers pipelined requests with one write:
    ///
    /// ```no_run
    /// # use tasklet::netio::codec::{Framed, LinesCodec};
    /// # fn serve(mut conn: Framed<tasklet::netio::TcpStream, LinesCodec>) -> std::io::Result<()> {
    /// loop {
    ///     let line = match conn.recv_buffered()? {
    ///         Some(line) => line,
    ///         None => {
    ///             conn.flush()?; // answers to everything buffered go out together
    ///             match conn.recv()? {
    ///                 Some(line) => line,
    ///                 None => return Ok(()),
    ///             }
    ///         }
    ///     };
    ///     conn.feed(line.len().to_string())?;
    /// }
    /// # }
    /// ```
    pub fn recv_buffered(&mut self) -> io::Result<Option<C::Item>> {
        if self.eof {
            return self.codec.decode_eof(&mut self.read_buf);
        }
        self.codec.decode(&mut self.read_buf)
    }

    /// One read from the stream into the read buffer; returns the count.
    fn fill(&mut self) -> io::Result<usize> {
        let len = self.read_buf.len();
        if self.read_buf.capacity() - len < READ_CHUNK / 8 {
            self.read_buf.reserve(READ_CHUNK);
        }
        let room = (self.read_buf.capacity() - len).min(MAX_READ);
        self.read_buf.resize(len + room, 0);
        let r = loop {
            match self.io.read(&mut self.read_buf[len..]) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => break r,
            }
        };
        let n = *r.as_ref().unwrap_or(&0);
        self.read_buf.truncate(len + n);
        r
    }
}

impl<S: Write, C> Framed<S, C> {
    /// Encodes `item` into the write buffer without writing (unless more
    /// than 128 KiB are buffered, which are then written out). Call
    /// [`flush`](Self::flush) to write.
    pub fn feed<I>(&mut self, item: I) -> io::Result<()>
    where
        C: Encoder<I>,
    {
        self.codec.encode(item, &mut self.write_buf)?;
        if self.write_buf.len() >= WRITE_HIGH_WATER {
            self.write_out()?;
        }
        Ok(())
    }

    /// Encodes `item` and writes it, with anything fed before.
    pub fn send<I>(&mut self, item: I) -> io::Result<()>
    where
        C: Encoder<I>,
    {
        self.codec.encode(item, &mut self.write_buf)?;
        self.flush()
    }

    /// Writes everything buffered, then flushes the stream.
    pub fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        self.io.flush()
    }

    fn write_out(&mut self) -> io::Result<()> {
        while !self.write_buf.is_empty() {
            match self.io.write(&self.write_buf) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WriteZero,
                        "the stream accepted no more bytes",
                    ))
                }
                Ok(n) => self.write_buf.advance(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Reads raw bytes: first those buffered (read but not decoded), then from
/// the stream. Lets a protocol leave framing for a while (a body of known
/// length after a header line) without losing a byte.
impl<S: Read, C> Read for Framed<S, C> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.read_buf.is_empty() {
            let n = buf.len().min(self.read_buf.len());
            buf[..n].copy_from_slice(&self.read_buf[..n]);
            self.read_buf.advance(n);
            return Ok(n);
        }
        if self.eof {
            return Ok(0);
        }
        self.io.read(buf)
    }
}

impl<S: fmt::Debug, C: fmt::Debug> fmt::Debug for Framed<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framed")
            .field("io", &self.io)
            .field("codec", &self.codec)
            .field("buffered_read", &self.read_buf.len())
            .field("buffered_write", &self.write_buf.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{BytesCodec, LengthDelimitedCodec, LinesCodec};
    use std::io::Cursor;

    /// A reader that returns its data in fixed-size pieces and counts reads.
    struct Trickle {
        data: Vec<u8>,
        pos: usize,
        piece: usize,
        reads: usize,
    }

    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            let n = buf.len().min(self.piece).min(self.data.len() - self.pos);
            buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
            self.pos += n;
            Ok(n)
        }
    }

    fn trickle(data: &[u8], piece: usize) -> Trickle {
        Trickle {
            data: data.to_vec(),
            pos: 0,
            piece,
            reads: 0,
        }
    }

    #[test]
    fn recv_reads_only_when_needed() {
        let mut f = Framed::new(trickle(b"a\nb\nc\n", 100), LinesCodec::new());
        assert_eq!(f.recv().unwrap().unwrap(), "a");
        assert_eq!(f.get_ref().reads, 1);
        assert_eq!(f.recv_buffered().unwrap().unwrap(), "b");
        assert_eq!(f.recv().unwrap().unwrap(), "c");
        assert_eq!(f.get_ref().reads, 1, "buffered frames need no read");
        assert_eq!(f.recv_buffered().unwrap(), None);
        assert_eq!(f.recv().unwrap(), None);
        assert_eq!(f.recv().unwrap(), None, "EOF stays EOF");
    }

    #[test]
    fn frames_split_across_reads() {
        let mut wire = BytesMut::new();
        let mut c = LengthDelimitedCodec::new();
        for i in 0..50u8 {
            c.encode(vec![i; i as usize * 7], &mut wire).unwrap();
        }
        let mut f = Framed::new(trickle(&wire, 3), c);
        for i in 0..50u8 {
            assert_eq!(f.recv().unwrap().unwrap(), vec![i; i as usize * 7]);
        }
        assert!(f.recv().unwrap().is_none());
    }

    #[test]
    fn eof_mid_frame_is_unexpected_eof() {
        let mut f = Framed::new(
            Cursor::new(b"\0\0\0\x09abc".to_vec()),
            LengthDelimitedCodec::new(),
        );
        assert_eq!(f.recv().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn over_long_line_keeps_the_buffer_bounded_and_the_stream_usable() {
        let mut data = vec![b'x'; 1_000_000];
        data.extend_from_slice(b"\nshort\n");
        let mut f = Framed::new(trickle(&data, 4096), LinesCodec::new().max_length(100));
        let e = f.recv().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(f.read_buffer().len() <= 102);
        assert_eq!(f.recv().unwrap().unwrap(), "short");
        assert!(f.read_buffer().capacity() < 64 * 1024);
    }

    #[test]
    fn switching_to_raw_and_into_parts_lose_nothing() {
        let mut f = Framed::new(trickle(b"HDR\nrawrawraw", 100), LinesCodec::new());
        assert_eq!(f.recv().unwrap().unwrap(), "HDR");
        let parts = f.into_parts();
        assert_eq!(&parts.read_buf[..], b"rawrawraw");
        let mut f = Framed::from_parts(parts).map_codec(|_| BytesCodec::new());
        assert_eq!(&f.recv().unwrap().unwrap()[..], b"rawrawraw");
    }

    #[test]
    fn feed_and_flush_pipeline() {
        let mut f = Framed::new(Vec::new(), LinesCodec::new());
        f.feed("a").unwrap();
        f.feed("b").unwrap();
        assert!(f.get_ref().is_empty());
        f.flush().unwrap();
        f.send("c").unwrap();
        assert_eq!(f.get_ref(), b"a\nb\nc\n");
        // A large backlog of fed frames is written out, not hoarded.
        let big = "y".repeat(1000);
        for _ in 0..200 {
            f.feed(big.as_str()).unwrap();
        }
        assert!(f.write_buffer().len() < WRITE_HIGH_WATER);
    }
}
