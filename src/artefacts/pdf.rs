//! PDF documents whose first page, when opened, follows a URI action: written from scratch
//! ([`generate`]), or added to a user's PDF by an incremental update ([`inject`]) that leaves
//! every byte of the original in place. [`inspect`] reads a file's first page and its
//! page-open actions back (the tests and the fuzz target check the injector with it).
//!
//! The trigger is the page's additional-actions entry, `/AA << /O action >>`, with `action` a
//! `/S /URI` action: Acrobat Reader looks the URI's host up when the page opens (before its
//! security prompt). An existing `/O` action is kept, chained after ours with `/Next`.
//!
//! **The update.** The new revision of the first page (its dictionary as it was, `/AA`
//! merged) and the action object are appended, then a cross-reference section of the file's
//! own style (a classic table and trailer, or a cross-reference stream when the newest
//! section is one) with `/Prev` pointing at the old one, `/Root` and `/Info` kept and the
//! second `/ID` string renewed. A signed PDF stays signed this way (a viewer shows the
//! signature as covering an earlier revision). Encrypted files are refused (their strings
//! and streams would need the key), and so are files this reader cannot read exactly:
//! rather than reconstruct a broken cross-reference the way viewers do, the user is asked to
//! save or repair the file first, so that every object the update leaves alone is where the
//! update says. Uploads are limited to [`MAX_INPUT`] bytes before anything is parsed.
//!
//! **Why by hand, not lopdf.** lopdf 0.47 (`default-features = false`) was measured for
//! this: it adds 16 crates this project does not have (among them aes, cbc, ecb,
//! brotli-decompressor and a second md-5/digest line; 59 in its own tree), builds in 23 s
//! itself and 53 s with its tree from clean (debug, on the 2-core build machine), and it
//! loads a document by parsing and inflating *every* object, where an update needs five or
//! six of them. It also rewrites the objects it keeps, whereas this module only appends. The
//! reader here (`pdf/reader.rs`) parses only the header, the cross-reference chain, the objects on
//! the way to the first page (from the file or from object streams) and nothing else, with
//! every byte parsed or inflated charged to a budget, so a hostile 10 MiB upload costs a
//! bounded, small amount of work; it is small enough (about 600 lines with the syntax layer)
//! to fuzz to the bottom (`fuzz/fuzz_targets/pdf_inject.rs`).
//!
//! The generated document is equally small by hand: a catalog, a page tree, one or two pages
//! of Helvetica text (laid out with the standard Helvetica widths), the action, an Info
//! dictionary and a classic cross-reference table. Its words, dates, producer, page size,
//! object numbering and `/ID` come from the caller, so no two files look alike.

mod reader;
mod syntax;

use std::io::Write;

use chrono::{DateTime, FixedOffset};
use rand::seq::SliceRandom;
use rand::Rng;

use reader::{Reader, XrefStyle};
use syntax::{write_dict, write_obj, write_string, Dict, Obj};

/// Largest PDF accepted for injection.
pub const MAX_INPUT: usize = 10 * 1024 * 1024;

/// Why a PDF was refused. The texts complete a sentence about the upload ("pdf is …").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PdfError {
    #[error("is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("is not a PDF (there is no %PDF- header)")]
    NotPdf,
    #[error("is encrypted (it has a password or restrictions); upload a copy saved without encryption")]
    Encrypted,
    #[error("is damaged: {0}; open and save it again, or repair it (e.g. `qpdf in.pdf out.pdf`), and upload that")]
    Damaged(String),
    #[error("uses something this server cannot update: {0}")]
    Unsupported(String),
}

// --- generating ---------------------------------------------------------------------------

/// The document information dictionary.
#[derive(Debug, Clone)]
pub struct Info {
    pub title: String,
    pub author: String,
    pub subject: Option<String>,
    pub creator: String,
    pub producer: String,
    pub created: DateTime<FixedOffset>,
    pub modified: DateTime<FixedOffset>,
}

/// A piece of the text, laid out top to bottom.
#[derive(Debug, Clone)]
pub enum Block {
    /// Large bold text.
    Title(String),
    /// Bold text, with space before it.
    Heading(String),
    /// Wrapped body text.
    Paragraph(String),
    /// A bold label and its value on one line (`To:  All staff`).
    Field(String, String),
    /// A horizontal line.
    Rule,
    /// An empty line.
    Space,
}

/// What [`generate`] writes.
#[derive(Debug, Clone)]
pub struct NewPdf {
    /// `1.4` to `1.7`.
    pub version: &'static str,
    pub info: Info,
    /// Page width and height in points (A4: 595.28 × 841.89, Letter: 612 × 792).
    pub size: (f32, f32),
    /// Page margin in points.
    pub margin: f32,
    pub blocks: Vec<Block>,
    /// Small text at the foot of each page, beside "Page n of m".
    pub footer: Option<String>,
    /// The URI the first page's open action follows.
    pub open_uri: String,
    /// The file identifier (both `/ID` strings).
    pub id: [u8; 16],
}

