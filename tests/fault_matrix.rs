//! The generated fault matrix (issue 15 item 5): every public blocking call
//! of the facade × {kill, timeout, `dispatch` exit, `dispatch` exit with the
//! call made in a destructor of the killed tasklet, a panic in a
//! neighbour's destructor}.
//!
//! The calls are listed once, in [`matrix!`] at the bottom; the macro turns
//! each into a module with one `#[test]` per fault (`fault_matrix::tcp_read::kill`,
//! …). A call's entry is a setup function that builds what the call needs
//! (a socket pair whose peer never writes, a mutex someone holds forever, a
//! child process that never exits) and returns the call as a closure that
//! blocks for good unless interrupted, plus a `release` run afterwards
//! (for calls that park on an offload thread, which must be let go).
//!
//! Every cell asserts that:
//! - the call unwinds (kill, `dispatch` exit) or its scope returns
//!   `Err(Elapsed)` (timeout) — it never returns on its own;
//! - the destructors of the interrupted tasklet's locals run exactly once;
//! - nothing hangs: each cell runs its dispatcher on its own thread with a
//!   watchdog (`LIMIT`);
//! - the dispatcher survives: afterwards it still spawns, joins, sleeps and
//!   times out (for the exit cell: a new `dispatch` on the same thread does).
//!
//! The list was made by reading the public API of `src/lib.rs`,
//! `runtime/src/lib.rs` and `netio/src/lib.rs` (see `docs/reliability.md`
//! for what is deliberately not in it).

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Once};
use std::time::{Duration, Instant};

use tasklet::netio::{
    StreamServer, TcpListener, TcpStream, UdpSocket, UnixDatagram, UnixListener, UnixStream,
};
use tasklet::process::{Command, Stdio};
use tasklet::sync::{
    channel, AsyncResult, BoundedSemaphore, Event, JoinableQueue, LifoQueue, Mutex, PriorityQueue,
    RwLock, Select, Semaphore,
};
use tasklet::{JoinHandle, TaskletState};

mod common;

/// The watchdog: a cell that takes longer has hung. Generous, the machine
/// may be loaded (a cell normally takes a few milliseconds; those whose
/// victim blocks in a destructor at exit take the one-second grace period).
const LIMIT: Duration = Duration::from_secs(60);
/// Long enough to mean "forever" for a blocking call with a time limit.
const FOREVER: Duration = Duration::from_secs(3600);

/// A blocking call, ready to run: returns (a description of what it
/// returned) only if it was not interrupted, which every cell treats as a failure.
type Call = Box<dyn FnOnce() -> String>;
/// Lets go of whatever an offloaded call blocks on (runs after the cell).
type Release = Box<dyn FnOnce() + Send>;

/// A call and its release.
struct Setup {
    call: Call,
    release: Release,
}

fn call(f: impl FnOnce() -> String + 'static) -> Setup {
    Setup {
        call: Box::new(f),
        release: Box::new(|| {}),
    }
}

fn call_with_release(
    f: impl FnOnce() -> String + 'static,
    r: impl FnOnce() + Send + 'static,
) -> Setup {
    Setup {
        call: Box::new(f),
        release: Box::new(r),
    }
}

/// Counts its drops.
struct DropCount(Arc<AtomicUsize>);

impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// Panics when dropped. Only ever dropped outside an unwind (a panic in a
/// destructor that runs during unwinding aborts the process: Rust's rule,
/// not the runtime's). Not `std::thread::panicking()`: that is per thread,
/// so another tasklet's unwind in flight (parked in a destructor) shows there.
struct PanicOnDrop(&'static str);

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("{}", self.0);
    }
}

/// The marker in the messages of the panics this file raises on purpose.
const DELIBERATE: &str = "deliberate panic in a neighbour's destructor";

/// Keeps the deliberate panics out of the test output; others print as usual.
fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let msg = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or("");
            if !msg.contains(DELIBERATE) {
                default(info);
            }
        }));
    });
}

/// Runs `f` on a new thread; fails the test if it takes longer than
/// [`LIMIT`] (a hang) and re-raises its panic.
fn bounded<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    quiet_deliberate_panics();
    common::on_thread_bounded(&format!("cell {what}"), LIMIT, f)
}

/// Waits (yielding, then sleeping a millisecond at a time) until tasklet
/// `h` is parked; the call under test is then blocked in it.
fn wait_parked<T>(h: &JoinHandle<T>) {
    let id = h.id();
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        let dump = tasklet::dump();
        let state = dump.tasklets().iter().find(|t| t.id == id).map(|t| t.state);
        match state {
            Some(TaskletState::Blocked) => return,
            None => panic!("the tasklet under test ended before it blocked"),
            _ => {}
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the tasklet under test never blocked"
        );
        spins += 1;
        if spins < 100 {
            tasklet::yield_now();
        } else {
            tasklet::sleep(Duration::from_millis(1));
        }
    }
}

