//! [`ServerHandle`]: a running server's state, and how it stops — from its
//! own thread, or from any thread through a [`ServerStopper`].

use std::cell::{OnceCell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tasklet_runtime::hub::{self, Unparker};
use tasklet_runtime::sync::Event;
use tasklet_runtime::JoinHandle;

/// A handle to a running [`StreamServer`] or [`DatagramServer`] (cheap to
/// clone); `A` is the server's address type. Not `Send`: it shares the
/// server's state with its tasklets, which never leave their thread. To stop
/// the server from another thread, make a `Send` [`ServerStopper`] with
/// [`stopper`](ServerHandle::stopper).
///
/// [`StreamServer`]: super::StreamServer
/// [`DatagramServer`]: super::DatagramServer
pub struct ServerHandle<A = SocketAddr> {
    pub(super) inner: Rc<Inner<A>>,
}

impl<A> Clone for ServerHandle<A> {
    fn clone(&self) -> Self {
        ServerHandle {
            inner: self.inner.clone(),
        }
    }
}

impl<A: Clone + fmt::Debug> ServerHandle<A> {
    /// The address the server listens on.
    pub fn local_addr(&self) -> A {
        self.inner.addr.clone()
    }

    /// How many handlers (connections, or datagrams in flight) are running.
    pub fn connections(&self) -> usize {
        self.inner.state.borrow().conns.len()
    }

    /// Whether the server has fully stopped.
    pub fn is_stopped(&self) -> bool {
        self.inner.state.borrow().stopped
    }

    /// Stops the server: closes the listener, waits up to `grace` for the
    /// running handlers to finish, then kills the rest and waits for them to
    /// unwind. Returns how many handlers were killed.
    ///
    /// If another tasklet is already stopping the server, waits for that stop
    /// to complete and returns 0. Do not call it from a connection handler of
    /// the same server (it would wait for itself): spawn a tasklet for it.
    pub fn stop(&self, grace: Duration) -> usize {
        {
            let mut st = self.inner.state.borrow_mut();
            if st.stopping {
                drop(st);
                self.wait();
                return 0;
            }
            st.stopping = true;
        }
        let (acceptor, sig, remote) = {
            let mut st = self.inner.state.borrow_mut();
            (
                st.acceptor.take(),
                st.signal_task.take(),
                st.remote_task.take(),
            )
        };
        if let Some(sig) = sig {
            sig.kill();
        }
        if let Some(remote) = remote {
            remote.kill();
        }
        if let Some(acc) = acceptor {
            acc.kill();
            let _ = acc.join(); // the listener is closed once it has unwound
        }
        let deadline = Instant::now().checked_add(grace);
        self.wait_drained(deadline);
        let n = {
            let st = self.inner.state.borrow();
            for h in st.conns.values() {
                h.kill();
            }
            st.conns.len()
        };
        if n > 0 {
            log::info!(
                "tasklet-netio: server on {:?}: killing {n} handler(s) still running after \
                 {grace:?}",
                self.inner.addr
            );
            self.wait_drained(None);
        }
        let waiters = {
            let mut st = self.inner.state.borrow_mut();
            st.stopped = true;
            std::mem::take(&mut st.done_waiters)
        };
        for w in waiters {
            w.unpark();
        }
        if let Some(r) = self.inner.remote.get() {
            r.killed.store(n, Ordering::Release);
            r.stopped.set();
        }
        n
    }

    /// Parks until the server has stopped.
    pub fn wait(&self) {
        loop {
            {
                let mut st = self.inner.state.borrow_mut();
                if st.stopped {
                    return;
                }
                st.done_waiters.push(hub::current_unparker());
            }
            if hub::park(None).is_err() {
                return;
            }
        }
    }

    /// Parks until no handler runs or `deadline` passes.
    fn wait_drained(&self, deadline: Option<Instant>) {
        loop {
            {
                let mut st = self.inner.state.borrow_mut();
                if st.conns.is_empty() {
                    return;
                }
                st.drain_waiters.push(hub::current_unparker());
            }
            match hub::park(deadline) {
                Ok(hub::Wake::Unparked) => {}
                Ok(hub::Wake::TimedOut) | Err(_) => return,
            }
        }
    }
}

impl<A: Clone + fmt::Debug> fmt::Debug for ServerHandle<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerHandle")
            .field("addr", &self.inner.addr)
            .field("connections", &self.connections())
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

pub(super) struct Inner<A> {
    pub(super) addr: A,
    pub(super) state: RefCell<State>,
    /// Shared with [`ServerStopper`]s, once one was made.
    remote: OnceCell<Arc<StopShared>>,
}

impl<A> Inner<A> {
    pub(super) fn new(addr: A) -> Inner<A> {
        Inner {
            addr,
            state: RefCell::new(State::default()),
            remote: OnceCell::new(),
        }
    }
}

impl<A> Drop for Inner<A> {
    fn drop(&mut self) {
        // The server is gone (its dispatcher exited, say) without a stop:
        // stoppers waiting for it must not wait forever.
        if let Some(r) = self.remote.get() {
            r.stopped.set();
        }
    }
}

#[derive(Default)]
pub(super) struct State {
    pub(super) max: Option<usize>,
    pub(super) next_id: u64,
    pub(super) conns: HashMap<u64, JoinHandle<()>>,
    pub(super) acceptor: Option<JoinHandle<()>>,
    pub(super) signal_task: Option<JoinHandle<()>>,
    /// Waits for a [`ServerStopper`]'s request.
    pub(super) remote_task: Option<JoinHandle<()>>,
    /// The accept loop, parked while at the connection limit.
    pub(super) accept_waiter: Option<Unparker>,
    /// `stop` waiting for the handlers to finish.
    pub(super) drain_waiters: Vec<Unparker>,
    /// `wait` callers.
    pub(super) done_waiters: Vec<Unparker>,
    pub(super) stopping: bool,
    pub(super) stopped: bool,
}

/// What a [`ServerStopper`] shares with its server's dispatcher thread.
struct StopShared {
    /// The server's address, for logs and `Debug`.
    addr: String,
    /// A stop was requested (with the grace period in `grace`).
    request: Event,
    grace: Mutex<Option<Duration>>,
    /// The server has stopped (or is gone).
    stopped: Event,
    /// How many handlers the stop killed.
    killed: AtomicUsize,
}

impl<A: Clone + fmt::Debug + 'static> ServerHandle<A> {
    /// A `Send + Sync` handle that stops this server from any thread — a
    /// signal-handling thread, an admin thread, another
    /// [`Runtime`](tasklet_runtime::Runtime) worker, a tasklet of another
    /// dispatcher.
    ///
    /// `ServerHandle` itself is `!Send` (it shares the server's state with
    /// its tasklets without locks, and tasklets never leave their thread);
    /// the stopper sends the request to a small tasklet of the server's
    /// dispatcher, which runs [`stop`](Self::stop) there.
    ///
    /// ```
    /// use std::time::Duration;
    /// use tasklet::netio::{StreamServer, TcpStream};
    ///
    /// tasklet::dispatch(|| {
    ///     let server = StreamServer::bind("127.0.0.1:0", |_s: TcpStream, _| {}).unwrap().start();
    ///     let stopper = server.stopper();
    ///     // An admin thread stops the server and waits until it has stopped.
    ///     let admin = std::thread::spawn(move || stopper.stop(Duration::from_millis(100)));
    ///     server.wait();
    ///     assert!(server.is_stopped());
    ///     # while !admin.is_finished() { tasklet::sleep(Duration::from_millis(1)); }
    ///     assert_eq!(admin.join().unwrap(), 0);
    /// });
    /// ```
    ///
    /// # Panics
    /// Outside the server's dispatcher (the first call starts its tasklet).
    pub fn stopper(&self) -> ServerStopper {
        let shared = self.inner.remote.get_or_init(|| {
            let shared = Arc::new(StopShared {
                addr: format!("{:?}", self.inner.addr),
                request: Event::new(),
                grace: Mutex::new(None),
                stopped: Event::new(),
                killed: AtomicUsize::new(0),
            });
            if self.is_stopped() {
                shared.stopped.set();
            } else {
                let h = self.clone();
                let sh = shared.clone();
                let task = tasklet_runtime::spawn(move || {
                    sh.request.wait();
                    if !sh.request.is_set() {
                        return; // cannot wait: the dispatcher is shutting down
                    }
                    let grace = lock(&sh.grace).unwrap_or(Duration::ZERO);
                    log::info!(
                        "tasklet-netio: stop requested from another thread: stopping the server \
                         on {:?} (grace {grace:?})",
                        h.inner.addr
                    );
                    // Detach ourselves first: `stop` kills this tasklet's handle.
                    drop(h.inner.state.borrow_mut().remote_task.take());
                    h.stop(grace);
                });
                self.inner.state.borrow_mut().remote_task = Some(task);
            }
            shared
        });
        ServerStopper {
            shared: shared.clone(),
        }
    }
}

