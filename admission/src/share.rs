//! Each client's share of the webhook calls in flight: a count per client (an IPv4
//! address, an IPv6 /64) held while its calls are out, so one client making up
//! credentials cannot take every call slot from the others.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Calls in flight (or waiting for a slot) per client.
pub(crate) type Shares = Arc<Mutex<HashMap<ClientKey, usize>>>;

/// Whom a per-client share is counted for: an IPv4 address, or an IPv6 /64 (one
/// subscriber usually holds a whole /64, and could otherwise take a new address per
/// call); `None` for a client of unknown address (all of those share one share).
pub(crate) type ClientKey = Option<IpAddr>;

pub(crate) fn client_key(ip: Option<IpAddr>) -> ClientKey {
    ip.map(|ip| match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(prefix.into())
        }
    })
}

/// One call counted in its client's share until dropped.
pub(crate) struct ClientShare {
    map: Shares,
    key: ClientKey,
}

impl ClientShare {
    /// Counts a call for `key`, unless its share of `limit` calls is used up.
    pub(crate) fn take(map: &Shares, key: ClientKey, limit: usize) -> Option<Self> {
        let mut m = map.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(key).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(Self {
            map: map.clone(),
            key,
        })
    }
}

impl Drop for ClientShare {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}