/// The dispatcher still works: spawn, join, sleep and timeout.
fn dispatcher_works() {
    let h = tasklet::spawn(|| {
        tasklet::sleep(Duration::from_millis(1));
        7
    });
    assert_eq!(h.join().unwrap(), 7, "spawn/join after the fault");
    let t = Instant::now();
    let r = tasklet::timeout(Duration::from_millis(20), || tasklet::sleep(FOREVER));
    assert!(r.is_err(), "timeout after the fault");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "timeout took {:?}",
        t.elapsed()
    );
}

fn kill_cell(name: &'static str, setup: fn() -> Setup) {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    bounded(name, move || {
        tasklet::dispatch(move || {
            let Setup { call, release } = setup();
            let g = DropCount(d.clone());
            let h = tasklet::spawn(move || {
                let _g = g;
                call()
            });
            wait_parked(&h);
            h.kill();
            match h.join() {
                Err(e) if e.is_killed() => {}
                Err(e) => panic!("{name}: killed, but ended with {e}"),
                Ok(s) => panic!("{name}: killed, but the call returned {s}"),
            }
            assert_eq!(d.load(Ordering::SeqCst), 1, "{name}: destructor runs");
            release();
            dispatcher_works();
        })
    });
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "{name}: destructors ran once"
    );
}

fn timeout_cell(name: &'static str, setup: fn() -> Setup) {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    bounded(name, move || {
        tasklet::dispatch(move || {
            let Setup { call, release } = setup();
            let g = DropCount(d.clone());
            let t = Instant::now();
            let r = tasklet::timeout(Duration::from_millis(30), move || {
                let _g = g;
                call()
            });
            if let Ok(s) = r {
                panic!("{name}: the call returned {s} instead of timing out");
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "{name}: timeout took {:?}",
                t.elapsed()
            );
            assert_eq!(d.load(Ordering::SeqCst), 1, "{name}: destructor runs");
            release();
            dispatcher_works();
        })
    });
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "{name}: destructors ran once"
    );
}

fn exit_cell(name: &'static str, setup: fn() -> Setup) {
    let drops = Arc::new(AtomicUsize::new(0));
    let returned = Arc::new(AtomicUsize::new(0));
    let (d, ret) = (drops.clone(), returned.clone());
    bounded(name, move || {
        let release = tasklet::dispatch(move || {
            let Setup { call, release } = setup();
            let g = DropCount(d);
            let h = tasklet::spawn(move || {
                let _g = g;
                let s = call();
                ret.fetch_add(1, Ordering::SeqCst);
                s
            });
            wait_parked(&h);
            // Not joined: `dispatch` kills it on its way out.
            drop(h);
            release
        });
        release();
        // The thread can dispatch again.
        tasklet::dispatch(dispatcher_works);
    });
    assert_eq!(
        returned.load(Ordering::SeqCst),
        0,
        "{name}: the call returned at exit"
    );
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "{name}: destructors ran once"
    );
}

fn neighbour_cell(name: &'static str, setup: fn() -> Setup) {
    let drops = Arc::new(AtomicUsize::new(0));
    let d = drops.clone();
    bounded(name, move || {
        tasklet::dispatch(move || {
            let Setup { call, release } = setup();
            let g = DropCount(d.clone());
            let victim = tasklet::spawn(move || {
                tasklet::timeout(Duration::from_millis(200), move || {
                    let _g = g;
                    call()
                })
            });
            wait_parked(&victim);
            // A neighbour that panics in a destructor as it returns...
            let returns = tasklet::spawn(|| {
                let _p = PanicOnDrop(DELIBERATE);
                tasklet::yield_now();
            });
            // ...one that panics in a destructor after blocking...
            let sleeps = tasklet::spawn(|| {
                let _p = PanicOnDrop(DELIBERATE);
                tasklet::sleep(Duration::from_millis(5));
            });
            // ...and one killed before it ran, whose closure panics when dropped.
            let p = PanicOnDrop(DELIBERATE);
            let unstarted = tasklet::spawn(move || drop(p));
            unstarted.kill();
            for (which, h) in [
                ("returns", returns),
                ("sleeps", sleeps),
                ("unstarted", unstarted),
            ] {
                match h.join() {
                    Err(e) if e.is_panic() || e.is_killed() => {}
                    Err(e) => panic!("{name}: neighbour {which}: {e}"),
                    Ok(()) => panic!("{name}: neighbour {which}'s destructor panic was lost"),
                }
            }
            // The victim is still blocked, and still times out.
            match victim.join() {
                Ok(Err(_elapsed)) => {}
                Ok(Ok(s)) => panic!("{name}: the call returned {s} after a neighbour's panic"),
                Err(e) => panic!("{name}: the victim ended with {e} after a neighbour's panic"),
            }
            assert_eq!(d.load(Ordering::SeqCst), 1, "{name}: destructor runs");
            release();
            dispatcher_works();
        })
    });
    assert_eq!(
        drops.load(Ordering::SeqCst),
        1,
        "{name}: destructors ran once"
    );
}

