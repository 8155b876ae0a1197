//! VBA projects: the `vbaProject.bin` inside a macro-enabled Office document (`.xlsm`,
//! `.docm`), built from a list of modules, and the [MS-OVBA] compression its streams use.
//!
//! A `vbaProject.bin` is a compound file ([MS-CFB], written with the `cfb` crate) holding:
//! - storage `VBA` with `dir` (the project's records, compressed: system kind, locale, code page,
//!   name, references, and one record group per module naming its stream), `_VBA_PROJECT`
//!   (`CC 61 FF FF 00 00 00`: version 0xFFFF and no performance cache), and one stream per
//!   module holding its compressed source at offset 0;
//! - root streams `PROJECT` (the text description: `ID=`, `Document=`/`Module=` lines, the
//!   obfuscated protection fields `CMG`/`DPB`/`GC`, `[Host Extender Info]`, `[Workspace]`) and
//!   `PROJECTwm` (module names in the code page and in UTF-16).
//!
//! There is no compiled p-code: with version 0xFFFF Office recompiles the project from the
//! source it finds, and LibreOffice only ever reads the source. Document modules
//! (ThisWorkbook/ThisDocument) carry the attributes Office writes for them (`VB_Base` of
//! Excel's workbook class, or Word's `1Normal.ThisDocument`), so a host binds their event
//! procedures (`Workbook_Open`, `Document_Open`) to the document.
//!
//! Written by hand: the compression ([MS-OVBA] 2.4.1, a small LZ77 with 4096-byte chunks), the
//! `dir` records and the `PROJECT` text. No maintained crate writes them: `ovba` only reads
//! projects, and the one other Rust compressor found is an internal module of a spreadsheet
//! engine. The compressor is a real one, not the format's "raw chunk" escape: Excel is
//! reported to drop modules stored raw (READ in that engine's notes; Office cannot be tested
//! here). The compound file underneath comes from `cfb`, which is maintained and writes what
//! Office reads.
//!
//! Names and source are ASCII (a subset of the project's code page, Windows-1252); the builder
//! refuses anything else rather than guess an encoding.

use std::io::{Cursor, Write};

use rand::{Rng, RngCore};

// ---------------------------------------------------------------------------------------------
// Compression ([MS-OVBA] 2.4.1)
// ---------------------------------------------------------------------------------------------

/// Bytes of decompressed data in one chunk (each chunk but the last holds exactly this many).
const CHUNK: usize = 4096;
/// Bits of the hash of three bytes that indexes the match finder's chains.
const HASH_BITS: u32 = 12;

/// Why a compressed container could not be decompressed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecompressError {
    #[error("compressed container does not start with signature byte 0x01")]
    Signature,
    #[error("compressed chunk header at {0} is cut off or has a bad signature")]
    ChunkHeader(usize),
    #[error("copy token at {0} is cut off or reaches before its chunk")]
    CopyToken(usize),
    #[error("a chunk decompresses to more than 4096 bytes")]
    ChunkTooLong,
    #[error("decompressed data exceeds the limit of {0} bytes")]
    TooLarge(usize),
}

/// How many high bits of a copy token hold the offset when the token stands `difference`
/// bytes into its chunk ([MS-OVBA] 2.4.1.3.19.1, "CopyToken Help"); the rest hold the length.
fn bit_count(difference: usize) -> u32 {
    // The smallest n with 2^n >= difference, at least 4 (difference is 1..=4096 in a chunk).
    (usize::BITS - (difference.max(1) - 1).leading_zeros()).max(4)
}

/// The longest match a copy token `difference` bytes into its chunk can say.
fn max_length(difference: usize) -> usize {
    (0xFFFF >> bit_count(difference)) + 3
}

/// Compresses `data` into an [MS-OVBA] compressed container: signature byte 0x01, then one
/// chunk per 4096 bytes, each a run of token sequences (a flag byte and up to eight literal
/// bytes or two-byte copy tokens pointing back into the chunk).
///
/// Matches are found greedily: at each position the longest earlier match in the chunk (the
/// nearest of equally long ones), as the specification's algorithm does, through hash chains
/// instead of its exhaustive scan. A chunk that does not shrink to 4096 bytes or fewer is
/// stored raw, which the format allows only as 4096 bytes: a final chunk shorter than that is
/// then padded with zeros (specification 2.4.1.3.10), the one case in which decompression
/// does not give back exactly `data`. It needs 3641 or more bytes without a three-byte repeat
/// after the last full chunk; text never comes close.
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() / 2 + 16);
    out.push(0x01);
    let mut finder = Finder::new();
    for chunk in data.chunks(CHUNK) {
        compress_chunk(chunk, &mut out, &mut finder);
    }
    out
}

/// Hash chains over one chunk: `head[h]` is the latest position whose next three bytes hash
/// to `h`, `prev[p]` the one before `p` with the same hash (`u16::MAX`: none).
struct Finder {
    head: Vec<u16>,
    prev: Vec<u16>,
}

