//! The codecs of `tasklet::netio::codec`: `LinesCodec`,
//! `LengthDelimitedCodec` and `RespCodec`.
//!
//! For each: decoding never panics and always makes progress; a stream
//! decodes to the same frames and errors whether its bytes arrive at once,
//! in two reads split at any point, or one byte per read; and what the
//! encoder writes decodes back to what was encoded.

use std::fmt::Debug;
use std::io;

use tasklet::netio::codec::{
    Bytes, BytesMut, Decoder, Encoder, LengthDelimitedCodec, LinesCodec, Resp, RespCodec,
};

use super::input::{split_points, Input};

/// One event of a decoded stream.
#[derive(Debug, PartialEq)]
pub enum Event<T> {
    /// A frame.
    Frame(T),
    /// A decode error: its kind and message.
    Error(io::ErrorKind, String),
}

/// Most frames one input may decode to (a decoder returning frames without
/// consuming input would otherwise loop forever).
const MAX_EVENTS: usize = 1 << 16;

/// Decodes a stream that arrives as `chunks`, then ends: every frame and
/// error, in order. After an error decoding goes on only if `resync` (the
/// codec documents that it can resynchronise).
pub fn decode_stream<C>(mut codec: C, chunks: &[&[u8]], resync: bool) -> Vec<Event<C::Item>>
where
    C: Decoder,
{
    let mut out = Vec::new();
    let mut buf = BytesMut::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            assert!(out.len() < MAX_EVENTS, "decoder makes no progress");
            match codec.decode(&mut buf) {
                Ok(Some(frame)) => out.push(Event::Frame(frame)),
                Ok(None) => break,
                Err(e) => {
                    out.push(Event::Error(e.kind(), e.to_string()));
                    if !resync {
                        return out;
                    }
                }
            }
        }
    }
    loop {
        assert!(out.len() < MAX_EVENTS, "decoder makes no progress at EOF");
        match codec.decode_eof(&mut buf) {
            Ok(Some(frame)) => out.push(Event::Frame(frame)),
            Ok(None) => break,
            Err(e) => {
                out.push(Event::Error(e.kind(), e.to_string()));
                break;
            }
        }
    }
    out
}

/// `data` decodes the same whole, split in two at every point (or 128 of
/// them), and one byte at a time; returns the whole-input decoding.
pub fn same_at_every_split<C>(codec: &C, data: &[u8], resync: bool) -> Vec<Event<C::Item>>
where
    C: Decoder + Clone,
    C::Item: PartialEq + Debug,
{
    let whole = decode_stream(codec.clone(), &[data], resync);
    for at in split_points(data.len()) {
        let split = decode_stream(codec.clone(), &[&data[..at], &data[at..]], resync);
        assert_eq!(
            whole,
            split,
            "split at {at} of {:?}",
            Bytes::copy_from_slice(data)
        );
    }
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    let trickle = decode_stream(codec.clone(), &bytes, resync);
    assert_eq!(
        whole,
        trickle,
        "one byte at a time: {:?}",
        Bytes::copy_from_slice(data)
    );
    whole
}

/// Encodes `frames` one after another with `codec`.
fn encode_all<C, I>(codec: &mut C, frames: impl IntoIterator<Item = I>) -> BytesMut
where
    C: Encoder<I>,
{
    let mut dst = BytesMut::new();
    for f in frames {
        codec.encode(f, &mut dst).expect("encode a valid frame");
    }
    dst
}

/// The frames of a decoded stream.
fn frames<T: Clone>(events: &[Event<T>]) -> Vec<T> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Frame(f) => Some(f.clone()),
            Event::Error(..) => None,
        })
        .collect()
}

/// Asserts that `events` is exactly `expected`, all frames.
fn assert_frames<T: PartialEq + Debug>(events: Vec<Event<T>>, expected: &[T]) {
    let got: Vec<&T> = events
        .iter()
        .map(|e| match e {
            Event::Frame(f) => f,
            Event::Error(k, m) => {
                panic!("round trip failed with {k:?}: {m}; expected {expected:?}")
            }
        })
        .collect();
    let want: Vec<&T> = expected.iter().collect();
    assert_eq!(got, want, "round trip");
}

/// `LinesCodec` with a limit and line ending picked by the first byte.
pub fn check_lines(data: &[u8]) {
    let mut input = Input::new(data);
    let cfg = input.byte();
    let max = [usize::MAX, 0, 1, 3, 8, 64][cfg as usize % 6];
    let crlf = cfg & 0x80 != 0;
    let codec = LinesCodec::new().max_length(max).crlf(crlf);
    let data = input.rest();
    let decoded = same_at_every_split(&codec, data, true);
    // Every decoded line is within the limit, holds no line feed, and came
    // from the input.
    for line in frames(&decoded) {
        assert!(line.len() <= max, "{line:?} is over the {max}-byte limit");
        assert!(!line.contains('\n'));
    }
    // Round trip: the lines of the input (as text, cut to the limit; a line
    // ending in CR is not representable, since the decoder strips one CR).
    let text = String::from_utf8_lossy(data);
    let lines: Vec<String> = text
        .split('\n')
        .map(|l| {
            let mut l = l.trim_end_matches('\r').to_owned();
            while l.len() > max {
                l.pop();
            }
            l.trim_end_matches('\r').to_owned()
        })
        .collect();
    let mut enc = codec.clone();
    let wire = encode_all(&mut enc, lines.iter());
    assert_frames(same_at_every_split(&codec, &wire, true), &lines);
}

