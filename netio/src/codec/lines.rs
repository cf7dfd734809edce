//! [`LinesCodec`]: text lines ending in `\n` or `\r\n`.

use std::io;

use bytes::{Buf, BufMut, BytesMut};

use super::{invalid, Decoder, Encoder};

/// Text lines: a frame is a `String` without its `\n` or `\r\n`.
///
/// - [`max_length`](Self::max_length) caps a line (Twisted's
///   `LineReceiver.MAX_LENGTH`, default: no cap). A longer line is an
///   `InvalidData` error that names the limit; the codec never buffers more
///   than the limit plus the line ending (what arrives in the same read
///   apart) while looking for it, and after the error it skips the rest of
///   that line, so a caller may go on with the next one.
/// - A line that is not UTF-8 is an `InvalidData` error; it is consumed, so
///   the next line decodes normally.
/// - At the end of the stream a last line without a line ending is still a
///   line (as `BufRead::lines` and tokio's `LinesCodec` have it).
/// - Encoding appends `\n` (or `\r\n` with [`crlf`](Self::crlf)).
///
/// ```
/// use tasklet::netio::codec::{BytesMut, Decoder, LinesCodec};
///
/// let mut codec = LinesCodec::new().max_length(8);
/// let mut buf = BytesMut::from(&b"hello\r\nfar too long\nok\n"[..]);
/// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("hello"));
/// let err = codec.decode(&mut buf).unwrap_err();
/// assert!(err.to_string().contains("8 bytes"));
/// assert_eq!(codec.decode(&mut buf).unwrap().as_deref(), Some("ok"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinesCodec {
    max_length: usize,
    /// Where the search for `\n` resumes (bytes before it were searched).
    next_index: usize,
    /// Skipping the rest of an over-long line.
    discarding: bool,
    crlf: bool,
}

impl Default for LinesCodec {
    fn default() -> Self {
        LinesCodec::new()
    }
}

impl LinesCodec {
    /// Lines of any length, encoded with `\n`.
    pub fn new() -> LinesCodec {
        LinesCodec {
            max_length: usize::MAX,
            next_index: 0,
            discarding: false,
            crlf: false,
        }
    }

    /// Caps a line at `max` bytes, not counting its line ending.
    pub fn max_length(mut self, max: usize) -> LinesCodec {
        self.max_length = max;
        self
    }

    /// The cap set with [`max_length`](Self::max_length) (`usize::MAX` if none).
    pub fn get_max_length(&self) -> usize {
        self.max_length
    }

    /// Encodes lines with `\r\n` (`true`) or `\n` (`false`, the default).
    pub fn crlf(mut self, crlf: bool) -> LinesCodec {
        self.crlf = crlf;
        self
    }

    fn too_long(&self) -> io::Error {
        invalid(format!("line longer than {} bytes", self.max_length))
    }

    /// Turns a line with its line ending stripped into a `String`.
    fn finish(&self, mut line: BytesMut) -> io::Result<String> {
        if line.last() == Some(&b'\r') {
            line.truncate(line.len() - 1);
        }
        if line.len() > self.max_length {
            return Err(self.too_long());
        }
        String::from_utf8(line.to_vec()).map_err(|e| {
            invalid(format!(
                "line is not valid UTF-8 (invalid byte at offset {})",
                e.utf8_error().valid_up_to()
            ))
        })
    }
}