fn exit_destructor_cell(name: &'static str, setup: fn() -> Setup) {
    /// Makes the call from its destructor, and counts its return.
    struct CallOnDrop(Option<Call>, Arc<AtomicUsize>);
    impl Drop for CallOnDrop {
        fn drop(&mut self) {
            if let Some(call) = self.0.take() {
                let _ = call();
                self.1.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let returned = Arc::new(AtomicUsize::new(0));
    let ret = returned.clone();
    bounded(name, move || {
        let t = Instant::now();
        let release = tasklet::dispatch(move || {
            let Setup { call, release } = setup();
            let h = tasklet::spawn(move || {
                let _d = CallOnDrop(Some(call), ret);
                tasklet::sleep(FOREVER);
            });
            wait_parked(&h);
            drop(h);
            // An offloaded call cannot park in a destructor at exit: it
            // blocks the thread until its work ends (documented), so that
            // work must end: later than the exit's one-second grace period.
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(1500));
                release();
            })
        });
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{name}: exit took {:?}",
            t.elapsed()
        );
        release.join().unwrap();
        tasklet::dispatch(dispatcher_works);
    });
    let returned = returned.load(Ordering::SeqCst);
    if NO_ERROR_PATH
        .iter()
        .any(|c| name.starts_with(&format!("{c} ")))
    {
        // It has no way to fail: it waits by yielding until `dispatch`
        // gives up on the tasklet (logged, its stack leaked) — the exit
        // still ends in bounded time, checked above.
        assert!(returned <= 1);
    } else {
        // The call gave up once the grace period was over, and the
        // destructor finished: the tasklet was not abandoned.
        assert_eq!(returned, 1, "{name}: the destructor never finished");
    }
}

/// Calls whose signature has no error to give up with (they return a guard,
/// a permit, the item or the future's output): called in a destructor at
/// `dispatch` exit, they wait by yielding, and a wait that cannot end gets
/// their tasklet abandoned. Every other call fails once the exit's grace
/// period is over.
const NO_ERROR_PATH: &[&str] = &[
    "async_result_wait",
    "block_on",
    "bounded_semaphore_acquire",
    "joinable_queue_get",
    "joinable_queue_join",
    "joinable_queue_put",
    "mutex_lock",
    "priority_queue_get",
    "priority_queue_put",
    "rwlock_read",
    "rwlock_write",
    "semaphore_acquire",
];

// ------------------------------------------------------------ the calls

fn sleep() -> Setup {
    call(|| {
        tasklet::sleep(FOREVER);
        "()".into()
    })
}

fn sleep_until() -> Setup {
    call(|| {
        tasklet::sleep_until(Instant::now() + FOREVER);
        "()".into()
    })
}

fn hub_park() -> Setup {
    call(|| format!("{:?}", tasklet::hub::park(None)))
}

fn hub_park_deadline() -> Setup {
    call(|| format!("{:?}", tasklet::hub::park(Some(Instant::now() + FOREVER))))
}

/// A tasklet that never ends on its own.
fn forever() -> JoinHandle<()> {
    tasklet::spawn(|| tasklet::sleep(FOREVER))
}

/// A tasklet that, once killed, blocks in a destructor for good (until the
/// exit's grace period makes its blocking call fail).
fn stubborn() -> JoinHandle<()> {
    struct SlowDrop;
    impl Drop for SlowDrop {
        fn drop(&mut self) {
            tasklet::sleep(FOREVER);
        }
    }
    let h = tasklet::spawn(|| {
        let _s = SlowDrop;
        tasklet::sleep(FOREVER)
    });
    // Started: a tasklet killed before it runs never builds its locals.
    wait_parked(&h);
    h
}

fn join() -> Setup {
    let h = forever();
    call(move || format!("{:?}", h.join()))
}

fn join_timeout() -> Setup {
    let h = forever();
    call(move || format!("{:?}", h.join_timeout(FOREVER).map_err(|e| e.to_string())))
}

fn join_wait_timeout() -> Setup {
    let mut h = forever();
    call(move || format!("{:?}", h.wait_timeout(FOREVER)))
}

fn join_kill_and_wait() -> Setup {
    let mut h = stubborn();
    call(move || format!("{:?}", h.kill_and_wait(FOREVER)))
}

fn wait_any() -> Setup {
    let mut hs = vec![forever(), forever()];
    call(move || format!("{:?}", tasklet::wait_any(&mut hs, Some(FOREVER))))
}

fn killall() -> Setup {
    let mut hs = vec![stubborn()];
    call(move || format!("{:?}", tasklet::killall(&mut hs, Some(FOREVER))))
}

