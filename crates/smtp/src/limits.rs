//! Per-client limits shared by all sessions of a node: concurrent sessions, and messages and
//! recipients per minute from one IP address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Entry {
    sessions: usize,
    window_start: Instant,
    messages: u32,
    recipients: u32,
}

/// Counts per client address.
#[derive(Debug, Default)]
pub(crate) struct ClientTracker {
    clients: Mutex<HashMap<IpAddr, Entry>>,
}

impl ClientTracker {
    fn with<R>(&self, ip: IpAddr, f: impl FnOnce(&mut Entry) -> R) -> R {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let entry = clients.entry(ip).or_insert(Entry {
            sessions: 0,
            window_start: now,
            messages: 0,
            recipients: 0,
        });
        if now.duration_since(entry.window_start) >= WINDOW {
            entry.window_start = now;
            entry.messages = 0;
            entry.recipients = 0;
        }
        f(entry)
    }

    /// Admits a new session from `ip` if it has fewer than `limit` open.
    pub(crate) fn open(&self, ip: IpAddr, limit: usize) -> bool {
        self.with(ip, |e| {
            if e.sessions >= limit {
                return false;
            }
            e.sessions += 1;
            true
        })
    }

    /// A session from `ip` ended.
    pub(crate) fn close(&self, ip: IpAddr) {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = clients.get_mut(&ip) {
            e.sessions = e.sessions.saturating_sub(1);
        }
        // Forget idle clients whose window has passed.
        clients.retain(|_, e| e.sessions > 0 || e.window_start.elapsed() < WINDOW);
    }

    /// Counts a message from `ip`; false when it already sent `limit` this minute (0: no limit).
    pub(crate) fn message(&self, ip: IpAddr, limit: u32) -> bool {
        self.count(ip, limit, |e| &mut e.messages)
    }

    /// Counts a recipient from `ip`; false when it already gave `limit` this minute.
    pub(crate) fn recipient(&self, ip: IpAddr, limit: u32) -> bool {
        self.count(ip, limit, |e| &mut e.recipients)
    }

    fn count(&self, ip: IpAddr, limit: u32, counter: fn(&mut Entry) -> &mut u32) -> bool {
        limit == 0
            || self.with(ip, |e| {
                let n = counter(e);
                if *n >= limit {
                    return false;
                }
                *n += 1;
                true
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sessions_and_rates_per_address() {
        let t = ClientTracker::default();
        let a: IpAddr = "192.0.2.1".parse().expect("ip");
        let b: IpAddr = "192.0.2.2".parse().expect("ip");
        assert!(t.open(a, 2));
        assert!(t.open(a, 2));
        assert!(!t.open(a, 2), "third session refused");
        assert!(t.open(b, 2), "another client is not affected");
        t.close(a);
        assert!(t.open(a, 2));
        assert!(t.message(a, 2) && t.message(a, 2));
        assert!(!t.message(a, 2));
        assert!(t.message(b, 2));
        assert!(t.message(a, 0), "0 means no limit");
        assert!(t.recipient(a, 1));
        assert!(!t.recipient(a, 1));
    }
}
