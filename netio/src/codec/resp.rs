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
mod tests {
    use super::*;

    fn bulk(s: &str) -> Resp {
        Resp::Bulk(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn cmd(args: &[&str]) -> Resp {
        Resp::Array(args.iter().map(|a| bulk(a)).collect())
    }

    fn decode_all(codec: &mut RespCodec, wire: &[u8]) -> io::Result<Vec<Resp>> {
        let mut buf = BytesMut::from(wire);
        let mut out = Vec::new();
        while let Some(v) = codec.decode(&mut buf)? {
            out.push(v);
        }
        assert!(buf.is_empty() || !wire.is_empty());
        Ok(out)
    }

    #[test]
    fn round_trip_of_every_type_in_one_byte_pieces() {
        let values = vec![
            Resp::simple("OK"),
            Resp::error("ERR boom"),
            Resp::Integer(-42),
            Resp::Integer(i64::MIN),
            Resp::Integer(i64::MAX),
            bulk(""),
            Resp::Bulk(Bytes::from_static(b"bin\r\n\0\xff")),
            Resp::Null,
            Resp::NullArray,
            Resp::Array(vec![]),
            Resp::Array(vec![
                Resp::Integer(1),
                Resp::Array(vec![bulk("x"), Resp::Null]),
                Resp::simple("s"),
            ]),
        ];
        let mut wire = BytesMut::new();
        let mut c = RespCodec::new();
        for v in &values {
            c.encode(v, &mut wire).unwrap();
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &b in wire.iter() {
            buf.put_u8(b);
            while let Some(v) = c.decode(&mut buf).unwrap() {
                got.push(v);
            }
        }
        assert_eq!(got, values);
        assert!(c.decode_eof(&mut buf).unwrap().is_none());
    }

    #[test]
    fn server_mode_reads_multibulk_and_inline_commands() {
        let mut c = RespCodec::server();
        let got = decode_all(
            &mut c,
            b"*1\r\n$4\r\nPING\r\nPING\r\n\r\n  \nset k \"a b\\x41\\n\" 'it\\'s'\r\n*0\r\n*-1\r\nECHO x\n",
        )
        .unwrap();
        assert_eq!(
            got,
            vec![
                cmd(&["PING"]),
                cmd(&["PING"]),
                cmd(&["set", "k", "a bA\n", "it's"]),
                cmd(&["ECHO", "x"]),
            ]
        );
    }

    fn err(c: &mut RespCodec, wire: &[u8]) -> String {
        let e = decode_all(c, wire).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        e.to_string()
    }

    #[test]
    fn bad_lengths_are_redis_protocol_errors() {
        let s = RespCodec::server;
        assert_eq!(
            err(&mut s(), b"*99999999999\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(&mut s(), b"*x\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(&mut s(), b"*1\r\n$-5\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(&mut s(), b"*1\r\n$-1\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(&mut s().max_bulk_len(10), b"*1\r\n$11\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(&mut s(), b"*1\r\n:1\r\n"),
            "Protocol error: expected '$', got ':'"
        );
        assert_eq!(
            err(&mut s(), b"SET \"a\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            err(&mut s(), b"GET \"a\"b\r\n"),
            "Protocol error: unbalanced quotes in request"
        );
        assert_eq!(
            err(&mut RespCodec::new(), b"*-2\r\n"),
            "Protocol error: invalid multibulk length"
        );
        assert_eq!(
            err(&mut RespCodec::new(), b"$-2\r\n"),
            "Protocol error: invalid bulk length"
        );
        assert_eq!(
            err(&mut RespCodec::new(), b"?\r\n"),
            "Protocol error: unknown type byte '?'"
        );
        assert!(err(&mut RespCodec::new(), b":12a\r\n").contains("invalid integer"));
        assert!(err(&mut s(), b"*1\r\n$1\r\nab\r\n").contains("CRLF"));
    }

    #[test]
    fn huge_announced_sizes_reserve_nothing_up_front() {
        let mut c = RespCodec::server();
        let mut buf = BytesMut::from(&b"*1048576\r\n$1\r\na\r\n"[..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        assert!(c.stack[0].1.capacity() <= PREALLOC);
        // A bulk string announced at the 512 MiB limit reserves 64 KiB,
        // not 512 MiB, until its bytes arrive.
        let mut buf = BytesMut::from(&b"*1\r\n$536870912\r\n"[..]);
        assert!(RespCodec::server().decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() <= 2 * RESERVE_AHEAD, "{}", buf.capacity());
        let mut c = RespCodec::server().max_array_len(10);
        assert!(c.decode(&mut BytesMut::from(&b"*11\r\n"[..])).is_err());
    }

    #[test]
    fn over_long_lines_are_refused_without_buffering_them() {
        let mut c = RespCodec::server().max_inline_len(100);
        let mut buf = BytesMut::from(&[b'A'; 100][..]);
        assert!(c.decode(&mut buf).unwrap().is_none());
        buf.put_u8(b'A');
        assert_eq!(
            c.decode(&mut buf).unwrap_err().to_string(),
            "Protocol error: too big inline request"
        );
        let mut c = RespCodec::new().max_inline_len(100);
        let mut buf = BytesMut::from(&b"+"[..]);
        buf.extend_from_slice(&[b'x'; 200]);
        assert!(c.decode(&mut buf).is_err());
    }

    #[test]
    fn nesting_is_bounded() {
        let mut c = RespCodec::new();
        let wire = b"*1\r\n".repeat(MAX_DEPTH + 1);
        assert_eq!(err(&mut c, &wire), "Protocol error: arrays nested too deep");
    }

    #[test]
    fn eof_inside_a_value_is_unexpected_eof() {
        for wire in [&b"*2\r\n$1\r\na\r\n"[..], b"$5\r\nab", b"*1\r\n", b"+OK"] {
            let mut c = RespCodec::new();
            let mut buf = BytesMut::from(wire);
            while c.decode(&mut buf).unwrap().is_some() {}
            let e = c.decode_eof(&mut buf).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{wire:?}");
        }
    }

    #[test]
    fn status_lines_with_newlines_are_not_encoded() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let v = Resp::Array(vec![Resp::Integer(1), Resp::simple("a\r\nb")]);
        assert!(RespCodec::new().encode(&v, &mut out).is_err());
        assert_eq!(&out[..], b"keep");
    }

    /// A small deterministic generator (xorshift), so failures reproduce.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    fn random_value(rng: &mut Rng, depth: usize) -> Resp {
        match rng.below(if depth > 3 { 6 } else { 7 }) {
            0 => Resp::Simple("OK".repeat(rng.below(4))),
            1 => Resp::Error(format!("ERR {}", rng.next())),
            2 => Resp::Integer(rng.next() as i64),
            3 => Resp::Bulk((0..rng.below(300)).map(|_| rng.next() as u8).collect()),
            4 => Resp::Null,
            5 => Resp::NullArray,
            _ => Resp::Array(
                (0..rng.below(5))
                    .map(|_| random_value(rng, depth + 1))
                    .collect(),
            ),
        }
    }

    #[test]
    fn random_values_survive_random_splits() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..300 {
            let values: Vec<Resp> = (0..rng.below(8))
                .map(|_| random_value(&mut rng, 0))
                .collect();
            let mut wire = BytesMut::new();
            let mut c = RespCodec::new();
            for v in &values {
                c.encode(v, &mut wire).unwrap();
            }
            let mut buf = BytesMut::new();
            let mut got = Vec::new();
            let mut rest = &wire[..];
            while !rest.is_empty() {
                let n = 1 + rng.below(rest.len().min(64));
                buf.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                while let Some(v) = c.decode(&mut buf).unwrap() {
                    got.push(v);
                }
            }
            assert_eq!(got, values);
            assert!(c.decode_eof(&mut buf).unwrap().is_none());
        }
    }

    #[test]
    fn garbage_never_panics_and_limits_hold() {
        let mut rng = Rng(42);
        let alphabet = b"*$+-:\r\n0123456789-abc \"'\\x";
        for i in 0..20_000 {
            let len = rng.below(64);
            let junk: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.below(4) == 0 {
                        rng.next() as u8
                    } else {
                        alphabet[rng.below(alphabet.len())]
                    }
                })
                .collect();
            let mut c = if i % 2 == 0 {
                RespCodec::new()
            } else {
                RespCodec::server()
            }
            .max_bulk_len(1000)
            .max_array_len(1000)
            .max_inline_len(100);
            let mut buf = BytesMut::from(&junk[..]);
            for _ in 0..100 {
                match c.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => break,
                }
            }
            let _ = c.decode_eof(&mut buf);
            assert!(buf.capacity() < 64 * 1024 + 1024, "{junk:?}");
        }
    }

    #[test]
    fn parse_int_is_strict() {
        assert_eq!(parse_int(b"0"), Some(0));
        assert_eq!(parse_int(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [&b""[..], b"-", b"+1", b"1 ", b"9223372036854775808", b"1e3"] {
            assert_eq!(parse_int(bad), None, "{bad:?}");
        }
    }
}
