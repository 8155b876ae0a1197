//! PDF object syntax (ISO 32000-1 §7.2–7.3): the objects the injector reads and writes, a
//! parser over a byte slice and a serializer. The parser is strict where a mistake would
//! change meaning (an unterminated string, a dictionary key that is not a name), bounded
//! against hostile input (nesting depth, integer overflow, no recursion on lookahead), and
//! never panics. The serializer writes what the parser reads back as the same object, which
//! the injector and its fuzz target rely on: a page dictionary copied into an incremental
//! update means exactly what the original said.

use super::PdfError;

/// How deeply arrays and dictionaries may nest (real files stay far below; the limit keeps
/// recursion, and dropping the result, off the end of the stack).
pub const MAX_DEPTH: u32 = 64;

/// A PDF object. Streams are a dictionary plus a byte range, kept by the reader.
#[derive(Debug, Clone, PartialEq)]
pub enum Obj {
    Null,
    Bool(bool),
    Int(i64),
    /// A real number, as written (its text is kept, so it is written back unchanged).
    Real(Vec<u8>),
    /// A name, `#xx` escapes decoded.
    Name(Vec<u8>),
    /// A string (literal or hexadecimal), escapes decoded.
    Str(Vec<u8>),
    Array(Vec<Obj>),
    Dict(Dict),
    /// An indirect reference: object number, generation.
    Ref(u32, u16),
}

impl Obj {
    pub fn as_dict(&self) -> Option<&Dict> {
        match self {
            Obj::Dict(d) => Some(d),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Obj::Int(n) => Some(*n),
            _ => None,
        }
    }

    pub fn is_name(&self, name: &[u8]) -> bool {
        matches!(self, Obj::Name(n) if n == name)
    }

    /// How deeply arrays and dictionaries nest in it (a number: 0, `[1]`: 1).
    pub fn depth(&self) -> u32 {
        match self {
            Obj::Array(items) => 1 + items.iter().map(Obj::depth).max().unwrap_or(0),
            Obj::Dict(d) => d.depth(),
            _ => 0,
        }
    }
}

/// A dictionary: entries in file order (duplicates kept, the first one counts).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dict(pub Vec<(Vec<u8>, Obj)>);

impl Dict {
    pub fn get(&self, key: &[u8]) -> Option<&Obj> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Removes every entry named `key`; the first one's value.
    pub fn remove(&mut self, key: &[u8]) -> Option<Obj> {
        let first = self.0.iter().position(|(k, _)| k == key).map(|i| self.0.remove(i).1);
        self.0.retain(|(k, _)| k != key);
        first
    }

    pub fn push(&mut self, key: &[u8], value: Obj) {
        self.0.push((key.to_vec(), value));
    }

    /// [`Obj::depth`] of the dictionary.
    pub fn depth(&self) -> u32 {
        1 + self.0.iter().map(|(_, v)| v.depth()).max().unwrap_or(0)
    }

    pub fn keys(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|(k, _)| k.as_slice())
    }
}

pub fn is_white(c: u8) -> bool {
    matches!(c, 0 | 9 | 10 | 12 | 13 | 32)
}

fn is_delim(c: u8) -> bool {
    b"()<>[]{}/%".contains(&c)
}

pub fn is_regular(c: u8) -> bool {
    !is_white(c) && !is_delim(c)
}

fn damaged(what: &str) -> PdfError {
    PdfError::Damaged(what.to_string())
}

/// A cursor over PDF bytes.
pub struct Parser<'a> {
    pub b: &'a [u8],
    pub pos: usize,
}

impl<'a> Parser<'a> {
    pub fn new(b: &'a [u8], pos: usize) -> Parser<'a> {
        Parser { b, pos: pos.min(b.len()) }
    }

    fn peek(&self, ahead: usize) -> Option<u8> {
        self.b.get(self.pos + ahead).copied()
    }

    /// Skips white space and comments.
    pub fn skip_white(&mut self) {
        while let Some(c) = self.peek(0) {
            if is_white(c) {
                self.pos += 1;
            } else if c == b'%' {
                while let Some(c) = self.peek(0) {
                    if c == b'\r' || c == b'\n' {
                        break;
                    }
                    self.pos += 1;
                }
            } else {
                break;
            }
        }
    }

    /// The run of regular characters at the cursor (a keyword, number or name body).
    pub fn regular(&mut self) -> &'a [u8] {
        let start = self.pos;
        while self.peek(0).is_some_and(is_regular) {
            self.pos += 1;
        }
        &self.b[start..self.pos]
    }