/// Helvetica's advance widths (thousandths of the font size) for ASCII 32–126, from its AFM.
const HELVETICA: [u16; 95] = [
    278, 278, 355, 556, 556, 889, 667, 191, 333, 333, 389, 584, 278, 333, 278, 278, 556, 556, 556, 556, 556, 556, 556,
    556, 556, 556, 278, 278, 584, 584, 584, 556, 1015, 667, 667, 722, 722, 667, 611, 778, 722, 278, 500, 667, 556, 833,
    722, 778, 667, 778, 722, 667, 611, 722, 667, 944, 667, 667, 611, 278, 278, 278, 469, 556, 333, 556, 556, 500, 556,
    556, 278, 556, 556, 222, 222, 500, 222, 833, 556, 556, 556, 556, 333, 500, 278, 556, 500, 722, 500, 500, 500, 334,
    260, 334, 584,
];

/// The width of `text` in points (bold text runs about 6% wider; letters past ASCII are
/// taken as 556).
fn text_width(text: &str, size: f32, bold: bool) -> f32 {
    let width = |c: char| (c as usize).checked_sub(32).and_then(|i| HELVETICA.get(i)).copied().unwrap_or(556);
    let units: u32 = text.chars().map(|c| u32::from(width(c))).sum();
    units as f32 * size / 1000.0 * if bold { 1.06 } else { 1.0 }
}

/// Text the fonts can show: printable ASCII and Latin-1 letters (WinAnsi and PDFDocEncoding
/// agree with Latin-1 there), typographic quotes and dashes made plain, anything else `?`.
fn latin1(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{2018}' | '\u{2019}' => '\'',
            '\u{201c}' | '\u{201d}' => '"',
            '\u{2013}' | '\u{2014}' => '-',
            c if (' '..='~').contains(&c) || ('\u{a1}'..='\u{ff}').contains(&c) => c,
            _ => '?',
        })
        .collect()
}

/// The bytes of text made by [`latin1`].
fn latin1_bytes(text: &str) -> Vec<u8> {
    latin1(text).chars().map(|c| c as u32 as u8).collect()
}

fn wrap(text: &str, size: f32, bold: bool, width: f32) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() { word.to_string() } else { format!("{line} {word}") };
        if !line.is_empty() && text_width(&candidate, size, bold) > width {
            lines.push(std::mem::replace(&mut line, word.to_string()));
        } else {
            line = candidate;
        }
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// One page's drawing operators.
#[derive(Default)]
struct PageOps(String);

impl PageOps {
    fn text(&mut self, x: f32, y: f32, size: f32, bold: bool, s: &str) {
        let mut lit = Vec::new();
        write_string(&mut lit, &latin1_bytes(s));
        let font = if bold { "F2" } else { "F1" };
        self.0 += &format!(
            "BT\n/{font} {} Tf\n1 0 0 1 {} {} Tm\n{} Tj\nET\n",
            num(size),
            num(x),
            num(y),
            String::from_utf8_lossy(&lit)
        );
    }

    fn rule(&mut self, x1: f32, x2: f32, y: f32) {
        self.0 += &format!("0.5 w\n{} {} m\n{} {} l\nS\n", num(x1), num(y), num(x2), num(y));
    }
}

/// A number as PDF writes it: at most two decimals, no trailing zeros.
fn num(v: f32) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Lays the blocks out on as many pages as they take.
fn layout(doc: &NewPdf) -> Vec<PageOps> {
    let (w, h) = doc.size;
    let m = doc.margin;
    let width = w - 2.0 * m;
    let bottom = m + 18.0;
    let mut pages = vec![PageOps::default()];
    let mut y = h - m;
    let advance = |pages: &mut Vec<PageOps>, y: &mut f32, by: f32| {
        if *y - by < bottom {
            pages.push(PageOps::default());
            *y = h - m;
        }
        *y -= by;
    };
    for block in &doc.blocks {
        match block {
            Block::Title(t) => {
                for line in wrap(&latin1(t), 16.0, true, width) {
                    advance(&mut pages, &mut y, 21.0);
                    pages.last_mut().expect("one page").text(m, y, 16.0, true, &line);
                }
                y -= 6.0;
            }
            Block::Heading(t) => {
                y -= 8.0;
                for line in wrap(&latin1(t), 11.5, true, width) {
                    advance(&mut pages, &mut y, 15.0);
                    pages.last_mut().expect("one page").text(m, y, 11.5, true, &line);
                }
                y -= 2.0;
            }
            Block::Paragraph(t) => {
                for line in wrap(&latin1(t), 10.5, false, width) {
                    advance(&mut pages, &mut y, 14.5);
                    pages.last_mut().expect("one page").text(m, y, 10.5, false, &line);
                }
                y -= 7.0;
            }
            Block::Field(label, value) => {
                let indent = 78.0;
                for (i, line) in wrap(&latin1(value), 10.5, false, width - indent).into_iter().enumerate() {
                    advance(&mut pages, &mut y, 14.5);
                    let page = pages.last_mut().expect("one page");
                    if i == 0 {
                        page.text(m, y, 10.5, true, &latin1(label));
                    }
                    page.text(m + indent, y, 10.5, false, &line);
                }
            }
            Block::Rule => {
                advance(&mut pages, &mut y, 9.0);
                pages.last_mut().expect("one page").rule(m, w - m, y + 3.0);
                y -= 6.0;
            }
            Block::Space => advance(&mut pages, &mut y, 10.0),
        }
    }
    let n = pages.len();
    for (i, page) in pages.iter_mut().enumerate() {
        let folio = format!("Page {} of {n}", i + 1);
        page.text(w - m - text_width(&folio, 8.0, false), m - 4.0, 8.0, false, &folio);
        if let Some(f) = &doc.footer {
            page.text(m, m - 4.0, 8.0, false, &latin1(f));
        }
    }
    pages
}