impl Decoder for LinesCodec {
    type Item = String;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<String>> {
        loop {
            if self.discarding {
                match buf.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.discarding = false;
                        self.next_index = 0;
                        continue;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                }
            }
            // A line of `max_length` bytes plus `\r\n` fits in the window.
            let window = self.max_length.saturating_add(2).min(buf.len());
            let start = self.next_index.min(window);
            match buf[start..window].iter().position(|&b| b == b'\n') {
                Some(i) => {
                    let end = start + i;
                    self.next_index = 0;
                    let mut line = buf.split_to(end + 1);
                    line.truncate(end);
                    return self.finish(line).map(Some);
                }
                None if buf.len() >= self.max_length.saturating_add(2) => {
                    // No line ending within the limit: skip the line, up
                    // to its end if it is buffered (lines after it are
                    // kept), else drop what we hold and skip the rest as
                    // it arrives.
                    self.next_index = 0;
                    match buf[window..].iter().position(|&b| b == b'\n') {
                        Some(i) => buf.advance(window + i + 1),
                        None => {
                            buf.clear();
                            self.discarding = true;
                        }
                    }
                    return Err(self.too_long());
                }
                None => {
                    self.next_index = window;
                    return Ok(None);
                }
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<String>> {
        if let Some(line) = self.decode(buf)? {
            return Ok(Some(line));
        }
        self.next_index = 0;
        if self.discarding {
            self.discarding = false;
            buf.clear();
            return Ok(None);
        }
        if buf.is_empty() {
            return Ok(None);
        }
        let line = buf.split();
        self.finish(line).map(Some)
    }
}

impl LinesCodec {
    fn put_line(&self, line: &str, dst: &mut BytesMut) {
        dst.reserve(line.len() + 2);
        dst.put_slice(line.as_bytes());
        if self.crlf {
            dst.put_slice(b"\r\n");
        } else {
            dst.put_u8(b'\n');
        }
    }
}

impl Encoder<String> for LinesCodec {
    fn encode(&mut self, line: String, dst: &mut BytesMut) -> io::Result<()> {
        self.put_line(&line, dst);
        Ok(())
    }
}

impl Encoder<&String> for LinesCodec {
    fn encode(&mut self, line: &String, dst: &mut BytesMut) -> io::Result<()> {
        self.put_line(line, dst);
        Ok(())
    }
}

impl Encoder<&str> for LinesCodec {
    fn encode(&mut self, line: &str, dst: &mut BytesMut) -> io::Result<()> {
        self.put_line(line, dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buf(b: &[u8]) -> BytesMut {
        BytesMut::from(b)
    }

    #[test]
    fn lf_and_crlf_lines() {
        let mut c = LinesCodec::new();
        let mut b = buf(b"one\ntwo\r\n\r\nthree");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "one");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "two");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "");
        assert_eq!(c.decode(&mut b).unwrap(), None);
        b.extend_from_slice(b" four\n");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "three four");
        assert!(b.is_empty());
    }

    #[test]
    fn line_arriving_byte_by_byte() {
        let mut c = LinesCodec::new().max_length(10);
        let mut b = BytesMut::new();
        for &x in b"0123456789\r" {
            b.put_u8(x);
            assert_eq!(c.decode(&mut b).unwrap(), None);
        }
        b.put_u8(b'\n');
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "0123456789");
    }

    #[test]
    fn over_long_line_is_an_error_naming_the_limit_and_the_buffer_stays_bounded() {
        let mut c = LinesCodec::new().max_length(16);
        let mut b = BytesMut::new();
        let mut err = None;
        for _ in 0..100 {
            b.extend_from_slice(b"xxxxxxx");
            match c.decode(&mut b) {
                Ok(None) => assert!(b.len() < 16 + 2, "buffer grew to {}", b.len()),
                Ok(Some(l)) => panic!("decoded {l:?}"),
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        let err = err.expect("over-long line accepted");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("16 bytes"), "{err}");
        // The rest of the long line is skipped; the next line is fine.
        b.extend_from_slice(b"more of the long line\nnext\n");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "next");
    }

    #[test]
    fn lines_buffered_after_an_over_long_one_are_kept() {
        let mut c = LinesCodec::new().max_length(4);
        let mut b = buf(b"waytoolong\nok\nfine\n");
        assert!(c.decode(&mut b).is_err());
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "ok");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "fine");
    }

    #[test]
    fn line_exactly_at_the_limit_is_accepted_one_more_is_not() {
        let mut c = LinesCodec::new().max_length(4);
        let mut b = buf(b"abcd\r\nabcd\nabcde\nok\n");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "abcd");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "abcd");
        let e = c.decode(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "ok");
    }

    #[test]
    fn non_utf8_line_is_an_error_and_the_next_line_decodes() {
        let mut c = LinesCodec::new();
        let mut b = buf(b"ok\n\xff\xfe bad\nfine\n");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "ok");
        let e = c.decode(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("UTF-8"), "{e}");
        assert_eq!(c.decode(&mut b).unwrap().unwrap(), "fine");
    }

    #[test]
    fn eof_mid_line_yields_the_last_line_and_respects_the_limit() {
        let mut c = LinesCodec::new().max_length(5);
        let mut b = buf(b"tail\r");
        assert_eq!(c.decode(&mut b).unwrap(), None);
        assert_eq!(c.decode_eof(&mut b).unwrap().unwrap(), "tail");
        assert_eq!(c.decode_eof(&mut b).unwrap(), None);
        let mut b = buf(b"toolong");
        assert!(c.decode_eof(&mut b).is_err());
        // The rest of the over-long line is skipped at EOF too.
        assert_eq!(c.decode_eof(&mut buf(b"more")).unwrap(), None);
        let mut b = buf(b"\xffx");
        assert!(LinesCodec::new().decode_eof(&mut b).is_err());
    }

    #[test]
    fn encodes_lf_or_crlf() {
        let mut out = BytesMut::new();
        LinesCodec::new().encode("a", &mut out).unwrap();
        LinesCodec::new()
            .crlf(true)
            .encode(String::from("b"), &mut out)
            .unwrap();
        assert_eq!(out, &b"a\nb\r\n"[..]);
    }
}
