//! How many TCP connections may be open: in all, and per source address.
//!
//! The accept loop takes a [`Slot`] for every connection before it creates
//! any other state for it; a refused connection gets a one-line HTTP answer
//! and is closed. A slot is given back when the connection ends (on drop).
//! Behind a trusted proxy the peer address is the proxy's, so those
//! connections count in the total only until their first request names the
//! client (`X-Forwarded-For`); the slot is then rebound to that address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `--max-connections` reached.
    Total,
    /// `--max-connections-per-ip` reached for this address.
    PerIp,
}

impl Refused {
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Total => "max_connections",
            Refused::PerIp => "max_connections_per_ip",
        }
    }

    /// The whole HTTP answer a refused connection gets before it is closed.
    pub fn response(self) -> String {
        let (status, error) = match self {
            Refused::Total => (
                "503 Service Unavailable",
                "too many connections to this server",
            ),
            Refused::PerIp => (
                "429 Too Many Requests",
                "too many connections from your address",
            ),
        };
        let body = format!(r#"{{"error":"{error}","code":"{}"}}"#, self.as_str());
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\nretry-after: 5\r\n\r\n{body}",
            body.len()
        )
    }
}

/// The counters. `0` as a limit means no limit.
#[derive(Debug)]
pub struct ConnLimits {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnLimits {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Self> {
        Arc::new(ConnLimits {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
        })
    }

    /// Takes a slot for a connection from `ip` (`None`: a trusted proxy,
    /// counted in the total only for now).
    pub fn acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Slot, Refused> {
        let prev = self.total.fetch_add(1, Ordering::AcqRel);
        if self.max_total > 0 && prev >= self.max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total);
        }
        let slot = Slot {
            limits: self.clone(),
            ip: Mutex::new(None),
        };
        if let Some(ip) = ip {
            // On refusal the slot drops and gives the total back.
            slot.rebind(ip)?;
        }
        Ok(slot)
    }

    /// Connections open now, in all.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Acquire)
    }

    /// Connections open now from `ip`.
    pub fn open_from(&self, ip: IpAddr) -> usize {
        self.per_ip
            .lock()
            .map(|m| m.get(&ip).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    fn take_ip(&self, ip: IpAddr) -> Result<(), Refused> {
        let Ok(mut map) = self.per_ip.lock() else {
            return Ok(());
        };
        let n = map.entry(ip).or_insert(0);
        if self.max_per_ip > 0 && *n >= self.max_per_ip {
            if *n == 0 {
                map.remove(&ip);
            }
            return Err(Refused::PerIp);
        }
        *n += 1;
        Ok(())
    }

    fn give_ip(&self, ip: IpAddr) {
        if let Ok(mut map) = self.per_ip.lock()
            && let Some(n) = map.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                map.remove(&ip);
            }
        }
    }
}

/// One connection's place in the counts; given back on drop.
#[derive(Debug)]
pub struct Slot {
    limits: Arc<ConnLimits>,
    ip: Mutex<Option<IpAddr>>,
}

impl Slot {
    /// Counts this connection against `ip` (instead of the address it was
    /// counted against before, if any). Refused when `ip` is at its limit;
    /// the old count is kept then.
    pub fn rebind(&self, ip: IpAddr) -> Result<(), Refused> {
        let Ok(mut current) = self.ip.lock() else {
            return Ok(());
        };
        if *current == Some(ip) {
            return Ok(());
        }
        self.limits.take_ip(ip)?;
        if let Some(old) = current.replace(ip) {
            self.limits.give_ip(old);
        }
        Ok(())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(Some(ip)) = self.ip.get_mut().map(|ip| ip.take()) {
            self.limits.give_ip(ip);
        }
        self.limits.total.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The client's address as [`client_ip`] found it, in each request's
/// extensions (absent when switchboard is embedded in another server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The client's address for a connection from `peer`: the peer itself,
/// unless it is a trusted proxy, in which case the right-most address of
/// `X-Forwarded-For` that is not a trusted proxy (the left part of the header
/// is whatever the client sent, so it is never believed).
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpAddr]) -> IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let Some(header) = forwarded_for else {
        return peer;
    };
    let mut client = peer;
    for part in header.rsplit(',') {
        match part.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = ip;
                if !trusted.contains(&ip) {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn total_and_per_ip_limits() {
        let l = ConnLimits::new(3, 2);
        let a1 = l.acquire(Some(ip("10.0.0.1"))).unwrap();
        let _a2 = l.acquire(Some(ip("10.0.0.1"))).unwrap();
        assert_eq!(l.acquire(Some(ip("10.0.0.1"))).unwrap_err(), Refused::PerIp);
        assert_eq!(l.open(), 2, "a refused connection is not counted");
        let _b = l.acquire(Some(ip("10.0.0.2"))).unwrap();
        assert_eq!(l.acquire(Some(ip("10.0.0.3"))).unwrap_err(), Refused::Total);
        drop(a1);
        assert_eq!(l.open_from(ip("10.0.0.1")), 1);
        assert!(l.acquire(Some(ip("10.0.0.1"))).is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        let l = ConnLimits::new(0, 0);
        let slots: Vec<_> = (0..1000)
            .map(|_| l.acquire(Some(ip("::1"))).unwrap())
            .collect();
        assert_eq!(l.open_from(ip("::1")), 1000);
        drop(slots);
        assert_eq!(l.open(), 0);
        assert_eq!(l.open_from(ip("::1")), 0);
    }

    #[test]
    fn proxied_connections_rebind_to_the_client() {
        let l = ConnLimits::new(0, 1);
        let s1 = l.acquire(None).unwrap();
        let s2 = l.acquire(None).unwrap();
        s1.rebind(ip("1.1.1.1")).unwrap();
        assert_eq!(s2.rebind(ip("1.1.1.1")).unwrap_err(), Refused::PerIp);
        s2.rebind(ip("2.2.2.2")).unwrap();
        s2.rebind(ip("3.3.3.3")).unwrap();
        assert_eq!(l.open_from(ip("2.2.2.2")), 0, "moved, not added");
        drop(s1);
        drop(s2);
        assert_eq!(l.open(), 0);
        assert_eq!(l.open_from(ip("3.3.3.3")), 0);
    }

    #[test]
    fn forwarded_for_is_read_only_from_trusted_proxies() {
        let proxy = ip("127.0.0.1");
        let trusted = [proxy];
        assert_eq!(
            client_ip(ip("9.9.9.9"), Some("1.2.3.4"), &trusted),
            ip("9.9.9.9")
        );
        assert_eq!(client_ip(proxy, Some("1.2.3.4"), &trusted), ip("1.2.3.4"));
        // A client forging the left part does not choose its address.
        assert_eq!(
            client_ip(proxy, Some("6.6.6.6, 1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
        assert_eq!(client_ip(proxy, None, &trusted), proxy);
        assert_eq!(client_ip(proxy, Some("garbage"), &trusted), proxy);
    }

    #[test]
    fn refusal_answers_are_json() {
        let r = Refused::PerIp.response();
        assert!(r.starts_with("HTTP/1.1 429"));
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["code"], "max_connections_per_ip");
    }
}
