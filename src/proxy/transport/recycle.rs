//! Boxes whose memory the thread keeps for the next box of the same layout, so that what a
//! connection allocates per request (its parsed head, the request's future, the request's
//! record) is allocated once per thread rather than once per request, while an idle connection
//! still holds none of it.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::mem::{ManuallyDrop, MaybeUninit};
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// What each per-thread cache of per-request things keeps at most (these blocks, per layout;
/// the buffers of `h1::fill`, the spare header maps, the attempt timers): enough for the
/// requests a thread finishes between two it starts under load. That is up to every request
/// it has in flight (an event-loop turn can finish all of them before the next reads start
/// new ones), so this matches the 1,024 idle connections an upstream pool keeps by default:
/// with 64, 256 requests at once (`h2load --h1 -c256`) spilled to `malloc` and cost 19,767
/// instructions per request instead of 17,610 (`LOAD=h1-256 bench/callgrind.sh`). What a
/// thread keeps is bounded by what it once had in flight at the same moment.
pub(crate) const KEPT_PER_THREAD: usize = 1024;

/// Blocks kept per layout and thread.
const KEPT_PER_LAYOUT: usize = KEPT_PER_THREAD;

/// The free blocks of one layout.
struct Blocks {
    layout: Layout,
    free: Vec<NonNull<u8>>,
}

/// A thread's free blocks, by layout (a handful of layouts at most: a linear search is the
/// fastest lookup).
struct Kept(Vec<Blocks>);

impl Drop for Kept {
    fn drop(&mut self) {
        for blocks in &self.0 {
            for &ptr in &blocks.free {
                // SAFETY: every kept block was allocated with its list's layout and is owned
                // by nothing else.
                unsafe { alloc::dealloc(ptr.as_ptr(), blocks.layout) };
            }
        }
    }
}

thread_local! {
    static KEPT: RefCell<Kept> = const { RefCell::new(Kept(Vec::new())) };
}

/// A block for `layout` (not zero-sized): a kept one if the thread has one.
fn take(layout: Layout) -> NonNull<u8> {
    let kept = KEPT
        .try_with(|k| {
            let mut k = k.borrow_mut();
            k.0.iter_mut()
                .find(|b| b.layout == layout)
                .and_then(|b| b.free.pop())
        })
        .ok()
        .flatten();
    kept.unwrap_or_else(|| {
        // SAFETY: `layout` is not zero-sized (checked by the callers).
        let ptr = unsafe { alloc::alloc(layout) };
        NonNull::new(ptr).unwrap_or_else(|| alloc::handle_alloc_error(layout))
    })
}

/// Keeps `ptr` (a block of `layout` that nothing uses any more) for [`take`], or frees it when
/// the thread keeps enough of them or is exiting.
fn give(ptr: NonNull<u8>, layout: Layout) {
    let kept = KEPT
        .try_with(|k| {
            let mut k = k.borrow_mut();
            let at = match k.0.iter().position(|b| b.layout == layout) {
                Some(at) => at,
                None => {
                    k.0.push(Blocks {
                        layout,
                        free: Vec::with_capacity(KEPT_PER_LAYOUT),
                    });
                    k.0.len() - 1
                }
            };
            let free = &mut k.0[at].free;
            if free.len() < KEPT_PER_LAYOUT {
                free.push(ptr);
                true
            } else {
                false
            }
        })
        .unwrap_or(false);
    if !kept {
        // SAFETY: `ptr` was allocated with `layout` (by `take`) and is no longer used.
        unsafe { alloc::dealloc(ptr.as_ptr(), layout) };
    }
}

/// A block taken for a `T` that is not written yet: made before the value, so that a large
/// value (a future) can be built in place instead of on the stack and then copied.
pub(crate) struct Slot<T> {
    ptr: NonNull<MaybeUninit<T>>,
}

impl<T> Slot<T> {
    #[inline(always)]
    pub(crate) fn new() -> Self {
        let layout = Layout::new::<T>();
        let ptr = if layout.size() == 0 {
            NonNull::dangling()
        } else {
            take(layout).cast()
        };
        Slot { ptr }
    }

    #[inline(always)]
    pub(crate) fn write(self, value: T) -> Recycled<T> {
        let slot = ManuallyDrop::new(self);
        // SAFETY: the block is valid for a `T`, and owned by this slot alone.
        unsafe { (*slot.ptr.as_ptr()).write(value) };
        Recycled {
            ptr: slot.ptr.cast(),
            _owns: PhantomData,
        }
    }
}

impl<T> Drop for Slot<T> {
    fn drop(&mut self) {
        give_block::<T>(self.ptr.cast());
    }
}

