//! Office Open XML packages (`.docx`, `.xlsx`, and later `.docm`, `.xlsm`): read an uploaded
//! package under limits, get and put its parts, edit `[Content_Types].xml` and relationships,
//! and write it out again with every part that was not touched copied raw (its compressed bytes
//! as they were). Nothing here knows about Word, Excel or tokens; the kinds decide what to add.
//!
//! Reading is defensive, because the package is hostile until proven otherwise:
//! - the size is checked first, then the first bytes: an OLE compound file (`D0 CF 11 E0`) is an
//!   encrypted OOXML document (it holds `EncryptionInfo`) or a legacy binary one, and is refused
//!   saying which; anything but a zip is refused;
//! - the entry count is read from the end-of-central-directory record before the zip crate
//!   builds its index, then every entry is checked from the central directory before anything
//!   is inflated: no encryption, only stored or deflated data, each declared size and their sum
//!   under caps, and no entry claiming to inflate more than [`Limits::max_ratio`] times its
//!   compressed size (the shape of a zip bomb);
//! - a part is inflated only when asked for, and never past its declared size or the cap, so a
//!   central directory that lies about sizes gains nothing.
//!
//! XML is scanned with quick-xml's namespace-aware reader ([`walk`]), which reports each tag with
//! its byte span; edits are splices at those spans ([`Edits`]), so an edited part keeps every
//! byte it had outside the insertions. No OOXML crate is used: the few crates that exist model
//! whole documents (and would rewrite them), where an injector must leave the user's bytes be.

use std::io::{Cursor, Read, Write};
use std::ops::Range;

use quick_xml::events::{BytesStart, Event};
use quick_xml::name::{Namespace, PrefixDeclaration, QName, ResolveResult};
use quick_xml::NsReader;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, System, ZipArchive, ZipWriter};

/// `[Content_Types].xml`, the part that names every other part's type.
pub const CONTENT_TYPES: &str = "[Content_Types].xml";
/// Namespace of `[Content_Types].xml`.
pub const NS_CONTENT_TYPES: &str = "http://schemas.openxmlformats.org/package/2006/content-types";
/// Namespace of relationship parts (`*.rels`).
pub const NS_PACKAGE_RELS: &str = "http://schemas.openxmlformats.org/package/2006/relationships";
/// Namespace of `r:id`, `r:link`, `r:embed` attributes in the parts themselves.
pub const NS_R: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships";
/// DrawingML main namespace (`a:`).
pub const NS_A: &str = "http://schemas.openxmlformats.org/drawingml/2006/main";
/// DrawingML picture namespace (`pic:`).
pub const NS_PIC: &str = "http://schemas.openxmlformats.org/drawingml/2006/picture";
/// Content type of relationship parts.
pub const CT_RELS: &str = "application/vnd.openxmlformats-package.relationships+xml";
/// Content type of core properties (`docProps/core.xml`).
pub const CT_CORE: &str = "application/vnd.openxmlformats-package.core-properties+xml";
/// Content type of extended (application) properties (`docProps/app.xml`).
pub const CT_APP: &str = "application/vnd.openxmlformats-officedocument.extended-properties+xml";
/// Relationship from the package to its main part.
pub const REL_OFFICE_DOCUMENT: &str =
    "http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument";
/// The same relationship in Strict Open XML (ISO 29500 strict), which Trapline does not edit.
pub const REL_OFFICE_DOCUMENT_STRICT: &str = "http://purl.oclc.org/ooxml/officeDocument/relationships/officeDocument";
/// Relationship to the core properties.
pub const REL_CORE: &str = "http://schemas.openxmlformats.org/package/2006/relationships/metadata/core-properties";
/// Relationship to the extended properties.
pub const REL_APP: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/extended-properties";
/// Relationship to an image (with `TargetMode="External"`, a linked one).
pub const REL_IMAGE: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/image";
/// The XML declaration Office writes at the top of every part (with its CRLF).
pub const XML_DECL: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?>\r\n";

/// Magic of an OLE compound file (CFB): encrypted OOXML, or a legacy `.doc`/`.xls`.
const CFB_MAGIC: [u8; 8] = [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
/// Entries smaller than this are never taken for bombs, whatever their ratio.
const RATIO_FLOOR: u64 = 1024 * 1024;

/// What a package may be and hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest package, in bytes.
    pub max_bytes: usize,
    /// Most zip entries.
    pub max_entries: usize,
    /// Largest declared uncompressed size of one entry.
    pub max_part: u64,
    /// Largest sum of declared uncompressed sizes.
    pub max_total: u64,
    /// Largest uncompressed : compressed ratio of an entry over 1 MiB.
    pub max_ratio: u64,
}

impl Limits {
    /// The limits for uploads: 10 MiB, 2000 entries, 32 MiB a part, 256 MiB in all, 100:1.
    pub const UPLOAD: Limits = Limits {
        max_bytes: 10 * 1024 * 1024,
        max_entries: 2000,
        max_part: 32 * 1024 * 1024,
        max_total: 256 * 1024 * 1024,
        max_ratio: 100,
    };
}

/// Why a package cannot be read or edited. The texts complete a sentence about the upload
/// ("doc …").
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("is an encrypted (password-protected) document: encrypted documents are not supported; remove the password and upload it again")]
    Encrypted,
    #[error("is a legacy binary Office file (.doc, .xls), not Office Open XML: save it as .docx or .xlsx first")]
    LegacyOle,
    #[error("is not an Office Open XML document (not a zip package)")]
    NotZip,
    #[error("is a damaged zip package: {0}")]
    Damaged(String),
    #[error("has {count} zip entries; at most {limit} are accepted")]
    TooManyEntries { count: u64, limit: usize },
    #[error("has an encrypted zip entry ({0}): encrypted documents are not supported")]
    EncryptedEntry(String),
    #[error("has a zip entry compressed other than by deflate ({0}), which Office never writes")]
    Compression(String),
    #[error("has a part ({name}) of {size} bytes uncompressed; at most {limit} are accepted")]
    PartTooLarge { name: String, size: u64, limit: u64 },
    #[error("would inflate to more than {limit} bytes")]
    TotalTooLarge { limit: u64 },
    #[error("looks like a zip bomb: {name} would inflate from {compressed} to {size} bytes")]
    Bomb { name: String, size: u64, compressed: u64 },
    #[error("is not an Office Open XML document: {0}")]
    NotOoxml(String),
    #[error("has a part ({part}) that is not well-formed XML: {reason}")]
    Xml { part: String, reason: String },
    /// A kind's own refusal (a workbook sent as a Word document, say).
    #[error("{0}")]
    Refused(String),
}

