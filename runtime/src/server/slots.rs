//! A connection's calls in flight, bounded by `max_in_flight`: the server's
//! backpressure. The reader takes a slot before it reads a frame, so a connection whose
//! slots are all taken is not read, and the peer's writes wait in the socket buffer
//! (seed: IPC Protocol, Connection Limits).
//!
//! One counter and one [`Notify`] for the reader's wait, rather than a tokio
//! `Semaphore` with an owned permit per call: a slot is two atomic operations, where a
//! permit cost an `Arc` clone and drop, a compare-and-swap and a mutex taken to give it
//! back (in the bench's W1 profile, about half the reader loop's own time).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The slots of one connection.
#[derive(Debug)]
pub(super) struct Slots {
    taken: AtomicUsize,
    max: usize,
    /// Told when a slot is given back while all were taken (only the reader waits).
    freed: Notify,
}

impl Slots {
    /// `max` slots (`max_in_flight`, at least 1: the configuration is validated).
    pub(super) fn new(max: usize) -> Self {
        Self {
            taken: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
        }
    }

    /// Takes a slot if one is free.
    pub(super) fn try_take(&self) -> Option<Slot<'_>> {
        self.taken
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |taken| {
                (taken < self.max).then_some(taken + 1)
            })
            .ok()
            .map(|_| Slot(self))
    }

    /// Takes a slot, waiting until one is given back. Cancel-safe: dropped while
    /// waiting, it has taken nothing.
    pub(super) async fn take(&self) -> Slot<'_> {
        loop {
            // Created before the check, so that a slot given back after the check
            // still wakes this wait (`notify_one` keeps a permit for it otherwise).
            let freed = self.freed.notified();
            if let Some(slot) = self.try_take() {
                return slot;
            }
            freed.await;
        }
    }

    /// Gives back a slot that was [kept](Slot::keep).
    pub(super) fn give_back(&self) {
        if self.taken.fetch_sub(1, Ordering::Release) == self.max {
            self.freed.notify_one();
        }
    }

    /// How many slots are taken now.
    pub(super) fn taken(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
    }
}

/// A taken slot, given back when dropped.
#[must_use = "a slot dropped at once is given back at once"]
#[derive(Debug)]
pub(super) struct Slot<'a>(&'a Slots);

impl Slot<'_> {
    /// Hands the slot to whoever holds the connection's [`Slots`] for the call (the
    /// call's end), which gives it back with [`Slots::give_back`] exactly once.
    pub(super) fn keep(self) {
        std::mem::forget(self);
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_most_max_are_taken_and_a_given_back_slot_can_be_taken_again() {
        let slots = Slots::new(2);
        let first = slots.try_take().expect("free");
        let second = slots.try_take().expect("free");
        assert!(slots.try_take().is_none());
        assert_eq!(slots.taken(), 2);
        drop(first);
        assert_eq!(slots.taken(), 1);
        second.keep();
        let third = slots.try_take().expect("free");
        assert!(slots.try_take().is_none());
        slots.give_back(); // the kept one
        drop(third);
        assert_eq!(slots.taken(), 0);
    }

    #[tokio::test]
    async fn a_waiting_take_wakes_when_a_slot_is_given_back() {
        let slots = std::sync::Arc::new(Slots::new(1));
        slots.try_take().expect("free").keep();
        let waiting = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take().await.keep() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        slots.give_back();
        waiting.await.expect("take");
        assert_eq!(slots.taken(), 1);
    }
}