/// `D:20240312094511+01'00'`.
fn pdf_date(t: &DateTime<FixedOffset>) -> String {
    let off = t.offset().local_minus_utc();
    let (sign, off) = if off < 0 { ('-', -off) } else { ('+', off) };
    format!("D:{}{sign}{:02}'{:02}'", t.format("%Y%m%d%H%M%S"), off / 3600, off / 60 % 60)
}

fn text_obj(s: &str) -> Obj {
    Obj::Str(latin1_bytes(s))
}

fn name(s: &str) -> Obj {
    Obj::Name(s.as_bytes().to_vec())
}

fn dict(entries: Vec<(&str, Obj)>) -> Dict {
    Dict(entries.into_iter().map(|(k, v)| (k.as_bytes().to_vec(), v)).collect())
}

/// Writes a new PDF: `doc`'s text on as many pages as it takes, the first page opening
/// `doc.open_uri`. `rng` numbers the objects.
pub fn generate(doc: &NewPdf, rng: &mut impl Rng) -> Vec<u8> {
    let pages = layout(doc);
    // Objects: catalog, page tree, info, two fonts, the action, then a page and its
    // contents for each page; numbered in a shuffled order.
    let count = 6 + 2 * pages.len();
    let mut numbers: Vec<u32> = (1..=count as u32).collect();
    numbers.shuffle(rng);
    let (catalog, tree, info, regular, bold, action) =
        (numbers[0], numbers[1], numbers[2], numbers[3], numbers[4], numbers[5]);
    let page_num = |i: usize| numbers[6 + 2 * i];
    let content_num = |i: usize| numbers[7 + 2 * i];
    let r = |n: u32| Obj::Ref(n, 0);

    let mut objects: Vec<(u32, Vec<u8>)> = Vec::with_capacity(count);
    let mut put = |n: u32, d: Dict, stream: Option<Vec<u8>>| {
        let mut out = Vec::new();
        write_dict(&mut out, &d);
        if let Some(data) = stream {
            out.extend_from_slice(b"\nstream\n");
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\nendstream");
        }
        objects.push((n, out));
    };
    put(catalog, dict(vec![("Type", name("Catalog")), ("Pages", r(tree))]), None);
    let kids = (0..pages.len()).map(|i| r(page_num(i))).collect();
    put(
        tree,
        dict(vec![("Type", name("Pages")), ("Kids", Obj::Array(kids)), ("Count", Obj::Int(pages.len() as i64))]),
        None,
    );
    let i = &doc.info;
    let mut info_dict = dict(vec![("Title", text_obj(&i.title)), ("Author", text_obj(&i.author))]);
    if let Some(s) = &i.subject {
        info_dict.push(b"Subject", text_obj(s));
    }
    info_dict.push(b"Creator", text_obj(&i.creator));
    info_dict.push(b"Producer", text_obj(&i.producer));
    info_dict.push(b"CreationDate", Obj::Str(pdf_date(&i.created).into_bytes()));
    info_dict.push(b"ModDate", Obj::Str(pdf_date(&i.modified).into_bytes()));
    put(info, info_dict, None);
    for (n, base) in [(regular, "Helvetica"), (bold, "Helvetica-Bold")] {
        let font = dict(vec![
            ("Type", name("Font")),
            ("Subtype", name("Type1")),
            ("BaseFont", name(base)),
            ("Encoding", name("WinAnsiEncoding")),
        ]);
        put(n, font, None);
    }
    put(action, action_dict(&doc.open_uri, None), None);
    let media = Obj::Array(vec![Obj::Int(0), Obj::Int(0), real(doc.size.0), real(doc.size.1)]);
    for (i, ops) in pages.iter().enumerate() {
        let fonts = dict(vec![("F1", r(regular)), ("F2", r(bold))]);
        let resources =
            dict(vec![("Font", Obj::Dict(fonts)), ("ProcSet", Obj::Array(vec![name("PDF"), name("Text")]))]);
        let mut page = dict(vec![
            ("Type", name("Page")),
            ("Parent", r(tree)),
            ("MediaBox", media.clone()),
            ("Resources", Obj::Dict(resources)),
            ("Contents", r(content_num(i))),
        ]);
        if i == 0 {
            page.push(b"AA", Obj::Dict(dict(vec![("O", r(action))])));
        }
        put(page_num(i), page, None);
        let data = deflate(ops.0.as_bytes());
        let content = dict(vec![("Length", Obj::Int(data.len() as i64)), ("Filter", name("FlateDecode"))]);
        put(content_num(i), content, Some(data));
    }
    objects.sort_by_key(|(n, _)| *n);

    let mut out = format!("%PDF-{}\n%\u{e2}\u{e3}\u{cf}\u{d3}\n", doc.version).into_bytes();
    let mut offsets = Vec::with_capacity(count);
    for (n, body) in &objects {
        offsets.push(out.len());
        out.extend_from_slice(format!("{n} 0 obj\n").as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f\r\n", count + 1).as_bytes());
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n\r\n").as_bytes());
    }
    let id = Obj::Str(doc.id.to_vec());
    let trailer = dict(vec![
        ("Size", Obj::Int(count as i64 + 1)),
        ("Root", r(catalog)),
        ("Info", r(info)),
        ("ID", Obj::Array(vec![id.clone(), id])),
    ]);
    out.extend_from_slice(b"trailer\n");
    write_hex_ids(&mut out, &trailer);
    out.extend_from_slice(format!("\nstartxref\n{xref}\n%%EOF\n").as_bytes());
    out
}

fn real(v: f32) -> Obj {
    let s = num(v);
    if s.contains('.') {
        Obj::Real(s.into_bytes())
    } else {
        Obj::Int(s.parse().unwrap_or(0))
    }
}

fn deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

/// Writes a trailer dictionary with its `/ID` strings in hex, as producers do.
fn write_hex_ids(out: &mut Vec<u8>, trailer: &Dict) {
    out.extend_from_slice(b"<<");
    for (k, v) in &trailer.0 {
        syntax::write_name(out, k);
        out.push(b' ');
        match (k.as_slice(), v) {
            (b"ID", Obj::Array(ids)) => {
                out.push(b'[');
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    match id {
                        Obj::Str(s) => out.extend_from_slice(format!("<{}>", hex::encode_upper(s)).as_bytes()),
                        other => write_obj(out, other),
                    }
                }
                out.push(b']');
            }
            _ => write_obj(out, v),
        }
        out.push(b' ');
    }
    out.extend_from_slice(b">>");
}