pub type Result<T> = std::result::Result<T, Error>;

fn damaged(e: impl std::fmt::Display) -> Error {
    Error::Damaged(e.to_string())
}

fn xml_error(part: &str, reason: impl Into<String>) -> Error {
    Error::Xml { part: part.to_string(), reason: reason.into() }
}

#[derive(Debug, Clone)]
enum Body {
    /// Entry `index` of the source archive, declaring `size` bytes uncompressed.
    Original {
        index: usize,
        size: u64,
    },
    New(Vec<u8>),
}

#[derive(Debug, Clone)]
struct Entry {
    name: String,
    body: Body,
}

/// An OOXML package being read and edited.
pub struct Package<'a> {
    zip: Option<ZipArchive<Cursor<&'a [u8]>>>,
    entries: Vec<Entry>,
    limits: Limits,
    rng: StdRng,
}

impl<'a> Package<'a> {
    /// An empty package (to build a document from scratch).
    pub fn new() -> Package<'static> {
        Package { zip: None, entries: Vec::new(), limits: Limits::UPLOAD, rng: StdRng::from_entropy() }
    }

    /// Reads `bytes` as a package within `limits`: see the module documentation for what is
    /// checked. Parts are not inflated here.
    pub fn read(bytes: &'a [u8], limits: Limits) -> Result<Package<'a>> {
        if bytes.len() > limits.max_bytes {
            return Err(Error::TooLarge { limit: limits.max_bytes });
        }
        if bytes.starts_with(&CFB_MAGIC) {
            return Err(if contains_utf16(bytes, "EncryptionInfo") || contains_utf16(bytes, "EncryptedPackage") {
                Error::Encrypted
            } else {
                Error::LegacyOle
            });
        }
        if bytes.starts_with(b"PK\x05\x06") {
            return Err(Error::NotOoxml("it is an empty zip file".into()));
        }
        if !bytes.starts_with(b"PK\x03\x04") {
            return Err(Error::NotZip);
        }
        match eocd_entry_count(bytes) {
            None => return Err(Error::Damaged("no end of central directory (truncated?)".into())),
            Some(n) if n != 0xFFFF && n > limits.max_entries as u64 => {
                return Err(Error::TooManyEntries { count: n, limit: limits.max_entries })
            }
            Some(_) => {}
        }
        let mut zip = ZipArchive::new(Cursor::new(bytes)).map_err(damaged)?;
        if zip.len() > limits.max_entries {
            return Err(Error::TooManyEntries { count: zip.len() as u64, limit: limits.max_entries });
        }
        if zip.has_duplicate_names() {
            return Err(Error::Damaged("two entries have the same name".into()));
        }
        let mut entries = Vec::with_capacity(zip.len());
        let mut total: u64 = 0;
        for index in 0..zip.len() {
            let f = zip.by_index_raw(index).map_err(damaged)?;
            let name = f.name().map_err(damaged)?.into_owned();
            if f.encrypted() {
                return Err(Error::EncryptedEntry(name));
            }
            if !matches!(f.compression(), CompressionMethod::Stored | CompressionMethod::Deflated) {
                return Err(Error::Compression(name));
            }
            let (size, compressed) = (f.size(), f.compressed_size());
            if size > limits.max_part {
                return Err(Error::PartTooLarge { name, size, limit: limits.max_part });
            }
            if size > RATIO_FLOOR && size / compressed.max(1) >= limits.max_ratio {
                return Err(Error::Bomb { name, size, compressed });
            }
            total = total.saturating_add(size);
            if total > limits.max_total {
                return Err(Error::TotalTooLarge { limit: limits.max_total });
            }
            drop(f);
            entries.push(Entry { name, body: Body::Original { index, size } });
        }
        let pkg = Package { zip: Some(zip), entries, limits, rng: StdRng::from_entropy() };
        if !pkg.has(CONTENT_TYPES) {
            return Err(Error::NotOoxml(format!("it is a zip file without {CONTENT_TYPES}")));
        }
        Ok(pkg)
    }

    /// Makes the package's choices (fresh names and ids) follow `seed`, for tests and fuzzing.
    pub fn seed(&mut self, seed: u64) {
        self.rng = StdRng::seed_from_u64(seed);
    }

    /// The package's random source, for the kinds' own choices.
    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// The names of the entries, in package order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    fn index_of(&self, name: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.name == name)
            .or_else(|| self.entries.iter().position(|e| e.name.eq_ignore_ascii_case(name)))
    }

    /// Whether the part exists (part names compare ASCII case-insensitively, as OPC says).
    pub fn has(&self, name: &str) -> bool {
        self.index_of(name).is_some()
    }

    /// The part's bytes, inflated (never past its declared size or the part cap).
    pub fn part(&mut self, name: &str) -> Result<Option<Vec<u8>>> {
        let Some(i) = self.index_of(name) else { return Ok(None) };
        let (index, size) = match &self.entries[i].body {
            Body::New(b) => return Ok(Some(b.clone())),
            Body::Original { index, size } => (*index, *size),
        };
        let zip = self.zip.as_mut().ok_or_else(|| damaged("no source archive"))?;
        let name = &self.entries[i].name;
        let f = zip.by_index(index).map_err(|e| Error::Damaged(format!("{name}: {e}")))?;
        let cap = size.min(self.limits.max_part);
        let mut out = Vec::with_capacity(cap as usize);
        f.take(cap + 1).read_to_end(&mut out).map_err(|e| Error::Damaged(format!("{name}: {e}")))?;
        if out.len() as u64 != size {
            return Err(Error::Damaged(format!("{name} does not inflate to its declared size")));
        }
        Ok(Some(out))
    }

    /// The part as text: UTF-8 (Office writes nothing else); UTF-16 parts are refused.
    pub fn part_text(&mut self, name: &str) -> Result<Option<String>> {
        let Some(bytes) = self.part(name)? else { return Ok(None) };
        if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
            return Err(xml_error(name, "it is UTF-16; only UTF-8 parts are supported"));
        }
        String::from_utf8(bytes).map(Some).map_err(|_| xml_error(name, "it is not UTF-8"))
    }

    /// Sets the part's bytes, replacing it or adding it at the end.
    pub fn put(&mut self, name: &str, bytes: Vec<u8>) {
        match self.index_of(name) {
            Some(i) => self.entries[i].body = Body::New(bytes),
            None => self.entries.push(Entry { name: name.to_string(), body: Body::New(bytes) }),
        }
    }

    /// Orders the entries by `key` (stable): for a document built from scratch, the order its
    /// supposed author's program writes.
    pub fn order_by<K: Ord>(&mut self, mut key: impl FnMut(&str) -> K) {
        self.entries.sort_by_key(|e| key(&e.name));
    }

    /// A part name `{stem}{n}{ext}` that is not taken, with `n` one of the first three free
    /// numbers (so names are not fixed from one document to the next).
    pub fn fresh_part_name(&mut self, stem: &str, ext: &str) -> String {
        let mut skip = self.rng.gen_range(0..3);
        for n in 1.. {
            let name = format!("{stem}{n}{ext}");
            if !self.has(&name) {
                if skip == 0 {
                    return name;
                }
                skip -= 1;
            }
        }
        unreachable!("some number is free")
    }

    /// `[Content_Types].xml`, parsed.
    pub fn content_types(&mut self) -> Result<ContentTypes> {
        let xml = self.part_text(CONTENT_TYPES)?.ok_or_else(|| Error::NotOoxml(format!("no {CONTENT_TYPES}")))?;
        let mut ct = ContentTypes::default();
        walk(CONTENT_TYPES, &xml, |t| {
            if t.kind == TagKind::End {
                return Ok(());
            }
            if t.depth == 1 && !t.is(NS_CONTENT_TYPES, "Types") {
                return Err(Error::NotOoxml(format!("{CONTENT_TYPES} is not a content types part")));
            }
            if t.depth == 2 && t.is(NS_CONTENT_TYPES, "Default") {
                if let (Some(e), Some(c)) = (t.attr(None, "Extension"), t.attr(None, "ContentType")) {
                    ct.defaults.push((e, c));
                }
            } else if t.depth == 2 && t.is(NS_CONTENT_TYPES, "Override") {
                if let (Some(p), Some(c)) = (t.attr(None, "PartName"), t.attr(None, "ContentType")) {
                    ct.overrides.push((p, c));
                }
            }
            Ok(())
        })?;
        Ok(ct)
    }

    /// Names `part`'s content type with an Override (replacing one it had).
    pub fn set_override(&mut self, part: &str, content_type: &str) -> Result<()> {
        let part_name = format!("/{part}");
        let mut xml = self.part_text(CONTENT_TYPES)?.ok_or_else(|| Error::NotOoxml(format!("no {CONTENT_TYPES}")))?;
        let mut old = None;
        walk(CONTENT_TYPES, &xml, |t| {
            if t.kind != TagKind::End
                && t.depth == 2
                && t.is(NS_CONTENT_TYPES, "Override")
                && t.attr(None, "PartName").is_some_and(|p| p.eq_ignore_ascii_case(&part_name))
            {
                old = Some(t.span.clone());
            }
            Ok(())
        })?;
        if let Some(span) = old {
            xml.replace_range(span, "");
        }
        let xml = append_to_root(CONTENT_TYPES, &xml, NS_CONTENT_TYPES, "Types", |t| {
            let (p, decl) = t.element_prefix(NS_CONTENT_TYPES, "ct");
            format!("<{p}Override{decl} PartName=\"{}\" ContentType=\"{}\"/>", escape(&part_name), escape(content_type))
        })?;
        self.put(CONTENT_TYPES, xml.into_bytes());
        Ok(())
    }

    /// Adds a Default for `ext` unless there is one.
    pub fn ensure_default(&mut self, ext: &str, content_type: &str) -> Result<()> {
        if self.content_types()?.defaults.iter().any(|(e, _)| e.eq_ignore_ascii_case(ext)) {
            return Ok(());
        }
        let xml = self.part_text(CONTENT_TYPES)?.unwrap_or_default();
        let xml = append_to_root(CONTENT_TYPES, &xml, NS_CONTENT_TYPES, "Types", |t| {
            let (p, decl) = t.element_prefix(NS_CONTENT_TYPES, "ct");
            format!("<{p}Default{decl} Extension=\"{}\" ContentType=\"{}\"/>", escape(ext), escape(content_type))
        })?;
        self.put(CONTENT_TYPES, xml.into_bytes());
        Ok(())
    }

    /// The relationships of `source` (a part name, or "" for the package's own).
    pub fn relationships(&mut self, source: &str) -> Result<Vec<Relationship>> {
        let rels = rels_name(source);
        let Some(xml) = self.part_text(&rels)? else { return Ok(Vec::new()) };
        let mut out = Vec::new();
        walk(&rels, &xml, |t| {
            if t.kind == TagKind::End {
                return Ok(());
            }
            if t.depth == 1 && !t.is(NS_PACKAGE_RELS, "Relationships") {
                return Err(xml_error(&rels, "it is not a relationships part"));
            }
            if t.depth == 2 && t.is(NS_PACKAGE_RELS, "Relationship") {
                if let (Some(id), Some(rel_type), Some(target)) =
                    (t.attr(None, "Id"), t.attr(None, "Type"), t.attr(None, "Target"))
                {
                    let external = t.attr(None, "TargetMode").is_some_and(|m| m == "External");
                    out.push(Relationship { id, rel_type, target, external });
                }
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Adds a relationship from `source` and returns its id, fresh for that source (`rId`
    /// and a number a little past the highest in use).
    pub fn add_relationship(&mut self, source: &str, rel_type: &str, target: &str, external: bool) -> Result<String> {
        let existing = self.relationships(source)?;
        let highest = existing.iter().filter_map(|r| r.id.strip_prefix("rId")?.parse::<u32>().ok()).max().unwrap_or(0);
        let mut n = highest.saturating_add(1 + self.rng.gen_range(0..3));
        while existing.iter().any(|r| r.id == format!("rId{n}")) {
            n = n.wrapping_add(1);
        }
        let id = format!("rId{n}");
        let mode = if external { " TargetMode=\"External\"" } else { "" };
        let body = |p: &str, decl: &str| {
            format!(
                "<{p}Relationship{decl} Id=\"{id}\" Type=\"{}\" Target=\"{}\"{mode}/>",
                escape(rel_type),
                escape(target)
            )
        };
        let rels = rels_name(source);
        match self.part_text(&rels)? {
            Some(xml) => {
                let xml = append_to_root(&rels, &xml, NS_PACKAGE_RELS, "Relationships", |t| {
                    let (p, decl) = t.element_prefix(NS_PACKAGE_RELS, "pr");
                    body(&p, &decl)
                })?;
                self.put(&rels, xml.into_bytes());
            }
            None => {
                let xml =
                    format!("{XML_DECL}<Relationships xmlns=\"{NS_PACKAGE_RELS}\">{}</Relationships>", body("", ""));
                self.put(&rels, xml.into_bytes());
                self.ensure_default("rels", CT_RELS)?;
            }
        }
        Ok(id)
    }

    /// The main part (the target of the package's officeDocument relationship) and its
    /// content type.
    pub fn main_part(&mut self) -> Result<(String, String)> {
        let rels = self.relationships("")?;
        if rels.iter().any(|r| r.rel_type == REL_OFFICE_DOCUMENT_STRICT) {
            return Err(Error::Refused(
                "is a Strict Open XML document, which is not supported: save it in the ordinary (Transitional) format"
                    .into(),
            ));
        }
        let rel = rels
            .iter()
            .find(|r| r.rel_type == REL_OFFICE_DOCUMENT && !r.external)
            .ok_or_else(|| Error::NotOoxml("it names no main document".into()))?;
        let name = resolve("", &rel.target)
            .filter(|n| self.has(n))
            .ok_or_else(|| Error::NotOoxml("its main document part is missing".into()))?;
        let ct = self
            .content_types()?
            .of(&name)
            .ok_or_else(|| Error::NotOoxml(format!("{CONTENT_TYPES} gives {name} no type")))?
            .to_string();
        Ok((name, ct))
    }

    /// Writes the package: untouched entries raw (their compressed bytes and metadata as they
    /// were), new and edited ones deflated.
    pub fn write(&mut self) -> Result<Vec<u8>> {
        let Package { zip, entries, .. } = self;
        let mut out = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated).system(System::Dos);
        for e in entries.iter() {
            match &e.body {
                Body::Original { index, .. } => {
                    let zip = zip.as_mut().ok_or_else(|| damaged("no source archive"))?;
                    let f = zip.by_index_raw(*index).map_err(|err| Error::Damaged(format!("{}: {err}", e.name)))?;
                    out.raw_copy_file(f).map_err(|err| Error::Damaged(format!("{}: {err}", e.name)))?;
                }
                Body::New(bytes) => {
                    // Writing to memory fails only on a bad name, which the source zip had too.
                    out.start_file(e.name.as_str(), options).map_err(damaged)?;
                    out.write_all(bytes).map_err(damaged)?;
                }
            }
        }
        Ok(out.finish().map_err(damaged)?.into_inner())
    }
}

/// `[Content_Types].xml`: types by extension, and by part name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContentTypes {
    /// (extension, content type).
    pub defaults: Vec<(String, String)>,
    /// (part name with its leading slash, content type).
    pub overrides: Vec<(String, String)>,
}

impl ContentTypes {
    /// The content type of `part` (a part name without the leading slash).
    pub fn of(&self, part: &str) -> Option<&str> {
        let slashed = format!("/{part}");
        if let Some((_, c)) = self.overrides.iter().find(|(p, _)| p.eq_ignore_ascii_case(&slashed)) {
            return Some(c);
        }
        let ext = part.rsplit_once('.').map(|(_, e)| e)?;
        self.defaults.iter().find(|(e, _)| e.eq_ignore_ascii_case(ext)).map(|(_, c)| c.as_str())
    }
}

/// One relationship of a part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    pub id: String,
    pub rel_type: String,
    pub target: String,
    pub external: bool,
}

/// The relationships part of `part` ("" for the package): `word/document.xml` →
/// `word/_rels/document.xml.rels`.
pub fn rels_name(part: &str) -> String {
    match part.rsplit_once('/') {
        _ if part.is_empty() => "_rels/.rels".to_string(),
        Some((dir, file)) => format!("{dir}/_rels/{file}.rels"),
        None => format!("_rels/{part}.rels"),
    }
}

/// The part a relationship of `source` names with `target` (relative to the source's folder,
/// or absolute with a leading slash; percent-escapes decoded). None if it leaves the package.
pub fn resolve(source: &str, target: &str) -> Option<String> {
    let target = target.split('#').next().unwrap_or("");
    let target = percent_encoding::percent_decode_str(target).decode_utf8().ok()?;
    let mut segs: Vec<&str> = Vec::new();
    if !target.starts_with('/') {
        if let Some((dir, _)) = source.rsplit_once('/') {
            segs.extend(dir.split('/').filter(|s| !s.is_empty()));
        }
    }
    for s in target.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                segs.pop()?;
            }
            s => segs.push(s),
        }
    }
    (!segs.is_empty()).then(|| segs.join("/"))
}