const NONE: u16 = u16::MAX;

impl Finder {
    fn new() -> Finder {
        Finder { head: vec![NONE; 1 << HASH_BITS], prev: vec![NONE; CHUNK] }
    }

    fn reset(&mut self) {
        self.head.fill(NONE);
    }

    fn hash(b: &[u8]) -> usize {
        let v = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        (v.wrapping_mul(0x9E37_79B1) >> (32 - HASH_BITS)) as usize
    }

    /// Records position `p` (if three bytes start there).
    fn insert(&mut self, chunk: &[u8], p: usize) {
        if p + 3 <= chunk.len() {
            let h = Finder::hash(&chunk[p..]);
            self.prev[p] = self.head[h];
            self.head[h] = p as u16;
        }
    }

    /// The longest match for `pos` among the recorded earlier positions, as (offset, length),
    /// if at least three bytes long.
    fn best(&self, chunk: &[u8], pos: usize) -> Option<(usize, usize)> {
        if pos == 0 || pos + 3 > chunk.len() {
            return None;
        }
        let limit = max_length(pos).min(chunk.len() - pos);
        let mut best = (0, 0);
        let mut cand = self.head[Finder::hash(&chunk[pos..])];
        while cand != NONE {
            let c = cand as usize;
            let len = chunk[c..].iter().zip(&chunk[pos..pos + limit]).take_while(|(a, b)| a == b).count();
            if len > best.1 {
                best = (pos - c, len);
                if len == limit {
                    break;
                }
            }
            cand = self.prev[c];
        }
        (best.1 >= 3).then_some(best)
    }
}

fn compress_chunk(chunk: &[u8], out: &mut Vec<u8>, finder: &mut Finder) {
    let start = out.len();
    out.extend_from_slice(&[0, 0]);
    finder.reset();
    let mut pos = 0;
    while pos < chunk.len() {
        let flag_at = out.len();
        out.push(0);
        let mut flags = 0u8;
        for bit in 0..8 {
            if pos >= chunk.len() {
                break;
            }
            let step = match finder.best(chunk, pos) {
                Some((offset, len)) => {
                    let bits = bit_count(pos);
                    let token = (((offset - 1) << (16 - bits)) | (len - 3)) as u16;
                    out.extend_from_slice(&token.to_le_bytes());
                    flags |= 1 << bit;
                    len
                }
                None => {
                    out.push(chunk[pos]);
                    1
                }
            };
            for p in pos..pos + step {
                finder.insert(chunk, p);
            }
            pos += step;
        }
        out[flag_at] = flags;
    }
    let size = out.len() - start;
    let header: u16 = if size - 2 <= CHUNK {
        // Compressed: flag bit 15, signature 0b011, size of the whole chunk minus 3.
        0xB000 | (size - 3) as u16
    } else {
        out.truncate(start + 2);
        out.extend_from_slice(chunk);
        out.resize(start + 2 + CHUNK, 0);
        0x3FFF
    };
    out[start..start + 2].copy_from_slice(&header.to_le_bytes());
}

