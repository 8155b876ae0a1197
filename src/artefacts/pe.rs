//! PE/COFF images (`.exe`, `.dll`) as far as Authenticode needs them: where the checksum and
//! the certificate-table data directory are, the section table (checked against the file),
//! an existing signature, the Authenticode digest, the image checksum, and appending a
//! certificate table. Facts from the PE/COFF specification (optional header layout, data
//! directory 4 holding a *file offset*, 8-byte alignment of the attribute certificate table)
//! and the Authenticode PE format note.
//!
//! Written by hand: the `authenticode` crate computes the same digest but reads the file
//! through `object` and parses signatures with `cms`/`der`, more than the ~150 lines needed
//! here, and this parser is the one that sees hostile uploads, so it is small, checks every
//! offset with overflow-free arithmetic against the input, and never panics (the `pe_sign`
//! fuzz target holds it to that).
//!
//! **The digest.** SHA-256 over the whole file except the checksum field, the certificate
//! table's data-directory entry and the certificate table itself, in file order — as
//! osslsigncode computes it. The specification describes hashing the headers, then the
//! sections sorted by file offset, then what follows the last section; for the usual layout
//! (sections back to back from `SizeOfHeaders` on, which this module does not require) the
//! two cover the same bytes. An unsigned image whose length is not a multiple of 8 is first
//! padded with zeros, and the padding is hashed, so the certificate table that follows is
//! aligned.

use sha2::{Digest, Sha256};

/// Why an upload is not a PE image this module can sign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeError(pub String);

impl std::fmt::Display for PeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, PeError> {
    Err(PeError(msg.into()))
}

/// Magic of a PE32 and a PE32+ optional header.
const PE32: u16 = 0x10b;
const PE32_PLUS: u16 = 0x20b;
/// Index of the certificate table among the data directories.
const CERT_DIRECTORY: usize = 4;
/// COFF characteristic: the file is an image (not an object file).
const EXECUTABLE_IMAGE: u16 = 0x0002;
/// WIN_CERTIFICATE: revision 2.0, type PKCS#7 SignedData.
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// One section's place in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub name: String,
    /// File offset and length of its raw data (length 0: none in the file).
    pub offset: usize,
    pub size: usize,
}

/// Where the parts Authenticode touches are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub pe32_plus: bool,
    /// File offset of the optional header's CheckSum field (4 bytes).
    pub checksum_offset: usize,
    /// File offset of the certificate table's data-directory entry (8 bytes: offset, size).
    pub cert_entry_offset: usize,
    pub size_of_headers: usize,
    pub sections: Vec<Section>,
    /// The existing certificate table (file offset, length), if the image is signed.
    pub cert_table: Option<(usize, usize)>,
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at.checked_add(2)?)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at.checked_add(4)?)?.try_into().ok()?))
}

