//! http_hello's request framing: a sans-I/O state machine fed with the bytes
//! of one connection, answering each request with "Hello, World!".
//!
//! A module of its own so that the fuzz target `http_framing` (fuzz/) runs
//! exactly this code, through `#[path]`, without copying it.

/// The usual response: HTTP/1.1, keep-alive.
pub const HELLO: &[u8] = b"HTTP/1.1 200 OK\r\nServer: tasklet\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";
/// [`HELLO`]'s status line and headers, for responses that add a header or
/// (to `HEAD`) have no body.
pub const HELLO_HEADERS: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: tasklet\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n";
pub const HELLO_BODY: &[u8] = b"Hello, World!";
pub const MAX_HEADERS: usize = 32;
/// The largest request head (request line and headers) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// The longest chunk-size or trailer line accepted in a chunked body.
pub const MAX_LINE: usize = 4096;

/// Where a connection is in the request it is reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Waiting for (the rest of) a request head.
    Head,
    /// Discarding this many more bytes of a `Content-Length` body.
    Body(u64),
    /// In a chunked body, before a chunk-size line.
    ChunkSize,
    /// Discarding this many more bytes of chunk data.
    ChunkData(u64),
    /// Before the CRLF that ends a chunk's data.
    ChunkEnd,
    /// Reading trailer lines up to the empty line that ends the body.
    Trailers,
}

/// What the head of a request says about the rest of it.
pub struct Request {
    body: State,
    head_only: bool,
    keep_alive: bool,
    http10: bool,
    expect_continue: bool,
}

/// A request the server refuses: the status line, sent before closing.
pub struct Reject(&'static str);

impl Reject {
    const BAD_REQUEST: Reject = Reject("400 Bad Request");
    const TOO_LARGE: Reject = Reject("431 Request Header Fields Too Large");
    const NOT_IMPLEMENTED: Reject = Reject("501 Not Implemented");

    pub fn response(&self) -> Vec<u8> {
        format!(
            "HTTP/1.1 {}\r\nServer: tasklet\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.0
        )
        .into_bytes()
    }
}

/// Whether a comma-separated header value contains `token` (case-insensitive).
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Reads the framing of a request from its head: how long its body is
/// (`Content-Length` or chunked; RFC 9112 section 6), whether the connection
/// stays open after it, whether the client waits for `100 Continue`.
pub fn framing(req: &httparse::Request<'_, '_>) -> Result<Request, Reject> {
    let http10 = req.version == Some(0);
    let mut r = Request {
        body: State::Body(0),
        head_only: req.method == Some("HEAD"),
        keep_alive: !http10,
        http10,
        expect_continue: false,
    };
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            // Digits only (no sign, no spaces inside), and every copy equal:
            // anything else could make us and a proxy disagree on where the
            // next request starts.
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(Reject::BAD_REQUEST);
            }
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse().ok())
                .ok_or(Reject::BAD_REQUEST)?;
            if length.is_some_and(|l| l != n) {
                return Err(Reject::BAD_REQUEST);
            }
            length = Some(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only "chunked" alone is understood (gzip etc. are not).
            if http10 || chunked || !h.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                return Err(if http10 {
                    Reject::BAD_REQUEST
                } else {
                    Reject::NOT_IMPLEMENTED
                });
            }
            chunked = true;
        } else if h.name.eq_ignore_ascii_case("connection") {
            if has_token(h.value, "close") {
                r.keep_alive = false;
            } else if has_token(h.value, "keep-alive") {
                r.keep_alive = true;
            }
        } else if h.name.eq_ignore_ascii_case("expect") && has_token(h.value, "100-continue") {
            r.expect_continue = !http10;
        }
    }
    r.body = match (chunked, length) {
        (true, Some(_)) => return Err(Reject::BAD_REQUEST),
        (true, None) => State::ChunkSize,
        (false, n) => State::Body(n.unwrap_or(0)),
    };
    Ok(r)
}

/// One connection's request reader: a state machine fed with whatever bytes
/// have arrived. Bodies are discarded as they stream in (never buffered), so
/// a request of any size is served in constant memory.
pub struct Conn {
    pub state: State,
    /// The request being read (set once its head is parsed).
    req: Option<Request>,
    /// Requests answered so far.
    pub answered: u64,
}

