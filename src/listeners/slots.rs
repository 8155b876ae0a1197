//! Fair shares of a listener's connection slots, so that no one client can take them all.
//!
//! Every connection a listener accepts asks [`Slots::admit`] for a slot, keyed by its source:
//! the peer's IPv4 address, or the /64 network of an IPv6 peer (one host usually owns a whole
//! /64, so counting single IPv6 addresses would cap nothing). Two rules:
//!
//! - **Per-source cap.** A source holds at most `per_source` connections. Its next one takes the
//!   slot of its own connection that has been idle longest; if all of them are busy, the new one
//!   is refused. Sources listed as exempt (trusted proxies, which carry many clients) have no
//!   per-source cap.
//! - **Fair share at the global cap.** When the listener holds `total` connections, a newcomer
//!   takes the slot of the longest-idle connection of the heaviest source that holds more
//!   connections than the newcomer does (or of its own, if it is the heaviest). A new source
//!   therefore always gets a slot while anyone else holds an idle one; a source that already holds
//!   as many as everyone else is refused.
//!
//! "Idle" means no request is being answered: a connection waiting for its next request, or
//! still receiving one (a slow-loris connection). Connections that are answering — a hit being
//! recorded, an answer being written — are never taken: the listener marks those with
//! [`Activity::busy`]. When a slot is taken its owner is told through [`Slot::evicted`] and closes
//! the connection (or, if it turned busy meanwhile, closes it right after the answer), so a
//! listener may briefly run a few connections over its cap while they close.
//!
//! Written here rather than taken from a crate: tower's and tokio's limiters count connections
//! (or requests) globally and make newcomers wait, which is exactly what let one client starve
//! the others; none of them takes slots back from the heaviest source.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

/// Whose connection it is, for the caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4(Ipv4Addr),
    /// The upper 64 bits of an IPv6 address.
    V6Net(u64),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(a) => Source::V4(a),
            IpAddr::V6(a) => Source::V6Net((u128::from(a) >> 64) as u64),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::V4(a) => write!(f, "{a}"),
            Source::V6Net(n) => write!(f, "{}/64", std::net::Ipv6Addr::from(u128::from(*n) << 64)),
        }
    }
}

/// A listener's caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Connections held at once.
    pub total: usize,
    /// Connections one source holds at once (exempt sources excepted).
    pub per_source: usize,
}

/// One connection's state, shared between the table and the connection's task.
#[derive(Debug)]
struct Conn {
    /// Requests being answered on it.
    busy: AtomicUsize,
    /// When it last became idle (µs since `epoch`): the longest idle gives way first.
    idle_since: AtomicU64,
    epoch: Instant,
    evict: Notify,
}

impl Conn {
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }
}

#[derive(Default)]
struct Table {
    total: usize,
    next_id: u64,
    sources: HashMap<Source, HashMap<u64, Arc<Conn>>>,
}

impl Table {
    fn count(&self, s: &Source) -> usize {
        self.sources.get(s).map_or(0, HashMap::len)
    }

    /// The connection of `s` idle longest (oldest first among equals).
    fn longest_idle(&self, s: &Source) -> Option<u64> {
        self.sources
            .get(s)?
            .iter()
            .filter(|(_, c)| c.is_idle())
            .min_by_key(|(id, c)| (c.idle_since.load(Ordering::Acquire), **id))
            .map(|(id, _)| *id)
    }

    /// The connection a newcomer from `own` (holding `own_count`) may take at the global cap.
    fn fair_share_victim(&self, own: &Source, own_count: usize) -> Option<(Source, u64)> {
        // Usually the heaviest source has an idle connection: one pass, no sorting.
        let heaviest = self.sources.iter().map(|(s, c)| (c.len(), s == own, s)).max_by_key(|&(n, o, _)| (n, o));
        if let Some((count, is_own, s)) = heaviest {
            if is_own || count > own_count {
                if let Some(id) = self.longest_idle(s) {
                    return Some((*s, id));
                }
            }
        }
        let mut by_weight: Vec<(usize, bool, &Source)> =
            self.sources.iter().map(|(s, c)| (c.len(), s == own, s)).collect();
        // Heaviest first; among equals, the newcomer's own source first.
        by_weight.sort_unstable_by_key(|&(count, is_own, _)| std::cmp::Reverse((count, is_own)));
        for (count, is_own, s) in by_weight {
            if !is_own && count <= own_count {
                break; // lighter than (or as heavy as) the newcomer: theirs to keep
            }
            if let Some(id) = self.longest_idle(s) {
                return Some((*s, id));
            }
        }
        None
    }