fn iwait() -> Setup {
    let hs = vec![forever(), forever()];
    call(move || format!("{:?}", tasklet::iwait(hs).next().map(|h| h.id())))
}

fn joinall() -> Setup {
    let hs = vec![forever()];
    call(move || format!("{:?}", tasklet::joinall(hs)))
}

fn remote_join() -> Setup {
    let h = forever().into_remote();
    call(move || format!("{:?}", h.join()))
}

fn remote_join_timeout() -> Setup {
    let h = forever().into_remote();
    call(move || format!("{:?}", h.join_timeout(FOREVER).map(|_| ())))
}

fn channel_recv() -> Setup {
    let (tx, rx) = channel::<u32>(1);
    call(move || {
        let _tx = tx;
        format!("{:?}", rx.recv())
    })
}

fn channel_recv_timeout() -> Setup {
    let (tx, rx) = channel::<u32>(1);
    call(move || {
        let _tx = tx;
        format!("{:?}", rx.recv_timeout(FOREVER))
    })
}

fn channel_iter() -> Setup {
    let (tx, rx) = tasklet::sync::unbounded::<u32>();
    call(move || {
        let _tx = tx;
        format!("{:?}", rx.iter().next())
    })
}

fn channel_send() -> Setup {
    let (tx, rx) = channel::<u32>(1);
    tx.send(1).unwrap();
    call(move || {
        let _rx = rx;
        format!("{:?}", tx.send(2))
    })
}

fn channel_send_rendezvous() -> Setup {
    let (tx, rx) = channel::<u32>(0);
    call(move || {
        let _rx = rx;
        format!("{:?}", tx.send(2))
    })
}

fn channel_send_timeout() -> Setup {
    let (tx, rx) = channel::<u32>(1);
    tx.send(1).unwrap();
    call(move || {
        let _rx = rx;
        format!("{:?}", tx.send_timeout(2, FOREVER))
    })
}

fn event_wait() -> Setup {
    let e = Event::new();
    call(move || {
        e.wait();
        "()".into()
    })
}

fn event_wait_timeout() -> Setup {
    let e = Event::new();
    call(move || format!("{}", e.wait_timeout(FOREVER)))
}

fn event_wait_deadline() -> Setup {
    let e = Event::new();
    call(move || format!("{}", e.wait_deadline(Instant::now() + FOREVER)))
}

fn async_result_wait() -> Setup {
    let r = AsyncResult::<u32, String>::new();
    call(move || format!("{:?}", r.wait()))
}

fn async_result_wait_timeout() -> Setup {
    let r = AsyncResult::<u32, String>::new();
    call(move || format!("{:?}", r.wait_timeout(FOREVER)))
}

fn async_result_wait_ready_timeout() -> Setup {
    let r = AsyncResult::<u32, String>::new();
    call(move || format!("{:?}", r.wait_ready_timeout(FOREVER)))
}

/// A value that lives (and stays borrowed, if the caller forgets a guard)
/// for the rest of the process.
fn leak<T>(v: T) -> &'static T {
    /// The addresses of the leaked values: a static that points to them
    /// keeps them reachable, so LeakSanitizer (scripts/sanitize.sh) does not
    /// report these deliberate leaks.
    static LEAKED: std::sync::Mutex<Vec<usize>> = std::sync::Mutex::new(Vec::new());
    let v: &'static T = Box::leak(Box::new(v));
    LEAKED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(v as *const T as usize);
    v
}

fn mutex_lock() -> Setup {
    let m = leak(Mutex::new(()));
    std::mem::forget(m.lock());
    call(move || format!("{:?}", m.lock()))
}

fn mutex_lock_timeout() -> Setup {
    let m = leak(Mutex::new(()));
    std::mem::forget(m.lock());
    call(move || format!("{:?}", m.lock_timeout(FOREVER)))
}

fn semaphore_acquire() -> Setup {
    let s = Semaphore::new(0);
    call(move || format!("{:?}", s.acquire()))
}

fn semaphore_acquire_timeout() -> Setup {
    let s = Semaphore::new(0);
    call(move || format!("{:?}", s.acquire_timeout(FOREVER)))
}

fn bounded_semaphore_acquire() -> Setup {
    let s = leak(BoundedSemaphore::new(1));
    std::mem::forget(s.acquire());
    call(move || format!("{:?}", s.acquire()))
}

fn bounded_semaphore_acquire_timeout() -> Setup {
    let s = leak(BoundedSemaphore::new(1));
    std::mem::forget(s.acquire());
    call(move || format!("{:?}", s.acquire_timeout(FOREVER)))
}

fn rwlock_read() -> Setup {
    let l = leak(RwLock::new(()));
    std::mem::forget(l.write());
    call(move || format!("{:?}", l.read()))
}