impl Conn {
    /// A connection before its first request.
    pub fn new() -> Conn {
        Conn {
            state: State::Head,
            req: None,
            answered: 0,
        }
    }

    /// Consumes what it can of `data`, appending responses to `out`.
    /// Returns how many bytes were consumed and whether the connection must
    /// close once `out` is written.
    pub fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> (usize, bool) {
        let mut pos = 0;
        loop {
            let rest = &data[pos..];
            match self.state {
                State::Head => {
                    if rest.is_empty() {
                        return (pos, false);
                    }
                    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut req = httparse::Request::new(&mut headers);
                    let parsed = req.parse(rest);
                    let reject = match parsed {
                        Ok(httparse::Status::Complete(len)) => match framing(&req) {
                            Ok(r) => {
                                pos += len;
                                if r.expect_continue && r.body != State::Body(0) {
                                    out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                                }
                                self.state = r.body;
                                self.req = Some(r);
                                continue;
                            }
                            Err(reject) => reject,
                        },
                        Ok(httparse::Status::Partial) if rest.len() < MAX_HEAD => {
                            return (pos, false)
                        }
                        Ok(httparse::Status::Partial) => Reject::TOO_LARGE,
                        Err(httparse::Error::TooManyHeaders) => Reject::TOO_LARGE,
                        Err(e) => {
                            log::debug!("bad request: {e}");
                            Reject::BAD_REQUEST
                        }
                    };
                    out.extend_from_slice(&reject.response());
                    return (pos, true);
                }
                State::Body(0) => {
                    if self.respond(out) {
                        return (pos, true);
                    }
                }
                State::Body(n) | State::ChunkData(n) => {
                    let take = n.min(rest.len() as u64);
                    pos += take as usize;
                    let left = n - take;
                    self.state = match self.state {
                        State::Body(_) => State::Body(left),
                        _ if left == 0 => State::ChunkEnd,
                        _ => State::ChunkData(left),
                    };
                    if left > 0 {
                        return (pos, false);
                    }
                }
                State::ChunkSize => match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        pos += used;
                        self.state = if size == 0 {
                            State::Trailers
                        } else {
                            State::ChunkData(size)
                        };
                    }
                    Ok(httparse::Status::Partial) if rest.len() < MAX_LINE => return (pos, false),
                    _ => {
                        out.extend_from_slice(&Reject::BAD_REQUEST.response());
                        return (pos, true);
                    }
                },
                State::ChunkEnd => {
                    if rest.len() < 2 {
                        return (pos, false);
                    }
                    if &rest[..2] != b"\r\n" {
                        out.extend_from_slice(&Reject::BAD_REQUEST.response());
                        return (pos, true);
                    }
                    pos += 2;
                    self.state = State::ChunkSize;
                }
                State::Trailers => match rest.iter().position(|&b| b == b'\n') {
                    Some(i) => {
                        pos += i + 1;
                        if rest[..i].trim_ascii().is_empty() && self.respond(out) {
                            return (pos, true);
                        }
                    }
                    None if rest.len() < MAX_LINE => return (pos, false),
                    None => {
                        out.extend_from_slice(&Reject::BAD_REQUEST.response());
                        return (pos, true);
                    }
                },
            }
        }
    }

    /// The request is complete: queues its response and gets ready for the
    /// next one. Returns whether the connection closes after it.
    fn respond(&mut self, out: &mut Vec<u8>) -> bool {
        self.state = State::Head;
        self.answered += 1;
        let Some(r) = self.req.take() else {
            return false;
        };
        if r.keep_alive && !r.http10 && !r.head_only {
            out.extend_from_slice(HELLO);
            return false;
        }
        out.extend_from_slice(HELLO_HEADERS);
        if !r.keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        } else {
            out.extend_from_slice(b"Connection: keep-alive\r\n"); // HTTP/1.0 asked for it
        }
        out.extend_from_slice(b"\r\n");
        if !r.head_only {
            out.extend_from_slice(HELLO_BODY);
        }
        !r.keep_alive
    }
}
