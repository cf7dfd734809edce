//! Echo load generator and checker: opens `--conns` concurrent connections
//! (one tasklet each), sends `--messages` messages of `--size` bytes on each,
//! verifies every echoed byte, and prints round trips per second and
//! p50/p99 latency.
//!
//! ```text
//! cargo run --release --example echo_server &
//! cargo run --release --example echo_client -- --conns 100 --messages 1000 --size 64
//! ```
//!
//! All connections are opened before the first message is sent, and all
//! stay open until every connection has finished, so `--conns N` really
//! holds N connections at once. Exits 1 if any connection fails or any
//! echoed byte differs.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::process::ExitCode;
use std::rc::Rc;
use std::time::{Duration, Instant};

use tasklet::netio::TcpStream;

mod common;
use common::args::{self, Args as CommandLine};

const USAGE: &str = "\
echo_client: load an echo server and check every echoed byte

USAGE:
    echo_client [--addr HOST:PORT] [--conns N] [--messages M] [--size B]

OPTIONS:
    --addr HOST:PORT   server address [default: 127.0.0.1:8001]
    --conns N          concurrent connections, one tasklet each [default: 10]
    --messages M       messages per connection, sent one at a time [default: 1000]
    --size B           bytes per message [default: 64]
    -h, --help         print this help

Prints round trips per second and latency percentiles; the last line,
starting with RESULT, is meant for scripts.";

struct Args {
    addr: String,
    conns: usize,
    messages: usize,
    size: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        addr: "127.0.0.1:8001".into(),
        conns: 10,
        messages: 1000,
        size: 64,
    };
    let mut args = CommandLine::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => a.addr = args.value(),
            "--conns" => a.conns = args.value_with(args::positive),
            "--messages" => a.messages = args.parse(),
            "--size" => a.size = args.value_with(args::positive),
            _ => args.unknown(),
        }
    }
    a
}

/// Raises the soft open-file limit to the hard one (N connections need N fds).
fn raise_fd_limit() {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write a valid local rlimit.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) == 0 && rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
        }
    }
}

/// The bytes connection `conn` sends as message `msg`: a window into a
/// pattern that differs per connection and per message.
fn message(pattern: &[u8], conn: usize, msg: usize, size: usize) -> &[u8] {
    let off = (conn.wrapping_mul(7) + msg) % 251;
    &pattern[off..off + size]
}

/// Messages up to this size are written whole before the echo is read: the
/// socket buffers hold them. Larger ones are written by a second tasklet
/// while this one reads, or the server, unable to write the echo back to a
/// client that is not reading yet, would stop reading too (a deadlock).
const WRITE_THEN_READ_MAX: usize = 64 * 1024;

/// Sends every message and checks every echo; returns latencies in ns.
fn run_conn(
    s: &Rc<TcpStream>,
    pattern: &Rc<[u8]>,
    conn: usize,
    messages: usize,
    size: usize,
) -> io::Result<Vec<u32>> {
    let mut lat = Vec::with_capacity(messages);
    let mut echo = vec![0u8; size];
    let mut r: &TcpStream = s;
    for msg in 0..messages {
        let out = message(pattern, conn, msg, size);
        let t = Instant::now();
        let writer = if size <= WRITE_THEN_READ_MAX {
            r.write_all(out)?;
            None
        } else {
            let (s, pattern) = (s.clone(), pattern.clone());
            Some(tasklet::spawn(move || {
                (&*s).write_all(message(&pattern, conn, msg, size))
            }))
        };
        let read = r
            .read_exact(&mut echo)
            .map_err(|e| io::Error::new(e.kind(), format!("reading echo of message {msg}: {e}")));
        if let Some(w) = writer {
            if let Err(e) = &read {
                // The writer may be parked on a server that stopped reading.
                let _ = s.shutdown(Shutdown::Both);
                w.kill();
                return Err(io::Error::new(e.kind(), e.to_string()));
            }
            w.join()
                .map_err(|e| io::Error::other(e.to_string()))?
                .map_err(|e| io::Error::new(e.kind(), format!("writing message {msg}: {e}")))?;
        }
        read?;
        lat.push(t.elapsed().as_nanos().min(u32::MAX as u128) as u32);
        if echo != out {
            let at = echo.iter().zip(out).position(|(a, b)| a != b).unwrap_or(0);
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("message {msg}: echoed byte {at} differs"),
            ));
        }
    }
    Ok(lat)
}

