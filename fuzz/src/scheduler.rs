//! The scheduler: fuzz bytes become a program of tasklets that spawn, kill,
//! time out, sleep, yield, send and receive on channels, set and wait on
//! events and join each other, run under one `tasklet::dispatch` and
//! checked against a simple model:
//!
//! - **no lost wake-up**: once nothing can run and no timer is pending, no
//!   tasklet is parked on a condition that holds (a receiver on a channel
//!   with queued values, a sender on a channel with room or a waiting
//!   receiver, a waiter on a set event, a joiner of an ended tasklet, a
//!   tasklet that was killed);
//! - **every tasklet ends** once the main tasklet closes the channels and
//!   sets the events, and ends the way the model says: normally iff its
//!   script completed and nobody killed it before that, killed iff someone
//!   did (a kill still pending when its body returns wins, as the runtime
//!   documents), panicked only at its `Panic` step;
//! - **destructors run exactly once**: every tasklet closure and every
//!   value sent on a channel (received, dropped with a failed send, or left
//!   queued) is dropped once, also when the program ends by `dispatch`
//!   killing what still runs;
//! - sleeps and timeouts never end early, and a channel delivers each
//!   sender's values in order;
//! - **`dispatch` exits**.
//!
//! Durations are tiny (at most 2 ms) and programs short, so one input runs
//! in a few milliseconds.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Once;
use std::time::{Duration, Instant};

use tasklet::sync::{channel, unbounded, Event, Receiver, RecvTimeoutError, Sender};
use tasklet::{JoinError, JoinHandle};

use super::input::Input;

/// Most tasklets one program spawns.
const MAX_TASKLETS: usize = 12;
/// Most steps in one program (all scripts together).
const MAX_STEPS: usize = 80;
/// Deepest nesting of `Spawn` and `Timeout` scripts.
const MAX_DEPTH: usize = 3;
/// Channel capacities (`None`: unbounded).
const CHANNELS: [Option<usize>; 4] = [Some(0), Some(1), Some(2), None];
const EVENTS: usize = 2;
/// Nothing in a program takes this long unless a wake-up was lost.
const GUARD: Duration = Duration::from_secs(10);

/// One step of a script.
#[derive(Debug, Clone)]
pub enum Op {
    /// Spawn a tasklet running this script.
    Spawn(Vec<Op>),
    /// Kill the tasklet with this index (modulo the number spawned).
    Kill(usize),
    Sleep(Duration),
    Yield,
    /// Send on channel N, parking while it is full.
    Send(usize),
    TrySend(usize),
    /// Receive on channel N, parking while it is empty.
    Recv(usize),
    RecvTimeout(usize, Duration),
    TryRecv(usize),
    /// Set event N.
    Set(usize),
    /// Wait for event N.
    Wait(usize),
    WaitTimeout(usize, Duration),
    /// Join an earlier tasklet (a tasklet joins only lower indices, so
    /// joins cannot form a cycle).
    Join(usize),
    /// Run a script under `tasklet::timeout`.
    Timeout(Duration, Vec<Op>),
    /// Panic (never in the main tasklet).
    Panic,
}

fn duration(input: &mut Input<'_>) -> Duration {
    const D: [u64; 6] = [0, 1, 50, 200, 1000, 2000];
    Duration::from_micros(D[input.below(D.len())])
}

/// Parses up to `max` steps; `steps` counts the whole program's.
fn parse(input: &mut Input<'_>, max: usize, depth: usize, steps: &mut usize) -> Vec<Op> {
    let mut ops = Vec::new();
    while ops.len() < max && *steps < MAX_STEPS && !input.is_empty() {
        *steps += 1;
        let b = input.byte();
        let arg = input.byte() as usize;
        let op = match b % 16 {
            0 | 1 if depth < MAX_DEPTH => {
                let n = 1 + arg % 6;
                Op::Spawn(parse(input, n, depth + 1, steps))
            }
            2 => Op::Kill(arg),
            3 => Op::Sleep(duration(input)),
            4 => Op::Yield,
            5 => Op::Send(arg % CHANNELS.len()),
            6 => Op::TrySend(arg % CHANNELS.len()),
            7 => Op::Recv(arg % CHANNELS.len()),
            8 => Op::RecvTimeout(arg % CHANNELS.len(), duration(input)),
            9 => Op::TryRecv(arg % CHANNELS.len()),
            10 => Op::Set(arg % EVENTS),
            11 => Op::Wait(arg % EVENTS),
            12 => Op::WaitTimeout(arg % EVENTS, duration(input)),
            13 => Op::Join(arg),
            14 if depth < MAX_DEPTH => {
                let d = duration(input);
                let n = 1 + arg % 4;
                Op::Timeout(d, parse(input, n, depth + 1, steps))
            }
            15 if b & 0x30 == 0 => Op::Panic,
            _ => Op::Yield,
        };
        ops.push(op);
    }
    ops
}

