//! The Twisted finger tutorial on tasklets: a finger server (RFC 1288) and a
//! small web view of the same user table — the finger side written twice,
//! as a Twisted-style [`LineReceiver`] and as a plain tasklet loop, so the
//! two styles sit side by side.
//!
//! ```text
//! cargo run --release --example finger                       # finger on 127.0.0.1:1079
//! cargo run --release --example finger -- --style tasklet    # the plain-tasklet server
//! cargo run --release --example finger -- --users users.txt  # "user: text" per line
//! printf 'moshez\r\n' | nc 127.0.0.1 1079                     # one user
//! printf '\r\n' | nc 127.0.0.1 1079                           # everybody
//! curl http://127.0.0.1:8079/                                # the web view
//! ```

use std::collections::BTreeMap;
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::netio::codec::{Framed, LinesCodec};
use tasklet::netio::protocol::{DelayedCall, LineProtocol, LineReceiver, LineTransport};
use tasklet::netio::{StreamServer, TcpStream};

mod common;
use common::args::Args;

const USAGE: &str = "\
finger: the Twisted finger tutorial on tasklets (finger + a web view)

USAGE:
    finger [--addr HOST:PORT] [--http-addr HOST:PORT] [--users FILE]
           [--style protocol|tasklet]

OPTIONS:
    --addr HOST:PORT       finger address [default: 127.0.0.1:1079]
    --http-addr HOST:PORT  web view address [default: 127.0.0.1:8079]
    --users FILE           user table, one `user: text` per line (`#` starts a
                           comment) [default: a built-in table]
    --style STYLE          `protocol` (a LineReceiver, Twisted style) or
                           `tasklet` (a plain blocking-style loop)
                           [default: protocol]
    -h, --help             print this help

A request is one line naming a user (`/W` allowed); an empty line lists
everybody. Lines are capped at 256 bytes; a client gets 30 s to ask.
Ctrl-C or SIGTERM stops the server.";

/// The longest request line accepted.
const MAX_LINE: usize = 256;
/// How long a client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

type Users = Rc<BTreeMap<String, String>>;

/// The answer to a finger request line: the lines to send back.
fn answer(users: &Users, request: &str) -> Vec<String> {
    // RFC 1288: an optional "/W" (verbose) switch, then the user name.
    let request = request.trim();
    let name = request
        .strip_prefix("/W")
        .or_else(|| request.strip_prefix("/w"))
        .unwrap_or(request)
        .trim();
    if name.is_empty() {
        if users.is_empty() {
            return vec!["Nobody is here.".into()];
        }
        return users.iter().map(|(u, t)| format!("{u}: {t}")).collect();
    }
    match users.get(name) {
        Some(text) => vec![text.clone()],
        None => vec![format!(
            "Sorry, there is no user called {:?} here.",
            name.chars().take(64).collect::<String>()
        )],
    }
}

/// The answer to a request line that was too long or not UTF-8.
fn refusal(e: &io::Error) -> String {
    if e.to_string().contains("longer than") {
        format!("Sorry, requests are limited to {MAX_LINE} bytes.")
    } else {
        "Sorry, I could not read that request (not UTF-8).".into()
    }
}

// ---- Style 1: Twisted's LineReceiver -------------------------------------

/// One finger connection, Twisted style: callbacks on a line protocol.
struct Finger {
    users: Users,
    timeout: Option<DelayedCall>,
}

impl LineReceiver for Finger {
    fn connection_made(&mut self, lines: &mut LineTransport<'_>) {
        // Twisted's `TimeoutMixin`, by hand: a reactor timer.
        self.timeout = Some(lines.call_later(REQUEST_TIMEOUT, |t| t.lose_connection()));
    }

    fn line_received(&mut self, line: String, lines: &mut LineTransport<'_>) {
        for reply in answer(&self.users, &line) {
            lines.send_line(&reply);
        }
        lines.lose_connection();
    }

