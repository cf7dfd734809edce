use super::*;
use corosensei::stack::Stack;

/// Held by the tests that change or depend on the process-wide warm limit.
static WARM_LIMIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn warm_limit_lock() -> std::sync::MutexGuard<'static, ()> {
    WARM_LIMIT_LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn slab_count() -> usize {
    POOL.with(|p| p.borrow().classes.iter().map(|c| c.slabs.len()).sum())
}

fn maps_lines() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn reuse_returns_same_address_without_new_slab() {
    let a = TaskletStack::new(64 * 1024).unwrap();
    let slabs = slab_count();
    let top = a.top();
    drop(a);
    for _ in 0..100 {
        let b = TaskletStack::new(64 * 1024).unwrap();
        assert_eq!(b.top(), top);
        drop(b);
    }
    assert_eq!(slab_count(), slabs);
}

#[test]
fn stacks_start_at_different_cache_colours() {
    let stacks: Vec<TaskletStack> = (0..64).map(|_| TaskletStack::new(0).unwrap()).collect();
    let mut colours: Vec<usize> = stacks.iter().map(|s| s.top() - s.base().get()).collect();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() >= 8, "64 stacks, colours {colours:?}");
}

#[test]
fn geometry() {
    let page = page_size();
    let s = TaskletStack::new(100_000).unwrap();
    assert_eq!(s.size(), 100_000usize.div_ceil(page) * page);
    let (lo, hi) = s.guard_range();
    assert_eq!(hi - lo, page);
    assert_eq!(s.limit().get(), lo);
    let colour = s.top() - s.base().get();
    assert!(
        colour < 2048 && colour.is_multiple_of(64),
        "colour {colour}"
    );
    assert_eq!(s.top() - hi, s.size());
    assert_eq!(s.base().get() % corosensei::stack::STACK_ALIGNMENT, 0);
    // The whole usable range is writable.
    // SAFETY: [hi, top) is this stack's usable memory, exclusively owned.
    unsafe { ptr::write_bytes(hi as *mut u8, 0xAB, s.size()) };
}

#[test]
fn size_rounding() {
    let page = page_size();
    assert_eq!(round_stack_size(1).unwrap(), MIN_STACK_SIZE);
    assert_eq!(
        round_stack_size(MIN_STACK_SIZE + 1).unwrap(),
        MIN_STACK_SIZE + page
    );
    assert_eq!(round_stack_size(256 * 1024).unwrap(), 256 * 1024);
    assert_eq!(
        round_stack_size(0).unwrap(),
        round_stack_size(default_stack_size()).unwrap()
    );
    assert!(round_stack_size(usize::MAX).is_err());
    assert_eq!(TaskletStack::new(1).unwrap().size(), MIN_STACK_SIZE);
}

#[test]
fn env_parsing() {
    assert_eq!(parse_size("65536"), Some(65536));
    assert_eq!(parse_size(" 512k "), Some(512 * 1024));
    assert_eq!(parse_size("512K"), Some(512 * 1024));
    assert_eq!(parse_size("2m"), Some(2 << 20));
    assert_eq!(parse_size("2M"), Some(2 << 20));
    for bad in [
        "",
        "k",
        "0",
        "0k",
        "-1",
        "1.5m",
        "12g",
        "abc",
        "1 k",
        "99999999999999999999",
    ] {
        assert_eq!(parse_size(bad), None, "{bad:?}");
    }
}

#[test]
fn many_live_stacks_stay_below_map_count() {
    const N: usize = 100_000;
    let before = maps_lines();
    let mut stacks = Vec::with_capacity(N);
    for _ in 0..N {
        let s = TaskletStack::new(DEFAULT_STACK_SIZE).unwrap();
        // SAFETY: top - 1 is the highest usable byte of this live stack.
        unsafe { ((s.top() - 1) as *mut u8).write_volatile(1) };
        stacks.push(s);
    }
    let after = maps_lines();
    assert!(
        after < before + 20_000,
        "maps grew from {before} to {after} lines"
    );
    for s in &stacks {
        // SAFETY: as above; the stack is still live.
        assert_eq!(unsafe { ((s.top() - 1) as *const u8).read_volatile() }, 1);
    }
}