/// Decompresses an [MS-OVBA] compressed container, refusing (never panicking on) malformed
/// input and output longer than `limit` bytes. A chunk cut off by the end of `data` gives what
/// it holds, as Office's readers tolerate.
pub fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, DecompressError> {
    let (&sig, mut rest) = data.split_first().ok_or(DecompressError::Signature)?;
    if sig != 0x01 {
        return Err(DecompressError::Signature);
    }
    let mut out = Vec::new();
    while !rest.is_empty() {
        let at = data.len() - rest.len();
        let [a, b, ..] = *rest else { return Err(DecompressError::ChunkHeader(at)) };
        let header = u16::from_le_bytes([a, b]);
        if (header >> 12) & 0b111 != 0b011 {
            return Err(DecompressError::ChunkHeader(at));
        }
        let size = (header & 0x0FFF) as usize + 3;
        let body = &rest[2..size.min(rest.len())];
        rest = &rest[size.min(rest.len())..];
        let chunk_start = out.len();
        if header & 0x8000 == 0 {
            let raw = &body[..body.len().min(CHUNK)];
            if out.len() + raw.len() > limit {
                return Err(DecompressError::TooLarge(limit));
            }
            out.extend_from_slice(raw);
            continue;
        }
        let mut i = 0;
        while i < body.len() {
            let flags = body[i];
            i += 1;
            for bit in 0..8 {
                if i >= body.len() {
                    break;
                }
                let difference = out.len() - chunk_start;
                if flags & (1 << bit) == 0 {
                    if difference >= CHUNK {
                        return Err(DecompressError::ChunkTooLong);
                    }
                    if out.len() >= limit {
                        return Err(DecompressError::TooLarge(limit));
                    }
                    out.push(body[i]);
                    i += 1;
                    continue;
                }
                let token_at = at + 2 + i;
                let [lo, hi] = *body.get(i..i + 2).ok_or(DecompressError::CopyToken(token_at))? else {
                    return Err(DecompressError::CopyToken(token_at));
                };
                i += 2;
                let token = u16::from_le_bytes([lo, hi]) as usize;
                let bits = bit_count(difference);
                let length = (token & (0xFFFF >> bits)) + 3;
                let offset = (token >> (16 - bits)) + 1;
                if difference == 0 || offset > difference {
                    return Err(DecompressError::CopyToken(token_at));
                }
                if difference + length > CHUNK {
                    return Err(DecompressError::ChunkTooLong);
                }
                if out.len() + length > limit {
                    return Err(DecompressError::TooLarge(limit));
                }
                let from = out.len() - offset;
                // Byte by byte: a copy may overlap the bytes it produces (a run).
                for k in 0..length {
                    out.push(out[from + k]);
                }
            }
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The project
// ---------------------------------------------------------------------------------------------

/// The Office application whose document holds the project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Excel,
    Word,
}

impl Host {
    /// The name of the document's own module.
    pub fn document_module(self) -> &'static str {
        match self {
            Host::Excel => "ThisWorkbook",
            Host::Word => "ThisDocument",
        }
    }

    /// The attributes Office writes at the top of the document module, after `VB_Name`: the
    /// class it extends (Excel's Workbook, or the Normal template's ThisDocument), and
    /// whether it comes from a template.
    fn document_attributes(self) -> String {
        let (base, template_derived) = match self {
            Host::Excel => ("0{00020819-0000-0000-C000-000000000046}", "False"),
            Host::Word => ("1Normal.ThisDocument", "True"),
        };
        format!(
            "Attribute VB_Base = \"{base}\"\r\n\
             Attribute VB_GlobalNameSpace = False\r\n\
             Attribute VB_Creatable = False\r\n\
             Attribute VB_PredeclaredId = True\r\n\
             Attribute VB_Exposed = True\r\n\
             Attribute VB_TemplateDerived = {template_derived}\r\n\
             Attribute VB_Customizable = True\r\n"
        )
    }
}

/// What a module is to VBA.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleKind {
    /// The document's own module (ThisWorkbook, ThisDocument): its event procedures run
    /// on the document's events.
    Document,
    /// A standard (procedural) module, such as Module1.
    Standard,
}

/// One module: its name, its kind, and its code (without the `Attribute` lines, which the
/// builder writes; line ends may be `\n` or `\r\n`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub kind: ModuleKind,
    pub code: String,
}

/// A VBA project to build into a `vbaProject.bin`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Project {
    pub host: Host,
    pub modules: Vec<Module>,
}