    /// Skips white space, then reads a keyword; true when it is `kw`. The cursor moves past
    /// whatever was read.
    pub fn keyword(&mut self, kw: &[u8]) -> bool {
        self.skip_white();
        self.regular() == kw
    }

    /// Skips white space and reads a non-negative integer.
    pub fn uint(&mut self) -> Option<u64> {
        self.skip_white();
        let digits = self.regular();
        if digits.is_empty() || digits.len() > 18 || !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        digits.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
    }

    /// Reads one object (white space and comments first).
    pub fn value(&mut self, depth: u32) -> Result<Obj, PdfError> {
        if depth > MAX_DEPTH {
            return Err(damaged("objects nest too deeply"));
        }
        self.skip_white();
        let c = self.peek(0).ok_or_else(|| damaged("the file ends inside an object"))?;
        match c {
            b'/' => {
                self.pos += 1;
                Ok(Obj::Name(decode_name(self.regular())))
            }
            b'(' => {
                self.pos += 1;
                self.literal().map(Obj::Str)
            }
            b'<' if self.peek(1) == Some(b'<') => {
                self.pos += 2;
                self.dict_body(depth).map(Obj::Dict)
            }
            b'<' => {
                self.pos += 1;
                self.hex().map(Obj::Str)
            }
            b'[' => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_white();
                    match self.peek(0) {
                        Some(b']') => {
                            self.pos += 1;
                            return Ok(Obj::Array(items));
                        }
                        Some(_) => items.push(self.value(depth + 1)?),
                        None => return Err(damaged("an array is not closed")),
                    }
                }
            }
            b'0'..=b'9' | b'+' | b'-' | b'.' => self.number_or_ref(),
            _ => match self.regular() {
                b"true" => Ok(Obj::Bool(true)),
                b"false" => Ok(Obj::Bool(false)),
                b"null" => Ok(Obj::Null),
                b"" => Err(damaged("an object starts with a stray delimiter")),
                _ => Err(damaged("an object is an unknown keyword")),
            },
        }
    }

    /// The entries of a dictionary, after its `<<`.
    fn dict_body(&mut self, depth: u32) -> Result<Dict, PdfError> {
        let mut d = Dict::default();
        loop {
            self.skip_white();
            match (self.peek(0), self.peek(1)) {
                (Some(b'>'), Some(b'>')) => {
                    self.pos += 2;
                    return Ok(d);
                }
                (Some(b'/'), _) => {
                    self.pos += 1;
                    let key = decode_name(self.regular());
                    let value = self.value(depth + 1)?;
                    d.0.push((key, value));
                }
                (None, _) => return Err(damaged("a dictionary is not closed")),
                _ => return Err(damaged("a dictionary key is not a name")),
            }
        }
    }

    fn number_or_ref(&mut self) -> Result<Obj, PdfError> {
        let text = self.regular();
        let (sign, body) = match text.first() {
            Some(b'+' | b'-') => (&text[..1], &text[1..]),
            _ => (&text[..0], text),
        };
        let dots = body.iter().filter(|&&c| c == b'.').count();
        let digits = body.iter().filter(|c| c.is_ascii_digit()).count();
        if digits == 0 || dots > 1 || digits + dots != body.len() {
            return Err(damaged("a number is malformed"));
        }
        if dots == 1 {
            return Ok(Obj::Real(text.to_vec()));
        }
        let Some(n) = body.iter().try_fold(0i64, |n, d| n.checked_mul(10)?.checked_add(i64::from(d - b'0'))) else {
            return Ok(Obj::Real(text.to_vec())); // too big for an integer: kept as written
        };
        let n = if sign == b"-" { -n } else { n };
        // `n g R`: look two tokens ahead, and come back if they are not a generation and R.
        if sign.is_empty() {
            if let Ok(num) = u32::try_from(n) {
                let save = self.pos;
                if let Some(gen) = self.uint().and_then(|g| u16::try_from(g).ok()) {
                    if self.keyword(b"R") {
                        return Ok(Obj::Ref(num, gen));
                    }
                }
                self.pos = save;
            }
        }
        Ok(Obj::Int(n))
    }

    /// A literal string's bytes, after its `(`.
    fn literal(&mut self) -> Result<Vec<u8>, PdfError> {
        let mut out = Vec::new();
        let mut depth = 1usize;
        loop {
            let c = self.peek(0).ok_or_else(|| damaged("a string is not closed"))?;
            self.pos += 1;
            match c {
                b'\\' => {
                    let e = self.peek(0).ok_or_else(|| damaged("a string is not closed"))?;
                    self.pos += 1;
                    match e {
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'b' => out.push(8),
                        b'f' => out.push(12),
                        b'0'..=b'7' => {
                            let mut v = u32::from(e - b'0');
                            for _ in 0..2 {
                                match self.peek(0) {
                                    Some(d @ b'0'..=b'7') => {
                                        v = v * 8 + u32::from(d - b'0');
                                        self.pos += 1;
                                    }
                                    _ => break,
                                }
                            }
                            out.push((v & 0xff) as u8);
                        }
                        b'\r' => {
                            if self.peek(0) == Some(b'\n') {
                                self.pos += 1;
                            }
                        }
                        b'\n' => {}
                        other => out.push(other),
                    }
                }
                b'(' => {
                    depth += 1;
                    out.push(c);
                }
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(out);
                    }
                    out.push(c);
                }
                b'\r' => {
                    // An end of line in a string reads as one newline, whatever it was.
                    if self.peek(0) == Some(b'\n') {
                        self.pos += 1;
                    }
                    out.push(b'\n');
                }
                _ => out.push(c),
            }
        }
    }

    /// A hexadecimal string's bytes, after its `<`.
    fn hex(&mut self) -> Result<Vec<u8>, PdfError> {
        let mut out = Vec::new();
        let mut half: Option<u8> = None;
        loop {
            let c = self.peek(0).ok_or_else(|| damaged("a hex string is not closed"))?;
            self.pos += 1;
            let v = match c {
                b'>' => break,
                c if is_white(c) => continue,
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(damaged("a hex string holds a character that is not hex")),
            };
            match half.take() {
                Some(h) => out.push(h << 4 | v),
                None => half = Some(v),
            }
        }
        if let Some(h) = half {
            out.push(h << 4);
        }
        Ok(out)
    }
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// A name's bytes with `#xx` escapes decoded (a `#` not followed by two hex digits is kept).
fn decode_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'#' {
            if let (Some(h), Some(l)) =
                (raw.get(i + 1).and_then(|&c| hex_val(c)), raw.get(i + 2).and_then(|&c| hex_val(c)))
            {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// Writes `o` so that [`Parser::value`] reads it back as `o`.
pub fn write_obj(out: &mut Vec<u8>, o: &Obj) {
    match o {
        Obj::Null => out.extend_from_slice(b"null"),
        Obj::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Obj::Int(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Obj::Real(text) => out.extend_from_slice(text),
        Obj::Name(n) => write_name(out, n),
        Obj::Str(s) => write_string(out, s),
        Obj::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b' ');
                }
                write_obj(out, item);
            }
            out.push(b']');
        }
        Obj::Dict(d) => write_dict(out, d),
        Obj::Ref(n, g) => out.extend_from_slice(format!("{n} {g} R").as_bytes()),
    }
}

