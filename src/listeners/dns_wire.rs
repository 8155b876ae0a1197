//! Strict reading of a DNS message's wire form, before the DNS listener believes it.
//!
//! hickory-proto parses what it can and is lenient where a honeytoken server must not be (audit
//! F13): it ignores bytes after the declared sections, takes an OPT record in the answer or
//! authority section as an ordinary record, and (without its DNSSEC features) reads a TSIG
//! record's RDATA as opaque bytes. [`check`] walks the whole message by hand and accepts only
//! what RFC 1035, RFC 6891 (EDNS) and RFC 8945 (TSIG) allow:
//!
//! - the header's four counts describe the message exactly: every question and record is
//!   complete and no byte follows the last one;
//! - names are at most 255 octets, use only ordinary labels and compression pointers, and every
//!   pointer points backwards, past the header, and before any earlier jump of the same name
//!   (so no loops);
//! - an OPT record only in the additional section, at most one, owned by the root, its RDATA a
//!   whole number of options;
//! - a TSIG record only as the last record of the additional section, class ANY, TTL 0, its
//!   RDATA exactly: algorithm name (uncompressed), time signed, fudge, MAC, original id, error
//!   and other data.
//!
//! Rules that depend on the opcode (a QUERY holds one question and no answer or authority
//! records) are the listener's; this module reports the counts and the TSIG it found.
//!
//! Hand-written: hickory's strict TSIG parsing needs its DNSSEC features (a crypto stack for
//! keys Trapline does not have), and no option of it rejects trailing bytes or misplaced OPTs.

/// What a well-formed message holds, as far as the listener needs to know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub questions: u16,
    pub answers: u16,
    pub authorities: u16,
    /// Where the question section ends (it starts right after the 12-byte header).
    pub questions_end: usize,
    /// The TSIG record, if the message is signed.
    pub tsig: Option<Tsig>,
}

/// A TSIG record's fields (RFC 8945 4.2), names in uncompressed wire form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tsig {
    pub key_name: Vec<u8>,
    pub algorithm: Vec<u8>,
    pub time_signed: [u8; 6],
    pub fudge: u16,
    pub original_id: u16,
}

/// Why a message is malformed (for debug logs and tests).
pub type Malformed = &'static str;

const TYPE_OPT: u16 = 41;
const TYPE_TSIG: u16 = 250;
const CLASS_ANY: u16 = 255;
const HEADER: usize = 12;
const MAX_NAME: usize = 255;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len()).ok_or("runs past the end")?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name, in uncompressed wire form. Pointers are followed only if `compressed`.
    fn name(&mut self, compressed: bool) -> Result<Vec<u8>, Malformed> {
        let mut out = Vec::new();
        let mut at = self.pos;
        // Where reading resumes after the name: set at the first pointer.
        let mut resume = None;
        // Every jump must land before this (the start of what has been read of this name).
        let mut limit = self.pos;
        loop {
            let len = *self.buf.get(at).ok_or("name runs past the end")?;
            match len & 0xc0 {
                0x00 => {
                    let label = self.buf.get(at..at + 1 + usize::from(len)).ok_or("label runs past the end")?;
                    out.extend_from_slice(label);
                    if out.len() > MAX_NAME {
                        return Err("name longer than 255 octets");
                    }
                    at += label.len();
                    if len == 0 {
                        break;
                    }
                }
                0xc0 => {
                    if !compressed {
                        return Err("compressed name where compression is not allowed");
                    }
                    let low = *self.buf.get(at + 1).ok_or("pointer runs past the end")?;
                    let target = usize::from(u16::from_be_bytes([len & 0x3f, low]));
                    if target < HEADER || target >= limit {
                        return Err("compression pointer not strictly backwards");
                    }
                    resume.get_or_insert(at + 2);
                    limit = target;
                    at = target;
                }
                _ => return Err("reserved label type"),
            }
        }
        self.pos = resume.unwrap_or(at);
        Ok(out)
    }
}

/// Reads an OPT record's RDATA: options, each code, length and that many bytes.
fn check_options(mut rdata: &[u8]) -> Result<(), Malformed> {
    while !rdata.is_empty() {
        let [_, _, l0, l1, rest @ ..] = rdata else { return Err("EDNS option header cut short") };
        let len = usize::from(u16::from_be_bytes([*l0, *l1]));
        rdata = rest.get(len..).ok_or("EDNS option longer than the OPT record")?;
    }
    Ok(())
}

