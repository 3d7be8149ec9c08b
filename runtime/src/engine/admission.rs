//! The admission planner: a pure function from what is waiting, what is running and what the
//! bank holds to which waiting requests start this step.
//!
//! The rules, in the spirit of S-LoRA and LoRAX:
//! - Requests are considered in arrival order. One whose adapters are resident (or that
//!   needs none, or finds free or idle slots for the missing ones) starts, even when an
//!   older request is still waiting for a slot: a head that waits does not block the rest.
//! - FIFO per adapter: a request that shares an adapter with an older waiting request waits
//!   behind it, so requests for one adapter start in the order they came.
//! - Bounded waits: once a request has waited `max_wait_steps` steps for slots, nothing
//!   behind it starts until it has started. The slots that running sequences free then go to
//!   it, so its wait is bounded by `max_wait_steps` plus the longest running sequence.
//! - A slot pinned by a running sequence is never counted as free: a request starts only if
//!   its missing adapters fit in free slots plus idle (unpinned) resident ones.

use std::collections::HashSet;
use std::hash::Hash;

/// What the planner sees of one waiting request.
#[derive(Debug, Clone)]
pub struct Waiter<'a, K> {
    /// Residency keys of its adapters (the mixture's, in any order).
    pub adapters: &'a [K],
    /// Engine steps it has waited since it was queued.
    pub waited_steps: usize,
}

/// What the planner sees of the bank: its size, the adapters running sequences pin, and
/// the idle resident ones in the order the bank evicts them (least recently used first).
#[derive(Debug, Clone)]
pub struct BankView<K> {
    pub slots: usize,
    pub pinned: Vec<K>,
    pub idle: Vec<K>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionLimits {
    pub max_running: usize,
    /// Steps a request may wait for slots before it stops everyone behind it.
    pub max_wait_steps: usize,
}

/// The planner's answer for one waiting request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<K> {
    /// Start it now: `loads` are its adapters that are not resident, `evicts` the idle
    /// adapters whose slots they take once the free slots are used up.
    Admit { loads: Vec<K>, evicts: Vec<K> },
    /// Its missing adapters do not fit in the free and idle slots.
    WaitForSlots,
    /// An older waiting request uses one of its adapters (FIFO per adapter).
    WaitBehindAdapter,
    /// An older request has waited too long and goes first.
    WaitBehindAged,
    /// The batch is full.
    WaitForRoom,
}

