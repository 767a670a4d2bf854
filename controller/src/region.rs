//! Where a viewer is: a table of CIDR blocks to region names ([`RegionTable`], longest
//! prefix wins) for the client's address, parsed from `10.1.0.0/16=eu-west` entries
//! ([`RegionCidr`]), IPv4 and IPv6. An IPv4 address seen as IPv4-mapped IPv6
//! (`::ffff:10.1.2.3`, from a dual-stack listener) matches the IPv4 blocks.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// Why a CIDR block or a `CIDR=region` entry does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidrError {
    /// No `/prefix` part.
    #[error("{0:?}: expected ADDRESS/PREFIX (e.g. 10.1.0.0/16)")]
    NoPrefix(String),
    /// The address is neither IPv4 nor IPv6.
    #[error("{0:?}: not an IPv4 or IPv6 address")]
    BadAddress(String),
    /// The prefix length is not a number within the address's width.
    #[error("{input:?}: prefix length must be a number from 0 to {max}")]
    BadPrefix {
        /// The block as given.
        input: String,
        /// 32 or 128.
        max: u8,
    },
    /// Bits are set past the prefix, which usually means a typo.
    #[error("{input:?}: address has bits set past the prefix (did you mean {suggestion}?)")]
    HostBits {
        /// The block as given.
        input: String,
        /// The block with those bits cleared.
        suggestion: String,
    },
    /// A `CIDR=region` entry without `=` or with an empty region.
    #[error("{0:?}: expected CIDR=REGION (e.g. 10.1.0.0/16=eu-west)")]
    BadEntry(String),
}

/// An IPv4 or IPv6 block: an address with every bit past `prefix` clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// The `prefix` leading bits set, as a 128-bit mask of a `width`-bit address.
fn mask(prefix: u8, width: u8) -> u128 {
    let all = if width == 128 {
        u128::MAX
    } else {
        (1u128 << width) - 1
    };
    if prefix == 0 {
        0
    } else {
        all & !((1u128 << (width - prefix)) - 1)
    }
}

fn bits(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; any other address unchanged.
fn unmap(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl Cidr {
    /// The block's first address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// Its prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let (net, width) = bits(self.addr);
        let (ip, ip_width) = bits(unmap(ip));
        width == ip_width && ip & mask(self.prefix, width) == net
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(input: &str) -> Result<Self, CidrError> {
        let s = input.trim();
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| CidrError::NoPrefix(s.to_owned()))?;
        let addr: IpAddr = addr
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .or_else(|_| addr.parse::<Ipv6Addr>().map(IpAddr::V6))
            .map_err(|_| CidrError::BadAddress(s.to_owned()))?;
        let (value, width) = bits(addr);
        let bad_prefix = || CidrError::BadPrefix {
            input: s.to_owned(),
            max: width,
        };
        // Digits only: `u8::from_str` would take "+8".
        if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad_prefix());
        }
        let prefix: u8 = prefix.parse().map_err(|_| bad_prefix())?;
        if prefix > width {
            return Err(bad_prefix());
        }
        let net = value & mask(prefix, width);
        if net != value {
            let cleared = match addr {
                IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(net as u32)),
                IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(net)),
            };
            return Err(CidrError::HostBits {
                input: s.to_owned(),
                suggestion: format!("{cleared}/{prefix}"),
            });
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One `CIDR=region` entry (`--region-cidr 10.1.0.0/16=eu-west`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegionCidr {
    /// The block.
    pub cidr: Cidr,
    /// The region of the clients in it.
    pub region: String,
}

impl FromStr for RegionCidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, CidrError> {
        let (cidr, region) = s
            .trim()
            .split_once('=')
            .ok_or_else(|| CidrError::BadEntry(s.to_owned()))?;
        let region = region.trim();
        if region.is_empty() || region.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CidrError::BadEntry(s.to_owned()));
        }
        Ok(RegionCidr {
            cidr: cidr.parse()?,
            region: region.to_owned(),
        })
    }
}