/// Returns a `T`'s block, whose value is dropped or moved out already.
fn give_block<T>(ptr: NonNull<u8>) {
    let layout = Layout::new::<T>();
    if layout.size() != 0 {
        give(ptr, layout);
    }
}

/// A `T` in a block the thread keeps when it is dropped. Like a `Box`, its value never moves
/// while it lives, so a future in it can be polled through it.
pub(crate) struct Recycled<T> {
    ptr: NonNull<T>,
    _owns: PhantomData<T>,
}

// SAFETY: a `Recycled<T>` owns its `T` as a `Box<T>` does; its block goes back to whichever
// thread drops it, and blocks come from the global allocator, which any thread may free.
unsafe impl<T: Send> Send for Recycled<T> {}
// SAFETY: as above; shared access only reaches `&T`.
unsafe impl<T: Sync> Sync for Recycled<T> {}
// The value does not move when the `Recycled` does (it stays in its block), as with `Box`.
impl<T> Unpin for Recycled<T> {}

impl<T> Recycled<T> {
    /// `value` in a block of its own (a kept one if the thread has one). (The request path
    /// takes a [`Slot`] first and writes into it: `value`, made before the block, is copied.)
    #[cfg(test)]
    pub(crate) fn new(value: T) -> Self {
        Slot::new().write(value)
    }
}

impl<T: Unpin> Recycled<T> {
    /// Moves the value out, keeping its block. Only for `Unpin` values: a pinned future must
    /// not move.
    pub(crate) fn into_inner(self) -> T {
        let this = ManuallyDrop::new(self);
        // SAFETY: the value is initialized, read once, and never dropped in place afterwards
        // (`this` is not dropped).
        let value = unsafe { this.ptr.as_ptr().read() };
        give_block::<T>(this.ptr.cast());
        value
    }
}

impl<T> Drop for Recycled<T> {
    fn drop(&mut self) {
        // SAFETY: the value is initialized and owned by this box alone; the block is returned
        // only after its value is dropped.
        unsafe { self.ptr.as_ptr().drop_in_place() };
        give_block::<T>(self.ptr.cast());
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Recycled<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl<T> Deref for Recycled<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: initialized and owned by this box; borrowed as `self` is.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> DerefMut for Recycled<T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: as above, exclusively.
        unsafe { self.ptr.as_mut() }
    }
}

impl<F: Future> Future for Recycled<F> {
    type Output = F::Output;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future stays in its block until it is dropped in place: it is never
        // moved out (`into_inner` needs `Unpin`), so pinning it there is sound.
        unsafe { Pin::new_unchecked(&mut **self) }.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    #[test]
    fn a_dropped_box_s_block_is_the_next_box_s() {
        let first = Recycled::new([7u64; 100]);
        let at = first.ptr.as_ptr() as usize;
        drop(first);
        let second = Recycled::new([9u64; 100]);
        assert_eq!(second.ptr.as_ptr() as usize, at);
        assert_eq!(second[99], 9);
        let [x, ..] = second.into_inner();
        assert_eq!(x, 9);
        // Moved out: the block is kept again.
        let third = Slot::<[u64; 100]>::new().write([1; 100]);
        assert_eq!(third.ptr.as_ptr() as usize, at);
    }

    #[test]
    fn values_are_dropped_once_and_zero_sized_ones_need_no_block() {
        let count = Rc::new(());
        let held = Recycled::new(count.clone());
        assert_eq!(Rc::strong_count(&count), 2);
        drop(held);
        assert_eq!(Rc::strong_count(&count), 1);
        let moved = Recycled::new(count.clone()).into_inner();
        assert_eq!(Rc::strong_count(&count), 2);
        drop(moved);
        assert_eq!(Rc::strong_count(&count), 1);
        let unit = Recycled::new(());
        assert_eq!(*unit, ());
        // An unwritten slot gives its block back.
        drop(Slot::<[u8; 64]>::new());
    }

    #[test]
    fn a_thread_keeps_a_bounded_number_of_blocks() {
        let boxes: Vec<_> = (0..KEPT_PER_LAYOUT + 10)
            .map(|i| Recycled::new([i as u32; 33]))
            .collect();
        drop(boxes);
        let kept = KEPT.with(|k| {
            k.borrow()
                .0
                .iter()
                .find(|b| b.layout == Layout::new::<[u32; 33]>())
                .map(|b| b.free.len())
        });
        assert_eq!(kept, Some(KEPT_PER_LAYOUT));
    }

    #[tokio::test]
    async fn a_future_is_polled_in_its_block() {
        let fut = Slot::new().write(async {
            tokio::task::yield_now().await;
            41 + 1
        });
        assert_eq!(fut.await, 42);
    }
}
