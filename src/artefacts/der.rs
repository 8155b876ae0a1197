//! A small DER (X.690) writer and reader for the few fixed ASN.1 structures Trapline builds
//! itself: the code-signing certificates and the PKCS#7 SignedData of an Authenticode
//! signature ([`super::authenticode`]), and PEM armour around them.
//!
//! Written by hand rather than taken from `der`/`cms`/`yasna`: every structure here is one
//! fixed shape known at compile time, so a writer is a dozen functions that concatenate
//! tag-length-value triples, and the reader (used to take the issuer name back out of a
//! stored CA certificate, and by the tests and the fuzz target to re-parse what was written)
//! needs only single-byte tags and definite, minimal lengths. The RustCrypto `cms` builder is
//! a release candidate, and it or `rcgen` would pull several crates for less than this file.
//!
//! The reader is strict (BER's indefinite lengths, non-minimal lengths and long-form tags are
//! refused) and bounded: it never allocates, never recurses on its own, and every read is
//! checked against the input it was given.

use base64::Engine;

/// Universal tags used here.
pub const BOOLEAN: u8 = 0x01;
pub const INTEGER: u8 = 0x02;
pub const BIT_STRING: u8 = 0x03;
pub const OCTET_STRING: u8 = 0x04;
pub const NULL: u8 = 0x05;
pub const OID: u8 = 0x06;
pub const UTF8_STRING: u8 = 0x0c;
pub const PRINTABLE_STRING: u8 = 0x13;
pub const IA5_STRING: u8 = 0x16;
pub const UTC_TIME: u8 = 0x17;
pub const GENERALIZED_TIME: u8 = 0x18;
pub const BMP_STRING: u8 = 0x1e;
pub const SEQUENCE: u8 = 0x30;
pub const SET: u8 = 0x31;

/// A context-specific tag: `[n]`, constructed (EXPLICIT, or IMPLICIT over a constructed type)
/// or primitive (IMPLICIT over a primitive type).
pub const fn context(n: u8, constructed: bool) -> u8 {
    0x80 | if constructed { 0x20 } else { 0 } | (n & 0x1f)
}

/// One tag-length-value.
pub fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = (n as u64).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (8 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// A constructed value of `parts` concatenated.
pub fn cons(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    tlv(tag, &parts.concat())
}

pub fn seq(parts: &[&[u8]]) -> Vec<u8> {
    cons(SEQUENCE, parts)
}

/// A SET OF: DER wants its elements in ascending order of their encodings.
pub fn set_of(parts: &[&[u8]]) -> Vec<u8> {
    let mut sorted = parts.to_vec();
    sorted.sort();
    cons(SET, &sorted)
}

/// An OBJECT IDENTIFIER from its arcs (the first two at least, as every OID has).
pub fn oid(arcs: &[u64]) -> Vec<u8> {
    let mut body = Vec::new();
    let (first, rest) = match arcs {
        [a, b, rest @ ..] => (a * 40 + b, rest),
        _ => (0, &[][..]),
    };
    for arc in std::iter::once(first).chain(rest.iter().copied()) {
        let mut groups = vec![(arc & 0x7f) as u8];
        let mut v = arc >> 7;
        while v > 0 {
            groups.push(0x80 | (v & 0x7f) as u8);
            v >>= 7;
        }
        body.extend(groups.iter().rev());
    }
    tlv(OID, &body)
}

/// A non-negative INTEGER from its big-endian magnitude.
pub fn uint(magnitude: &[u8]) -> Vec<u8> {
    let trimmed = &magnitude[magnitude.iter().take_while(|b| **b == 0).count()..];
    let mut body = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        body.push(0);
    }
    body.extend_from_slice(trimmed);
    tlv(INTEGER, &body)
}

pub fn small_uint(v: u64) -> Vec<u8> {
    uint(&v.to_be_bytes())
}

pub fn octets(bytes: &[u8]) -> Vec<u8> {
    tlv(OCTET_STRING, bytes)
}