fn rwlock_write() -> Setup {
    let l = leak(RwLock::new(()));
    std::mem::forget(l.read());
    call(move || format!("{:?}", l.write()))
}

fn rwlock_read_timeout() -> Setup {
    let l = leak(RwLock::new(()));
    std::mem::forget(l.write());
    call(move || format!("{:?}", l.read_timeout(FOREVER)))
}

fn rwlock_write_timeout() -> Setup {
    let l = leak(RwLock::new(()));
    std::mem::forget(l.read());
    call(move || format!("{:?}", l.write_timeout(FOREVER)))
}

fn priority_queue_get() -> Setup {
    let q = PriorityQueue::<u32>::new();
    call(move || format!("{:?}", q.get()))
}

fn priority_queue_put() -> Setup {
    let q = PriorityQueue::<u32>::bounded(1);
    q.put(1);
    call(move || {
        q.put(2);
        "()".into()
    })
}

fn lifo_queue_get_timeout() -> Setup {
    let q = LifoQueue::<u32>::new();
    call(move || format!("{:?}", q.get_timeout(FOREVER)))
}

fn lifo_queue_put_timeout() -> Setup {
    let q = LifoQueue::<u32>::bounded(1);
    q.put(1);
    call(move || format!("{:?}", q.put_timeout(2, FOREVER)))
}

fn joinable_queue_get() -> Setup {
    let q = JoinableQueue::<u32>::new();
    call(move || format!("{:?}", q.get()))
}

fn joinable_queue_put() -> Setup {
    let q = JoinableQueue::<u32>::bounded(1);
    q.put(1);
    call(move || {
        q.put(2);
        "()".into()
    })
}

fn joinable_queue_join() -> Setup {
    let q = JoinableQueue::<u32>::new();
    q.put(1);
    call(move || {
        q.join();
        "()".into()
    })
}

fn joinable_queue_join_timeout() -> Setup {
    let q = JoinableQueue::<u32>::new();
    q.put(1);
    call(move || format!("{}", q.join_timeout(FOREVER)))
}

fn select_builder() -> Setup {
    let (tx, rx) = channel::<u32>(1);
    let (otx, orx) = channel::<u32>(0);
    let e = Event::new();
    let r = AsyncResult::<u32, ()>::new();
    let mut h = forever();
    call(move || {
        let _keep = (tx, orx);
        Select::new()
            .recv(&rx, |v| format!("recv {v:?}"))
            .send(&otx, 1, |v| format!("send {v:?}"))
            .event(&e, || "event".to_string())
            .ready(&r, || "ready".to_string())
            .finished(&mut h, || "finished".to_string())
            .timeout(FOREVER, || "timeout".to_string())
            .wait()
    })
}

fn select_macro() -> Setup {
    let (tx, rx) = channel::<u32>(1);
    let e = Event::new();
    call(move || {
        let _tx = tx;
        let out: String;
        tasklet::select! {
            recv(rx) -> v => out = format!("recv {v:?}"),
            wait(e) => out = "event".into(),
            timeout(FOREVER) => out = "timeout".into(),
        }
        out
    })
}

fn pool_spawn() -> Setup {
    let pool = tasklet::Pool::new(1);
    drop(pool.spawn(|| tasklet::sleep(FOREVER)));
    call(move || format!("{:?}", pool.spawn(|| ()).id()))
}

fn pool_join() -> Setup {
    let pool = tasklet::Pool::new(2);
    drop(pool.spawn(|| tasklet::sleep(FOREVER)));
    call(move || {
        pool.join();
        "()".into()
    })
}

fn pool_join_timeout() -> Setup {
    let pool = tasklet::Pool::new(2);
    drop(pool.spawn(|| tasklet::sleep(FOREVER)));
    call(move || format!("{}", pool.join_timeout(FOREVER)))
}

fn pool_map() -> Setup {
    let pool = tasklet::Pool::new(2);
    call(move || format!("{:?}", pool.map(0..4, |_| tasklet::sleep(FOREVER))))
}

fn pool_imap_unordered() -> Setup {
    let pool = tasklet::Pool::new(2);
    call(move || {
        let mut it = pool.imap_unordered(0..4, |_| tasklet::sleep(FOREVER));
        format!("{:?}", it.next())
    })
}

fn group_join() -> Setup {
    let group = tasklet::Group::new();
    drop(group.spawn(|| tasklet::sleep(FOREVER)));
    call(move || {
        group.join();
        "()".into()
    })
}

fn unblock() -> Setup {
    let (tx, rx) = mpsc::channel::<()>();
    call_with_release(
        move || format!("{:?}", tasklet::unblock(move || rx.recv())),
        move || drop(tx),
    )
}

fn block_on() -> Setup {
    call(|| {
        tasklet::block_on(std::future::pending::<()>());
        "()".into()
    })
}

