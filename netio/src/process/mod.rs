//! Subprocesses with cooperative pipes: `tasklet::process`, std's
//! `std::process` for tasklets (Twisted's `spawnProcess`, gevent's
//! `gevent.subprocess`).
//!
//! [`Command`] builds and starts a child process exactly as
//! `std::process::Command` does (it wraps one); the difference is in
//! waiting. Reading a child's output, writing its input and waiting for it
//! to exit park the calling tasklet, so one dispatcher can run and talk to
//! hundreds of children while its other tasklets keep running:
//!
//! - [`ChildStdin`], [`ChildStdout`] and [`ChildStderr`] are the pipes in
//!   non-blocking mode, registered with the hub like sockets;
//! - [`Child::wait`] parks on a *pidfd* (`pidfd_open(2)`, Linux ≥ 5.3) that
//!   the hub watches: no thread per child and no process-wide `SIGCHLD`
//!   handler that could disturb other code (a kernel without pidfds falls
//!   back to polling with a growing interval, up to 50 ms);
//! - a [`Child`] dropped before it was waited for is not left a zombie: a
//!   single background thread reaps it when it exits (and with
//!   [`Command::kill_on_drop`] it is killed first);
//! - kills and timeouts work as everywhere: [`tasklet::timeout`](tasklet_runtime::timeout)
//!   around `child.wait()` gives up waiting (the child keeps running),
//!   `JoinHandle::kill` interrupts a tasklet blocked on a child;
//! - outside a dispatcher every call blocks the thread, like std's.
//!
//! std's [`Stdio`], [`ExitStatus`] and [`Output`] are used as they are.
//! Starting a child (`fork`/`exec`, done by std) briefly blocks the thread,
//! as any system call does.
//!
//! ```
//! use std::io::{BufRead, BufReader, Write};
//! use tasklet::process::{Command, Stdio};
//!
//! tasklet::dispatch(|| {
//!     // Run several commands at once; each `output()` parks only its tasklet.
//!     let jobs: Vec<_> = ["one", "two", "three"]
//!         .into_iter()
//!         .map(|word| tasklet::spawn(move || Command::new("echo").arg(word).output().unwrap()))
//!         .collect();
//!     for (job, word) in jobs.into_iter().zip(["one", "two", "three"]) {
//!         let out = job.join().unwrap();
//!         assert!(out.status.success());
//!         assert_eq!(out.stdout, format!("{word}\n").as_bytes());
//!     }
//!
//!     // Talk to a child through its pipes.
//!     let mut child = Command::new("tr")
//!         .arg("a-z")
//!         .arg("A-Z")
//!         .stdin(Stdio::piped())
//!         .stdout(Stdio::piped())
//!         .spawn()
//!         .unwrap();
//!     let mut input = child.stdin.take().unwrap();
//!     let writer = tasklet::spawn(move || input.write_all(b"hello\nworld\n").unwrap());
//!     let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
//!         .lines()
//!         .map(Result::unwrap)
//!         .collect();
//!     writer.join().unwrap();
//!     assert_eq!(lines, ["HELLO", "WORLD"]);
//!     assert!(child.wait().unwrap().success());
//! });
//! ```

mod pipe;
mod reaper;
mod sys;

use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

pub use std::process::{ExitStatus, Output, Stdio};

use tasklet_runtime::hub::{self, Direction, IoSource};

pub use pipe::{ChildStderr, ChildStdin, ChildStdout};

/// A process builder: std's `std::process::Command` (which it wraps), whose
/// [`spawn`](Command::spawn) returns a [`Child`] with cooperative pipes and
/// whose [`output`](Command::output) and [`status`](Command::status) park
/// the calling tasklet instead of the thread.
///
/// Defaults are std's: [`spawn`](Command::spawn) and
/// [`status`](Command::status) inherit the three standard streams unless
/// configured; [`output`](Command::output) captures stdout and stderr and
/// gives the child an empty stdin.
///
/// ```
/// use tasklet::process::Command;
///
/// tasklet::dispatch(|| {
///     let out = Command::new("sh")
///         .args(["-c", "echo \"$GREETING from $(pwd)\"; echo oops >&2; exit 3"])
///         .env("GREETING", "hello")
///         .current_dir("/")
///         .output()
///         .unwrap();
///     assert_eq!(out.status.code(), Some(3));
///     assert_eq!(out.stdout, b"hello from /\n");
///     assert_eq!(out.stderr, b"oops\n");
/// });
/// ```
pub struct Command {
    std: std::process::Command,
    stdin_set: bool,
    stdout_set: bool,
    stderr_set: bool,
    kill_on_drop: bool,
}

