//! gevent-style coordination: ask several replicas, take the first reply
//! (`select!` with a deadline), kill the rest (`killall`), and keep a
//! per-tasklet request id for log lines (`tasklet_local!`); then a
//! `JoinableQueue` of jobs drained by workers, with `join` waiting for the
//! last `task_done`.
//!
//! ```text
//! cargo run --example first_reply
//! RUST_LOG=debug cargo run --example first_reply
//! ```

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use tasklet::sync::{channel, Event, JoinableQueue};

mod common;

tasklet::tasklet_local! {
    /// The request this tasklet works on (`thread_local!` would be shared
    /// by every tasklet of the dispatcher).
    static REQUEST: Cell<u32> = Cell::new(0);
}

const USAGE: &str = "\
first_reply: ask replicas, take the first reply, kill the rest; then a joinable job queue

USAGE:
    first_reply               (RUST_LOG=debug logs every step)

OPTIONS:
    -h, --help    print this help";

fn log_line(msg: &str) {
    log::info!("[request {}] {msg}", REQUEST.get());
}

fn main() {
    common::args::no_options(USAGE);
    env_logger::init();
    tasklet::dispatch(|| {
        // --- The first of three replicas wins.
        let (tx, rx) = channel::<(usize, String)>(0);
        let shutdown = Event::new();
        let mut replicas: Vec<_> = [(0, 80), (1, 15), (2, 40)]
            .into_iter()
            .map(|(id, ms)| {
                let tx = tx.clone();
                tasklet::spawn(move || {
                    REQUEST.set(100 + id as u32);
                    tasklet::sleep(Duration::from_millis(ms));
                    log_line(&format!("replica {id} answers"));
                    let _ = tx.send((id, format!("reply from replica {id}")));
                })
            })
            .collect();
        let answer = tasklet::select! {
            recv(rx) -> reply => reply.map(|(_, r)| r).unwrap_or_default(),
            wait(shutdown) => String::from("shut down"),
            timeout(Duration::from_secs(5)) => String::from("no replica answered"),
        };
        println!("first: {answer}");
        // The others are no longer needed: kill them and wait for them.
        let all_gone = tasklet::killall(&mut replicas, Some(Duration::from_secs(1)));
        println!("other replicas stopped: {all_gone}");

        // --- A work queue with join.
        let jobs = Rc::new(JoinableQueue::new());
        let done = Rc::new(Cell::new(0u32));
        let mut workers: Vec<_> = (0..3)
            .map(|w| {
                let (jobs, done) = (jobs.clone(), done.clone());
                tasklet::spawn(move || loop {
                    let job: u32 = jobs.get();
                    REQUEST.set(job);
                    log_line(&format!("worker {w} working"));
                    tasklet::sleep(Duration::from_millis(5));
                    done.set(done.get() + 1);
                    jobs.task_done().expect("one task_done per job taken");
                })
            })
            .collect();
        for job in 1..=12 {
            jobs.put(job);
        }
        jobs.join();
        println!("{} jobs done", done.get());
        tasklet::killall(&mut workers, None);
    });
}