/// A BIT STRING of whole bytes (no unused bits).
pub fn bits(bytes: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(bytes.len() + 1);
    body.push(0);
    body.extend_from_slice(bytes);
    tlv(BIT_STRING, &body)
}

pub fn null() -> Vec<u8> {
    vec![NULL, 0]
}

pub fn boolean_true() -> Vec<u8> {
    vec![BOOLEAN, 1, 0xff]
}

pub fn utf8(s: &str) -> Vec<u8> {
    tlv(UTF8_STRING, s.as_bytes())
}

/// A BMPString (UCS-2, big-endian) body, for tagging as the caller needs.
pub fn bmp_body(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

/// An X.509 Time (RFC 5280 4.1.2.5): UTCTime through 2049, GeneralizedTime from 2050.
pub fn time(unix_secs: i64) -> Vec<u8> {
    let t = chrono::DateTime::from_timestamp(unix_secs, 0).unwrap_or_default();
    use chrono::Datelike;
    if (1950..2050).contains(&t.year()) {
        tlv(UTC_TIME, t.format("%y%m%d%H%M%SZ").to_string().as_bytes())
    } else {
        tlv(GENERALIZED_TIME, t.format("%Y%m%d%H%M%SZ").to_string().as_bytes())
    }
}

/// Why DER did not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerError(pub &'static str);

impl std::fmt::Display for DerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

/// A cursor over concatenated DER values.
#[derive(Debug, Clone, Copy)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Reader<'a> {
        Reader { rest: input }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next value: its tag, its content, and its whole encoding.
    pub fn next_raw(&mut self) -> Result<(u8, &'a [u8], &'a [u8]), DerError> {
        let input = self.rest;
        let (&tag, after_tag) = input.split_first().ok_or(DerError("DER value missing"))?;
        if tag & 0x1f == 0x1f {
            return Err(DerError("DER long-form tag"));
        }
        let (&first, mut after_len) = after_tag.split_first().ok_or(DerError("DER length missing"))?;
        let len = if first < 0x80 {
            first as usize
        } else {
            let n = (first & 0x7f) as usize;
            if n == 0 || n > 4 || after_len.len() < n {
                return Err(DerError("DER length unreadable"));
            }
            let (len_bytes, rest) = after_len.split_at(n);
            after_len = rest;
            if len_bytes[0] == 0 {
                return Err(DerError("DER length not minimal"));
            }
            let len = len_bytes.iter().fold(0usize, |a, b| (a << 8) | *b as usize);
            if len < 0x80 {
                return Err(DerError("DER length not minimal"));
            }
            len
        };
        if after_len.len() < len {
            return Err(DerError("DER value runs past its container"));
        }
        let (content, rest) = after_len.split_at(len);
        let whole = &input[..input.len() - rest.len()];
        self.rest = rest;
        Ok((tag, content, whole))
    }

    /// The content of the next value, which must carry `tag`.
    pub fn expect(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        match self.next_raw()? {
            (t, content, _) if t == tag => Ok(content),
            _ => Err(DerError("unexpected DER tag")),
        }
    }

    /// The whole encoding of the next value, which must carry `tag`.
    pub fn expect_raw(&mut self, tag: u8) -> Result<&'a [u8], DerError> {
        match self.next_raw()? {
            (t, _, whole) if t == tag => Ok(whole),
            _ => Err(DerError("unexpected DER tag")),
        }
    }

    /// The content of the next value if it carries `tag`; otherwise nothing is read.
    pub fn optional(&mut self, tag: u8) -> Result<Option<&'a [u8]>, DerError> {
        if self.rest.first() == Some(&tag) {
            self.expect(tag).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Fails unless everything has been read.
    pub fn finish(&self) -> Result<(), DerError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DerError("trailing bytes after DER value"))
        }
    }
}

/// The content of the only value in `input`, which must carry `tag`.
pub fn single(input: &[u8], tag: u8) -> Result<&[u8], DerError> {
    let mut r = Reader::new(input);
    let content = r.expect(tag)?;
    r.finish()?;
    Ok(content)
}

