//! A small Redis: RESP2 over TCP on one dispatcher thread, one tasklet per
//! client, spoken to by the real `redis-cli`, `redis-benchmark` and client
//! libraries.
//!
//! ```text
//! cargo run --release --example mini_redis                 # 127.0.0.1:6380
//! redis-cli -p 6380 set greeting hello
//! redis-benchmark -p 6380 -t ping,set,get,incr -q
//! ```
//!
//! Commands: PING, ECHO, GET, SET (EX, PX, EXAT, PXAT, NX, XX, KEEPTTL,
//! GET), DEL, EXISTS, INCR, DECR, INCRBY, DECRBY, MGET, MSET, EXPIRE,
//! PEXPIRE, TTL, PTTL, PERSIST, KEYS, FLUSHALL, FLUSHDB, DBSIZE, PUBLISH,
//! SUBSCRIBE, UNSUBSCRIBE, and the connection housekeeping clients send
//! (HELLO 2, CLIENT SETNAME/GETNAME/ID/SETINFO/LIST, CONFIG GET, COMMAND,
//! SELECT 0, INFO, QUIT). Values are strings only.
//!
//! Requests are decoded by [`RespCodec::server`] (multibulk and inline
//! commands, Redis's limits and error messages). Pipelined requests are
//! answered in one write; a protocol error is answered with `-ERR Protocol
//! error: ...` and the connection closed, a bad command with an error and
//! the connection kept, as Redis does. Keys with a TTL expire lazily on
//! access and in a background tasklet ten times a second. A subscriber's
//! messages go through a bounded queue and a writer tasklet; one that falls
//! more than 4096 messages behind is disconnected (Redis's
//! `client-output-buffer-limit pubsub`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tasklet::netio::codec::{BufMut, Bytes, BytesMut, Framed, Resp, RespCodec};
use tasklet::netio::{StreamServer, TcpStream};
use tasklet::sync::{self, Sender, TrySendError};

mod common;
use common::args::Args;

const USAGE: &str = "\
mini_redis: a RESP2 server (strings, expiry, pub/sub) on tasklets

USAGE:
    mini_redis [--addr HOST:PORT] [--max-bulk BYTES]

OPTIONS:
    --addr HOST:PORT    address to listen on [default: 127.0.0.1:6380]
    --max-bulk BYTES    longest bulk string accepted [default: 536870912,
                        Redis's proto-max-bulk-len]
    -h, --help          print this help

Ctrl-C or SIGTERM stops the server (clients get 1 s to finish).";

/// Messages a subscriber may fall behind by before it is disconnected.
const PUBSUB_BACKLOG: usize = 4096;
/// Pipelined replies are written out once this much is buffered.
const REPLY_HIGH_WATER: usize = 64 * 1024;

struct Entry {
    value: Bytes,
    expires: Option<Instant>,
}

/// The keyspace: values, and the keys with a TTL ordered by deadline.
#[derive(Default)]
struct Db {
    map: HashMap<Bytes, Entry>,
    deadlines: BTreeSet<(Instant, Bytes)>,
}

impl Db {
    /// The live entry for `key` (an expired one is removed on the way).
    fn get(&mut self, key: &[u8], now: Instant) -> Option<&mut Entry> {
        let expired =
            matches!(self.map.get(key), Some(Entry { expires: Some(t), .. }) if *t <= now);
        if expired {
            self.remove(key);
            return None;
        }
        self.map.get_mut(key)
    }

    fn contains(&mut self, key: &[u8], now: Instant) -> bool {
        self.get(key, now).is_some()
    }

    fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let (k, e) = self.map.remove_entry(key)?;
        if let Some(t) = e.expires {
            self.deadlines.remove(&(t, k));
        }
        Some(e)
    }

    /// Stores `value`; `expires: None` clears any TTL.
    ///
    /// Key and value are copied: the decoder's `Bytes` share the connection's
    /// read buffer, and keeping them would pin a whole buffer per key (and
    /// make every later read allocate a fresh one).
    fn set(&mut self, key: &[u8], value: &[u8], expires: Option<Instant>) {
        let key = match self.map.get_key_value(key) {
            Some((k, old)) => {
                let k = k.clone();
                if let Some(t) = old.expires {
                    self.deadlines.remove(&(t, k.clone()));
                }
                k
            }
            None => Bytes::copy_from_slice(key),
        };
        if let Some(t) = expires {
            self.deadlines.insert((t, key.clone()));
        }
        let value = Bytes::copy_from_slice(value);
        self.map.insert(key, Entry { value, expires });
    }

    /// Changes the TTL of an existing live key.
    fn set_expiry(&mut self, key: &[u8], expires: Option<Instant>, now: Instant) -> bool {
        let Some(e) = self.get(key, now) else {
            return false;
        };
        let old = std::mem::replace(&mut e.expires, expires);
        let k = self.map.get_key_value(key).expect("live key").0.clone();
        if let Some(t) = old {
            self.deadlines.remove(&(t, k.clone()));
        }
        if let Some(t) = expires {
            self.deadlines.insert((t, k));
        }
        true
    }

    /// Removes every key whose deadline has passed.
    fn purge(&mut self, now: Instant) -> usize {
        let mut n = 0;
        while let Some((t, _)) = self.deadlines.first() {
            if *t > now {
                break;
            }
            let (_, k) = self.deadlines.pop_first().expect("non-empty");
            self.map.remove(&k);
            n += 1;
        }
        n
    }

    fn clear(&mut self) {
        self.map.clear();
        self.deadlines.clear();
    }
}

