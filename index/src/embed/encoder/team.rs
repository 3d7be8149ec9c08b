//! `Team`: a few threads that run one forward pass in lock step.
//!
//! Why not rayon's fork-join per op: a MiniLM forward is about 40 short phases (20 to 300
//! µs each), and between two `par_iter`s rayon's idle workers fall asleep and must be
//! woken through the kernel, which cost about a fifth of a 100-token embedding. A team
//! runs the whole forward as one job on the calling thread and the threads of its own
//! pool: each member does its share of every phase, and a spinning [`Barrier`] separates
//! the phases.
//!
//! Buffers the members share are [`Shared`] views: within a phase each member writes only
//! its own part and reads only what earlier phases wrote; the barrier orders the phases.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a member spins at a barrier before it starts yielding its core: a phase is
/// tens of microseconds, so the partner is normally that close.
const SPIN_FOR: Duration = Duration::from_micros(100);

pub(crate) struct Team {
    /// Members 1.. run on these threads; member 0 is the calling thread, which is awake
    /// already (waking a sleeping thread can take milliseconds on a busy machine).
    pool: rayon::ThreadPool,
    members: usize,
}

impl Team {
    pub(crate) fn new(members: usize) -> std::result::Result<Self, String> {
        let members = members.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(members.saturating_sub(1).max(1))
            .thread_name(|i| format!("loramux-embed-{}", i + 1))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { pool, members })
    }

    /// Runs `work` once on every member and returns when all have finished. A panic in
    /// one member makes the others panic at their next barrier instead of waiting forever,
    /// and the panic reaches the caller.
    pub(crate) fn run<F: Fn(Member<'_>) + Sync>(&self, work: F) {
        let barrier = Barrier::new(self.members);
        let member = |index| {
            let poison = PoisonOnUnwind(&barrier);
            work(Member {
                index,
                count: self.members,
                barrier: &barrier,
            });
            std::mem::forget(poison);
        };
        if self.members == 1 {
            return member(0);
        }
        // The pool has exactly one thread per spawned member, and only one run uses it
        // at a time (the encoder's workspace lock), so every member gets a thread at once.
        self.pool.in_place_scope(|scope| {
            for index in 1..self.members {
                let member = &member;
                scope.spawn(move |_| member(index));
            }
            member(0);
        });
    }
}

/// One member's view of the team.
#[derive(Clone, Copy)]
pub(crate) struct Member<'a> {
    index: usize,
    count: usize,
    barrier: &'a Barrier,
}

impl Member<'_> {
    /// This member's share of `0..n`: contiguous and balanced; the members' shares
    /// together cover `0..n` exactly once.
    pub(crate) fn share(&self, n: usize) -> Range<usize> {
        n * self.index / self.count..n * (self.index + 1) / self.count
    }

    /// Waits until every member has reached this point; everything written before it is
    /// visible to every member after it.
    pub(crate) fn sync(&self) {
        self.barrier.wait();
    }
}

struct Barrier {
    count: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    poisoned: AtomicBool,
}