/// One decision per waiter, in the same order.
pub fn plan_admissions<K: Clone + Eq + Hash>(
    limits: AdmissionLimits,
    running: usize,
    bank: &BankView<K>,
    waiting: &[Waiter<'_, K>],
) -> Vec<Decision<K>> {
    let mut pinned: HashSet<K> = bank.pinned.iter().cloned().collect();
    // Idle adapters in eviction order; an entry becomes `None` once pinned or evicted.
    let mut idle: Vec<Option<K>> = bank.idle.iter().cloned().map(Some).collect();
    let mut free = bank.slots.saturating_sub(pinned.len() + idle.len());
    let mut room = limits.max_running.saturating_sub(running);
    // Adapters of older requests still waiting.
    let mut held_back: HashSet<K> = HashSet::new();
    let mut aged_ahead = false;
    let mut decisions = Vec::with_capacity(waiting.len());
    for waiter in waiting {
        let decision = if aged_ahead {
            Decision::WaitBehindAged
        } else if room == 0 {
            Decision::WaitForRoom
        } else if waiter.adapters.iter().any(|k| held_back.contains(k)) {
            Decision::WaitBehindAdapter
        } else {
            let mut seen = HashSet::new();
            let distinct: Vec<&K> = waiter.adapters.iter().filter(|k| seen.insert(*k)).collect();
            let is_idle = |k: &K| idle.iter().any(|i| i.as_ref() == Some(k));
            let loads: Vec<K> = distinct
                .iter()
                .filter(|k| !pinned.contains(**k) && !is_idle(k))
                .map(|k| (*k).clone())
                .collect();
            // Idle adapters this request pins stop being evictable, so they cannot also
            // make room for its loads.
            let woken: Vec<K> = distinct
                .iter()
                .filter(|k| is_idle(k))
                .map(|k| (*k).clone())
                .collect();
            let evictable = idle.iter().flatten().count() - woken.len();
            if loads.len() <= free + evictable {
                for k in &woken {
                    if let Some(entry) = idle.iter_mut().find(|i| i.as_ref() == Some(k)) {
                        *entry = None;
                    }
                }
                let from_free = loads.len().min(free);
                free -= from_free;
                let evicts: Vec<K> = idle
                    .iter_mut()
                    .filter(|i| i.is_some())
                    .take(loads.len() - from_free)
                    .filter_map(Option::take)
                    .collect();
                pinned.extend(distinct.into_iter().cloned());
                room -= 1;
                Decision::Admit { loads, evicts }
            } else {
                Decision::WaitForSlots
            }
        };
        match &decision {
            Decision::Admit { .. } => {}
            Decision::WaitForSlots => {
                aged_ahead |= waiter.waited_steps >= limits.max_wait_steps;
                held_back.extend(waiter.adapters.iter().cloned());
            }
            _ => held_back.extend(waiter.adapters.iter().cloned()),
        }
        decisions.push(decision);
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: AdmissionLimits = AdmissionLimits {
        max_running: 8,
        max_wait_steps: 4,
    };

    fn waiter<'a>(adapters: &'a [&'static str], waited_steps: usize) -> Waiter<'a, &'static str> {
        Waiter {
            adapters,
            waited_steps,
        }
    }

    /// A bank of `slots` with these resident adapters (pinned or not); the idle ones are
    /// evicted in the order given.
    fn bank(slots: usize, resident: &[(&'static str, bool)]) -> BankView<&'static str> {
        let pick = |want: bool| {
            resident
                .iter()
                .filter(|&&(_, pinned)| pinned == want)
                .map(|&(k, _)| k)
                .collect()
        };
        BankView {
            slots,
            pinned: pick(true),
            idle: pick(false),
        }
    }

    fn admit(loads: &[&'static str], evicts: &[&'static str]) -> Decision<&'static str> {
        Decision::Admit {
            loads: loads.to_vec(),
            evicts: evicts.to_vec(),
        }
    }

    fn admitted(decisions: &[Decision<&str>]) -> Vec<usize> {
        decisions
            .iter()
            .enumerate()
            .filter(|(_, d)| matches!(d, Decision::Admit { .. }))
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn a_head_waiting_for_a_slot_does_not_block_resident_adapters() {
        // Both slots pinned by running sequences; "c" needs a third.
        let view = bank(2, &[("a", true), ("b", true)]);
        let waiting = [waiter(&["c"], 0), waiter(&["a"], 0), waiter(&[], 0)];
        let plan = plan_admissions(LIMITS, 2, &view, &waiting);
        assert_eq!(plan[0], Decision::WaitForSlots);
        assert_eq!(admitted(&plan), vec![1, 2]);
    }

    #[test]
    fn pinned_slots_are_never_counted_as_room() {
        let view = bank(3, &[("a", true), ("b", false)]);
        // One free slot and one idle: two loads fit, a third does not.
        let plan = plan_admissions(LIMITS, 1, &view, &[waiter(&["c", "d", "e"], 0)]);
        assert_eq!(plan, vec![Decision::WaitForSlots]);
        let plan = plan_admissions(
            LIMITS,
            1,
            &view,
            &[waiter(&["c"], 0), waiter(&["d"], 0), waiter(&["e"], 0)],
        );
        assert_eq!(
            plan,
            vec![
                admit(&["c"], &[]),
                admit(&["d"], &["b"]),
                Decision::WaitForSlots
            ]
        );
        // Pinning the idle "b" takes it out of the evictable set.
        let plan = plan_admissions(LIMITS, 1, &view, &[waiter(&["b", "c", "d"], 0)]);
        assert_eq!(plan, vec![Decision::WaitForSlots]);
        let plan = plan_admissions(LIMITS, 1, &view, &[waiter(&["b", "c"], 0)]);
        assert_eq!(plan, vec![admit(&["c"], &[])]);
    }

    #[test]
    fn an_adapter_evicted_by_the_plan_is_no_longer_resident_in_it() {
        let view = bank(2, &[("a", false), ("b", false)]);
        let plan = plan_admissions(
            LIMITS,
            0,
            &view,
            &[waiter(&["c"], 0), waiter(&["a"], 0), waiter(&["b"], 0)],
        );
        // "c" evicts the least recently used "a"; the request for "a" then needs a load,
        // and takes "b"'s slot; the one for "b" finds both slots pinned.
        assert_eq!(
            plan,
            vec![
                admit(&["c"], &["a"]),
                admit(&["a"], &["b"]),
                Decision::WaitForSlots
            ]
        );
    }

    #[test]
    fn requests_for_one_adapter_start_in_arrival_order() {
        let view = bank(1, &[("a", true)]);
        // The mixture a+b waits for a slot; a later request for "a" alone must not pass it.
        let plan = plan_admissions(
            LIMITS,
            1,
            &view,
            &[waiter(&["a", "b"], 0), waiter(&["a"], 0), waiter(&[], 0)],
        );
        assert_eq!(
            plan,
            vec![
                Decision::WaitForSlots,
                Decision::WaitBehindAdapter,
                admit(&[], &[]),
            ]
        );
    }

    #[test]
    fn a_full_batch_admits_nothing() {
        let view = bank(4, &[]);
        let plan = plan_admissions(LIMITS, 8, &view, &[waiter(&[], 0)]);
        assert_eq!(plan, vec![Decision::WaitForRoom]);
    }

    #[test]
    fn an_aged_waiter_stops_everyone_behind_it() {
        let view = bank(1, &[("a", true)]);
        let waiting = [waiter(&["b"], LIMITS.max_wait_steps), waiter(&["a"], 0)];
        let plan = plan_admissions(LIMITS, 1, &view, &waiting);
        assert_eq!(plan, vec![Decision::WaitForSlots, Decision::WaitBehindAged]);
    }

    /// A simulation of the engine's loop over the planner: two slots, a stream of requests
    /// for the resident adapters "a" and "b" (one a step, alternating) that keeps both
    /// pinned forever unless admission ages, and one request for "c". Every request runs `RUN`
    /// steps. "c" must start within `max_wait_steps + RUN` steps, and every request of the
    /// stream must start eventually.
    #[test]
    fn no_request_starves() {
        const RUN: usize = 6;
        let limits = AdmissionLimits {
            max_running: 16,
            max_wait_steps: 5,
        };
        struct Job {
            adapters: Vec<&'static str>,
            queued_at: usize,
            started_at: Option<usize>,
        }
        let mut jobs: Vec<Job> = Vec::new();
        let mut slots: Vec<(&'static str, usize)> = vec![("a", 0), ("b", 0)]; // key, pins
        let mut running: Vec<(usize, usize)> = Vec::new(); // job, steps left
        for step in 0..200 {
            // A request for a resident adapter every step; "c" arrives at step 3.
            jobs.push(Job {
                adapters: vec![["a", "b"][step % 2]],
                queued_at: step,
                started_at: None,
            });
            if step == 3 {
                jobs.push(Job {
                    adapters: vec!["c"],
                    queued_at: step,
                    started_at: None,
                });
            }
            let waiting_ids: Vec<usize> = (0..jobs.len())
                .filter(|&j| jobs[j].started_at.is_none())
                .collect();
            let waiting: Vec<Waiter<&str>> = waiting_ids
                .iter()
                .map(|&j| Waiter {
                    adapters: &jobs[j].adapters,
                    waited_steps: step - jobs[j].queued_at,
                })
                .collect();
            let view = BankView {
                slots: 2,
                pinned: slots.iter().filter(|s| s.1 > 0).map(|s| s.0).collect(),
                idle: slots.iter().filter(|s| s.1 == 0).map(|s| s.0).collect(),
            };
            let plan = plan_admissions(limits, running.len(), &view, &waiting);
            for (&j, decision) in waiting_ids.iter().zip(&plan) {
                let Decision::Admit { loads, evicts } = decision else {
                    continue;
                };
                assert_eq!(loads.len(), evicts.len(), "both slots are always taken");
                for (&load, &evict) in loads.iter().zip(evicts) {
                    let victim = slots
                        .iter()
                        .position(|&(k, pins)| k == evict && pins == 0)
                        .expect("the planner only evicts idle adapters");
                    slots[victim] = (load, 0);
                }
                for key in &jobs[j].adapters {
                    let slot = slots.iter_mut().find(|(k, _)| k == key).expect("resident");
                    slot.1 += 1;
                }
                jobs[j].started_at = Some(step);
                running.push((j, RUN));
            }
            running.retain_mut(|(j, left)| {
                *left -= 1;
                if *left > 0 {
                    return true;
                }
                for key in &jobs[*j].adapters {
                    if let Some(slot) = slots.iter_mut().find(|(k, _)| k == key) {
                        slot.1 -= 1;
                    }
                }
                false
            });
        }
        let c = jobs.iter().find(|j| j.adapters == ["c"]).expect("c queued");
        let waited = c.started_at.expect("c started") - c.queued_at;
        assert!(
            waited <= limits.max_wait_steps + RUN,
            "c waited {waited} steps"
        );
        // Everything queued early enough has started; nothing waits unboundedly.
        let waits: Option<Vec<usize>> = jobs
            .iter()
            .filter(|j| j.queued_at < 150)
            .map(|j| j.started_at.map(|s| s - j.queued_at))
            .collect();
        let worst = waits.expect("every request started").into_iter().max();
        assert!(
            worst.is_some_and(|w| w <= 2 * (limits.max_wait_steps + RUN)),
            "{worst:?}"
        );
    }
}
