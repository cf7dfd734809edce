//! [`LengthDelimitedCodec`]: frames prefixed with their length.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{invalid, Decoder, Encoder};

/// Frames prefixed with their length as a big-endian `u32` (the prefix does
/// not count itself), tokio's `LengthDelimitedCodec` with its default
/// settings.
///
/// A frame longer than [`max_frame_length`](Self::max_frame_length)
/// (default 8 MiB) is an `InvalidData` error when it is decoded — as soon as
/// its prefix arrives, before any of it is buffered — and when it is
/// encoded. A length error leaves the stream unusable (there is no way to
/// find the next frame), so the error repeats on every later `decode`.
///
/// ```
/// use tasklet::netio::codec::{Bytes, BytesMut, Decoder, Encoder, LengthDelimitedCodec};
///
/// let mut codec = LengthDelimitedCodec::new();
/// let mut buf = BytesMut::new();
/// codec.encode(Bytes::from_static(b"hello"), &mut buf).unwrap();
/// assert_eq!(&buf[..], b"\0\0\0\x05hello");
/// assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), &b"hello"[..]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LengthDelimitedCodec {
    max_frame_length: usize,
}

const HEADER: usize = 4;

impl Default for LengthDelimitedCodec {
    fn default() -> Self {
        LengthDelimitedCodec::new()
    }
}

impl LengthDelimitedCodec {
    /// A codec with an 8 MiB frame limit.
    pub fn new() -> LengthDelimitedCodec {
        LengthDelimitedCodec {
            max_frame_length: 8 * 1024 * 1024,
        }
    }

    /// Sets the longest frame accepted (and encoded), in bytes.
    pub fn max_frame_length(mut self, max: usize) -> LengthDelimitedCodec {
        self.max_frame_length = max;
        self
    }

    /// The frame limit.
    pub fn get_max_frame_length(&self) -> usize {
        self.max_frame_length
    }

    fn too_long(&self, len: u64) -> io::Error {
        invalid(format!(
            "frame of {len} bytes is longer than the {}-byte limit",
            self.max_frame_length
        ))
    }

    fn put(&self, frame: &[u8], dst: &mut BytesMut) -> io::Result<()> {
        if frame.len() > self.max_frame_length || frame.len() > u32::MAX as usize {
            return Err(self.too_long(frame.len() as u64));
        }
        dst.reserve(HEADER + frame.len());
        dst.put_u32(frame.len() as u32);
        dst.put_slice(frame);
        Ok(())
    }
}

impl Decoder for LengthDelimitedCodec {
    type Item = BytesMut;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
        if buf.len() < HEADER {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max_frame_length {
            return Err(self.too_long(len as u64));
        }
        if buf.len() < HEADER + len {
            // Room for the frame as it arrives (not all of it on the word
            // of a header: the buffer grows by doubling).
            buf.reserve((HEADER + len - buf.len()).min(64 * 1024));
            return Ok(None);
        }
        buf.advance(HEADER);
        Ok(Some(buf.split_to(len)))
    }
}

impl Encoder<Bytes> for LengthDelimitedCodec {
    fn encode(&mut self, frame: Bytes, dst: &mut BytesMut) -> io::Result<()> {
        self.put(&frame, dst)
    }
}

impl Encoder<BytesMut> for LengthDelimitedCodec {
    fn encode(&mut self, frame: BytesMut, dst: &mut BytesMut) -> io::Result<()> {
        self.put(&frame, dst)
    }
}

impl Encoder<&[u8]> for LengthDelimitedCodec {
    fn encode(&mut self, frame: &[u8], dst: &mut BytesMut) -> io::Result<()> {
        self.put(frame, dst)
    }
}

impl Encoder<Vec<u8>> for LengthDelimitedCodec {
    fn encode(&mut self, frame: Vec<u8>, dst: &mut BytesMut) -> io::Result<()> {
        self.put(&frame, dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_in_pieces() {
        let mut c = LengthDelimitedCodec::new();
        let mut wire = BytesMut::new();
        c.encode(&b"abc"[..], &mut wire).unwrap();
        c.encode(&b""[..], &mut wire).unwrap();
        c.encode(vec![7u8; 1000], &mut wire).unwrap();
        let mut b = BytesMut::new();
        let mut frames = Vec::new();
        for &x in wire.iter() {
            b.put_u8(x);
            while let Some(f) = c.decode(&mut b).unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], &b"abc"[..]);
        assert!(frames[1].is_empty());
        assert_eq!(frames[2], vec![7u8; 1000]);
        assert!(c.decode_eof(&mut b).unwrap().is_none());
    }

    #[test]
    fn over_long_frame_is_refused_on_its_header_and_on_encode() {
        let mut c = LengthDelimitedCodec::new().max_frame_length(10);
        let mut b = BytesMut::from(&b"\0\0\0\x0bhello"[..]);
        let e = c.decode(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("10-byte limit"), "{e}");
        assert!(c.decode(&mut b).is_err(), "the error is sticky");
        // A huge prefix is refused without reserving memory for it.
        let mut b = BytesMut::from(&b"\xff\xff\xff\xff"[..]);
        assert!(c.decode(&mut b).is_err());
        assert!(b.capacity() < 1024);
        let mut out = BytesMut::new();
        assert!(c.encode(&[0u8; 11][..], &mut out).is_err());
        assert!(out.is_empty());
    }

    #[test]
    fn truncated_frame_at_eof_is_unexpected_eof() {
        let mut c = LengthDelimitedCodec::new();
        for partial in [&b"\0\0"[..], &b"\0\0\0\x05hel"[..]] {
            let mut b = BytesMut::from(partial);
            let e = c.decode_eof(&mut b).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{partial:?}");
        }
    }
}
