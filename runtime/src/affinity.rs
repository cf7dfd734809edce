//! CPU affinity of worker threads: the CPUs this process may run on,
//! pinning a worker to one ([`Runtime::pin_to_cores`](crate::Runtime::pin_to_cores)),
//! and the placement of unpinned workers ([`Home`]).
//!
//! # Why unpinned workers have a home CPU
//!
//! Left alone, the kernel often puts two workers of a
//! [`Runtime`](crate::Runtime) on one CPU while another CPU stays idle:
//! new threads start next to their parent, and while workers hand work to
//! each other through kernel wake-ups (their hubs asleep) the scheduler
//! pulls a woken thread onto its waker's CPU, since one of the two always
//! sleeps — a placement it keeps as long as neither is busy for long. Then
//! a worker's idle spin runs on the CPU its partner needs: the spin gate
//! (`hub::idle`) sees the CPU oversubscribed and turns spinning off, the
//! workers go on waking each other through the kernel, which keeps them
//! together. Measured here (2 CPUs, a cross-worker channel round trip):
//! 7 of 15 processes stayed in that state, at 1.8–14 µs per round trip,
//! where workers on CPUs of their own take about 1 µs (docs/benchmarks.md,
//! "Workers kept apart").
//!
//! So each unpinned worker of a runtime with no more workers than allowed
//! CPUs gets one of them as its home, starts there, and moves back there
//! when it is about to spin somewhere else (at most once per
//! [`Home::MIN_INTERVAL`]). Moving is `sched_setaffinity` to the home CPU
//! alone, which migrates the thread at once, followed by the thread's
//! allowed set as it was just before: the kernel stays free to move the
//! worker whenever it wants (a busy home CPU), which is what keeps this a
//! placement hint and not pinning. A thread whose allowed set no longer
//! holds its home (`taskset -p` on it) stops going home.

use std::io;
use std::time::Duration;

/// A set of CPUs (`cpu_set_t`).
#[derive(Clone)]
pub(crate) struct CpuSet(libc::cpu_set_t);

impl CpuSet {
    /// The CPUs the calling thread may run on (`sched_getaffinity`).
    pub(crate) fn allowed() -> io::Result<CpuSet> {
        // SAFETY: an all-zero `cpu_set_t` is a valid, empty CPU set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: the pointer and size describe `set`, which the call fills.
        let r =
            unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(CpuSet(set))
    }

    /// The set holding `cpu` alone.
    fn only(cpu: usize) -> CpuSet {
        // SAFETY: an all-zero `cpu_set_t` is a valid, empty CPU set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `CPU_SET` only writes inside the set (an index beyond it
        // panics); callers pass CPUs read from an allowed set.
        unsafe { libc::CPU_SET(cpu, &mut set) };
        CpuSet(set)
    }

    /// Whether `cpu` is in the set.
    fn contains(&self, cpu: usize) -> bool {
        // SAFETY: `CPU_ISSET` only reads inside the set (an index beyond it
        // panics, so check the bound first).
        cpu < libc::CPU_SETSIZE as usize && unsafe { libc::CPU_ISSET(cpu, &self.0) }
    }