/// Why a project cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum VbaError {
    #[error("module name {0:?} is not a VBA identifier of at most 31 ASCII characters")]
    ModuleName(String),
    #[error("module {0:?} appears twice")]
    DuplicateModule(String),
    #[error("a {host:?} project's document module must be named {expected}, not {name:?}")]
    DocumentModule { host: Host, expected: &'static str, name: String },
    #[error("module {0:?} has code that is not ASCII")]
    NotAscii(String),
    #[error("a project needs at least one module")]
    NoModules,
    #[error("writing the compound file: {0}")]
    Io(#[from] std::io::Error),
}

/// The project's name in `dir` and `PROJECT` (Excel's default; LibreOffice imports the
/// modules into a Basic library of this name).
pub const PROJECT_NAME: &str = "VBAProject";
/// Windows-1252.
const CODE_PAGE: u16 = 1252;
/// English (United States).
const LCID: u32 = 0x0409;

/// The type libraries every Office project references (the host's own library and VBA's are
/// implicit): OLE Automation and the Office object library.
const REFERENCES: &[(&str, &str)] = &[
    ("stdole", r"*\G{00020430-0000-0000-C000-000000000046}#2.0#0#C:\Windows\System32\stdole2.tlb#OLE Automation"),
    (
        "Office",
        r"*\G{2DF8D04C-5BFA-101B-BDE5-00AA0044DE52}#2.8#0#C:\Program Files\Common Files\Microsoft Shared\OFFICE16\MSO.DLL#Microsoft Office 16.0 Object Library",
    ),
];

/// Builds the `vbaProject.bin` of `project`, with a fresh project id and obfuscation seeds.
pub fn build(project: &Project) -> Result<Vec<u8>, VbaError> {
    build_with(project, &mut rand::thread_rng())
}

/// [`build`] with the randomness from `rng` (tests use a seeded one).
pub fn build_with(project: &Project, rng: &mut impl RngCore) -> Result<Vec<u8>, VbaError> {
    validate(project)?;
    let mut guid = [0u8; 16];
    rng.fill_bytes(&mut guid);
    let id = format!(
        "{{{:08X}-{:04X}-{:04X}-{:04X}-{:012X}}}",
        u32::from_be_bytes([guid[0], guid[1], guid[2], guid[3]]),
        u16::from_be_bytes([guid[4], guid[5]]),
        0x4000 | (u16::from_be_bytes([guid[6], guid[7]]) & 0x0FFF),
        0x8000 | (u16::from_be_bytes([guid[8], guid[9]]) & 0x3FFF),
        u64::from_be_bytes([0, 0, guid[10], guid[11], guid[12], guid[13], guid[14], guid[15]]),
    );

    let mut file = cfb::CompoundFile::create_with_version(cfb::Version::V3, Cursor::new(Vec::new()))?;
    file.create_storage("/VBA")?;
    file.create_stream("/VBA/_VBA_PROJECT")?.write_all(&[0xCC, 0x61, 0xFF, 0xFF, 0x00, 0x00, 0x00])?;
    file.create_stream("/VBA/dir")?.write_all(&compress(&dir_stream(project, rng)))?;
    for m in &project.modules {
        file.create_stream(format!("/VBA/{}", m.name))?.write_all(&compress(&module_source(project.host, m)))?;
    }
    file.create_stream("/PROJECT")?.write_all(project_stream(project, &id, rng).as_bytes())?;
    file.create_stream("/PROJECTwm")?.write_all(&project_wm(project))?;
    file.flush()?;
    Ok(file.into_inner().into_inner())
}

fn validate(project: &Project) -> Result<(), VbaError> {
    if project.modules.is_empty() {
        return Err(VbaError::NoModules);
    }
    let mut seen: Vec<String> = Vec::new();
    for m in &project.modules {
        let n = &m.name;
        let ident = !n.is_empty()
            && n.len() <= 31
            && n.as_bytes()[0].is_ascii_alphabetic()
            && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !ident {
            return Err(VbaError::ModuleName(n.clone()));
        }
        if seen.contains(&n.to_ascii_lowercase()) {
            return Err(VbaError::DuplicateModule(n.clone()));
        }
        seen.push(n.to_ascii_lowercase());
        let expected = project.host.document_module();
        if m.kind == ModuleKind::Document && n != expected {
            return Err(VbaError::DocumentModule { host: project.host, expected, name: n.clone() });
        }
        if !m.code.is_ascii() {
            return Err(VbaError::NotAscii(n.clone()));
        }
    }
    Ok(())
}

/// The module's full source as stored: `Attribute` lines, then the code, CRLF line ends.
pub fn module_source(host: Host, m: &Module) -> Vec<u8> {
    let mut s = format!("Attribute VB_Name = \"{}\"\r\n", m.name);
    if m.kind == ModuleKind::Document {
        s.push_str(&host.document_attributes());
    }
    for line in m.code.lines() {
        s.push_str(line);
        s.push_str("\r\n");
    }
    s.into_bytes()
}

/// `dir` record writers: an id, then a 4-byte size and that many bytes.
struct Records(Vec<u8>);

impl Records {
    fn record(&mut self, id: u16, data: &[u8]) -> &mut Self {
        self.0.extend_from_slice(&id.to_le_bytes());
        self.0.extend_from_slice(&(data.len() as u32).to_le_bytes());
        self.0.extend_from_slice(data);
        self
    }

    fn u32(&mut self, id: u16, v: u32) -> &mut Self {
        self.record(id, &v.to_le_bytes())
    }

    /// A record of only an id and four reserved zero bytes (module type, terminators).
    fn marker(&mut self, id: u16) -> &mut Self {
        self.0.extend_from_slice(&id.to_le_bytes());
        self.0.extend_from_slice(&[0; 4]);
        self
    }

    fn u16(&mut self, id: u16, v: u16) -> &mut Self {
        self.record(id, &v.to_le_bytes())
    }

    /// A text in the code page, then (after the reserved id) the same text in UTF-16LE: the
    /// shape of the name, doc string, help file and constants records.
    fn text_pair(&mut self, id: u16, reserved: u16, text: &str) -> &mut Self {
        self.record(id, text.as_bytes());
        self.record(reserved, &utf16(text))
    }
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// The decompressed `dir` stream ([MS-OVBA] 2.3.4.2).
fn dir_stream(project: &Project, rng: &mut impl RngCore) -> Vec<u8> {
    let mut r = Records(Vec::with_capacity(1024));
    // PROJECTINFORMATION
    r.u32(0x0001, 1) // PROJECTSYSKIND: Win32
        .u32(0x0002, LCID) // PROJECTLCID
        .u32(0x0014, LCID) // PROJECTLCIDINVOKE
        .u16(0x0003, CODE_PAGE) // PROJECTCODEPAGE
        .record(0x0004, PROJECT_NAME.as_bytes()) // PROJECTNAME
        .text_pair(0x0005, 0x0040, "") // PROJECTDOCSTRING
        .text_pair(0x0006, 0x003D, "") // PROJECTHELPFILEPATH (HelpFile1, HelpFile2)
        .u32(0x0007, 0) // PROJECTHELPCONTEXT
        .u32(0x0008, 0); // PROJECTLIBFLAGS
                         // PROJECTVERSION: its "size" is a reserved 4 followed by six bytes of version.
    r.0.extend_from_slice(&0x0009u16.to_le_bytes());
    r.0.extend_from_slice(&4u32.to_le_bytes());
    r.0.extend_from_slice(&rng.gen::<u32>().to_le_bytes());
    r.0.extend_from_slice(&rng.gen_range(1u16..40).to_le_bytes());
    r.text_pair(0x000C, 0x003C, ""); // PROJECTCONSTANTS
                                     // PROJECTREFERENCES: REFERENCENAME then REFERENCEREGISTERED for each library.
    for (name, libid) in REFERENCES {
        r.text_pair(0x0016, 0x003E, name);
        let mut reg = Vec::with_capacity(libid.len() + 10);
        reg.extend_from_slice(&(libid.len() as u32).to_le_bytes());
        reg.extend_from_slice(libid.as_bytes());
        reg.extend_from_slice(&[0; 6]); // Reserved1 (4 bytes), Reserved2 (2 bytes)
        r.record(0x000D, &reg);
    }
    // PROJECTMODULES
    r.u16(0x000F, project.modules.len() as u16).u16(0x0013, 0xFFFF); // count, PROJECTCOOKIE
    for m in &project.modules {
        r.record(0x0019, m.name.as_bytes()) // MODULENAME
            .record(0x0047, &utf16(&m.name)) // MODULENAMEUNICODE
            .text_pair(0x001A, 0x0032, &m.name) // MODULESTREAMNAME
            .text_pair(0x001C, 0x0048, "") // MODULEDOCSTRING
            .u32(0x0031, 0) // MODULEOFFSET: source at the stream's start, no p-code
            .u32(0x001E, 0) // MODULEHELPCONTEXT
            .u16(0x002C, 0xFFFF) // MODULECOOKIE
            .marker(if m.kind == ModuleKind::Standard { 0x0021 } else { 0x0022 }) // MODULETYPE
            .marker(0x002B); // module terminator
    }
    r.marker(0x0010); // dir terminator
    r.0
}

/// [MS-OVBA] 2.4.3 data encryption of a `PROJECT` protection field, as uppercase hex. The
/// ignored bytes repeat one value, as VBA's own output does.
fn encrypt(project_id: &str, data: &[u8], rng: &mut impl RngCore) -> String {
    let seed: u8 = rng.gen();
    let version = 2u8;
    let key = project_id.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    let mut out = vec![seed, seed ^ version, seed ^ key];
    let (mut plain1, mut enc1, mut enc2) = (key, seed ^ key, seed ^ version);
    let filler: u8 = rng.gen();
    let ignored = std::iter::repeat_n(filler, ((seed & 6) / 2) as usize);
    let length = (data.len() as u32).to_le_bytes();
    for b in ignored.chain(length).chain(data.iter().copied()) {
        let e = b ^ enc2.wrapping_add(plain1);
        out.push(e);
        enc2 = enc1;
        enc1 = e;
        plain1 = b;
    }
    out.iter().map(|b| format!("{b:02X}")).collect()
}

/// The `PROJECT` stream ([MS-OVBA] 2.3.1): unprotected, visible, no password.
fn project_stream(project: &Project, id: &str, rng: &mut impl RngCore) -> String {
    let mut s = format!("ID=\"{id}\"\r\n");
    for m in &project.modules {
        match m.kind {
            ModuleKind::Document => s.push_str(&format!("Document={}/&H00000000\r\n", m.name)),
            ModuleKind::Standard => s.push_str(&format!("Module={}\r\n", m.name)),
        }
    }
    s.push_str(&format!("Name=\"{PROJECT_NAME}\"\r\nHelpContextID=\"0\"\r\nVersionCompatible32=\"393222000\"\r\n"));
    s.push_str(&format!("CMG=\"{}\"\r\n", encrypt(id, &[0, 0, 0, 0], rng)));
    s.push_str(&format!("DPB=\"{}\"\r\n", encrypt(id, &[0], rng)));
    s.push_str(&format!("GC=\"{}\"\r\n", encrypt(id, &[0xFF], rng)));
    s.push_str(
        "\r\n[Host Extender Info]\r\n&H00000001={3832D640-CF90-11CF-8E43-00A0C911005A};VBE;&H00000000\r\n\r\n[Workspace]\r\n",
    );
    for m in &project.modules {
        match m.kind {
            ModuleKind::Document => s.push_str(&format!("{}=0, 0, 0, 0, C\r\n", m.name)),
            ModuleKind::Standard => {
                let (x, y) = (rng.gen_range(0..60) * 2, rng.gen_range(0..60) * 2);
                let (w, h) = (rng.gen_range(700..1300), rng.gen_range(400..700));
                s.push_str(&format!("{}={x}, {y}, {}, {}, C\r\n", m.name, x + w, y + h));
            }
        }
    }
    s
}

/// The `PROJECTwm` stream: each module name in the code page and in UTF-16, NUL-terminated,
/// then a two-byte terminator.
fn project_wm(project: &Project) -> Vec<u8> {
    let mut out = Vec::new();
    for m in &project.modules {
        out.extend_from_slice(m.name.as_bytes());
        out.push(0);
        out.extend_from_slice(&utf16(&m.name));
        out.extend_from_slice(&[0, 0]);
    }
    out.extend_from_slice(&[0, 0]);
    out
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use rand::SeedableRng;

    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        s.split_whitespace().map(|b| u8::from_str_radix(b, 16).unwrap()).collect()
    }

    fn round_trip(data: &[u8]) -> Vec<u8> {
        let c = compress(data);
        let d = decompress(&c, usize::MAX).unwrap();
        assert_eq!(d, data, "round trip of {} bytes", data.len());
        c
    }

    #[test]
    fn specification_examples() {
        // [MS-OVBA] 3.2.1: nothing repeats, one token sequence of literals after another.
        let plain = b"abcdefghijklmnopqrstuv.";
        let expected = unhex("01 19 B0 00 61 62 63 64 65 66 67 68 00 69 6A 6B 6C 6D 6E 6F 70 00 71 72 73 74 75 76 2E");
        assert_eq!(compress(plain), expected);
        assert_eq!(decompress(&expected, 1000).unwrap(), plain);
        // 3.2.2: the normal example decompresses to its text and ours gives it back too.
        let text = b"#aaabcdefaaaaghijaaaaaklaaamnopqaaaaaaaaaaaarstuvwxyzaaa";
        let spec = unhex(
            "01 2F B0 00 23 61 61 61 62 63 64 65 82 66 00 70 61 67 68 69 6A 01 38 08 61 6B 6C 00 20 6D 6E 6F \
             70 06 71 02 70 04 00 72 73 74 75 76 10 77 78 79 7A 00 2C",
        );
        assert_eq!(decompress(&spec, 1000).unwrap(), text);
        round_trip(text);
        // A run becomes a literal and one copy token that overlaps what it produces.
        let run = [b'a'; 73];
        assert_eq!(compress(&run), unhex("01 03 B0 02 61 45 00"));
    }

    #[test]
    fn round_trips() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let text = "Private Sub Workbook_Open()\r\n    Refresh\r\nEnd Sub\r\n".repeat(300);
        let c = round_trip(text.as_bytes());
        assert!(c.len() < text.len() / 5, "{} of {}", c.len(), text.len());
        round_trip(b"");
        round_trip(b"a");
        round_trip(&[0; 4096]);
        round_trip(&[0; 4097]);
        round_trip(&[7; 20_000]);
        let noise: Vec<u8> = (0..12_288).map(|_| rng.gen()).collect();
        let c = round_trip(&noise);
        // Whole chunks of noise are stored raw: 3 chunks of 2 + 4096 bytes.
        assert_eq!(c.len(), 1 + 3 * 4098);
        for len in [1, 2, 3, 17, 255, 4095, 4096, 4097, 8191, 8192, 9000] {
            let small_alphabet: Vec<u8> = (0..len).map(|_| b"ab\r\n"[rng.gen_range(0..4)]).collect();
            round_trip(&small_alphabet);
        }
    }

    #[test]
    fn a_short_incompressible_tail_is_padded_as_the_specification_says() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let noise: Vec<u8> = (0..4000).map(|_| rng.gen()).collect();
        let c = compress(&noise);
        assert_eq!(&c[1..3], &[0xFF, 0x3F]);
        let d = decompress(&c, usize::MAX).unwrap();
        assert_eq!(d.len(), 4096);
        assert_eq!(&d[..4000], &noise[..]);
        assert!(d[4000..].iter().all(|&b| b == 0));
    }

    /// Compressing and decompressing random text and bytes of all lengths gives them back
    /// (a property test; the fuzz target `ovba_compress` runs the same check on its inputs).
    #[test]
    fn property_round_trip() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(42);
        for _ in 0..400 {
            let len = rng.gen_range(0..10_000);
            let alphabet = rng.gen_range(1..=256usize);
            let mut data: Vec<u8> = (0..len).map(|_| rng.gen_range(0..alphabet) as u8).collect();
            // Sometimes splice in repeats from earlier, as source text has.
            for _ in 0..rng.gen_range(0..20) {
                if data.len() > 10 {
                    let (a, n) = (rng.gen_range(0..data.len() - 5), rng.gen_range(3..300));
                    let piece: Vec<u8> = data[a..(a + n).min(data.len())].to_vec();
                    let at = rng.gen_range(0..data.len());
                    data.splice(at..at, piece);
                }
            }
            let c = compress(&data);
            let d = decompress(&c, usize::MAX).unwrap();
            if d != data {
                // Only the padded raw tail may differ.
                let tail = data.len() % CHUNK;
                assert!(tail > 3640 && d.len() == data.len() - tail + CHUNK, "{} -> {}", data.len(), d.len());
                assert_eq!(&d[..data.len()], &data[..]);
            }
        }
    }

    #[test]
    fn decompression_refuses_bad_input() {
        assert_eq!(decompress(&[], 10), Err(DecompressError::Signature));
        assert_eq!(decompress(&[2], 10), Err(DecompressError::Signature));
        assert_eq!(decompress(&[1], 10), Ok(vec![]));
        assert_eq!(decompress(&[1, 0x00], 10), Err(DecompressError::ChunkHeader(1)));
        assert_eq!(decompress(&[1, 0x00, 0x00], 10), Err(DecompressError::ChunkHeader(1)));
        // A copy token first in its chunk points before it.
        assert_eq!(decompress(&[1, 0x02, 0xB0, 0x01, 0x00, 0x00], 10), Err(DecompressError::CopyToken(4)));
        // A copy token cut in half.
        assert_eq!(decompress(&[1, 0x02, 0xB0, 0x02, 0x61, 0x45], 10), Err(DecompressError::CopyToken(5)));
        // The run example, within and over a limit.
        let run = unhex("01 03 B0 02 61 45 00");
        assert_eq!(decompress(&run, 73).unwrap(), [b'a'; 73]);
        assert_eq!(decompress(&run, 72), Err(DecompressError::TooLarge(72)));
        // A copy running past 4096 bytes of its chunk.
        let long = unhex("01 03 B0 02 61 FF 0F");
        assert_eq!(decompress(&long, usize::MAX), Err(DecompressError::ChunkTooLong));
    }

    fn project(host: Host) -> Project {
        let doc = host.document_module();
        Project {
            host,
            modules: vec![
                Module { name: doc.into(), kind: ModuleKind::Document, code: "Private Sub X()\nEnd Sub\n".into() },
                Module { name: "Module1".into(), kind: ModuleKind::Standard, code: "Sub Auto_Open()\nEnd Sub".into() },
            ],
        }
    }

    fn stream(file: &mut cfb::CompoundFile<Cursor<Vec<u8>>>, path: &str) -> Vec<u8> {
        let mut v = Vec::new();
        file.open_stream(path).unwrap().read_to_end(&mut v).unwrap();
        v
    }

    /// Reads the `dir` records back into (id, data) pairs: PROJECTVERSION has a reserved
    /// field where others have a size, module types and terminators only a reserved field.
    fn records(dir: &[u8]) -> Vec<(u16, Vec<u8>)> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < dir.len() {
            let id = u16::from_le_bytes([dir[i], dir[i + 1]]);
            let field = u32::from_le_bytes(dir[i + 2..i + 6].try_into().unwrap()) as usize;
            let (skip, size) = match id {
                0x0009 => (6, 6),
                0x0021 | 0x0022 | 0x002B | 0x0010 => {
                    assert_eq!(field, 0, "reserved of {id:#06x}");
                    (2, 4)
                }
                _ => (6, field),
            };
            out.push((id, dir[i + skip..i + skip + size].to_vec()));
            i += skip + size;
        }
        assert_eq!(i, dir.len());
        out
    }

    #[test]
    fn builds_the_streams_office_reads() {
        for host in [Host::Excel, Host::Word] {
            let p = project(host);
            let bin = build_with(&p, &mut rand::rngs::StdRng::seed_from_u64(1)).unwrap();
            let mut file = cfb::CompoundFile::open(Cursor::new(bin)).unwrap();
            assert_eq!(file.version(), cfb::Version::V3);
            assert_eq!(stream(&mut file, "/VBA/_VBA_PROJECT"), [0xCC, 0x61, 0xFF, 0xFF, 0, 0, 0]);

            let dir = decompress(&stream(&mut file, "/VBA/dir"), 1 << 20).unwrap();
            let recs = records(&dir);
            let ids: Vec<u16> = recs.iter().map(|r| r.0).collect();
            let module_ids = [0x19, 0x47, 0x1A, 0x32, 0x1C, 0x48, 0x31, 0x1E, 0x2C];
            let mut expected = vec![1, 2, 0x14, 3, 4, 5, 0x40, 6, 0x3D, 7, 8, 9, 0x0C, 0x3C];
            expected.extend([0x16, 0x3E, 0x0D, 0x16, 0x3E, 0x0D, 0x0F, 0x13]);
            expected.extend(module_ids.iter().chain(&[0x22, 0x2B]));
            expected.extend(module_ids.iter().chain(&[0x21, 0x2B]));
            expected.push(0x10);
            assert_eq!(ids, expected);
            assert_eq!(recs[4].1, b"VBAProject");
            assert_eq!(recs[3].1, 1252u16.to_le_bytes());
            let stdole = &recs[16].1;
            assert!(String::from_utf8_lossy(stdole).contains("{00020430-0000-0000-C000-000000000046}#2.0#0#"));
            assert_eq!(u32::from_le_bytes(stdole[..4].try_into().unwrap()) as usize, stdole.len() - 10);
            assert_eq!(recs[22].1, host.document_module().as_bytes());

            let source = decompress(&stream(&mut file, &format!("/VBA/{}", host.document_module())), 1 << 20).unwrap();
            let source = String::from_utf8(source).unwrap();
            let head = format!("Attribute VB_Name = \"{}\"\r\nAttribute VB_Base = ", host.document_module());
            assert!(source.starts_with(&head), "{source}");
            assert!(source.ends_with("\r\nPrivate Sub X()\r\nEnd Sub\r\n"), "{source}");
            let vb_base = if host == Host::Excel {
                "\"0{00020819-0000-0000-C000-000000000046}\""
            } else {
                "\"1Normal.ThisDocument\""
            };
            assert!(source.contains(vb_base));
            let module = decompress(&stream(&mut file, "/VBA/Module1"), 1 << 20).unwrap();
            assert_eq!(module, b"Attribute VB_Name = \"Module1\"\r\nSub Auto_Open()\r\nEnd Sub\r\n");

            let text = String::from_utf8(stream(&mut file, "/PROJECT")).unwrap();
            let lines: Vec<&str> = text.split("\r\n").collect();
            assert!(lines[0].starts_with("ID=\"{") && lines[0].ends_with("}\""), "{text}");
            assert_eq!(lines[1], format!("Document={}/&H00000000", host.document_module()));
            assert_eq!(lines[2], "Module=Module1");
            assert_eq!(lines[3], "Name=\"VBAProject\"");
            assert!(text.contains(
                "\r\n[Host Extender Info]\r\n&H00000001={3832D640-CF90-11CF-8E43-00A0C911005A};VBE;&H00000000\r\n"
            ));
            assert!(text.contains(&format!("\r\n[Workspace]\r\n{}=0, 0, 0, 0, C\r\nModule1=", host.document_module())));

            let wm = stream(&mut file, "/PROJECTwm");
            let mut expected_wm = Vec::new();
            for name in [host.document_module(), "Module1"] {
                expected_wm.extend(name.as_bytes());
                expected_wm.push(0);
                expected_wm.extend(utf16(name));
                expected_wm.extend([0, 0]);
            }
            expected_wm.extend([0, 0]);
            assert_eq!(wm, expected_wm);
        }
    }

    /// Decrypts a protection field ([MS-OVBA] 2.4.3.3) into (project key, data).
    fn decrypt(hex: &str) -> (u8, Vec<u8>) {
        let b: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        let (seed, version_enc, key_enc) = (b[0], b[1], b[2]);
        assert_eq!(seed ^ version_enc, 2);
        let key = seed ^ key_enc;
        let (mut plain1, mut enc1, mut enc2) = (key, key_enc, version_enc);
        let mut plain = Vec::new();
        for &e in &b[3..] {
            let p = e ^ enc2.wrapping_add(plain1);
            plain.push(p);
            enc2 = enc1;
            enc1 = e;
            plain1 = p;
        }
        let ignored = ((seed & 6) / 2) as usize;
        let length = u32::from_le_bytes(plain[ignored..ignored + 4].try_into().unwrap()) as usize;
        assert_eq!(plain.len(), ignored + 4 + length);
        (key, plain[ignored + 4..].to_vec())
    }

    #[test]
    fn protection_fields_decrypt_to_unprotected_visible_no_password() {
        // The project id of the specification's example project (3.1).
        let id = "{917DED54-440B-4FD1-A5C1-74ACF261E600}";
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..20 {
            let text = project_stream(&project(Host::Excel), id, &mut rng);
            let field = |name: &str| {
                let line = text.lines().find(|l| l.starts_with(&format!("{name}=\""))).unwrap();
                line[name.len() + 2..line.len() - 1].to_string()
            };
            let key = id.bytes().fold(0u8, |a, b| a.wrapping_add(b));
            assert_eq!(decrypt(&field("CMG")), (key, vec![0, 0, 0, 0]));
            assert_eq!(decrypt(&field("DPB")), (key, vec![0]));
            assert_eq!(decrypt(&field("GC")), (key, vec![0xFF]));
        }
    }

    #[test]
    fn refuses_what_vba_cannot_hold() {
        let mut p = project(Host::Excel);
        p.modules[1].name = "Module 1".into();
        assert!(matches!(build(&p), Err(VbaError::ModuleName(_))));
        p.modules[1].name = "thisworkbook".into();
        assert!(matches!(build(&p), Err(VbaError::DuplicateModule(_))));
        p.modules[1].name = "Module1".into();
        p.modules[1].code = "MsgBox \"caf\u{e9}\"".into();
        assert!(matches!(build(&p), Err(VbaError::NotAscii(_))));
        let mut w = project(Host::Word);
        w.modules[0].name = "ThisWorkbook".into();
        assert!(matches!(build(&w), Err(VbaError::DocumentModule { .. })));
        assert!(matches!(build(&Project { host: Host::Word, modules: vec![] }), Err(VbaError::NoModules)));
    }
}
