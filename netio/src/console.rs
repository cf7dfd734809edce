//! A live console for operators (gevent's `backdoor`, Twisted's `manhole`),
//! on a Unix socket only its owner can open.
//!
//! ```text
//! $ socat - UNIX-CONNECT:/run/myapp/console      (or: nc -U /run/myapp/console)
//! tasklet console: pid 4242, dispatcher 1. Commands: dump, stats, kill ID, help, quit
//! stats
//! live 1032
//! spawned 58211
//! …
//! kill 17
//! killed tasklet 17 'worker-3'
//! ```
//!
//! Commands, one per line: `dump` ([`tasklet::dump`](tasklet_runtime::dump):
//! every tasklet, what it waits on, for how long, where it was spawned),
//! `stats` ([`tasklet::stats`](tasklet_runtime::stats)), `kill ID` (unwind
//! that tasklet at its blocking point), `help`, `quit`. Anything else —
//! unknown words, binary garbage, over-long lines — gets an `error: …`
//! answer; a line longer than 4 KiB also ends the session. Nothing a client
//! sends can stop the console or the program.
//!
//! The console serves the dispatcher it runs on; each session is a tasklet
//! of that dispatcher, so what it shows is consistent (nothing runs while a
//! command is answered).
//!
//! Security: the socket file is created with mode 0600 (set on the socket
//! before `bind`, so there is no window where others could connect); only
//! the owner (and root) can connect. There is no TCP variant: forward the
//! socket with `ssh -L` if you must reach it from elsewhere.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tasklet_runtime::{Builder, JoinHandle, TaskletId};

use crate::{UnixListener, UnixStream};

/// Longest command line accepted; a longer one ends the session.
const MAX_LINE: usize = 4096;

const HELP: &str = "commands:
  dump      every tasklet of this dispatcher: state, what it waits on, for how long, where spawned
  stats     counters: live, spawned, switches, hub polls/events, timers, stacks, offload, warnings
  kill ID   kill tasklet ID (unwound at its blocking point; destructors run)
  help      this text
  quit      close this session
";

/// A bound console socket; see the [module docs](self).
///
/// Dropping it (or the end of [`serve`](Console::serve)) removes the socket file.
#[derive(Debug)]
pub struct Console {
    listener: UnixListener,
    path: PathBuf,
}

impl Console {
    /// Creates the console's socket at `path`, mode 0600.
    ///
    /// A stale socket file (left by a process that died, nothing listening)
    /// is replaced; a live one is an `AddrInUse` error, and any other file
    /// at `path` an `AlreadyExists` error.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<Console> {
        let path = path.as_ref().to_path_buf();
        remove_stale(&path)?;
        let std_listener = crate::sys::private_unix_listener(&path)?;
        Ok(Console {
            listener: UnixListener::from_std(std_listener)?,
            path,
        })
    }

    /// The socket file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts operators forever, each session in its own tasklet (named
    /// `console-session`). Returns only if accepting fails for good.
    pub fn serve(self) -> io::Result<()> {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    let spawned = Builder::new()
                        .name("console-session")
                        .spawn(move || session(stream));
                    if let Err(e) = spawned {
                        log::warn!("tasklet console: cannot start a session: {e}");
                    }
                }
                Err(e) if transient(&e) => {
                    log::warn!("tasklet console: accept failed: {e}");
                    tasklet_runtime::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Binds a [`Console`] at `path` and serves it in the calling tasklet
/// (forever; spawn it, or use [`spawn`]).
pub fn serve<P: AsRef<Path>>(path: P) -> io::Result<()> {
    Console::bind(path)?.serve()
}

/// Binds a [`Console`] at `path` (errors are returned here) and serves it in
/// a new tasklet named `console`; kill the handle to stop it (the socket
/// file is then removed).
///
/// ```
/// use std::io::{BufRead, BufReader, Write};
/// tasklet::dispatch(|| {
///     let path = std::env::temp_dir().join(format!("console-doc-{}", std::process::id()));
///     let console = tasklet::netio::console::spawn(&path).unwrap();
///     let mut c = tasklet::netio::UnixStream::connect(&path).unwrap();
///     c.write_all(b"stats\nquit\n").unwrap();
///     let text: Vec<String> = BufReader::new(c).lines().map(Result::unwrap).collect();
///     assert!(text.iter().any(|l| l.starts_with("live ")));
///     console.kill();
///     let _ = console.join();
///     assert!(!path.exists());
/// });
/// ```
#[track_caller]
pub fn spawn<P: AsRef<Path>>(path: P) -> io::Result<JoinHandle<io::Result<()>>> {
    let console = Console::bind(path)?;
    Builder::new()
        .name("console")
        .spawn(move || console.serve())
}

/// Errors after which accepting can go on (a client that gave up, no fds
/// left for a moment).
fn transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) || matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// Removes a socket file nobody listens on any more.
fn remove_stale(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} exists and is not a socket", path.display()),
        ));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a console already listens at {}", path.display()),
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path),
        Err(e) => Err(e),
    }
}

/// Serves one operator until `quit`, end of input, an over-long line or an error.
fn session(mut s: UnixStream) {
    let greeting = format!(
        "tasklet console: pid {}, dispatcher {}. Commands: dump, stats, kill ID, help, quit\n",
        std::process::id(),
        tasklet_runtime::dump().dispatcher_id()
    );
    if s.write_all(greeting.as_bytes()).is_err() {
        return;
    }
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let (reply, go_on) = answer(&line[..line.len() - 1]);
            if s.write_all(reply.as_bytes()).is_err() || !go_on {
                return;
            }
        }
        if buf.len() > MAX_LINE {
            let _ = s.write_all(b"error: line too long; closing\n");
            return;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// The reply to one command line, and whether the session goes on.
fn answer(line: &[u8]) -> (String, bool) {
    let Ok(line) = std::str::from_utf8(line) else {
        return ("error: not UTF-8 text; try help\n".into(), true);
    };
    let mut words = line.split_whitespace();
    let Some(cmd) = words.next() else {
        return (String::new(), true);
    };
    let rest: Vec<&str> = words.collect();
    match (cmd, rest.as_slice()) {
        ("help", []) => (HELP.into(), true),
        ("quit" | "exit", []) => ("bye\n".into(), false),
        ("dump", []) => (tasklet_runtime::dump().to_string(), true),
        ("stats", []) => (tasklet_runtime::stats().to_string(), true),
        ("kill", [id]) => (kill(id), true),
        ("kill", _) => ("error: usage: kill ID (a number from dump)\n".into(), true),
        (c @ ("help" | "quit" | "exit" | "dump" | "stats"), _) => {
            (format!("error: {c} takes no arguments\n"), true)
        }
        _ => (
            format!("error: unknown command {:?}; try help\n", truncate(cmd, 40)),
            true,
        ),
    }
}

fn kill(id: &str) -> String {
    let Ok(id) = id.parse::<TaskletId>() else {
        return format!("error: {:?} is not a tasklet id\n", truncate(id, 40));
    };
    if tasklet_runtime::current().id() == id {
        return "error: that is this console session (use quit)\n".into();
    }
    match tasklet_runtime::lookup(id) {
        Some(t) => {
            let name = t.name().map(|n| format!(" '{n}'")).unwrap_or_default();
            t.kill();
            format!("killed tasklet {id}{name}\n")
        }
        None => format!("error: no tasklet {id} on this dispatcher\n"),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}
