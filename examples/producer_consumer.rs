//! A bounded queue between tasklets: producers park when it is full,
//! consumers park when it is empty, and everything ends when the producers
//! are done (the channel closes once its last `Sender` is dropped).
//!
//! The seed's yield-based producer/consumer, without the busy yielding.
//!
//! ```text
//! cargo run --example producer_consumer
//! RUST_LOG=debug cargo run --example producer_consumer
//! ```

use std::time::Duration;

use tasklet::sync::channel;

mod common;

const USAGE: &str = "\
producer_consumer: three producer tasklets and two consumers on a bounded channel

USAGE:
    producer_consumer         (RUST_LOG=debug logs every item)

OPTIONS:
    -h, --help    print this help";

fn main() {
    common::args::no_options(USAGE);
    env_logger::init();
    let totals = tasklet::dispatch(|| {
        // Room for 4 items: fast producers are throttled by slow consumers.
        let (tx, rx) = channel::<(usize, u32)>(4);

        let producers: Vec<_> = (0..3)
            .map(|p| {
                let tx = tx.clone();
                tasklet::Builder::new()
                    .name(format!("producer-{p}"))
                    .spawn(move || {
                        for i in 0..10 {
                            tx.send((p, i)).expect("all consumers are gone");
                            log::debug!("producer {p} queued item {i}");
                        }
                    })
                    .expect("spawn producer")
            })
            .collect();
        drop(tx); // only the producers hold senders now

        let consumers: Vec<_> = (0..2)
            .map(|c| {
                let rx = rx.clone();
                tasklet::Builder::new()
                    .name(format!("consumer-{c}"))
                    .spawn(move || {
                        let mut handled = 0;
                        // Ends when every producer has finished and the queue is drained.
                        for (p, i) in &rx {
                            tasklet::sleep(Duration::from_millis(2)); // "work"
                            log::debug!("consumer {c} handled item {i} of producer {p}");
                            handled += 1;
                        }
                        handled
                    })
                    .expect("spawn consumer")
            })
            .collect();
        drop(rx);

        for p in producers {
            p.join().expect("producer failed");
        }
        consumers
            .into_iter()
            .map(|c| c.join().expect("consumer failed"))
            .collect::<Vec<usize>>()
    });
    for (c, n) in totals.iter().enumerate() {
        println!("consumer-{c} handled {n} items");
    }
    println!("total: {}", totals.iter().sum::<usize>());
    assert_eq!(totals.iter().sum::<usize>(), 30);
}
