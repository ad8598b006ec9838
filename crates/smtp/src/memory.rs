//! The node-wide budget for message bytes held in SMTP sessions.
//!
//! Each session keeps the message it receives in memory until the message is committed (the
//! body then also travels in the Raft entry and its copies). Without a bound, a thousand
//! sessions each sending a message of the size limit would need a thousand times that limit.
//! A transaction reserves from [`MessageMemory`] what it holds: the declared `SIZE=` at
//! `MAIL` (refused with `452 4.3.1` when the budget cannot cover it) and then, as the data
//! arrives, what the buffer grows to (over the budget the rest is read and dropped, and the end
//! of data gets `451 4.3.1`). The reservation is given back when the transaction ends, however
//! it ends: the client then retries later instead of the node being killed for its memory.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The budget is kept in units of this many bytes.
const UNIT: u64 = 64 * 1024;

/// The bytes all sessions of a node may hold at once. Cheap to clone; clones share.
#[derive(Debug, Clone)]
pub struct MessageMemory {
    units: Arc<Semaphore>,
    total: u64,
}

/// Bytes reserved by one transaction; given back on drop.
#[derive(Debug)]
pub struct Reservation {
    permit: Option<OwnedSemaphorePermit>,
    units: Arc<Semaphore>,
}

fn units_for(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT)).unwrap_or(u32::MAX)
}

impl MessageMemory {
    /// A budget of `bytes`.
    pub fn new(bytes: u64) -> MessageMemory {
        let units = usize::try_from(bytes / UNIT)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        MessageMemory {
            units: Arc::new(Semaphore::new(units)),
            total: bytes,
        }
    }

    /// The whole budget, in bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Bytes not reserved now.
    pub fn available(&self) -> u64 {
        self.units.available_permits() as u64 * UNIT
    }

    /// Reserves `bytes` (none: an empty reservation that can grow), or `None` when the budget
    /// cannot cover them now.
    pub fn reserve(&self, bytes: u64) -> Option<Reservation> {
        let mut r = Reservation {
            permit: None,
            units: self.units.clone(),
        };
        r.grow_to(bytes).then_some(r)
    }
}

impl Reservation {
    /// Bytes reserved.
    pub fn bytes(&self) -> u64 {
        self.permit
            .as_ref()
            .map(|p| p.num_permits() as u64 * UNIT)
            .unwrap_or(0)
    }

    /// Gives everything reserved back now.
    pub fn release(&mut self) {
        self.permit = None;
    }

    /// Grows the reservation to cover `bytes`; false (and unchanged) when the budget cannot.
    pub fn grow_to(&mut self, bytes: u64) -> bool {
        let have = self.permit.as_ref().map(|p| p.num_permits()).unwrap_or(0) as u32;
        let want = units_for(bytes);
        if want <= have {
            return true;
        }
        match self.units.clone().try_acquire_many_owned(want - have) {
            Ok(more) => {
                match &mut self.permit {
                    Some(p) => p.merge(more),
                    None => self.permit = Some(more),
                }
                true
            }
            Err(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_share_the_budget_and_give_it_back_on_drop() {
        let m = MessageMemory::new(1024 * 1024);
        let mut a = m.reserve(300 * 1024).expect("fits");
        assert_eq!(a.bytes(), 320 * 1024, "rounded up to whole units");
        let b = m.reserve(700 * 1024).expect("fits");
        assert!(m.reserve(64 * 1024).is_none(), "the budget is spent");
        assert!(!a.grow_to(400 * 1024), "no room to grow");
        assert_eq!(a.bytes(), 320 * 1024, "a failed growth changes nothing");
        drop(b);
        assert!(a.grow_to(900 * 1024));
        a.release();
        assert_eq!(m.available(), 1024 * 1024);
        assert!(
            a.grow_to(64 * 1024),
            "a released reservation can grow again"
        );
        drop(a);
        assert_eq!(m.available(), 1024 * 1024);
    }
}