/// The target by which `from` names `to` (both part names): `xl/worksheets/sheet1.xml`,
/// `xl/drawings/drawing1.xml` → `../drawings/drawing1.xml`.
pub fn relative(from: &str, to: &str) -> String {
    let from_dir: Vec<&str> = from.rsplit_once('/').map_or(Vec::new(), |(d, _)| d.split('/').collect());
    let to_segs: Vec<&str> = to.split('/').collect();
    let (to_dir, to_file) = to_segs.split_at(to_segs.len() - 1);
    let common = from_dir.iter().zip(to_dir).take_while(|(a, b)| a == b).count();
    let mut out = "../".repeat(from_dir.len() - common);
    for s in &to_dir[common..] {
        out.push_str(s);
        out.push('/');
    }
    out.push_str(to_file[0]);
    out
}

/// `text` escaped for XML text and attribute values.
pub fn escape(text: &str) -> std::borrow::Cow<'_, str> {
    quick_xml::escape::escape(text)
}

fn contains_utf16(haystack: &[u8], needle: &str) -> bool {
    let n: Vec<u8> = needle.encode_utf16().flat_map(u16::to_le_bytes).collect();
    haystack.windows(n.len()).any(|w| w == n)
}

/// The entry count of the end-of-central-directory record (0xFFFF: see the Zip64 record),
/// or None if there is none.
fn eocd_entry_count(bytes: &[u8]) -> Option<u64> {
    if bytes.len() < 22 {
        return None;
    }
    let lowest = bytes.len().saturating_sub(22 + 0xFFFF);
    (lowest..=bytes.len() - 22)
        .rev()
        .find(|&i| bytes[i..i + 4] == *b"PK\x05\x06")
        .map(|i| u64::from(u16::from_le_bytes([bytes[i + 10], bytes[i + 11]])))
}