fn signal_wait() -> Setup {
    // Nobody sends SIGUSR2 to this test process.
    call(|| {
        format!(
            "{:?}",
            tasklet::signal::wait(&[tasklet::signal::Signal::Usr2])
        )
    })
}

/// A connected pair of TCP streams on loopback.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
    let (b, _) = l.accept().unwrap();
    (a, b)
}

fn tcp_read() -> Setup {
    let (mut a, b) = tcp_pair();
    call(move || {
        let _b = b;
        format!("{:?}", a.read(&mut [0u8; 16]))
    })
}

fn tcp_read_exact() -> Setup {
    let (mut a, mut b) = tcp_pair();
    b.write_all(b"half").unwrap();
    call(move || {
        let _b = b;
        format!("{:?}", a.read_exact(&mut [0u8; 8]))
    })
}

fn tcp_peek() -> Setup {
    let (a, b) = tcp_pair();
    call(move || {
        let _b = b;
        format!("{:?}", a.peek(&mut [0u8; 16]))
    })
}

fn tcp_write() -> Setup {
    let (mut a, b) = tcp_pair();
    call(move || {
        let _b = b;
        let chunk = vec![0u8; 1 << 20];
        loop {
            if let Err(e) = a.write_all(&chunk) {
                return format!("Err({e})");
            }
        }
    })
}

fn tcp_accept() -> Setup {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    call(move || format!("{:?}", l.accept().map(|_| ())))
}

fn tcp_incoming() -> Setup {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    call(move || format!("{:?}", l.incoming().next().map(|r| r.map(|_| ()))))
}

/// A listener whose accept queue is full (backlog 0, one connection in it,
/// never accepted): a further connect gets no answer to its SYN.
fn full_listener() -> (std::net::SocketAddr, Box<dyn std::any::Any>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2); the fd is owned by the TcpListener below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh socket that nothing else owns.
    let l = unsafe { std::net::TcpListener::from_raw_fd(fd) };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sin is a valid sockaddr_in of the given length.
    let rc = unsafe {
        libc::bind(
            fd,
            &sin as *const libc::sockaddr_in as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0);
    // SAFETY: listen(2) on our bound socket.
    assert_eq!(unsafe { libc::listen(fd, 0) }, 0);
    let addr = l.local_addr().unwrap();
    // Fill the accept queue (one connection with backlog 0); later SYNs are dropped.
    let mut held = Vec::new();
    for _ in 0..2 {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            Ok(s) => held.push(s),
            Err(_) => break,
        }
    }
    (addr, Box::new((l, held)))
}

fn tcp_connect() -> Setup {
    let (addr, keep) = full_listener();
    call(move || {
        let _keep = keep;
        // Connects that the kernel does answer (they may sit in the SYN
        // queue) end the call; try until one blocks.
        let mut conns = Vec::new();
        loop {
            match TcpStream::connect(addr) {
                Ok(s) => conns.push(s),
                Err(e) => return format!("Err({e})"),
            }
        }
    })
}

fn tcp_connect_timeout() -> Setup {
    let (addr, keep) = full_listener();
    call(move || {
        let _keep = keep;
        let mut conns = Vec::new();
        loop {
            match TcpStream::connect_timeout(&addr, FOREVER) {
                Ok(s) => conns.push(s),
                Err(e) => return format!("Err({e})"),
            }
        }
    })
}

fn udp_recv() -> Setup {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    call(move || format!("{:?}", s.recv(&mut [0u8; 16])))
}

fn udp_recv_from() -> Setup {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    call(move || format!("{:?}", s.recv_from(&mut [0u8; 16])))
}

fn udp_peek_from() -> Setup {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    call(move || format!("{:?}", s.peek_from(&mut [0u8; 16])))
}

fn unix_stream_read() -> Setup {
    let (mut a, b) = UnixStream::pair().unwrap();
    call(move || {
        let _b = b;
        format!("{:?}", a.read(&mut [0u8; 16]))
    })
}

fn unix_stream_write() -> Setup {
    let (mut a, b) = UnixStream::pair().unwrap();
    call(move || {
        let _b = b;
        let chunk = vec![0u8; 1 << 20];
        loop {
            if let Err(e) = a.write_all(&chunk) {
                return format!("Err({e})");
            }
        }
    })
}

