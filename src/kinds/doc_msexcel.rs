//! Kind `doc-msexcel` (MS Excel Document): an `.xlsx` whose first worksheet holds a linked (not
//! embedded) one-pixel picture at the token URL, so a spreadsheet program that loads the
//! sheet's drawing fetches it (LibreOffice does, wherever the anchor).
//!
//! The picture sits inside cell A1 (at a small random offset), not far off-screen: LibreOffice
//! extends the printed range to every drawing object, so a picture at row 400 printed one or two
//! blank pages after the user's (even marked `fPrintsWithSheet="0"`, which it ignores and Excel
//! honours); a pixel in A1 is as invisible and changes no printout.
//!
//! Without an upload the workbook is made here: one sheet with a small table on one of several
//! office topics (payroll, a server inventory, a budget with SUM formulas), shared strings,
//! styles, core properties with a random author and dates, and a drawing part whose number,
//! anchor offset and relationship ids vary. With an uploaded `doc` (an .xlsx, at most 10 MiB) the
//! picture goes onto the first visible worksheet: into the drawing it already has, or in a new
//! drawing part that the sheet gets a `<drawing>` element for, placed where the schema wants it
//! (Excel refuses elements out of order). Every other part is copied raw
//! ([`crate::artefacts::ooxml`]).

use rand::seq::SliceRandom;
use rand::Rng;

use super::office::{self, OfficeKind, CT_EXCEL_MAIN};
use crate::artefacts::ooxml::{
    self, append_to_root, escape, relative, resolve, walk, Edits, Limits, Package, Slot, TagKind, CONTENT_TYPES,
    CT_APP, CT_CORE, CT_RELS, NS_A, NS_CONTENT_TYPES, NS_PACKAGE_RELS, NS_R, REL_APP, REL_CORE, REL_IMAGE,
    REL_OFFICE_DOCUMENT, XML_DECL,
};

/// Content type of the download.
pub const CONTENT_TYPE: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const NS_S: &str = "http://schemas.openxmlformats.org/spreadsheetml/2006/main";
const NS_XDR: &str = "http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing";
const CT_WORKSHEET: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml";
const CT_STYLES: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml";
const CT_STRINGS: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sharedStrings+xml";
const CT_DRAWING: &str = "application/vnd.openxmlformats-officedocument.drawing+xml";
const REL_WORKSHEET: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet";
const REL_STYLES: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles";
const REL_STRINGS: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/sharedStrings";
const REL_DRAWING: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/drawing";
/// The worksheet children that come after `<drawing>` (CT_Worksheet's sequence).
const AFTER_DRAWING: &[&str] = &[
    "legacyDrawing",
    "legacyDrawingHF",
    "drawingHF",
    "picture",
    "oleObjects",
    "controls",
    "webPublishItems",
    "tableParts",
    "extLst",
];
/// One pixel, in EMU.
const PIXEL: u32 = 9525;

/// The kind (its registry row).
pub static DOC_MSEXCEL: OfficeKind = OfficeKind {
    name: "doc-msexcel",
    human_name: "MS Excel Document",
    ext: "xlsx",
    content_type: CONTENT_TYPE,
    label: "Excel workbook (.xlsx)",
    generate: |url| generate(url, &mut rand::thread_rng()),
    inject,
};

/// `upload` (an .xlsx) with the picture at `url` added to its first worksheet.
pub fn inject(upload: &[u8], url: &str) -> ooxml::Result<Vec<u8>> {
    let mut pkg = Package::read(upload, Limits::UPLOAD)?;
    let main = office::main_part_of(&mut pkg, CT_EXCEL_MAIN)?;
    add_picture(&mut pkg, &main, url)?;
    pkg.write()
}

/// The first visible worksheet of the workbook `main` (else the first worksheet).
fn first_sheet(pkg: &mut Package<'_>, main: &str) -> ooxml::Result<String> {
    let xml = pkg.part_text(main)?.ok_or_else(|| ooxml::Error::NotOoxml("its main part is missing".into()))?;
    let mut sheets: Vec<(String, bool)> = Vec::new();
    walk(main, &xml, |t| {
        if t.depth == 1 && t.kind != TagKind::End && !t.is(NS_S, "workbook") {
            return Err(ooxml::Error::Refused(
                "has a workbook part that is not an ordinary (Transitional) Excel workbook".into(),
            ));
        }
        if t.depth == 3 && t.kind != TagKind::End && t.is(NS_S, "sheet") {
            if let Some(id) = t.attr(Some(NS_R), "id") {
                let hidden = matches!(t.attr(None, "state").as_deref(), Some("hidden" | "veryHidden"));
                sheets.push((id, hidden));
            }
        }
        Ok(())
    })?;
    let rels = pkg.relationships(main)?;
    let worksheets: Vec<(String, bool)> = sheets
        .into_iter()
        .filter_map(|(id, hidden)| {
            let r = rels.iter().find(|r| r.id == id && r.rel_type == REL_WORKSHEET && !r.external)?;
            Some((resolve(main, &r.target)?, hidden))
        })
        .filter(|(part, _)| pkg.has(part))
        .collect();
    worksheets
        .iter()
        .find(|(_, hidden)| !hidden)
        .or(worksheets.first())
        .map(|(p, _)| p.clone())
        .ok_or_else(|| ooxml::Error::Refused("has no worksheet to put the picture on".into()))
}

