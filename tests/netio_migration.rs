//! A socket that waited in dispatcher A and then moved to another thread
//! (dispatcher B, or a plain thread) must leave A's hub: A keeps no entry
//! for it and is not woken by its traffic (issue 8, defect 7). Observed
//! through A's own diagnostics: `hub::registered_sources` and `hub::io_tick`
//! (each `epoll_wait` that collects events bumps it).

use std::io::{Read, Write};
use std::time::Duration;

use tasklet::netio::{TcpListener, TcpStream};
use tasklet::sync;

const PAIRS: usize = 40;
const ROUNDS: usize = 50;
const LIMIT: Duration = Duration::from_secs(60);

/// Connected pairs made in the current dispatcher, each having waited
/// here: the server side in a `peek` (parked until the client wrote), the
/// client side in `connect`.
fn pairs_that_waited_here(n: usize) -> Vec<(TcpStream, TcpStream)> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (0..n)
        .map(|_| {
            let client = TcpStream::connect(addr).unwrap();
            let (server, _) = listener.accept().unwrap();
            let peeker = tasklet::spawn(move || {
                let mut b = [0u8; 1];
                assert_eq!(server.peek(&mut b).unwrap(), 1);
                server
            });
            tasklet::yield_now(); // the peek parks: nothing sent yet
            (&client).write_all(b"x").unwrap();
            let server = peeker.join().unwrap();
            let mut b = [0u8; 1];
            (&server).read_exact(&mut b).unwrap();
            (server, client)
        })
        .collect()
}

/// Round trips of 64 bytes over each pair.
fn round_trips(pairs: &[(TcpStream, TcpStream)]) {
    let msg = [7u8; 64];
    let mut buf = [0u8; 64];
    for _ in 0..ROUNDS {
        for (mut server, mut client) in pairs.iter().map(|(s, c)| (s, c)) {
            client.write_all(&msg).unwrap();
            server.read_exact(&mut buf).unwrap();
            server.write_all(&buf).unwrap();
            client.read_exact(&mut buf).unwrap();
        }
    }
}

#[test]
fn sockets_moved_to_another_thread_leave_the_first_dispatcher() {
    tasklet::dispatch(|| {
        tasklet::timeout(LIMIT, || {
            let baseline = tasklet::hub::registered_sources().unwrap();
            let mut pairs = pairs_that_waited_here(3 * PAIRS);
            assert!(tasklet::hub::registered_sources().unwrap() >= baseline + 3 * PAIRS);
            let to_plain: Vec<_> = pairs.drain(..PAIRS).collect();
            let to_drop: Vec<_> = pairs.drain(..PAIRS).collect();
            let to_b = pairs;

            let (done_tx, done_rx) = sync::channel::<&'static str>(3);
            // Served by dispatcher B.
            let tx = done_tx.clone();
            let b = std::thread::spawn(move || {
                tasklet::dispatch(move || {
                    round_trips(&to_b);
                    tx.send("b").unwrap();
                })
            });
            // Served on a plain thread (blocking poll, no dispatcher).
            let tx = done_tx.clone();
            let plain = std::thread::spawn(move || {
                round_trips(&to_plain);
                tx.send("plain").unwrap();
            });
            // Dropped on another thread without ever waiting there.
            let dropper = std::thread::spawn(move || {
                drop(to_drop);
                done_tx.send("drop").unwrap();
            });

            // A now only waits for the three threads: every event it
            // collects from here on is one of their three messages, a
            // socket's release, or a stale registration of a moved socket.
            let tick0 = tasklet::hub::io_tick().unwrap();
            for _ in 0..3 {
                done_rx.recv().unwrap();
            }
            let wakeups = tasklet::hub::io_tick().unwrap() - tick0;
            b.join().unwrap();
            plain.join().unwrap();
            dropper.join().unwrap();
            // Let A drain what the threads queued for it, if anything.
            tasklet::sleep(Duration::from_millis(1));
            let entries = tasklet::hub::registered_sources().unwrap() - baseline;
            // Each moved socket may cost A one wake-up (its release, or an
            // event that came before its new thread first touched it), but
            // the traffic it carries elsewhere must not: before the fix A
            // was woken about once per round trip.
            let moved = 6 * PAIRS as u64;
            assert!(
                entries == 0 && wakeups <= moved + 10,
                "A keeps {entries} entries for sockets that moved away, and was woken \
                 {wakeups} times by {} round trips served elsewhere",
                2 * PAIRS * ROUNDS
            );
        })
        .expect("test timed out");
    });
}
