//! Neighbour cache: next hop → MAC, with expiry and resolution retries; one per family
//! (ARP for IPv4, Neighbor Discovery for IPv6).
//!
//! Two modes: with our own ARP (TAP, simulator) entries are learned from ARP and expire;
//! with external neighbours (AF_XDP, where the kernel owns ARP) the host sets entries
//! from the kernel's table and reads which next hops the stack is missing.

use crate::time::{Duration, Instant};
use crate::wire::MacAddr;
use core::net::Ipv4Addr;

/// How long a learned entry stays valid (Linux's reachable time is 15–45 s; a stale
/// entry is still used there, so a longer single timeout behaves alike).
pub const DEFAULT_REACHABLE_TIME: Duration = Duration::from_secs(60);
/// Interval between ARP requests while resolving (Linux retrans_time).
pub const DEFAULT_RETRANSMIT: Duration = Duration::from_secs(1);
/// ARP requests sent before a resolution fails (Linux mcast_solicit).
pub const DEFAULT_MAX_PROBES: u8 = 3;
/// How long a failed resolution stays failed before a new packet restarts it.
pub const DEFAULT_FAILED_HOLD: Duration = Duration::from_secs(3);
/// External neighbours: how soon after a miss the host should look the next hop up
/// again (doubling on each miss, up to `retransmit`). Nothing tells the host when the
/// kernel has resolved it, and a veth's ARP round trip takes tens of microseconds.
pub const EXTERNAL_FIRST_RECHECK: Duration = Duration::from_micros(500);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Reachable {
        mac: MacAddr,
        expires: Option<Instant>,
    },
    /// Resolving: `probes` requests sent, the next one due at `next_probe`.
    Incomplete {
        probes: u8,
        next_probe: Instant,
    },
    Failed {
        until: Instant,
    },
}

#[derive(Clone, Copy, Debug)]
struct Entry<A> {
    ip: A,
    state: State,
    /// Last time the entry was used or confirmed: the least recently used is evicted.
    touched: Instant,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(MacAddr),
    /// Not known yet; `send_request` says an ARP request should go out now.
    Pending {
        send_request: bool,
    },
    /// Resolution failed recently: drop or defer.
    Failed,
}

/// Tunables of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighborConfig {
    pub capacity: usize,
    pub reachable_time: Duration,
    pub retransmit: Duration,
    pub max_probes: u8,
    pub failed_hold: Duration,
}

impl Default for NeighborConfig {
    fn default() -> Self {
        NeighborConfig {
            capacity: 256,
            reachable_time: DEFAULT_REACHABLE_TIME,
            retransmit: DEFAULT_RETRANSMIT,
            max_probes: DEFAULT_MAX_PROBES,
            failed_hold: DEFAULT_FAILED_HOLD,
        }
    }
}

/// The cache. Fixed capacity, allocated at start; the least recently used entry is
/// evicted when full.
#[derive(Debug)]
pub struct NeighborCache<A = Ipv4Addr> {
    cfg: NeighborConfig,
    entries: Vec<Entry<A>>,
    last_hit: core::cell::Cell<usize>,
}

impl<A: Copy + PartialEq> NeighborCache<A> {
    pub fn new(cfg: NeighborConfig) -> Self {
        let capacity = cfg.capacity.max(1);
        NeighborCache {
            cfg: NeighborConfig { capacity, ..cfg },
            entries: Vec::with_capacity(capacity),
            last_hit: core::cell::Cell::new(0),
        }
    }

    fn position(&self, ip: A) -> Option<usize> {
        // Most traffic goes to one next hop (the gateway, or the one peer): try the
        // entry that answered last before scanning.
        let hint = self.last_hit.get();
        if self.entries.get(hint).is_some_and(|e| e.ip == ip) {
            return Some(hint);
        }
        let i = self.entries.iter().position(|e| e.ip == ip)?;
        self.last_hit.set(i);
        Some(i)
    }

