//! Running a plan on the engine's threads with them kept awake.
//!
//! tract splits a threaded operator (matrix products, long element-wise chains, softmax) over a
//! rayon pool, one dispatch per operator, about a hundred per text, each a few tens of
//! microseconds of work. Two costs made a second thread slower than one (built-in int8 student,
//! 64 tokens, this 2-core host: 5.1–5.4 ms on one thread, 4.9–5.9 ms on two; with [`run_hot`]
//! 3.6–4.2 ms on two, docs/performance.md "Threads"):
//!
//! - Called from outside the pool, every dispatch is an injection: wake a worker, then put the
//!   caller to sleep until the pool is done. [`run_hot`] runs the whole plan on a worker, so a
//!   dispatch is split where it is and the caller computes a share itself.
//! - Between operators the other workers go to sleep (rayon parks an idle worker after a few
//!   dozen fruitless looks for work), and waking one costs about as much as the share it would
//!   take, more in a virtual machine. While the plan runs, [`run_hot`] keeps each other worker in
//!   a loop that takes work the moment it exists (`yield_now`) and otherwise spins, handing the
//!   core to the system every few dozen idle looks; the loops end with the run. No more workers
//!   spin than there are other cores. onnxruntime's pool spins the same way between operators.
//!
//! Written here because neither rayon nor tract has a setting for it: rayon's sleep policy is
//! fixed, tract's executor is a plain rayon pool.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rayon::{ThreadPool, Yield};

/// The spinners are being gathered: no job of the run exists yet.
const GATHERING: usize = 0;
/// The run has started: a spinner that arrives now is late and returns.
const RUNNING: usize = 1;
/// The run is over: spinners return.
const DONE: usize = 2;

/// How long the run waits for the other workers to start spinning before it starts without them
/// (a worker the system does not schedule in time helps through tract's own wake-ups instead).
const GATHER_TIMEOUT: Duration = Duration::from_millis(2);

struct Run {
    phase: AtomicUsize,
    spinning: AtomicUsize,
}

/// Sets `DONE` when the run ends, by return or by panic, so no spinner outlives it.
struct Finish<'a>(&'a Run);

impl Drop for Finish<'_> {
    fn drop(&mut self) {
        self.0.phase.store(DONE, Ordering::Release);
    }
}

/// Runs `f` on a worker of `pool`, with the pool's other workers (as many as there are other
/// cores) kept awake until it returns.
///
/// Deadlock-free by construction: a spinner only spins if it started before the run's first
/// job existed, i.e. on an idle worker at the top of its loop, never nested inside a wait that
/// the run depends on; one that starts later (inside such a wait) returns at once, and so does
/// the copy that lands on the worker running `f`.
pub(crate) fn run_hot<R: Send>(pool: &ThreadPool, f: impl FnOnce() -> R + Send) -> R {
    // More spinners than the other cores would take turns with the run itself.
    let wanted = pool.current_num_threads().min(cores()).saturating_sub(1);
    if wanted == 0 {
        return pool.install(f);
    }
    pool.install(|| {
        let run = Arc::new(Run {
            phase: AtomicUsize::new(GATHERING),
            spinning: AtomicUsize::new(0),
        });
        let me = rayon::current_thread_index();
        let spinner = Arc::clone(&run);
        rayon::spawn_broadcast(move |ctx| {
            if Some(ctx.index()) == me
                || spinner.phase.load(Ordering::Acquire) != GATHERING
                || spinner.spinning.fetch_add(1, Ordering::AcqRel) >= wanted
            {
                return;
            }
            let mut idle = 0u32;
            while spinner.phase.load(Ordering::Acquire) != DONE {
                if rayon::yield_now() == Some(Yield::Executed) {
                    idle = 0;
                } else {
                    idle = idle.wrapping_add(1);
                    // Now and then let the system run something else on this core: a machine
                    // busier than its cores (tests in parallel) must not lose a core to us.
                    if idle.is_multiple_of(YIELD_EVERY) {
                        std::thread::yield_now();
                    } else {
                        std::hint::spin_loop();
                    }
                }
            }
        });
        let start = Instant::now();
        while run.spinning.load(Ordering::Acquire) < wanted && start.elapsed() < GATHER_TIMEOUT {
            std::hint::spin_loop();
        }
        run.phase.store(RUNNING, Ordering::Release);
        let _finish = Finish(&run);
        f()
    })
}

/// Idle looks for work between two yields of the core to the system.
const YIELD_EVERY: u32 = 64;

/// The cores this process may run on, read once.
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(threads: usize) -> ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    /// Many runs of nested parallel work (joins inside joins, as tract's dispatch splits), back
    /// to back so that spinners of one run may still be leaving as the next gathers: each run
    /// answers as the sequential sum, and none hangs.
    #[test]
    fn nested_parallel_work_answers_and_never_hangs() {
        use rayon::prelude::*;
        for threads in [1, 2, 3, 4] {
            let pool = pool(threads);
            for round in 0..200u64 {
                let want: u64 = (0..2_000u64).map(|x| x * x + round).sum();
                let got = run_hot(&pool, || {
                    (0..20u64)
                        .into_par_iter()
                        .map(|chunk| {
                            (chunk * 100..chunk * 100 + 100)
                                .into_par_iter()
                                .map(|x| x * x + round)
                                .sum::<u64>()
                        })
                        .sum::<u64>()
                });
                assert_eq!(got, want, "{threads} threads, round {round}");
            }
        }
    }

    #[test]
    fn a_panic_in_the_run_reaches_the_caller_and_the_pool_still_works() {
        let pool = pool(2);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_hot(&pool, || panic!("inside the run"))
        }));
        assert!(result.is_err());
        assert_eq!(run_hot(&pool, || 7), 7);
    }
}