/// Prefixes (with colons) for an anchor written somewhere, and the declarations it needs.
struct Prefixes {
    xdr: String,
    a: String,
    r: String,
    decls: String,
}

impl Prefixes {
    fn at(t: &ooxml::Tag<'_>) -> Prefixes {
        let (xdr, d1) = t.attr_prefix(NS_XDR, "xdr");
        let (a, d2) = t.attr_prefix(NS_A, "a");
        let (r, d3) = t.attr_prefix(NS_R, "r");
        Prefixes { xdr, a, r, decls: d1 + &d2 + &d3 }
    }
}

/// Where in cell A1 the picture goes: a few pixels from its top-left corner, in EMU.
fn in_a1(pkg: &mut Package<'_>) -> (u32, u32) {
    (pkg.rng().gen_range(0..4) * PIXEL, pkg.rng().gen_range(0..3) * PIXEL)
}

/// The picture's anchor: one pixel at offset `(x, y)` in cell A1, not printed, shape id `id`,
/// linking relationship `image`.
fn anchor(p: &Prefixes, (x, y): (u32, u32), id: u32, image: &str) -> String {
    let Prefixes { xdr, a, r, decls } = p;
    let (x2, y2) = (x + PIXEL, y + PIXEL);
    format!(
        "<{xdr}twoCellAnchor{decls} editAs=\"oneCell\"><{xdr}from><{xdr}col>0</{xdr}col><{xdr}colOff>{x}</{xdr}colOff>\
         <{xdr}row>0</{xdr}row><{xdr}rowOff>{y}</{xdr}rowOff></{xdr}from><{xdr}to><{xdr}col>0</{xdr}col>\
         <{xdr}colOff>{x2}</{xdr}colOff><{xdr}row>0</{xdr}row><{xdr}rowOff>{y2}</{xdr}rowOff></{xdr}to>\
         <{xdr}pic><{xdr}nvPicPr><{xdr}cNvPr id=\"{id}\" name=\"Picture {}\"/><{xdr}cNvPicPr><{a}picLocks noChangeAspect=\"1\"/></{xdr}cNvPicPr></{xdr}nvPicPr>\
         <{xdr}blipFill><{a}blip {r}link=\"{image}\"/><{a}stretch><{a}fillRect/></{a}stretch></{xdr}blipFill>\
         <{xdr}spPr><{a}xfrm><{a}off x=\"0\" y=\"0\"/><{a}ext cx=\"{PIXEL}\" cy=\"{PIXEL}\"/></{a}xfrm><{a}prstGeom prst=\"rect\"><{a}avLst/></{a}prstGeom></{xdr}spPr>\
         </{xdr}pic><{xdr}clientData fPrintsWithSheet=\"0\"/></{xdr}twoCellAnchor>",
        id.saturating_sub(1).max(1)
    )
}

