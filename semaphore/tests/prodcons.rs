//! Qt's `producerConsumer`: a 4096-byte ring guarded by a `free` and a `used` semaphore. The
//! consumer checks every byte, so a permit that arrived before the data it guards (a missing
//! happens-before) or a miscount shows up as a wrong byte.
//!
//! Moves Qt's 860,160 items by default; `FUTEXSCOPE_THOROUGH=1` moves ten times as many.
#![cfg(not(loom))] // loom builds run only `tests/loom.rs`

mod common;

use futexscope_semaphore::Semaphore;
use std::cell::UnsafeCell;
use std::thread;
use std::time::Duration;

const RING: usize = 4096;
const ALPHABET: &[u8] = b"ACGTH";

fn items() -> usize {
    let rounds = if std::env::var_os("FUTEXSCOPE_THOROUGH").is_some_and(|v| v != "0") {
        100
    } else {
        10
    };
    3 * 7 * RING * rounds
}

/// The ring: each slot is written by the producer and read by the consumer, never both at
/// once, because the semaphores hand each slot from one to the other.
struct Ring(UnsafeCell<[u8; RING]>);

// SAFETY: every access goes through `write`/`read`, whose callers hold the slot's permit.
unsafe impl Sync for Ring {}

impl Ring {
    /// # Safety
    /// The caller holds a `free` permit for slot `i % RING`.
    unsafe fn write(&self, i: usize, byte: u8) {
        // SAFETY: the caller's permit makes this the only access to the slot.
        unsafe { (*self.0.get())[i % RING] = byte };
    }

    /// # Safety
    /// The caller holds a `used` permit for slot `i % RING`.
    unsafe fn read(&self, i: usize) -> u8 {
        // SAFETY: the caller's permit makes this the only access to the slot.
        unsafe { (*self.0.get())[i % RING] }
    }
}

fn run(producer_chunk: usize, consumer_chunk: usize) {
    let items = items();
    let free = Semaphore::new(RING as u32);
    let used = Semaphore::new(0);
    let ring = Ring(UnsafeCell::new([0; RING]));
    common::within(&(&free, &used), || {
        thread::scope(|s| {
            s.spawn(|| {
                for start in (0..items).step_by(producer_chunk) {
                    let permit = free
                        .try_acquire_for(producer_chunk as u32, Duration::from_secs(60))
                        .expect("producer starved for a minute");
                    permit.forget();
                    for i in start..start + producer_chunk {
                        // SAFETY: we hold `free` permits for these slots.
                        unsafe { ring.write(i, ALPHABET[i % ALPHABET.len()]) };
                    }
                    used.release(producer_chunk as u32).unwrap();
                }
            });
            s.spawn(|| {
                for start in (0..items).step_by(consumer_chunk) {
                    used.acquire(consumer_chunk as u32).unwrap().forget();
                    for i in start..start + consumer_chunk {
                        // SAFETY: we hold `used` permits for these slots.
                        let byte = unsafe { ring.read(i) };
                        assert_eq!(byte, ALPHABET[i % ALPHABET.len()], "item {i} corrupted");
                    }
                    free.release(consumer_chunk as u32).unwrap();
                }
            });
        })
    });
    assert_eq!((free.available(), used.available()), (RING as u32, 0));
    assert_eq!((free.waiters(), used.waiters()), (0, 0));
}

#[test]
fn single_items_arrive_intact() {
    run(1, 1);
}

#[test]
fn chunks_of_three_and_seven_arrive_intact() {
    run(3, 7);
}
