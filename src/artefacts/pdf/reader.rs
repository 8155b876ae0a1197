//! Reads just enough of a PDF to find its first page: the header, the last `startxref`, the
//! chain of cross-reference sections it starts (classic tables, cross-reference streams, and
//! hybrid files whose tables name a stream with `/XRefStm`), objects by number (from the
//! file, or from object streams), and the page tree. Nothing else of the file is parsed.
//!
//! Hostile input is bounded: every byte parsed and every byte inflated is charged to a budget
//! proportional to the file, the `/Prev` chain and the page tree are walked with visited sets
//! and counts, references nest at most [`MAX_REF_DEPTH`] deep, and a stream inflates to at most
//! [`MAX_INFLATED`] bytes. A file this reader cannot read exactly is refused as damaged rather
//! than repaired: the injector must know where every object it leaves alone is.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::rc::Rc;

use super::syntax::{is_regular, Dict, Obj, Parser};
use super::PdfError;

/// How many references deep one lookup may go (a stream whose `/Length` is a reference to an
/// object in an object stream, …).
pub const MAX_REF_DEPTH: u32 = 16;
/// Largest inflated stream (cross-reference or object stream).
pub const MAX_INFLATED: usize = 32 * 1024 * 1024;
/// Most cross-reference sections followed through `/Prev` (one per saved revision).
const MAX_SECTIONS: usize = 4096;
/// Most cross-reference entries read over all sections.
const MAX_ENTRIES: usize = 2_000_000;
/// Highest object number accepted (ISO 32000-1 Annex C's limit).
pub const MAX_OBJECT_NUMBER: u32 = 8_388_607;
/// Most page tree nodes visited looking for the first page.
const MAX_TREE_NODES: usize = 100_000;

fn damaged(what: &str) -> PdfError {
    PdfError::Damaged(what.to_string())
}

/// Where an object is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Loc {
    /// At this byte offset, with this generation.
    File(usize, u16),
    /// In the object stream with this number, at this index.
    InStream(u32, usize),
}

/// The style of the newest cross-reference section: an update should match it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XrefStyle {
    Table,
    Stream,
}

struct ObjStm {
    data: Vec<u8>,
    first: usize,
    /// (object number, offset from `first`), in stream order.
    index: Vec<(u32, usize)>,
}

pub struct Reader<'a> {
    pub file: &'a [u8],
    /// The newest location of each object in use.
    pub xref: HashMap<u32, Loc>,
    /// The newest trailer (for a cross-reference stream, its dictionary).
    pub trailer: Dict,
    pub style: XrefStyle,
    /// Where the newest cross-reference section starts (the `startxref` value).
    pub startxref: usize,
    objstms: HashMap<u32, Rc<ObjStm>>,
    /// Bytes that may still be parsed or inflated.
    budget: usize,
    endstreams: Option<Vec<usize>>,
}

impl<'a> Reader<'a> {
    /// Reads the header and the cross-reference chain; refuses encrypted files.
    pub fn open(file: &'a [u8]) -> Result<Reader<'a>, PdfError> {
        let head = &file[..file.len().min(1024)];
        if find(head, b"%PDF-").is_none() {
            return Err(PdfError::NotPdf);
        }
        let at = rfind(file, b"startxref").ok_or_else(|| damaged("it has no startxref (cut short?)"))?;
        let mut p = Parser::new(file, at + b"startxref".len());
        let startxref = p
            .uint()
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n < file.len())
            .ok_or_else(|| damaged("its startxref does not point into the file"))?;
        let mut r = Reader {
            file,
            xref: HashMap::new(),
            trailer: Dict::default(),
            style: XrefStyle::Table,
            startxref,
            objstms: HashMap::new(),
            budget: file.len().saturating_mul(16).saturating_add(MAX_INFLATED * 2),
            endstreams: None,
        };
        r.read_chain()?;
        Ok(r)
    }

    fn charge(&mut self, n: usize) -> Result<(), PdfError> {
        self.budget = self.budget.checked_sub(n).ok_or_else(|| damaged("it takes too much work to read"))?;
        Ok(())
    }

