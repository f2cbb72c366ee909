//! Heap allocation counting for the bench: a global allocator that forwards to
//! [`System`] and, while counting is switched on, counts allocations and their bytes
//! per side of a connection.
//!
//! The side is a thread's: a thread marked with [`mark_thread`] (the server runtime's
//! workers, in the bench) counts as the server, every other thread as the client. A
//! free counts against the side of the thread that frees, so "live bytes" of a side
//! are exact only when each side frees what it allocated, which holds for the bench's
//! figures (server and client run on separate runtimes and exchange only bytes over
//! sockets).
//!
//! Counting is off until [`set_counting`] switches it on, so that the timed runs pay
//! one relaxed load per allocation and no shared counter.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    sync::atomic::{AtomicBool, AtomicU64, Ordering},
};

/// The side of the connection a thread works for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Every thread not marked otherwise.
    Client = 0,
    /// Threads marked with [`mark_thread`]`(Side::Server)`.
    Server = 1,
}

thread_local! {
    /// This thread's side, as a `Side` discriminant. `const`-initialised and without
    /// a destructor, so the allocator can read it at any time without allocating.
    static SIDE: Cell<u8> = const { Cell::new(Side::Client as u8) };
}

/// Makes the allocations of the calling thread count for `side`.
pub fn mark_thread(side: Side) {
    SIDE.with(|current| current.set(side as u8));
}

static COUNTING: AtomicBool = AtomicBool::new(false);

/// Switches counting on or off (for every thread).
pub fn set_counting(on: bool) {
    COUNTING.store(on, Ordering::SeqCst);
}

/// One side's counters; padded so that the two sides do not share a cache line.
#[repr(align(128))]
struct Counters {
    /// Calls to `alloc`, `alloc_zeroed` and `realloc`.
    allocs: AtomicU64,
    /// Bytes requested by those calls (for `realloc`, the new size).
    bytes: AtomicU64,
    /// Bytes given back (by `dealloc`, and the old size of a `realloc`).
    freed: AtomicU64,
}

impl Counters {
    const fn new() -> Self {
        Self {
            allocs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            freed: AtomicU64::new(0),
        }
    }
}

static COUNTERS: [Counters; 2] = [Counters::new(), Counters::new()];

fn counters() -> Option<&'static Counters> {
    if !COUNTING.load(Ordering::Relaxed) {
        return None;
    }
    let side = SIDE.try_with(Cell::get).unwrap_or(Side::Client as u8);
    COUNTERS.get(usize::from(side))
}

/// The counting allocator; install it with `#[global_allocator]`.
pub struct Counting;

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the
// counting only touches atomics and a `const` thread-local that never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some(c) = counters() {
            c.allocs.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some(c) = counters() {
            c.allocs.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(c) = counters() {
            c.freed.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Some(c) = counters() {
            c.allocs.fetch_add(1, Ordering::Relaxed);
            c.bytes.fetch_add(new_size as u64, Ordering::Relaxed);
            c.freed.fetch_add(layout.size() as u64, Ordering::Relaxed);
        }
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// One side's counts at one moment (or, from [`Snapshot::since`], over an interval).
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    /// Allocations (including reallocations).
    pub allocs: u64,
    /// Bytes allocated.
    pub bytes: u64,
    /// Bytes freed.
    pub freed: u64,
}

impl Counts {
    /// Bytes allocated and not freed, in bytes (negative when more was freed).
    pub fn live(&self) -> i64 {
        self.bytes as i64 - self.freed as i64
    }
}

/// Both sides' counts at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    /// The client side's (every unmarked thread).
    pub client: Counts,
    /// The server side's.
    pub server: Counts,
}

impl Snapshot {
    /// The counts now.
    pub fn now() -> Self {
        let read = |c: &Counters| Counts {
            allocs: c.allocs.load(Ordering::SeqCst),
            bytes: c.bytes.load(Ordering::SeqCst),
            freed: c.freed.load(Ordering::SeqCst),
        };
        Self {
            client: read(&COUNTERS[Side::Client as usize]),
            server: read(&COUNTERS[Side::Server as usize]),
        }
    }

    /// What was counted between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let minus = |a: Counts, b: Counts| Counts {
            allocs: a.allocs - b.allocs,
            bytes: a.bytes - b.bytes,
            freed: a.freed - b.freed,
        };
        Snapshot {
            client: minus(self.client, earlier.client),
            server: minus(self.server, earlier.server),
        }
    }
}