/// A subscribed connection as publishers see it.
struct Subscriber {
    tx: Sender<Bytes>,
    stream: Rc<TcpStream>,
}

/// State shared by every connection (one dispatcher thread: `Rc`/`RefCell`).
struct Server {
    db: RefCell<Db>,
    channels: RefCell<HashMap<Bytes, HashMap<u64, Subscriber>>>,
    next_id: Cell<u64>,
    max_bulk: usize,
    started: Instant,
}

/// One client connection.
struct Conn {
    id: u64,
    peer: SocketAddr,
    name: Option<Bytes>,
    stream: Rc<TcpStream>,
    /// Subscribed channels.
    subs: HashSet<Bytes>,
    /// Set once the client has subscribed: from then on every reply goes
    /// through this queue, in order with the published messages.
    queue: Option<(Sender<Bytes>, tasklet::JoinHandle<()>)>,
    quit: bool,
}

/// What to do after a command.
enum After {
    Continue,
    Close,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut addr = "127.0.0.1:6380".to_owned();
    let mut max_bulk = 512 * 1024 * 1024;
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            "--max-bulk" => max_bulk = args.parse(),
            _ => args.unknown(),
        }
    }
    tasklet::dispatch(move || {
        let srv = Rc::new(Server {
            db: RefCell::default(),
            channels: RefCell::default(),
            next_id: Cell::new(0),
            max_bulk,
            started: Instant::now(),
        });
        let s = srv.clone();
        let server = match StreamServer::bind(addr.as_str(), move |stream, peer| {
            if let Err(e) = serve(stream, peer, &s) {
                if !is_disconnect(&e) {
                    log::info!("{peer}: {e}");
                }
            }
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("mini_redis: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        log::info!(
            "mini_redis listening on {} (Ctrl-C to stop)",
            server.local_addr()
        );
        // Active expiry, as Redis does at its default `hz 10`.
        let s = srv.clone();
        let expirer = tasklet::spawn(move || loop {
            tasklet::sleep(Duration::from_millis(100));
            let n = s.db.borrow_mut().purge(Instant::now());
            if n > 0 {
                log::debug!("expired {n} key(s)");
            }
        });
        server.stop_on_signals(true).serve_forever();
        expirer.kill();
        log::info!("mini_redis stopped");
        ExitCode::SUCCESS
    })
}

fn is_disconnect(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
    )
}

/// Serves one client until it quits, disconnects or sends a malformed frame.
fn serve(stream: TcpStream, peer: SocketAddr, srv: &Rc<Server>) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let id = srv.next_id.get() + 1;
    srv.next_id.set(id);
    let stream = Rc::new(stream);
    let mut conn = Conn {
        id,
        peer,
        name: None,
        stream: stream.clone(),
        subs: HashSet::new(),
        queue: None,
        quit: false,
    };
    let codec = RespCodec::server().max_bulk_len(srv.max_bulk);
    let mut framed = Framed::new(&*stream, codec);
    let r = command_loop(&mut framed, &mut conn, srv);
    unsubscribe_all(&mut conn, srv, None);
    if let Some((tx, writer)) = conn.queue.take() {
        // Let the writer send what is queued (QUIT's +OK…), then stop it.
        drop(tx);
        let _ = tasklet::timeout(Duration::from_secs(5), || writer.join());
    }
    r
}