    fn read_chain(&mut self) -> Result<(), PdfError> {
        let mut next = Some(self.startxref);
        let mut seen = HashSet::new();
        let mut entries = 0usize;
        let mut newest = true;
        while let Some(off) = next.take() {
            if !seen.insert(off) || seen.len() > MAX_SECTIONS {
                if seen.len() > MAX_SECTIONS {
                    return Err(damaged("it has too many cross-reference sections"));
                }
                break; // a /Prev loop: everything on it has been read
            }
            let mut p = Parser::new(self.file, off);
            p.skip_white();
            let (trailer, style) = if p.b[p.pos..].starts_with(b"xref")
                && !p.b.get(p.pos + 4).is_some_and(|&c| is_regular(c))
            {
                p.pos += 4;
                let trailer = self.read_table(&mut p, &mut entries)?;
                if let Some(stm) = trailer.get(b"XRefStm") {
                    let stm = offset(stm, self.file.len()).ok_or_else(|| damaged("its /XRefStm is not an offset"))?;
                    if seen.insert(stm) {
                        self.read_xref_stream(stm, &mut entries)?;
                    }
                }
                (trailer, XrefStyle::Table)
            } else {
                (self.read_xref_stream(off, &mut entries)?, XrefStyle::Stream)
            };
            if trailer.get(b"Encrypt").is_some() {
                return Err(PdfError::Encrypted);
            }
            next = match trailer.get(b"Prev") {
                None => None,
                Some(prev) => Some(offset(prev, self.file.len()).ok_or_else(|| damaged("its /Prev is not an offset"))?),
            };
            if newest {
                self.trailer = trailer;
                self.style = style;
                newest = false;
            }
        }
        Ok(())
    }

    fn add(&mut self, num: u64, loc: Loc, entries: &mut usize) -> Result<(), PdfError> {
        *entries += 1;
        if *entries > MAX_ENTRIES {
            return Err(damaged("it has too many cross-reference entries"));
        }
        let num = u32::try_from(num).ok().filter(|&n| n <= MAX_OBJECT_NUMBER);
        let num = num.ok_or_else(|| damaged("a cross-reference entry names an impossible object number"))?;
        // Newer sections are read first: the first entry for a number is its newest.
        if num != 0 {
            self.xref.entry(num).or_insert(loc);
        }
        Ok(())
    }

    /// A classic table's subsections, after `xref`, and the trailer after them.
    fn read_table(&mut self, p: &mut Parser<'a>, entries: &mut usize) -> Result<Dict, PdfError> {
        let start = p.pos;
        loop {
            p.skip_white();
            let save = p.pos;
            if p.keyword(b"trailer") {
                break;
            }
            p.pos = save;
            let bad = || damaged("its cross-reference table is malformed");
            let first = p.uint().ok_or_else(bad)?;
            let count = p.uint().ok_or_else(bad)?;
            if count > (self.file.len() as u64) / 6 {
                return Err(bad());
            }
            for i in 0..count {
                let off = p.uint().ok_or_else(bad)?;
                let gen = p.uint().and_then(|g| u16::try_from(g).ok()).ok_or_else(bad)?;
                p.skip_white();
                let kind = p.regular();
                match kind {
                    b"n" => {
                        let off = usize::try_from(off).ok().filter(|&o| o < self.file.len());
                        let off = off.ok_or_else(|| damaged("a cross-reference entry points outside the file"))?;
                        self.add(first + i, Loc::File(off, gen), entries)?;
                    }
                    b"f" => *entries += 1,
                    _ => return Err(bad()),
                }
            }
        }
        let trailer = p.value(0)?;
        self.charge(p.pos - start)?;
        match trailer {
            Obj::Dict(d) => Ok(d),
            _ => Err(damaged("its trailer is not a dictionary")),
        }
    }

