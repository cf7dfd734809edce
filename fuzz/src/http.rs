//! examples/http_hello's request framing (`Conn::feed`), included as is.
//!
//! `feed` never panics, never claims more bytes than it was given, and
//! answers a byte stream the same (same responses, same decision to close,
//! same state) however it is cut into reads; what it leaves buffered stays
//! below its head limit, so a connection's memory is bounded.

#[allow(dead_code)]
#[path = "../../examples/http_hello/framing.rs"]
mod framing;

use framing::{Conn, State, MAX_HEAD};

use super::input::{split_points, Input};

/// What a connection made of a byte stream.
#[derive(Debug, PartialEq)]
struct Outcome {
    out: Vec<u8>,
    closed: bool,
    answered: u64,
    state: State,
    /// Bytes still buffered (a partial request head or chunk line).
    left: Vec<u8>,
}

/// Feeds `chunks` to a connection the way `serve_stream` does: appended to
/// a buffer, the consumed prefix dropped after each `feed`.
fn serve(chunks: &[&[u8]]) -> Outcome {
    let mut conn = Conn::new();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        let (used, close) = conn.feed(&buf, &mut out);
        assert!(used <= buf.len(), "feed used {used} of {} bytes", buf.len());
        if close {
            return Outcome {
                out,
                closed: true,
                answered: conn.answered,
                state: conn.state,
                left: Vec::new(),
            };
        }
        buf.drain(..used);
        assert!(
            buf.len() <= MAX_HEAD,
            "{} bytes buffered past the {MAX_HEAD}-byte head limit",
            buf.len()
        );
    }
    Outcome {
        out,
        closed: false,
        answered: conn.answered,
        state: conn.state,
        left: buf,
    }
}

/// Checks the framing on one fuzz input. The first byte picks a shape: the
/// rest as it is, or repeated past the head limit (read 8 KiB at a time, as
/// the server reads).
pub fn check(data: &[u8]) {
    let mut input = Input::new(data);
    let shape = input.byte();
    let data = input.rest();
    if shape & 1 == 1 && !data.is_empty() {
        let mut big = Vec::with_capacity(MAX_HEAD + 2 * 8192);
        while big.len() < MAX_HEAD + 8192 {
            big.extend_from_slice(data);
        }
        let reads: Vec<&[u8]> = big.chunks(8192).collect();
        let by_reads = serve(&reads);
        let whole = serve(&[&big]);
        compare(&whole, &by_reads, "8 KiB reads");
        return;
    }
    let whole = serve(&[data]);
    for at in split_points(data.len()) {
        compare(
            &whole,
            &serve(&[&data[..at], &data[at..]]),
            &format!("split at {at}"),
        );
    }
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    compare(&whole, &serve(&bytes), "one byte at a time");
}

fn compare(whole: &Outcome, other: &Outcome, how: &str) {
    if whole != other {
        panic!(
            "{how} differs from the whole input:\nwhole: {} answered, closed {}, {:?}, out {:?}\n\
             {how}: {} answered, closed {}, {:?}, out {:?}",
            whole.answered,
            whole.closed,
            whole.state,
            String::from_utf8_lossy(&whole.out),
            other.answered,
            other.closed,
            other.state,
            String::from_utf8_lossy(&other.out),
        );
    }
}