fn command_loop(
    framed: &mut Framed<&TcpStream, RespCodec>,
    conn: &mut Conn,
    srv: &Rc<Server>,
) -> io::Result<()> {
    let mut args: Vec<Bytes> = Vec::with_capacity(8);
    loop {
        // Answer every request already buffered, then write the answers
        // out in one go before waiting for more (pipelining).
        let req = match framed.recv_buffered() {
            Ok(Some(req)) => req,
            Ok(None) => {
                flush(framed, conn)?;
                match framed.recv() {
                    Ok(Some(req)) => req,
                    Ok(None) => return Ok(()),
                    Err(e) => return protocol_error(framed, conn, e),
                }
            }
            Err(e) => return protocol_error(framed, conn, e),
        };
        args.clear();
        if let Resp::Array(items) = req {
            args.extend(items.into_iter().filter_map(|v| match v {
                Resp::Bulk(b) => Some(b),
                _ => None,
            }));
        }
        if args.is_empty() {
            continue;
        }
        let out = framed.write_buffer_mut();
        let after = execute(srv, conn, &args, out);
        if matches!(after, After::Close) || conn.quit {
            flush(framed, conn)?;
            return Ok(());
        }
        if framed.write_buffer().len() >= REPLY_HIGH_WATER {
            flush(framed, conn)?;
        }
    }
}

/// Writes the buffered replies: directly, or through the subscriber queue
/// once the connection has one.
fn flush(framed: &mut Framed<&TcpStream, RespCodec>, conn: &Conn) -> io::Result<()> {
    match &conn.queue {
        None => framed.flush(),
        Some((tx, _)) => {
            if framed.write_buffer().is_empty() {
                return Ok(());
            }
            let bytes = framed.write_buffer_mut().split().freeze();
            tx.send(bytes)
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "writer gone"))
        }
    }
}

/// Answers a malformed request as Redis does (`-ERR Protocol error: ...`)
/// and closes the connection; a stream cut inside a request just closes.
fn protocol_error(
    framed: &mut Framed<&TcpStream, RespCodec>,
    conn: &Conn,
    e: io::Error,
) -> io::Result<()> {
    if e.kind() != io::ErrorKind::InvalidData {
        return Err(e);
    }
    log::info!("{}: {e}; closing the connection", conn.peer);
    put_error(framed.write_buffer_mut(), &format!("ERR {e}"));
    flush(framed, conn)
}

fn put_ok(out: &mut BytesMut) {
    out.put_slice(b"+OK\r\n");
}

fn put_null(out: &mut BytesMut) {
    out.put_slice(b"$-1\r\n");
}

fn put_error(out: &mut BytesMut, msg: &str) {
    out.reserve(msg.len() + 3);
    out.put_u8(b'-');
    // An error line cannot hold CR or LF (they could come from user input).
    out.extend(
        msg.bytes()
            .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
    );
    out.put_slice(b"\r\n");
}

fn put_simple(out: &mut BytesMut, s: &str) {
    out.put_u8(b'+');
    out.put_slice(s.as_bytes());
    out.put_slice(b"\r\n");
}

const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
const SYNTAX: &str = "ERR syntax error";

/// Parses a Redis integer argument (strict decimal `i64`).
fn int_arg(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.starts_with('+') || (s.len() > 1 && s.starts_with('0')) || s.starts_with("-0") {
        return None;
    }
    s.parse().ok()
}