fn lock<T: Copy>(m: &Mutex<T>) -> T {
    *m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Stops a [`StreamServer`] from any thread; made by
/// [`ServerHandle::stopper`]. `Send + Sync`, cheap to clone.
///
/// [`StreamServer`]: super::StreamServer
#[derive(Clone)]
pub struct ServerStopper {
    shared: Arc<StopShared>,
}

impl ServerStopper {
    /// Asks the server to stop gracefully (see [`ServerHandle::stop`]) and
    /// waits until it has: parks the calling tasklet, or blocks a plain
    /// thread. Returns how many handlers were killed after `grace`. If
    /// several stops are requested, the first one's grace period applies.
    ///
    /// Do not call it from a connection handler of the same server (it would
    /// wait for itself).
    pub fn stop(&self, grace: Duration) -> usize {
        self.request_stop(grace);
        self.wait();
        self.shared.killed.load(Ordering::Acquire)
    }

    /// Asks the server to stop gracefully and returns at once.
    pub fn request_stop(&self, grace: Duration) {
        {
            let mut g = self.shared.grace.lock().unwrap_or_else(|e| e.into_inner());
            if g.is_none() {
                *g = Some(grace);
            }
        }
        self.shared.request.set();
    }

    /// Waits until the server has stopped (or its dispatcher has exited).
    pub fn wait(&self) {
        self.shared.stopped.wait();
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`; returns whether it stopped.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.shared.stopped.wait_timeout(timeout)
    }

    /// Whether the server has stopped (or its dispatcher has exited).
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.is_set()
    }
}

impl fmt::Debug for ServerStopper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerStopper")
            .field("addr", &self.shared.addr)
            .field("stopped", &self.is_stopped())
            .finish()
    }
}
