//! Far deadlines (Linux): a `timerfd` in the hub's epoll set, so that a poll
//! whose next timer is far away — typically a connection's idle timeout —
//! blocks in `epoll_wait` with no timeout.
//!
//! A finite `epoll_wait` timeout makes the kernel arm a high-resolution
//! timer on entry and cancel it on return: two timer-tree updates per
//! wake-up of a server that sleeps between messages, which a loop without
//! timers does not pay. The `timerfd` is armed once for the earliest far
//! deadline and stays armed while that deadline stands; the hub re-arms it
//! only when a timer earlier than the armed one comes due within reach, or
//! after it fired. Deadlines nearer than [`FAR`] keep using the
//! `epoll_wait` timeout (a sleeping loop would otherwise pay a
//! `timerfd_settime` per sleep).

use std::cell::{Cell, OnceCell};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// Deadlines at least this far ahead go to the `timerfd`.
const FAR: Duration = Duration::from_secs(1);

/// The `timerfd`'s token in the hub's epoll set (I/O tokens keep the top bit
/// clear, see `io_source::make_token`; the waker has `usize::MAX`).
pub(super) const FAR_TOKEN: Token = Token(usize::MAX - 1);

/// The hub's `timerfd`, created the first time a far deadline needs it.
pub(super) struct FarTimer {
    /// `None` inside: it could not be created or registered (the hub then
    /// uses `epoll_wait` timeouts for every deadline).
    fd: OnceCell<Option<OwnedFd>>,
    /// When the armed `timerfd` expires (`None`: disarmed, or its expiry
    /// was collected).
    armed: Cell<Option<Instant>>,
}

impl FarTimer {
    pub(super) fn new() -> FarTimer {
        FarTimer {
            fd: OnceCell::new(),
            armed: Cell::new(None),
        }
    }

    /// The `epoll_wait` timeout of a blocking poll at `now` whose next timer
    /// is due at `deadline`: `None` (no timeout) when the `timerfd` is
    /// armed to expire at or before `deadline` (arming it if the deadline
    /// is far), else the time left.
    #[inline]
    pub(super) fn timeout(
        &self,
        registry: &Registry,
        deadline: Instant,
        now: Instant,
    ) -> Option<Duration> {
        if matches!(self.armed.get(), Some(at) if at <= deadline) {
            return None;
        }
        let left = deadline.saturating_duration_since(now);
        if left < FAR || !self.arm(registry, left) {
            return Some(left);
        }
        // Armed relative to a clock read taken before this call: it expires
        // at `deadline` or a little after, never before.
        self.armed.set(Some(deadline));
        None
    }

    /// Its expiry was collected by a poll: the next far deadline re-arms it.
    pub(super) fn fired(&self) {
        self.armed.set(None);
    }

    /// Arms the `timerfd` to expire `after` from now; `false` if there is no
    /// `timerfd` or arming failed.
    #[cold]
    fn arm(&self, registry: &Registry, after: Duration) -> bool {
        let Some(fd) = self.fd.get_or_init(|| create(registry).ok()) else {
            return false;
        };
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: after.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
                tv_nsec: after.subsec_nanos() as libc::c_long,
            },
        };
        // SAFETY: `fd` is an open timerfd owned by this value; `spec` is a
        // valid itimerspec that outlives the call, and a null old-value
        // pointer is allowed.
        let r = unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if r < 0 {
            log::warn!(
                "tasklet: timerfd_settime failed: {}; using epoll_wait timeouts",
                io::Error::last_os_error()
            );
            return false;
        }
        true
    }
}

/// A non-blocking `CLOCK_MONOTONIC` (`Instant`'s clock) `timerfd`,
/// registered edge-triggered for reading: every expiry is a new event, so
/// it is never read.
fn create(registry: &Registry) -> io::Result<OwnedFd> {
    // SAFETY: plain system call with constant arguments; the result is
    // checked before use.
    let raw = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    if raw < 0 {
        let e = io::Error::last_os_error();
        log::debug!("tasklet: no timerfd ({e}); using epoll_wait timeouts");
        return Err(e);
    }
    // SAFETY: `raw` is a freshly created descriptor nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    registry.register(
        &mut SourceFd(&fd.as_raw_fd()),
        FAR_TOKEN,
        Interest::READABLE,
    )?;
    Ok(fd)
}
