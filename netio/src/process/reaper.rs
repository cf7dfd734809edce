//! Background reaping of children dropped before they were waited for.
//!
//! One lazily started thread for the whole process (never one per child,
//! and no `SIGCHLD` handler): it keeps the orphaned children's pidfds in its
//! own epoll set and reaps each child (`waitpid` through std's
//! `Child::try_wait`) as soon as its pidfd reports the exit. A sweep every
//! second catches anything an event could have missed; children without a
//! pidfd (a kernel older than 5.3) are swept every 50 ms.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread;
use std::time::Duration;

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token, Waker};

const WAKER: Token = Token(usize::MAX);
const SWEEP: Duration = Duration::from_secs(1);
const SWEEP_WITHOUT_PIDFD: Duration = Duration::from_millis(50);

struct Orphan {
    child: std::process::Child,
    /// Kept open while the child is registered; closing it leaves the epoll set.
    pidfd: Option<OwnedFd>,
}

struct Orphans {
    next: usize,
    all: HashMap<usize, Orphan>,
    /// Orphans that rely on the sweep alone.
    without_pidfd: usize,
}

struct Reaper {
    /// `None` if no epoll instance could be made: everything is swept.
    registry: Option<(Registry, Waker)>,
    orphans: Mutex<Orphans>,
}

fn lock(m: &Mutex<Orphans>) -> MutexGuard<'_, Orphans> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        let poll = Poll::new().and_then(|p| {
            let registry = p.registry().try_clone()?;
            let waker = Waker::new(p.registry(), WAKER)?;
            Ok((p, registry, waker))
        });
        let (poll, registry) = match poll {
            Ok((p, r, w)) => (Some(p), Some((r, w))),
            Err(e) => {
                log::warn!("tasklet::process: reaper without epoll ({e}); sweeping instead");
                (None, None)
            }
        };
        let r: &'static Reaper = Box::leak(Box::new(Reaper {
            registry,
            orphans: Mutex::new(Orphans {
                next: 0,
                all: HashMap::new(),
                without_pidfd: 0,
            }),
        }));
        let spawned = thread::Builder::new()
            .name("tasklet-reaper".into())
            .spawn(move || r.run(poll));
        if let Err(e) = spawned {
            // Children handed over now stay zombies until the process exits.
            log::error!("tasklet::process: cannot start the reaper thread: {e}");
        }
        r
    })
}

/// Takes a child that has not exited yet and reaps it once it does.
pub(crate) fn adopt(child: std::process::Child, pidfd: Option<OwnedFd>) {
    let r = reaper();
    let mut o = lock(&r.orphans);
    let token = o.next;
    o.next = (o.next + 1) % (usize::MAX - 1);
    let mut registered = false;
    if let (Some(fd), Some((registry, _))) = (&pidfd, &r.registry) {
        // Registered under the lock: the thread looks the token up under it too.
        match registry.register(
            &mut SourceFd(&fd.as_raw_fd()),
            Token(token),
            Interest::READABLE,
        ) {
            Ok(()) => registered = true,
            Err(e) => log::warn!("tasklet::process: cannot watch pidfd: {e}"),
        }
    }
    if !registered {
        o.without_pidfd += 1;
    }
    let pid = child.id();
    o.all.insert(
        token,
        Orphan {
            child,
            pidfd: if registered { pidfd } else { None },
        },
    );
    drop(o);
    log::debug!(
        "tasklet::process: child {pid} dropped while running; it will be reaped in the background"
    );
    if !registered {
        if let Some((_, waker)) = &r.registry {
            let _ = waker.wake();
        }
    }
}

impl Reaper {
    fn run(&self, mut poll: Option<Poll>) {
        let mut events = Events::with_capacity(64);
        loop {
            let timeout = {
                let o = lock(&self.orphans);
                if o.without_pidfd > 0 || poll.is_none() {
                    Some(SWEEP_WITHOUT_PIDFD)
                } else if o.all.is_empty() {
                    None
                } else {
                    Some(SWEEP)
                }
            };
            match &mut poll {
                Some(p) => {
                    if let Err(e) = p.poll(&mut events, timeout) {
                        if e.kind() != std::io::ErrorKind::Interrupted {
                            log::error!("tasklet::process: reaper epoll_wait failed: {e}");
                            thread::sleep(SWEEP_WITHOUT_PIDFD);
                        }
                        events.clear();
                    }
                }
                None => thread::sleep(SWEEP_WITHOUT_PIDFD),
            }
            let mut o = lock(&self.orphans);
            if events.is_empty() {
                // A timeout (or a wake-up): sweep everything.
                let keys: Vec<usize> = o.all.keys().copied().collect();
                for k in keys {
                    reap(&mut o, k);
                }
            } else {
                for ev in events.iter() {
                    if ev.token() != WAKER {
                        reap(&mut o, ev.token().0);
                    }
                }
            }
        }
    }
}

/// Reaps orphan `k` if it has exited (or can no longer be waited for).
fn reap(o: &mut Orphans, k: usize) {
    let Some(orphan) = o.all.get_mut(&k) else {
        return;
    };
    match orphan.child.try_wait() {
        Ok(None) => return,
        Ok(Some(status)) => {
            log::debug!(
                "tasklet::process: reaped child {}: {status}",
                orphan.child.id()
            );
        }
        Err(e) => {
            // ECHILD: someone else reaped it (a `waitpid(-1)` elsewhere).
            log::debug!(
                "tasklet::process: cannot reap child {}: {e}",
                orphan.child.id()
            );
        }
    }
    if let Some(orphan) = o.all.remove(&k) {
        if orphan.pidfd.is_none() {
            o.without_pidfd -= 1;
        }
    }
}