impl fmt::Display for RegionCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.cidr, self.region)
    }
}

/// Client address → region, longest prefix first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegionTable {
    /// Sorted by prefix length, longest first, so the first match is the longest.
    entries: Vec<RegionCidr>,
}

impl RegionTable {
    /// A table of `entries` (in any order; for two equal blocks the first given wins).
    pub fn new(entries: impl IntoIterator<Item = RegionCidr>) -> Self {
        let mut entries: Vec<RegionCidr> = entries.into_iter().collect();
        // Stable: among equal prefixes the order given is kept.
        entries.sort_by_key(|e| std::cmp::Reverse(e.cidr.prefix));
        RegionTable { entries }
    }

    /// Whether the table has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The region of the most specific block holding `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&str> {
        self.entries
            .iter()
            .find(|e| e.cidr.contains(ip))
            .map(|e| e.region.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v4_blocks() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped matches");
        assert!(!c.contains(ip("2001:db8::1")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("::1")), "v4 /0 is not v6");
        let host: Cidr = "192.0.2.7/32".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.6")));
        assert_eq!(c.to_string(), "10.1.0.0/16");
    }

    #[test]
    fn v6_blocks() {
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("10.0.0.1")));
        let all: Cidr = "::/0".parse().unwrap();
        assert!(all.contains(ip("fe80::1")));
        let host: Cidr = "::1/128".parse().unwrap();
        assert!(host.contains(ip("::1")));
        let odd: Cidr = "2001:db8:8000::/33".parse().unwrap();
        assert!(odd.contains(ip("2001:db8:8000::1")));
        assert!(!odd.contains(ip("2001:db8:7fff::1")));
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        for (input, want) in [
            ("10.0.0.0", "ADDRESS/PREFIX"),
            ("10.0.0/8", "not an IPv4"),
            ("10.0.0.0/33", "0 to 32"),
            ("2001:db8::/129", "0 to 128"),
            ("10.0.0.0/", "prefix length"),
            ("10.0.0.0/+8", "prefix length"),
            ("10.0.0.0/-1", "prefix length"),
            ("10.1.2.3/16", "did you mean 10.1.0.0/16"),
            ("2001:db8::1/32", "did you mean 2001:db8::/32"),
            ("eu/8", "not an IPv4"),
        ] {
            let err = input.parse::<Cidr>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
        for bad in ["10.0.0.0/8", "10.0.0.0/8=", "10.0.0.0/8=a b", "=eu"] {
            assert!(bad.parse::<RegionCidr>().is_err(), "{bad}");
        }
        let e: RegionCidr = " 10.1.0.0/16=eu-west ".parse().unwrap();
        assert_eq!(e.region, "eu-west");
        assert_eq!(e.to_string(), "10.1.0.0/16=eu-west");
    }

    #[test]
    fn longest_prefix_wins() {
        let t = RegionTable::new(
            [
                "0.0.0.0/0=default",
                "10.0.0.0/8=eu",
                "10.1.2.0/24=eu-west-1a",
                "10.1.0.0/16=eu-west",
                "2001:db8::/32=us",
                "2001:db8:1::/48=us-east",
            ]
            .map(|s| s.parse::<RegionCidr>().unwrap()),
        );
        assert_eq!(t.lookup(ip("10.1.2.3")), Some("eu-west-1a"));
        assert_eq!(t.lookup(ip("10.1.3.3")), Some("eu-west"));
        assert_eq!(t.lookup(ip("10.9.3.3")), Some("eu"));
        assert_eq!(t.lookup(ip("192.0.2.1")), Some("default"));
        assert_eq!(t.lookup(ip("::ffff:10.1.2.3")), Some("eu-west-1a"));
        assert_eq!(t.lookup(ip("2001:db8:1::5")), Some("us-east"));
        assert_eq!(t.lookup(ip("2001:db8:2::5")), Some("us"));
        assert_eq!(t.lookup(ip("fe80::1")), None);
        assert!(RegionTable::default().lookup(ip("10.0.0.1")).is_none());
    }
}
