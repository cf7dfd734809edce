//! The `mini_redis` example driven by the `redis` crate — a real,
//! independently written client — from test threads: every command,
//! pipelining, pub/sub across connections, expiry; and by raw sockets for
//! malformed frames, which must get Redis's errors and never hurt anyone
//! else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use redis::{Commands, Value};

mod common;
use common::{sigterm_and_wait, start_example, KillOnDrop};

const LIMIT: Duration = Duration::from_secs(10);
/// The server under test refuses bulk strings longer than this.
const MAX_BULK: usize = 1 << 20;

struct Server {
    child: Option<KillOnDrop>,
    addr: String,
    drain: Option<std::thread::JoinHandle<String>>,
}

impl Server {
    fn start() -> Server {
        let max = MAX_BULK.to_string();
        let (child, addr, drain) = start_example(
            "mini_redis",
            &["--addr", "127.0.0.1:0", "--max-bulk", &max],
            &["listening on "],
        );
        Server {
            child: Some(child),
            addr,
            drain: Some(drain),
        }
    }

    fn conn(&self) -> redis::Connection {
        let client = redis::Client::open(format!("redis://{}/", self.addr)).unwrap();
        let c = client.get_connection_with_timeout(LIMIT).unwrap();
        c.set_read_timeout(Some(LIMIT)).unwrap();
        c.set_write_timeout(Some(LIMIT)).unwrap();
        c
    }

    fn raw(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(LIMIT)).unwrap();
        s
    }

    /// SIGTERM, a clean exit, and no panic in the log.
    fn stop(mut self) {
        let mut child = self.child.take().unwrap();
        sigterm_and_wait(&mut child, "mini_redis");
        let log = self.drain.take().unwrap().join().unwrap();
        assert!(!log.contains("panicked"), "mini_redis panicked: {log}");
    }
}

fn cmd(c: &mut redis::Connection, args: &[&str]) -> redis::RedisResult<Value> {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(c)
}

