//! [`RespCodec`]: Redis's serialization protocol, version 2.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::{invalid, Decoder, Encoder};

/// A RESP2 value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Resp {
    /// `+OK\r\n`: a status reply (no CR or LF inside).
    Simple(String),
    /// `-ERR message\r\n`: an error reply (no CR or LF inside).
    Error(String),
    /// `:42\r\n`.
    Integer(i64),
    /// `$5\r\nhello\r\n`: a binary-safe string.
    Bulk(Bytes),
    /// `$-1\r\n`: the null bulk string (a missing key).
    Null,
    /// `*-1\r\n`: the null array.
    NullArray,
    /// `*2\r\n...`: an array of values.
    Array(Vec<Resp>),
}

impl Resp {
    /// A status reply.
    pub fn simple(s: &str) -> Resp {
        Resp::Simple(s.to_owned())
    }

    /// An error reply (conventionally starting with an upper-case code such
    /// as `ERR` or `WRONGTYPE`).
    pub fn error(s: &str) -> Resp {
        Resp::Error(s.to_owned())
    }

    /// A bulk string.
    pub fn bulk(b: impl Into<Bytes>) -> Resp {
        Resp::Bulk(b.into())
    }

    /// The bytes of a bulk or simple string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Resp::Bulk(b) => Some(b),
            Resp::Simple(s) => Some(s.as_bytes()),
            _ => None,
        }
    }
}

/// What the decoder accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Any RESP2 value (replies, or requests from a strict client).
    Any,
    /// What a Redis server accepts: arrays of bulk strings, or inline
    /// commands (`PING\r\n`); `*0`/`*-1` are skipped.
    Request,
}

/// Redis's RESP2 protocol: [`Resp`] values in both directions.
///
/// [`RespCodec::new`] decodes any RESP2 value (what a client reads);
/// [`RespCodec::server`] decodes requests exactly as a Redis server reads
/// them: an array of bulk strings, or an *inline command* (`PING\r\n`,
/// `SET k "a b"\r\n`, as typed in `telnet`), each returned as a
/// [`Resp::Array`] of [`Resp::Bulk`]s.
///
/// Parsing is incremental: a value arriving in many reads is never parsed
/// from the start again, and a bulk string's buffer is reserved once its
/// length is known. Every limit is checked on the header, before anything
/// is buffered for it:
///
/// | input | error (`InvalidData`) |
/// |---|---|
/// | bulk length negative (except `$-1` in a reply) or over [`max_bulk_len`](Self::max_bulk_len) (default 512 MiB, Redis's `proto-max-bulk-len`) | `Protocol error: invalid bulk length` |
/// | array length below -1, not a number or over [`max_array_len`](Self::max_array_len) (default 1,048,576) | `Protocol error: invalid multibulk length` |
/// | a request array holding something other than bulk strings | `Protocol error: expected '$', got 'X'` |
/// | an inline command or header line over [`max_inline_len`](Self::max_inline_len) (64 KiB) without its line end | `Protocol error: too big inline request` |
/// | unbalanced quotes in an inline command | `Protocol error: unbalanced quotes in request` |
/// | arrays nested deeper than 64 | `Protocol error: arrays nested too deep` |
///
/// Decoded bulk strings are `Bytes` slices of the read buffer (no copy);
/// copy what you keep for long (`Bytes::copy_from_slice`), or it pins the
/// whole buffer it came from.
///
/// The messages are Redis's own, so a server can answer `-ERR {error}`
/// and close the connection, as Redis does. After an error the stream
/// cannot be resynchronised. A stream that ends inside a value is an
/// `UnexpectedEof` error.
///
/// ```
/// use tasklet::netio::codec::{Bytes, BytesMut, Decoder, Encoder, Resp, RespCodec};
///
/// let mut server = RespCodec::server();
/// let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nPING\r\n"[..]);
/// let get = Resp::Array(vec![Resp::bulk("GET"), Resp::bulk("k")]);
/// assert_eq!(server.decode(&mut buf).unwrap(), Some(get));
/// assert_eq!(server.decode(&mut buf).unwrap(), Some(Resp::Array(vec![Resp::bulk("PING")])));
///
/// let mut out = BytesMut::new();
/// server.encode(&Resp::Bulk(Bytes::from_static(b"v")), &mut out).unwrap();
/// server.encode(&Resp::Null, &mut out).unwrap();
/// assert_eq!(&out[..], b"$1\r\nv\r\n$-1\r\n");
/// ```
#[derive(Debug, Clone)]
pub struct RespCodec {
    mode: Mode,
    max_bulk: usize,
    max_array: usize,
    max_inline: usize,
    /// Arrays being filled: (elements still to come, elements so far).
    stack: Vec<(usize, Vec<Resp>)>,
    /// A bulk string whose header has been read: its length.
    bulk: Option<usize>,
}