/// Reads the layout of `bytes`, refusing anything that is not a PE image or whose headers
/// point outside the file.
pub fn parse(bytes: &[u8]) -> Result<Layout, PeError> {
    let truncated = || PeError("is truncated: its PE headers end early".into());
    if bytes.len() < 0x40 || &bytes[..2] != b"MZ" {
        return err("is not a Windows executable (no MZ header)");
    }
    let pe_at = u32_at(bytes, 0x3c).ok_or_else(truncated)? as usize;
    if bytes.get(pe_at..pe_at.saturating_add(4)) != Some(&b"PE\0\0"[..]) {
        return err(if pe_at.saturating_add(4) > bytes.len() {
            "is truncated: its PE headers end early".to_string()
        } else {
            "is an MS-DOS program or not a PE image (no PE signature)".to_string()
        });
    }
    let coff = pe_at + 4;
    let sections_n = u16_at(bytes, coff + 2).ok_or_else(truncated)? as usize;
    let opt_size = u16_at(bytes, coff + 16).ok_or_else(truncated)? as usize;
    let characteristics = u16_at(bytes, coff + 18).ok_or_else(truncated)?;
    if characteristics & EXECUTABLE_IMAGE == 0 {
        return err("is not an executable image (an object file or a broken one)");
    }
    let opt = coff + 20;
    let magic = u16_at(bytes, opt).ok_or_else(truncated)?;
    let (pe32_plus, rva_count_at, dirs_at) = match magic {
        PE32 => (false, 92, 96),
        PE32_PLUS => (true, 108, 112),
        other => return err(format!("has an optional header of unknown kind (magic {other:#06x})")),
    };
    let cert_entry_rel = dirs_at + CERT_DIRECTORY * 8;
    if opt_size < cert_entry_rel + 8 {
        return err("has an optional header too small to hold a certificate table entry");
    }
    if opt + opt_size > bytes.len() {
        return Err(truncated());
    }
    let rva_count = u32_at(bytes, opt + rva_count_at).ok_or_else(truncated)?;
    if (rva_count as usize) <= CERT_DIRECTORY {
        return err("has no certificate table entry among its data directories");
    }
    let size_of_headers = u32_at(bytes, opt + 60).ok_or_else(truncated)? as usize;
    let table_at = opt + opt_size;
    let table_end = table_at + sections_n * 40;
    if table_end > bytes.len() {
        return Err(truncated());
    }
    if size_of_headers < table_end || size_of_headers > bytes.len() {
        return err(format!(
            "has a broken header size ({size_of_headers} bytes; its headers take {table_end} and the file is {})",
            bytes.len()
        ));
    }
    let mut sections = Vec::with_capacity(sections_n);
    for i in 0..sections_n {
        let at = table_at + i * 40;
        let name: String = bytes[at..at + 8].iter().take_while(|b| **b != 0).map(|b| *b as char).collect();
        let size = u32_at(bytes, at + 16).ok_or_else(truncated)? as usize;
        let offset = u32_at(bytes, at + 20).ok_or_else(truncated)? as usize;
        if size > 0 && offset.checked_add(size).is_none_or(|end| end > bytes.len()) {
            return err(format!("is truncated: section {name:?} runs past the end of the file"));
        }
        sections.push(Section { name, offset, size });
    }
    let cert_entry_offset = opt + cert_entry_rel;
    let cert_offset = u32_at(bytes, cert_entry_offset).ok_or_else(truncated)? as usize;
    let cert_size = u32_at(bytes, cert_entry_offset + 4).ok_or_else(truncated)? as usize;
    let cert_table = if cert_size == 0 {
        None
    } else {
        let sections_end = sections.iter().filter(|s| s.size > 0).map(|s| s.offset + s.size).max().unwrap_or(0);
        if cert_offset < size_of_headers.max(sections_end) || cert_offset.checked_add(cert_size) != Some(bytes.len()) {
            return err("has a broken signature: its certificate table is not at the end of the file");
        }
        Some((cert_offset, cert_size))
    };
    Ok(Layout { pe32_plus, checksum_offset: opt + 64, cert_entry_offset, size_of_headers, sections, cert_table })
}

/// The Authenticode SHA-256 digest of `bytes[..end]` (see the module doc): everything but the
/// checksum field and the certificate-table entry. `end` is where the certificate table
/// starts (or the end of the padded file).
pub fn digest(bytes: &[u8], layout: &Layout, end: usize) -> [u8; 32] {
    let end = end.min(bytes.len());
    let (c, e) = (layout.checksum_offset, layout.cert_entry_offset);
    let mut h = Sha256::new();
    h.update(&bytes[..c.min(end)]);
    h.update(bytes.get(c + 4..e.min(end)).unwrap_or_default());
    h.update(bytes.get(e + 8..end).unwrap_or_default());
    h.finalize().into()
}

