//! Kind `dns`: a hostname that records every query for it, and the generic-data encoding.
//!
//! Generic data rides in labels left of the token: `<base32 chunks>.G<2 digits>.<token host>`.
//! Decoding joins the chunks, writes `-` back as `=`, uppercases, pads to a multiple of 8 and
//! base32-decodes (RFC 4648); the result is text when it is valid UTF-8, else hex.
//! [`encode_generic`] is the inverse, for users who want to smuggle data themselves.

use data_encoding::BASE32;

use super::{DnsData, DnsDecoding, Kind};
use crate::model::Channel;

pub struct Dns;

impl Kind for Dns {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn human_name(&self) -> &'static str {
        "DNS"
    }

    fn channel(&self) -> Channel {
        Channel::Dns
    }

    fn dns(&self) -> Option<&dyn DnsDecoding> {
        Some(self)
    }
}

impl DnsDecoding for Dns {
    fn rank(&self) -> u8 {
        2
    }

    fn decode(&self, labels: &[String]) -> DnsData {
        decode_generic(labels)
    }
}

/// True for a `G<2 digits>` marker label.
fn is_marker(label: &str) -> bool {
    let b = label.as_bytes();
    b.len() == 3 && (b[0] == b'g' || b[0] == b'G') && b[1].is_ascii_digit() && b[2].is_ascii_digit()
}

/// Decodes `<chunks>.G<nn>` (the labels directly left of the token).
pub fn decode_generic(labels: &[String]) -> DnsData {
    let Some((marker, chunks)) = labels.split_last() else {
        return DnsData::NoMatch;
    };
    if !is_marker(marker) || chunks.is_empty() {
        return DnsData::NoMatch;
    }
    let mut joined: String = chunks.concat().replace('-', "=").to_ascii_uppercase();
    let trimmed = joined.trim_end_matches('=').len();
    joined.truncate(trimmed);
    while !joined.len().is_multiple_of(8) {
        joined.push('=');
    }
    match BASE32.decode(joined.as_bytes()) {
        Ok(bytes) => DnsData::field(
            "generic_data",
            match String::from_utf8(bytes) {
                Ok(s) => s,
                Err(e) => hex::encode(e.into_bytes()),
            },
        ),
        Err(_) => DnsData::Undecodable,
    }
}

/// Encodes `data` as the labels to put left of a token hostname (without the hostname):
/// base32 chunks of at most 63 characters, `=` written as `-`, then the `G<nn>` marker.
/// `nonce` (0–99) varies the marker so repeated lookups are not answered from resolver caches.
pub fn encode_generic(data: &[u8], nonce: u8) -> String {
    let b32 = BASE32.encode(data).replace('=', "-");
    let mut parts: Vec<String> = b32.as_bytes().chunks(63).map(|c| String::from_utf8_lossy(c).into_owned()).collect();
    parts.push(format!("G{:02}", nonce % 100));
    parts.join(".")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::labels;

    #[test]
    fn generic_data_round_trips() {
        for data in ["hello", "a", "secret file name.docx", &"x".repeat(100)] {
            let enc = encode_generic(data.as_bytes(), 7);
            assert!(enc.split('.').all(|l| l.len() <= 63), "{enc}");
            match decode_generic(&labels(&enc)) {
                DnsData::Decoded(m) => assert_eq!(m["generic_data"], data),
                other => panic!("{enc}: {other:?}"),
            }
        }
    }

    #[test]
    fn known_vector() {
        // base32("hello") = NBSWY3DP
        match decode_generic(&labels("nbswy3dp.G42")) {
            DnsData::Decoded(m) => assert_eq!(m["generic_data"], "hello"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn binary_data_becomes_hex() {
        let enc = encode_generic(&[0xff, 0x00, 0x80], 1);
        match decode_generic(&labels(&enc)) {
            DnsData::Decoded(m) => assert_eq!(m["generic_data"], "ff0080"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_matching_and_garbage() {
        assert_eq!(decode_generic(&labels("www")), DnsData::NoMatch);
        assert_eq!(decode_generic(&labels("G12")), DnsData::NoMatch);
        assert_eq!(decode_generic(&labels("abc.G1x")), DnsData::NoMatch);
        assert_eq!(decode_generic(&labels("1!1.G12")), DnsData::Undecodable);
    }
}
