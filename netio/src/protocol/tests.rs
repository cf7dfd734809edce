use std::cell::RefCell;
use std::io::{BufRead, BufReader, Write};
use std::rc::Rc;

use super::*;
use crate::TcpListener;

const LIMIT: Duration = Duration::from_secs(10);

type Log = Rc<RefCell<Vec<String>>>;

/// Serves one connection with `proto`; returns the client side.
fn serve_one<P: Protocol + 'static>(proto: P) -> TcpStream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(LIMIT)).unwrap();
    let (s, _) = listener.accept().unwrap();
    tasklet_runtime::spawn(move || run(s, proto));
    client
}

/// Records its callbacks; runs `on_data` for each chunk.
struct Recorder<F> {
    log: Log,
    on_data: F,
}

impl<F: FnMut(&[u8], &Transport)> Protocol for Recorder<F> {
    fn connection_made(&mut self, _t: &Transport) {
        self.log.borrow_mut().push("made".into());
    }
    fn data_received(&mut self, data: &[u8], t: &Transport) {
        self.log
            .borrow_mut()
            .push(format!("data {}", String::from_utf8_lossy(data)));
        (self.on_data)(data, t);
    }
    fn connection_lost(&mut self, reason: Option<io::Error>) {
        self.log
            .borrow_mut()
            .push(format!("lost {:?}", reason.map(|e| e.kind())));
    }
}

fn wait_for(log: &Log, entry: &str) {
    let deadline = std::time::Instant::now() + LIMIT;
    while !log.borrow().iter().any(|e| e == entry) {
        assert!(
            std::time::Instant::now() < deadline,
            "{entry}: {:?}",
            log.borrow()
        );
        tasklet_runtime::sleep(Duration::from_millis(1));
    }
}

#[test]
fn callbacks_in_order_and_a_clean_close_by_the_peer() {
    tasklet_runtime::dispatch(|| {
        let log = Log::default();
        let mut c = serve_one(Recorder {
            log: log.clone(),
            on_data: |d: &[u8], t: &Transport| {
                t.write(b"<");
                t.write(d);
                t.write(b">");
            },
        });
        c.write_all(b"hi").unwrap();
        let mut b = [0u8; 4];
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b, b"<hi>");
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(c.read(&mut b).unwrap(), 0, "FIN after the peer's");
        wait_for(&log, "lost None");
        assert_eq!(*log.borrow(), ["made", "data hi", "lost None"]);
    });
}

#[test]
fn lose_connection_flushes_everything_then_closes() {
    tasklet_runtime::dispatch(|| {
        let log = Log::default();
        let big = vec![7u8; 4 << 20];
        let mut c = serve_one(Recorder {
            log: log.clone(),
            on_data: move |_: &[u8], t: &Transport| {
                t.write(&big);
                t.lose_connection();
                t.write(b"ignored after lose_connection");
                assert!(t.write_all(b"x").is_err());
            },
        });
        c.write_all(b"go").unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 4 << 20);
        assert!(got.iter().all(|&b| b == 7));
        wait_for(&log, "lost None");
    });
}

#[test]
fn abort_connection_resets_and_drops_the_buffer() {
    tasklet_runtime::dispatch(|| {
        let log = Log::default();
        let mut c = serve_one(Recorder {
            log: log.clone(),
            on_data: |_: &[u8], t: &Transport| {
                t.write(b"never sent");
                t.abort_connection();
            },
        });
        c.write_all(b"go").unwrap();
        let mut b = [0u8; 16];
        let e = c.read(&mut b).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionReset);
        wait_for(&log, "lost Some(ConnectionAborted)");
    });
}