    fn line_error(&mut self, error: io::Error, lines: &mut LineTransport<'_>) {
        lines.send_line(&refusal(&error));
        lines.lose_connection();
    }

    fn connection_lost(&mut self, _reason: Option<io::Error>) {
        if let Some(t) = self.timeout.take() {
            t.cancel();
        }
    }
}

// ---- Style 2: a plain tasklet --------------------------------------------

/// One finger connection as straight-line code: read a line, answer, close.
fn finger_tasklet(stream: TcpStream, users: &Users) -> io::Result<()> {
    // 30 s for the whole request, however slowly it trickles in.
    stream.set_read_deadline(Some(Instant::now() + REQUEST_TIMEOUT))?;
    let mut conn = Framed::new(stream, LinesCodec::new().max_length(MAX_LINE).crlf(true));
    let replies = match conn.recv() {
        Ok(Some(line)) => answer(users, &line),
        Ok(None) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::InvalidData => vec![refusal(&e)],
        Err(e) => return Err(e),
    };
    for reply in replies {
        conn.feed(reply)?;
    }
    conn.flush()?;
    conn.get_ref().shutdown(Shutdown::Write)
}

// ---- The web view: plain tasklets ----------------------------------------

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Decodes `%xx` escapes of a URL path segment (invalid ones are kept).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One HTTP/1.x request (a GET of `/` or `/<user>`), then close.
fn http_view(stream: TcpStream, users: &Users) -> io::Result<()> {
    stream.set_read_deadline(Some(Instant::now() + REQUEST_TIMEOUT))?;
    let mut conn = Framed::new(stream, LinesCodec::new().max_length(8192).crlf(true));
    let request = match conn.recv() {
        Ok(Some(line)) => line,
        Ok(None) => return Ok(()),
        Err(e) if e.kind() == ErrorKind::InvalidData => {
            return respond(
                &mut conn,
                "400 Bad Request",
                "text/plain",
                "bad request\n",
                true,
            );
        }
        Err(e) => return Err(e),
    };
    // Skip the headers (bounded: 100 lines of at most 8 KiB each).
    let mut headers = 0;
    loop {
        match conn.recv() {
            Ok(Some(h)) if h.is_empty() => break,
            Ok(Some(_)) if headers < 100 => headers += 1,
            Ok(Some(_)) | Err(_) => {
                return respond(
                    &mut conn,
                    "400 Bad Request",
                    "text/plain",
                    "bad request\n",
                    true,
                )
            }
            Ok(None) => return Ok(()),
        }
    }
    let mut parts = request.split(' ');
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let head = method == "HEAD";
    if method != "GET" && !head {
        return respond(
            &mut conn,
            "405 Method Not Allowed",
            "text/plain",
            "only GET and HEAD\n",
            head,
        );
    }
    // The path alone: a query string or fragment is not part of the name.
    let path = path.split(['?', '#']).next().unwrap_or_default();
    let name = percent_decode(path.trim_start_matches('/'));
    let (status, body) = if name.is_empty() {
        let rows: String = users
            .iter()
            .map(|(u, t)| {
                format!(
                    "<li><a href=\"/{0}\">{0}</a>: {1}</li>\n",
                    html_escape(u),
                    html_escape(t)
                )
            })
            .collect();
        ("200 OK", format!("<h1>Users</h1>\n<ul>\n{rows}</ul>\n"))
    } else {
        match users.get(&name) {
            Some(t) => (
                "200 OK",
                format!(
                    "<h1>{}</h1>\n<p>{}</p>\n",
                    html_escape(&name),
                    html_escape(t)
                ),
            ),
            None => (
                "404 Not Found",
                format!("<h1>No such user</h1>\n<p>{}</p>\n", html_escape(&name)),
            ),
        }
    };
    let page = format!("<!doctype html>\n<title>finger</title>\n{body}");
    respond(&mut conn, status, "text/html; charset=utf-8", &page, head)
}

