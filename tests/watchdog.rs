//! The blocked-dispatcher watchdog: warns about a tasklet that spins, stays
//! silent for one that yields.
//!
//! Log records are captured by a test logger installed once for the binary;
//! each test looks only at records naming its own, uniquely named tasklet,
//! so tests running in parallel do not see each other's warnings.

use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::time::{Duration, Instant};

struct Capture;

static RECORDS: Mutex<Vec<(log::Level, String)>> = Mutex::new(Vec::new());

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        RECORDS
            .lock()
            .unwrap()
            .push((record.level(), record.args().to_string()));
    }
    fn flush(&self) {}
}

/// Runs the tests of this binary one at a time: spinning tests running in
/// parallel on a small machine could starve a dispatcher or the monitor
/// thread of CPU and blur what is measured.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        log::set_logger(&Capture).expect("another logger is installed");
        log::set_max_level(log::LevelFilter::Trace);
    });
}

fn records_naming(name: &str) -> Vec<(log::Level, String)> {
    RECORDS
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m.contains(&format!("'{name}'")))
        .cloned()
        .collect()
}

fn spin(d: Duration) {
    let t = Instant::now();
    let mut x = 0u64;
    while t.elapsed() < d {
        x = std::hint::black_box(x.wrapping_add(1));
    }
}

#[test]
fn warns_about_a_tasklet_that_spins() {
    let _serial = serial();
    install();
    let name = "wd-spinner-300ms";
    tasklet::Config::new()
        .max_blocking(Some(Duration::from_millis(100)))
        .dispatch(move || {
            tasklet::Builder::new()
                .name(name)
                .spawn(|| spin(Duration::from_millis(300)))
                .unwrap()
                .join()
                .unwrap();
        });
    // The monitor thread reports asynchronously: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_secs(5);
    let found = loop {
        let recs = records_naming(name);
        if recs.iter().any(|(_, m)| m.contains("without yielding")) {
            break recs;
        }
        assert!(
            Instant::now() < deadline,
            "no watchdog warning; got {recs:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let (level, msg) = found
        .iter()
        .find(|(_, m)| m.contains("without yielding"))
        .unwrap();
    assert_eq!(*level, log::Level::Warn);
    assert!(msg.contains("yield_now"), "{msg}");
    assert!(msg.contains("unblock"), "{msg}");
    // It says how long: between the limit and the whole spin.
    let ms: u64 = msg
        .split(" for ")
        .nth(1)
        .and_then(|s| s.split(" ms").next())
        .and_then(|s| s.parse().ok())
        .expect("duration in the message");
    assert!((100..=300).contains(&ms), "{msg}");
    // Once per episode.
    assert_eq!(
        found
            .iter()
            .filter(|(_, m)| m.contains("without yielding"))
            .count(),
        1
    );
}

#[test]
fn silent_for_a_tasklet_that_yields() {
    let _serial = serial();
    install();
    let name = "wd-polite-yielder";
    tasklet::Config::new()
        .max_blocking(Some(Duration::from_millis(100)))
        .dispatch(move || {
            tasklet::Builder::new()
                .name(name)
                .spawn(|| {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_millis(300) {
                        spin(Duration::from_millis(2));
                        tasklet::yield_now();
                    }
                })
                .unwrap()
                .join()
                .unwrap();
        });
    // Give the monitor more than a sampling period to (wrongly) report.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(records_naming(name), []);
}

#[test]
fn disabled_by_config() {
    let _serial = serial();
    install();
    let name = "wd-spinner-unwatched";
    tasklet::Config::new().max_blocking(None).dispatch(move || {
        tasklet::Builder::new()
            .name(name)
            .spawn(|| spin(Duration::from_millis(250)))
            .unwrap()
            .join()
            .unwrap();
    });
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(records_naming(name), []);
}

#[test]
fn a_blocked_dispatcher_idling_in_the_hub_is_not_reported() {
    let _serial = serial();
    install();
    // The main tasklet sleeps (the thread waits in epoll) for longer than the
    // limit: that is idling, not blocking.
    let name = "wd-sleeper";
    tasklet::Config::new()
        .max_blocking(Some(Duration::from_millis(50)))
        .dispatch(move || {
            tasklet::Builder::new()
                .name(name)
                .spawn(|| tasklet::sleep(Duration::from_millis(250)))
                .unwrap()
                .join()
                .unwrap();
        });
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(records_naming(name), []);
}
