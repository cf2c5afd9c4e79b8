//! Room in a federation's stream for reliable messages: what makes a qos ≥ 1 publisher feel
//! back-pressure instead of the gateway buffering without bound (DESIGN §3.5).
//!
//! The stream's outbox holds at most `[delivery] max_queued_messages` messages and
//! `max_queued_bytes` payload bytes. A reliable message reserves its share of both *before* it is
//! handed to the stream, and gives it back when the last reference to it goes (acknowledged,
//! dead-lettered or refused): the reservation lives in its [`Pending`](super::pending::Pending).
//! So the reliable messages a stream holds, including those on their way to its task, never
//! exceed the limits, and a publisher that finds no room either waits (the publish socket stops
//! reading: [`WhenFull::Wait`]) or is told at once ([`WhenFull::Refuse`]: `POST` answers 503
//! with `Retry-After`). qos 0 messages reserve nothing: at the limit the outbox sheds them,
//! lowest priority first.

use std::sync::Arc;

use meshfed_queue::{Limit, OfferError};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError};

/// What a reliable message does when its stream has no room for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WhenFull {
    /// Wait for room (the publish socket: it stops reading meanwhile).
    Wait,
    /// Refuse it now with [`OfferError::Full`] (`POST /v1/messages`: 503 and `Retry-After`).
    Refuse,
}

/// The room of one stream: one permit per message and one per payload byte.
#[derive(Debug)]
pub(crate) struct Room {
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    max_messages: usize,
    max_bytes: usize,
}

/// A reliable message's share of its stream's room, given back when dropped.
#[derive(Debug)]
pub(crate) struct Reservation {
    _message: OwnedSemaphorePermit,
    _bytes: Option<OwnedSemaphorePermit>,
}

impl Room {
    /// Room for `max_messages` messages of `max_bytes` payload bytes in all.
    pub(crate) fn new(max_messages: usize, max_bytes: u64) -> Self {
        let max_messages = max_messages.clamp(1, Semaphore::MAX_PERMITS);
        let max_bytes = usize::try_from(max_bytes)
            .unwrap_or(usize::MAX)
            .clamp(1, Semaphore::MAX_PERMITS);
        Self {
            messages: Arc::new(Semaphore::new(max_messages)),
            bytes: Arc::new(Semaphore::new(max_bytes)),
            max_messages,
            max_bytes,
        }
    }

    /// Reserves room for a message of `size` payload bytes, waiting for it if need be
    /// (cancel-safe: dropping the future gives back what it took).
    pub(crate) async fn reserve(&self, size: usize) -> Reservation {
        let bytes = self.byte_permits(size);
        // Invariant: the semaphores are never closed.
        let message = Arc::clone(&self.messages)
            .acquire_owned()
            .await
            .unwrap_or_else(|_| unreachable!("a stream's room is never closed"));
        let bytes = match bytes {
            0 => None,
            n => Some(
                Arc::clone(&self.bytes)
                    .acquire_many_owned(n)
                    .await
                    .unwrap_or_else(|_| unreachable!("a stream's room is never closed")),
            ),
        };
        Reservation {
            _message: message,
            _bytes: bytes,
        }
    }

    /// Reserves room for a message of `size` payload bytes if there is some now; otherwise
    /// says which limit is reached.
    pub(crate) fn try_reserve(&self, size: usize) -> Result<Reservation, OfferError> {
        let full = |limit| OfferError::Full { limit };
        let message = Arc::clone(&self.messages)
            .try_acquire_owned()
            .map_err(|e| match e {
                TryAcquireError::NoPermits | TryAcquireError::Closed => full(Limit::Messages {
                    max: self.max_messages,
                }),
            })?;
        let bytes = match self.byte_permits(size) {
            0 => None,
            n => Some(
                Arc::clone(&self.bytes)
                    .try_acquire_many_owned(n)
                    .map_err(|_| {
                        full(Limit::Bytes {
                            max: self.max_bytes as u64,
                        })
                    })?,
            ),
        };
        Ok(Reservation {
            _message: message,
            _bytes: bytes,
        })
    }

    /// The byte permits a message of `size` takes: at most all of them, so that one larger than
    /// the limit does not wait for ever (the outbox refuses it as too large).
    fn byte_permits(&self, size: usize) -> u32 {
        u32::try_from(size.min(self.max_bytes)).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reservation_holds_room_until_it_is_dropped() {
        let room = Room::new(2, 100);
        let a = room.try_reserve(60).unwrap();
        assert_eq!(
            room.try_reserve(60).unwrap_err(),
            OfferError::Full {
                limit: Limit::Bytes { max: 100 }
            }
        );
        let b = room.try_reserve(40).unwrap();
        assert_eq!(
            room.try_reserve(0).unwrap_err().to_string(),
            "outbox full: at its limit of 2 messages, with nothing of lower priority to shed"
        );
        drop(a);
        let _c = room.try_reserve(60).unwrap();
        drop(b);
        // Larger than the whole limit: it takes all of it rather than waiting for ever.
        assert!(room.try_reserve(1000).is_err());
    }

    #[tokio::test]
    async fn a_waiting_reservation_gets_room_when_one_is_given_back() {
        let room = Arc::new(Room::new(1, 100));
        let held = room.reserve(10).await;
        let waiter = {
            let room = room.clone();
            tokio::spawn(async move { room.reserve(10).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        let _got = waiter.await.unwrap();
    }
}
