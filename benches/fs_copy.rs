//! `tasklet::fs` throughput under a live dispatcher.
//!
//! Copies a 256 MiB file cooperatively while 1,000 tasklets each keep a
//! 10 ms ticker, and compares the copy's throughput with `std::fs::copy` on
//! a plain thread, measured in the same run. Passes are interleaved (each
//! pass runs every variant once) and the spread over passes is reported.
//!
//! Variants:
//! - `std::fs::copy` on a plain thread (the peer: `copy_file_range`, in the kernel);
//! - `File` read/write loop in 64 KiB pieces, in a tasklet;
//! - `std::io::copy` between two `File`s (8 KiB pieces), in a tasklet;
//! - `tasklet::fs::copy` (std's copy on the offload pool), in a tasklet.
//!
//! For each tasklet variant the tickers' lateness (how long after its
//! deadline each tick ran) is reported as p50 / p99 / max over all ticks
//! taken during the copy; the baseline row is the tickers with no copy.
//!
//! ```text
//! cargo bench --bench fs_copy            # 3 passes
//! FS_COPY_PASSES=5 FS_COPY_MIB=256 cargo bench --bench fs_copy
//! ```
//! The files live in `/dev/shm` (tmpfs: the page cache alone, no disk
//! writeback from this or other processes in the figures) unless
//! `FS_COPY_DIR` names another directory.

use std::cell::{Cell, RefCell};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, Instant};

const TICKERS: usize = 1000;
const TICK: Duration = Duration::from_millis(10);

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy)]
enum Variant {
    Std,
    Chunks64K,
    IoCopy,
    FsCopy,
    Idle,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Std => "std::fs::copy, plain thread",
            Variant::Chunks64K => "File read/write, 64 KiB pieces",
            Variant::IoCopy => "io::copy(File, File), 8 KiB pieces",
            Variant::FsCopy => "tasklet::fs::copy",
            Variant::Idle => "tickers only, no copy (1 s)",
        }
    }
}

struct Run {
    secs: f64,
    /// CPU seconds the whole process used meanwhile (all threads).
    cpu: f64,
    /// Lateness of every tick during the run, in microseconds (sorted).
    late_us: Vec<u64>,
}

/// User + system CPU seconds used by the process so far.
fn cpu_now() -> f64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, exclusively borrowed rusage.
    let r = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(r, 0);
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn copy_64k(src: &Path, dst: &Path) -> u64 {
    let mut r = tasklet::fs::File::open(src).unwrap();
    let mut w = tasklet::fs::File::create(dst).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        w.write_all(&buf[..n]).unwrap();
        total += n as u64;
    }
    w.flush().unwrap();
    total
}

fn run(v: Variant, src: &Path, dst: &Path, len: u64) -> Run {
    let _ = std::fs::remove_file(dst);
    if let Variant::Std = v {
        let (s, d) = (src.to_path_buf(), dst.to_path_buf());
        let cpu0 = cpu_now();
        let t = std::thread::spawn(move || {
            let start = Instant::now();
            let n = std::fs::copy(&s, &d).unwrap();
            (start.elapsed(), n)
        });
        let (el, n) = t.join().unwrap();
        assert_eq!(n, len);
        return Run {
            secs: el.as_secs_f64(),
            cpu: cpu_now() - cpu0,
            late_us: Vec::new(),
        };
    }
    let (s, d) = (src.to_path_buf(), dst.to_path_buf());
    tasklet::dispatch(move || {
        let stop = Rc::new(Cell::new(false));
        let late = Rc::new(RefCell::new(Vec::with_capacity(TICKERS * 400)));
        let tickers: Vec<_> = (0..TICKERS)
            .map(|i| {
                let (stop, late) = (stop.clone(), late.clone());
                tasklet::spawn(move || {
                    // Spread the deadlines over the 10 ms period.
                    let mut next = Instant::now() + TICK * (i as u32) / TICKERS as u32;
                    while !stop.get() {
                        next += TICK;
                        tasklet::sleep_until(next);
                        let l = Instant::now().saturating_duration_since(next);
                        late.borrow_mut().push(l.as_micros() as u64);
                    }
                })
            })
            .collect();
        // Let every ticker arm its first timer.
        tasklet::sleep(TICK * 2);
        late.borrow_mut().clear();
        let cpu0 = cpu_now();
        let start = Instant::now();
        let n = match v {
            Variant::Chunks64K => copy_64k(&s, &d),
            Variant::IoCopy => {
                let mut r = tasklet::fs::File::open(&s).unwrap();
                let mut w = tasklet::fs::File::create(&d).unwrap();
                let n = std::io::copy(&mut r, &mut w).unwrap();
                w.flush().unwrap();
                n
            }
            Variant::FsCopy => tasklet::fs::copy(&s, &d).unwrap(),
            Variant::Idle => {
                tasklet::sleep(Duration::from_secs(1));
                len
            }
            Variant::Std => unreachable!(),
        };
        let secs = start.elapsed().as_secs_f64();
        let cpu = cpu_now() - cpu0;
        assert_eq!(n, len);
        stop.set(true);
        let mut late_us = std::mem::take(&mut *late.borrow_mut());
        for t in tickers {
            t.join().unwrap();
        }
        late_us.sort_unstable();
        Run { secs, cpu, late_us }
    })
}