/// Core properties (`docProps/core.xml`) of a document built from scratch.
#[derive(Debug, Clone)]
pub struct CoreProperties {
    pub title: String,
    pub creator: String,
    pub last_modified_by: String,
    pub revision: u32,
    pub created: chrono::DateTime<chrono::Utc>,
    pub modified: chrono::DateTime<chrono::Utc>,
}

impl CoreProperties {
    /// The part's XML, laid out as Office writes it (times to the second, in UTC).
    pub fn xml(&self) -> String {
        let t = |d: &chrono::DateTime<chrono::Utc>| d.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        format!(
            "{XML_DECL}<cp:coreProperties xmlns:cp=\"http://schemas.openxmlformats.org/package/2006/metadata/core-properties\" \
             xmlns:dc=\"http://purl.org/dc/elements/1.1/\" xmlns:dcterms=\"http://purl.org/dc/terms/\" \
             xmlns:dcmitype=\"http://purl.org/dc/dcmitype/\" xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\">\
             <dc:title>{}</dc:title><dc:creator>{}</dc:creator><cp:lastModifiedBy>{}</cp:lastModifiedBy>\
             <cp:revision>{}</cp:revision><dcterms:created xsi:type=\"dcterms:W3CDTF\">{}</dcterms:created>\
             <dcterms:modified xsi:type=\"dcterms:W3CDTF\">{}</dcterms:modified></cp:coreProperties>",
            escape(&self.title),
            escape(&self.creator),
            escape(&self.last_modified_by),
            self.revision,
            t(&self.created),
            t(&self.modified)
        )
    }
}