    fn remove(&mut self, s: &Source, id: u64) -> Option<Arc<Conn>> {
        let conns = self.sources.get_mut(s)?;
        let conn = conns.remove(&id)?;
        if conns.is_empty() {
            self.sources.remove(s);
        }
        self.total -= 1;
        Some(conn)
    }
}

/// The slots of one listener.
pub struct Slots {
    caps: Caps,
    exempt: Vec<ipnet::IpNet>,
    epoch: Instant,
    table: Mutex<Table>,
}

impl Slots {
    /// `exempt`: networks without a per-source cap (they still count toward the total).
    pub fn new(caps: Caps, exempt: Vec<ipnet::IpNet>) -> Arc<Slots> {
        Arc::new(Slots { caps, exempt, epoch: Instant::now(), table: Mutex::new(Table::default()) })
    }

    fn table(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot for a new connection from `ip`, taking one from an idle connection if the caps
    /// say so; None: refuse the connection.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let source = Source::of(ip);
        let exempt = self.exempt.iter().any(|n| n.contains(&ip.to_canonical()));
        let mut table = self.table();
        let own = table.count(&source);
        let victim = if !exempt && own >= self.caps.per_source {
            match table.longest_idle(&source) {
                Some(id) => Some((source, id)),
                None => {
                    tracing::debug!(%source, "connection refused: the source is at its cap and busy");
                    return None;
                }
            }
        } else if table.total >= self.caps.total {
            match table.fair_share_victim(&source, own) {
                Some(v) => Some(v),
                None => {
                    tracing::debug!(%source, "connection refused: every slot is busy or fairly held");
                    return None;
                }
            }
        } else {
            None
        };
        if let Some((s, id)) = victim {
            if let Some(conn) = table.remove(&s, id) {
                tracing::debug!(source = %s, for_source = %source, "idle connection closed for a newcomer");
                conn.evict.notify_one();
            }
        }
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            idle_since: AtomicU64::new(self.epoch.elapsed().as_micros() as u64),
            epoch: self.epoch,
            evict: Notify::new(),
        });
        let id = table.next_id;
        table.next_id += 1;
        table.total += 1;
        table.sources.entry(source).or_default().insert(id, conn.clone());
        Some(Slot { slots: self.clone(), source, id, conn })
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.table().total
    }
}

/// A connection's slot; dropping it gives the slot back.
pub struct Slot {
    slots: Arc<Slots>,
    source: Source,
    id: u64,
    conn: Arc<Conn>,
}

impl Slot {
    /// Resolves once the slot has been given to a newcomer: close the connection now if it is
    /// idle, else right after the answer in progress.
    pub async fn evicted(&self) {
        self.conn.evict.notified().await
    }

    /// Whether a request is being answered on this connection.
    pub fn is_busy(&self) -> bool {
        !self.conn.is_idle()
    }

    /// A handle that marks the connection busy, for the code answering its requests.
    pub fn activity(&self) -> Activity {
        Activity(self.conn.clone())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Gone already if its slot was taken.
        self.slots.table().remove(&self.source, self.id);
    }
}

/// Marks a connection busy (see [`Activity::busy`]).
#[derive(Clone)]
pub struct Activity(Arc<Conn>);

impl Activity {
    /// The connection counts as busy, and is never taken, until the guard is dropped.
    pub fn busy(&self) -> Busy {
        self.0.busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.0.clone())
    }
}