fn pct(v: &[u64], p: f64) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    // `cargo bench` passes `--bench`; anything else (e.g. a filter) is ignored.
    let passes = env_usize("FS_COPY_PASSES", 3);
    let mib = env_usize("FS_COPY_MIB", 256);
    let len = (mib as u64) << 20;
    // tmpfs by default: the page cache alone, so the disk (and other
    // processes' writeback on a shared machine) does not drown the runtime's
    // share. FS_COPY_DIR=/some/disk/dir measures a real filesystem.
    let base = std::env::var_os("FS_COPY_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let shm = PathBuf::from("/dev/shm");
            if shm.is_dir() {
                shm
            } else {
                std::env::temp_dir()
            }
        });
    let dir: PathBuf = base.join(format!("tasklet-fs-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("src");
    let dst = dir.join("dst");
    {
        let mut f = std::fs::File::create(&src).unwrap();
        let block: Vec<u8> = (0..1 << 20)
            .map(|i: u32| (i.wrapping_mul(2654435761) >> 24) as u8)
            .collect();
        for _ in 0..mib {
            f.write_all(&block).unwrap();
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "fs_copy: {mib} MiB in {}, {passes} passes, {TICKERS} tickers of {} ms; load average at start: {}",
        dir.display(),
        TICK.as_millis(),
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
    );
    let variants = [
        Variant::Std,
        Variant::Chunks64K,
        Variant::IoCopy,
        Variant::FsCopy,
        Variant::Idle,
    ];
    let mut results: Vec<Vec<Run>> = variants.iter().map(|_| Vec::new()).collect();
    for pass in 0..passes {
        for (i, &v) in variants.iter().enumerate() {
            let r = run(v, &src, &dst, len);
            let std_secs = if i == 0 {
                r.secs
            } else {
                results[0][pass].secs
            };
            let ticks = if r.late_us.is_empty() {
                String::new()
            } else {
                format!(
                    "  tick lateness p50 {} us  p99 {} us  max {} us",
                    pct(&r.late_us, 0.5),
                    pct(&r.late_us, 0.99),
                    r.late_us.last().copied().unwrap_or(0)
                )
            };
            if matches!(v, Variant::Idle) {
                println!(
                    "pass {pass}: {:<38} {:.2} CPU-s/s{ticks}",
                    v.name(),
                    r.cpu / r.secs
                );
            } else {
                println!(
                    "pass {pass}: {:<38} {:>5.0} MiB/s  x{:.2} of std  {:.3} CPU-s{ticks}",
                    v.name(),
                    mib as f64 / r.secs,
                    std_secs / r.secs,
                    r.cpu
                );
            }
            results[i].push(r);
        }
    }
    let median_spread = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    // The tickers' own CPU rate, taken out of the tasklet variants' CPU.
    let idle = variants.len() - 1;
    let (ticker_rate, _, _) = median_spread(results[idle].iter().map(|r| r.cpu / r.secs).collect());
    println!(
        "summary: median [min - max] over passes; CPU = process CPU-seconds during the copy \
         (tasklet variants: minus the tickers' {ticker_rate:.2} CPU-s/s)"
    );
    for (i, &v) in variants.iter().enumerate().take(idle) {
        let (rate, rate_lo, rate_hi) =
            median_spread(results[i].iter().map(|r| mib as f64 / r.secs).collect());
        let (ratio, ratio_lo, ratio_hi) = median_spread(
            results[i]
                .iter()
                .zip(&results[0])
                .map(|(r, s)| s.secs / r.secs)
                .collect(),
        );
        let (cpu, cpu_lo, cpu_hi) = median_spread(
            results[i]
                .iter()
                .map(|r| {
                    if i == 0 {
                        r.cpu
                    } else {
                        (r.cpu - ticker_rate * r.secs).max(0.0)
                    }
                })
                .collect(),
        );
        let ticks = if i == 0 {
            String::new()
        } else {
            let (p99, _, _) = median_spread(
                results[i]
                    .iter()
                    .map(|r| pct(&r.late_us, 0.99) as f64)
                    .collect(),
            );
            let max = results[i]
                .iter()
                .filter_map(|r| r.late_us.last().copied())
                .max()
                .unwrap_or(0);
            format!("  tick p99 {p99:.0} us, max {max} us")
        };
        println!(
            "  {:<38} {rate:>5.0} MiB/s [{rate_lo:.0} - {rate_hi:.0}]  x{ratio:.2} [{ratio_lo:.2} - {ratio_hi:.2}] of std  \
             CPU {cpu:.3} s [{cpu_lo:.3} - {cpu_hi:.3}]{ticks}",
            v.name()
        );
    }
    let (p99, _, _) = median_spread(
        results[idle]
            .iter()
            .map(|r| pct(&r.late_us, 0.99) as f64)
            .collect(),
    );
    println!("  {:<38} tick p99 {p99:.0} us", variants[idle].name());
    let _ = std::fs::remove_dir_all(&dir);
}