fn ok(c: &mut redis::Connection, args: &[&str]) -> Value {
    cmd(c, args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn int(c: &mut redis::Connection, args: &[&str]) -> i64 {
    match ok(c, args) {
        Value::Int(n) => n,
        v => panic!("{args:?}: expected an integer, got {v:?}"),
    }
}

fn err(c: &mut redis::Connection, args: &[&str]) -> String {
    match cmd(c, args) {
        Err(e) => e.to_string(),
        Ok(v) => panic!("{args:?}: expected an error, got {v:?}"),
    }
}

fn bulk(s: &str) -> Value {
    Value::BulkString(s.as_bytes().to_vec())
}

fn okay() -> Value {
    Value::Okay
}

#[test]
fn every_command_through_the_redis_crate() {
    let srv = Server::start();
    let mut c = srv.conn();
    assert_eq!(ok(&mut c, &["PING"]), Value::SimpleString("PONG".into()));
    assert_eq!(ok(&mut c, &["PING", "hi"]), bulk("hi"));
    assert_eq!(ok(&mut c, &["ECHO", "a\r\nb"]), bulk("a\r\nb"));

    // GET / SET and its options.
    assert_eq!(ok(&mut c, &["GET", "k"]), Value::Nil);
    assert_eq!(ok(&mut c, &["SET", "k", "v"]), okay());
    assert_eq!(ok(&mut c, &["GET", "k"]), bulk("v"));
    assert_eq!(ok(&mut c, &["SET", "k", "w", "NX"]), Value::Nil);
    assert_eq!(ok(&mut c, &["SET", "k", "w", "XX"]), okay());
    assert_eq!(ok(&mut c, &["SET", "absent", "x", "XX"]), Value::Nil);
    assert_eq!(ok(&mut c, &["SET", "new", "x", "nx"]), okay());
    assert_eq!(ok(&mut c, &["SET", "k", "z", "GET"]), bulk("w"));
    assert_eq!(ok(&mut c, &["SET", "k", "v", "EX", "100"]), okay());
    let ttl = int(&mut c, &["TTL", "k"]);
    assert!((99..=100).contains(&ttl), "{ttl}");
    assert_eq!(ok(&mut c, &["SET", "k", "v", "PX", "100000"]), okay());
    let pttl = int(&mut c, &["PTTL", "k"]);
    assert!((90_000..=100_000).contains(&pttl), "{pttl}");
    assert_eq!(ok(&mut c, &["SET", "k", "v2", "KEEPTTL"]), okay());
    assert!(int(&mut c, &["PTTL", "k"]) > 0);
    assert_eq!(ok(&mut c, &["SET", "k", "v"]), okay());
    assert_eq!(int(&mut c, &["TTL", "k"]), -1, "a plain SET clears the TTL");
    assert!(err(&mut c, &["SET", "k", "v", "NX", "XX"]).contains("syntax error"));
    assert!(err(&mut c, &["SET", "k", "v", "EX", "0"]).contains("invalid expire time"));
    assert!(err(&mut c, &["SET", "k", "v", "EX", "x"]).contains("not an integer"));
    assert!(err(&mut c, &["SET", "k", "v", "EX"]).contains("syntax error"));
    assert!(err(&mut c, &["SET", "k", "v", "EX", "1", "PX", "1"]).contains("syntax error"));

    // DEL / EXISTS (duplicates count twice, as in Redis).
    assert_eq!(int(&mut c, &["EXISTS", "k", "k", "nope", "new"]), 3);
    assert_eq!(int(&mut c, &["DEL", "k", "new", "nope"]), 2);
    assert_eq!(int(&mut c, &["EXISTS", "k"]), 0);

    // Counters.
    assert_eq!(int(&mut c, &["INCR", "n"]), 1);
    assert_eq!(int(&mut c, &["INCRBY", "n", "41"]), 42);
    assert_eq!(int(&mut c, &["DECR", "n"]), 41);
    assert_eq!(int(&mut c, &["DECRBY", "n", "-9"]), 50);
    assert_eq!(ok(&mut c, &["GET", "n"]), bulk("50"));
    let _: () = c.set("s", "abc").unwrap();
    assert!(err(&mut c, &["INCR", "s"]).contains("not an integer"));
    assert!(err(&mut c, &["INCRBY", "n", "1.5"]).contains("not an integer"));
    let _: () = c.set("big", i64::MAX).unwrap();
    assert!(err(&mut c, &["INCR", "big"]).contains("overflow"));

    // MSET / MGET.
    assert_eq!(ok(&mut c, &["MSET", "a", "1", "b", "2"]), okay());
    assert_eq!(
        ok(&mut c, &["MGET", "a", "nope", "b"]),
        Value::Array(vec![bulk("1"), Value::Nil, bulk("2")])
    );
    assert!(err(&mut c, &["MSET", "a", "1", "b"]).contains("wrong number of arguments"));

    // EXPIRE / TTL / PERSIST.
    assert_eq!(int(&mut c, &["TTL", "nope"]), -2);
    assert_eq!(int(&mut c, &["TTL", "a"]), -1);
    assert_eq!(int(&mut c, &["EXPIRE", "a", "100"]), 1);
    assert_eq!(int(&mut c, &["TTL", "a"]), 100);
    assert_eq!(int(&mut c, &["EXPIRE", "a", "50", "GT"]), 0);
    assert_eq!(int(&mut c, &["EXPIRE", "a", "50", "LT"]), 1);
    assert_eq!(int(&mut c, &["EXPIRE", "a", "10", "NX"]), 0);
    assert_eq!(int(&mut c, &["EXPIRE", "nope", "10"]), 0);
    assert_eq!(int(&mut c, &["PERSIST", "a"]), 1);
    assert_eq!(int(&mut c, &["TTL", "a"]), -1);
    assert_eq!(int(&mut c, &["EXPIRE", "a", "-1"]), 1);
    assert_eq!(int(&mut c, &["EXISTS", "a"]), 0, "a past deadline deletes");

    // KEYS / DBSIZE / FLUSHALL.
    let _: () = redis::cmd("MSET")
        .arg(&["user:1", "x", "user:2", "y", "user:10", "z", "other", "w"])
        .query(&mut c)
        .unwrap();
    let mut keys: Vec<String> = c.keys("user:?").unwrap();
    keys.sort();
    assert_eq!(keys, ["user:1", "user:2"]);
    let mut keys: Vec<String> = c.keys("user:[12]*").unwrap();
    keys.sort();
    assert_eq!(keys, ["user:1", "user:10", "user:2"]);
    let all: Vec<String> = c.keys("*").unwrap();
    assert_eq!(int(&mut c, &["DBSIZE"]) as usize, all.len());
    assert_eq!(ok(&mut c, &["FLUSHALL"]), okay());
    assert_eq!(int(&mut c, &["DBSIZE"]), 0);

    // Housekeeping clients send.
    assert_eq!(ok(&mut c, &["SELECT", "0"]), okay());
    assert!(err(&mut c, &["SELECT", "1"]).contains("out of range"));
    assert_eq!(ok(&mut c, &["CLIENT", "SETNAME", "tester"]), okay());
    assert_eq!(ok(&mut c, &["CLIENT", "GETNAME"]), bulk("tester"));
    assert!(int(&mut c, &["CLIENT", "ID"]) > 0);
    match ok(&mut c, &["CONFIG", "GET", "save"]) {
        Value::Array(v) => assert_eq!(v, [bulk("save"), bulk("")]),
        v => panic!("CONFIG GET save: {v:?}"),
    }
    match ok(&mut c, &["HELLO", "2"]) {
        Value::Array(v) => assert!(v.contains(&bulk("proto")) && v.contains(&Value::Int(2))),
        v => panic!("HELLO: {v:?}"),
    }
    assert!(err(&mut c, &["HELLO", "3"]).contains("NOPROTO"));
    assert!(int(&mut c, &["COMMAND", "COUNT"]) > 20);
    match ok(&mut c, &["INFO"]) {
        Value::BulkString(b) => assert!(String::from_utf8(b).unwrap().contains("redis_version")),
        v => panic!("INFO: {v:?}"),
    }

    // Command errors keep the connection.
    let e = err(&mut c, &["FROB", "a", "b"]);
    assert!(
        e.contains("unknown command 'FROB', with args beginning with: 'a' 'b'"),
        "{e}"
    );
    assert!(err(&mut c, &["GET"]).contains("wrong number of arguments for 'get' command"));
    assert_eq!(ok(&mut c, &["PING"]), Value::SimpleString("PONG".into()));
    srv.stop();
}

#[test]
fn pipelined_requests_are_all_answered_in_order() {
    let srv = Server::start();
    let mut c = srv.conn();
    let mut pipe = redis::pipe();
    for i in 0..2000 {
        pipe.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
        pipe.cmd("INCR").arg(format!("k{i}"));
    }
    let got: Vec<i64> = pipe.query(&mut c).unwrap();
    assert_eq!(got, (1..=2000).collect::<Vec<i64>>());

    // Raw: many requests in one write (inline and multibulk mixed), all
    // answers come back.
    let mut s = srv.raw();
    let mut req = Vec::new();
    for i in 0..500 {
        if i % 2 == 0 {
            req.extend_from_slice(b"PING\r\n");
        } else {
            req.extend_from_slice(b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n");
        }
    }
    s.write_all(&req).unwrap();
    let want: Vec<u8> = (0..500)
        .flat_map(|i| {
            if i % 2 == 0 {
                &b"+PONG\r\n"[..]
            } else {
                &b"$2\r\nhi\r\n"[..]
            }
        })
        .copied()
        .collect();
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want);
    srv.stop();
}

#[test]
fn pubsub_across_connections() {
    let srv = Server::start();
    let mut sub_conn = srv.conn();
    let mut publisher = srv.conn();
    let mut sub = sub_conn.as_pubsub();
    sub.set_read_timeout(Some(LIMIT)).unwrap();
    sub.subscribe(&["news", "sport"]).unwrap();
    let mut second = srv.conn();
    let mut sub2 = second.as_pubsub();
    sub2.set_read_timeout(Some(LIMIT)).unwrap();
    sub2.subscribe("news").unwrap();

    let n: i64 = publisher.publish("news", "hello").unwrap();
    assert_eq!(n, 2);
    for msg in [sub.get_message().unwrap(), sub2.get_message().unwrap()] {
        assert_eq!(msg.get_channel_name(), "news");
        assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
    }
    let n: i64 = publisher.publish("sport", "goal").unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        sub.get_message().unwrap().get_payload::<String>().unwrap(),
        "goal"
    );
    let n: i64 = publisher.publish("weather", "rain").unwrap();
    assert_eq!(n, 0);

    // Binary payloads survive.
    let payload: Vec<u8> = (0..=255).collect();
    let _: i64 = publisher.publish("sport", &payload[..]).unwrap();
    assert_eq!(
        sub.get_message().unwrap().get_payload::<Vec<u8>>().unwrap(),
        payload
    );

    sub.unsubscribe("sport").unwrap();
    let n: i64 = publisher.publish("sport", "nobody").unwrap();
    assert_eq!(n, 0);
    drop(sub2);
    drop(second); // a subscriber that disconnects is forgotten
    let deadline = Instant::now() + LIMIT;
    loop {
        let n: i64 = publisher.publish("news", "x").unwrap();
        if n == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "closed subscriber still counted");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        sub.get_message().unwrap().get_payload::<String>().unwrap(),
        "x"
    );
    drop(sub);

    // In subscribed mode only (UN)SUBSCRIBE, PING, QUIT and RESET work.
    let mut s = srv.raw();
    s.write_all(b"SUBSCRIBE c\r\nGET k\r\nPING\r\nQUIT\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(
        out,
        "*3\r\n$9\r\nsubscribe\r\n$1\r\nc\r\n:1\r\n\
         -ERR Can't execute 'get': only (P|S)SUBSCRIBE / (P|S)UNSUBSCRIBE / PING / QUIT / RESET \
         are allowed in this context\r\n\
         *2\r\n$4\r\npong\r\n$0\r\n\r\n\
         +OK\r\n"
    );
    srv.stop();
}