const MAX_DEPTH: usize = 64;
/// Capacity reserved up front for an array, whatever length it announces
/// (elements take memory only as they arrive).
const PREALLOC: usize = 1024;
/// Most bytes reserved ahead for a bulk string still arriving.
const RESERVE_AHEAD: usize = 64 * 1024;

impl Default for RespCodec {
    fn default() -> Self {
        RespCodec::new()
    }
}

impl RespCodec {
    /// Decodes any RESP2 value (a client reading replies).
    pub fn new() -> RespCodec {
        RespCodec {
            mode: Mode::Any,
            max_bulk: 512 * 1024 * 1024,
            max_array: 1024 * 1024,
            max_inline: 64 * 1024,
            stack: Vec::new(),
            bulk: None,
        }
    }

    /// Decodes requests as a Redis server does (arrays of bulk strings, or
    /// inline commands).
    pub fn server() -> RespCodec {
        RespCodec {
            mode: Mode::Request,
            ..RespCodec::new()
        }
    }

    /// Refuses bulk strings longer than `max` bytes.
    pub fn max_bulk_len(mut self, max: usize) -> RespCodec {
        self.max_bulk = max;
        self
    }

    /// Refuses arrays of more than `max` elements.
    pub fn max_array_len(mut self, max: usize) -> RespCodec {
        self.max_array = max;
        self
    }

    /// Refuses inline commands and header lines longer than `max` bytes.
    pub fn max_inline_len(mut self, max: usize) -> RespCodec {
        self.max_inline = max;
        self
    }

    /// Resets the parser after an error.
    fn fail<T>(&mut self, msg: &str) -> io::Result<T> {
        self.stack.clear();
        self.bulk = None;
        Err(invalid(format!("Protocol error: {msg}")))
    }

    /// Files a complete value: returns it if it is a top-level value.
    fn complete(&mut self, mut value: Resp) -> Option<Resp> {
        loop {
            let Some((left, items)) = self.stack.last_mut() else {
                return Some(value);
            };
            items.push(value);
            *left -= 1;
            if *left > 0 {
                return None;
            }
            let (_, items) = self.stack.pop().expect("non-empty stack");
            value = Resp::Array(items);
        }
    }

    /// The first line in `buf` (without CRLF), or `None` if it is not
    /// complete yet.
    fn line(&mut self, buf: &BytesMut) -> io::Result<Option<usize>> {
        let window = buf.len().min(self.max_inline.saturating_add(2));
        match buf[..window].iter().position(|&b| b == b'\n') {
            Some(i) if i > 0 && buf[i - 1] == b'\r' => Ok(Some(i - 1)),
            Some(_) => self.fail("expected CRLF at the end of a line"),
            None if buf.len() > self.max_inline.saturating_add(1) => {
                self.fail("too big inline request")
            }
            None => Ok(None),
        }
    }