/// A fresh path for a socket or FIFO in the temporary directory.
fn temp_path(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let p = std::env::temp_dir().join(format!(
        "tasklet-matrix-{}-{what}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_file(&p);
    p
}

fn unix_accept() -> Setup {
    let p = temp_path("sock");
    let l = UnixListener::bind(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    call(move || format!("{:?}", l.accept().map(|_| ())))
}

fn unix_datagram_recv() -> Setup {
    let (a, b) = UnixDatagram::pair().unwrap();
    call(move || {
        let _b = b;
        format!("{:?}", a.recv(&mut [0u8; 16]))
    })
}

fn unix_datagram_recv_from() -> Setup {
    let (a, b) = UnixDatagram::pair().unwrap();
    call(move || {
        let _b = b;
        format!("{:?}", a.recv_from(&mut [0u8; 16]).map(|(n, _)| n))
    })
}

fn server_wait() -> Setup {
    let server = StreamServer::bind("127.0.0.1:0", |_s: TcpStream, _| ()).unwrap();
    let handle = server.start();
    call(move || {
        handle.wait();
        "()".into()
    })
}

fn server_serve_forever() -> Setup {
    let server = StreamServer::bind("127.0.0.1:0", |_s: TcpStream, _| ()).unwrap();
    call(move || {
        server.serve_forever();
        "()".into()
    })
}

fn server_stop() -> Setup {
    // A handler that never ends, and a stop with a grace period of "forever".
    let server =
        StreamServer::bind("127.0.0.1:0", |_s: TcpStream, _| tasklet::sleep(FOREVER)).unwrap();
    let addr = server.local_addr();
    let handle = server.start();
    let client = TcpStream::connect(addr).unwrap();
    while handle.connections() == 0 {
        tasklet::sleep(Duration::from_millis(1));
    }
    call(move || {
        let _c = client;
        format!("{}", handle.stop(FOREVER))
    })
}

/// `sleep 3600` as a child process, killed when its handle drops.
fn sleeper(stdin: bool, stdout: bool) -> tasklet::process::Child {
    let mut c = Command::new("sleep");
    c.arg("3600").kill_on_drop(true).stderr(Stdio::null());
    c.stdin(if stdin { Stdio::piped() } else { Stdio::null() });
    c.stdout(if stdout {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    c.spawn().expect("spawn sleep")
}

fn process_wait() -> Setup {
    let mut c = sleeper(false, false);
    call(move || format!("{:?}", c.wait()))
}

fn process_wait_with_output() -> Setup {
    let c = sleeper(false, true);
    call(move || format!("{:?}", c.wait_with_output().map(|o| o.status)))
}

fn process_output() -> Setup {
    call(|| {
        let mut c = Command::new("sleep");
        c.arg("3600").kill_on_drop(true);
        format!("{:?}", c.output().map(|o| o.status))
    })
}

fn process_status() -> Setup {
    call(|| {
        let mut c = Command::new("sleep");
        c.arg("3600").kill_on_drop(true);
        format!("{:?}", c.status())
    })
}

fn process_stdout_read() -> Setup {
    let mut c = sleeper(false, true);
    let mut out = c.stdout.take().unwrap();
    call(move || {
        let _c = c;
        format!("{:?}", out.read(&mut [0u8; 16]))
    })
}

fn process_stdin_write() -> Setup {
    let mut c = sleeper(true, false);
    let mut input = c.stdin.take().unwrap();
    call(move || {
        let _c = c;
        let chunk = vec![0u8; 1 << 20];
        loop {
            if let Err(e) = input.write_all(&chunk) {
                return format!("Err({e})");
            }
        }
    })
}

/// A FIFO: opening it for reading blocks (on an offload thread) until a
/// writer comes; the release opens and closes the writer side.
fn fifo() -> (PathBuf, Release) {
    let p = temp_path("fifo");
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let path = p.clone();
    let release: Release = Box::new(move || {
        // Non-blocking: succeeds while a reader waits in open, else ENXIO
        // (the reader is already gone): either way nobody is left blocked.
        // SAFETY: open/close with a valid path; the fd is closed at once.
        unsafe {
            let fd = libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK);
            if fd >= 0 {
                libc::close(fd);
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    (p, release)
}

fn fs_read() -> Setup {
    let (p, release) = fifo();
    call_with_release(move || format!("{:?}", tasklet::fs::read(&p)), release)
}

fn fs_file_open_read() -> Setup {
    let (p, release) = fifo();
    call_with_release(
        move || {
            let r = tasklet::fs::File::open(&p).and_then(|mut f| {
                let mut s = String::new();
                f.read_to_string(&mut s).map(|_| s)
            });
            format!("{r:?}")
        },
        release,
    )
}

fn hub_io_source_wait() -> Setup {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let src = tasklet::hub::IoSource::new(a);
    call(move || {
        let _b = b;
        format!("{:?}", src.wait(tasklet::hub::Direction::Read, None))
    })
}

fn hub_wait_any() -> Setup {
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    let (c, d) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    c.set_nonblocking(true).unwrap();
    let (a, c) = (
        tasklet::hub::IoSource::new(a),
        tasklet::hub::IoSource::new(c),
    );
    call(move || {
        let _keep = (b, d);
        let r = tasklet::hub::wait_any(
            &[
                (&a, tasklet::hub::Direction::Read),
                (&c, tasklet::hub::Direction::Read),
            ],
            Some(Instant::now() + FOREVER),
        );
        format!("{r:?}")
    })
}

fn datagram_server_serve_forever() -> Setup {
    let server = tasklet::netio::DatagramServer::bind(
        "127.0.0.1:0",
        |_s: &UdpSocket, _d: Vec<u8>, _peer| (),
    )
    .unwrap();
    call(move || {
        server.serve_forever();
        "()".into()
    })
}

fn fs_write() -> Setup {
    // Opening a FIFO for writing blocks (on an offload thread) until a
    // reader comes; the release opens and closes a reader.
    let p = temp_path("fifo-w");
    let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
    // SAFETY: mkfifo with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let path = p.clone();
    call_with_release(
        move || format!("{:?}", tasklet::fs::write(&p, b"data")),
        move || {
            // SAFETY: open/close with a valid path; the fd is closed at once.
            unsafe {
                let fd = libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK);
                if fd >= 0 {
                    libc::close(fd);
                }
            }
            let _ = std::fs::remove_file(&path);
        },
    )
}

/// The generated matrix: one module per call, one test per fault.
macro_rules! matrix {
    ($($call:ident),* $(,)?) => {
        $(
            mod $call {
                #[test]
                fn kill() {
                    super::kill_cell(concat!(stringify!($call), " × kill"), super::$call)
                }
                #[test]
                fn timeout() {
                    super::timeout_cell(concat!(stringify!($call), " × timeout"), super::$call)
                }
                #[test]
                fn dispatch_exit() {
                    super::exit_cell(concat!(stringify!($call), " × dispatch exit"), super::$call)
                }
                #[test]
                fn exit_in_destructor() {
                    super::exit_destructor_cell(concat!(stringify!($call), " × exit, called in a destructor"), super::$call)
                }
                #[test]
                fn neighbour_destructor_panic() {
                    super::neighbour_cell(
                        concat!(stringify!($call), " × neighbour's destructor panics"),
                        super::$call,
                    )
                }
            }
        )*
        /// Every call in the matrix, by name.
        const CALLS: &[&str] = &[$(stringify!($call)),*];
    };
}

matrix!(
    // timers and the hub
    sleep,
    sleep_until,
    hub_park,
    hub_park_deadline,
    hub_io_source_wait,
    hub_wait_any,
    // tasklets
    join,
    join_timeout,
    join_wait_timeout,
    join_kill_and_wait,
    wait_any,
    killall,
    iwait,
    joinall,
    remote_join,
    remote_join_timeout,
    // channels and select
    channel_recv,
    channel_recv_timeout,
    channel_iter,
    channel_send,
    channel_send_rendezvous,
    channel_send_timeout,
    select_builder,
    select_macro,
    // events, results, locks, semaphores, queues
    event_wait,
    event_wait_timeout,
    event_wait_deadline,
    async_result_wait,
    async_result_wait_timeout,
    async_result_wait_ready_timeout,
    mutex_lock,
    mutex_lock_timeout,
    semaphore_acquire,
    semaphore_acquire_timeout,
    bounded_semaphore_acquire,
    bounded_semaphore_acquire_timeout,
    rwlock_read,
    rwlock_write,
    rwlock_read_timeout,
    rwlock_write_timeout,
    priority_queue_get,
    priority_queue_put,
    lifo_queue_get_timeout,
    lifo_queue_put_timeout,
    joinable_queue_get,
    joinable_queue_put,
    joinable_queue_join,
    joinable_queue_join_timeout,
    // pools and groups
    pool_spawn,
    pool_join,
    pool_join_timeout,
    pool_map,
    pool_imap_unordered,
    group_join,
    // offload, futures, signals, files
    unblock,
    block_on,
    signal_wait,
    fs_read,
    fs_file_open_read,
    fs_write,
    // sockets and servers
    tcp_read,
    tcp_read_exact,
    tcp_peek,
    tcp_write,
    tcp_accept,
    tcp_incoming,
    tcp_connect,
    tcp_connect_timeout,
    udp_recv,
    udp_recv_from,
    udp_peek_from,
    unix_stream_read,
    unix_stream_write,
    unix_accept,
    unix_datagram_recv,
    unix_datagram_recv_from,
    server_wait,
    server_serve_forever,
    server_stop,
    datagram_server_serve_forever,
    // subprocesses
    process_wait,
    process_wait_with_output,
    process_output,
    process_status,
    process_stdout_read,
    process_stdin_write,
);

/// The matrix is as big as `docs/reliability.md` says (update both together).
#[test]
fn matrix_size() {
    for c in NO_ERROR_PATH {
        assert!(CALLS.contains(c), "{c} is not in the matrix");
    }
    assert_eq!(CALLS.len(), 86, "calls in the matrix: {CALLS:?}");
    let mut sorted = CALLS.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    assert_eq!(sorted.len(), CALLS.len(), "a call is listed twice");
}