/// A panic raised by a `Panic` step: expected, so not reported.
struct FuzzPanic;

/// Counts drops: `drops[id]` for every token ever made.
#[derive(Default)]
struct Drops(RefCell<Vec<u32>>);

/// Something whose destructor must run exactly once.
struct Token {
    id: usize,
    drops: Rc<Drops>,
}

impl Token {
    fn new(drops: &Rc<Drops>) -> Token {
        let mut v = drops.0.borrow_mut();
        v.push(0);
        Token {
            id: v.len() - 1,
            drops: drops.clone(),
        }
    }
}

impl Drop for Token {
    fn drop(&mut self) {
        self.drops.0.borrow_mut()[self.id] += 1;
    }
}

/// A value sent on a channel.
struct Val {
    _token: Token,
    sender: usize,
    seq: u64,
}

/// What a tasklet is parked on, for the lost wake-up check.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Blocked {
    Send(usize),
    Recv(usize),
    Wait(usize),
    Join(usize),
}

/// What the model knows of one tasklet.
#[derive(Default)]
struct Task {
    handle: RefCell<Option<JoinHandle<()>>>,
    kill_requested: Cell<bool>,
    /// Killed before its script completed: it must end killed (a kill
    /// still pending when the body returns wins over its value), unless it
    /// panics first.
    killed_running: Cell<bool>,
    reached_panic: Cell<bool>,
    completed: Cell<bool>,
    /// Its closure is gone (ran to the end, unwound, or dropped unrun).
    ended: Cell<bool>,
    blocked: Cell<Option<Blocked>>,
    outcome: RefCell<Option<Result<(), JoinError>>>,
}

struct Ctx {
    chans: Vec<(Sender<Val>, Receiver<Val>)>,
    events: Vec<Event>,
    tasks: RefCell<Vec<Rc<Task>>>,
    drops: Rc<Drops>,
    /// Bumped at every step: the program has not settled while it moves.
    progress: Cell<u64>,
    /// Steps with a timer pending (sleeps, timeouts).
    timed: Cell<usize>,
}

impl Ctx {
    fn task(&self, i: usize) -> Rc<Task> {
        self.tasks.borrow()[i].clone()
    }
}

/// One running script: the main tasklet's or a spawned one's.
struct Actor {
    /// Index in `Ctx::tasks`; `usize::MAX` for the main tasklet.
    me: usize,
    /// Inside a `Timeout` (the main tasklet parks only there).
    bounded: usize,
    seq: u64,
    /// Per (channel, sender): the last sequence number received.
    last: HashMap<(usize, usize), u64>,
}

impl Actor {
    fn is_main(&self) -> bool {
        self.me == usize::MAX
    }

    /// The main tasklet parks only where a timeout bounds it.
    fn may_park(&self) -> bool {
        !self.is_main() || self.bounded > 0
    }

    fn value(&mut self, ctx: &Ctx) -> Val {
        self.seq += 1;
        Val {
            _token: Token::new(&ctx.drops),
            sender: self.me,
            seq: self.seq,
        }
    }

    fn received(&mut self, chan: usize, v: Val) {
        let last = self.last.entry((chan, v.sender)).or_insert(0);
        assert!(
            v.seq > *last,
            "channel {chan} delivered sender {}'s value {} after {}",
            v.sender,
            v.seq,
            *last
        );
        *last = v.seq;
    }
}

/// Marks the running tasklet parked on something for as long as it lives
/// (also when the call is interrupted by a kill or a timeout).
struct Parked(Option<Rc<Task>>);