pub fn write_dict(out: &mut Vec<u8>, d: &Dict) {
    out.extend_from_slice(b"<<");
    for (k, v) in &d.0 {
        write_name(out, k);
        out.push(b' ');
        write_obj(out, v);
        out.push(b' ');
    }
    out.extend_from_slice(b">>");
}

pub fn write_name(out: &mut Vec<u8>, n: &[u8]) {
    out.push(b'/');
    for &c in n {
        if (0x21..0x7f).contains(&c) && c != b'#' && is_regular(c) {
            out.push(c);
        } else {
            out.extend_from_slice(format!("#{c:02X}").as_bytes());
        }
    }
}

/// A literal string: `(`, `)` and `\` escaped, bytes outside printable ASCII as octal (so no
/// end of line is rewritten on the way back).
pub fn write_string(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'(');
    for &c in s {
        match c {
            b'(' | b')' | b'\\' => {
                out.push(b'\\');
                out.push(c);
            }
            0x20..=0x7e => out.push(c),
            _ => out.extend_from_slice(format!("\\{c:03o}").as_bytes()),
        }
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &[u8]) -> Result<Obj, PdfError> {
        Parser::new(s, 0).value(0)
    }

    fn round_trip(o: &Obj) {
        let mut out = Vec::new();
        write_obj(&mut out, o);
        assert_eq!(&parse(&out).unwrap(), o, "{}", String::from_utf8_lossy(&out));
    }

    #[test]
    fn reads_the_object_types() {
        let o = parse(b"<< /Type /Page /Kids [1 0 R 2 5 R 3] /N -4 /R 1.5 /S (a\\(b\\)c\\n\\101) /H <41 4> /B true /Z null /A#41 1 >>")
            .unwrap();
        let d = o.as_dict().unwrap();
        assert!(d.get(b"Type").unwrap().is_name(b"Page"));
        assert_eq!(d.get(b"Kids"), Some(&Obj::Array(vec![Obj::Ref(1, 0), Obj::Ref(2, 5), Obj::Int(3)])));
        assert_eq!(d.get(b"N"), Some(&Obj::Int(-4)));
        assert_eq!(d.get(b"R"), Some(&Obj::Real(b"1.5".to_vec())));
        assert_eq!(d.get(b"S"), Some(&Obj::Str(b"a(b)c\nA".to_vec())));
        assert_eq!(d.get(b"H"), Some(&Obj::Str(b"A@".to_vec())));
        assert_eq!(d.get(b"B"), Some(&Obj::Bool(true)));
        assert_eq!(d.get(b"Z"), Some(&Obj::Null));
        assert_eq!(d.get(b"AA"), Some(&Obj::Int(1)), "name escapes are decoded");
    }

    #[test]
    fn comments_and_tight_spacing() {
        let o = parse(b"<</A[1 2 R]%c\n/B<</C(x)>>>>").unwrap();
        let d = o.as_dict().unwrap();
        assert_eq!(d.get(b"A"), Some(&Obj::Array(vec![Obj::Ref(1, 2)])));
        assert_eq!(d.get(b"B").unwrap().as_dict().unwrap().get(b"C"), Some(&Obj::Str(b"x".to_vec())));
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        for bad in [&b"<< /A 1"[..], b"(open", b"<4G>", b"[1 2", b"<< 1 2 >>", b"1..2", b"foo", b")", b""] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(parse(b"<< /A [[1] 2] >>").unwrap().depth(), 3);
        let deep = [b"[".repeat(100), b"]".repeat(100)].concat();
        assert!(parse(&deep).is_err(), "nesting is bounded");
        assert!(parse(&[b"[".repeat(60), b"]".repeat(60)].concat()).is_ok());
    }

    #[test]
    fn writes_what_it_reads() {
        round_trip(&Obj::Dict(Dict(vec![
            (b"A A/#".to_vec(), Obj::Name(b"x y\x00(".to_vec())),
            (b"S".to_vec(), Obj::Str(b"(\\)\r\n\x00\xff tail".to_vec())),
            (b"".to_vec(), Obj::Array(vec![Obj::Int(1), Obj::Int(0), Obj::Name(b"R".to_vec()), Obj::Ref(7, 1)])),
            (b"R".to_vec(), Obj::Real(b"-.5".to_vec())),
            (b"Big".to_vec(), Obj::Real(b"99999999999999999999".to_vec())),
            (b"N".to_vec(), Obj::Null),
        ])));
        round_trip(&Obj::Name(Vec::new()));
        round_trip(&Obj::Str(Vec::new()));
    }
}
