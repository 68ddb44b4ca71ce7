//! One coarse timer and one drain signal for every waiting native HTTP/1.1 connection of a
//! server, instead of a tokio `Sleep` (112 bytes) and a cancellation future (72 bytes) in each
//! connection's state: a connection keeps a 24-byte entry here and a small [`Slot`] in its
//! future, which is what an idle keep-alive connection costs (issue #16 aims at 1 KiB each).
//!
//! Deadlines are rounded up to [`TICK`]; a connection is never woken before its deadline, and at
//! most a tick after it. A connection arms its entry once and moves its own deadline forward
//! without touching the set (a keep-alive request costs nothing here); when the sweeper finds an
//! entry due, it wakes the connection, which either has expired or arms the entry again.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The timer's resolution.
const TICK: Duration = Duration::from_millis(100);
/// An entry that is not armed (or, while it is free, the end of the free list).
const DISARMED: u64 = u64::MAX;
/// An entry found due, woken once the sweep's generation is published.
const DUE: u64 = u64::MAX - 1;

/// The waiting connections of one server.
pub struct IdleSet {
    shared: Arc<Shared>,
}

struct Shared {
    /// Tick 0.
    base: Instant,
    /// The server drains: connections waiting for a request's first byte close.
    draining: AtomicBool,
    /// Bumped by every sweep that woke connections, before it wakes them: a connection reads the
    /// clock only when it changed since it last looked.
    generation: AtomicU32,
    entries: Mutex<Entries>,
    /// Wakes the sweeper: an earlier deadline was armed, or the set is gone.
    wake: Arc<Notify>,
}

struct Entries {
    slots: Vec<Entry>,
    /// The first free entry (`DISARMED` when none): free entries are chained through `at`.
    free: u64,
    /// The tick the sweeper sleeps until (`DISARMED`: until it is told).
    next: u64,
    sweeper: Option<JoinHandle<()>>,
}

struct Entry {
    /// The tick it is due at; `DISARMED`; `DUE`; or, while free, the next free entry.
    at: u64,
    /// The connection's task (`None`: the entry is free).
    waker: Option<Waker>,
}

impl Default for IdleSet {
    fn default() -> Self {
        Self::new()
    }
}

impl IdleSet {
    /// An empty set; its sweeper starts with the first connection that waits.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                base: Instant::now(),
                draining: AtomicBool::new(false),
                generation: AtomicU32::new(0),
                entries: Mutex::new(Entries {
                    slots: Vec::new(),
                    free: DISARMED,
                    next: DISARMED,
                    sweeper: None,
                }),
                wake: Arc::new(Notify::new()),
            }),
        }
    }

    /// Wakes every waiting connection for it to see that the server drains.
    pub fn drain(&self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        for e in &self.shared.lock().slots {
            if let Some(w) = &e.waker {
                w.wake_by_ref();
            }
        }
    }

    /// Whether [`IdleSet::drain`] was called.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Entries> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The first tick at or after `t`.
    fn tick_of(&self, t: Instant) -> u64 {
        let nanos = t.saturating_duration_since(self.base).as_nanos();
        u64::try_from(nanos.div_ceil(TICK.as_nanos())).unwrap_or(DUE - 1)
    }

    fn instant_of(&self, tick: u64) -> Instant {
        let nanos = u128::from(tick) * TICK.as_nanos();
        self.base + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }

    /// Wakes the connections due by `now`; the tick of the next one due.
    fn sweep(&self, now: Instant) -> u64 {
        // The last tick at or before `now`: entries due by then.
        let nanos = now.saturating_duration_since(self.base).as_nanos();
        let now = u64::try_from(nanos / TICK.as_nanos()).unwrap_or(DUE - 1);
        let mut entries = self.lock();
        let mut next = DISARMED;
        let mut due = false;
        for e in entries.slots.iter_mut().filter(|e| e.waker.is_some()) {
            if e.at <= now {
                e.at = DUE;
                due = true;
            } else if e.at < DUE {
                next = next.min(e.at);
            }
        }
        if due {
            // Before the wakes: a woken connection must see a new generation.
            self.generation.fetch_add(1, Ordering::Release);
            for e in &mut entries.slots {
                if e.at == DUE {
                    e.at = DISARMED;
                    if let Some(w) = &e.waker {
                        w.wake_by_ref();
                    }
                }
            }
        }
        entries.next = next;
        next
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.wake.notify_one();
    }
}

