//! The echo server written with plain `std::net` types — no tasklet I/O
//! types at all — running one tasklet per client thanks to the `hook`
//! feature (gevent's monkey-patching). Compare with `echo_server`, the same
//! server on `tasklet::netio` (`benches/hook_echo.sh`).
//!
//! ```text
//! cargo run --release --features hook --example std_echo_server   # 127.0.0.1:8001
//! cargo run --release --features hook --example std_echo_server -- --addr 127.0.0.1:9000
//! ```

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;

mod common;
use common::args::Args;

const USAGE: &str = "\
std_echo_server: an echo server on std::net, made cooperative by tasklet's hook feature

USAGE:
    std_echo_server [--addr HOST:PORT]

OPTIONS:
    --addr HOST:PORT   address to listen on [default: 127.0.0.1:8001]
    -h, --help         print this help";

/// Echoes everything the client sends until it closes its side: plain
/// blocking std code.
fn handle(mut client: TcpStream) -> io::Result<u64> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut total = 0u64;
    loop {
        let n = client.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        client.write_all(&buf[..n])?;
        total += n as u64;
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut addr = "127.0.0.1:8001".to_string();
    let mut args = Args::new(USAGE);
    while let Some(flag) = args.next_flag() {
        match flag.as_str() {
            "--addr" => addr = args.value(),
            _ => args.unknown(),
        }
    }
    tasklet::dispatch(move || {
        if !tasklet::hook::is_active() {
            eprintln!(
                "std_echo_server: the hooks are disabled (TASKLET_HOOK=0): one client at a time"
            );
        }
        let listener = match TcpListener::bind(&addr) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("std_echo_server: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        log::info!(
            "listening on {}",
            listener.local_addr().map(|a| a.to_string()).unwrap_or(addr)
        );
        // Stop cleanly on Ctrl-C / SIGTERM: the accept loop is killed, and
        // `dispatch` unwinds the client tasklets as it returns.
        let server = tasklet::spawn(move || loop {
            match listener.accept() {
                Ok((client, peer)) => {
                    tasklet::spawn(move || match handle(client) {
                        Ok(n) => log::info!("{peer}: closed after {n} bytes"),
                        Err(e) => log::info!("{peer}: {e}"),
                    });
                }
                Err(e) => {
                    // EMFILE and friends: breathe instead of spinning. A
                    // tasklet sleep, not std's: when the loop is killed, its
                    // hooked calls can only fail (ECANCELED), while
                    // tasklet::sleep ends it (docs/hooks.md).
                    log::warn!("accept failed: {e}");
                    tasklet::sleep(std::time::Duration::from_millis(100));
                }
            }
        });
        let _ =
            tasklet::signal::wait(&[tasklet::signal::Signal::Int, tasklet::signal::Signal::Term]);
        server.kill();
        ExitCode::SUCCESS
    })
}