fn respond(
    conn: &mut Framed<TcpStream, LinesCodec>,
    status: &str,
    content_type: &str,
    body: &str,
    head_only: bool,
) -> io::Result<()> {
    let buf = conn.write_buffer_mut();
    buf.extend_from_slice(
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    if !head_only {
        buf.extend_from_slice(body.as_bytes());
    }
    conn.flush()?;
    conn.get_ref().shutdown(Shutdown::Write)
}

// ---- Setup ----------------------------------------------------------------

/// Parses a user table: `user: text` per line, `#` comments, blank lines.
fn parse_users(text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut users = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, info)) = line.split_once(':') else {
            return Err(format!("line {}: expected `user: text`", i + 1));
        };
        let user = user.trim();
        if user.is_empty() || user.contains(char::is_whitespace) {
            return Err(format!("line {}: bad user name {user:?}", i + 1));
        }
        users.insert(user.to_owned(), info.trim().to_owned());
    }
    Ok(users)
}

fn builtin_users() -> BTreeMap<String, String> {
    [
        ("moshez", "Happy and well"),
        ("glyph", "Drawing the reactor"),
        ("itamar", "Writing a tutorial"),
    ]
    .into_iter()
    .map(|(u, t)| (u.to_owned(), t.to_owned()))
    .collect()
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut addr = "127.0.0.1:1079".to_owned();
    let mut http_addr = "127.0.0.1:8079".to_owned();
    let mut users_file = None;
    let mut tasklet_style = false;
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            "--http-addr" => http_addr = args.value(),
            "--users" => users_file = Some(args.value()),
            "--style" => {
                tasklet_style = args.value_with(|v| match v {
                    "protocol" => Ok(false),
                    "tasklet" => Ok(true),
                    _ => Err("expected `protocol` or `tasklet`".to_owned()),
                })
            }
            _ => args.unknown(),
        }
    }
    let users = match users_file {
        None => builtin_users(),
        Some(path) => match std::fs::read_to_string(&path).map_err(|e| e.to_string()) {
            Ok(text) => match parse_users(&text) {
                Ok(u) => u,
                Err(e) => {
                    eprintln!("finger: {path}: {e}");
                    return ExitCode::FAILURE;
                }
            },
            Err(e) => {
                eprintln!("finger: cannot read {path}: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    tasklet::dispatch(move || {
        let users: Users = Rc::new(users);
        let u = users.clone();
        let finger = if tasklet_style {
            StreamServer::bind(addr.as_str(), move |s, _peer: SocketAddr| {
                finger_tasklet(s, &u)
            })
        } else {
            StreamServer::bind_protocol(addr.as_str(), move |_peer| {
                LineProtocol::new(Finger {
                    users: u.clone(),
                    timeout: None,
                })
                .max_length(MAX_LINE)
            })
        };
        let u = users.clone();
        let web = StreamServer::bind(http_addr.as_str(), move |s, _peer| http_view(s, &u));
        let (finger, web) = match (finger, web) {
            (Ok(f), Ok(w)) => (f, w),
            (Err(e), _) => {
                eprintln!("finger: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
            (_, Err(e)) => {
                eprintln!("finger: cannot listen on {http_addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        log::info!(
            "finger listening on {} ({} style, {} users); web view on http://{}",
            finger.local_addr(),
            if tasklet_style {
                "tasklet"
            } else {
                "LineReceiver"
            },
            users.len(),
            web.local_addr()
        );
        let web = web.start();
        finger.stop_on_signals(true).serve_forever();
        web.stop(Duration::from_secs(1));
        log::info!("finger stopped");
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_file_format() {
        let u = parse_users("# comment\n\nalice: likes tea\nbob:  \n").unwrap();
        assert_eq!(u["alice"], "likes tea");
        assert_eq!(u["bob"], "");
        assert!(parse_users("no colon").is_err());
        assert!(parse_users("two words: x").is_err());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("é%"), "é%");
    }
}