// --- XML scanning and splicing -------------------------------------------------------------

/// Which kind of tag [`walk`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Start,
    /// A self-closing element (`<a/>`).
    Empty,
    End,
}

/// A tag as [`walk`] reports it: where it is, how deep, and its names resolved in the scope
/// it is in.
pub struct Tag<'a> {
    pub kind: TagKind,
    /// Its bytes in the text (from `<` to `>`).
    pub span: Range<usize>,
    /// The element's depth: 1 for the root.
    pub depth: usize,
    reader: &'a NsReader<&'a [u8]>,
    start: Option<&'a BytesStart<'a>>,
    name: QName<'a>,
}

impl Tag<'_> {
    /// Whether the element is `local` in namespace `ns`.
    pub fn is(&self, ns: &str, local: &str) -> bool {
        let (res, l) = self.reader.resolve_element(self.name);
        l.as_ref() == local.as_bytes() && matches!(res, ResolveResult::Bound(Namespace(n)) if n == ns.as_bytes())
    }

    /// The element's name as written (`w:sectPr`).
    pub fn qname(&self) -> &[u8] {
        self.name.as_ref()
    }

    /// The value of attribute `local` in namespace `ns` (None: no namespace), unescaped.
    /// Start and empty tags only.
    pub fn attr(&self, ns: Option<&str>, local: &str) -> Option<String> {
        let start = self.start?;
        for a in start.attributes().flatten() {
            let (res, l) = self.reader.resolve_attribute(a.key);
            if l.as_ref() != local.as_bytes() {
                continue;
            }
            let matches = match (res, ns) {
                (ResolveResult::Unbound, None) => true,
                (ResolveResult::Bound(Namespace(n)), Some(ns)) => n == ns.as_bytes(),
                _ => false,
            };
            if matches {
                return a.unescape_value().ok().map(|v| v.into_owned());
            }
        }
        None
    }

    fn bound(&self, prefix: Option<&str>) -> Option<&[u8]> {
        self.reader.prefixes().find_map(|(p, Namespace(n))| {
            let same = match (p, prefix) {
                (PrefixDeclaration::Default, None) => true,
                (PrefixDeclaration::Named(p), Some(want)) => p == want.as_bytes(),
                _ => false,
            };
            same.then_some(n)
        })
    }

    /// A prefix (with its colon, or "" for the default namespace) under which an element
    /// inserted here is in `ns`, and the declaration it needs (" xmlns:p=…", or "").
    pub fn element_prefix(&self, ns: &str, preferred: &str) -> (String, String) {
        if self.bound(None) == Some(ns.as_bytes()) {
            return (String::new(), String::new());
        }
        self.attr_prefix(ns, preferred)
    }

    /// The same for an attribute (which is never in the default namespace).
    pub fn attr_prefix(&self, ns: &str, preferred: &str) -> (String, String) {
        let named = self.reader.prefixes().find_map(|(p, Namespace(n))| match p {
            PrefixDeclaration::Named(p) if n == ns.as_bytes() => std::str::from_utf8(p).ok().map(str::to_string),
            _ => None,
        });
        if let Some(p) = named {
            return (format!("{p}:"), String::new());
        }
        let mut p = preferred.to_string();
        let mut n = 0;
        while self.bound(Some(&p)).is_some() {
            n += 1;
            p = format!("{preferred}{n}");
        }
        (format!("{p}:"), format!(" xmlns:{p}=\"{ns}\""))
    }
}