/// Sleeps until the next entry is due, wakes what is due, until the set is gone.
async fn sweeper(shared: Weak<Shared>, wake: Arc<Notify>) {
    loop {
        let next = {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let next = shared.sweep(Instant::now());
            (next != DISARMED).then(|| shared.instant_of(next))
        };
        match next {
            Some(at) => {
                tokio::select! {
                    () = tokio::time::sleep_until(at) => {}
                    () = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// A connection's entry in its server's [`IdleSet`], taken when it first waits and given back
/// when it drops.
pub struct Slot<'a> {
    set: &'a IdleSet,
    /// The entry's index, `u32::MAX` before it is taken.
    key: u32,
    /// The set's generation when the connection last looked at the clock.
    seen: u32,
    /// The deadline the entry is armed for (the entry may have fired since).
    armed: Instant,
}

impl<'a> Slot<'a> {
    /// No entry yet.
    pub fn new(set: &'a IdleSet) -> Self {
        Self {
            set,
            key: u32::MAX,
            seen: 0,
            armed: set.shared.base,
        }
    }

    /// The set it is an entry of.
    pub fn set(&self) -> &'a IdleSet {
        self.set
    }

    /// Ready once `deadline` has passed; else the task is woken when it may have (or when the
    /// server drains: see [`IdleSet::is_draining`]).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>, deadline: Instant) -> Poll<()> {
        if self.key == u32::MAX {
            self.take(cx.waker(), deadline);
            return Poll::Pending;
        }
        if deadline < self.armed {
            // Sooner than what the entry waits for (a request head has started).
            self.arm(deadline);
            return Poll::Pending;
        }
        let generation = self.set.shared.generation.load(Ordering::Acquire);
        if generation == self.seen {
            return Poll::Pending;
        }
        self.seen = generation;
        let now = Instant::now();
        if now >= deadline {
            // The entry may have fired: a later wait must look again.
            self.seen = generation.wrapping_sub(1);
            return Poll::Ready(());
        }
        if self.armed <= now {
            // The entry fired (or is about to) for a deadline the connection has moved past.
            self.arm(deadline);
        }
        Poll::Pending
    }

    fn take(&mut self, waker: &Waker, deadline: Instant) {
        let shared = &self.set.shared;
        let at = shared.tick_of(deadline);
        let mut entries = shared.lock();
        let entry = Entry {
            at,
            waker: Some(waker.clone()),
        };
        let key = match usize::try_from(entries.free) {
            Ok(free) if free < entries.slots.len() => {
                entries.free = entries.slots[free].at;
                entries.slots[free] = entry;
                free
            }
            _ => {
                entries.slots.push(entry);
                entries.slots.len() - 1
            }
        };
        self.key = u32::try_from(key).unwrap_or(u32::MAX);
        self.seen = shared.generation.load(Ordering::Acquire);
        self.armed = deadline;
        let running = entries.sweeper.as_ref().is_some_and(|h| !h.is_finished());
        if !running {
            entries.sweeper = Some(tokio::spawn(sweeper(
                Arc::downgrade(shared),
                shared.wake.clone(),
            )));
        }
        Self::wake_sweeper_for(shared, &mut entries, at);
    }

    fn arm(&mut self, deadline: Instant) {
        let shared = &self.set.shared;
        let at = shared.tick_of(deadline);
        let mut entries = shared.lock();
        if let Some(e) = entries.slots.get_mut(self.key as usize) {
            e.at = at;
        }
        self.armed = deadline;
        Self::wake_sweeper_for(shared, &mut entries, at);
    }

    fn wake_sweeper_for(shared: &Shared, entries: &mut Entries, at: u64) {
        if at < entries.next {
            entries.next = at;
            shared.wake.notify_one();
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        if self.key == u32::MAX {
            return;
        }
        let mut entries = self.set.shared.lock();
        let free = entries.free;
        if let Some(e) = entries.slots.get_mut(self.key as usize) {
            e.waker = None;
            e.at = free;
            entries.free = u64::from(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::poll_fn;

    /// Waits on `slot` until `deadline`, as a connection does.
    async fn expire(slot: &mut Slot<'_>, deadline: Instant) {
        poll_fn(|cx| slot.poll_expired(cx, deadline)).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_wakes_at_its_deadline_rounded_up_to_a_tick() {
        let set = IdleSet::new();
        let start = Instant::now();
        let mut slot = Slot::new(&set);
        expire(&mut slot, start + Duration::from_millis(250)).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited <= Duration::from_millis(300),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_on_without_the_set_is_still_kept() {
        let set = IdleSet::new();
        let start = Instant::now();
        let mut slot = Slot::new(&set);
        // Armed for 1 s, then (as a keep-alive request would) moved to 3 s without telling the
        // set: the entry fires at 1 s, the connection arms it again and waits on.
        let first =
            poll_fn(|cx| Poll::Ready(slot.poll_expired(cx, start + Duration::from_secs(1)))).await;
        assert!(first.is_pending());
        expire(&mut slot, start + Duration::from_secs(3)).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited <= Duration::from_millis(3_100),
            "{waited:?}"
        );
        // Waiting again after it expired (the entry fired) arms it again.
        let at = Instant::now();
        expire(&mut slot, at + Duration::from_secs(10)).await;
        assert!(at.elapsed() >= Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn a_sooner_deadline_is_armed_at_once() {
        let set = IdleSet::new();
        let start = Instant::now();
        let mut slot = Slot::new(&set);
        let far = start + Duration::from_secs(60);
        let first = poll_fn(|cx| Poll::Ready(slot.poll_expired(cx, far))).await;
        assert!(first.is_pending());
        // A request head started: its header timeout is sooner than the idle deadline.
        expire(&mut slot, start + Duration::from_millis(200)).await;
        assert!(start.elapsed() <= Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn many_connections_each_wake_at_their_own_deadline_and_give_back_their_entry() {
        let set = Arc::new(IdleSet::new());
        let start = Instant::now();
        let tasks: Vec<_> = (1..=20u64)
            .map(|i| {
                let set = set.clone();
                tokio::spawn(async move {
                    let mut slot = Slot::new(&set);
                    expire(&mut slot, start + Duration::from_millis(i * 130)).await;
                    start.elapsed()
                })
            })
            .collect();
        for (i, t) in (1..=20u64).zip(tasks) {
            let waited = t.await.unwrap();
            let due = Duration::from_millis(i * 130);
            assert!(waited >= due && waited <= due + TICK, "{i}: {waited:?}");
        }
        let entries = set.shared.lock();
        assert!(entries.slots.iter().all(|e| e.waker.is_none()));
        assert_eq!(entries.slots.len(), 20);
    }

    #[tokio::test]
    async fn draining_wakes_a_waiting_connection() {
        let set = Arc::new(IdleSet::new());
        let waiting = {
            let set = set.clone();
            tokio::spawn(async move {
                let mut slot = Slot::new(&set);
                let far = Instant::now() + Duration::from_secs(3600);
                poll_fn(|cx| {
                    if slot.poll_expired(cx, far).is_ready() || set.is_draining() {
                        return Poll::Ready(());
                    }
                    Poll::Pending
                })
                .await;
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        set.drain();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the drain")
            .unwrap();
    }
}