/// A URI action, followed by `next` (another action, or an array of them) when given.
fn action_dict(uri: &str, next: Option<Obj>) -> Dict {
    let mut d = dict(vec![("Type", name("Action")), ("S", name("URI")), ("URI", Obj::Str(uri.as_bytes().to_vec()))]);
    if let Some(next) = next {
        d.push(b"Next", next);
    }
    d
}

// --- injecting ----------------------------------------------------------------------------

/// `original` with an incremental update appended that makes its first page open `uri`
/// (see the module documentation). The output starts with `original`, unchanged.
/// `new_id` becomes the second `/ID` string.
pub fn inject(original: &[u8], uri: &str, new_id: [u8; 16]) -> Result<Vec<u8>, PdfError> {
    if original.len() > MAX_INPUT {
        return Err(PdfError::TooLarge { limit: MAX_INPUT });
    }
    let mut r = Reader::open(original)?;
    let ((page_num, page_gen), mut page) = r.first_page()?;
    let action_num = r.next_number()?;

    // The page's /AA, merged: our /O first, the one it had (if any) after it.
    let mut aa = match page.remove(b"AA") {
        None => Dict::default(),
        Some(v) => match r.resolve(&v, 0)? {
            Obj::Dict(d) => d,
            Obj::Null => Dict::default(),
            _ => return Err(PdfError::Damaged("its first page's /AA is not a dictionary".into())),
        },
    };
    let old_open = aa.remove(b"O").filter(|o| *o != Obj::Null);
    aa.push(b"O", Obj::Ref(action_num, 0));
    page.push(b"AA", Obj::Dict(aa));
    // An /AA that was an object of its own now sits one level down in the page.
    if page.depth() > syntax::MAX_DEPTH {
        return Err(PdfError::Unsupported("its first page's actions nest too deeply".into()));
    }

    let mut out = Vec::with_capacity(original.len() + 1024);
    out.extend_from_slice(original);
    if !matches!(out.last(), Some(b'\n' | b'\r')) {
        out.push(b'\n');
    }
    let page_at = out.len();
    out.extend_from_slice(format!("{page_num} {page_gen} obj\n").as_bytes());
    write_dict(&mut out, &page);
    out.extend_from_slice(b"\nendobj\n");
    let action_at = out.len();
    out.extend_from_slice(format!("{action_num} 0 obj\n").as_bytes());
    write_dict(&mut out, &action_dict(uri, old_open));
    out.extend_from_slice(b"\nendobj\n");

    let mut trailer = Dict::default();
    for key in [&b"Root"[..], b"Info"] {
        if let Some(v) = r.trailer.get(key) {
            trailer.push(key, v.clone());
        }
    }
    let first_id = match r.trailer.get(b"ID") {
        Some(Obj::Array(ids)) => match ids.first() {
            Some(Obj::Str(s)) if ids.len() == 2 => s.clone(),
            _ => new_id.to_vec(),
        },
        _ => new_id.to_vec(),
    };
    trailer.push(b"ID", Obj::Array(vec![Obj::Str(first_id), Obj::Str(new_id.to_vec())]));
    trailer.push(b"Prev", Obj::Int(r.startxref as i64));

    let xref_at = out.len();
    match r.style {
        XrefStyle::Table => {
            out.extend_from_slice(b"xref\n");
            for (n, at, g) in [(page_num, page_at, page_gen), (action_num, action_at, 0)] {
                out.extend_from_slice(format!("{n} 1\n{at:010} {g:05} n\r\n").as_bytes());
            }
            let mut full = dict(vec![("Size", Obj::Int(i64::from(action_num) + 1))]);
            full.0.extend(trailer.0);
            out.extend_from_slice(b"trailer\n");
            write_hex_ids(&mut out, &full);
            out.extend_from_slice(b"\n");
        }
        XrefStyle::Stream => {
            let xref_num = action_num + 1;
            let mut rows = Vec::new();
            for (at, g) in [(page_at, page_gen), (action_at, 0), (xref_at, 0)] {
                rows.push(1u8);
                // Offsets fit in four bytes: the file is at most MAX_INPUT plus this update.
                rows.extend_from_slice(&(at as u32).to_be_bytes());
                rows.extend_from_slice(&g.to_be_bytes());
            }
            let mut d = dict(vec![
                ("Type", name("XRef")),
                ("Size", Obj::Int(i64::from(xref_num) + 1)),
                ("W", Obj::Array(vec![Obj::Int(1), Obj::Int(4), Obj::Int(2)])),
                (
                    "Index",
                    Obj::Array(vec![Obj::Int(page_num.into()), Obj::Int(1), Obj::Int(action_num.into()), Obj::Int(2)]),
                ),
            ]);
            d.0.extend(trailer.0);
            d.push(b"Length", Obj::Int(rows.len() as i64));
            out.extend_from_slice(format!("{xref_num} 0 obj\n").as_bytes());
            write_hex_ids(&mut out, &d);
            out.extend_from_slice(b"\nstream\n");
            out.extend_from_slice(&rows);
            out.extend_from_slice(b"\nendstream\nendobj\n");
        }
    }
    out.extend_from_slice(format!("startxref\n{xref_at}\n%%EOF\n").as_bytes());
    Ok(out)
}