    fn slot_for(&mut self, ip: A, now: Instant) -> usize {
        if let Some(i) = self.position(ip) {
            return i;
        }
        if self.entries.len() < self.cfg.capacity {
            self.entries.push(Entry {
                ip,
                state: State::Failed { until: now },
                touched: now,
            });
            return self.entries.len() - 1;
        }
        let victim = self
            .entries
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.touched)
            .map(|(i, _)| i)
            .unwrap_or(0);
        self.entries[victim] = Entry {
            ip,
            state: State::Failed { until: now },
            touched: now,
        };
        victim
    }

    /// Records `ip` at `mac`. `expires`: whether the entry ages out (learned by ARP) or
    /// stays until removed (set by the host from the kernel's table).
    pub fn insert(&mut self, ip: A, mac: MacAddr, now: Instant, expires: bool) {
        let expires = expires.then(|| now + self.cfg.reachable_time);
        let i = self.slot_for(ip, now);
        self.entries[i].state = State::Reachable { mac, expires };
        self.entries[i].touched = now;
    }

    /// Updates `ip` only if it is already cached (gratuitous ARP, replies to others).
    /// Returns whether it was.
    pub fn refresh(&mut self, ip: A, mac: MacAddr, now: Instant) -> bool {
        match self.position(ip) {
            Some(i) => {
                let expires = match self.entries[i].state {
                    State::Reachable { expires: None, .. } => None,
                    _ => Some(now + self.cfg.reachable_time),
                };
                self.entries[i].state = State::Reachable { mac, expires };
                self.entries[i].touched = now;
                true
            }
            None => false,
        }
    }

    /// Marks `ip` unresolvable until `failed_hold` has passed: lookups answer Failed
    /// (what waits for it is dropped), then the next one asks again.
    pub fn fail(&mut self, ip: A, now: Instant) {
        let i = self.slot_for(ip, now);
        self.entries[i].state = State::Failed {
            until: now + self.cfg.failed_hold,
        };
        self.entries[i].touched = now;
    }

    pub fn remove(&mut self, ip: A) {
        if let Some(i) = self.position(ip) {
            self.entries.swap_remove(i);
        }
    }

    /// The MAC of `ip` if known and not expired, without side effects.
    pub fn get(&self, ip: A, now: Instant) -> Option<MacAddr> {
        match self.position(ip).map(|i| self.entries[i].state) {
            Some(State::Reachable { mac, expires }) if expires.is_none_or(|t| now < t) => Some(mac),
            _ => None,
        }
    }

    /// Looks `ip` up for sending; starts or continues resolution when it is unknown.
    /// With `resolve` false (external neighbours) a miss only records the wish.
    #[inline]
    pub fn lookup(&mut self, ip: A, now: Instant, resolve: bool) -> Lookup {
        // The common case, inlined: the entry that answered last, still reachable.
        let hint = self.last_hit.get();
        if let Some(e) = self.entries.get_mut(hint).filter(|e| e.ip == ip) {
            if let State::Reachable { mac, expires } = e.state {
                if expires.is_none_or(|t| now < t) {
                    e.touched = now;
                    return Lookup::Found(mac);
                }
            }
        }
        self.lookup_slow(ip, now, resolve)
    }

    fn lookup_slow(&mut self, ip: A, now: Instant, resolve: bool) -> Lookup {
        let cfg = self.cfg;
        let i = match self.position(ip) {
            Some(i) => i,
            None => {
                let i = self.slot_for(ip, now);
                self.entries[i].state = State::Incomplete {
                    probes: 0,
                    next_probe: now,
                };
                i
            }
        };
        let e = &mut self.entries[i];
        match e.state {
            State::Reachable { mac, expires } => {
                if expires.is_none_or(|t| now < t) {
                    e.touched = now;
                    return Lookup::Found(mac);
                }
                e.state = State::Incomplete {
                    probes: 0,
                    next_probe: now,
                };
            }
            State::Failed { until } => {
                if now < until {
                    return Lookup::Failed;
                }
                e.state = State::Incomplete {
                    probes: 0,
                    next_probe: now,
                };
            }
            State::Incomplete { .. } => {}
        }
        e.touched = now;
        let State::Incomplete { probes, next_probe } = e.state else {
            unreachable!("state set to Incomplete above")
        };
        if !resolve {
            // External: `next_probe` is when the host should look it up again.
            if now >= next_probe {
                let backoff = EXTERNAL_FIRST_RECHECK.0 << probes.min(16);
                e.state = State::Incomplete {
                    probes: probes.saturating_add(1),
                    next_probe: now + Duration(backoff.min(cfg.retransmit.0)),
                };
            }
            return Lookup::Pending {
                send_request: false,
            };
        }
        if now < next_probe {
            return Lookup::Pending {
                send_request: false,
            };
        }
        if probes >= cfg.max_probes {
            e.state = State::Failed {
                until: now + cfg.failed_hold,
            };
            return Lookup::Failed;
        }
        e.state = State::Incomplete {
            probes: probes + 1,
            next_probe: now + cfg.retransmit,
        };
        Lookup::Pending { send_request: true }
    }

    /// Next hops being resolved (or wanted, with external neighbours) without a MAC.
    pub fn missing(&self) -> impl Iterator<Item = A> + '_ {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::Incomplete { .. }))
            .map(|e| e.ip)
    }

    /// When the next ARP retransmission (or failure) is due; with external neighbours,
    /// when the host should next look up a next hop it has not found yet.
    pub fn poll_at(&self) -> Option<Instant> {
        self.entries
            .iter()
            .filter_map(|e| match e.state {
                State::Incomplete { next_probe, .. } => Some(next_probe),
                _ => None,
            })
            .min()
    }

    /// Drops resolutions nobody asked for since their probe fell due (the packets that
    /// wanted them were sent elsewhere or given up), so `poll_at` does not stay due.
    pub fn retire_unwanted(&mut self, now: Instant) {
        let unwanted = |e: &Entry<A>| match e.state {
            State::Incomplete { next_probe, .. } => next_probe <= now,
            _ => false,
        };
        // Usually none: a read-only look first (this runs at every dispatch).
        if self.entries.iter().any(unwanted) {
            self.entries.retain(|e| !unwanted(e));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    fn t(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    #[test]
    fn resolution_retries_then_fails_then_restarts() {
        let mut c = NeighborCache::new(NeighborConfig::default());
        assert_eq!(
            c.lookup(IP, t(0), true),
            Lookup::Pending { send_request: true }
        );
        assert_eq!(
            c.lookup(IP, t(500), true),
            Lookup::Pending {
                send_request: false
            }
        );
        assert_eq!(c.poll_at(), Some(t(1000)));
        assert_eq!(
            c.lookup(IP, t(1000), true),
            Lookup::Pending { send_request: true }
        );
        assert_eq!(
            c.lookup(IP, t(2000), true),
            Lookup::Pending { send_request: true }
        );
        assert_eq!(c.lookup(IP, t(3000), true), Lookup::Failed);
        assert_eq!(c.lookup(IP, t(5999), true), Lookup::Failed);
        assert_eq!(
            c.lookup(IP, t(6000), true),
            Lookup::Pending { send_request: true }
        );
        c.insert(IP, MAC, t(6100), true);
        assert_eq!(c.lookup(IP, t(6200), true), Lookup::Found(MAC));
        assert_eq!(c.poll_at(), None);
        assert_eq!(c.missing().count(), 0);
    }

    #[test]
    fn learned_entries_expire_host_entries_do_not() {
        let mut c = NeighborCache::new(NeighborConfig::default());
        c.insert(IP, MAC, t(0), true);
        assert_eq!(c.get(IP, t(59_999)), Some(MAC));
        assert_eq!(c.get(IP, t(60_000)), None);
        assert_eq!(
            c.lookup(IP, t(60_000), true),
            Lookup::Pending { send_request: true }
        );
        c.insert(IP, MAC, t(0), false);
        assert_eq!(c.get(IP, t(10_000_000)), Some(MAC));
    }

    #[test]
    fn external_mode_records_missing_and_lru_evicts() {
        let mut c = NeighborCache::new(NeighborConfig {
            capacity: 2,
            ..Default::default()
        });
        assert_eq!(
            c.lookup(IP, t(0), false),
            Lookup::Pending {
                send_request: false
            }
        );
        assert_eq!(c.missing().collect::<Vec<_>>(), vec![IP]);
        c.insert(IP, MAC, t(1), false);
        assert_eq!(c.missing().count(), 0);
        let other = Ipv4Addr::new(10, 0, 0, 3);
        let third = Ipv4Addr::new(10, 0, 0, 4);
        c.insert(other, MAC, t(2), true);
        c.lookup(IP, t(3), false); // touch: `other` is now least recently used
        c.insert(third, MAC, t(4), true);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(other, t(5)), None);
        assert_eq!(c.get(IP, t(5)), Some(MAC));
        assert!(!c.refresh(other, MAC, t(6)));
        assert!(c.refresh(third, MacAddr([2, 0, 0, 0, 0, 9]), t(6)));
        assert_eq!(c.get(third, t(7)), Some(MacAddr([2, 0, 0, 0, 0, 9])));
    }
}