    fn decode_step(&mut self, buf: &mut BytesMut) -> io::Result<Option<Resp>> {
        loop {
            if let Some(len) = self.bulk {
                if buf.len() < len + 2 {
                    // Room for the body as it arrives, not all of it on the
                    // word of a header (the buffer grows by doubling).
                    buf.reserve((len + 2 - buf.len()).min(RESERVE_AHEAD));
                    return Ok(None);
                }
                if &buf[len..len + 2] != b"\r\n" {
                    return self.fail("expected CRLF after a bulk string");
                }
                self.bulk = None;
                let data = buf.split_to(len).freeze();
                buf.advance(2);
                if let Some(v) = self.complete(Resp::Bulk(data)) {
                    return Ok(Some(v));
                }
                continue;
            }
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if self.mode == Mode::Request && self.stack.is_empty() && first != b'*' {
                match self.inline(buf)? {
                    Inline::Command(v) => return Ok(Some(v)),
                    Inline::Skipped => continue,
                    Inline::Incomplete => return Ok(None),
                }
            }
            let Some(end) = self.line(buf)? else {
                return Ok(None);
            };
            if self.mode == Mode::Request && !self.stack.is_empty() && first != b'$' {
                let got = if first.is_ascii_graphic() {
                    (first as char).to_string()
                } else {
                    format!("\\x{first:02x}")
                };
                return self.fail(&format!("expected '$', got '{got}'"));
            }
            let value = match first {
                b'+' | b'-' => {
                    let text = match std::str::from_utf8(&buf[1..end]) {
                        Ok(t) => t.to_owned(),
                        Err(_) => return self.fail("status line is not valid UTF-8"),
                    };
                    if first == b'+' {
                        Resp::Simple(text)
                    } else {
                        Resp::Error(text)
                    }
                }
                b':' => match parse_int(&buf[1..end]) {
                    Some(n) => Resp::Integer(n),
                    None => return self.fail("invalid integer"),
                },
                b'$' => match parse_int(&buf[1..end]) {
                    Some(-1) if self.mode == Mode::Any => Resp::Null,
                    Some(n) if n >= 0 && (n as u64) <= self.max_bulk as u64 => {
                        buf.advance(end + 2);
                        self.bulk = Some(n as usize);
                        continue;
                    }
                    _ => return self.fail("invalid bulk length"),
                },
                b'*' => match parse_int(&buf[1..end]) {
                    Some(n) if n <= 0 && self.mode == Mode::Request => {
                        // Redis skips empty and null requests.
                        buf.advance(end + 2);
                        continue;
                    }
                    Some(-1) => Resp::NullArray,
                    Some(0) => Resp::Array(Vec::new()),
                    Some(n) if n > 0 && (n as u64) <= self.max_array as u64 => {
                        if self.stack.len() >= MAX_DEPTH {
                            return self.fail("arrays nested too deep");
                        }
                        buf.advance(end + 2);
                        let n = n as usize;
                        self.stack.push((n, Vec::with_capacity(n.min(PREALLOC))));
                        continue;
                    }
                    _ => return self.fail("invalid multibulk length"),
                },
                _ => {
                    let got = if first.is_ascii_graphic() {
                        (first as char).to_string()
                    } else {
                        format!("\\x{first:02x}")
                    };
                    return self.fail(&format!("unknown type byte '{got}'"));
                }
            };
            buf.advance(end + 2);
            if let Some(v) = self.complete(value) {
                return Ok(Some(v));
            }
        }
    }

    /// An inline command: one line of space-separated, optionally quoted
    /// arguments (an empty line is consumed and skipped).
    fn inline(&mut self, buf: &mut BytesMut) -> io::Result<Inline> {
        let window = buf.len().min(self.max_inline.saturating_add(1));
        let Some(nl) = buf[..window].iter().position(|&b| b == b'\n') else {
            if buf.len() > self.max_inline {
                return self.fail("too big inline request");
            }
            return Ok(Inline::Incomplete);
        };
        let line = buf.split_to(nl + 1);
        let args = match split_args(&line[..nl]) {
            Some(a) => a,
            None => return self.fail("unbalanced quotes in request"),
        };
        if args.is_empty() {
            return Ok(Inline::Skipped);
        }
        Ok(Inline::Command(Resp::Array(
            args.into_iter().map(|a| Resp::Bulk(a.into())).collect(),
        )))
    }
}

enum Inline {
    Command(Resp),
    Skipped,
    Incomplete,
}

/// A strict decimal `i64`: an optional `-`, then digits only.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (neg, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?;
        n = if neg {
            n.checked_sub((d - b'0') as i64)?
        } else {
            n.checked_add((d - b'0') as i64)?
        };
    }
    Some(n)
}