// --- reading back -------------------------------------------------------------------------

/// A file's first page as [`inspect`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstPage {
    /// Object number and generation.
    pub object: (u32, u16),
    /// Its dictionary's keys, in file order.
    pub keys: Vec<Vec<u8>>,
    /// The URIs of its page-open actions (`/AA /O` and the `/Next` chain), in the order a
    /// viewer runs them.
    pub open_uris: Vec<Vec<u8>>,
    /// Whether the chain was longer than [`inspect`] follows (`open_uris` has its start).
    pub actions_cut_short: bool,
}

/// Most actions followed along one `/Next` chain (and most waiting to be).
const MAX_ACTIONS: usize = 256;

/// Reads `pdf`'s first page and its page-open URI actions.
pub fn inspect(pdf: &[u8]) -> Result<FirstPage, PdfError> {
    if pdf.len() > MAX_INPUT + 64 * 1024 {
        return Err(PdfError::TooLarge { limit: MAX_INPUT });
    }
    let mut r = Reader::open(pdf)?;
    let (object, page) = r.first_page()?;
    let keys = page.keys().map(<[u8]>::to_vec).collect();
    let mut open_uris = Vec::new();
    let aa = match page.get(b"AA") {
        Some(v) => r.resolve(v, 0)?,
        None => Obj::Null,
    };
    let mut stack: Vec<Obj> = aa.as_dict().and_then(|d| d.get(b"O")).cloned().into_iter().collect();
    let mut seen = std::collections::HashSet::new();
    let mut followed = 0;
    let mut actions_cut_short = false;
    while let Some(o) = stack.pop() {
        followed += 1;
        if followed > MAX_ACTIONS || stack.len() > MAX_ACTIONS {
            actions_cut_short = true;
            break;
        }
        if let Obj::Ref(n, _) = o {
            if !seen.insert(n) {
                continue;
            }
        }
        // An action that does not read is skipped, as a viewer would skip it.
        match r.resolve(&o, 0).unwrap_or(Obj::Null) {
            Obj::Dict(a) => {
                if let (Some(s), Some(Obj::Str(uri))) = (a.get(b"S"), a.get(b"URI")) {
                    if s.is_name(b"URI") {
                        open_uris.push(uri.clone());
                    }
                }
                match a.get(b"Next") {
                    Some(Obj::Array(items)) => stack.extend(items.iter().rev().cloned()),
                    Some(next) => stack.push(next.clone()),
                    None => {}
                }
            }
            Obj::Array(items) => stack.extend(items.into_iter().rev()),
            _ => {}
        }
    }
    Ok(FirstPage { object, keys, open_uris, actions_cut_short })
}