#[test]
fn cold_stacks_are_zeroed() {
    let _limit = warm_limit_lock();
    // Run on a fresh thread so the (process-wide) limit change and the warm count
    // are not affected by other tests' pools.
    std::thread::spawn(|| {
        let old = pool_limit();
        let size = 64 * 1024;
        let stacks: Vec<_> = (0..8).map(|_| TaskletStack::new(size).unwrap()).collect();
        for s in &stacks {
            let (_, hi) = s.guard_range();
            // SAFETY: [hi, top) is this live stack's usable memory.
            unsafe { ptr::write_bytes(hi as *mut u8, 0x5A, s.size()) };
        }
        let tops: Vec<usize> = stacks.iter().map(|s| s.top()).collect();
        set_pool_limit(2);
        drop(stacks);
        set_pool_limit(old);
        // The six beyond the limit wait for a batch; release them now.
        release_freed();
        let (warm, cold) = POOL.with(|p| {
            let p = p.borrow();
            let c = p.classes.iter().find(|c| c.usable == size).unwrap();
            (c.warm.len(), c.cold.len())
        });
        assert_eq!(warm, 2);
        assert!(cold >= 6);
        assert!(POOL.with(|p| p.borrow().classes.iter().all(|c| c.freed.is_empty())));
        // Reallocate until all eight are back (primed fresh stacks come
        // first): warm ones keep their bytes, released ones read zero.
        let mut again = Vec::new();
        while again
            .iter()
            .filter(|s: &&TaskletStack| tops.contains(&s.top()))
            .count()
            < 8
        {
            assert!(again.len() < 1000, "the freed stacks never came back");
            again.push(TaskletStack::new(size).unwrap());
        }
        let mut zeroed = 0;
        let mut kept = 0;
        for s in again.iter().filter(|s| tops.contains(&s.top())) {
            let (_, hi) = s.guard_range();
            // SAFETY: [hi, top) is this live stack's usable memory.
            let bytes = unsafe { std::slice::from_raw_parts(hi as *const u8, s.size()) };
            if bytes.iter().all(|&b| b == 0) {
                zeroed += 1;
            } else if bytes.iter().all(|&b| b == 0x5A) {
                kept += 1;
            }
        }
        assert_eq!((kept, zeroed), (2, 6));
    })
    .join()
    .unwrap();
}

#[test]
fn slabs_grow_and_freed_stacks_are_released_in_batches() {
    let _limit = warm_limit_lock();
    // A fresh thread: its own pool, warm count starting at zero.
    std::thread::spawn(|| {
        let size = DEFAULT_STACK_SIZE;
        let extra = 2 * RELEASE_BATCH + 5;
        let n = pool_limit() + extra;
        let stacks: Vec<_> = (0..n).map(|_| TaskletStack::new(size).unwrap()).collect();
        for s in &stacks {
            // SAFETY: top - 1 is the highest usable byte of this live stack.
            unsafe { ((s.top() - 1) as *mut u8).write_volatile(7) };
        }
        let (slabs, largest) = POOL.with(|p| {
            let p = p.borrow();
            let c = p.classes.iter().find(|c| c.usable == size).unwrap();
            let stride = size + page_size();
            let largest = c.slabs.iter().map(|s| s.len / stride).max().unwrap();
            (c.slabs.len(), largest)
        });
        // Doubling from 15: 15, 15, 30, ..., 960 hold n (~1,160) stacks.
        assert!(slabs <= 10, "{slabs} slabs for {n} stacks");
        assert!(largest <= MAX_SLAB_STACKS);
        let tops: Vec<usize> = stacks.iter().map(|s| s.top()).collect();
        drop(stacks);
        let (warm, freed, cold) = POOL.with(|p| {
            let p = p.borrow();
            let c = p.classes.iter().find(|c| c.usable == size).unwrap();
            (c.warm.len(), c.freed.len(), c.cold.len())
        });
        assert_eq!(warm, pool_limit());
        // Two full batches were released as they filled; five wait.
        assert_eq!(freed, extra % RELEASE_BATCH);
        assert!(cold >= extra - freed);
        release_freed();
        // Every stack beyond the warm ones reads zero again.
        let released = tops.iter().filter(|&&top| {
            // SAFETY: the slabs stay mapped while the pool lives; the byte
            // is in a free stack's usable memory, which nothing uses.
            unsafe { ((top - 1) as *const u8).read_volatile() == 0 }
        });
        assert_eq!(released.count(), extra);
    })
    .join()
    .unwrap();
}
