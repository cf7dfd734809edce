//! `tasklet::fs`: std::fs in shape, on the offload pool, kill-safe.

use std::cell::Cell;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tasklet::fs::{self, File, OpenOptions};

/// A scratch directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "tasklet-fs-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Deterministic pseudo-random numbers (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}

fn write_std(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

#[test]
fn whole_file_functions_and_directories() {
    let dir = TempDir::new();
    let d = dir.0.clone();
    tasklet::dispatch(move || {
        fs::create_dir_all(d.join("x/y/z")).unwrap();
        assert!(fs::metadata(d.join("x/y/z")).unwrap().is_dir());
        fs::write(d.join("x/a.txt"), "héllo").unwrap();
        assert_eq!(fs::read(d.join("x/a.txt")).unwrap(), "héllo".as_bytes());
        assert_eq!(fs::read_to_string(d.join("x/a.txt")).unwrap(), "héllo");
        assert_eq!(fs::metadata(d.join("x/a.txt")).unwrap().len(), 6);
        assert!(fs::exists(d.join("x/a.txt")).unwrap());

        fs::rename(d.join("x/a.txt"), d.join("x/y/b.txt")).unwrap();
        assert!(!fs::exists(d.join("x/a.txt")).unwrap());
        assert_eq!(fs::copy(d.join("x/y/b.txt"), d.join("c.txt")).unwrap(), 6);
        fs::remove_file(d.join("x/y/b.txt")).unwrap();
        let e = fs::remove_file(d.join("x/y/b.txt")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);

        // More entries than one batch of read_dir.
        for i in 0..600 {
            fs::write(d.join(format!("x/y/z/f{i:03}")), i.to_string()).unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(d.join("x/y/z"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        let want: Vec<String> = (0..600).map(|i| format!("f{i:03}")).collect();
        assert_eq!(names, want);

        fs::write(d.join("bad.txt"), [0xff, 0xfe, b'a']).unwrap();
        let e = fs::read_to_string(d.join("bad.txt")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        let e = fs::read_dir(d.join("missing")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        let e = File::open(d.join("missing")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        let e = File::create_new(d.join("c.txt")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists);

        fs::remove_dir_all(d.join("x")).unwrap();
        assert!(!fs::exists(d.join("x")).unwrap());
    });
}

/// Reads `path` through a tasklet `File` in chunks of `chunk` bytes.
fn read_in_chunks(path: &Path, chunk: usize) -> Vec<u8> {
    let mut f = File::open(path).unwrap();
    let mut out = Vec::new();
    let mut buf = vec![0u8; chunk];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return out;
        }
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn sequential_reads_of_any_size_return_the_file() {
    let dir = TempDir::new();
    let path = dir.join("data");
    let data = pattern(5 * 1024 * 1024 + 123);
    write_std(&path, &data);
    let check = || {
        for chunk in [1, 100, 4096, 65536, 1 << 20, 16 << 20] {
            assert!(read_in_chunks(&path, chunk) == data, "chunk {chunk}");
        }
        let mut all = Vec::new();
        let mut f = File::open(&path).unwrap();
        let mut head = [0u8; 10];
        f.read_exact(&mut head).unwrap();
        f.read_to_end(&mut all).unwrap();
        assert_eq!(head, data[..10]);
        assert!(all == data[10..]);
        let mut s = String::new();
        File::open(&path)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap_err();
    };
    tasklet::dispatch(check);
    check();
}

/// One step of the model test.
#[derive(Debug, Clone, Copy)]
enum Op {
    Read(usize),
    Write(usize, u8),
    Seek(SeekFrom),
    Flush,
    SetLen(u64),
}

fn random_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|_| match rng.below(10) {
            // Odd seeds: long sequential runs of reads (full read-ahead and
            // prefetch), broken up now and then.
            _ if seed % 2 == 1 && rng.below(12) != 0 => Op::Read(1 + rng.below(700_000) as usize),
            0..=3 => Op::Read(1 + rng.below(200_000) as usize),
            4..=5 => Op::Write(1 + rng.below(100_000) as usize, rng.next() as u8),
            6 => Op::Seek(SeekFrom::Start(rng.below(13_000_000))),
            7 => Op::Seek(SeekFrom::Current(rng.below(200_000) as i64 - 100_000)),
            8 => {
                if rng.below(4) == 0 {
                    Op::SetLen(rng.below(13_000_000))
                } else {
                    Op::Seek(SeekFrom::End(-(rng.below(100_000) as i64)))
                }
            }
            _ => Op::Flush,
        })
        .collect()
}

/// Applies `ops` to any file type, recording every result.
fn apply<F: Read + Write + Seek>(
    f: &mut F,
    ops: &[Op],
    set_len: impl Fn(&mut F, u64),
) -> Vec<String> {
    let mut log = Vec::new();
    for op in ops {
        let r = match *op {
            Op::Read(n) => {
                let mut buf = vec![0u8; n];
                // read_exact-like but tolerant of EOF: compare bytes actually returned.
                let mut got = 0;
                while got < n {
                    match f.read(&mut buf[got..]).unwrap() {
                        0 => break,
                        k => got += k,
                    }
                }
                let sum: u64 = buf[..got].iter().map(|&b| u64::from(b)).sum();
                format!("read {got} sum {sum}")
            }
            Op::Write(n, b) => {
                f.write_all(&vec![b; n]).unwrap();
                format!("write {n}")
            }
            Op::Seek(p) => match f.seek(p) {
                Ok(pos) => format!("seek {pos}"),
                Err(e) => format!("seek error {:?}", e.kind()),
            },
            Op::Flush => {
                f.flush().unwrap();
                "flush".to_string()
            }
            Op::SetLen(len) => {
                set_len(f, len);
                format!("set_len {len}")
            }
        };
        log.push(r);
    }
    log
}

#[test]
fn random_reads_writes_and_seeks_match_std() {
    let dir = TempDir::new();
    let initial = pattern(12_000_000);
    for seed in [1u64, 2, 3, 0xdead_beef, 5, 7] {
        let ops = random_ops(seed, 300);
        let (std_path, ours_path, plain_path) = (
            dir.join(&format!("std{seed}")),
            dir.join(&format!("ours{seed}")),
            dir.join(&format!("plain{seed}")),
        );
        for p in [&std_path, &ours_path, &plain_path] {
            write_std(p, &initial);
        }
        let mut sf = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&std_path)
            .unwrap();
        let want = apply(&mut sf, &ops, |f, len| f.set_len(len).unwrap());
        drop(sf);

        let (o, ops2) = (ours_path.clone(), ops.clone());
        let got = tasklet::dispatch(move || {
            let mut f = OpenOptions::new().read(true).write(true).open(&o).unwrap();
            apply(&mut f, &ops2, |f, len| f.set_len(len).unwrap())
        });
        assert_eq!(got, want, "seed {seed} in a dispatcher");
        assert!(
            std::fs::read(&ours_path).unwrap() == std::fs::read(&std_path).unwrap(),
            "seed {seed}: file contents differ"
        );

        // Outside a dispatcher.
        let mut f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&plain_path)
            .unwrap();
        let got = apply(&mut f, &ops, |f, len| f.set_len(len).unwrap());
        drop(f);
        assert_eq!(got, want, "seed {seed} outside a dispatcher");
        assert!(std::fs::read(&plain_path).unwrap() == std::fs::read(&std_path).unwrap());
    }
}

#[test]
fn interrupted_reads_lose_no_data() {
    let dir = TempDir::new();
    let path = dir.join("data");
    let data = pattern(6 * 1024 * 1024 + 1);
    write_std(&path, &data);
    let p = path.clone();
    let d = data.clone();
    let (killed, timed_out) = tasklet::dispatch(move || {
        let f = Rc::new(std::cell::RefCell::new(File::open(&p).unwrap()));
        let (mut killed, mut timed_out) = (0u32, 0u32);
        let mut i = 0u64;
        for pass in 0..10 {
            f.borrow_mut().seek(SeekFrom::Start(0)).unwrap();
            let mut got = Vec::new();
            loop {
                i += 1;
                let len = 1 + (i as usize * 7919) % 400_000;
                let chunk: Option<Vec<u8>> = if i.is_multiple_of(2) {
                    // A helper starts a read and is killed while it waits for
                    // the offloaded call (or gets buffered data at once).
                    let f2 = f.clone();
                    let h = tasklet::spawn(move || {
                        let mut buf = vec![0u8; len];
                        let n = f2.borrow_mut().read(&mut buf).unwrap();
                        buf.truncate(n);
                        buf
                    });
                    tasklet::yield_now();
                    h.kill();
                    match h.join() {
                        Ok(buf) => Some(buf),
                        Err(e) => {
                            assert!(e.is_killed());
                            killed += 1;
                            None
                        }
                    }
                } else {
                    // Tiny timeouts (the hub rounds them up to 1 ms).
                    let limit = Duration::from_micros(10 + (i * 37) % 1000);
                    let mut buf = vec![0u8; len];
                    match tasklet::timeout(limit, || f.borrow_mut().read(&mut buf)) {
                        Ok(r) => {
                            buf.truncate(r.unwrap());
                            Some(buf)
                        }
                        Err(_) => {
                            timed_out += 1;
                            None
                        }
                    }
                };
                match chunk {
                    Some(c) if c.is_empty() => break,
                    Some(c) => got.extend_from_slice(&c),
                    None => {}
                }
            }
            assert_eq!(got.len(), d.len(), "pass {pass}");
            assert!(got == d, "pass {pass}: data lost or repeated");
        }
        (killed, timed_out)
    });
    // Reads that needed a hop were killed for certain.
    assert!(killed > 0);
    eprintln!("{killed} reads killed, {timed_out} timed out");
}

#[test]
fn killed_tasklets_leave_the_file_consistent() {
    let dir = TempDir::new();
    let path = dir.join("data");
    let data = pattern(8 * 1024 * 1024);
    write_std(&path, &data);
    let p = path.clone();
    let out = dir.join("out");
    let o = out.clone();
    let accepted = tasklet::dispatch(move || {
        // A tasklet killed in the middle of reads into a buffer on its stack.
        for _ in 0..20 {
            let p = p.clone();
            let h = tasklet::spawn(move || {
                let mut f = File::open(&p).unwrap();
                let mut stack_buf = [0u8; 64 * 1024];
                loop {
                    if f.read(&mut stack_buf).unwrap() == 0 {
                        break;
                    }
                }
            });
            tasklet::sleep(Duration::from_micros(300));
            h.kill();
            let _ = h.join();
        }
        // Writes interrupted by timeouts: exactly the accepted bytes land.
        let mut f = File::create(&o).unwrap();
        let chunk = vec![7u8; 256 * 1024];
        let mut accepted = 0usize;
        for i in 0..200u64 {
            let limit = Duration::from_micros(10 + (i * 53) % 300);
            if let Ok(r) = tasklet::timeout(limit, || f.write(&chunk)) {
                accepted += r.unwrap();
            }
        }
        f.flush().unwrap();
        accepted
    });
    let written = std::fs::read(&out).unwrap();
    assert_eq!(written.len(), accepted);
    assert!(written.iter().all(|&b| b == 7));
}

#[test]
fn drop_waits_for_queued_writes_and_flush_reports_errors() {
    let dir = TempDir::new();
    let path = dir.join("out");
    let p = path.clone();
    let data = pattern(8 * 1024 * 1024 + 5);
    let d = data.clone();
    tasklet::dispatch(move || {
        let mut f = File::create(&p).unwrap();
        for chunk in d.chunks(4096) {
            f.write_all(chunk).unwrap();
        }
        drop(f);
        // Visible to anyone as soon as the File is gone, as with std.
        assert!(std::fs::read(&p).unwrap() == d);

        // A write the OS refuses (the file is read-only): reported by
        // a later call — at the latest by flush — never lost silently.
        let mut ro = File::open(&p).unwrap();
        let first = ro.write(b"nope");
        let err = match first {
            Err(e) => e,
            Ok(_) => ro.flush().unwrap_err(),
        };
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        // Reported once; the file works on.
        ro.flush().unwrap();
        let mut head = [0u8; 4];
        ro.read_exact(&mut head).unwrap();
        assert_eq!(head, data[..4]);
    });
}

#[test]
fn a_file_moves_to_a_plain_thread_with_writes_queued() {
    let dir = TempDir::new();
    let path = dir.join("out");
    let p = path.clone();
    let f = tasklet::dispatch(move || {
        let mut f = File::create(&p).unwrap();
        for _ in 0..1000 {
            f.write_all(&[b'x'; 1000]).unwrap();
        }
        f
    });
    let h = std::thread::spawn(move || {
        let mut f = f;
        f.write_all(b"end").unwrap();
        f.flush().unwrap();
        f.metadata().unwrap().len()
    });
    assert_eq!(h.join().unwrap(), 1_000_003);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 1_000_003);
}

#[test]
fn ticker_stays_on_schedule_while_files_are_read_and_written() {
    let dir = TempDir::new();
    let src = dir.join("src");
    write_std(&src, &pattern(32 * 1024 * 1024));
    let dst = dir.join("dst");
    let big = dir.join("big");
    write_std(&big, &pattern(64 << 20));
    let (s, d) = (src.clone(), dst.clone());
    let (ticks, worst, elapsed) = tasklet::dispatch(move || {
        let stop = Rc::new(Cell::new(false));
        let st = stop.clone();
        let ticker = tasklet::spawn(move || {
            let (mut n, mut worst, mut last) = (0u32, Duration::ZERO, Instant::now());
            while !st.get() {
                tasklet::sleep(Duration::from_millis(10));
                worst = worst.max(last.elapsed());
                last = Instant::now();
                n += 1;
            }
            (n, worst)
        });
        let start = Instant::now();
        // Read 64 MiB in 4 KiB pieces with 40 us of work per piece: 10 ms
        // per megabyte, long enough for the next megabyte to be prefetched
        // before it is needed, so reads never park; only the file's
        // periodic yield lets the ticker run during these 0.6 s.
        let mut r = File::open(&big).unwrap();
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            let n = r.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
            let t = Instant::now();
            while t.elapsed() < Duration::from_micros(40) {
                std::hint::spin_loop();
            }
        }
        assert_eq!(total, 64 << 20);
        // Copy in 4 KiB pieces, three times over.
        for _ in 0..3 {
            let mut r = File::open(&s).unwrap();
            let mut w = File::create(&d).unwrap();
            let mut buf = [0u8; 4096];
            loop {
                let n = r.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                w.write_all(&buf[..n]).unwrap();
            }
            w.flush().unwrap();
        }
        let elapsed = start.elapsed();
        stop.set(true);
        let (n, worst) = ticker.join().unwrap();
        (n, worst, elapsed)
    });
    assert!(std::fs::read(&dst).unwrap() == std::fs::read(&src).unwrap());
    assert!(
        worst < Duration::from_millis(250),
        "ticker gap {worst:?} ({ticks} ticks in {elapsed:?})"
    );
}