#[test]
fn keys_expire_on_access_and_in_the_background() {
    let srv = Server::start();
    let mut c = srv.conn();
    assert_eq!(ok(&mut c, &["SET", "lazy", "v", "PX", "50"]), okay());
    assert_eq!(ok(&mut c, &["SET", "active", "v", "PX", "50"]), okay());
    assert_eq!(ok(&mut c, &["SET", "kept", "v", "EX", "1000"]), okay());
    let deadline = Instant::now() + LIMIT;
    while ok(&mut c, &["GET", "lazy"]) != Value::Nil {
        assert!(Instant::now() < deadline, "key never expired");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Nobody touches "active": the background expirer removes it (INFO's
    // key count does not purge by itself).
    loop {
        let info = match ok(&mut c, &["INFO"]) {
            Value::BulkString(b) => String::from_utf8(b).unwrap(),
            v => panic!("{v:?}"),
        };
        if info.contains("db0:keys=1,expires=1") {
            break;
        }
        assert!(Instant::now() < deadline, "no active expiry: {info}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ok(&mut c, &["GET", "kept"]), bulk("v"));
    assert_eq!(int(&mut c, &["DBSIZE"]), 1);
    srv.stop();
}

/// Sends `request` on a fresh connection and reads until the server closes
/// it (or the read times out, which fails the test).
fn exchange_until_close(srv: &Server, request: &[u8]) -> String {
    let mut s = srv.raw();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out)
        .unwrap_or_else(|e| panic!("{request:?}: server did not close: {e}"));
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn malformed_frames_get_redis_protocol_errors_and_the_connection_closes() {
    let srv = Server::start();
    let cases: &[(&[u8], &str)] = &[
        (
            b"*99999999999\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*abc\r\n",
            "-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$99999999999999999999\r\n",
            "-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n:12\r\n",
            "-ERR Protocol error: expected ':', got ':'\r\n",
        ),
        (
            b"SET k \"unterminated\r\n",
            "-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        // Answers to the requests before the bad one come first.
        (
            b"PING\r\n*1\r\n$4\r\nPING\r\n*1x\r\n",
            "+PONG\r\n+PONG\r\n-ERR Protocol error: invalid multibulk length\r\n",
        ),
    ];
    for (req, want) in cases {
        let want = want.replace("expected ':'", "expected '$'");
        assert_eq!(exchange_until_close(&srv, req), want, "{req:?}");
    }

    // A bulk string over --max-bulk is refused on its header, before the
    // server buffers any of it.
    let huge = format!("*2\r\n$3\r\nGET\r\n${}\r\n", MAX_BULK + 1);
    assert_eq!(
        exchange_until_close(&srv, huge.as_bytes()),
        "-ERR Protocol error: invalid bulk length\r\n"
    );
    // One at the limit is fine.
    let mut c = srv.conn();
    let big = vec![b'x'; MAX_BULK];
    let _: () = c.set("big", &big[..]).unwrap();
    let back: Vec<u8> = c.get("big").unwrap();
    assert_eq!(back.len(), MAX_BULK);

    // An inline request that never ends is cut off at 64 KiB.
    let mut s = srv.raw();
    let long = vec![b'a'; 200 * 1024];
    let _ = s.write_all(&long); // the server may close before taking it all
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        String::from_utf8_lossy(&out).starts_with("-ERR Protocol error: too big inline request"),
        "{:?}",
        String::from_utf8_lossy(&out)
    );

    // Empty, null and negative-length requests are skipped, as Redis
    // does; the connection lives.
    let mut s = srv.raw();
    s.write_all(b"*0\r\n*-1\r\n*-7\r\n\r\nPING\r\n").unwrap();
    let mut pong = [0u8; 7];
    s.read_exact(&mut pong).unwrap();
    assert_eq!(&pong, b"+PONG\r\n");

    // A client cut off in the middle of a request costs nobody else anything.
    let mut s = srv.raw();
    s.write_all(b"*3\r\n$3\r\nSET\r\n$1\r\nk").unwrap();
    drop(s);
    assert_eq!(ok(&mut c, &["PING"]), Value::SimpleString("PONG".into()));
    srv.stop();
}

/// The real tools, as the issue asks: `redis-cli` (including `--pipe`, which
/// checks every reply) and `redis-benchmark` run against mini_redis without
/// an error. Installed here (`redis-tools`) if missing, as `.ci/run` does.
#[test]
fn redis_cli_and_redis_benchmark_run_without_errors() {
    use std::process::{Command, Stdio};
    ensure_redis_tools();
    let srv = Server::start();
    let port = srv.addr.rsplit(':').next().unwrap().to_owned();
    let cli = |args: &[&str]| {
        let out = Command::new("redis-cli")
            .args(["-p", &port])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(cli(&["SET", "greeting", "hello world"]), "OK\n");
    assert_eq!(cli(&["GET", "greeting"]), "hello world\n");
    assert_eq!(cli(&["INCRBY", "n", "5"]), "5\n");
    assert!(cli(&["INFO"]).contains("redis_version"));

    // --pipe: mass insertion, then redis-cli checks the count of replies
    // and errors itself.
    let mut input = String::new();
    for i in 0..10_000 {
        input.push_str(&format!("SET key{i} value{i}\r\n"));
    }
    let mut child = Command::new("redis-cli")
        .args(["-p", &port, "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("errors: 0, replies: 10000"), "{report}");
    assert_eq!(cli(&["DBSIZE"]), "10002\n");

    // redis-benchmark's start-up queries (CONFIG GET) and its tests.
    let out = Command::new("redis-benchmark")
        .args(["-p", &port, "-c", "10", "-n", "2000", "-P", "4", "-q"])
        .args(["-t", "ping,set,get,incr,mset"])
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    for test in [
        "PING_INLINE: ",
        "PING_MBULK: ",
        "SET: ",
        "GET: ",
        "INCR: ",
        "MSET (10 keys): ",
    ] {
        assert!(text.contains(test), "{test} missing: {text}");
    }
    let lower = text.to_lowercase();
    assert!(
        !lower.contains("error") && !lower.contains("warning"),
        "{text}"
    );
    srv.stop();
}

/// Whether `tool --version` runs.
fn has_tool(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Makes sure `redis-cli` and `redis-benchmark` are there: on a fresh
/// machine where this runs as root with `apt-get`, installs `redis-tools`
/// (the README's test command then passes as it is); otherwise fails with
/// what to install.
fn ensure_redis_tools() {
    use std::process::{Command, Stdio};
    let tools = ["redis-cli", "redis-benchmark"];
    if tools.iter().all(|t| has_tool(t)) {
        return;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && has_tool("apt-get") {
        eprintln!("mini_redis: redis-tools missing; installing it with apt-get");
        let apt = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !apt(&["install", "-y", "-qq", "redis-tools"]) {
            apt(&["update", "-qq"]);
            apt(&["install", "-y", "-qq", "redis-tools"]);
        }
    }
    for tool in tools {
        assert!(
            has_tool(tool),
            "{tool} not found: install redis-tools (`apt-get install redis-tools`, as .ci/run does)"
        );
    }
}