/// Scans `xml` (the text of part `part`), calling `f` for every start, empty and end tag.
/// Malformed XML (mismatched or unclosed tags, bad syntax) is an error; entities are never
/// expanded beyond the predefined ones.
pub fn walk(part: &str, xml: &str, mut f: impl FnMut(&Tag<'_>) -> Result<()>) -> Result<()> {
    // quick-xml skips a UTF-8 byte order mark without counting it in its positions.
    let (base, body) = match xml.strip_prefix('\u{feff}') {
        Some(rest) => (xml.len() - rest.len(), rest),
        None => (0, xml),
    };
    let mut reader = NsReader::from_str(body);
    let mut depth = 0usize;
    loop {
        let from = base + reader.buffer_position() as usize;
        let ev =
            reader.read_event().map_err(|e| xml_error(part, format!("{e} (near byte {})", reader.error_position())))?;
        let to = base + reader.buffer_position() as usize;
        match &ev {
            Event::Start(e) => {
                depth += 1;
                f(&Tag {
                    kind: TagKind::Start,
                    span: from..to,
                    depth,
                    reader: &reader,
                    start: Some(e),
                    name: e.name(),
                })?;
            }
            Event::Empty(e) => {
                f(&Tag {
                    kind: TagKind::Empty,
                    span: from..to,
                    depth: depth + 1,
                    reader: &reader,
                    start: Some(e),
                    name: e.name(),
                })?;
            }
            Event::End(e) => {
                f(&Tag { kind: TagKind::End, span: from..to, depth, reader: &reader, start: None, name: e.name() })?;
                depth -= 1;
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if depth != 0 {
        return Err(xml_error(part, "it ends inside an element"));
    }
    Ok(())
}

/// Splices into a text at byte positions taken from [`walk`] spans.
#[derive(Debug, Default)]
pub struct Edits(Vec<(Range<usize>, String)>);

impl Edits {
    pub fn insert(&mut self, at: usize, text: impl Into<String>) {
        self.0.push((at..at, text.into()));
    }

    pub fn replace(&mut self, span: Range<usize>, text: impl Into<String>) {
        self.0.push((span, text.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `xml` with the edits made; insertions at one position keep the order they were made in.
    pub fn apply(mut self, part: &str, xml: &str) -> Result<String> {
        self.0.sort_by_key(|(r, _)| (r.start, r.end));
        let mut out = String::with_capacity(xml.len() + self.0.iter().map(|(_, t)| t.len()).sum::<usize>());
        let mut at = 0;
        for (r, text) in &self.0 {
            let kept = xml
                .get(at..r.start)
                .filter(|_| r.start <= r.end)
                .ok_or_else(|| xml_error(part, "overlapping edits"))?;
            out.push_str(kept);
            out.push_str(text);
            at = r.end;
        }
        out.push_str(xml.get(at..).ok_or_else(|| xml_error(part, "edit past the end"))?);
        Ok(out)
    }
}

/// A self-closing tag's text (`<a x="1"/>`) opened, given content, and closed:
/// `<a x="1">inner</a>`.
pub fn expand_empty(tag_text: &str, qname: &[u8], inner: &str) -> String {
    let open = tag_text.trim_end_matches('>').trim_end_matches('/');
    format!("{open}>{inner}</{}>", String::from_utf8_lossy(qname))
}

/// The end of an element, where content is added as its last child: before its end tag, or
/// into it if it is self-closing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    span: Range<usize>,
    empty: bool,
    qname: Vec<u8>,
}

impl Slot {
    /// The slot of the element an end tag or a self-closing tag closes (None for a start tag).
    pub fn of(t: &Tag<'_>) -> Option<Slot> {
        (t.kind != TagKind::Start).then(|| Slot {
            span: t.span.clone(),
            empty: t.kind == TagKind::Empty,
            qname: t.qname().to_vec(),
        })
    }

    /// Adds `text` there (`xml` is the text the slot was found in).
    pub fn fill(&self, edits: &mut Edits, xml: &str, text: String) -> Result<()> {
        if self.empty {
            let tag = xml.get(self.span.clone()).ok_or_else(|| xml_error("?", "a slot outside its text"))?;
            edits.replace(self.span.clone(), expand_empty(tag, &self.qname, &text));
        } else {
            edits.insert(self.span.start, text);
        }
        Ok(())
    }
}

/// `xml` with the text `child(root tag)` added as the last child of its root element, which
/// must be `local` in `ns`.
pub fn append_to_root(
    part: &str,
    xml: &str,
    ns: &str,
    local: &str,
    child: impl FnOnce(&Tag<'_>) -> String,
) -> Result<String> {
    let mut child = Some(child);
    let mut edits = Edits::default();
    let mut filled = Ok(());
    walk(part, xml, |t| {
        if t.depth != 1 {
            return Ok(());
        }
        if !t.is(ns, local) {
            return Err(xml_error(part, format!("its root element is not {local}")));
        }
        if let Some(slot) = Slot::of(t) {
            if let Some(make) = child.take() {
                filled = slot.fill(&mut edits, xml, make(t));
            }
        }
        Ok(())
    })?;
    filled?;
    if edits.is_empty() {
        return Err(xml_error(part, "it has no root element"));
    }
    edits.apply(part, xml)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A zip of (name, bytes, deflated?) entries.
    pub fn zip_of(entries: &[(&str, &[u8], bool)]) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, bytes, deflate) in entries {
            let m = if *deflate { CompressionMethod::Deflated } else { CompressionMethod::Stored };
            w.start_file(*name, SimpleFileOptions::default().compression_method(m)).unwrap();
            w.write_all(bytes).unwrap();
        }
        w.finish().unwrap().into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::tests_support::zip_of;
    use super::*;

    const CT: &str =
        "<?xml version=\"1.0\"?><Types xmlns=\"http://schemas.openxmlformats.org/package/2006/content-types\">\
        <Default Extension=\"rels\" ContentType=\"application/vnd.openxmlformats-package.relationships+xml\"/>\
        <Default Extension=\"xml\" ContentType=\"application/xml\"/>\
        <Override PartName=\"/w/doc.xml\" ContentType=\"text/x-main\"/></Types>";
    const RELS: &str = "<Relationships xmlns=\"http://schemas.openxmlformats.org/package/2006/relationships\">\
        <Relationship Id=\"rId1\" Type=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument\" Target=\"w/doc.xml\"/></Relationships>";

    fn sample() -> Vec<u8> {
        let big = "<p>lorem ipsum dolor</p>".repeat(500);
        zip_of(&[
            (CONTENT_TYPES, CT.as_bytes(), true),
            ("_rels/.rels", RELS.as_bytes(), true),
            ("w/doc.xml", format!("<doc>{big}</doc>").as_bytes(), true),
            ("w/media/pic.bin", &[1, 2, 3, 4], false),
        ])
    }

    #[test]
    fn names_and_targets_resolve() {
        assert_eq!(rels_name(""), "_rels/.rels");
        assert_eq!(rels_name("word/document.xml"), "word/_rels/document.xml.rels");
        assert_eq!(rels_name("top.xml"), "_rels/top.xml.rels");
        assert_eq!(resolve("word/document.xml", "footer1.xml").as_deref(), Some("word/footer1.xml"));
        assert_eq!(resolve("xl/worksheets/sheet1.xml", "../drawings/d.xml").as_deref(), Some("xl/drawings/d.xml"));
        assert_eq!(resolve("xl/worksheets/sheet1.xml", "/xl/x.xml").as_deref(), Some("xl/x.xml"));
        assert_eq!(resolve("", "word/document.xml").as_deref(), Some("word/document.xml"));
        assert_eq!(resolve("a.xml", "../../etc/passwd"), None);
        assert_eq!(resolve("w/d.xml", "media/my%20pic.png").as_deref(), Some("w/media/my pic.png"));
        assert_eq!(relative("xl/worksheets/sheet1.xml", "xl/drawings/drawing1.xml"), "../drawings/drawing1.xml");
        assert_eq!(relative("word/document.xml", "word/footer2.xml"), "footer2.xml");
        assert_eq!(relative("", "word/document.xml"), "word/document.xml");
        for (from, to) in [("a/b/c.xml", "a/d/e.xml"), ("x.xml", "a/b.xml"), ("a/b.xml", "c.xml")] {
            assert_eq!(resolve(from, &relative(from, to)).as_deref(), Some(to), "{from} → {to}");
        }
    }

    #[test]
    fn refuses_what_is_not_a_package() {
        let r = |b: &[u8]| Package::read(b, Limits::UPLOAD).err().unwrap();
        assert_eq!(r(b"hello, world"), Error::NotZip);
        assert_eq!(r(b""), Error::NotZip);
        let mut cfb = CFB_MAGIC.to_vec();
        cfb.extend_from_slice(&[0; 200]);
        assert_eq!(r(&cfb), Error::LegacyOle);
        cfb.extend("EncryptionInfo".encode_utf16().flat_map(u16::to_le_bytes));
        assert_eq!(r(&cfb), Error::Encrypted);
        assert!(matches!(r(&zip_of(&[])), Error::NotOoxml(_)));
        assert!(matches!(r(&zip_of(&[("a.txt", b"x", true)])), Error::NotOoxml(_)));
        let s = sample();
        assert!(matches!(r(&s[..s.len() - 30]), Error::Damaged(_)), "truncated");
        let small = Limits { max_bytes: 100, ..Limits::UPLOAD };
        assert_eq!(Package::read(&s, small).err().unwrap(), Error::TooLarge { limit: 100 });
        let few = Limits { max_entries: 3, ..Limits::UPLOAD };
        assert!(matches!(Package::read(&s, few).err().unwrap(), Error::TooManyEntries { count: 4, limit: 3 }));
    }

    #[test]
    fn refuses_bombs_and_oversized_parts_before_inflating() {
        let zeros = vec![0u8; 4 * 1024 * 1024];
        let bomb = zip_of(&[(CONTENT_TYPES, CT.as_bytes(), true), ("x.xml", &zeros, true)]);
        assert!(bomb.len() < 64 * 1024);
        assert!(matches!(Package::read(&bomb, Limits::UPLOAD), Err(Error::Bomb { size, .. }) if size == 4 << 20));
        let part = Limits { max_part: 1024, ..Limits::UPLOAD };
        assert!(matches!(Package::read(&sample(), part), Err(Error::PartTooLarge { .. })));
        let total = Limits { max_total: 2000, ..Limits::UPLOAD };
        assert!(matches!(Package::read(&sample(), total), Err(Error::TotalTooLarge { .. })));
    }

    #[test]
    fn a_part_never_inflates_past_its_declared_size() {
        let body = "<a>".to_string() + &"x".repeat(5000) + "</a>";
        let mut z = zip_of(&[(CONTENT_TYPES, CT.as_bytes(), true), ("big.xml", body.as_bytes(), true)]);
        // Claim 100 bytes in the local header and in the central directory.
        let patch = |z: &mut Vec<u8>, sig: &[u8], off: usize| {
            let mut from = 0;
            while let Some(i) = z[from..].windows(4).position(|w| w == sig) {
                let i = from + i;
                let name_at = if sig == b"PK\x03\x04" { 30 } else { 46 };
                if z[i + name_at..].starts_with(b"big.xml") {
                    z[i + off..i + off + 4].copy_from_slice(&100u32.to_le_bytes());
                }
                from = i + 4;
            }
        };
        patch(&mut z, b"PK\x03\x04", 22);
        patch(&mut z, b"PK\x01\x02", 24);
        let mut p = Package::read(&z, Limits::UPLOAD).unwrap();
        assert!(
            matches!(p.part("big.xml"), Err(Error::Damaged(_))),
            "{:?}",
            p.part("big.xml").map(|b| b.map(|b| b.len()))
        );
    }

    #[test]
    fn edits_keep_untouched_entries_raw() {
        let src = sample();
        let mut p = Package::read(&src, Limits::UPLOAD).unwrap();
        p.seed(7);
        assert_eq!(p.main_part().unwrap(), ("w/doc.xml".to_string(), "text/x-main".to_string()));
        p.set_override("w/new.xml", "text/x-new").unwrap();
        p.set_override("w/doc.xml", "text/x-main2").unwrap();
        p.ensure_default("png", "image/png").unwrap();
        p.ensure_default("PNG", "image/other").unwrap();
        let id = p.add_relationship("w/doc.xml", REL_IMAGE, "http://h/x?a=1&b=2", true).unwrap();
        let id2 = p.add_relationship("w/doc.xml", REL_IMAGE, "media/pic.bin", false).unwrap();
        assert_ne!(id, id2);
        let id3 = p.add_relationship("", REL_CORE, "docProps/core.xml", false).unwrap();
        assert!(id3.starts_with("rId") && id3 != "rId1", "{id3}");
        p.put("w/new.xml", b"<new/>".to_vec());
        let out = p.write().unwrap();

        let mut q = Package::read(&out, Limits::UPLOAD).unwrap();
        let ct = q.content_types().unwrap();
        assert_eq!(ct.of("w/new.xml"), Some("text/x-new"));
        assert_eq!(ct.of("W/DOC.xml"), Some("text/x-main2"));
        assert_eq!(ct.overrides.len(), 2, "the old override is replaced");
        assert_eq!(ct.of("a/b.png"), Some("image/png"));
        assert_eq!(ct.of("a/b.rels"), Some(CT_RELS));
        let rels = q.relationships("w/doc.xml").unwrap();
        assert_eq!(rels.len(), 2);
        assert_eq!(
            (rels[0].target.as_str(), rels[0].external, rels[0].id.as_str()),
            ("http://h/x?a=1&b=2", true, id.as_str())
        );
        assert_eq!((rels[1].target.as_str(), rels[1].external), ("media/pic.bin", false));
        assert_eq!(q.relationships("").unwrap().len(), 2);
        assert_eq!(q.part("w/new.xml").unwrap().unwrap(), b"<new/>");

        // The document and the picture were not touched: the same compressed bytes and CRC.
        let mut a = ZipArchive::new(Cursor::new(&src[..])).unwrap();
        let mut b = ZipArchive::new(Cursor::new(&out[..])).unwrap();
        for name in ["w/doc.xml", "w/media/pic.bin"] {
            let raw = |z: &mut ZipArchive<Cursor<&[u8]>>| {
                let i = z.index_for_name(name).unwrap();
                let f = z.by_index_raw(i).unwrap();
                let crc = f.crc32();
                let mut v = Vec::new();
                { f }.read_to_end(&mut v).unwrap();
                (crc, v)
            };
            assert_eq!(raw(&mut a), raw(&mut b), "{name}");
        }
        let names: Vec<_> = q.names().collect();
        assert_eq!(&names[..4], [CONTENT_TYPES, "_rels/.rels", "w/doc.xml", "w/media/pic.bin"], "order kept");
    }

    #[test]
    fn fresh_names_are_free_and_not_fixed() {
        let mut p = Package::new();
        p.put("word/footer1.xml", vec![]);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..40 {
            p.seed(seed);
            let n = p.fresh_part_name("word/footer", ".xml");
            assert!(!p.has(&n));
            seen.insert(n);
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(!seen.contains("word/footer1.xml"));
    }

    #[test]
    fn walk_reports_spans_depths_and_namespaces() {
        let xml = "\u{feff}<?xml version=\"1.0\"?><r:a xmlns:r=\"urn:a\" xmlns=\"urn:d\"><b x=\"1\" r:y=\"&amp;2\"/><c>t</c></r:a>";
        let mut seen = Vec::new();
        walk("p", xml, |t| {
            assert!(
                xml[t.span.clone()].starts_with('<') && xml[t.span.clone()].ends_with('>'),
                "{:?}",
                &xml[t.span.clone()]
            );
            if t.is("urn:d", "b") {
                assert_eq!(
                    (t.attr(None, "x").as_deref(), t.attr(Some("urn:a"), "y").as_deref()),
                    (Some("1"), Some("&2"))
                );
                assert_eq!(t.element_prefix("urn:d", "q"), (String::new(), String::new()));
                assert_eq!(t.attr_prefix("urn:a", "q"), ("r:".to_string(), String::new()));
                assert_eq!(t.attr_prefix("urn:z", "r"), ("r1:".to_string(), " xmlns:r1=\"urn:z\"".to_string()));
            }
            seen.push((t.kind, t.depth, String::from_utf8_lossy(t.qname()).into_owned()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen.len(), 5);
        assert_eq!(seen[0], (TagKind::Start, 1, "r:a".into()));
        assert_eq!(seen[1], (TagKind::Empty, 2, "b".into()));
        assert_eq!(seen[4], (TagKind::End, 1, "r:a".into()));
        for bad in ["<a><b></a>", "<a>", "<a></b>", "<a x=\"1></a>"] {
            assert!(walk("p", bad, |_| Ok(())).is_err(), "{bad}");
        }
    }

    #[test]
    fn children_are_appended_to_roots_open_or_empty() {
        let f = |_: &Tag<'_>| "<c/>".to_string();
        assert_eq!(append_to_root("p", "<a xmlns=\"n\"><b/></a>", "n", "a", f).unwrap(), "<a xmlns=\"n\"><b/><c/></a>");
        assert_eq!(append_to_root("p", "<a xmlns=\"n\" />", "n", "a", f).unwrap(), "<a xmlns=\"n\" ><c/></a>");
        assert!(append_to_root("p", "<z xmlns=\"n\"/>", "n", "a", f).is_err());
        assert!(append_to_root("p", "", "n", "a", f).is_err());
        let mut e = Edits::default();
        e.insert(1, "x");
        e.insert(1, "y");
        e.replace(2..3, "Z");
        assert_eq!(e.apply("p", "abcd").unwrap(), "axybZd");
        let mut e = Edits::default();
        e.replace(0..3, "");
        e.replace(1..2, "");
        assert!(e.apply("p", "abcd").is_err());
    }

    #[test]
    fn core_properties_are_escaped_xml() {
        let now = chrono::Utc::now();
        let c = CoreProperties {
            title: "A & B <c>".into(),
            creator: "x".into(),
            last_modified_by: "y".into(),
            revision: 3,
            created: now,
            modified: now,
        };
        let xml = c.xml();
        assert!(xml.contains("<dc:title>A &amp; B &lt;c&gt;</dc:title>"));
        walk("core", &xml, |_| Ok(())).unwrap();
    }
}