/// Adds the linked picture at `url` to the first worksheet of workbook `main`.
fn add_picture(pkg: &mut Package<'_>, main: &str, url: &str) -> ooxml::Result<()> {
    let sheet = first_sheet(pkg, main)?;
    let xml = pkg.part_text(&sheet)?.unwrap_or_default();
    // The sheet's drawing, if it has one; else where a <drawing> element goes, with the
    // prefixes of the root's scope (where a child of the root is written).
    let mut drawing_id = None;
    let mut insert_at: Option<usize> = None;
    let mut root: Option<(String, String, String)> = None;
    let mut root_end: Option<Slot> = None;
    walk(&sheet, &xml, |t| {
        if t.depth == 1 {
            if t.kind != TagKind::End {
                if !t.is(NS_S, "worksheet") {
                    return Err(ooxml::Error::Refused("has a first sheet that is not an ordinary worksheet".into()));
                }
                let (s, ds) = t.element_prefix(NS_S, "x");
                let (r, dr) = t.attr_prefix(NS_R, "r");
                root = Some((s, r, ds + &dr));
            }
            if let Some(slot) = Slot::of(t) {
                root_end = Some(slot);
            }
        } else if t.depth == 2 && t.kind != TagKind::End {
            if t.is(NS_S, "drawing") {
                drawing_id = t.attr(Some(NS_R), "id");
            } else if insert_at.is_none() && AFTER_DRAWING.iter().any(|n| t.is(NS_S, n)) {
                insert_at = Some(t.span.start);
            }
        }
        Ok(())
    })?;
    let sheet_rels = pkg.relationships(&sheet)?;
    let existing = drawing_id
        .and_then(|id| sheet_rels.into_iter().find(|r| r.id == id && r.rel_type == REL_DRAWING && !r.external))
        .and_then(|r| resolve(&sheet, &r.target))
        .filter(|p| pkg.has(p));
    match existing {
        Some(drawing) => merge_into_drawing(pkg, &drawing, url),
        None => {
            let (Some((s, r, decls)), Some(end)) = (root, root_end) else {
                return Err(ooxml::Error::Refused("has an empty first worksheet".into()));
            };
            let dir = main.rsplit_once('/').map_or(String::new(), |(d, _)| format!("{d}/"));
            let drawing = pkg.fresh_part_name(&format!("{dir}drawings/drawing"), ".xml");
            let image = pkg.add_relationship(&drawing, REL_IMAGE, url, true)?;
            let plain = Prefixes { xdr: "xdr:".into(), a: "a:".into(), r: "r:".into(), decls: String::new() };
            let pic = anchor(&plain, in_a1(pkg), 2, &image);
            let part = format!(
                "{XML_DECL}<xdr:wsDr xmlns:xdr=\"{NS_XDR}\" xmlns:a=\"{NS_A}\" xmlns:r=\"{NS_R}\">{pic}</xdr:wsDr>"
            );
            pkg.put(&drawing, part.into_bytes());
            pkg.set_override(&drawing, CT_DRAWING)?;
            let id = pkg.add_relationship(&sheet, REL_DRAWING, &relative(&sheet, &drawing), false)?;
            let element = format!("<{s}drawing{decls} {r}id=\"{id}\"/>");
            let mut edits = Edits::default();
            match insert_at {
                Some(at) => edits.insert(at, element),
                None => end.fill(&mut edits, &xml, element)?,
            }
            let xml = edits.apply(&sheet, &xml)?;
            pkg.put(&sheet, xml.into_bytes());
            Ok(())
        }
    }
}

/// Adds the picture as one more anchor of the drawing the sheet already has.
fn merge_into_drawing(pkg: &mut Package<'_>, drawing: &str, url: &str) -> ooxml::Result<()> {
    let xml = pkg.part_text(drawing)?.unwrap_or_default();
    // Shape ids are unique within a drawing: one past the highest.
    let mut highest = 1u32;
    walk(drawing, &xml, |t| {
        if t.kind != TagKind::End && t.qname().rsplit(|b| *b == b':').next() == Some(b"cNvPr") {
            if let Some(id) = t.attr(None, "id").and_then(|v| v.parse::<u32>().ok()) {
                highest = highest.max(id);
            }
        }
        Ok(())
    })?;
    let id = highest.saturating_add(1).min(u32::MAX - 1);
    let image = pkg.add_relationship(drawing, REL_IMAGE, url, true)?;
    let cell = in_a1(pkg);
    let xml = append_to_root(drawing, &xml, NS_XDR, "wsDr", |t| anchor(&Prefixes::at(t), cell, id, &image))?;
    pkg.put(drawing, xml.into_bytes());
    Ok(())
}

// --- a workbook of our own -----------------------------------------------------------------

/// A cell of a generated table.
enum Cell {
    Text(String),
    Number(f64),
    /// A date, as an Excel serial day number.
    Date(u32),
    /// A formula and its cached value.
    Sum(String, f64),
}

struct Table {
    sheet: String,
    title: String,
    header: Vec<&'static str>,
    rows: Vec<Vec<Cell>>,
    widths: Vec<u32>,
}

fn payroll(rng: &mut impl Rng, year: i32) -> Table {
    const TITLES: &[&str] =
        &["Analyst", "Senior Analyst", "Manager", "Engineer", "Team Lead", "Coordinator", "Director", "Specialist"];
    let rows = (0..rng.gen_range(6..14))
        .map(|_| {
            vec![
                Cell::Text(office::person(rng)),
                Cell::Text(office::pick(rng, office::DEPARTMENTS).into()),
                Cell::Text(office::pick(rng, TITLES).into()),
                Cell::Number(f64::from(rng.gen_range(76..290) * 500)),
                Cell::Date(rng.gen_range(40_000..46_000)),
            ]
        })
        .collect();
    Table {
        sheet: format!("Payroll {year}"),
        title: format!("Payroll {year}"),
        header: vec!["Name", "Department", "Title", "Annual salary", "Start date"],
        rows,
        widths: vec![22, 18, 18, 14, 12],
    }
}