/// Whether `pdf`'s object `num` sits in an object stream (tests: proof that a fixture is one).
#[cfg(test)]
fn in_object_stream(pdf: &[u8], num: u32) -> bool {
    Reader::open(pdf).is_ok_and(|r| matches!(r.xref.get(&num), Some(reader::Loc::InStream(..))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use rand::SeedableRng;

    const URI: &str = "http://abcdefghijklmnopqrstuvwxy.nx.t.test/";

    fn sample(blocks: usize) -> NewPdf {
        let tz = FixedOffset::east_opt(3600).unwrap();
        let mut b = vec![
            Block::Title("Quarterly budget review".into()),
            Block::Field("To:".into(), "All staff".into()),
            Block::Rule,
        ];
        for i in 0..blocks {
            b.push(Block::Heading(format!("Section {i}")));
            b.push(Block::Paragraph(
                "Figures for the quarter are attached (see the (draft) appendix); totals \\ are final. ".repeat(4),
            ));
        }
        NewPdf {
            version: "1.7",
            info: Info {
                title: "Budget".into(),
                author: "A. Person".into(),
                subject: Some("Q3".into()),
                creator: "Writer".into(),
                producer: "LibreOffice 7.6".into(),
                created: tz.with_ymd_and_hms(2024, 3, 12, 9, 45, 11).unwrap(),
                modified: tz.with_ymd_and_hms(2024, 3, 12, 10, 2, 0).unwrap(),
            },
            size: (595.28, 841.89),
            margin: 72.0,
            blocks: b,
            footer: Some("Internal".into()),
            open_uri: URI.into(),
            id: [7; 16],
        }
    }

    /// `hay` with the first `from` replaced by `to`, byte for byte (the files hold binary streams).
    fn replace(hay: &[u8], from: &str, to: &str) -> Vec<u8> {
        let at = reader::find(hay, from.as_bytes()).unwrap_or_else(|| panic!("{from:?} not in the file"));
        [&hay[..at], to.as_bytes(), &hay[at + from.len()..]].concat()
    }

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(1)
    }

    #[test]
    fn a_generated_pdf_opens_the_uri_on_its_first_page() {
        let pdf = generate(&sample(1), &mut rng());
        assert!(pdf.starts_with(b"%PDF-1.7\n"));
        assert!(pdf.ends_with(b"%%EOF\n"));
        let first = inspect(&pdf).unwrap();
        assert_eq!(first.open_uris, vec![URI.as_bytes().to_vec()]);
        assert!(first.keys.contains(&b"AA".to_vec()) && first.keys.contains(&b"Contents".to_vec()));
        let text = String::from_utf8_lossy(&pdf);
        assert!(text.contains("/CreationDate (D:20240312094511+01'00')"), "{text}");
        assert!(text.contains("/Producer (LibreOffice 7.6)"));
    }

    #[test]
    fn long_text_flows_onto_more_pages() {
        let pdf = generate(&sample(12), &mut rng());
        let text = String::from_utf8_lossy(&pdf);
        let count: usize =
            text.split("/Count ").nth(1).unwrap().split(|c: char| !c.is_ascii_digit()).next().unwrap().parse().unwrap();
        assert!(count >= 2, "{count} pages");
        assert_eq!(inspect(&pdf).unwrap().open_uris.len(), 1, "only the first page opens the URI");
    }

    #[test]
    fn object_numbers_differ_between_files() {
        let a = generate(&sample(1), &mut rand::rngs::StdRng::seed_from_u64(1));
        let b = generate(&sample(1), &mut rand::rngs::StdRng::seed_from_u64(2));
        assert_ne!(inspect(&a).unwrap().object, inspect(&b).unwrap().object);
    }

    #[test]
    fn wrapping_respects_the_width() {
        let lines = wrap(&"word ".repeat(200), 10.5, false, 451.0);
        assert!(lines.len() > 5);
        assert!(lines.iter().all(|l| text_width(l, 10.5, false) <= 451.0));
        assert_eq!(latin1("a\u{2019}b\u{e9}\u{20ac}"), "a'b\u{e9}?");
        assert_eq!(latin1_bytes("\u{a3}5 \u{ae}"), b"\xa35 \xae");
        assert_eq!(num(595.28), "595.28");
        assert_eq!(num(72.0), "72");
    }

    #[test]
    fn injection_appends_and_chains_the_existing_action() {
        let original = generate(&sample(1), &mut rng());
        let uri2 = "http://zyxwvutsrqponmlkjihgfedc.nx.t.test/";
        let out = inject(&original, uri2, [9; 16]).unwrap();
        assert!(out.starts_with(&original), "the original bytes are untouched");
        let before = inspect(&original).unwrap();
        let after = inspect(&out).unwrap();
        assert_eq!(after.object, before.object, "the same page, revised");
        assert_eq!(after.open_uris, vec![uri2.as_bytes().to_vec(), URI.as_bytes().to_vec()]);
        assert_eq!(after.keys.len(), before.keys.len());
        let tail = String::from_utf8_lossy(&out[original.len()..]);
        assert!(tail.contains("xref\n") && tail.contains("/Prev "), "{tail}");
        // And again: three in the chain, newest first.
        let uri3 = "http://third.nx.t.test/";
        let again = inspect(&inject(&out, uri3, [1; 16]).unwrap()).unwrap();
        assert_eq!(again.open_uris[0], uri3.as_bytes());
        assert_eq!(again.open_uris.len(), 3);
    }

    /// A PDF 1.5 file with its page in an object stream and a predicted, compressed
    /// cross-reference stream, written here byte by byte (as qpdf --object-streams=generate
    /// lays one out).
    fn xref_stream_pdf(page_extra: &str) -> Vec<u8> {
        let mut out = b"%PDF-1.5\n".to_vec();
        let catalog = out.len();
        out.extend_from_slice(b"1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n");
        let contents = out.len();
        out.extend_from_slice(b"5 0 obj\n<< /Length 6 0 R >>\nstream\nBT ET\nendstream\nendobj\n");
        let length = out.len();
        out.extend_from_slice(b"6 0 obj\n5\nendobj\n");
        let objs = format!("<< /Type /Pages /Kids [3 0 R] /Count 1 >> << /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 5 0 R {page_extra}>> ");
        let second = objs.find("<< /Type /Page ").unwrap();
        let header = format!("2 0 3 {second} ");
        let body = deflate(format!("{header}{objs}").as_bytes());
        let objstm = out.len();
        out.extend_from_slice(
            format!(
                "4 0 obj\n<< /Type /ObjStm /N 2 /First {} /Filter /FlateDecode /Length {} >>\nstream\n",
                header.len(),
                body.len()
            )
            .as_bytes(),
        );
        out.extend_from_slice(&body);
        out.extend_from_slice(b"\nendstream\nendobj\n");
        let xref = out.len();
        // Rows of W [1 3 1] for objects 0..=7, PNG Up predictor (Columns 5).
        let rows: Vec<[u8; 5]> = [
            (0u8, 0usize, 255u8),
            (1, catalog, 0),
            (2, 4, 0),
            (2, 4, 1),
            (1, objstm, 0),
            (1, contents, 0),
            (1, length, 0),
            (1, xref, 0),
        ]
        .iter()
        .map(|&(t, f2, f3)| [t, (f2 >> 16) as u8, (f2 >> 8) as u8, f2 as u8, f3])
        .collect();
        let mut predicted = Vec::new();
        let mut prev = [0u8; 5];
        for row in rows {
            predicted.push(2);
            predicted.extend(row.iter().zip(prev).map(|(a, b)| a.wrapping_sub(b)));
            prev = row;
        }
        let data = deflate(&predicted);
        out.extend_from_slice(format!("7 0 obj\n<< /Type /XRef /Size 8 /W [1 3 1] /Root 1 0 R /ID [<0102> <0102>] /Filter /FlateDecode /DecodeParms << /Columns 5 /Predictor 12 >> /Length {} >>\nstream\n", data.len()).as_bytes());
        out.extend_from_slice(&data);
        out.extend_from_slice(format!("\nendstream\nendobj\nstartxref\n{xref}\n%%EOF").as_bytes());
        out
    }

    #[test]
    fn pages_in_object_streams_get_a_cross_reference_stream_update() {
        let original = xref_stream_pdf("/AA << /C 9 0 R /O << /S /JavaScript /JS (app.alert\\(1\\)) >> >> ");
        assert!(in_object_stream(&original, 3), "the fixture's page is in an object stream");
        assert_eq!(inspect(&original).unwrap().open_uris, Vec::<Vec<u8>>::new());
        let out = inject(&original, URI, [3; 16]).unwrap();
        assert!(out.starts_with(&original));
        let tail = String::from_utf8_lossy(&out[original.len()..]);
        assert!(tail.contains("/Type /XRef") && !tail.contains("\nxref\n"), "{tail}");
        assert!(tail.starts_with('\n'), "an end of line before the update when the file had none");
        let after = inspect(&out).unwrap();
        assert_eq!(after.object, (3, 0));
        assert_eq!(after.open_uris, vec![URI.as_bytes().to_vec()]);
        assert!(!in_object_stream(&out, 3), "the page's new revision is a plain object");
        let r = Reader::open(&out).unwrap();
        assert_eq!(r.style, XrefStyle::Stream);
        assert!(r.trailer.get(b"ID").is_some());
        // The old /O (JavaScript) runs after ours, and /AA's other entries are kept.
        let mut r = Reader::open(&out).unwrap();
        let (_, page) = r.first_page().unwrap();
        let aa = page.get(b"AA").unwrap().as_dict().unwrap();
        assert_eq!(aa.get(b"C"), Some(&Obj::Ref(9, 0)));
        let action = r.resolve(aa.get(b"O").unwrap(), 0).unwrap();
        let next = action.as_dict().unwrap().get(b"Next").unwrap().as_dict().unwrap();
        assert!(next.get(b"S").unwrap().is_name(b"JavaScript"));
    }

    /// A hybrid-reference file (PDF 1.5 for new readers, 1.4 for old): a classic table for the
    /// plain objects, whose trailer's /XRefStm names a cross-reference stream for the page tree,
    /// which sits in an object stream; the page already opens a URI.
    fn hybrid_pdf() -> Vec<u8> {
        let mut out = b"%PDF-1.5\n".to_vec();
        let mut offs = std::collections::BTreeMap::new();
        let mut obj = |out: &mut Vec<u8>, n: u32, body: &[u8]| {
            offs.insert(n, out.len());
            out.extend_from_slice(format!("{n} 0 obj\n").as_bytes());
            out.extend_from_slice(body);
            out.extend_from_slice(b"\nendobj\n");
        };
        obj(&mut out, 1, b"<< /Type /Catalog /Pages 2 0 R >>");
        let objs = "<< /Type /Pages /Kids [3 0 R] /Count 1 >> << /Type /Page /Parent 2 0 R /AA << /O << /S /URI /URI (http://old.example/) >> >> >>";
        let header = format!("2 0 3 {} ", objs.find("<< /Type /Page ").unwrap());
        let data = deflate(format!("{header}{objs}").as_bytes());
        let mut stm = format!(
            "<< /Type /ObjStm /N 2 /First {} /Filter /FlateDecode /Length {} >>\nstream\n",
            header.len(),
            data.len()
        )
        .into_bytes();
        stm.extend_from_slice(&data);
        stm.extend_from_slice(b"\nendstream");
        obj(&mut out, 4, &stm);
        let xs = out.len();
        let rows = [[2u8, 0, 4, 0], [2, 0, 4, 1], [1, (xs >> 8) as u8, xs as u8, 0]].concat();
        let mut body =
            format!("<< /Type /XRef /Size 8 /W [1 2 1] /Index [2 2 7 1] /Length {} >>\nstream\n", rows.len())
                .into_bytes();
        body.extend_from_slice(&rows);
        body.extend_from_slice(b"\nendstream");
        obj(&mut out, 7, &body);
        let xref = out.len();
        out.extend_from_slice(
            format!("xref\n0 2\n0000000000 65535 f\r\n{:010} 00000 n\r\n4 1\n{:010} 00000 n\r\n", offs[&1], offs[&4])
                .as_bytes(),
        );
        out.extend_from_slice(
            format!("trailer\n<< /Size 8 /Root 1 0 R /XRefStm {xs} >>\nstartxref\n{xref}\n%%EOF\n").as_bytes(),
        );
        out
    }

    #[test]
    fn hybrid_files_get_a_classic_update() {
        let original = hybrid_pdf();
        assert!(in_object_stream(&original, 3), "the page is found through /XRefStm");
        assert_eq!(inspect(&original).unwrap().open_uris, vec![b"http://old.example/".to_vec()]);
        let out = inject(&original, URI, [4; 16]).unwrap();
        let tail = String::from_utf8_lossy(&out[original.len()..]);
        assert!(tail.contains("\nxref\n") && !tail.contains("/XRef"), "{tail}");
        assert_eq!(inspect(&out).unwrap().open_uris, vec![URI.as_bytes().to_vec(), b"http://old.example/".to_vec()]);
    }

    #[test]
    fn refuses_what_it_cannot_update() {
        assert_eq!(inject(b"hello, not a pdf", URI, [0; 16]), Err(PdfError::NotPdf));
        assert_eq!(inject(b"", URI, [0; 16]), Err(PdfError::NotPdf));
        let big = vec![b' '; MAX_INPUT + 1];
        assert_eq!(inject(&big, URI, [0; 16]), Err(PdfError::TooLarge { limit: MAX_INPUT }));
        let good = generate(&sample(1), &mut rng());
        for cut in [good.len() / 2, good.len() - 30, 40] {
            assert!(matches!(inject(&good[..cut], URI, [0; 16]), Err(PdfError::Damaged(_))), "cut at {cut}");
        }
        let encrypted = replace(&good, "trailer\n<<", "trailer\n<</Encrypt 99 0 R");
        assert_eq!(inject(&encrypted, URI, [0; 16]), Err(PdfError::Encrypted));
        // A /Prev loop ends; a /Prev outside the file is damage.
        let looped = replace(&good, "trailer\n<<", "trailer\n<</Prev 0");
        assert!(matches!(inject(&looped, URI, [0; 16]), Err(PdfError::Damaged(_))), "offset 0 holds no xref");
        let xref_at = String::from_utf8_lossy(&good)
            .rsplit("startxref\n")
            .next()
            .unwrap()
            .trim_end_matches("\n%%EOF\n")
            .to_string();
        let no_numbers = replace(&good, "trailer\n<<", "trailer\n<</Size 4294967295");
        assert!(matches!(inject(&no_numbers, URI, [0; 16]), Err(PdfError::Damaged(m)) if m.contains("object numbers")));
        let self_loop = replace(&good, "trailer\n<<", &format!("trailer\n<</Prev {xref_at}"));
        assert_eq!(
            inspect(&inject(&self_loop, URI, [0; 16]).unwrap()).unwrap().open_uris.len(),
            2,
            "a /Prev loop ends"
        );
        let xs = xref_stream_pdf("");
        let lzw = replace(&xs, "/Filter /FlateDecode /Length", "/Filter /LZWDecode   /Length");
        assert!(matches!(inject(&lzw, URI, [0; 16]), Err(PdfError::Unsupported(_))));
        let msg = PdfError::Damaged("it has no pages".into()).to_string();
        assert!(msg.starts_with("is damaged: it has no pages;"), "{msg}");
    }

    #[test]
    fn a_wrong_stream_length_is_tolerated() {
        let good = xref_stream_pdf("");
        let len = String::from_utf8_lossy(&good)
            .rsplit("/Predictor 12 >> /Length ")
            .next()
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .to_string();
        let bad = replace(&good, &format!("/Predictor 12 >> /Length {len} "), "/Predictor 12 >> /Length 999999 ");
        let out = inject(&bad, URI, [0; 16]).unwrap();
        assert_eq!(inspect(&out).unwrap().open_uris, vec![URI.as_bytes().to_vec()]);
    }
}
