//! `tasklet::dump`, `tasklet::stats` and `tasklet::lookup` (issue 16, "Seeing inside").

use std::collections::HashMap;
use std::io::{Read, Write};
use std::rc::Rc;
use std::time::Duration;

use tasklet::netio::{TcpListener, TcpStream};
use tasklet::sync::{channel, Event, Mutex};
use tasklet::{TaskletState, WaitReason};

/// 10,000 tasklets, each blocked on one of seven kinds of wait: the dump
/// lists every one with the right reason, name and spawn location.
#[test]
fn dump_lists_ten_thousand_tasklets_with_their_wait_reasons() {
    let config = tasklet::Config::new()
        .stack_size(64 * 1024)
        .max_blocking(None);
    config.dispatch(|| {
        const N: usize = 10_000;
        let (_tx, rx) = channel::<u32>(0);
        let rx = Rc::new(rx);
        let (full_tx, _full_rx) = channel::<u32>(1);
        full_tx.send(0).unwrap();
        let full_tx = Rc::new(full_tx);
        let ev = Rc::new(Event::new());
        let m = Rc::new(Mutex::new(()));
        let held = m.lock();
        let sleeper = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600)));
        let sleeper_id = sleeper.id();
        let sleeper = Rc::new(std::cell::RefCell::new(Some(sleeper)));
        let mut expected: HashMap<tasklet::TaskletId, &'static str> = HashMap::new();
        expected.insert(sleeper_id, "sleep");
        let mut handles = Vec::with_capacity(N);
        let first_line = line!() + 2;
        for i in 0..N {
            let (kind, h): (&'static str, _) = match i % 6 {
                0 => (
                    "sleep",
                    tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600))),
                ),
                1 => {
                    let rx = rx.clone();
                    (
                        "recv",
                        tasklet::spawn(move || {
                            let _ = rx.recv();
                        }),
                    )
                }
                2 => {
                    let tx = full_tx.clone();
                    (
                        "send",
                        tasklet::spawn(move || {
                            let _ = tx.send(1);
                        }),
                    )
                }
                3 => {
                    let ev = ev.clone();
                    ("event", tasklet::spawn(move || ev.wait()))
                }
                4 => {
                    let m = m.clone();
                    ("mutex", tasklet::spawn(move || drop(m.lock())))
                }
                _ => {
                    let s = sleeper.clone();
                    // Only the first of these joins (a handle joins once);
                    // the others sleep like kind 0.
                    let target = s.borrow_mut().take();
                    match target {
                        Some(t) => ("join", tasklet::spawn(move || drop(t.join()))),
                        None => (
                            "sleep",
                            tasklet::spawn(|| tasklet::sleep(Duration::from_secs(3600))),
                        ),
                    }
                }
            };
            expected.insert(h.id(), kind);
            handles.push(h);
        }
        tasklet::yield_now();
        let dump = tasklet::dump();
        assert_eq!(dump.tasklets().len(), N + 2, "main + sleeper + N");
        let mut seen = 0;
        for t in dump.tasklets() {
            if t.name.as_deref() == Some("main") {
                assert_eq!(t.state, TaskletState::Running);
                assert!(t.wait.is_none());
                continue;
            }
            let kind = expected[&t.id];
            assert_eq!(t.state, TaskletState::Blocked, "{t}");
            let w = t.wait.as_ref().expect("blocked tasklets have a reason");
            let ok = match (kind, w) {
                ("sleep", WaitReason::Sleep) => t.deadline.is_some(),
                ("recv", WaitReason::Channel { send: false, .. }) => true,
                ("send", WaitReason::Channel { send: true, .. }) => true,
                (
                    "event",
                    WaitReason::Sync {
                        kind: "sync::Event",
                        ..
                    },
                ) => true,
                (
                    "mutex",
                    WaitReason::Sync {
                        kind: "sync::Mutex",
                        ..
                    },
                ) => true,
                ("join", WaitReason::Join(id)) => *id == sleeper_id,
                _ => false,
            };
            assert!(ok, "tasklet {} expected {kind}, dump says {w:?}", t.id);
            if kind != "join" && t.id != sleeper_id {
                assert_eq!(t.spawned_at.file(), "tests/observe.rs");
                let l = t.spawned_at.line();
                assert!((first_line..first_line + 80).contains(&l), "line {l}");
            }
            seen += 1;
        }
        assert_eq!(seen, N + 1);
        let text = dump.to_string();
        assert!(text.starts_with(&format!(
            "dispatcher {}: {} tasklet(s)",
            dump.dispatcher_id(),
            N + 2
        )));
        assert!(text.contains("[sleep, "));
        assert!(text.contains("[sync::Mutex 0x"));
        assert!(text.contains("    spawned at tests/observe.rs:"));
        drop(held);
        for h in &handles {
            h.kill();
        }
    });
}