fn percentile(sorted: &[u32], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    Duration::from_nanos(sorted[i] as u64)
}

fn run(a: Args) -> Result<(), String> {
    let addrs: Vec<SocketAddr> = tasklet::netio::lookup_host(a.addr.as_str())
        .map_err(|e| format!("cannot resolve {}: {e}", a.addr))?
        .collect();
    let addr = addrs[0];
    println!(
        "echo_client: {} connection(s) x {} message(s) x {} B to {addr}",
        a.conns, a.messages, a.size
    );

    // Phase 1: open every connection (concurrently).
    let t0 = Instant::now();
    let connecting: Vec<_> = (0..a.conns)
        .map(|_| {
            tasklet::spawn(move || {
                let s = TcpStream::connect(addr)?;
                s.set_nodelay(true)?;
                Ok::<_, io::Error>(s)
            })
        })
        .collect();
    let mut streams = Vec::with_capacity(a.conns);
    for (i, h) in connecting.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(s)) => streams.push(s),
            Ok(Err(e)) => return Err(format!("connection {i}: cannot connect to {addr}: {e}")),
            Err(e) => return Err(format!("connection {i}: {e}")),
        }
    }
    println!("opened {} connection(s) in {:.1?}", a.conns, t0.elapsed());

    // Phase 2: every connection runs its messages; all stay open until all are done.
    let pattern: Rc<[u8]> = (0..a.size + 251).map(|i| (i * 131 + 17) as u8).collect();
    let t1 = Instant::now();
    let workers: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(conn, s)| {
            let pattern = pattern.clone();
            let (messages, size) = (a.messages, a.size);
            tasklet::spawn(move || {
                let s = Rc::new(s);
                let r = run_conn(&s, &pattern, conn, messages, size);
                (s, r)
            })
        })
        .collect();
    let mut open = Vec::with_capacity(a.conns);
    let mut lat: Vec<u32> = Vec::with_capacity(a.conns * a.messages);
    let mut failures = Vec::new();
    for (i, h) in workers.into_iter().enumerate() {
        match h.join() {
            Ok((s, Ok(l))) => {
                lat.extend_from_slice(&l);
                open.push(s);
            }
            Ok((_, Err(e))) => failures.push(format!("connection {i}: {e}")),
            Err(e) => failures.push(format!("connection {i}: {e}")),
        }
    }
    let secs = t1.elapsed().as_secs_f64();
    drop(open);
    if !failures.is_empty() {
        for f in failures.iter().take(10) {
            eprintln!("echo_client: {f}");
        }
        return Err(format!(
            "{} of {} connection(s) failed",
            failures.len(),
            a.conns
        ));
    }

    lat.sort_unstable();
    let n = lat.len();
    let rtps = n as f64 / secs;
    let (p50, p99, max) = (
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 1.0),
    );
    println!(
        "{n} round trips in {secs:.3} s: {rtps:.0} round trips/s ({:.1} MB/s each way)",
        rtps * a.size as f64 / 1e6
    );
    println!("latency: p50 {p50:.1?}, p99 {p99:.1?}, max {max:.1?}");
    println!("all {} echoed bytes verified", n as u64 * a.size as u64);
    println!(
        "RESULT conns={} size={} round_trips={n} secs={secs:.4} rtps={rtps:.0} p50_us={:.1} p99_us={:.1}",
        a.conns,
        a.size,
        p50.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6
    );
    Ok(())
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = parse_args();
    raise_fd_limit();
    // Small stacks: a connection tasklet needs little, and 10,000 of them fit easily.
    let r = tasklet::Config::new()
        .stack_size(64 * 1024)
        .dispatch(move || run(args));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("echo_client: {e}");
            ExitCode::FAILURE
        }
    }
}