impl Command {
    /// A command running `program` (looked up in `PATH` when it has no `/`),
    /// with no arguments, the parent's environment and working directory.
    pub fn new<S: AsRef<OsStr>>(program: S) -> Command {
        Command {
            std: std::process::Command::new(program),
            stdin_set: false,
            stdout_set: false,
            stderr_set: false,
            kill_on_drop: false,
        }
    }

    /// Adds an argument.
    pub fn arg<S: AsRef<OsStr>>(&mut self, arg: S) -> &mut Command {
        self.std.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.std.args(args);
        self
    }

    /// Sets an environment variable for the child.
    pub fn env<K: AsRef<OsStr>, V: AsRef<OsStr>>(&mut self, key: K, val: V) -> &mut Command {
        self.std.env(key, val);
        self
    }

    /// Sets several environment variables for the child.
    pub fn envs<I, K, V>(&mut self, vars: I) -> &mut Command
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<OsStr>,
        V: AsRef<OsStr>,
    {
        self.std.envs(vars);
        self
    }

    /// Removes an environment variable from the child's environment.
    pub fn env_remove<K: AsRef<OsStr>>(&mut self, key: K) -> &mut Command {
        self.std.env_remove(key);
        self
    }

    /// Starts the child with an empty environment (plus what is set with
    /// [`env`](Command::env) afterwards).
    pub fn env_clear(&mut self) -> &mut Command {
        self.std.env_clear();
        self
    }

    /// Sets the child's working directory.
    pub fn current_dir<P: AsRef<Path>>(&mut self, dir: P) -> &mut Command {
        self.std.current_dir(dir);
        self
    }

    /// Configures the child's standard input ([`Stdio::piped`] gives
    /// [`Child::stdin`]).
    pub fn stdin<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.std.stdin(cfg);
        self.stdin_set = true;
        self
    }

    /// Configures the child's standard output ([`Stdio::piped`] gives
    /// [`Child::stdout`]).
    pub fn stdout<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.std.stdout(cfg);
        self.stdout_set = true;
        self
    }

    /// Configures the child's standard error ([`Stdio::piped`] gives
    /// [`Child::stderr`]).
    pub fn stderr<T: Into<Stdio>>(&mut self, cfg: T) -> &mut Command {
        self.std.stderr(cfg);
        self.stderr_set = true;
        self
    }

    /// Whether a [`Child`] started by this command is killed (`SIGKILL`)
    /// when it is dropped before it has been waited for (default `false`:
    /// it keeps running, and is reaped in the background when it exits).
    ///
    /// This covers a tasklet killed or timed out in the middle of
    /// [`output`](Command::output) or [`status`](Command::status): with
    /// `kill_on_drop(true)` the child goes with it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasklet::process::Command;
    ///
    /// tasklet::dispatch(|| {
    ///     let r = tasklet::timeout(Duration::from_millis(50), || {
    ///         Command::new("sleep").arg("30").kill_on_drop(true).status()
    ///     });
    ///     assert!(r.is_err()); // timed out; the `sleep` was killed and is reaped
    /// });
    /// ```
    pub fn kill_on_drop(&mut self, kill_on_drop: bool) -> &mut Command {
        self.kill_on_drop = kill_on_drop;
        self
    }

    /// The program given to [`new`](Command::new).
    pub fn get_program(&self) -> &OsStr {
        self.std.get_program()
    }

    /// The arguments added so far.
    pub fn get_args(&self) -> std::process::CommandArgs<'_> {
        self.std.get_args()
    }

    /// The environment changes made so far.
    pub fn get_envs(&self) -> std::process::CommandEnvs<'_> {
        self.std.get_envs()
    }

    /// The working directory set with [`current_dir`](Command::current_dir).
    pub fn get_current_dir(&self) -> Option<&Path> {
        self.std.get_current_dir()
    }

    /// The wrapped std command.
    pub fn as_std(&self) -> &std::process::Command {
        &self.std
    }

    /// The wrapped std command, for what only std offers (Unix
    /// `CommandExt`: `uid`, `process_group`, `pre_exec`…). Set the standard
    /// streams through this type's own methods: [`output`](Command::output)
    /// cannot see a stream configured here and captures stdout and stderr
    /// anyway.
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.std
    }

    /// Starts the child, returning a handle to it.
    ///
    /// # Errors
    /// Those of `std::process::Command::spawn`: a program that does not
    /// exist gives `ErrorKind::NotFound`, one that is not executable
    /// `PermissionDenied`.
    pub fn spawn(&mut self) -> io::Result<Child> {
        let child = self.std.spawn()?;
        Child::new(child, self.kill_on_drop)
    }

    /// Runs the child to completion, capturing its stdout and stderr (both
    /// read concurrently, so a child filling either pipe never deadlocks),
    /// and returns them with its exit status. Unless configured otherwise,
    /// the child's stdin is empty (`/dev/null`).
    ///
    /// Parks the calling tasklet; outside a dispatcher it blocks like std's.
    /// If the tasklet is killed or times out meanwhile, the child is dropped
    /// (see [`kill_on_drop`](Command::kill_on_drop)).
    pub fn output(&mut self) -> io::Result<Output> {
        if !hub::in_dispatcher() {
            return self.std.output();
        }
        if !self.stdin_set {
            self.std.stdin(Stdio::null());
        }
        if !self.stdout_set {
            self.std.stdout(Stdio::piped());
        }
        if !self.stderr_set {
            self.std.stderr(Stdio::piped());
        }
        let child = self.std.spawn();
        // Back to the defaults of `spawn` and `status` (inherit).
        if !self.stdin_set {
            self.std.stdin(Stdio::inherit());
        }
        if !self.stdout_set {
            self.std.stdout(Stdio::inherit());
        }
        if !self.stderr_set {
            self.std.stderr(Stdio::inherit());
        }
        Child::new(child?, self.kill_on_drop)?.wait_with_output()
    }

    /// Runs the child to completion (standard streams inherited unless
    /// configured) and returns its exit status.
    ///
    /// Parks the calling tasklet; outside a dispatcher it blocks like std's.
    pub fn status(&mut self) -> io::Result<ExitStatus> {
        if !hub::in_dispatcher() {
            return self.std.status();
        }
        self.spawn()?.wait()
    }
}