    /// A cross-reference stream at `off`: its entries, and its dictionary.
    fn read_xref_stream(&mut self, off: usize, entries: &mut usize) -> Result<Dict, PdfError> {
        let bad = || damaged("its cross-reference stream is malformed");
        let (_, dict, range) =
            self.object_at(off, None, 0).map_err(|_| damaged("its startxref or /Prev points at no cross-reference"))?;
        let (Obj::Dict(dict), Some(range)) = (dict, range) else {
            return Err(damaged("its startxref or /Prev points at no cross-reference"));
        };
        if !dict.get(b"Type").is_some_and(|t| t.is_name(b"XRef")) {
            return Err(damaged("its startxref or /Prev points at no cross-reference"));
        }
        let data = self.decode(&dict, range)?;
        let w: Vec<usize> = match dict.get(b"W") {
            Some(Obj::Array(a)) if a.len() == 3 => a
                .iter()
                .map(|x| x.as_int().and_then(|n| usize::try_from(n).ok()).filter(|&n| n <= 8))
                .collect::<Option<_>>()
                .ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        let row = w.iter().sum::<usize>();
        if row == 0 {
            return Err(bad());
        }
        let size = dict.get(b"Size").and_then(Obj::as_int).filter(|&n| n >= 0).ok_or_else(bad)?;
        let index: Vec<(u64, u64)> = match dict.get(b"Index") {
            None => vec![(0, size as u64)],
            Some(Obj::Array(a)) if a.len() % 2 == 0 => a
                .chunks(2)
                .map(|c| Some((u64::try_from(c[0].as_int()?).ok()?, u64::try_from(c[1].as_int()?).ok()?)))
                .collect::<Option<_>>()
                .ok_or_else(bad)?,
            _ => return Err(bad()),
        };
        let total: u64 = index.iter().try_fold(0u64, |t, (_, n)| t.checked_add(*n)).ok_or_else(bad)?;
        if total.checked_mul(row as u64).is_none_or(|n| n > data.len() as u64) {
            return Err(damaged("its cross-reference stream is shorter than its /Index says"));
        }
        let field = |bytes: &[u8]| bytes.iter().fold(0u64, |v, &b| v << 8 | u64::from(b));
        let mut rows = data.chunks_exact(row);
        for (first, count) in index {
            for i in 0..count {
                let r = rows.next().ok_or_else(bad)?;
                let (t, rest) = r.split_at(w[0]);
                let (f2, f3) = rest.split_at(w[1]);
                let kind = if w[0] == 0 { 1 } else { field(t) };
                let num = first.checked_add(i).ok_or_else(bad)?;
                match kind {
                    1 => {
                        let off = usize::try_from(field(f2)).ok().filter(|&o| o < self.file.len());
                        let off = off.ok_or_else(|| damaged("a cross-reference entry points outside the file"))?;
                        let gen = u16::try_from(field(f3)).map_err(|_| bad())?;
                        self.add(num, Loc::File(off, gen), entries)?;
                    }
                    2 => {
                        let stm = u32::try_from(field(f2)).map_err(|_| bad())?;
                        let idx = usize::try_from(field(f3)).map_err(|_| bad())?;
                        self.add(num, Loc::InStream(stm, idx), entries)?;
                    }
                    // Free entries, and types a later PDF may define (read as null).
                    _ => *entries += 1,
                }
            }
        }
        Ok(dict)
    }

    /// The indirect object at `off` (`num gen obj …`): its number and generation, its value,
    /// and its stream's data range when it is a stream.
    #[allow(clippy::type_complexity)]
    pub fn object_at(
        &mut self,
        off: usize,
        expect: Option<u32>,
        depth: u32,
    ) -> Result<((u32, u16), Obj, Option<std::ops::Range<usize>>), PdfError> {
        let not_there = || damaged("a cross-reference entry points at no object");
        let mut p = Parser::new(self.file, off);
        let num = p.uint().and_then(|n| u32::try_from(n).ok()).ok_or_else(not_there)?;
        let gen = p.uint().and_then(|n| u16::try_from(n).ok()).ok_or_else(not_there)?;
        if !p.keyword(b"obj") || expect.is_some_and(|e| e != num) {
            return Err(not_there());
        }
        let value = p.value(0)?;
        self.charge(p.pos - off)?;
        if !p.keyword(b"stream") {
            return Ok(((num, gen), value, None));
        }
        let Obj::Dict(dict) = &value else { return Err(damaged("a stream has no dictionary")) };
        // After `stream`: CRLF or LF (a lone CR is tolerated).
        match (p.b.get(p.pos), p.b.get(p.pos + 1)) {
            (Some(b'\r'), Some(b'\n')) => p.pos += 2,
            (Some(b'\n' | b'\r'), _) => p.pos += 1,
            _ => {}
        }
        let start = p.pos;
        let declared = match dict.get(b"Length") {
            Some(Obj::Int(n)) => usize::try_from(*n).ok(),
            Some(r @ Obj::Ref(..)) => self.resolve(r, depth + 1)?.as_int().and_then(|n| usize::try_from(n).ok()),
            _ => None,
        };
        let fits = |len: usize| {
            let end = start.checked_add(len)?;
            let mut q = Parser::new(self.file, end);
            (end <= self.file.len() && q.keyword(b"endstream")).then_some(end)
        };
        let end = match declared.and_then(fits) {
            Some(end) => end,
            None => {
                // A wrong /Length: the stream ends at the next `endstream`, less one EOL.
                let ends = self.endstreams.get_or_insert_with(|| find_all(self.file, b"endstream"));
                let i = ends.partition_point(|&e| e < start);
                let mut end = *ends.get(i).ok_or_else(|| damaged("a stream has no endstream"))?;
                if end > start && self.file[end - 1] == b'\n' {
                    end -= 1;
                }
                if end > start && self.file[end - 1] == b'\r' {
                    end -= 1;
                }
                end
            }
        };
        Ok(((num, gen), value, Some(start..end)))
    }

    /// `o` with a reference replaced by the object it names (null when there is none).
    pub fn resolve(&mut self, o: &Obj, depth: u32) -> Result<Obj, PdfError> {
        match o {
            Obj::Ref(num, _) => self.load(*num, depth),
            other => Ok(other.clone()),
        }
    }

    /// Object `num`'s value (null when the cross-reference has no such object).
    pub fn load(&mut self, num: u32, depth: u32) -> Result<Obj, PdfError> {
        if depth > MAX_REF_DEPTH {
            return Err(damaged("its references nest too deeply"));
        }
        match self.xref.get(&num).copied() {
            None => Ok(Obj::Null),
            Some(Loc::File(off, _)) => {
                let (_, value, stream) = self.object_at(off, Some(num), depth)?;
                if stream.is_some() {
                    // The reader needs no stream's contents but the ones it decodes itself.
                    return Ok(Obj::Null);
                }
                Ok(value)
            }
            Some(Loc::InStream(stm, idx)) => {
                let s = self.objstm(stm, depth + 1)?;
                let at = match s.index.get(idx) {
                    Some(&(n, at)) if n == num => at,
                    _ => s.index.iter().find(|(n, _)| *n == num).map(|&(_, at)| at).ok_or_else(|| {
                        damaged("an object stream does not hold an object its cross-reference says it does")
                    })?,
                };
                let pos = s.first.checked_add(at).filter(|&p| p < s.data.len());
                let pos = pos.ok_or_else(|| damaged("an object stream's offsets point outside it"))?;
                let mut p = Parser::new(&s.data, pos);
                let value = p.value(0)?;
                self.charge(p.pos - pos)?;
                Ok(value)
            }
        }
    }

    fn objstm(&mut self, num: u32, depth: u32) -> Result<Rc<ObjStm>, PdfError> {
        if let Some(s) = self.objstms.get(&num) {
            return Ok(s.clone());
        }
        let bad = || damaged("an object stream is malformed");
        let Some(Loc::File(off, _)) = self.xref.get(&num).copied() else {
            return Err(damaged("an object is in an object stream that is not in the file"));
        };
        let (_, dict, range) = self.object_at(off, Some(num), depth)?;
        let (Obj::Dict(dict), Some(range)) = (dict, range) else { return Err(bad()) };
        if !dict.get(b"Type").is_some_and(|t| t.is_name(b"ObjStm")) {
            return Err(bad());
        }
        let n = dict.get(b"N").and_then(Obj::as_int).and_then(|n| usize::try_from(n).ok()).ok_or_else(bad)?;
        let first = dict.get(b"First").and_then(Obj::as_int).and_then(|n| usize::try_from(n).ok()).ok_or_else(bad)?;
        let data = self.decode(&dict, range)?;
        if n > data.len() / 2 || first > data.len() {
            return Err(bad());
        }
        let mut p = Parser::new(&data[..first], 0);
        let mut index = Vec::with_capacity(n);
        for _ in 0..n {
            let num = p.uint().and_then(|v| u32::try_from(v).ok()).ok_or_else(bad)?;
            let at = p.uint().and_then(|v| usize::try_from(v).ok()).ok_or_else(bad)?;
            index.push((num, at));
        }
        self.charge(p.pos)?;
        let s = Rc::new(ObjStm { data, first, index });
        self.objstms.insert(num, s.clone());
        Ok(s)
    }

    /// A stream's data with its filters undone: none, or FlateDecode with or without a PNG
    /// predictor (what cross-reference and object streams use).
    fn decode(&mut self, dict: &Dict, range: std::ops::Range<usize>) -> Result<Vec<u8>, PdfError> {
        let raw = &self.file[range];
        let filters: Vec<&Obj> = match dict.get(b"Filter") {
            None | Some(Obj::Null) => vec![],
            Some(Obj::Array(a)) => a.iter().collect(),
            Some(f) => vec![f],
        };
        let params = match dict.get(b"DecodeParms") {
            Some(Obj::Array(a)) => a.first().and_then(Obj::as_dict),
            Some(Obj::Dict(d)) => Some(d),
            _ => None,
        };
        match filters.as_slice() {
            [] => {
                self.charge(raw.len())?;
                Ok(raw.to_vec())
            }
            [f] if f.is_name(b"FlateDecode") || f.is_name(b"Fl") => {
                let mut out = Vec::new();
                flate2::read::ZlibDecoder::new(raw)
                    .take(MAX_INFLATED as u64 + 1)
                    .read_to_end(&mut out)
                    .map_err(|_| damaged("a compressed stream does not inflate"))?;
                if out.len() > MAX_INFLATED {
                    return Err(damaged("a compressed stream inflates to more than 32 MiB"));
                }
                self.charge(out.len())?;
                unpredict(out, params)
            }
            _ => Err(PdfError::Unsupported(
                "its cross-reference or object streams use a filter other than FlateDecode".into(),
            )),
        }
    }

    /// The first page: its object number and generation, and its dictionary.
    pub fn first_page(&mut self) -> Result<((u32, u16), Dict), PdfError> {
        let root = match self.trailer.get(b"Root") {
            Some(Obj::Ref(n, _)) => *n,
            _ => return Err(damaged("its trailer names no document catalog")),
        };
        let catalog = self.load(root, 0)?;
        let pages = match catalog.as_dict().and_then(|c| c.get(b"Pages")) {
            Some(Obj::Ref(n, _)) => *n,
            _ => return Err(damaged("its catalog has no page tree")),
        };
        let mut stack = vec![pages];
        let mut seen = HashSet::new();
        while let Some(num) = stack.pop() {
            if !seen.insert(num) {
                continue;
            }
            if seen.len() > MAX_TREE_NODES {
                return Err(damaged("its page tree is too large to search"));
            }
            let Obj::Dict(node) = self.load(num, 0)? else { continue };
            let ty = node.get(b"Type");
            if ty.is_some_and(|t| t.is_name(b"Page")) || (ty.is_none() && node.get(b"Kids").is_none()) {
                let gen = match self.xref.get(&num) {
                    Some(Loc::File(_, g)) => *g,
                    _ => 0,
                };
                return Ok(((num, gen), node));
            }
            if let Some(kids) = node.get(b"Kids") {
                if let Obj::Array(kids) = self.resolve(kids, 0)? {
                    stack.extend(kids.iter().rev().filter_map(|k| match k {
                        Obj::Ref(n, _) => Some(*n),
                        _ => None,
                    }));
                }
            }
        }
        Err(damaged("it has no pages"))
    }

    /// The number a new object may take: past every number in use and the trailer's /Size.
    pub fn next_number(&self) -> Result<u32, PdfError> {
        let size = self.trailer.get(b"Size").and_then(Obj::as_int).and_then(|n| u32::try_from(n).ok()).unwrap_or(0);
        let past = self.xref.keys().max().map_or(1, |m| m + 1);
        let n = size.max(past).max(1);
        if n > MAX_OBJECT_NUMBER - 2 {
            return Err(damaged("it has no object numbers left for an update"));
        }
        Ok(n)
    }
}

/// Undoes a PNG predictor (`/Predictor` 10–15), as cross-reference streams use; none (1) is
/// nothing to undo; TIFF (2) is refused.
fn unpredict(data: Vec<u8>, params: Option<&Dict>) -> Result<Vec<u8>, PdfError> {
    let get = |k: &[u8], d: i64| params.and_then(|p| p.get(k)).and_then(Obj::as_int).unwrap_or(d);
    let predictor = get(b"Predictor", 1);
    if predictor == 1 {
        return Ok(data);
    }
    if !(10..=15).contains(&predictor) {
        return Err(PdfError::Unsupported("a stream uses a predictor other than PNG".into()));
    }
    let bad = || damaged("a predicted stream is malformed");
    let (colors, bits, columns) = (get(b"Colors", 1), get(b"BitsPerComponent", 8), get(b"Columns", 1));
    if !(1..=32).contains(&colors) || ![1, 2, 4, 8, 16].contains(&bits) || !(1..=1 << 20).contains(&columns) {
        return Err(bad());
    }
    let bpp = ((colors * bits + 7) / 8) as usize;
    let row = ((colors * bits * columns + 7) / 8) as usize;
    if row >= data.len() && !data.is_empty() {
        return Err(bad());
    }
    let mut out = Vec::with_capacity(data.len());
    let mut prev = vec![0u8; row];
    for chunk in data.chunks(row + 1) {
        if chunk.len() != row + 1 {
            return Err(bad());
        }
        let (tag, src) = (chunk[0], &chunk[1..]);
        let mut cur = src.to_vec();
        for i in 0..row {
            let left = if i >= bpp { cur[i - bpp] } else { 0 };
            let up = prev[i];
            let up_left = if i >= bpp { prev[i - bpp] } else { 0 };
            let add = match tag {
                0 => 0,
                1 => left,
                2 => up,
                3 => ((u16::from(left) + u16::from(up)) / 2) as u8,
                4 => paeth(left, up, up_left),
                _ => return Err(bad()),
            };
            cur[i] = cur[i].wrapping_add(add);
        }
        out.extend_from_slice(&cur);
        prev = cur;
    }
    Ok(out)
}

fn paeth(a: u8, b: u8, c: u8) -> u8 {
    let p = i16::from(a) + i16::from(b) - i16::from(c);
    let (pa, pb, pc) = ((p - i16::from(a)).abs(), (p - i16::from(b)).abs(), (p - i16::from(c)).abs());
    if pa <= pb && pa <= pc {
        a
    } else if pb <= pc {
        b
    } else {
        c
    }
}

/// A non-negative integer object that is a byte offset into a file of `len` bytes.
fn offset(o: &Obj, len: usize) -> Option<usize> {
    o.as_int().and_then(|n| usize::try_from(n).ok()).filter(|&n| n < len)
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn rfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).rposition(|w| w == needle)
}

fn find_all(hay: &[u8], needle: &[u8]) -> Vec<usize> {
    hay.windows(needle.len()).enumerate().filter(|(_, w)| *w == needle).map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_up_predictor_is_undone() {
        // Two rows of 3 columns, filter 2 (Up): the second row adds the first.
        let data = vec![0, 1, 2, 3, 2, 1, 1, 1];
        let params = Dict(vec![(b"Predictor".to_vec(), Obj::Int(12)), (b"Columns".to_vec(), Obj::Int(3))]);
        assert_eq!(unpredict(data, Some(&params)).unwrap(), vec![1, 2, 3, 2, 3, 4]);
        assert!(unpredict(vec![0, 1], Some(&params)).is_err(), "a short row");
        assert!(unpredict(vec![9, 1, 2, 3], Some(&params)).is_err(), "an unknown row filter");
    }

    #[test]
    fn paeth_picks_the_nearest() {
        assert_eq!(paeth(10, 20, 10), 20);
        assert_eq!(paeth(20, 10, 10), 20);
        assert_eq!(paeth(5, 5, 5), 5);
    }
}