/// A socket wait shows the fd and the peer's address; `lookup` finds a
/// tasklet by id and kills it.
#[test]
fn dump_shows_socket_peer_and_lookup_kills() {
    tasklet::dispatch(|| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tasklet::Builder::new()
            .name("acceptor")
            .spawn(move || {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 8];
                let _ = s.read(&mut buf);
            })
            .unwrap();
        let mut client = TcpStream::connect(addr).unwrap();
        let client_addr = client.local_addr().unwrap();
        // Wait (bounded) until the acceptor is parked reading.
        let mut reader = None;
        for _ in 0..1000 {
            tasklet::yield_now();
            let d = tasklet::dump();
            let t = d
                .tasklets()
                .iter()
                .find(|t| t.id == acceptor.id())
                .unwrap()
                .clone();
            if let Some(WaitReason::Readable { .. }) = t.wait {
                reader = Some(t);
                break;
            }
            tasklet::sleep(Duration::from_millis(5));
        }
        let t = reader.expect("acceptor never parked on a read");
        match &t.wait {
            Some(WaitReason::Readable { fd, peer }) => {
                assert!(*fd >= 0);
                assert_eq!(peer.as_deref(), Some(client_addr.to_string().as_str()));
            }
            other => panic!("{other:?}"),
        }
        assert!(t.to_string().contains("'acceptor' [readable fd"), "{t}");
        let found = tasklet::lookup(acceptor.id()).expect("lookup by id");
        assert_eq!(found.name(), Some("acceptor"));
        found.kill();
        let id = acceptor.id();
        assert!(acceptor.join().unwrap_err().is_killed());
        assert!(tasklet::lookup(id).is_none());
        client.write_all(b"x").ok();
        assert_eq!("17".parse::<tasklet::TaskletId>().unwrap().as_u64(), 17);
        assert!("0".parse::<tasklet::TaskletId>().is_err());
        assert!("x".parse::<tasklet::TaskletId>().is_err());
    });
}

/// Every counter moves when its event happens.
#[test]
fn stats_counters_move() {
    tasklet::dispatch(|| {
        let s0 = tasklet::stats();
        assert_eq!(s0.live, 1);
        assert_eq!(s0.spawned, 1);
        let hs: Vec<_> = (0..50)
            .map(|_| tasklet::spawn(tasklet::yield_now))
            .collect();
        for h in hs {
            h.join().unwrap();
        }
        let s1 = tasklet::stats();
        assert_eq!(s1.spawned, 51);
        assert_eq!(s1.live, 1);
        assert!(s1.switches >= s0.switches + 100, "{s1:?}");
        assert!(s1.ready_high_water >= 50, "{s1:?}");
        assert!(s1.stacks_cached >= 1, "{s1:?}");
        let sleeper = tasklet::spawn(|| tasklet::sleep(Duration::from_secs(60)));
        tasklet::yield_now();
        assert!(tasklet::stats().timers_armed >= 1);
        sleeper.kill();
        sleeper.join().unwrap_err();
        // A socket round trip makes the hub poll and collect events.
        let (mut a, mut b) = tasklet::netio::UnixStream::pair().unwrap();
        let r = tasklet::spawn(move || {
            let mut buf = [0u8; 1];
            b.read_exact(&mut buf).unwrap();
        });
        tasklet::sleep(Duration::from_millis(5));
        a.write_all(b"x").unwrap();
        r.join().unwrap();
        let s2 = tasklet::stats();
        assert!(s2.hub_polls > s1.hub_polls, "{s2:?}");
        assert!(s2.hub_events > s1.hub_events, "{s2:?}");
        // Offload counters see a busy thread while a call runs, idle after.
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let call = tasklet::spawn(move || tasklet::unblock(move || go_rx.recv().unwrap()));
        let mut busy_seen = false;
        for _ in 0..2000 {
            if tasklet::stats().offload_busy >= 1 {
                busy_seen = true;
                break;
            }
            tasklet::sleep(Duration::from_millis(5));
        }
        assert!(busy_seen, "offload_busy never rose");
        go_tx.send(()).unwrap();
        call.join().unwrap();
        let s3 = tasklet::stats();
        assert!(s3.offload_idle >= 1 || s3.offload_busy >= 1, "{s3:?}");
        let text = s3.to_string();
        for key in [
            "live",
            "spawned",
            "switches",
            "hub_polls",
            "hub_events",
            "timers_armed",
            "ready_high_water",
            "stacks_cached",
            "offload_busy",
            "offload_idle",
            "watchdog_warnings",
            "stall_warnings",
        ] {
            assert!(
                text.lines().any(|l| l.starts_with(&format!("{key} "))),
                "{key} missing:\n{text}"
            );
        }
    });
}