#[test]
fn call_later_runs_writes_and_cancels_and_closing_from_a_timer_wakes_the_reader() {
    tasklet_runtime::dispatch(|| {
        let log = Log::default();
        struct Timed(Log);
        impl Protocol for Timed {
            fn connection_made(&mut self, t: &Transport) {
                let cancelled = t.call_later(Duration::from_millis(5), |t| t.write(b"BAD"));
                assert!(cancelled.cancel());
                assert!(!cancelled.active());
                t.call_later(Duration::from_millis(10), |t| {
                    t.write(b"tick\n");
                    t.call_later(Duration::from_millis(10), |t| t.lose_connection());
                });
                // Dies with the connection.
                let log = self.0.clone();
                t.call_later(LIMIT, move |_| log.borrow_mut().push("late".into()));
            }
            fn data_received(&mut self, _: &[u8], _: &Transport) {}
            fn connection_lost(&mut self, reason: Option<io::Error>) {
                assert!(reason.is_none(), "{reason:?}");
                self.0.borrow_mut().push("lost".into());
            }
        }
        let c = serve_one(Timed(log.clone()));
        let mut lines = BufReader::new(&c);
        let mut all = String::new();
        lines.read_to_string(&mut all).unwrap();
        assert_eq!(all, "tick\n");
        wait_for(&log, "lost");
        assert_eq!(*log.borrow(), ["lost"]);
    });
}

/// Reads "SIZE n" lines, each followed by an n-byte raw payload.
struct Sized {
    want: usize,
    got: Vec<u8>,
    log: Log,
}

impl LineReceiver for Sized {
    fn line_received(&mut self, line: String, lines: &mut LineTransport<'_>) {
        self.log.borrow_mut().push(format!("line {line}"));
        if let Some(n) = line.strip_prefix("SIZE ") {
            self.want = n.parse().unwrap();
            self.got.clear();
            lines.set_raw_mode();
        } else if line == "QUIT" {
            lines.send_line("bye");
            lines.lose_connection();
        }
    }
    fn raw_data_received(&mut self, data: &[u8], lines: &mut LineTransport<'_>) {
        let take = (self.want - self.got.len()).min(data.len());
        self.got.extend_from_slice(&data[..take]);
        if self.got.len() == self.want {
            self.log
                .borrow_mut()
                .push(format!("raw {}", String::from_utf8_lossy(&self.got)));
            lines.send_line(&format!("got {}", self.want));
            lines.set_line_mode(&data[take..]);
        }
    }
    fn connection_lost(&mut self, _: Option<io::Error>) {
        self.log.borrow_mut().push("lost".into());
    }
}

#[test]
fn line_receiver_switches_to_raw_and_back_without_losing_bytes() {
    tasklet_runtime::dispatch(|| {
        let log = Log::default();
        let proto = LineProtocol::new(Sized {
            want: 0,
            got: Vec::new(),
            log: log.clone(),
        });
        let mut c = serve_one(proto);
        // Everything in one write: the raw payload and the next lines
        // arrive in the same read as the header line.
        c.write_all(b"hello\r\nSIZE 5\r\nab\ncdSIZE 3\nxyzQUIT\r\n")
            .unwrap();
        let mut out = String::new();
        c.read_to_string(&mut out).unwrap();
        assert_eq!(out, "got 5\r\ngot 3\r\nbye\r\n");
        wait_for(&log, "lost");
        assert_eq!(
            *log.borrow(),
            [
                "line hello",
                "line SIZE 5",
                "raw ab\ncd",
                "line SIZE 3",
                "raw xyz",
                "line QUIT",
                "lost"
            ]
        );
    });
}

struct Lines(Log);

impl LineReceiver for Lines {
    fn line_received(&mut self, line: String, lines: &mut LineTransport<'_>) {
        lines.send_line(&line.to_uppercase());
    }
    fn connection_lost(&mut self, reason: Option<io::Error>) {
        self.0.borrow_mut().push(format!("lost {reason:?}"));
    }
}

#[test]
fn over_long_line_closes_by_default_after_earlier_answers() {
    tasklet_runtime::dispatch(|| {
        let log = Log::default();
        let mut c = serve_one(LineProtocol::new(Lines(log.clone())).max_length(8));
        c.write_all(b"short\n").unwrap();
        c.write_all(&[b'x'; 100_000]).unwrap();
        let mut r = BufReader::new(&c);
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "SHORT\r\n");
        line.clear();
        // Closed (FIN or, with unread input, a reset).
        assert!(matches!(r.read_line(&mut line), Ok(0) | Err(_)));
        wait_for(&log, "lost None");
    });
}