impl Parked {
    fn new(ctx: &Ctx, me: &Actor, on: Blocked) -> Parked {
        if me.is_main() {
            return Parked(None);
        }
        let task = ctx.task(me.me);
        task.blocked.set(Some(on));
        Parked(Some(task))
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.blocked.set(None);
        }
    }
}

/// Counts a step with a timer pending for as long as it lives.
struct Timed<'a>(&'a Ctx);

impl<'a> Timed<'a> {
    fn new(ctx: &'a Ctx) -> Timed<'a> {
        ctx.timed.set(ctx.timed.get() + 1);
        Timed(ctx)
    }
}

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.0.timed.set(self.0.timed.get() - 1);
    }
}

/// A tasklet's handle, lent out of the model for a wait: put back when the
/// wait ends, also when it is interrupted.
struct Lent {
    task: Rc<Task>,
    handle: Option<JoinHandle<()>>,
}

impl Lent {
    fn take(task: Rc<Task>) -> Option<Lent> {
        let handle = task.handle.borrow_mut().take()?;
        Some(Lent {
            task,
            handle: Some(handle),
        })
    }

    /// Waits until `deadline` for the tasklet; if it finished, joins it and
    /// records how it ended. Returns whether it finished.
    fn wait(mut self, deadline: Instant) -> bool {
        let h = self.handle.as_mut().expect("lent handle");
        if !h.wait_deadline(deadline) {
            return false;
        }
        let outcome = self.handle.take().expect("lent handle").join();
        *self.task.outcome.borrow_mut() = Some(outcome);
        true
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            *self.task.handle.borrow_mut() = Some(h);
        }
    }
}

/// Sets `ended` when a tasklet's closure is dropped (run or not).
struct Life(Rc<Task>);

impl Drop for Life {
    fn drop(&mut self) {
        self.0.ended.set(true);
    }
}

fn spawn_tasklet(ctx: &Rc<Ctx>, script: Vec<Op>) {
    let task = Rc::new(Task::default());
    let me = {
        let mut tasks = ctx.tasks.borrow_mut();
        if tasks.len() >= MAX_TASKLETS {
            return;
        }
        tasks.push(task.clone());
        tasks.len() - 1
    };
    let token = Token::new(&ctx.drops);
    let life = Life(task.clone());
    let c = ctx.clone();
    let h = tasklet::spawn(move || {
        let _token = token;
        let life = life;
        let mut actor = Actor {
            me,
            bounded: 0,
            seq: 0,
            last: HashMap::new(),
        };
        for op in &script {
            run(&c, &mut actor, op);
        }
        life.0.completed.set(true);
    });
    *task.handle.borrow_mut() = Some(h);
}

/// Asserts that a timed step did not end before its duration.
fn not_early(start: Instant, d: Duration, what: &str) {
    let took = start.elapsed();
    assert!(took >= d, "{what} of {d:?} ended after {took:?}");
}