/// The image checksum (the algorithm of imagehlp's `CheckSumMappedFile`): 16-bit one's
/// complement style sum of the file as if its checksum field were zero, plus the file length.
pub fn checksum(bytes: &[u8], checksum_offset: usize) -> u32 {
    let field = checksum_offset..checksum_offset.saturating_add(4);
    let byte = |i: usize| if field.contains(&i) { 0 } else { bytes.get(i).copied().unwrap_or(0) as u64 };
    let mut sum: u64 = 0;
    let mut i = 0;
    while i < bytes.len() {
        sum += byte(i) | (byte(i + 1) << 8);
        sum = (sum & 0xffff) + (sum >> 16);
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    (sum as u32).wrapping_add(bytes.len() as u32)
}

/// `bytes` without its existing certificate table, padded with zeros to a multiple of 8, and
/// the certificate-table entry cleared: the image the new signature covers.
pub fn unsigned_image(bytes: &[u8], layout: &Layout) -> Vec<u8> {
    let keep = layout.cert_table.map_or(bytes.len(), |(at, _)| at);
    let mut out = Vec::with_capacity(keep + 8 + 4096);
    out.extend_from_slice(&bytes[..keep]);
    out.resize(keep.next_multiple_of(8), 0);
    out[layout.cert_entry_offset..layout.cert_entry_offset + 8].fill(0);
    out
}

/// Appends a WIN_CERTIFICATE holding `pkcs7` to `image` (from [`unsigned_image`]), points the
/// certificate-table entry at it and sets the checksum. The table is padded to 8 bytes, and
/// its length field counts the padding, as signtool and osslsigncode write it.
pub fn append_signature(mut image: Vec<u8>, layout: &Layout, pkcs7: &[u8]) -> Vec<u8> {
    let at = image.len();
    let len = (8 + pkcs7.len()).next_multiple_of(8);
    image.extend_from_slice(&(len as u32).to_le_bytes());
    image.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    image.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    image.extend_from_slice(pkcs7);
    image.resize(at + len, 0);
    let e = layout.cert_entry_offset;
    image[e..e + 4].copy_from_slice(&(at as u32).to_le_bytes());
    image[e + 4..e + 8].copy_from_slice(&(len as u32).to_le_bytes());
    let sum = checksum(&image, layout.checksum_offset);
    image[layout.checksum_offset..layout.checksum_offset + 4].copy_from_slice(&sum.to_le_bytes());
    image
}

/// The PKCS#7 blob in the certificate table of a signed image (the first WIN_CERTIFICATE,
/// which must be PKCS#7 SignedData), with the table's file offset.
pub fn signature_blob<'a>(bytes: &'a [u8], layout: &Layout) -> Result<(&'a [u8], usize), PeError> {
    let Some((at, size)) = layout.cert_table else { return err("is not signed") };
    let table = &bytes[at..at + size];
    let len = u32_at(table, 0).map_or(0, |l| l as usize);
    if len < 8 || len > table.len() {
        return err("has a broken certificate table entry");
    }
    if u16_at(table, 4) != Some(WIN_CERT_REVISION_2_0) || u16_at(table, 6) != Some(WIN_CERT_TYPE_PKCS_SIGNED_DATA) {
        return err("has a certificate table that is not Authenticode PKCS#7");
    }
    Ok((&table[8..len], at))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A small but well-formed image: PE32+ (or PE32), a DOS stub, `sections` sections of
    /// 512 bytes each after 512 bytes of headers, `tail` bytes of overlay.
    pub fn tiny_pe(pe32_plus: bool, sections: usize, tail: usize) -> Vec<u8> {
        let opt_size: usize = if pe32_plus { 240 } else { 224 };
        let mut b = vec![0u8; 512];
        b[..2].copy_from_slice(b"MZ");
        b[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        b[0x80..0x84].copy_from_slice(b"PE\0\0");
        let coff = 0x84;
        b[coff..coff + 2].copy_from_slice(&0x8664u16.to_le_bytes());
        b[coff + 2..coff + 4].copy_from_slice(&(sections as u16).to_le_bytes());
        b[coff + 16..coff + 18].copy_from_slice(&(opt_size as u16).to_le_bytes());
        b[coff + 18..coff + 20].copy_from_slice(&0x0022u16.to_le_bytes());
        let opt = coff + 20;
        b[opt..opt + 2].copy_from_slice(&(if pe32_plus { PE32_PLUS } else { PE32 }).to_le_bytes());
        b[opt + 36..opt + 40].copy_from_slice(&512u32.to_le_bytes()); // FileAlignment
        b[opt + 60..opt + 64].copy_from_slice(&512u32.to_le_bytes()); // SizeOfHeaders
        b[opt + 64..opt + 68].copy_from_slice(&0xdead_beefu32.to_le_bytes()); // a stale checksum
        let rva_at = if pe32_plus { 108 } else { 92 };
        b[opt + rva_at..opt + rva_at + 4].copy_from_slice(&16u32.to_le_bytes());
        let table = opt + opt_size;
        for i in 0..sections {
            let at = table + i * 40;
            b[at..at + 5].copy_from_slice(format!(".s{i:02}\0").as_bytes());
            b[at + 16..at + 20].copy_from_slice(&512u32.to_le_bytes());
            b[at + 20..at + 24].copy_from_slice(&(512 + 512 * i as u32).to_le_bytes());
        }
        for i in 0..sections {
            b.extend((0..512).map(|j| (i * 7 + j) as u8));
        }
        b.extend((0..tail).map(|j| j as u8 ^ 0x5a));
        b
    }

    #[test]
    fn reads_the_layout_of_both_header_kinds() {
        for plus in [false, true] {
            let pe = tiny_pe(plus, 3, 0);
            let l = parse(&pe).unwrap();
            assert_eq!(l.pe32_plus, plus);
            assert_eq!(l.checksum_offset, 0x84 + 20 + 64);
            assert_eq!(l.cert_entry_offset, 0x84 + 20 + if plus { 144 } else { 128 });
            assert_eq!(l.sections.len(), 3);
            assert_eq!(l.sections[2], Section { name: ".s02".into(), offset: 1536, size: 512 });
            assert_eq!(l.cert_table, None);
        }
    }

    #[test]
    fn refuses_what_is_not_a_pe_or_is_cut_short() {
        let good = tiny_pe(true, 2, 0);
        let reason = |b: &[u8]| parse(b).unwrap_err().0;
        assert!(reason(b"hello, not a program").contains("no MZ header"));
        assert!(reason(&good[..0x60]).contains("truncated"));
        assert!(reason(&good[..300]).contains("truncated"));
        assert!(reason(&good[..1000]).contains("runs past the end"));
        let mut dos = good.clone();
        dos[0x80..0x84].copy_from_slice(b"NE\0\0");
        assert!(reason(&dos).contains("no PE signature"));
        let mut obj = good.clone();
        obj[0x84 + 18] = 0;
        assert!(reason(&obj).contains("not an executable image"));
        let mut rom = good.clone();
        rom[0x84 + 20..0x84 + 22].copy_from_slice(&0x107u16.to_le_bytes());
        assert!(reason(&rom).contains("unknown kind"));
        let mut far = good.clone();
        far[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(reason(&far).contains("truncated"));
        let mut few_dirs = good.clone();
        few_dirs[0x84 + 20 + 108..0x84 + 20 + 112].copy_from_slice(&4u32.to_le_bytes());
        assert!(reason(&few_dirs).contains("no certificate table entry"));
        let mut huge_section = good.clone();
        let sec = 0x84 + 20 + 240;
        huge_section[sec + 16..sec + 20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(reason(&huge_section).contains("runs past the end"));
    }

    #[test]
    fn a_signature_must_end_the_file() {
        let mut pe = tiny_pe(false, 1, 0);
        let l = parse(&pe).unwrap();
        let len = pe.len() as u32;
        pe.extend_from_slice(&[0u8; 16]);
        pe[l.cert_entry_offset..l.cert_entry_offset + 4].copy_from_slice(&len.to_le_bytes());
        pe[l.cert_entry_offset + 4..l.cert_entry_offset + 8].copy_from_slice(&8u32.to_le_bytes());
        assert!(parse(&pe).unwrap_err().0.contains("not at the end"));
        pe[l.cert_entry_offset + 4..l.cert_entry_offset + 8].copy_from_slice(&16u32.to_le_bytes());
        assert_eq!(parse(&pe).unwrap().cert_table, Some((len as usize, 16)));
        pe[l.cert_entry_offset..l.cert_entry_offset + 4].copy_from_slice(&100u32.to_le_bytes());
        assert!(parse(&pe).is_err(), "a table inside the headers");
    }

    #[test]
    fn the_digest_skips_checksum_entry_and_table() {
        let pe = tiny_pe(true, 2, 3);
        let l = parse(&pe).unwrap();
        let image = unsigned_image(&pe, &l);
        assert_eq!(image.len() % 8, 0);
        assert_eq!(&image[..pe.len()][..l.cert_entry_offset], &pe[..l.cert_entry_offset]);
        let d = digest(&image, &l, image.len());
        // The same bytes hashed by hand.
        let mut h = Sha256::new();
        h.update(&image[..l.checksum_offset]);
        h.update(&image[l.checksum_offset + 4..l.cert_entry_offset]);
        h.update(&image[l.cert_entry_offset + 8..]);
        assert_eq!(d, <[u8; 32]>::from(h.finalize()));
        // Changing the checksum or the entry does not change it; changing a section does.
        let mut other = image.clone();
        other[l.checksum_offset] ^= 1;
        other[l.cert_entry_offset + 5] ^= 1;
        assert_eq!(digest(&other, &l, other.len()), d);
        other[700] ^= 1;
        assert_ne!(digest(&other, &l, other.len()), d);
        // A signed image hashes to the table's start: the same digest.
        let signed = append_signature(image.clone(), &l, b"not really pkcs7");
        let sl = parse(&signed).unwrap();
        let (blob, at) = signature_blob(&signed, &sl).unwrap();
        assert_eq!((blob, at), (&b"not really pkcs7"[..], image.len()));
        assert_eq!(digest(&signed, &sl, at), d);
        assert_eq!(signed.len() % 8, 0);
        assert_eq!(&signed[..at][512..], &image[512..], "sections untouched");
    }

    #[test]
    fn checksum_matches_the_imagehlp_algorithm() {
        // Known value: the sum of words plus the length, with the field itself zeroed.
        let mut b = vec![0u8; 16];
        b[0] = 0xff;
        b[1] = 0xff;
        b[2] = 0x02;
        b[8..12].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        // 0xffff + 0x0002 = 0x10001 -> folded 0x0002; + len 16.
        assert_eq!(checksum(&b, 8), 0x0002 + 16);
        // Odd length: the last byte is a low byte.
        assert_eq!(checksum(&[1, 0, 5], 100), 1 + 5 + 3);
        // The written checksum is independent of the stale value it replaces.
        let pe = tiny_pe(false, 1, 0);
        let l = parse(&pe).unwrap();
        let a = append_signature(unsigned_image(&pe, &l), &l, b"x");
        let mut stale = pe.clone();
        stale[l.checksum_offset..l.checksum_offset + 4].fill(0);
        let b2 = append_signature(unsigned_image(&stale, &l), &l, b"x");
        assert_eq!(a, b2);
        let c = u32::from_le_bytes(a[l.checksum_offset..l.checksum_offset + 4].try_into().unwrap());
        assert_eq!(c, checksum(&a, l.checksum_offset));
    }
}