impl fmt::Debug for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.std.fmt(f)
    }
}

/// A running or exited child process: std's `std::process::Child`, whose
/// pipes and [`wait`](Child::wait) park the calling tasklet.
///
/// Dropping a `Child` does not wait for it (as with std) but does not leave
/// a zombie either: one that has not exited yet is reaped in the background
/// when it does, and one started with [`Command::kill_on_drop`] is killed
/// first.
///
/// ```
/// use std::io::Read;
/// use std::time::Duration;
/// use tasklet::process::{Command, Stdio};
///
/// tasklet::dispatch(|| {
///     let mut child = Command::new("sh")
///         .args(["-c", "echo started; sleep 30"])
///         .stdout(Stdio::piped())
///         .spawn()
///         .unwrap();
///     let mut out = child.stdout.take().unwrap();
///     let mut line = [0u8; 8];
///     out.read_exact(&mut line).unwrap(); // parks until the child writes
///     assert_eq!(&line, b"started\n");
///
///     // Not done in 50 ms: give up waiting, then kill it.
///     assert!(tasklet::timeout(Duration::from_millis(50), || child.wait()).is_err());
///     assert_eq!(child.try_wait().unwrap(), None);
///     child.kill().unwrap();
///     let status = child.wait().unwrap();
///     # use std::os::unix::process::ExitStatusExt;
///     assert_eq!(status.signal(), Some(9));
/// });
/// ```
pub struct Child {
    /// The child's standard input, if it was configured with [`Stdio::piped`].
    pub stdin: Option<ChildStdin>,
    /// The child's standard output, if it was configured with [`Stdio::piped`].
    pub stdout: Option<ChildStdout>,
    /// The child's standard error, if it was configured with [`Stdio::piped`].
    pub stderr: Option<ChildStderr>,
    /// `None` only once handed to the reaper (in `drop`).
    inner: Option<std::process::Child>,
    /// Readable once the child has exited; `None` after it is reaped or if
    /// the kernel has no pidfds.
    pidfd: Option<IoSource<OwnedFd>>,
    status: Option<ExitStatus>,
    kill_on_drop: bool,
}