fn run(ctx: &Rc<Ctx>, me: &mut Actor, op: &Op) {
    ctx.progress.set(ctx.progress.get() + 1);
    match *op {
        Op::Spawn(ref script) => spawn_tasklet(ctx, script.clone()),
        Op::Kill(k) => {
            let task = {
                let tasks = ctx.tasks.borrow();
                if tasks.is_empty() {
                    return;
                }
                tasks[k % tasks.len()].clone()
            };
            let tasklet = task.handle.borrow().as_ref().map(|h| h.tasklet());
            if let Some(t) = tasklet {
                task.kill_requested.set(true);
                if !task.completed.get() {
                    task.killed_running.set(true);
                }
                t.kill();
            }
        }
        Op::Sleep(d) => {
            let _t = Timed::new(ctx);
            let start = Instant::now();
            tasklet::sleep(d);
            not_early(start, d, "sleep");
        }
        Op::Yield => tasklet::yield_now(),
        Op::Send(c) if me.may_park() => {
            let v = me.value(ctx);
            let _p = Parked::new(ctx, me, Blocked::Send(c));
            // Fails only once the channel is closed (the value comes back
            // and is dropped here).
            let _ = ctx.chans[c].0.send(v);
        }
        Op::Send(c) | Op::TrySend(c) => {
            let v = me.value(ctx);
            let _ = ctx.chans[c].0.try_send(v);
        }
        Op::Recv(c) if me.may_park() => {
            let r = {
                let _p = Parked::new(ctx, me, Blocked::Recv(c));
                ctx.chans[c].1.recv()
            };
            match r {
                Ok(v) => me.received(c, v),
                Err(_) => assert!(ctx.chans[c].1.is_closed(), "recv failed on an open channel"),
            }
        }
        Op::Recv(c) | Op::TryRecv(c) => {
            if let Ok(v) = ctx.chans[c].1.try_recv() {
                me.received(c, v);
            }
        }
        Op::RecvTimeout(c, d) => {
            let _t = Timed::new(ctx);
            let start = Instant::now();
            match ctx.chans[c].1.recv_timeout(d) {
                Ok(v) => me.received(c, v),
                Err(RecvTimeoutError::Timeout) => not_early(start, d, "recv_timeout"),
                Err(RecvTimeoutError::Disconnected) => {
                    assert!(ctx.chans[c].1.is_closed(), "recv failed on an open channel")
                }
            }
        }
        Op::Set(e) => ctx.events[e].set(),
        Op::Wait(e) if me.may_park() => {
            let _p = Parked::new(ctx, me, Blocked::Wait(e));
            ctx.events[e].wait();
        }
        Op::Wait(e) => {
            let _ = ctx.events[e].is_set();
        }
        Op::WaitTimeout(e, d) => {
            let _t = Timed::new(ctx);
            let start = Instant::now();
            if !ctx.events[e].wait_timeout(d) {
                not_early(start, d, "Event::wait_timeout");
            }
        }
        Op::Join(k) => {
            let n = if me.is_main() {
                ctx.tasks.borrow().len()
            } else {
                me.me
            };
            if n == 0 {
                return;
            }
            let i = k % n;
            let Some(lent) = Lent::take(ctx.task(i)) else {
                return; // someone else is waiting for it
            };
            if me.may_park() {
                let _p = Parked::new(ctx, me, Blocked::Join(i));
                assert!(
                    lent.wait(Instant::now() + GUARD),
                    "tasklet {} waited {GUARD:?} to join tasklet {i}",
                    me.me
                );
            } else {
                let _t = Timed::new(ctx);
                lent.wait(Instant::now() + Duration::from_micros(100));
            }
        }
        Op::Timeout(d, ref script) => {
            let _t = Timed::new(ctx);
            let start = Instant::now();
            // Restored, not decremented: an inner timeout's own restore is
            // skipped when this one's interrupt unwinds through it.
            let outer = me.bounded;
            me.bounded += 1;
            let r = tasklet::timeout(d, || {
                for op in script {
                    run(ctx, me, op);
                }
            });
            me.bounded = outer;
            if r.is_err() {
                not_early(start, d, "timeout");
            }
        }
        Op::Panic => {
            if !me.is_main() {
                ctx.task(me.me).reached_panic.set(true);
                std::panic::panic_any(FuzzPanic);
            }
        }
    }
}

/// Waits until nothing can run and no timer is pending, then checks that
/// no parked tasklet waits on a condition that already holds.
fn check_settled(ctx: &Ctx) {
    let give_up = Instant::now() + GUARD;
    let mut quiet = 0;
    while quiet < 2 {
        let before = ctx.progress.get();
        tasklet::sleep(Duration::from_micros(500));
        if ctx.timed.get() == 0 && ctx.progress.get() == before {
            quiet += 1;
        } else {
            quiet = 0;
        }
        assert!(Instant::now() < give_up, "the program never settled");
    }
    let tasks = ctx.tasks.borrow().clone();
    let waiting_recv = |c: usize| {
        tasks
            .iter()
            .any(|t| !t.ended.get() && t.blocked.get() == Some(Blocked::Recv(c)))
    };
    for (i, t) in tasks.iter().enumerate() {
        if t.ended.get() {
            continue;
        }
        let lost = match t.blocked.get() {
            None => false,
            Some(Blocked::Recv(c)) => !ctx.chans[c].1.is_empty(),
            Some(Blocked::Send(c)) => {
                let room = CHANNELS[c].is_none_or(|cap| ctx.chans[c].0.len() < cap);
                room || waiting_recv(c)
            }
            Some(Blocked::Wait(e)) => ctx.events[e].is_set(),
            Some(Blocked::Join(k)) => tasks[k].ended.get(),
        } || (t.kill_requested.get() && t.blocked.get().is_some());
        assert!(
            !lost,
            "lost wake-up: tasklet {i} still parked on {:?}\n{}",
            t.blocked.get(),
            tasklet::dump()
        );
    }
}