/// Splits an inline command like Redis's `sdssplitargs`: arguments are
/// separated by white space and may be quoted, `"..."` with C-like escapes
/// (`\n`, `\xHH`…) or `'...'` (only `\'` escaped). `None` for unbalanced
/// quotes (or a closing quote not followed by a space).
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut args = Vec::new();
    let mut i = 0;
    let is_space = |c: u8| matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b'\x0b' | b'\x0c' | 0);
    loop {
        while i < line.len() && is_space(line[i]) {
            i += 1;
        }
        if i == line.len() {
            return Some(args);
        }
        let mut cur = Vec::new();
        let (mut dq, mut sq) = (false, false);
        loop {
            let c = line.get(i).copied();
            if dq {
                let c = c?;
                if c == b'\\' && line.get(i + 1) == Some(&b'x') {
                    let hex = line.get(i + 2..i + 4).and_then(|h| {
                        std::str::from_utf8(h)
                            .ok()
                            .and_then(|h| u8::from_str_radix(h, 16).ok())
                    });
                    if let Some(b) = hex {
                        cur.push(b);
                        i += 4;
                        continue;
                    }
                }
                if c == b'\\' && i + 1 < line.len() {
                    cur.push(match line[i + 1] {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 8,
                        b'a' => 7,
                        other => other,
                    });
                    i += 2;
                } else if c == b'"' {
                    if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                    i += 1;
                }
            } else if sq {
                let c = c?;
                if c == b'\\' && line.get(i + 1) == Some(&b'\'') {
                    cur.push(b'\'');
                    i += 2;
                } else if c == b'\'' {
                    if line.get(i + 1).is_some_and(|&n| !is_space(n)) {
                        return None;
                    }
                    i += 1;
                    break;
                } else {
                    cur.push(c);
                    i += 1;
                }
            } else {
                match c {
                    None => break,
                    Some(c) if is_space(c) => break,
                    Some(b'"') => dq = true,
                    Some(b'\'') => sq = true,
                    Some(c) => cur.push(c),
                }
                i += 1;
            }
        }
        args.push(cur);
    }
}

impl Decoder for RespCodec {
    type Item = Resp;

    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Resp>> {
        self.decode_step(buf)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Resp>> {
        if let Some(v) = self.decode_step(buf)? {
            return Ok(Some(v));
        }
        if buf.is_empty() && self.stack.is_empty() && self.bulk.is_none() {
            return Ok(None);
        }
        let left = buf.len();
        buf.clear();
        self.stack.clear();
        self.bulk = None;
        Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("stream ended in the middle of a RESP value ({left} bytes left over)"),
        ))
    }
}

/// Appends `n` in decimal.
fn put_int(dst: &mut BytesMut, n: i64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut v = n.unsigned_abs();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        dst.put_u8(b'-');
    }
    dst.put_slice(&tmp[i..]);
}

impl RespCodec {
    /// Appends a bulk string header and body (`$len\r\n...\r\n`).
    pub fn put_bulk(dst: &mut BytesMut, data: &[u8]) {
        dst.reserve(data.len() + 16);
        dst.put_u8(b'$');
        put_int(dst, data.len() as i64);
        dst.put_slice(b"\r\n");
        dst.put_slice(data);
        dst.put_slice(b"\r\n");
    }

    /// Appends an integer reply (`:n\r\n`).
    pub fn put_integer(dst: &mut BytesMut, n: i64) {
        dst.reserve(24);
        dst.put_u8(b':');
        put_int(dst, n);
        dst.put_slice(b"\r\n");
    }

    /// Appends an array header (`*n\r\n`); the `n` elements follow.
    pub fn put_array_header(dst: &mut BytesMut, n: usize) {
        dst.reserve(24);
        dst.put_u8(b'*');
        put_int(dst, n as i64);
        dst.put_slice(b"\r\n");
    }

    fn put(dst: &mut BytesMut, v: &Resp) -> io::Result<()> {
        match v {
            Resp::Simple(s) | Resp::Error(s) => {
                if s.bytes().any(|b| b == b'\r' || b == b'\n') {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "a RESP status or error line cannot contain CR or LF",
                    ));
                }
                dst.reserve(s.len() + 3);
                dst.put_u8(if matches!(v, Resp::Simple(_)) {
                    b'+'
                } else {
                    b'-'
                });
                dst.put_slice(s.as_bytes());
                dst.put_slice(b"\r\n");
            }
            Resp::Integer(n) => RespCodec::put_integer(dst, *n),
            Resp::Bulk(b) => RespCodec::put_bulk(dst, b),
            Resp::Null => dst.put_slice(b"$-1\r\n"),
            Resp::NullArray => dst.put_slice(b"*-1\r\n"),
            Resp::Array(items) => {
                RespCodec::put_array_header(dst, items.len());
                for item in items {
                    RespCodec::put(dst, item)?;
                }
            }
        }
        Ok(())
    }
}

impl Encoder<&Resp> for RespCodec {
    fn encode(&mut self, item: &Resp, dst: &mut BytesMut) -> io::Result<()> {
        let start = dst.len();
        RespCodec::put(dst, item).inspect_err(|_| dst.truncate(start))
    }
}

impl Encoder<Resp> for RespCodec {
    fn encode(&mut self, item: Resp, dst: &mut BytesMut) -> io::Result<()> {
        self.encode(&item, dst)
    }
}

#[cfg(test)]
mod tests;