fn servers(rng: &mut impl Rng, _year: i32) -> Table {
    const ROLES: &[&str] = &[
        "Domain controller",
        "File server",
        "Backup",
        "Database",
        "Web proxy",
        "Jump host",
        "Build agent",
        "VPN gateway",
    ];
    const OS: &[&str] = &["Windows Server 2019", "Windows Server 2022", "Ubuntu 22.04", "RHEL 8", "Debian 12"];
    let site = office::pick(rng, &["lon", "fra", "nyc", "ams", "par", "dub"]);
    let net = rng.gen_range(1..250);
    let rows = (0..rng.gen_range(6..16))
        .map(|i| {
            let role = office::pick(rng, ROLES);
            let short: String = role.split(' ').map(|w| w.chars().next().unwrap_or('x').to_ascii_lowercase()).collect();
            vec![
                Cell::Text(format!("{site}-{short}{:02}", i + 1)),
                Cell::Text(format!("10.{net}.{}.{}", rng.gen_range(0..8), rng.gen_range(2..250))),
                Cell::Text(role.into()),
                Cell::Text(office::pick(rng, OS).into()),
                Cell::Text(office::person(rng)),
            ]
        })
        .collect();
    Table {
        sheet: "Servers".into(),
        title: format!("Server inventory ({})", site.to_uppercase()),
        header: vec!["Hostname", "IP address", "Role", "Operating system", "Owner"],
        rows,
        widths: vec![16, 14, 20, 22, 20],
    }
}

fn budget(rng: &mut impl Rng, year: i32) -> Table {
    let mut depts: Vec<&str> = office::DEPARTMENTS.to_vec();
    depts.shuffle(rng);
    let rows = depts[..rng.gen_range(5..depts.len())]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let q: Vec<f64> = (0..4).map(|_| f64::from(rng.gen_range(20..900) * 250)).collect();
            let total = q.iter().sum();
            let r = i + 3;
            let mut row = vec![Cell::Text((*d).into())];
            row.extend(q.into_iter().map(Cell::Number));
            row.push(Cell::Sum(format!("SUM(B{r}:E{r})"), total));
            row
        })
        .collect();
    Table {
        sheet: format!("Budget {year}"),
        title: format!("Budget {year} by cost centre"),
        header: vec!["Cost centre", "Q1", "Q2", "Q3", "Q4", "Total"],
        rows,
        widths: vec![20, 12, 12, 12, 12, 14],
    }
}

fn column(i: usize) -> char {
    (b'A' + i as u8) as char
}

