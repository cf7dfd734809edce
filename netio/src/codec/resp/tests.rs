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