/// `LengthDelimitedCodec` with a frame limit picked by the first byte.
pub fn check_length_delimited(data: &[u8]) {
    let mut input = Input::new(data);
    let max = [8 * 1024 * 1024, 0, 1, 5, 64][input.below(5)];
    let codec = LengthDelimitedCodec::new().max_frame_length(max);
    let data = input.rest();
    let decoded = same_at_every_split(&codec, data, false);
    // The prefix is canonical: re-encoding the frames gives back exactly
    // the bytes they were decoded from.
    let got = frames(&decoded);
    for f in &got {
        assert!(f.len() <= max);
    }
    let mut enc = codec.clone();
    let wire = encode_all(&mut enc, got.iter().map(|f| f.clone().freeze()));
    assert_eq!(
        &wire[..],
        &data[..wire.len()],
        "re-encoding changed the bytes"
    );
    // Round trip of frames cut from the input: lengths from its bytes.
    let mut input = Input::new(data);
    let mut sent = Vec::new();
    let mut wire = BytesMut::new();
    let mut enc = codec.clone();
    while !input.is_empty() {
        let n = input.byte() as usize;
        let frame = Bytes::copy_from_slice(input.take(n));
        let before = wire.clone();
        match enc.encode(frame.clone(), &mut wire) {
            Ok(()) => sent.push(BytesMut::from(&frame[..])),
            Err(e) => {
                assert!(frame.len() > max, "refused a frame within the limit: {e}");
                assert_eq!(wire, before, "a refused frame left bytes behind");
            }
        }
    }
    assert_frames(same_at_every_split(&codec, &wire, false), &sent);
}

/// A value for the RESP round trip, built from input bytes (depth-bounded).
fn resp_value(input: &mut Input<'_>, depth: usize) -> Resp {
    match input.below(if depth >= 4 { 6 } else { 7 }) {
        0 => Resp::Simple(text_line(input)),
        1 => Resp::Error(text_line(input)),
        2 => Resp::Integer(i64::from_le_bytes(std::array::from_fn(|_| input.byte()))),
        3 => {
            let n = input.below(12);
            Resp::Bulk(Bytes::copy_from_slice(input.take(n)))
        }
        4 => Resp::Null,
        5 => Resp::NullArray,
        _ => {
            let n = input.below(5);
            Resp::Array((0..n).map(|_| resp_value(input, depth + 1)).collect())
        }
    }
}

/// A status or error text: no CR or LF.
fn text_line(input: &mut Input<'_>) -> String {
    let n = input.below(8);
    String::from_utf8_lossy(input.take(n))
        .chars()
        .filter(|&c| c != '\r' && c != '\n')
        .collect()
}

/// Whether a value holds a status or error line that RESP cannot carry.
fn has_crlf_line(v: &Resp) -> bool {
    match v {
        Resp::Simple(s) | Resp::Error(s) => s.contains(['\r', '\n']),
        Resp::Array(items) => items.iter().any(has_crlf_line),
        _ => false,
    }
}

/// `RespCodec`, as a client (any value) or a server (requests), with limits
/// picked by the first two bytes.
pub fn check_resp(data: &[u8]) {
    let mut input = Input::new(data);
    let a = input.byte();
    let b = input.byte();
    let server = a & 0x80 != 0;
    let mut codec = if server {
        RespCodec::server()
    } else {
        RespCodec::new()
    };
    match a % 4 {
        1 => codec = codec.max_bulk_len(3),
        2 => codec = codec.max_bulk_len(0),
        _ => {}
    }
    match b % 4 {
        1 => codec = codec.max_array_len(2),
        2 => codec = codec.max_inline_len(4),
        3 => codec = codec.max_inline_len(0).max_array_len(0),
        _ => {}
    }
    let data = input.rest();
    let decoded = same_at_every_split(&codec, data, false);
    // What was decoded encodes (unless a status line holds a CR, which the
    // decoder passes and the encoder refuses) and decodes back the same.
    let values: Vec<Resp> = frames(&decoded);
    let mut enc = codec.clone();
    let mut wire = BytesMut::new();
    let mut sent = Vec::new();
    for v in values {
        let before = wire.clone();
        match enc.encode(&v, &mut wire) {
            Ok(()) => sent.push(v),
            Err(e) => {
                assert!(has_crlf_line(&v), "could not encode {v:?}: {e}");
                assert_eq!(wire, before, "a refused value left bytes behind");
            }
        }
    }
    if server {
        for v in &sent {
            match v {
                Resp::Array(items) if !items.is_empty() => {
                    assert!(items.iter().all(|i| matches!(i, Resp::Bulk(_))), "{v:?}")
                }
                _ => panic!("a server decoded {v:?}, not a command"),
            }
        }
    }
    // Decoded back with the default limits: an inline command is bounded by
    // the inline limit only (as in Redis), so its multibulk form may exceed
    // the array or bulk limits it was decoded under.
    let fresh = if server {
        RespCodec::server()
    } else {
        RespCodec::new()
    };
    assert_frames(same_at_every_split(&fresh, &wire, false), &sent);
    // Round trip of values built from the input, through a client codec
    // with the default limits.
    let mut input = Input::new(data);
    let mut values = Vec::new();
    while !input.is_empty() && values.len() < 16 {
        values.push(resp_value(&mut input, 0));
    }
    let client = RespCodec::new();
    let mut enc = client.clone();
    let wire = encode_all(&mut enc, values.iter());
    assert_frames(same_at_every_split(&client, &wire, false), &values);
}