impl Barrier {
    fn new(count: usize) -> Self {
        Self {
            count,
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    fn wait(&self) {
        let generation = self.generation.load(Ordering::Acquire);
        // AcqRel: the last member to arrive acquires every earlier member's writes (the
        // increments form one release sequence) and publishes them with the new generation.
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.count {
            self.arrived.store(0, Ordering::Relaxed);
            self.generation
                .store(generation.wrapping_add(1), Ordering::Release);
            return;
        }
        let start = Instant::now();
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == generation {
            assert!(
                !self.poisoned.load(Ordering::Relaxed),
                "another member of the embedding team panicked"
            );
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || start.elapsed() < SPIN_FOR {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }
}

struct PoisonOnUnwind<'a>(&'a Barrier);

impl Drop for PoisonOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.poisoned.store(true, Ordering::Relaxed);
    }
}

/// A buffer the members of a team read and write in parts.
pub(crate) struct Shared<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: members access disjoint parts within a phase (the contract of `part` and
// `part_mut`), and phases are ordered by the team's barrier.
unsafe impl<T: Send> Sync for Shared<'_, T> {}

impl<'a, T> Shared<'a, T> {
    pub(crate) fn new(buffer: &'a mut [T]) -> Self {
        Self {
            ptr: buffer.as_mut_ptr(),
            len: buffer.len(),
            _borrow: PhantomData,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Reads `range`.
    ///
    /// # Safety
    /// No member writes any of `range` in the current phase.
    pub(crate) unsafe fn part(&self, range: Range<usize>) -> &[T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (asserted); not written concurrently (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.len()) }
    }

    /// Writes `range`.
    ///
    /// # Safety
    /// No other member reads or writes any of `range` in the current phase, and the caller
    /// holds no other reference into it.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn part_mut(&self, range: Range<usize>) -> &mut [T] {
        assert!(range.start <= range.end && range.end <= self.len);
        // SAFETY: in bounds (asserted); exclusive for this phase (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }

    /// Pointer to a `rows x cols` block starting at `start`, rows `row_stride` apart, for
    /// writers that take raw strides (gemm).
    ///
    /// # Safety
    /// No other member reads or writes any element of the block in the current phase.
    pub(crate) unsafe fn block_ptr(
        &self,
        start: usize,
        rows: usize,
        cols: usize,
        row_stride: usize,
    ) -> *mut T {
        if rows > 0 && cols > 0 {
            assert!(cols <= row_stride && start + (rows - 1) * row_stride + cols <= self.len);
        }
        // SAFETY: `start` is in bounds whenever the block is non-empty (asserted).
        unsafe { self.ptr.add(start.min(self.len)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_everything_once() {
        let barrier = Barrier::new(3);
        for n in [0, 1, 2, 5, 64, 101] {
            let mut seen = vec![0; n];
            for index in 0..3 {
                let member = Member {
                    index,
                    count: 3,
                    barrier: &barrier,
                };
                for i in member.share(n) {
                    seen[i] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "n = {n}: {seen:?}");
        }
    }

    /// Every phase reads what all members wrote in the previous one: a missing or early
    /// barrier shows up as a wrong sum.
    #[test]
    fn phases_see_each_others_writes() {
        for threads in [1, 2, 3] {
            let team = Team::new(threads).unwrap();
            let n = 96;
            let mut a = vec![0u64; n];
            let mut b = vec![0u64; n];
            let (sa, sb) = (Shared::new(&mut a), Shared::new(&mut b));
            team.run(|member| {
                for phase in 0..50u64 {
                    let (src, dst) = if phase % 2 == 0 {
                        (&sa, &sb)
                    } else {
                        (&sb, &sa)
                    };
                    // SAFETY: this phase only reads `src` and writes this member's share of
                    // `dst`; the barrier ends the phase.
                    let total: u64 = unsafe { src.part(0..n) }.iter().sum();
                    let share = member.share(n);
                    let mine = unsafe { dst.part_mut(share.clone()) };
                    for (i, d) in share.zip(mine) {
                        *d = total + i as u64 + phase;
                    }
                    member.sync();
                }
            });
            // Replay sequentially.
            let (mut x, mut y) = (vec![0u64; n], vec![0u64; n]);
            for phase in 0..50u64 {
                let (src, dst) = if phase % 2 == 0 {
                    (&x, &mut y)
                } else {
                    (&y, &mut x)
                };
                let total: u64 = src.iter().sum();
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = total + i as u64 + phase;
                }
            }
            assert_eq!((a, b), (x, y), "{threads} threads");
        }
    }

    #[test]
    fn a_panicking_member_fails_the_run_instead_of_hanging() {
        let team = Team::new(2).unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            team.run(|member| {
                if member.share(2).start == 1 {
                    panic!("member 1 fails");
                }
                member.sync();
            })
        }));
        assert!(result.is_err());
    }
}