/// A new workbook calling `url` from its first sheet: its file name and bytes.
pub fn generate(url: &str, rng: &mut impl Rng) -> ooxml::Result<office::Generated> {
    let year = chrono::Datelike::year(&chrono::Utc::now());
    let table = match rng.gen_range(0..3) {
        0 => payroll(rng, year),
        1 => servers(rng, year),
        _ => budget(rng, year),
    };
    // Shared strings, in order of first use (as Excel numbers them).
    let mut strings: Vec<String> = Vec::new();
    let mut uses = 0;
    let mut sst = |s: &str| {
        uses += 1;
        match strings.iter().position(|x| x == s) {
            Some(i) => i,
            None => {
                strings.push(s.to_string());
                strings.len() - 1
            }
        }
    };
    let ncols = table.header.len();
    let last_col = column(ncols - 1);
    let mut rows = format!("<row r=\"1\"><c r=\"A1\" s=\"1\" t=\"s\"><v>{}</v></c></row>", sst(&table.title));
    rows.push_str("<row r=\"2\">");
    for (i, h) in table.header.iter().enumerate() {
        rows.push_str(&format!("<c r=\"{}2\" s=\"1\" t=\"s\"><v>{}</v></c>", column(i), sst(h)));
    }
    rows.push_str("</row>");
    for (n, row) in table.rows.iter().enumerate() {
        let r = n + 3;
        rows.push_str(&format!("<row r=\"{r}\">"));
        for (i, cell) in row.iter().enumerate() {
            let at = format!("{}{r}", column(i));
            rows.push_str(&match cell {
                Cell::Text(t) => format!("<c r=\"{at}\" t=\"s\"><v>{}</v></c>", sst(t)),
                Cell::Number(v) => format!("<c r=\"{at}\" s=\"2\"><v>{v}</v></c>"),
                Cell::Date(d) => format!("<c r=\"{at}\" s=\"3\"><v>{d}</v></c>"),
                Cell::Sum(f, v) => format!("<c r=\"{at}\" s=\"2\"><f>{f}</f><v>{v}</v></c>"),
            });
        }
        rows.push_str("</row>");
    }
    let last_row = table.rows.len() + 2;
    let cols: String = table
        .widths
        .iter()
        .enumerate()
        .map(|(i, w)| format!("<col min=\"{0}\" max=\"{0}\" width=\"{w}.7109375\" customWidth=\"1\"/>", i + 1))
        .collect();
    let sheet = format!(
        "{XML_DECL}<worksheet xmlns=\"{NS_S}\" xmlns:r=\"{NS_R}\"><dimension ref=\"A1:{last_col}{last_row}\"/>\
         <sheetViews><sheetView tabSelected=\"1\" workbookViewId=\"0\"><selection activeCell=\"{}\" sqref=\"{}\"/></sheetView></sheetViews>\
         <sheetFormatPr defaultRowHeight=\"15\" x14ac:dyDescent=\"0.25\" xmlns:x14ac=\"http://schemas.microsoft.com/office/spreadsheetml/2009/9/ac\"/>\
         <cols>{cols}</cols><sheetData>{rows}</sheetData>\
         <pageMargins left=\"0.7\" right=\"0.7\" top=\"0.75\" bottom=\"0.75\" header=\"0.3\" footer=\"0.3\"/></worksheet>",
        format_args!("{}{}", column(rng.gen_range(0..ncols)), rng.gen_range(1..=last_row)),
        format_args!("{}{}", column(0), 1),
    );
    let si: String = strings.iter().map(|s| format!("<si><t>{}</t></si>", escape(s))).collect();
    let shared =
        format!("{XML_DECL}<sst xmlns=\"{NS_S}\" count=\"{uses}\" uniqueCount=\"{}\">{si}</sst>", strings.len());
    let font = office::pick(rng, &["Calibri", "Aptos Narrow", "Arial"]);
    let styles = format!(
        "{XML_DECL}<styleSheet xmlns=\"{NS_S}\"><fonts count=\"2\"><font><sz val=\"11\"/><color theme=\"1\"/><name val=\"{font}\"/><family val=\"2\"/><scheme val=\"minor\"/></font>\
         <font><b/><sz val=\"11\"/><color theme=\"1\"/><name val=\"{font}\"/><family val=\"2\"/><scheme val=\"minor\"/></font></fonts>\
         <fills count=\"2\"><fill><patternFill patternType=\"none\"/></fill><fill><patternFill patternType=\"gray125\"/></fill></fills>\
         <borders count=\"1\"><border><left/><right/><top/><bottom/><diagonal/></border></borders>\
         <cellStyleXfs count=\"1\"><xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\"/></cellStyleXfs>\
         <cellXfs count=\"4\"><xf numFmtId=\"0\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\"/>\
         <xf numFmtId=\"0\" fontId=\"1\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyFont=\"1\"/>\
         <xf numFmtId=\"3\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyNumberFormat=\"1\"/>\
         <xf numFmtId=\"14\" fontId=\"0\" fillId=\"0\" borderId=\"0\" xfId=\"0\" applyNumberFormat=\"1\"/></cellXfs>\
         <cellStyles count=\"1\"><cellStyle name=\"Normal\" xfId=\"0\" builtinId=\"0\"/></cellStyles><dxfs count=\"0\"/><tableStyles count=\"0\"/></styleSheet>"
    );
    // Relationship ids of the workbook, in a random order.
    let mut ids = [1, 2, 3];
    ids.shuffle(rng);
    let workbook = format!(
        "{XML_DECL}<workbook xmlns=\"{NS_S}\" xmlns:r=\"{NS_R}\"><fileVersion appName=\"xl\" lastEdited=\"7\" lowestEdited=\"7\" rupBuild=\"{}\"/>\
         <workbookPr defaultThemeVersion=\"{}\"/><bookViews><workbookView xWindow=\"{}\" yWindow=\"{}\" windowWidth=\"{}\" windowHeight=\"{}\"/></bookViews>\
         <sheets><sheet name=\"{}\" sheetId=\"1\" r:id=\"rId{}\"/></sheets><calcPr calcId=\"191029\"/></workbook>",
        office::pick(rng, &["27328", "28228", "29127", "26730"]),
        office::pick(rng, &["166925", "202300", "164011"]),
        rng.gen_range(0..400) * 15,
        rng.gen_range(0..100) * 15,
        rng.gen_range(1200..2600) * 15,
        rng.gen_range(700..1400) * 15,
        escape(&table.sheet),
        ids[0]
    );
    let workbook_rels = format!(
        "{XML_DECL}<Relationships xmlns=\"{NS_PACKAGE_RELS}\"><Relationship Id=\"rId{}\" Type=\"{REL_WORKSHEET}\" Target=\"worksheets/sheet1.xml\"/>\
         <Relationship Id=\"rId{}\" Type=\"{REL_STYLES}\" Target=\"styles.xml\"/><Relationship Id=\"rId{}\" Type=\"{REL_STRINGS}\" Target=\"sharedStrings.xml\"/></Relationships>",
        ids[0], ids[1], ids[2]
    );
    let props = office::core_properties(rng, &table.title);
    let app = format!(
        "{XML_DECL}<Properties xmlns=\"http://schemas.openxmlformats.org/officeDocument/2006/extended-properties\" \
         xmlns:vt=\"http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes\"><Application>Microsoft Excel</Application>\
         <DocSecurity>0</DocSecurity><ScaleCrop>false</ScaleCrop><HeadingPairs><vt:vector size=\"2\" baseType=\"variant\">\
         <vt:variant><vt:lpstr>Worksheets</vt:lpstr></vt:variant><vt:variant><vt:i4>1</vt:i4></vt:variant></vt:vector></HeadingPairs>\
         <TitlesOfParts><vt:vector size=\"1\" baseType=\"lpstr\"><vt:lpstr>{}</vt:lpstr></vt:vector></TitlesOfParts>\
         <Company>{}</Company><LinksUpToDate>false</LinksUpToDate><SharedDoc>false</SharedDoc><HyperlinksChanged>false</HyperlinksChanged>\
         <AppVersion>16.0300</AppVersion></Properties>",
        escape(&table.sheet),
        escape(office::company(rng))
    );
    let content_types = format!(
        "{XML_DECL}<Types xmlns=\"{NS_CONTENT_TYPES}\"><Default Extension=\"rels\" ContentType=\"{CT_RELS}\"/>\
         <Default Extension=\"xml\" ContentType=\"application/xml\"/>\
         <Override PartName=\"/xl/workbook.xml\" ContentType=\"{CT_EXCEL_MAIN}\"/>\
         <Override PartName=\"/xl/worksheets/sheet1.xml\" ContentType=\"{CT_WORKSHEET}\"/>\
         <Override PartName=\"/xl/styles.xml\" ContentType=\"{CT_STYLES}\"/>\
         <Override PartName=\"/xl/sharedStrings.xml\" ContentType=\"{CT_STRINGS}\"/>\
         <Override PartName=\"/docProps/core.xml\" ContentType=\"{CT_CORE}\"/>\
         <Override PartName=\"/docProps/app.xml\" ContentType=\"{CT_APP}\"/></Types>"
    );
    let package_rels = format!(
        "{XML_DECL}<Relationships xmlns=\"{NS_PACKAGE_RELS}\"><Relationship Id=\"rId3\" Type=\"{REL_APP}\" Target=\"docProps/app.xml\"/>\
         <Relationship Id=\"rId2\" Type=\"{REL_CORE}\" Target=\"docProps/core.xml\"/>\
         <Relationship Id=\"rId1\" Type=\"{REL_OFFICE_DOCUMENT}\" Target=\"xl/workbook.xml\"/></Relationships>"
    );

    let mut pkg = Package::new();
    pkg.seed(rng.gen());
    for (name, xml) in [
        (CONTENT_TYPES, content_types),
        ("_rels/.rels", package_rels),
        ("docProps/app.xml", app),
        ("docProps/core.xml", props.xml()),
        ("xl/workbook.xml", workbook),
        ("xl/_rels/workbook.xml.rels", workbook_rels),
        ("xl/worksheets/sheet1.xml", sheet),
        ("xl/styles.xml", styles),
        ("xl/sharedStrings.xml", shared),
    ] {
        pkg.put(name, xml.into_bytes());
    }
    add_picture(&mut pkg, "xl/workbook.xml", url)?;
    // Excel's order: content types, package rels, properties, workbook, sheets, drawings, the rest.
    pkg.order_by(|n| match n {
        CONTENT_TYPES => 0,
        "_rels/.rels" => 1,
        n if n.starts_with("docProps/") => 2,
        "xl/workbook.xml" | "xl/_rels/workbook.xml.rels" => 3,
        n if n.starts_with("xl/worksheets/") => 4,
        n if n.starts_with("xl/drawings/") => 5,
        _ => 6,
    });
    Ok((office::file_name(&table.title, "xlsx"), pkg.write()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artefacts::ooxml::tests_support::zip_of;
    use rand::SeedableRng;

    const URL: &str = "http://h/x/abcdefghijklmnopqrstuvwxy/a.html";
    const SHEET_NS: &str = "xmlns=\"http://schemas.openxmlformats.org/spreadsheetml/2006/main\" xmlns:r=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships\"";

    fn text(pkg: &mut Package<'_>, name: &str) -> String {
        pkg.part_text(name).unwrap().unwrap_or_else(|| panic!("{name} missing"))
    }

    /// The drawing of `sheet` and the anchors in it that link `URL`.
    fn linked(pkg: &mut Package<'_>, sheet: &str) -> (String, usize) {
        let rels = pkg.relationships(sheet).unwrap();
        let d = rels.iter().find(|r| r.rel_type == REL_DRAWING).expect("the sheet has a drawing");
        let drawing = resolve(sheet, &d.target).unwrap();
        assert!(text(pkg, sheet).contains(&format!("r:id=\"{}\"", d.id)));
        let img = pkg
            .relationships(&drawing)
            .unwrap()
            .into_iter()
            .find(|r| r.rel_type == REL_IMAGE && r.external && r.target == URL)
            .expect("an external image");
        let xml = text(pkg, &drawing);
        walk(&drawing, &xml, |_| Ok(())).unwrap();
        assert_eq!(pkg.content_types().unwrap().of(&drawing), Some(CT_DRAWING));
        (drawing, xml.matches(&format!("link=\"{}\"", img.id)).count())
    }

    #[test]
    fn generated_workbooks_link_the_url_and_vary() {
        let mut sizes = std::collections::BTreeSet::new();
        for seed in 0..12 {
            let (name, bytes) = generate(URL, &mut rand::rngs::StdRng::seed_from_u64(seed)).unwrap();
            assert!(name.ends_with(".xlsx"), "{name}");
            sizes.insert(bytes.len());
            let mut pkg = Package::read(&bytes, Limits::UPLOAD).unwrap();
            assert_eq!(office::main_part_of(&mut pkg, CT_EXCEL_MAIN).unwrap(), "xl/workbook.xml");
            let (_, n) = linked(&mut pkg, "xl/worksheets/sheet1.xml");
            assert_eq!(n, 1);
            let sheet = text(&mut pkg, "xl/worksheets/sheet1.xml");
            assert!(sheet.contains("</pageMargins><drawing r:id=") || sheet.contains("/><drawing r:id="), "{sheet}");
            assert!(sheet.ends_with("/></worksheet>"));
            for part in
                ["xl/workbook.xml", "xl/styles.xml", "xl/sharedStrings.xml", "docProps/core.xml", "docProps/app.xml"]
            {
                walk(part, &text(&mut pkg, part), |_| Ok(())).unwrap();
            }
        }
        assert!(sizes.len() > 6, "{sizes:?}");
    }

    fn upload(sheets: &[(&str, &str, &str)], extra: &[(&str, &str)]) -> Vec<u8> {
        // sheets: (name, state, xml) stored as xl/worksheets/sheetN.xml
        let mut ct = format!("<Types xmlns=\"{NS_CONTENT_TYPES}\"><Default Extension=\"xml\" ContentType=\"application/xml\"/><Default Extension=\"rels\" ContentType=\"{CT_RELS}\"/><Override PartName=\"/xl/workbook.xml\" ContentType=\"{CT_EXCEL_MAIN}\"/>");
        let mut wb = format!("<workbook {SHEET_NS}><sheets>");
        let mut rels = format!("<Relationships xmlns=\"{NS_PACKAGE_RELS}\">");
        let mut parts: Vec<(String, String)> = Vec::new();
        for (i, (name, state, xml)) in sheets.iter().enumerate() {
            let n = i + 1;
            ct.push_str(&format!(
                "<Override PartName=\"/xl/worksheets/sheet{n}.xml\" ContentType=\"{CT_WORKSHEET}\"/>"
            ));
            wb.push_str(&format!("<sheet name=\"{name}\" sheetId=\"{n}\" state=\"{state}\" r:id=\"rId{n}\"/>"));
            rels.push_str(&format!(
                "<Relationship Id=\"rId{n}\" Type=\"{REL_WORKSHEET}\" Target=\"worksheets/sheet{n}.xml\"/>"
            ));
            parts.push((format!("xl/worksheets/sheet{n}.xml"), xml.to_string()));
        }
        ct.push_str(&format!(
            "<Override PartName=\"/xl/drawings/drawing1.xml\" ContentType=\"{CT_DRAWING}\"/></Types>"
        ));
        wb.push_str("</sheets></workbook>");
        rels.push_str("</Relationships>");
        let pkg_rels = format!("<Relationships xmlns=\"{NS_PACKAGE_RELS}\"><Relationship Id=\"rId1\" Type=\"{REL_OFFICE_DOCUMENT}\" Target=\"xl/workbook.xml\"/></Relationships>");
        for (n, x) in extra {
            parts.push((n.to_string(), x.to_string()));
        }
        let mut entries: Vec<(&str, &[u8], bool)> = vec![
            (CONTENT_TYPES, ct.as_bytes(), true),
            ("_rels/.rels", pkg_rels.as_bytes(), true),
            ("xl/workbook.xml", wb.as_bytes(), true),
            ("xl/_rels/workbook.xml.rels", rels.as_bytes(), true),
        ];
        for (n, x) in &parts {
            entries.push((n, x.as_bytes(), true));
        }
        zip_of(&entries)
    }

    #[test]
    fn a_sheet_without_a_drawing_gets_one_in_schema_order() {
        let hidden = format!("<worksheet {SHEET_NS}><sheetData/></worksheet>");
        let visible = format!("<worksheet {SHEET_NS}><sheetData><row r=\"1\"><c r=\"A1\" t=\"inlineStr\"><is><t>Mine</t></is></c></row></sheetData><pageMargins left=\"0.7\"/><legacyDrawing r:id=\"rId9\"/><tableParts count=\"0\"/></worksheet>");
        let up = upload(&[("Old", "hidden", &hidden), ("Data", "visible", &visible)], &[]);
        let out = inject(&up, URL).unwrap();
        let mut pkg = Package::read(&out, Limits::UPLOAD).unwrap();
        let (drawing, n) = linked(&mut pkg, "xl/worksheets/sheet2.xml");
        assert_eq!(n, 1);
        assert!(drawing.starts_with("xl/drawings/drawing"), "{drawing}");
        let sheet = text(&mut pkg, "xl/worksheets/sheet2.xml");
        let id = pkg.relationships("xl/worksheets/sheet2.xml").unwrap()[0].id.clone();
        assert_eq!(sheet, visible.replace("<legacyDrawing", &format!("<drawing r:id=\"{id}\"/><legacyDrawing")));
        assert_eq!(text(&mut pkg, "xl/worksheets/sheet1.xml"), hidden, "the hidden sheet is left alone");
    }

    #[test]
    fn an_existing_drawing_gets_one_more_anchor() {
        let sheet = format!("<worksheet {SHEET_NS}><sheetData/><drawing r:id=\"rId4\"/></worksheet>");
        let sheet_rels = format!("<Relationships xmlns=\"{NS_PACKAGE_RELS}\"><Relationship Id=\"rId4\" Type=\"{REL_DRAWING}\" Target=\"../drawings/drawing1.xml\"/></Relationships>");
        let drawing = "<d:wsDr xmlns:d=\"http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing\"><d:oneCellAnchor><d:pic><d:nvPicPr><d:cNvPr id=\"7\" name=\"Chart\"/></d:nvPicPr></d:pic></d:oneCellAnchor></d:wsDr>";
        let up = upload(
            &[("S", "visible", &sheet)],
            &[("xl/worksheets/_rels/sheet1.xml.rels", &sheet_rels), ("xl/drawings/drawing1.xml", drawing)],
        );
        let out = inject(&up, URL).unwrap();
        let mut pkg = Package::read(&out, Limits::UPLOAD).unwrap();
        let (name, n) = linked(&mut pkg, "xl/worksheets/sheet1.xml");
        assert_eq!((name.as_str(), n), ("xl/drawings/drawing1.xml", 1));
        assert_eq!(text(&mut pkg, "xl/worksheets/sheet1.xml"), sheet, "the sheet is not touched");
        let xml = text(&mut pkg, &name);
        assert!(xml.starts_with(&drawing[..drawing.len() - "</d:wsDr>".len()]));
        assert!(xml.contains("<d:twoCellAnchor xmlns:a=\"http://schemas.openxmlformats.org/drawingml/2006/main\" xmlns:r=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships\" editAs=\"oneCell\">"), "{xml}");
        assert!(xml.contains("<d:cNvPr id=\"8\""), "{xml}");
    }

    #[test]
    fn refuses_what_is_not_a_workbook() {
        let (_, docx) = crate::kinds::doc_msword::generate(URL, &mut rand::thread_rng()).unwrap();
        assert_eq!(
            inject(&docx, URL).unwrap_err().to_string(),
            "is a Word document (.docx), not an Excel workbook (.xlsx): use a doc-msword token for it"
        );
        let none = upload(&[], &[]);
        assert!(inject(&none, URL).unwrap_err().to_string().contains("no worksheet"));
    }
}