/// Upper-cases a command or option name into `buf` (ASCII only).
fn upper<'a>(name: &[u8], buf: &'a mut [u8; 16]) -> &'a [u8] {
    if name.len() > buf.len() {
        return b"";
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_uppercase();
    }
    &buf[..name.len()]
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs one command, appending its reply to `out`.
fn execute(srv: &Rc<Server>, conn: &mut Conn, args: &[Bytes], out: &mut BytesMut) -> After {
    let mut nbuf = [0u8; 16];
    let name = upper(&args[0], &mut nbuf);
    let argc = args.len();
    let Some(&(_, arity)) = COMMANDS.iter().find(|(n, _)| *n == name) else {
        let mut msg = format!(
            "ERR unknown command '{}', with args beginning with: ",
            lossy(&args[0]).chars().take(128).collect::<String>()
        );
        for a in &args[1..] {
            msg.push_str(&format!(
                "'{}' ",
                lossy(a).chars().take(128).collect::<String>()
            ));
        }
        put_error(out, &msg);
        return After::Continue;
    };
    if (arity > 0 && argc != arity as usize) || (arity < 0 && argc < (-arity) as usize) {
        put_error(
            out,
            &format!(
                "ERR wrong number of arguments for '{}' command",
                lossy(&args[0]).to_lowercase()
            ),
        );
        return After::Continue;
    }
    if conn.queue.is_some()
        && !conn.subs.is_empty()
        && !matches!(
            name,
            b"SUBSCRIBE" | b"UNSUBSCRIBE" | b"PING" | b"QUIT" | b"RESET"
        )
    {
        put_error(
            out,
            &format!(
                "ERR Can't execute '{}': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / \
                 RESET are allowed in this context",
                lossy(&args[0]).to_lowercase()
            ),
        );
        return After::Continue;
    }
    let now = Instant::now();
    match name {
        b"PING" => {
            if argc > 2 {
                put_error(out, "ERR wrong number of arguments for 'ping' command");
            } else if !conn.subs.is_empty() {
                RespCodec::put_array_header(out, 2);
                RespCodec::put_bulk(out, b"pong");
                RespCodec::put_bulk(out, args.get(1).map_or(&b""[..], |a| &a[..]));
            } else if argc == 2 {
                RespCodec::put_bulk(out, &args[1]);
            } else {
                out.put_slice(b"+PONG\r\n");
            }
        }
        b"ECHO" => RespCodec::put_bulk(out, &args[1]),
        b"GET" => match srv.db.borrow_mut().get(&args[1], now) {
            Some(e) => RespCodec::put_bulk(out, &e.value),
            None => put_null(out),
        },
        b"SET" => set(srv, args, now, out),
        b"DEL" => {
            let mut db = srv.db.borrow_mut();
            let n = args[1..]
                .iter()
                .filter(|k| db.contains(k, now) && db.remove(k).is_some())
                .count();
            RespCodec::put_integer(out, n as i64);
        }
        b"EXISTS" => {
            let mut db = srv.db.borrow_mut();
            let n = args[1..].iter().filter(|k| db.contains(k, now)).count();
            RespCodec::put_integer(out, n as i64);
        }
        b"INCR" | b"DECR" | b"INCRBY" | b"DECRBY" => {
            let by = if argc == 3 {
                match int_arg(&args[2]) {
                    Some(n) => n,
                    None => return error(out, NOT_INTEGER),
                }
            } else {
                1
            };
            let by = if name[0] == b'D' {
                match by.checked_neg() {
                    Some(n) => n,
                    None => return error(out, "ERR decrement would overflow"),
                }
            } else {
                by
            };
            let mut db = srv.db.borrow_mut();
            let (current, expires) = match db.get(&args[1], now) {
                Some(e) => match int_arg(&e.value) {
                    Some(n) => (n, e.expires),
                    None => return error(out, NOT_INTEGER),
                },
                None => (0, None),
            };
            match current.checked_add(by) {
                Some(n) => {
                    match db.get(&args[1], now) {
                        // Keep the key's TTL, as Redis does.
                        Some(e) => e.value = Bytes::from(n.to_string()),
                        None => db.set(&args[1], n.to_string().as_bytes(), expires),
                    }
                    RespCodec::put_integer(out, n);
                }
                None => put_error(out, "ERR increment or decrement would overflow"),
            }
        }
        b"MGET" => {
            let mut db = srv.db.borrow_mut();
            RespCodec::put_array_header(out, argc - 1);
            for k in &args[1..] {
                match db.get(k, now) {
                    Some(e) => RespCodec::put_bulk(out, &e.value),
                    None => put_null(out),
                }
            }
        }
        b"MSET" => {
            if argc.is_multiple_of(2) {
                return error(out, "ERR wrong number of arguments for 'mset' command");
            }
            let mut db = srv.db.borrow_mut();
            for kv in args[1..].chunks(2) {
                db.set(&kv[0], &kv[1], None);
            }
            put_ok(out);
        }
        b"EXPIRE" | b"PEXPIRE" => expire(srv, args, name == b"PEXPIRE", now, out),
        b"TTL" | b"PTTL" => {
            let mut db = srv.db.borrow_mut();
            let v = match db.get(&args[1], now) {
                None => -2,
                Some(Entry { expires: None, .. }) => -1,
                Some(Entry {
                    expires: Some(t), ..
                }) => {
                    let ms = t.saturating_duration_since(now).as_millis() as i64;
                    if name == b"TTL" {
                        (ms + 500) / 1000
                    } else {
                        ms
                    }
                }
            };
            RespCodec::put_integer(out, v);
        }
        b"PERSIST" => {
            let mut db = srv.db.borrow_mut();
            let had = matches!(
                db.get(&args[1], now),
                Some(Entry {
                    expires: Some(_),
                    ..
                })
            );
            if had {
                db.set_expiry(&args[1], None, now);
            }
            RespCodec::put_integer(out, had as i64);
        }
        b"KEYS" => {
            let mut db = srv.db.borrow_mut();
            db.purge(now);
            let keys: Vec<&Bytes> = db.map.keys().filter(|k| glob_match(&args[1], k)).collect();
            RespCodec::put_array_header(out, keys.len());
            for k in keys {
                RespCodec::put_bulk(out, k);
            }
        }
        b"FLUSHALL" | b"FLUSHDB" => {
            if argc > 2 {
                return error(out, SYNTAX);
            }
            if argc == 2 && !matches!(upper(&args[1], &mut [0; 16]), b"ASYNC" | b"SYNC") {
                return error(out, SYNTAX);
            }
            srv.db.borrow_mut().clear();
            put_ok(out);
        }
        b"DBSIZE" => {
            let mut db = srv.db.borrow_mut();
            db.purge(now);
            RespCodec::put_integer(out, db.map.len() as i64);
        }
        b"PUBLISH" => {
            let n = publish(srv, &args[1], &args[2]);
            RespCodec::put_integer(out, n as i64);
        }
        b"SUBSCRIBE" => {
            if conn.queue.is_none() {
                start_queue(conn);
            }
            for ch in &args[1..] {
                if conn.subs.insert(ch.clone()) {
                    let (tx, _) = conn.queue.as_ref().expect("queue started");
                    srv.channels
                        .borrow_mut()
                        .entry(ch.clone())
                        .or_default()
                        .insert(
                            conn.id,
                            Subscriber {
                                tx: tx.clone(),
                                stream: conn.stream.clone(),
                            },
                        );
                }
                RespCodec::put_array_header(out, 3);
                RespCodec::put_bulk(out, b"subscribe");
                RespCodec::put_bulk(out, ch);
                RespCodec::put_integer(out, conn.subs.len() as i64);
            }
        }
        b"UNSUBSCRIBE" => {
            if argc == 1 {
                if conn.subs.is_empty() {
                    RespCodec::put_array_header(out, 3);
                    RespCodec::put_bulk(out, b"unsubscribe");
                    put_null(out);
                    RespCodec::put_integer(out, 0);
                } else {
                    unsubscribe_all(conn, srv, Some(out));
                }
            } else {
                for ch in &args[1..] {
                    unsubscribe(conn, srv, ch);
                    RespCodec::put_array_header(out, 3);
                    RespCodec::put_bulk(out, b"unsubscribe");
                    RespCodec::put_bulk(out, ch);
                    RespCodec::put_integer(out, conn.subs.len() as i64);
                }
            }
        }
        b"RESET" => {
            unsubscribe_all(conn, srv, None);
            conn.name = None;
            put_simple(out, "RESET");
        }
        b"CONFIG" => config(srv, args, out),
        b"COMMAND" => {
            let mut sub = [0; 16];
            match args.get(1).map(|a| upper(a, &mut sub)) {
                Some(b"COUNT") => RespCodec::put_integer(out, COMMANDS.len() as i64),
                // No command table: clients fall back to their defaults.
                _ => RespCodec::put_array_header(out, 0),
            }
        }
        b"HELLO" => hello(srv, conn, args, out),
        b"CLIENT" => client(conn, args, out),
        b"SELECT" => match int_arg(&args[1]) {
            Some(0) => put_ok(out),
            Some(_) => put_error(out, "ERR DB index is out of range"),
            None => put_error(out, NOT_INTEGER),
        },
        b"AUTH" => put_error(
            out,
            "ERR AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ),
        b"INFO" => {
            let info = format!(
                "# Server\r\nredis_version:7.0.0\r\nredis_mode:standalone\r\n\
                 server_name:mini_redis\r\nprocess_id:{}\r\nuptime_in_seconds:{}\r\n\
                 \r\n# Keyspace\r\ndb0:keys={},expires={}\r\n",
                std::process::id(),
                srv.started.elapsed().as_secs(),
                srv.db.borrow().map.len(),
                srv.db.borrow().deadlines.len(),
            );
            RespCodec::put_bulk(out, info.as_bytes());
        }
        b"QUIT" => {
            put_ok(out);
            conn.quit = true;
            return After::Close;
        }
        _ => unreachable!("every command in COMMANDS is handled"),
    }
    After::Continue
}

/// The commands and their arity as Redis gives it: n means exactly n
/// arguments (the name included), -n at least n. The busiest come first.
const COMMANDS: &[(&[u8], i32)] = &[
    (b"GET", 2),
    (b"SET", -3),
    (b"PING", -1),
    (b"INCR", 2),
    (b"MGET", -2),
    (b"MSET", -3),
    (b"DEL", -2),
    (b"EXISTS", -2),
    (b"DECR", 2),
    (b"INCRBY", 3),
    (b"DECRBY", 3),
    (b"ECHO", 2),
    (b"EXPIRE", -3),
    (b"PEXPIRE", -3),
    (b"TTL", 2),
    (b"PTTL", 2),
    (b"PERSIST", 2),
    (b"KEYS", 2),
    (b"FLUSHALL", -1),
    (b"FLUSHDB", -1),
    (b"DBSIZE", 1),
    (b"PUBLISH", 3),
    (b"SUBSCRIBE", -2),
    (b"UNSUBSCRIBE", -1),
    (b"CONFIG", -2),
    (b"CLIENT", -2),
    (b"COMMAND", -1),
    (b"HELLO", -1),
    (b"INFO", -1),
    (b"QUIT", -1),
    (b"RESET", 1),
    (b"SELECT", 2),
    (b"AUTH", -2),
];

fn error(out: &mut BytesMut, msg: &str) -> After {
    put_error(out, msg);
    After::Continue
}

/// `SET key value [NX|XX] [GET] [EX s|PX ms|EXAT ts|PXAT ts|KEEPTTL]`.
fn set(srv: &Server, args: &[Bytes], now: Instant, out: &mut BytesMut) {
    let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
    let mut expires: Option<Instant> = None;
    let mut i = 3;
    while i < args.len() {
        let mut b = [0; 16];
        let opt = upper(&args[i], &mut b);
        match opt {
            b"NX" if !xx => nx = true,
            b"XX" if !nx => xx = true,
            b"GET" => get = true,
            b"KEEPTTL" if expires.is_none() => keepttl = true,
            b"EX" | b"PX" | b"EXAT" | b"PXAT" if expires.is_none() && !keepttl => {
                let Some(v) = args.get(i + 1) else {
                    put_error(out, SYNTAX);
                    return;
                };
                let Some(n) = int_arg(v) else {
                    put_error(out, NOT_INTEGER);
                    return;
                };
                let ms = match opt {
                    b"EX" => n.checked_mul(1000),
                    b"PX" => Some(n),
                    b"EXAT" => n.checked_mul(1000).map(|t| t - unix_ms()),
                    _ => Some(n - unix_ms()),
                };
                let absolute = matches!(opt, b"EXAT" | b"PXAT");
                match ms {
                    Some(_) if n <= 0 => {
                        put_error(out, "ERR invalid expire time in 'set' command");
                        return;
                    }
                    // A deadline in the past: the key is set and expires at once.
                    Some(ms) if absolute && ms <= 0 => expires = Some(now),
                    Some(ms) => match now.checked_add(Duration::from_millis(ms as u64)) {
                        Some(t) => expires = Some(t),
                        None => {
                            put_error(out, "ERR invalid expire time in 'set' command");
                            return;
                        }
                    },
                    None => {
                        put_error(out, "ERR invalid expire time in 'set' command");
                        return;
                    }
                }
                i += 1;
            }
            _ => {
                put_error(out, SYNTAX);
                return;
            }
        }
        i += 1;
    }
    let mut db = srv.db.borrow_mut();
    let old = db.get(&args[1], now).map(|e| (e.value.clone(), e.expires));
    if (nx && old.is_some()) || (xx && old.is_none()) {
        match (get, old) {
            (true, Some((v, _))) => RespCodec::put_bulk(out, &v),
            _ => put_null(out),
        }
        return;
    }
    if keepttl {
        expires = old.as_ref().and_then(|(_, t)| *t);
    }
    db.set(&args[1], &args[2], expires);
    match (get, old) {
        (true, Some((v, _))) => RespCodec::put_bulk(out, &v),
        (true, None) => put_null(out),
        (false, _) => put_ok(out),
    }
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `EXPIRE key seconds [NX|XX|GT|LT]` and `PEXPIRE` (milliseconds).
fn expire(srv: &Server, args: &[Bytes], millis: bool, now: Instant, out: &mut BytesMut) {
    let cmd = if millis { "pexpire" } else { "expire" };
    let Some(n) = int_arg(&args[2]) else {
        put_error(out, NOT_INTEGER);
        return;
    };
    let mut flag = None;
    for a in &args[3..] {
        let mut b = [0; 16];
        match upper(a, &mut b) {
            f @ (b"NX" | b"XX" | b"GT" | b"LT") if flag.is_none() || flag == Some(f.to_vec()) => {
                flag = Some(f.to_vec())
            }
            b"NX" | b"XX" | b"GT" | b"LT" => {
                put_error(
                    out,
                    "ERR NX and XX, GT or LT options at the same time are not compatible",
                );
                return;
            }
            _ => {
                put_error(out, &format!("ERR Unsupported option {}", lossy(a)));
                return;
            }
        }
    }
    let ms = if millis { Some(n) } else { n.checked_mul(1000) };
    let deadline = match ms {
        Some(ms) if ms <= 0 => Some(now),
        Some(ms) => now.checked_add(Duration::from_millis(ms as u64)),
        None => None,
    };
    let Some(deadline) = deadline else {
        put_error(out, &format!("ERR invalid expire time in '{cmd}' command"));
        return;
    };
    let mut db = srv.db.borrow_mut();
    let current = match db.get(&args[1], now) {
        Some(e) => e.expires,
        None => {
            RespCodec::put_integer(out, 0);
            return;
        }
    };
    // A missing TTL counts as infinite for GT and LT.
    let ok = match flag.as_deref() {
        Some(b"NX") => current.is_none(),
        Some(b"XX") => current.is_some(),
        Some(b"GT") => current.is_some_and(|t| deadline > t),
        Some(b"LT") => current.is_none_or(|t| deadline < t),
        _ => true,
    };
    if !ok {
        RespCodec::put_integer(out, 0);
        return;
    }
    if deadline <= now {
        db.remove(&args[1]);
    } else {
        db.set_expiry(&args[1], Some(deadline), now);
    }
    RespCodec::put_integer(out, 1);
}

/// `CONFIG GET pattern...`: the few parameters clients ask about.
fn config(srv: &Server, args: &[Bytes], out: &mut BytesMut) {
    let mut b = [0; 16];
    match upper(&args[1], &mut b) {
        b"GET" if args.len() >= 3 => {
            let bulk = srv.max_bulk.to_string();
            let params: [(&str, &str); 7] = [
                ("save", ""),
                ("appendonly", "no"),
                ("databases", "1"),
                ("maxmemory", "0"),
                ("timeout", "0"),
                ("proto-max-bulk-len", &bulk),
                ("maxclients", "10000"),
            ];
            let found: Vec<_> = params
                .iter()
                .filter(|(k, _)| args[2..].iter().any(|p| glob_match(p, k.as_bytes())))
                .collect();
            RespCodec::put_array_header(out, found.len() * 2);
            for (k, v) in found {
                RespCodec::put_bulk(out, k.as_bytes());
                RespCodec::put_bulk(out, v.as_bytes());
            }
        }
        b"RESETSTAT" => put_ok(out),
        b"SET" => put_error(out, "ERR CONFIG SET is not supported by mini_redis"),
        _ => put_error(
            out,
            &format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CONFIG HELP.",
                lossy(&args[1])
            ),
        ),
    }
}

/// `HELLO [2 [AUTH user pass] [SETNAME name]]`; RESP3 is refused.
fn hello(srv: &Server, conn: &mut Conn, args: &[Bytes], out: &mut BytesMut) {
    if let Some(v) = args.get(1) {
        match int_arg(v) {
            Some(2) => {}
            Some(_) => return put_error(out, "NOPROTO unsupported protocol version"),
            None => {
                return put_error(
                    out,
                    "ERR Protocol version is not an integer or out of range",
                )
            }
        }
    }
    let mut i = 2;
    while i < args.len() {
        let mut b = [0; 16];
        match upper(&args[i], &mut b) {
            b"SETNAME" if i + 1 < args.len() => {
                conn.name = Some(args[i + 1].clone());
                i += 2;
            }
            b"AUTH" if i + 2 < args.len() => {
                return put_error(
                    out,
                    "WRONGPASS invalid username-password pair or user is disabled.",
                );
            }
            _ => return put_error(out, SYNTAX),
        }
    }
    let _ = srv;
    RespCodec::put_array_header(out, 14);
    for (k, v) in [("server", "redis"), ("version", "7.0.0")] {
        RespCodec::put_bulk(out, k.as_bytes());
        RespCodec::put_bulk(out, v.as_bytes());
    }
    RespCodec::put_bulk(out, b"proto");
    RespCodec::put_integer(out, 2);
    RespCodec::put_bulk(out, b"id");
    RespCodec::put_integer(out, conn.id as i64);
    for (k, v) in [("mode", "standalone"), ("role", "master")] {
        RespCodec::put_bulk(out, k.as_bytes());
        RespCodec::put_bulk(out, v.as_bytes());
    }
    RespCodec::put_bulk(out, b"modules");
    RespCodec::put_array_header(out, 0);
}

/// `CLIENT SETNAME/GETNAME/ID/SETINFO/LIST/INFO`.
fn client(conn: &mut Conn, args: &[Bytes], out: &mut BytesMut) {
    let mut b = [0; 16];
    match (upper(&args[1], &mut b), args.len()) {
        (b"SETNAME", 3) => {
            if args[2].iter().any(|&c| c <= b' ' || c > b'~') {
                put_error(
                    out,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
            } else {
                conn.name = (!args[2].is_empty()).then(|| args[2].clone());
                put_ok(out);
            }
        }
        (b"GETNAME", 2) => match &conn.name {
            Some(n) => RespCodec::put_bulk(out, n),
            None => put_null(out),
        },
        (b"ID", 2) => RespCodec::put_integer(out, conn.id as i64),
        (b"SETINFO", 4) => put_ok(out),
        (b"LIST" | b"INFO", _) => {
            let line = format!(
                "id={} addr={} name={}\n",
                conn.id,
                conn.peer,
                conn.name.as_deref().map(lossy).unwrap_or_default()
            );
            RespCodec::put_bulk(out, line.as_bytes());
        }
        _ => put_error(
            out,
            &format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try CLIENT HELP.",
                lossy(&args[1])
            ),
        ),
    }
}

/// Starts the connection's writer tasklet: from now on replies and
/// published messages go out through its queue, in order.
fn start_queue(conn: &mut Conn) {
    let (tx, rx) = sync::channel::<Bytes>(PUBSUB_BACKLOG);
    let stream = conn.stream.clone();
    let writer = tasklet::spawn(move || {
        while let Ok(bytes) = rx.recv() {
            if (&*stream).write_all(&bytes).is_err() {
                // The reader sees the error too (or EOF) and cleans up.
                let _ = stream.shutdown(std::net::Shutdown::Both);
                return;
            }
        }
    });
    conn.queue = Some((tx, writer));
}

/// Sends `msg` to every subscriber of `channel`; returns how many got it.
fn publish(srv: &Server, channel: &Bytes, msg: &[u8]) -> usize {
    let mut frame = BytesMut::with_capacity(msg.len() + channel.len() + 32);
    RespCodec::put_array_header(&mut frame, 3);
    RespCodec::put_bulk(&mut frame, b"message");
    RespCodec::put_bulk(&mut frame, channel);
    RespCodec::put_bulk(&mut frame, msg);
    let frame = frame.freeze();
    let mut channels = srv.channels.borrow_mut();
    let Some(subs) = channels.get_mut(channel) else {
        return 0;
    };
    let mut delivered = 0;
    subs.retain(|id, s| match s.tx.try_send(frame.clone()) {
        Ok(()) => {
            delivered += 1;
            true
        }
        Err(TrySendError::Full(_)) => {
            log::warn!(
                "subscriber {id} is more than {PUBSUB_BACKLOG} messages behind: disconnecting it"
            );
            let _ = s.stream.shutdown(std::net::Shutdown::Both);
            false
        }
        Err(TrySendError::Disconnected(_)) => false,
    });
    if subs.is_empty() {
        channels.remove(channel);
    }
    delivered
}

fn unsubscribe(conn: &mut Conn, srv: &Server, ch: &Bytes) {
    if conn.subs.remove(ch) {
        let mut channels = srv.channels.borrow_mut();
        if let Some(subs) = channels.get_mut(ch) {
            subs.remove(&conn.id);
            if subs.is_empty() {
                channels.remove(ch);
            }
        }
    }
}

/// Leaves every channel, confirming each one in `out` if given.
fn unsubscribe_all(conn: &mut Conn, srv: &Server, mut out: Option<&mut BytesMut>) {
    let subs: Vec<Bytes> = conn.subs.iter().cloned().collect();
    for ch in subs {
        unsubscribe(conn, srv, &ch);
        if let Some(out) = out.as_deref_mut() {
            RespCodec::put_array_header(out, 3);
            RespCodec::put_bulk(out, b"unsubscribe");
            RespCodec::put_bulk(out, &ch);
            RespCodec::put_integer(out, conn.subs.len() as i64);
        }
    }
}

/// Redis's glob matching (`*`, `?`, `[abc]`, `[^a-z]`, `\x`), used by KEYS
/// and CONFIG GET. Iterative with backtracking to the last `*`, so it is
/// linear-ish and cannot overflow the stack.
fn glob_match(pattern: &[u8], s: &[u8]) -> bool {
    let (mut p, mut i) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while i < s.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    star = Some((p, i));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    i += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(pattern, p, s[i]) {
                        if matched {
                            p = next;
                            i += 1;
                            continue;
                        }
                    }
                }
                b'\\' if p + 1 < pattern.len() => {
                    if pattern[p + 1] == s[i] {
                        p += 2;
                        i += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[i] {
                        p += 1;
                        i += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, si)) => {
                p = sp + 1;
                i = si + 1;
                star = Some((sp, si + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches `c` against the class starting at `pattern[p] == '['`; returns
/// whether it matched and the index after the class (`None` if unclosed:
/// the `[` is then an ordinary byte that did not match).
fn class_match(pattern: &[u8], p: usize, c: u8) -> Option<(bool, usize)> {
    let mut j = p + 1;
    let negate = pattern.get(j) == Some(&b'^');
    if negate {
        j += 1;
    }
    let mut matched = false;
    loop {
        let &pc = pattern.get(j)?;
        if pc == b']' {
            break;
        }
        if pc == b'\\' && j + 1 < pattern.len() {
            matched |= pattern[j + 1] == c;
            j += 2;
        } else if pattern.get(j + 1) == Some(&b'-')
            && j + 2 < pattern.len()
            && pattern[j + 2] != b']'
        {
            let (lo, hi) = (pc.min(pattern[j + 2]), pc.max(pattern[j + 2]));
            matched |= (lo..=hi).contains(&c);
            j += 3;
        } else {
            matched |= pc == c;
            j += 1;
        }
    }
    Some((matched != negate, j + 1))
}