/// See [`Activity::busy`].
pub struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.idle_since.store(self.0.now(), Ordering::Release);
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Poll};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn slots(total: usize, per_source: usize) -> Arc<Slots> {
        Slots::new(Caps { total, per_source }, Vec::new())
    }

    /// Whether the slot's eviction was signalled (without waiting).
    fn was_evicted(s: &Slot) -> bool {
        let fut = s.evicted();
        let mut fut = std::pin::pin!(fut);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        matches!(fut.as_mut().poll(&mut cx), Poll::Ready(()))
    }

    #[test]
    fn sources_are_addresses_and_ipv6_slash_64s() {
        assert_eq!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:2:ffff::9")));
        assert_ne!(Source::of(ip("2001:db8:1:2::1")), Source::of(ip("2001:db8:1:3::1")));
        assert_eq!(Source::of(ip("::ffff:192.0.2.1")), Source::of(ip("192.0.2.1")), "mapped IPv4");
        assert_ne!(Source::of(ip("192.0.2.1")), Source::of(ip("192.0.2.2")));
        assert_eq!(Source::of(ip("2001:db8:1:2::1")).to_string(), "2001:db8:1:2::/64");
    }

    #[test]
    fn a_source_over_its_cap_gives_up_its_longest_idle_connection() {
        let s = slots(100, 2);
        let a1 = s.admit(ip("192.0.2.1")).unwrap();
        let a2 = s.admit(ip("192.0.2.1")).unwrap();
        let a3 = s.admit(ip("192.0.2.1")).expect("takes its own oldest idle slot");
        assert!(was_evicted(&a1) && !was_evicted(&a2) && !was_evicted(&a3));
        assert_eq!(s.held(), 2);
        drop(a1); // the evicted connection closes: nothing is given back twice
        assert_eq!(s.held(), 2);
        let _b = s.admit(ip("192.0.2.2")).expect("other sources are not affected");
        assert_eq!(s.held(), 3);
    }

    #[test]
    fn a_source_whose_connections_are_all_busy_is_refused() {
        let s = slots(100, 2);
        let a1 = s.admit(ip("192.0.2.1")).unwrap();
        let a2 = s.admit(ip("192.0.2.1")).unwrap();
        let (_b1, _b2) = (a1.activity().busy(), a2.activity().busy());
        assert!(a1.is_busy());
        assert!(s.admit(ip("192.0.2.1")).is_none());
        assert!(!was_evicted(&a1) && !was_evicted(&a2));
    }

    #[test]
    fn the_longest_idle_goes_first_not_the_oldest() {
        let s = slots(100, 2);
        let a1 = s.admit(ip("192.0.2.1")).unwrap();
        let a2 = s.admit(ip("192.0.2.1")).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        drop(a1.activity().busy()); // a1 just answered something
        let _a3 = s.admit(ip("192.0.2.1")).unwrap();
        assert!(!was_evicted(&a1) && was_evicted(&a2));
    }

    #[test]
    fn exempt_sources_have_no_per_source_cap() {
        let s = Slots::new(Caps { total: 10, per_source: 2 }, vec!["10.0.0.0/8".parse().unwrap()]);
        let proxy: Vec<Slot> = (0..5).map(|_| s.admit(ip("10.1.2.3")).unwrap()).collect();
        assert!(proxy.iter().all(|p| !was_evicted(p)));
        let direct: Vec<Slot> = (0..3).map(|_| s.admit(ip("192.0.2.1")).unwrap()).collect();
        assert!(was_evicted(&direct[0]), "the cap applies to everyone else");
        assert_eq!(s.held(), 7);
    }

    #[test]
    fn at_the_global_cap_the_heaviest_source_gives_way() {
        let s = slots(4, 10);
        let heavy: Vec<Slot> = (0..3).map(|_| s.admit(ip("192.0.2.1")).unwrap()).collect();
        let light = s.admit(ip("192.0.2.2")).unwrap();
        let new = s.admit(ip("192.0.2.3")).expect("a new source always gets a slot");
        assert!(was_evicted(&heavy[0]));
        assert!(!was_evicted(&light) && !was_evicted(&heavy[1]) && !was_evicted(&new));
        assert_eq!(s.held(), 4);
    }

    #[test]
    fn busy_connections_are_never_taken() {
        let s = slots(4, 10);
        let heavy: Vec<Slot> = (0..3).map(|_| s.admit(ip("192.0.2.1")).unwrap()).collect();
        let _busy: Vec<Busy> = heavy.iter().map(|h| h.activity().busy()).collect();
        let light = s.admit(ip("192.0.2.2")).unwrap();
        // The heaviest is all busy; the next one holds 1, more than the newcomer's 0.
        let first = s.admit(ip("192.0.2.3")).unwrap();
        assert!(was_evicted(&light));
        assert!(heavy.iter().all(|h| !was_evicted(h)));
        // Now everyone holds as much as 192.0.2.3 or is busy: its second connection may only
        // take its own idle one.
        let again = s.admit(ip("192.0.2.3")).unwrap();
        assert!(was_evicted(&first) && !was_evicted(&again));
        let _b = again.activity().busy();
        assert!(s.admit(ip("192.0.2.3")).is_none(), "nothing fair left to take");
        assert!(s.admit(ip("192.0.2.4")).is_none(), "every other slot is busy");
    }

    #[test]
    fn equals_keep_their_connections() {
        let s = slots(2, 10);
        let a = s.admit(ip("192.0.2.1")).unwrap();
        let b = s.admit(ip("192.0.2.2")).unwrap();
        let b2 = s.admit(ip("192.0.2.2")).expect("takes its own idle slot, not a's");
        assert!(!was_evicted(&a) && was_evicted(&b) && !was_evicted(&b2));
    }
}