    /// The CPUs in the set, in order.
    pub(crate) fn cpus(&self) -> Vec<usize> {
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` is below CPU_SETSIZE, inside the set; it only reads.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &self.0) })
            .collect()
    }

    /// Restricts the calling thread to this set (`sched_setaffinity`); a
    /// thread outside it migrates before the call returns.
    fn apply(&self) -> io::Result<()> {
        // SAFETY: the pointer and size describe `self.0`; pid 0 is this thread.
        let r =
            unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.0) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

/// Where a worker thread runs.
pub(crate) enum Place {
    /// Pinned to this CPU ([`Runtime::pin_to_cores`](crate::Runtime::pin_to_cores)).
    Pinned(usize),
    /// Unpinned, with a home CPU it starts on and returns to before it
    /// spins.
    Home(Home),
    /// Wherever the kernel puts it.
    Free,
}

/// Where each of the `n` workers of a runtime runs: pinned one per
/// allowed CPU (wrapping around) if `pin`; else, with the idle `spin` on
/// and no more workers than allowed CPUs, each with a home CPU; else
/// wherever the kernel puts them.
pub(crate) fn places(n: usize, pin: bool, spin: bool) -> Vec<Place> {
    let free = || (0..n).map(|_| Place::Free).collect();
    let cpus = match CpuSet::allowed() {
        Ok(set) => set.cpus(),
        Err(e) => {
            if pin {
                log::warn!("tasklet::Runtime: cannot read the CPU affinity ({e}); not pinning");
            }
            return free();
        }
    };
    if cpus.is_empty() {
        return free();
    }
    if pin {
        return (0..n)
            .map(|i| Place::Pinned(cpus[i % cpus.len()]))
            .collect();
    }
    // Homes keep spinning workers apart; with more workers than CPUs, or
    // without the spin, the kernel places them.
    if n > 1 && n <= cpus.len() && spin {
        return cpus
            .iter()
            .take(n)
            .map(|&cpu| Place::Home(Home::new(cpu)))
            .collect();
    }
    free()
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_current_thread(cpu: usize) -> io::Result<()> {
    CpuSet::only(cpu).apply()
}

/// The CPU the calling thread runs on (`sched_getcpu`, a vDSO call), if
/// the kernel tells.
fn current_cpu() -> Option<usize> {
    // SAFETY: no arguments, no memory accessed.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}

/// An unpinned worker's home CPU (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Home {
    cpu: usize,
}

impl Home {
    /// Moves home at most this often: if the kernel keeps moving the
    /// worker away (its home CPU is busy), the worker does not fight it.
    pub(crate) const MIN_INTERVAL: Duration = Duration::from_millis(10);

    /// A home on `cpu`.
    pub(crate) fn new(cpu: usize) -> Home {
        Home { cpu }
    }

    /// The home CPU.
    pub(crate) fn cpu(&self) -> usize {
        self.cpu
    }

    /// Whether the calling thread runs elsewhere (`false` if the kernel
    /// does not say).
    pub(crate) fn away(&self) -> bool {
        current_cpu().is_some_and(|c| c != self.cpu)
    }

    /// Moves the calling thread to its home CPU, leaving it free to run on
    /// every CPU it was allowed before. `Ok(false)`: the home is not among
    /// them any more, so the thread stays where it is.
    pub(crate) fn go(&self) -> io::Result<bool> {
        let allowed = CpuSet::allowed()?;
        if !allowed.contains(self.cpu) {
            return Ok(false);
        }
        CpuSet::only(self.cpu).apply()?;
        allowed.apply()?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinning_moves_the_thread_and_going_home_leaves_it_unpinned() {
        let allowed = CpuSet::allowed().unwrap();
        let cpus = allowed.cpus();
        assert!(!cpus.is_empty());
        let last = *cpus.last().unwrap();
        std::thread::spawn(move || {
            // Pinned: the kernel must have moved the thread there.
            pin_current_thread(last).unwrap();
            assert_eq!(CpuSet::allowed().unwrap().cpus(), [last]);
            assert_eq!(current_cpu(), Some(last));
            // Home: moved there, then free to run anywhere allowed again.
            let home = Home::new(cpus[0]);
            // Not among the pinned thread's CPUs (unless it is the one).
            assert_eq!(home.go().unwrap(), cpus[0] == last);
            assert_eq!(CpuSet::allowed().unwrap().cpus(), [last]);
            allowed.apply().unwrap();
            assert!(home.go().unwrap());
            assert_eq!(CpuSet::allowed().unwrap().cpus(), cpus);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn workers_are_pinned_homed_or_free() {
        let cpus = CpuSet::allowed().unwrap().cpus();
        let n = cpus.len();
        let pinned: Vec<usize> = places(n + 1, true, true)
            .into_iter()
            .map(|p| match p {
                Place::Pinned(c) => c,
                _ => panic!("pin_to_cores pins every worker"),
            })
            .collect();
        // Wraps around when there are more workers than CPUs.
        assert_eq!(pinned[..n], cpus[..]);
        assert_eq!(pinned[n], cpus[0]);
        if n > 1 {
            let homes: Vec<usize> = places(n, false, true)
                .into_iter()
                .map(|p| match p {
                    Place::Home(h) => h.cpu(),
                    _ => panic!("one home per CPU"),
                })
                .collect();
            assert_eq!(homes, cpus);
        }
        // More workers than CPUs, one worker, or no spin: the kernel places.
        for (w, spin) in [(n + 1, true), (1, true), (n, false)] {
            assert!(places(w, false, spin)
                .iter()
                .all(|p| matches!(p, Place::Free)));
        }
    }

    #[test]
    fn a_home_outside_the_allowed_cpus_is_not_visited() {
        let allowed = CpuSet::allowed().unwrap();
        let outside = allowed.cpus().last().unwrap() + 1;
        std::thread::spawn(move || {
            assert!(!Home::new(outside).go().unwrap());
            assert!(!Home::new(usize::MAX).go().unwrap());
            assert_eq!(CpuSet::allowed().unwrap().cpus(), allowed.cpus());
        })
        .join()
        .unwrap();
    }
}