/// PEM armour (RFC 7468) of `der`, lines of 64 characters.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the first PEM block labelled `label` in `text`.
pub fn unpem(text: &str, label: &str) -> Option<Vec<u8>> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin)? + begin.len();
    let stop = start + text[start..].find(&end)?;
    let b64: String = text[start..stop].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(b64).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_and_integers_encode_minimally() {
        assert_eq!(tlv(OCTET_STRING, &[]), [0x04, 0x00]);
        assert_eq!(tlv(OCTET_STRING, &[0; 0x7f])[..2], [0x04, 0x7f]);
        assert_eq!(tlv(OCTET_STRING, &[0; 0x80])[..3], [0x04, 0x81, 0x80]);
        assert_eq!(tlv(OCTET_STRING, &[0; 0x1234])[..4], [0x04, 0x82, 0x12, 0x34]);
        assert_eq!(small_uint(0), [0x02, 0x01, 0x00]);
        assert_eq!(small_uint(1), [0x02, 0x01, 0x01]);
        assert_eq!(small_uint(0x80), [0x02, 0x02, 0x00, 0x80]);
        assert_eq!(uint(&[0, 0, 0x7f, 1]), [0x02, 0x02, 0x7f, 0x01]);
        assert_eq!(bits(&[0xab]), [0x03, 0x02, 0x00, 0xab]);
    }

    #[test]
    fn oids_encode_as_x690_says() {
        // sha256 2.16.840.1.101.3.4.2.1 and SPC_INDIRECT_DATA 1.3.6.1.4.1.311.2.1.4
        assert_eq!(oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1]), hex::decode("0609608648016503040201").unwrap());
        assert_eq!(oid(&[1, 3, 6, 1, 4, 1, 311, 2, 1, 4]), hex::decode("060a2b060104018237020104").unwrap());
    }

    #[test]
    fn times_switch_to_generalized_in_2050() {
        assert_eq!(time(0), tlv(UTC_TIME, b"700101000000Z"));
        assert_eq!(time(2_524_608_000), tlv(GENERALIZED_TIME, b"20500101000000Z"));
        assert_eq!(time(2_524_607_999), tlv(UTC_TIME, b"491231235959Z"));
    }

    #[test]
    fn sets_are_sorted_and_sequences_read_back() {
        let a = small_uint(2);
        let b = small_uint(1);
        assert_eq!(set_of(&[&a, &b]), cons(SET, &[&b, &a]));
        let s = seq(&[&a, &octets(b"xy"), &seq(&[])]);
        let mut r = Reader::new(single(&s, SEQUENCE).unwrap());
        assert_eq!(r.expect(INTEGER).unwrap(), [2]);
        assert_eq!(r.optional(NULL).unwrap(), None);
        assert_eq!(r.expect(OCTET_STRING).unwrap(), b"xy");
        assert_eq!(r.expect_raw(SEQUENCE).unwrap(), [0x30, 0x00]);
        r.finish().unwrap();
    }

    #[test]
    fn the_reader_refuses_ber_and_overruns() {
        for bad in [
            &[0x04, 0x80][..],                  // indefinite length
            &[0x04, 0x81, 0x05, 1, 2, 3, 4, 5], // long form for a short length
            &[0x04, 0x82, 0x00, 0x81],          // leading zero length byte
            &[0x04, 0x05, 1, 2],                // runs past the input
            &[0x1f, 0x81, 0x00],                // long-form tag
            &[0x04],                            // no length
            &[],
        ] {
            assert!(Reader::new(bad).next_raw().is_err(), "{bad:02x?}");
        }
        assert!(single(&[0x05, 0x00, 0x05, 0x00], NULL).is_err(), "trailing bytes");
    }

    #[test]
    fn pem_round_trips() {
        let der: Vec<u8> = (0..=255u8).collect();
        let text = pem("CERTIFICATE", &der);
        assert!(text.lines().all(|l| l.len() <= 64));
        assert_eq!(unpem(&text, "CERTIFICATE").unwrap(), der);
        assert_eq!(unpem(&text, "PRIVATE KEY"), None);
    }
}