/// Reads a TSIG record's RDATA (RFC 8945 4.2); it must be used up exactly.
fn read_tsig(key_name: Vec<u8>, rdata: &[u8]) -> Result<Tsig, Malformed> {
    let mut r = Reader { buf: rdata, pos: 0 };
    let algorithm = r.name(false)?;
    let mut time_signed = [0u8; 6];
    time_signed.copy_from_slice(r.take(6)?);
    let fudge = r.u16()?;
    let mac_len = r.u16()?;
    r.take(usize::from(mac_len))?;
    let original_id = r.u16()?;
    let _error = r.u16()?;
    let other_len = r.u16()?;
    r.take(usize::from(other_len))?;
    if r.pos != rdata.len() {
        return Err("bytes left over in the TSIG record");
    }
    Ok(Tsig { key_name, algorithm, time_signed, fudge, original_id })
}

/// Checks `packet` (header included) against the rules in the module's documentation.
pub fn check(packet: &[u8]) -> Result<Checked, Malformed> {
    let mut r = Reader { buf: packet, pos: 0 };
    let header = r.take(HEADER)?;
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (questions, answers, authorities, additionals) = (count(4), count(6), count(8), count(10));
    for _ in 0..questions {
        r.name(true)?;
        r.take(4)?; // type, class
    }
    let questions_end = r.pos;
    let mut opt_seen = false;
    let mut tsig = None;
    let records = [(answers, false), (authorities, false), (additionals, true)];
    for (n, additional) in records {
        for i in 0..n {
            let owner = r.name(true)?;
            let rtype = r.u16()?;
            let class = r.u16()?;
            let ttl = r.u32()?;
            let rdlength = r.u16()?;
            let rdata = r.take(usize::from(rdlength))?;
            match rtype {
                TYPE_OPT => {
                    if !additional {
                        return Err("OPT record outside the additional section");
                    }
                    if std::mem::replace(&mut opt_seen, true) {
                        return Err("more than one OPT record");
                    }
                    if owner != [0] {
                        return Err("OPT record not owned by the root");
                    }
                    check_options(rdata)?;
                }
                TYPE_TSIG => {
                    if !additional || i + 1 != n {
                        return Err("TSIG record not the last of the additional section");
                    }
                    if class != CLASS_ANY || ttl != 0 {
                        return Err("TSIG record with a class other than ANY or a TTL other than 0");
                    }
                    tsig = Some(read_tsig(owner, rdata)?);
                }
                _ => {}
            }
        }
    }
    if r.pos != packet.len() {
        return Err("bytes after the last record");
    }
    Ok(Checked { questions, answers, authorities, questions_end, tsig })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// dnspython 2.7's `make_query("abc.canary.test", "A")` signed with key `k1.`
    /// (hmac-sha256).
    const SIGNED: &str = "928d01000001000000000001036162630663616e61727904746573740000010001026b310000fa00ff0000\
                          0000003d0b686d61632d7368613235360000006b1133c6012c00208c847fa7ae6c2cc489a5fd567384b6\
                          7da3991062f96bb358808cee189dd620bd928d00000000";

    fn query(extra_counts: [u16; 3]) -> Vec<u8> {
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1];
        for c in extra_counts {
            p.extend_from_slice(&c.to_be_bytes());
        }
        p.extend_from_slice(b"\x03abc\x06canary\x04test\x00\x00\x01\x00\x01");
        p
    }

    /// An OPT record as dig sends it by default: payload 1232, a client cookie.
    fn opt_with_cookie() -> Vec<u8> {
        let mut r = vec![0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 12, 0, 10, 0, 8];
        r.extend_from_slice(&[1, 2, 3, 4, 5, 6, 7, 8]);
        r
    }

    #[test]
    fn accepts_everyday_queries() {
        assert_eq!(check(&query([0, 0, 0])).unwrap().tsig, None);
        let mut edns = query([0, 0, 1]);
        edns.extend(opt_with_cookie());
        let c = check(&edns).unwrap();
        assert_eq!((c.questions, c.answers, c.authorities), (1, 0, 0));
        assert_eq!(c.questions_end, query([0, 0, 0]).len());
        // A record in the additional section whose owner is compressed (points at the question).
        let mut compressed = query([0, 0, 1]);
        compressed.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
        assert!(check(&compressed).is_ok());
    }

    #[test]
    fn reads_a_tsig() {
        let p = hex::decode(SIGNED).unwrap();
        let t = check(&p).unwrap().tsig.expect("signed");
        assert_eq!(t.key_name, b"\x02k1\x00");
        assert_eq!(t.algorithm, b"\x0bhmac-sha256\x00");
        assert_eq!(t.fudge, 300);
        assert_eq!(t.original_id, 0x928d);
    }

    #[test]
    fn refuses_the_audits_three() {
        let mut junk = query([0, 0, 0]);
        junk.extend_from_slice(&[0xaa; 200]);
        assert_eq!(check(&junk), Err("bytes after the last record"));
        let mut opt_in_answer = query([1, 0, 0]);
        opt_in_answer.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(check(&opt_in_answer), Err("OPT record outside the additional section"));
        let mut garbage_tsig = query([0, 0, 1]);
        garbage_tsig.extend_from_slice(b"\x02k1\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x14");
        garbage_tsig.extend_from_slice(b"\x3f");
        garbage_tsig.extend_from_slice(&[0xff; 19]);
        assert_eq!(check(&garbage_tsig), Err("label runs past the end"));
    }

    #[test]
    fn refuses_misplaced_and_malformed_records() {
        let signed = hex::decode(SIGNED).unwrap();
        let mut cut = signed.clone();
        cut.pop();
        assert!(check(&cut).is_err(), "one byte short");
        let mut long = signed.clone();
        long.push(0);
        assert!(check(&long).is_err(), "one byte over");
        // TSIG RDATA with a byte left over (rdlength and the packet both one longer).
        let mut over = signed.clone();
        let rdlen_at = signed.len() - 0x3d - 2;
        over[rdlen_at + 1] += 1;
        over.push(0);
        assert_eq!(check(&over), Err("bytes left over in the TSIG record"));
        // TSIG followed by an OPT.
        let mut not_last = signed.clone();
        not_last[11] = 2;
        not_last.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(check(&not_last), Err("TSIG record not the last of the additional section"));
        // TSIG with class IN.
        let mut class_in = signed.clone();
        let class_at = rdlen_at - 6;
        class_in[class_at..class_at + 2].copy_from_slice(&[0, 1]);
        assert!(check(&class_in).unwrap_err().contains("class"));
        // Two OPTs, an OPT not owned by the root, options that overrun the OPT.
        let mut two = query([0, 0, 2]);
        two.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0, 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(check(&two), Err("more than one OPT record"));
        let mut owned = query([0, 0, 1]);
        owned.extend_from_slice(&[1, b'x', 0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(check(&owned), Err("OPT record not owned by the root"));
        let mut overrun = query([0, 0, 1]);
        overrun.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 4, 0, 10, 0, 8]);
        assert_eq!(check(&overrun), Err("EDNS option longer than the OPT record"));
        // Counts beyond the packet.
        assert!(check(&query([0, 0, 1])).is_err());
        assert!(check(&query([0, 1, 0])).is_err());
    }

    #[test]
    fn refuses_bad_names() {
        let with_name = |name: &[u8]| {
            let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
            p.extend_from_slice(name);
            p.extend_from_slice(&[0, 1, 0, 1]);
            p
        };
        assert_eq!(check(&with_name(&[0xc0, 12])), Err("compression pointer not strictly backwards"));
        assert_eq!(check(&with_name(&[0xc0, 2])), Err("compression pointer not strictly backwards"), "into the header");
        assert_eq!(check(&with_name(&[1, b'a', 0xc0, 12])), Err("compression pointer not strictly backwards"));
        assert_eq!(check(&with_name(&[0x41, b'a', 0])), Err("reserved label type"));
        assert_eq!(check(&with_name(&[0x81, b'a', 0])), Err("reserved label type"));
        let mut long = Vec::new();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'a'; 63]);
        }
        long.push(0);
        assert_eq!(check(&with_name(&long)), Err("name longer than 255 octets"));
        assert!(check(&with_name(&[5, b'a'])).is_err(), "cut short");
        // A chain of pointers, each strictly further back, is fine: a second question
        // `b.<first question>` and a third that points at the second.
        let mut p = vec![0x12, 0x34, 0x01, 0x00, 0, 3, 0, 0, 0, 0, 0, 0];
        p.extend_from_slice(b"\x01a\x00\x00\x01\x00\x01"); // at 12
        p.extend_from_slice(b"\x01b\xc0\x0c\x00\x01\x00\x01"); // at 19
        p.extend_from_slice(b"\xc0\x13\x00\x01\x00\x01");
        assert_eq!(check(&p).unwrap().questions, 3);
        // ... but a jump forward within a chain is not.
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 2, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x01a\xc0\x15\x00\x01\x00\x01"); // at 12, points at 21
        q.extend_from_slice(b"\x01b\xc0\x0c\x00\x01\x00\x01"); // at 19
        assert!(check(&q).is_err());
    }

    #[test]
    fn never_panics_on_cut_or_mutated_input() {
        let signed = hex::decode(SIGNED).unwrap();
        for n in 0..signed.len() {
            let _ = check(&signed[..n]);
        }
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut p = signed.clone();
            for _ in 0..3 {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                let i = (rng as usize) % p.len();
                p[i] = (rng >> 32) as u8;
            }
            let _ = check(&p);
        }
    }
}