impl Child {
    fn new(mut child: std::process::Child, kill_on_drop: bool) -> io::Result<Child> {
        let pidfd = match sys::pidfd_open(child.id()) {
            Ok(fd) => Some(IoSource::new(fd)),
            Err(e) => {
                log::debug!("tasklet::process: no pidfd ({e}); waiting for exits by polling");
                None
            }
        };
        let (stdin, stdout, stderr) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take());
        // From here on `Drop` takes care of the child, also if a pipe fails below.
        let mut c = Child {
            stdin: None,
            stdout: None,
            stderr: None,
            inner: Some(child),
            pidfd,
            status: None,
            kill_on_drop,
        };
        c.stdin = stdin.map(ChildStdin::from_std).transpose()?;
        c.stdout = stdout.map(ChildStdout::from_std).transpose()?;
        c.stderr = stderr.map(ChildStderr::from_std).transpose()?;
        Ok(c)
    }

    fn inner(&mut self) -> &mut std::process::Child {
        self.inner
            .as_mut()
            .expect("tasklet::process: child already handed to the reaper")
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.inner.as_ref().map_or(0, |c| c.id())
    }

    /// Sends `SIGKILL` to the child (through its pidfd where there is one).
    /// Returns `Ok(())` if it has already been waited for, as std does; wait
    /// for it afterwards to learn that it has exited and to reap it.
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        if let Some(fd) = &self.pidfd {
            use std::os::fd::AsFd;
            match sys::pidfd_send_signal(fd.get_ref().as_fd(), libc::SIGKILL) {
                Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {}
                // ESRCH: it has exited already (not yet reaped): as std, Ok.
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return Ok(()),
                r => return r,
            }
        }
        self.inner().kill()
    }

    /// Returns the exit status if the child has exited (reaping it), or
    /// `None` at once if it is still running.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let s = self.inner().try_wait()?;
        if let Some(s) = s {
            self.status = Some(s);
            self.pidfd = None; // close it: one fd less per finished child
        }
        Ok(s)
    }

    /// Waits for the child to exit and returns its status, parking the
    /// calling tasklet (outside a dispatcher: blocking the thread).
    ///
    /// Closes [`stdin`](Child::stdin) first, as std does, so a child reading
    /// its input to the end can finish. Interrupt it with
    /// [`tasklet::timeout`](tasklet_runtime::timeout) or `JoinHandle::kill`;
    /// the child is not affected and can be waited for again.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        drop(self.stdin.take());
        let mut pause = Duration::from_millis(1);
        loop {
            if let Some(s) = self.try_wait()? {
                return Ok(s);
            }
            if !hub::in_dispatcher() {
                let s = self.inner().wait()?;
                self.status = Some(s);
                self.pidfd = None;
                return Ok(s);
            }
            match &self.pidfd {
                // Readable once the child has exited (level: a registration
                // made after the exit reports it too).
                Some(fd) => {
                    fd.adopt(); // the child may have moved here from another thread
                    fd.wait(Direction::Read, None)?
                }
                None => {
                    tasklet_runtime::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(50));
                }
            }
        }
    }

    /// Waits for the child to exit, collecting all of its stdout and stderr
    /// (read concurrently: neither pipe can fill up and stall the child).
    /// Streams that were not piped give empty buffers. Closes stdin first.
    pub fn wait_with_output(mut self) -> io::Result<Output> {
        drop(self.stdin.take());
        let (stdout, stderr) = (self.stdout.take(), self.stderr.take());
        let (stdout, stderr) = if hub::in_dispatcher() {
            read2(stdout, stderr)?
        } else {
            // A short-lived dispatcher reads both pipes cooperatively.
            tasklet_runtime::dispatch(move || read2(stdout, stderr))?
        };
        let status = self.wait()?;
        Ok(Output {
            status,
            stdout,
            stderr,
        })
    }
}

/// Reads both pipes to the end at once: stderr in a helper tasklet (killed
/// if this one is interrupted), stdout here.
fn read2(
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
) -> io::Result<(Vec<u8>, Vec<u8>)> {
    fn read_all(r: Option<impl Read>) -> io::Result<Vec<u8>> {
        let mut v = Vec::new();
        if let Some(mut r) = r {
            r.read_to_end(&mut v)?;
        }
        Ok(v)
    }
    match (stdout, stderr) {
        (out, None) => Ok((read_all(out)?, Vec::new())),
        (None, err) => Ok((Vec::new(), read_all(err)?)),
        (out, Some(err)) => {
            struct KillOnDrop(Option<tasklet_runtime::JoinHandle<io::Result<Vec<u8>>>>);
            impl Drop for KillOnDrop {
                fn drop(&mut self) {
                    if let Some(h) = &self.0 {
                        h.kill();
                    }
                }
            }
            let mut helper = KillOnDrop(Some(tasklet_runtime::spawn(move || read_all(Some(err)))));
            let out = read_all(out)?;
            let h = helper.0.take().expect("helper handle");
            let err = match h.join() {
                Ok(r) => r?,
                Err(e) => return Err(io::Error::other(format!("reading stderr: {e}"))),
            };
            Ok((out, err))
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.status.is_some() || self.inner.is_none() {
            return;
        }
        if self.kill_on_drop {
            if let Err(e) = self.kill() {
                log::warn!(
                    "tasklet::process: cannot kill child {} on drop: {e}",
                    self.id()
                );
            }
        }
        match self.try_wait() {
            Ok(Some(_)) => {}
            Ok(None) => {
                let child = self.inner.take().expect("checked above");
                let pidfd = self.pidfd.take().map(IoSource::into_inner);
                reaper::adopt(child, pidfd);
            }
            Err(e) => log::debug!("tasklet::process: cannot reap child {}: {e}", self.id()),
        }
    }
}

impl fmt::Debug for Child {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Child")
            .field("id", &self.id())
            .field("status", &self.status)
            .field("stdin", &self.stdin)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}