/// Closes every channel and sets every event, then joins every tasklet:
/// each must end, the way the model says.
fn release_and_join(ctx: &Ctx) {
    for (tx, _) in &ctx.chans {
        tx.close();
    }
    for e in &ctx.events {
        e.set();
    }
    let deadline = Instant::now() + GUARD;
    let mut i = 0;
    while i < ctx.tasks.borrow().len() {
        let task = ctx.task(i);
        while task.outcome.borrow().is_none() {
            match Lent::take(task.clone()) {
                Some(lent) => assert!(
                    lent.wait(deadline),
                    "tasklet {i} did not end after the release:\n{}",
                    tasklet::dump()
                ),
                None => {
                    // Another tasklet is joining it.
                    assert!(Instant::now() < deadline, "tasklet {i} was never joined");
                    tasklet::sleep(Duration::from_micros(100));
                }
            }
        }
        i += 1;
    }
    for (i, t) in ctx.tasks.borrow().iter().enumerate() {
        let outcome = t.outcome.borrow();
        match outcome.as_ref().expect("joined") {
            Ok(()) => {
                assert!(t.completed.get(), "tasklet {i} returned without completing");
                assert!(
                    !t.killed_running.get(),
                    "tasklet {i} was killed, yet returned"
                );
            }
            Err(e) if e.is_killed() => assert!(
                t.killed_running.get(),
                "tasklet {i} killed, but nobody killed it before it completed"
            ),
            Err(e) => {
                assert!(
                    t.reached_panic.get(),
                    "tasklet {i} panicked unexpectedly: {e:?}"
                );
                assert!(!t.completed.get());
            }
        }
        assert!(
            t.ended.get(),
            "tasklet {i} joined, but its closure is alive"
        );
    }
}

/// Installs (once) a panic hook that keeps `Panic` steps quiet and hands
/// every other panic to the hook before it (libFuzzer's reports and aborts).
fn quiet_fuzz_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.payload().is::<FuzzPanic>() {
                previous(info);
            }
        }));
    });
}

/// Runs the program `data` encodes and checks it against the model.
pub fn check(data: &[u8]) {
    quiet_fuzz_panics();
    let mut input = Input::new(data);
    let flags = input.byte();
    // Half the programs end by returning from the main tasklet with work
    // still running, so that `dispatch` kills and unwinds it.
    let release = flags & 1 == 0;
    let mut steps = 0;
    let script = parse(&mut input, MAX_STEPS, 0, &mut steps);
    if std::env::var_os("FUZZ_SCHEDULER_DEBUG").is_some() {
        eprintln!("release {release}: {script:#?}");
    }
    let drops = Rc::new(Drops::default());
    let d = drops.clone();
    tasklet::dispatch(move || {
        let ctx = Rc::new(Ctx {
            chans: CHANNELS
                .iter()
                .map(|c| match c {
                    Some(n) => channel(*n),
                    None => unbounded(),
                })
                .collect(),
            events: (0..EVENTS).map(|_| Event::new()).collect(),
            tasks: RefCell::new(Vec::new()),
            drops: d,
            progress: Cell::new(0),
            timed: Cell::new(0),
        });
        let mut main = Actor {
            me: usize::MAX,
            bounded: 0,
            seq: 0,
            last: HashMap::new(),
        };
        for op in &script {
            run(&ctx, &mut main, op);
        }
        check_settled(&ctx);
        if release {
            release_and_join(&ctx);
        }
        // Break the cycle tasklet closure -> Ctx -> handle of a tasklet that
        // never ran: the handles go (the tasklets are detached).
        for t in ctx.tasks.borrow().iter() {
            t.handle.borrow_mut().take();
        }
    });
    for (id, &n) in drops.0.borrow().iter().enumerate() {
        assert_eq!(n, 1, "token {id} dropped {n} times (release {release})");
    }
}
