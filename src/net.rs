//! Network lists: addresses and networks an operator or caller names (ignore lists, trusted
//! proxies, a factory token's networks), parsed once into [`NetList`] and then only asked
//! whether an address lies in one of them.
//!
//! The parsing rule is Trapline's own, so it lives here rather than in `ipnet`: a bare
//! address is a /32 or /128, and a network with host bits set (`10.0.0.1/8`) is refused,
//! naming the network probably meant, since silently truncating it would ignore (or trust)
//! far more than was written.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;

/// Why a network was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetError {
    #[error("{0:?} is not an address or a network")]
    Unparsable(String),
    /// As written, and the network with its host bits cleared.
    #[error("{0} has host bits set; did you mean {1}?")]
    HostBits(String, IpNet),
}

/// Parses one network: `a.b.c.d/n`, `x::/n`, or a bare address (a /32 or /128), trimmed.
pub fn parse_net(raw: &str) -> Result<IpNet, NetError> {
    let raw = raw.trim();
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    let net: IpNet = raw.parse().map_err(|_| NetError::Unparsable(raw.to_string()))?;
    if net.trunc() != net {
        return Err(NetError::HostBits(raw.to_string(), net.trunc()));
    }
    Ok(net)
}

/// A list of networks, parsed once. Empty contains nothing (callers for whom an empty list
/// means "anywhere" say so where they ask).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetList(Vec<IpNet>);

impl NetList {
    /// Parses each entry with [`parse_net`]; blank entries are skipped.
    pub fn parse<I, S>(entries: I) -> Result<NetList, NetError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        entries
            .into_iter()
            .filter(|e| !e.as_ref().trim().is_empty())
            .map(|e| parse_net(e.as_ref()))
            .collect::<Result<_, _>>()
            .map(NetList)
    }

    /// A list read back from storage, where every entry was checked when it was written: an
    /// entry that no longer parses is left out rather than failing the read.
    pub fn from_stored<S: AsRef<str>>(entries: &[S]) -> NetList {
        NetList(entries.iter().filter_map(|e| e.as_ref().parse::<IpNet>().ok()).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn nets(&self) -> &[IpNet] {
        &self.0
    }

    /// Each network as text (`10.0.0.0/8`, a bare address as `192.0.2.7/32`), as stored.
    pub fn texts(&self) -> Vec<String> {
        self.0.iter().map(IpNet::to_string).collect()
    }

    /// Whether `ip` lies in one of the networks (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// [`NetList::contains`] for an address as text; text that is no address is in no list.
    pub fn contains_text(&self, ip: &str) -> bool {
        ip.parse::<IpAddr>().is_ok_and(|ip| self.contains(ip))
    }
}

impl From<Vec<IpNet>> for NetList {
    fn from(nets: Vec<IpNet>) -> NetList {
        NetList(nets)
    }
}

/// A comma-separated list, as flags and form fields carry it.
impl FromStr for NetList {
    type Err = NetError;
    fn from_str(s: &str) -> Result<NetList, NetError> {
        NetList::parse(s.split(','))
    }
}

/// Comma-separated, so it reads back with [`FromStr`].
impl fmt::Display for NetList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

/// Written as a list of texts.
impl serde::Serialize for NetList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(IpNet::to_string))
    }
}

/// Read from one comma-separated text or a list of texts (configuration files use both).
impl<'de> serde::Deserialize<'de> for NetList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<NetList, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            List(Vec<String>),
        }
        match Form::deserialize(d)? {
            Form::Text(t) => t.parse(),
            Form::List(l) => NetList::parse(l),
        }
        .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nets_parse_by_trapline_rules() {
        assert_eq!(parse_net(" 192.0.2.7 ").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(parse_net("2001:db8::1").unwrap().to_string(), "2001:db8::1/128");
        assert_eq!(parse_net("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(parse_net("banana"), Err(NetError::Unparsable("banana".into())));
        let e = parse_net("10.0.0.1/8").unwrap_err();
        assert_eq!(e.to_string(), "10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?");
    }

    #[test]
    fn lists_contain_their_addresses() {
        let l: NetList = "10.0.0.0/8, ,192.0.2.7".parse().unwrap();
        assert_eq!(l.len(), 2);
        assert!(l.contains_text("10.1.2.3") && l.contains_text("192.0.2.7"));
        assert!(!l.contains_text("192.0.2.8") && !l.contains_text("not an address"));
        assert!(l.contains_text("::ffff:10.9.9.9"), "IPv4-mapped addresses count as IPv4");
        assert!(!NetList::default().contains_text("10.1.2.3"), "an empty list contains nothing");
        assert!("10.0.0.0/8,banana".parse::<NetList>().is_err());
    }

    #[test]
    fn text_round_trips() {
        let l: NetList = "10.0.0.0/8,192.0.2.7".parse().unwrap();
        assert_eq!(l.to_string(), "10.0.0.0/8,192.0.2.7/32");
        assert_eq!(l.to_string().parse::<NetList>().unwrap(), l);
        assert_eq!(l.texts(), ["10.0.0.0/8", "192.0.2.7/32"]);
        assert_eq!(NetList::from_stored(&l.texts()), l);
    }

    #[test]
    fn serde_takes_text_or_a_list() {
        let from_text: NetList = serde_json::from_str("\"10.0.0.0/8,192.0.2.7\"").unwrap();
        let from_list: NetList = serde_json::from_str("[\"10.0.0.0/8\", \"192.0.2.7\"]").unwrap();
        assert_eq!(from_text, from_list);
        assert_eq!(serde_json::to_string(&from_list).unwrap(), "[\"10.0.0.0/8\",\"192.0.2.7/32\"]");
        assert!(serde_json::from_str::<NetList>("[\"10.0.0.1/8\"]").is_err());
    }
}
