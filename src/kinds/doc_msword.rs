//! Kind `doc-msword` (MS Word Document): a `.docx` whose footer holds a linked (not embedded)
//! picture at the token URL, so a word processor that renders the footer fetches it. The
//! footer carries the link twice: a DrawingML picture whose `a:blip r:link` names an external
//! image relationship (LibreOffice fetches that), inside an `INCLUDEPICTURE "URL" \d` field
//! (Word's way to the same picture).
//!
//! Without an upload the document is made here: a title, a subtitle and a few paragraphs on one
//! of several office topics, core properties with a random author, revision and dates, random
//! rsids, page size and relationship ids, and a footer part whose number varies (detectors
//! look for fixed names such as `footer2.xml`). With an uploaded `doc` (a .docx, at most
//! 10 MiB) the footer is added to the user's document: every section gets a footer reference
//! where it has no footer of that kind of its own or from an earlier section (the default one,
//! the first-page one where `w:titlePg` is set, the even-page one where the settings ask for
//! even and odd footers), and the footers it already has get the picture appended to their last
//! paragraph. Every other part is copied raw ([`crate::artefacts::ooxml`]).

use rand::seq::SliceRandom;
use rand::Rng;

use super::office::{self, OfficeKind, CT_WORD_MAIN};
use crate::artefacts::ooxml::{
    self, escape, expand_empty, relative, resolve, walk, Edits, Limits, Package, Slot, TagKind, CONTENT_TYPES, CT_APP,
    CT_CORE, CT_RELS, NS_A, NS_CONTENT_TYPES, NS_PACKAGE_RELS, NS_PIC, NS_R, REL_APP, REL_CORE, REL_IMAGE,
    REL_OFFICE_DOCUMENT, XML_DECL,
};

/// Content type of the download.
pub const CONTENT_TYPE: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";
const NS_W: &str = "http://schemas.openxmlformats.org/wordprocessingml/2006/main";
const NS_W_STRICT: &str = "http://purl.oclc.org/ooxml/wordprocessingml/main";
const NS_WP: &str = "http://schemas.openxmlformats.org/drawingml/2006/wordprocessingDrawing";
const CT_FOOTER: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.footer+xml";
const CT_STYLES: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.styles+xml";
const CT_SETTINGS: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.settings+xml";
const REL_FOOTER: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/footer";
const REL_STYLES: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles";
const REL_SETTINGS: &str = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/settings";
/// One pixel, in EMU.
const PIXEL: u32 = 9525;

/// The kind (its registry row).
pub static DOC_MSWORD: OfficeKind = OfficeKind {
    name: "doc-msword",
    human_name: "MS Word Document",
    ext: "docx",
    content_type: CONTENT_TYPE,
    label: "Word document (.docx)",
    generate: |url| generate(url, &mut rand::thread_rng()),
    inject,
};

/// `upload` (a .docx) with the footer picture at `url` added.
pub fn inject(upload: &[u8], url: &str) -> ooxml::Result<Vec<u8>> {
    let mut pkg = Package::read(upload, Limits::UPLOAD)?;
    let main = office::main_part_of(&mut pkg, CT_WORD_MAIN)?;
    add_footer(&mut pkg, &main, url)?;
    pkg.write()
}

/// Footer types, in the order of [`Section::has`].
const TYPES: [&str; 3] = ["default", "first", "even"];

/// A `w:sectPr` of the document body, as found.
struct Section {
    /// Its start tag (or its whole self-closing tag).
    span: std::ops::Range<usize>,
    empty: bool,
    qname: Vec<u8>,
    /// Which footer types it names, and the relationship ids it names them by.
    has: [bool; 3],
    footer_ids: Vec<String>,
    title_pg: bool,
    /// `w:` and `r:` prefixes usable inside it, and the declarations they need.
    w: String,
    r: String,
    decls: String,
}

struct Body {
    sections: Vec<Section>,
    /// Where a body-level `w:sectPr` would go when there is none (the end of `w:body`), with
    /// the `w:` and `r:` prefixes and declarations to write it with.
    no_final: Option<(Slot, (String, String, String))>,
}

fn on_off(v: Option<String>) -> bool {
    !matches!(v.as_deref(), Some("0" | "false" | "off"))
}

/// Finds the sections of `document.xml` (not those inside revision marks: `w:sectPrChange`
/// holds what a section was, not what it is).
fn scan_body(part: &str, xml: &str) -> ooxml::Result<Body> {
    let mut sections: Vec<Section> = Vec::new();
    let mut open: Option<(usize, Section)> = None;
    let mut changes = 0usize;
    let mut body_final = false;
    let mut no_final = None;
    walk(part, xml, |t| {
        if t.depth == 1 && t.kind != TagKind::End {
            if t.is(NS_W_STRICT, "document") {
                return Err(ooxml::Error::Refused(
                    "is a Strict Open XML document, which is not supported: save it in the ordinary (Transitional) format"
                        .into(),
                ));
            }
            if !t.is(NS_W, "document") {
                return Err(ooxml::Error::NotOoxml("its main part is not a Word document body".into()));
            }
        }
        let local = t.qname().rsplit(|b| *b == b':').next().unwrap_or(b"");
        if local.ends_with(b"Change") {
            match t.kind {
                TagKind::Start => changes += 1,
                TagKind::End => changes = changes.saturating_sub(1),
                TagKind::Empty => {}
            }
            return Ok(());
        }
        if changes > 0 {
            return Ok(());
        }
        if t.depth == 2 && t.is(NS_W, "body") && !body_final {
            if let Some(slot) = Slot::of(t) {
                no_final = Some((slot, w_r_prefixes(t)));
            }
        }
        if t.is(NS_W, "sectPr") {
            match t.kind {
                TagKind::End => {
                    if let Some((_, s)) = open.take() {
                        sections.push(s);
                    }
                }
                _ => {
                    if t.depth == 3 {
                        body_final = true;
                    }
                    let (w, r, decls) = w_r_prefixes(t);
                    let s = Section {
                        span: t.span.clone(),
                        empty: t.kind == TagKind::Empty,
                        qname: t.qname().to_vec(),
                        has: [false; 3],
                        footer_ids: Vec::new(),
                        title_pg: false,
                        w,
                        r,
                        decls,
                    };
                    if t.kind == TagKind::Empty {
                        sections.push(s);
                    } else {
                        open = Some((t.depth, s));
                    }
                }
            }
            return Ok(());
        }
        if let Some((depth, s)) = open.as_mut() {
            if t.kind != TagKind::End && t.depth == *depth + 1 {
                if t.is(NS_W, "footerReference") {
                    let ty = t.attr(Some(NS_W), "type").unwrap_or_else(|| "default".into());
                    if let Some(i) = TYPES.iter().position(|x| *x == ty) {
                        s.has[i] = true;
                    }
                    if let Some(id) = t.attr(Some(NS_R), "id") {
                        s.footer_ids.push(id);
                    }
                } else if t.is(NS_W, "titlePg") {
                    s.title_pg = on_off(t.attr(Some(NS_W), "val"));
                }
            }
        }
        Ok(())
    })?;
    Ok(Body { sections, no_final: if body_final { None } else { no_final } })
}

/// `w:` and `r:` attribute prefixes in scope at `t` (element names use the `w:` one too), and
/// the declarations an element inserted there needs for them.
fn w_r_prefixes(t: &ooxml::Tag<'_>) -> (String, String, String) {
    let (w, dw) = t.attr_prefix(NS_W, "w");
    let (r, dr) = t.attr_prefix(NS_R, "r");
    (w, r, dw + &dr)
}

/// Whether the document's settings ask for different even and odd page footers.
fn even_and_odd(pkg: &mut Package<'_>, main: &str, rels: &[ooxml::Relationship]) -> ooxml::Result<bool> {
    let Some(part) =
        rels.iter().find(|r| r.rel_type == REL_SETTINGS && !r.external).and_then(|r| resolve(main, &r.target))
    else {
        return Ok(false);
    };
    let Some(xml) = pkg.part_text(&part)? else { return Ok(false) };
    let mut on = false;
    walk(&part, &xml, |t| {
        if t.depth == 2 && t.kind != TagKind::End && t.is(NS_W, "evenAndOddHeaders") {
            on = on_off(t.attr(Some(NS_W), "val"));
        }
        Ok(())
    })?;
    Ok(on)
}

/// The footer runs: an INCLUDEPICTURE field whose result is the linked picture. `w`, `r` and
/// `wp` are prefixes (with their colons); `dw` declares `w` on each run where needed, `dp` the
/// others on the picture's run. `a:` and `pic:` are declared where they are used, as Word does.
fn picture_runs(p: &Prefixes, url: &str, image_id: &str, pic_id: u32) -> String {
    let Prefixes { w, r, wp, dw, dp } = p;
    let url = escape(url);
    format!(
        "<{w}r{dw}><{w}fldChar {w}fldCharType=\"begin\"/></{w}r>\
         <{w}r{dw}><{w}instrText xml:space=\"preserve\"> INCLUDEPICTURE  \"{url}\" \\d \\* MERGEFORMATINET </{w}instrText></{w}r>\
         <{w}r{dw}><{w}fldChar {w}fldCharType=\"separate\"/></{w}r>\
         <{w}r{dw}{dp}><{w}rPr><{w}noProof/></{w}rPr><{w}drawing><{wp}inline distT=\"0\" distB=\"0\" distL=\"0\" distR=\"0\">\
         <{wp}extent cx=\"{PIXEL}\" cy=\"{PIXEL}\"/><{wp}effectExtent l=\"0\" t=\"0\" r=\"0\" b=\"0\"/>\
         <{wp}docPr id=\"{pic_id}\" name=\"Picture {pic_id}\"/><{wp}cNvGraphicFramePr>\
         <a:graphicFrameLocks xmlns:a=\"{NS_A}\" noChangeAspect=\"1\"/></{wp}cNvGraphicFramePr>\
         <a:graphic xmlns:a=\"{NS_A}\"><a:graphicData uri=\"{NS_PIC}\"><pic:pic xmlns:pic=\"{NS_PIC}\">\
         <pic:nvPicPr><pic:cNvPr id=\"0\" name=\"Picture {pic_id}\"/><pic:cNvPicPr/></pic:nvPicPr>\
         <pic:blipFill><a:blip {r}link=\"{image_id}\"/><a:stretch><a:fillRect/></a:stretch></pic:blipFill>\
         <pic:spPr><a:xfrm><a:off x=\"0\" y=\"0\"/><a:ext cx=\"{PIXEL}\" cy=\"{PIXEL}\"/></a:xfrm>\
         <a:prstGeom prst=\"rect\"><a:avLst/></a:prstGeom></pic:spPr></pic:pic></a:graphicData></a:graphic>\
         </{wp}inline></{w}drawing></{w}r>\
         <{w}r{dw}><{w}fldChar {w}fldCharType=\"end\"/></{w}r>"
    )
}

struct Prefixes {
    w: String,
    r: String,
    wp: String,
    dw: String,
    dp: String,
}

impl Prefixes {
    fn plain() -> Prefixes {
        Prefixes { w: "w:".into(), r: "r:".into(), wp: "wp:".into(), dw: String::new(), dp: String::new() }
    }

    fn at(t: &ooxml::Tag<'_>) -> Prefixes {
        let (w, dw) = t.attr_prefix(NS_W, "w");
        let (r, dr) = t.attr_prefix(NS_R, "r");
        let (wp, dwp) = t.attr_prefix(NS_WP, "wp");
        Prefixes { w, r, wp, dw, dp: dr + &dwp }
    }
}

/// Adds the footer picture at `url` to the Word document whose main part is `main`.
fn add_footer(pkg: &mut Package<'_>, main: &str, url: &str) -> ooxml::Result<()> {
    let doc = pkg.part_text(main)?.ok_or_else(|| ooxml::Error::NotOoxml("its main part is missing".into()))?;
    let rels = pkg.relationships(main)?;
    let even_odd = even_and_odd(pkg, main, &rels)?;
    let body = scan_body(main, &doc)?;

    // The footers the document has get the picture.
    let mut theirs: Vec<&String> = body.sections.iter().flat_map(|s| &s.footer_ids).collect();
    theirs.sort();
    theirs.dedup();
    let mut linked = false;
    for id in theirs {
        let part = rels
            .iter()
            .find(|r| r.id == *id && r.rel_type == REL_FOOTER && !r.external)
            .and_then(|r| resolve(main, &r.target))
            .filter(|p| pkg.has(p));
        if let Some(part) = part {
            linked |= append_to_footer(pkg, &part, url)?;
        }
    }

    // Ours, where a section would otherwise show no footer of a kind it uses. A section without
    // a reference of some kind shows the previous section's (none for the first).
    let mut covered = [false; 3];
    let mut wanted: Vec<(&Section, Vec<&str>)> = Vec::new();
    for s in &body.sections {
        let mut types = Vec::new();
        for (i, ty) in TYPES.iter().enumerate() {
            let needed = i == 0 || (i == 1 && s.title_pg) || (i == 2 && even_odd);
            if s.has[i] {
                covered[i] = true;
            } else if needed && !covered[i] {
                types.push(*ty);
                covered[i] = true;
            }
        }
        if !types.is_empty() {
            wanted.push((s, types));
        }
    }
    // No body-level section properties: the last section is all defaults, and inherits.
    let final_section = body.no_final.as_ref().filter(|_| !covered[0]);
    if wanted.is_empty() && final_section.is_none() {
        if !linked {
            return Err(ooxml::Error::Refused("has no footer that the picture could be added to".into()));
        }
        return Ok(());
    }

    // Our own footer, beside the main part.
    let stem = match main.rsplit_once('/') {
        Some((dir, _)) => format!("{dir}/footer"),
        None => "footer".to_string(),
    };
    let footer = pkg.fresh_part_name(&stem, ".xml");
    let pic_id = pkg.rng().gen_range(1000..30000);
    let image = pkg.add_relationship(&footer, REL_IMAGE, url, true)?;
    let ours = format!(
        "{XML_DECL}<w:ftr xmlns:w=\"{NS_W}\" xmlns:r=\"{NS_R}\" xmlns:wp=\"{NS_WP}\"><w:p><w:pPr><w:pStyle w:val=\"Footer\"/></w:pPr>{}</w:p></w:ftr>",
        picture_runs(&Prefixes::plain(), url, &image, pic_id)
    );
    pkg.put(&footer, ours.into_bytes());
    pkg.set_override(&footer, CT_FOOTER)?;
    let footer_id = pkg.add_relationship(main, REL_FOOTER, &relative(main, &footer), false)?;
    let reference = |w: &str, r: &str, decls: &str, ty: &str| {
        format!("<{w}footerReference{decls} {w}type=\"{ty}\" {r}id=\"{footer_id}\"/>")
    };
    let mut edits = Edits::default();
    for (s, types) in wanted {
        let refs: String = types.iter().map(|ty| reference(&s.w, &s.r, &s.decls, ty)).collect();
        if s.empty {
            edits.replace(s.span.clone(), expand_empty(&doc[s.span.clone()], &s.qname, &refs));
        } else {
            edits.insert(s.span.end, refs);
        }
    }
    if let Some((slot, (w, r, decls))) = final_section {
        let sect = format!("<{w}sectPr{decls}>{}</{w}sectPr>", reference(w, r, "", "default"));
        slot.fill(&mut edits, &doc, sect)?;
    }
    let doc = edits.apply(main, &doc)?;
    pkg.put(main, doc.into_bytes());
    Ok(())
}

/// Appends the picture to the last paragraph of footer `part` (or a paragraph of its own);
/// false if the part is no footer.
fn append_to_footer(pkg: &mut Package<'_>, part: &str, url: &str) -> ooxml::Result<bool> {
    let Some(xml) = pkg.part_text(part)? else { return Ok(false) };
    // Where: before the last top-level paragraph's end tag (or into it, if self-closing), or
    // else before the root's end tag, with the prefixes in scope there.
    let mut last_p: Option<(Slot, Prefixes)> = None;
    let mut root_end: Option<(Slot, Prefixes)> = None;
    let mut p_scope: Option<Prefixes> = None;
    let mut is_footer = true;
    walk(part, &xml, |t| {
        if t.depth == 1 {
            if t.kind != TagKind::End && !t.is(NS_W, "ftr") {
                is_footer = false;
            }
            if let Some(slot) = Slot::of(t) {
                root_end = Some((slot, Prefixes::at(t)));
            }
        } else if t.depth == 2 && t.is(NS_W, "p") {
            // The runs are written in the paragraph's scope, as its start tag has it.
            let scope = match t.kind {
                TagKind::Start => {
                    p_scope = Some(Prefixes::at(t));
                    None
                }
                TagKind::Empty => Some(Prefixes::at(t)),
                TagKind::End => p_scope.take(),
            };
            if let (Some(slot), Some(p)) = (Slot::of(t), scope) {
                last_p = Some((slot, p));
            }
        }
        Ok(())
    })?;
    if !is_footer {
        return Ok(false);
    }
    let image = pkg.add_relationship(part, REL_IMAGE, url, true)?;
    let pic_id = pkg.rng().gen_range(1000..30000);
    let mut edits = Edits::default();
    match (last_p, root_end) {
        (Some((slot, p)), _) => slot.fill(&mut edits, &xml, picture_runs(&p, url, &image, pic_id))?,
        (None, Some((slot, p))) => {
            let para = format!("<{}p{}>{}</{}p>", p.w, p.dw, picture_runs(&p, url, &image, pic_id), p.w);
            slot.fill(&mut edits, &xml, para)?;
        }
        (None, None) => return Ok(false),
    }
    let xml = edits.apply(part, &xml)?;
    pkg.put(part, xml.into_bytes());
    Ok(true)
}

// --- a document of our own -----------------------------------------------------------------

/// A topic: a title, a subtitle and paragraphs, with `{year}`, `{month}`, `{dept}`, `{name}`
/// and `{name2}` filled in.
struct Topic {
    title: &'static str,
    subtitle: &'static str,
    paragraphs: &'static [&'static str],
}

const TOPICS: &[Topic] = &[
    Topic {
        title: "Salary Review {year}",
        subtitle: "Confidential: HR and line managers only",
        paragraphs: &[
            "This note summarises the outcome of the {year} salary review for the {dept} department. The proposed increases have been agreed with Finance and take effect from the {month} payroll run.",
            "Managers should not share individual figures with their teams before the review meetings. The full list of adjusted salaries, bonuses and grade changes is kept on the HR share; ask {name} for access.",
            "Questions about the process go to {name2} in People Operations.",
        ],
    },
    Topic {
        title: "Network Access for New Starters",
        subtitle: "{dept} – last reviewed {month} {year}",
        paragraphs: &[
            "Every new starter receives a laptop, a VPN profile and a temporary password for the {dept} shared drive. The temporary password must be changed at the first login.",
            "Administrator accounts are issued separately and only after the line manager has approved the request. The break-glass credentials for the firewall and the backup server are held by {name}.",
            "If anything on this list does not work on your first day, call the service desk or write to {name2}.",
        ],
    },
    Topic {
        title: "Board Meeting Minutes – {month} {year}",
        subtitle: "Draft for approval",
        paragraphs: &[
            "Present: {name} (chair), {name2}, and the heads of {dept}. Apologies were received from two members.",
            "The board reviewed the quarterly figures and approved the revised budget for {dept}. The proposed acquisition was discussed at length; a decision was deferred until the due diligence report is complete.",
            "Actions: {name2} to circulate the updated forecast before the next meeting; {name} to confirm the auditors' timetable.",
        ],
    },
    Topic {
        title: "Disaster Recovery Runbook",
        subtitle: "Version {rev}, {month} {year}",
        paragraphs: &[
            "This runbook describes how to restore the {dept} systems after a major outage. It assumes the secondary site is available and that the latest backups have been verified.",
            "Step one is to contact {name}, who holds the recovery keys and the vault passwords. Do not attempt to restore the database before the storage team has confirmed the replicas are consistent.",
            "After the restore, {name2} signs off the service checks and informs the stakeholders listed in the appendix.",
        ],
    },
    Topic {
        title: "Supplier Contract Renewals {year}",
        subtitle: "Procurement summary for {dept}",
        paragraphs: &[
            "Twelve supplier contracts are due for renewal before the end of {month}. The table of current rates and the negotiated discounts is attached to the original e-mail from {name}.",
            "Two suppliers have asked for price increases above inflation. We recommend re-tendering both unless they agree to the terms offered by {name2}.",
        ],
    },
];

fn fill(text: &str, vars: &[(&str, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(k, v);
    }
    out
}

/// An rsid: `00` and six hex digits, as Word writes them.
fn rsid(rng: &mut impl Rng) -> String {
    format!("00{:06X}", rng.gen_range(0x10_0000..0xFF_FFFF))
}

/// A new Word document calling `url` from its footer: its file name and bytes.
pub fn generate(url: &str, rng: &mut impl Rng) -> ooxml::Result<office::Generated> {
    let topic = TOPICS.choose(rng).unwrap_or(&TOPICS[0]);
    let year = chrono::Datelike::year(&chrono::Utc::now());
    let vars = [
        ("{year}", year.to_string()),
        ("{month}", office::pick(rng, office::MONTHS).to_string()),
        ("{dept}", office::pick(rng, office::DEPARTMENTS).to_string()),
        ("{name}", office::person(rng)),
        ("{name2}", office::person(rng)),
        ("{rev}", format!("{}.{}", rng.gen_range(1..5), rng.gen_range(0..10))),
    ];
    let title = fill(topic.title, &vars);
    let subtitle = fill(topic.subtitle, &vars);
    let count = rng.gen_range(2..=topic.paragraphs.len());
    let paragraphs: Vec<String> = topic.paragraphs[..count].iter().map(|p| fill(p, &vars)).collect();
    let rsids: Vec<String> = (0..rng.gen_range(2..5)).map(|_| rsid(rng)).collect();
    let props = office::core_properties(rng, &title);

    let para = |rng: &mut dyn rand::RngCore, style: Option<&str>, text: &str| {
        let r = rsids.choose(rng).cloned().unwrap_or_default();
        let ppr = style.map_or(String::new(), |s| format!("<w:pPr><w:pStyle w:val=\"{s}\"/></w:pPr>"));
        format!(
            "<w:p w:rsidR=\"{r}\" w:rsidRDefault=\"{r}\">{ppr}<w:r><w:t xml:space=\"preserve\">{}</w:t></w:r></w:p>",
            escape(text)
        )
    };
    let mut body = para(rng, Some("Title"), &title) + &para(rng, Some("Subtitle"), &subtitle);
    for p in &paragraphs {
        body.push_str(&para(rng, None, p));
    }
    // Letter or A4, with Word's default margins for each.
    let (pg, margin) =
        if rng.gen_bool(0.5) { ("w:w=\"12240\" w:h=\"15840\"", 1440) } else { ("w:w=\"11906\" w:h=\"16838\"", 1417) };
    let document = format!(
        "{XML_DECL}<w:document xmlns:mc=\"http://schemas.openxmlformats.org/markup-compatibility/2006\" \
         xmlns:r=\"{NS_R}\" xmlns:w=\"{NS_W}\" xmlns:w14=\"http://schemas.microsoft.com/office/word/2010/wordml\" \
         xmlns:wp=\"{NS_WP}\" mc:Ignorable=\"w14\"><w:body>{body}<w:sectPr w:rsidR=\"{}\"><w:pgSz {pg}/>\
         <w:pgMar w:top=\"{margin}\" w:right=\"{margin}\" w:bottom=\"{margin}\" w:left=\"{margin}\" w:header=\"708\" w:footer=\"708\" w:gutter=\"0\"/>\
         <w:cols w:space=\"708\"/><w:docGrid w:linePitch=\"360\"/></w:sectPr></w:body></w:document>",
        rsids[0]
    );
    let font = office::pick(rng, &["Calibri", "Aptos", "Arial", "Cambria"]);
    let styles = format!(
        "{XML_DECL}<w:styles xmlns:w=\"{NS_W}\"><w:docDefaults><w:rPrDefault><w:rPr><w:rFonts w:ascii=\"{font}\" w:hAnsi=\"{font}\" w:eastAsia=\"{font}\" w:cs=\"Times New Roman\"/>\
         <w:sz w:val=\"22\"/><w:szCs w:val=\"22\"/><w:lang w:val=\"en-GB\" w:eastAsia=\"en-US\" w:bidi=\"ar-SA\"/></w:rPr></w:rPrDefault>\
         <w:pPrDefault><w:pPr><w:spacing w:after=\"160\" w:line=\"259\" w:lineRule=\"auto\"/></w:pPr></w:pPrDefault></w:docDefaults>\
         <w:style w:type=\"paragraph\" w:default=\"1\" w:styleId=\"Normal\"><w:name w:val=\"Normal\"/><w:qFormat/></w:style>\
         <w:style w:type=\"character\" w:default=\"1\" w:styleId=\"DefaultParagraphFont\"><w:name w:val=\"Default Paragraph Font\"/><w:uiPriority w:val=\"1\"/><w:semiHidden/><w:unhideWhenUsed/></w:style>\
         <w:style w:type=\"paragraph\" w:styleId=\"Title\"><w:name w:val=\"Title\"/><w:basedOn w:val=\"Normal\"/><w:next w:val=\"Normal\"/><w:uiPriority w:val=\"10\"/><w:qFormat/>\
         <w:pPr><w:spacing w:after=\"0\" w:line=\"240\" w:lineRule=\"auto\"/><w:contextualSpacing/></w:pPr><w:rPr><w:spacing w:val=\"-10\"/><w:kern w:val=\"28\"/><w:sz w:val=\"56\"/><w:szCs w:val=\"56\"/></w:rPr></w:style>\
         <w:style w:type=\"paragraph\" w:styleId=\"Subtitle\"><w:name w:val=\"Subtitle\"/><w:basedOn w:val=\"Normal\"/><w:next w:val=\"Normal\"/><w:uiPriority w:val=\"11\"/><w:qFormat/>\
         <w:rPr><w:color w:val=\"5A5A5A\"/><w:spacing w:val=\"15\"/></w:rPr></w:style>\
         <w:style w:type=\"paragraph\" w:styleId=\"Footer\"><w:name w:val=\"footer\"/><w:basedOn w:val=\"Normal\"/><w:uiPriority w:val=\"99\"/><w:unhideWhenUsed/>\
         <w:pPr><w:tabs><w:tab w:val=\"center\" w:pos=\"4513\"/><w:tab w:val=\"right\" w:pos=\"9026\"/></w:tabs><w:spacing w:after=\"0\" w:line=\"240\" w:lineRule=\"auto\"/></w:pPr></w:style></w:styles>"
    );
    let rsid_list: String = rsids.iter().map(|r| format!("<w:rsid w:val=\"{r}\"/>")).collect();
    let settings = format!(
        "{XML_DECL}<w:settings xmlns:w=\"{NS_W}\"><w:zoom w:percent=\"{}\"/><w:proofState w:spelling=\"clean\" w:grammar=\"clean\"/>\
         <w:defaultTabStop w:val=\"720\"/><w:characterSpacingControl w:val=\"doNotCompress\"/>\
         <w:compat><w:compatSetting w:name=\"compatibilityMode\" w:uri=\"http://schemas.microsoft.com/office/word\" w:val=\"15\"/></w:compat>\
         <w:rsids><w:rsidRoot w:val=\"{}\"/>{rsid_list}</w:rsids><w:themeFontLang w:val=\"en-GB\"/></w:settings>",
        office::pick(rng, &["100", "100", "110", "120", "90"]),
        rsids[0]
    );
    let text: String = std::iter::once(&title)
        .chain(std::iter::once(&subtitle))
        .chain(&paragraphs)
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let words = text.split_whitespace().count();
    let chars = text.chars().filter(|c| !c.is_whitespace()).count();
    let app = format!(
        "{XML_DECL}<Properties xmlns=\"http://schemas.openxmlformats.org/officeDocument/2006/extended-properties\" \
         xmlns:vt=\"http://schemas.openxmlformats.org/officeDocument/2006/docPropsVTypes\"><Template>Normal.dotm</Template>\
         <TotalTime>{}</TotalTime><Pages>1</Pages><Words>{words}</Words><Characters>{chars}</Characters>\
         <Application>Microsoft Office Word</Application><DocSecurity>0</DocSecurity><Lines>{}</Lines><Paragraphs>{}</Paragraphs>\
         <ScaleCrop>false</ScaleCrop><Company>{}</Company><LinksUpToDate>false</LinksUpToDate>\
         <CharactersWithSpaces>{}</CharactersWithSpaces><SharedDoc>false</SharedDoc><HyperlinksChanged>false</HyperlinksChanged>\
         <AppVersion>16.0000</AppVersion></Properties>",
        rng.gen_range(3..400),
        words / 12 + 2,
        paragraphs.len() + 2,
        escape(office::company(rng)),
        text.chars().count()
    );
    let content_types = format!(
        "{XML_DECL}<Types xmlns=\"{NS_CONTENT_TYPES}\"><Default Extension=\"rels\" ContentType=\"{CT_RELS}\"/>\
         <Default Extension=\"xml\" ContentType=\"application/xml\"/>\
         <Override PartName=\"/word/document.xml\" ContentType=\"{CT_WORD_MAIN}\"/>\
         <Override PartName=\"/word/styles.xml\" ContentType=\"{CT_STYLES}\"/>\
         <Override PartName=\"/word/settings.xml\" ContentType=\"{CT_SETTINGS}\"/>\
         <Override PartName=\"/docProps/core.xml\" ContentType=\"{CT_CORE}\"/>\
         <Override PartName=\"/docProps/app.xml\" ContentType=\"{CT_APP}\"/></Types>"
    );
    let package_rels = format!(
        "{XML_DECL}<Relationships xmlns=\"{NS_PACKAGE_RELS}\"><Relationship Id=\"rId3\" Type=\"{REL_APP}\" Target=\"docProps/app.xml\"/>\
         <Relationship Id=\"rId2\" Type=\"{REL_CORE}\" Target=\"docProps/core.xml\"/>\
         <Relationship Id=\"rId1\" Type=\"{REL_OFFICE_DOCUMENT}\" Target=\"word/document.xml\"/></Relationships>"
    );
    let (a, b) = if rng.gen_bool(0.5) { (1, 2) } else { (2, 1) };
    let document_rels = format!(
        "{XML_DECL}<Relationships xmlns=\"{NS_PACKAGE_RELS}\"><Relationship Id=\"rId{a}\" Type=\"{REL_STYLES}\" Target=\"styles.xml\"/>\
         <Relationship Id=\"rId{b}\" Type=\"{REL_SETTINGS}\" Target=\"settings.xml\"/></Relationships>"
    );

    let mut pkg = Package::new();
    pkg.seed(rng.gen());
    for (name, xml) in [
        (CONTENT_TYPES, content_types),
        ("_rels/.rels", package_rels),
        ("word/document.xml", document),
        ("word/_rels/document.xml.rels", document_rels),
        ("word/styles.xml", styles),
        ("word/settings.xml", settings),
        ("docProps/core.xml", props.xml()),
        ("docProps/app.xml", app),
    ] {
        pkg.put(name, xml.into_bytes());
    }
    add_footer(&mut pkg, "word/document.xml", url)?;
    // Word's order: content types, package rels, the document and its rels, footers, the rest.
    pkg.order_by(|n| match n {
        CONTENT_TYPES => 0,
        "_rels/.rels" => 1,
        "word/document.xml" => 2,
        "word/_rels/document.xml.rels" => 3,
        n if n.starts_with("word/footer") => 4,
        n if n.starts_with("word/_rels/footer") => 5,
        n if n.starts_with("docProps/") => 7,
        _ => 6,
    });
    Ok((office::file_name(&title, "docx"), pkg.write()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const URL: &str = "http://h/x/abcdefghijklmnopqrstuvwxy/a.html?q=1&r=2";

    fn read(bytes: &[u8]) -> Package<'_> {
        Package::read(bytes, Limits::UPLOAD).unwrap()
    }

    fn text(pkg: &mut Package<'_>, name: &str) -> String {
        pkg.part_text(name).unwrap().unwrap_or_else(|| panic!("{name} missing"))
    }

    /// The footers of `doc` that link `URL`: (part, image rId) for each.
    fn linked_footers(pkg: &mut Package<'_>) -> Vec<String> {
        let names: Vec<String> = pkg.names().map(str::to_string).collect();
        let mut out = Vec::new();
        for n in names.iter().filter(|n| n.starts_with("word/footer") || n.contains("/footer")) {
            if n.contains("_rels") {
                continue;
            }
            let rels = pkg.relationships(n).unwrap();
            let Some(img) = rels.iter().find(|r| r.rel_type == REL_IMAGE && r.external && r.target == URL) else {
                continue;
            };
            let xml = text(pkg, n);
            assert!(xml.contains(&format!("link=\"{}\"", img.id)), "{n}: {xml}");
            assert!(
                xml.contains("INCLUDEPICTURE  \"http://h/x/abcdefghijklmnopqrstuvwxy/a.html?q=1&amp;r=2\""),
                "{xml}"
            );
            walk(n, &xml, |_| Ok(())).unwrap();
            out.push(n.clone());
        }
        out
    }

    #[test]
    fn generated_documents_link_the_url_and_vary() {
        let mut sizes = std::collections::BTreeSet::new();
        let mut footers = std::collections::BTreeSet::new();
        for seed in 0..12 {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let (name, bytes) = generate(URL, &mut rng).unwrap();
            assert!(name.ends_with(".docx") && !name.contains(' '), "{name}");
            sizes.insert(bytes.len());
            let mut pkg = read(&bytes);
            assert_eq!(office::main_part_of(&mut pkg, CT_WORD_MAIN).unwrap(), "word/document.xml");
            let linked = linked_footers(&mut pkg);
            assert_eq!(linked.len(), 1);
            footers.insert(linked[0].clone());
            let ct = pkg.content_types().unwrap();
            assert_eq!(ct.of(&linked[0]), Some(CT_FOOTER));
            let doc = text(&mut pkg, "word/document.xml");
            let rels = pkg.relationships("word/document.xml").unwrap();
            let f = rels.iter().find(|r| r.rel_type == REL_FOOTER).unwrap();
            assert_eq!(resolve("word/document.xml", &f.target).as_deref(), Some(linked[0].as_str()));
            assert!(doc.contains(&format!("<w:footerReference w:type=\"default\" r:id=\"{}\"/>", f.id)), "{doc}");
            for part in ["docProps/core.xml", "docProps/app.xml", "word/styles.xml", "word/settings.xml"] {
                walk(part, &text(&mut pkg, part), |_| Ok(())).unwrap();
            }
            let names: Vec<_> = pkg.names().collect();
            assert_eq!(names[..3], [CONTENT_TYPES, "_rels/.rels", "word/document.xml"]);
        }
        assert!(sizes.len() > 6, "sizes vary: {sizes:?}");
        assert!(footers.len() > 1, "footer names vary: {footers:?}");
    }

    /// A minimal .docx as LibreOffice writes one (no footer, a body sectPr).
    fn upload(document: &str, settings: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
        let ct = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Types xmlns=\"{NS_CONTENT_TYPES}\"><Default Extension=\"xml\" ContentType=\"application/xml\"/>\
             <Default Extension=\"rels\" ContentType=\"{CT_RELS}\"/><Override PartName=\"/word/document.xml\" ContentType=\"{CT_WORD_MAIN}\"/>\
             <Override PartName=\"/word/footer1.xml\" ContentType=\"{CT_FOOTER}\"/></Types>"
        );
        let rels = format!(
            "<Relationships xmlns=\"{NS_PACKAGE_RELS}\"><Relationship Id=\"rId1\" Type=\"{REL_OFFICE_DOCUMENT}\" Target=\"word/document.xml\"/></Relationships>"
        );
        let mut doc_rels = format!("<Relationships xmlns=\"{NS_PACKAGE_RELS}\">");
        if settings.is_some() {
            doc_rels.push_str(&format!("<Relationship Id=\"rId3\" Type=\"{REL_SETTINGS}\" Target=\"settings.xml\"/>"));
        }
        doc_rels.push_str(&format!(
            "<Relationship Id=\"rId7\" Type=\"{REL_FOOTER}\" Target=\"footer1.xml\"/></Relationships>"
        ));
        let mut entries: Vec<(&str, &[u8], bool)> = vec![
            (CONTENT_TYPES, ct.as_bytes(), true),
            ("_rels/.rels", rels.as_bytes(), true),
            ("word/document.xml", document.as_bytes(), true),
            ("word/_rels/document.xml.rels", doc_rels.as_bytes(), true),
        ];
        if let Some(s) = settings {
            entries.push(("word/settings.xml", s.as_bytes(), true));
        }
        for (n, b) in extra {
            entries.push((n, b.as_bytes(), true));
        }
        crate::artefacts::ooxml::tests_support::zip_of(&entries)
    }

    const W: &str = "xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\" xmlns:r=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships\"";

    #[test]
    fn injects_into_a_plain_document_keeping_its_text() {
        let doc = format!("<w:document {W}><w:body><w:p><w:r><w:t>Secret plans</w:t></w:r></w:p><w:sectPr><w:pgSz w:w=\"11906\"/></w:sectPr></w:body></w:document>");
        let up = upload(&doc, None, &[]);
        let out = inject(&up, URL).unwrap();
        let mut pkg = read(&out);
        let linked = linked_footers(&mut pkg);
        assert_eq!(linked.len(), 1);
        let new = text(&mut pkg, "word/document.xml");
        assert!(new.contains("<w:t>Secret plans</w:t>"));
        let id = pkg
            .relationships("word/document.xml")
            .unwrap()
            .into_iter()
            .find(|r| r.target.starts_with("footer") && r.id != "rId7")
            .unwrap()
            .id;
        assert_eq!(
            new,
            doc.replace("<w:sectPr>", &format!("<w:sectPr><w:footerReference w:type=\"default\" r:id=\"{id}\"/>"))
        );
        assert_ne!(id, "rId7");
    }

    #[test]
    fn respects_sections_first_pages_even_pages_and_existing_footers() {
        // Section 1: its own default footer (footer1), a title page. Section 2 (self-closing):
        // inherits. Final: nothing of its own.
        let doc = format!(
            "<w:document {W}><w:body><w:p><w:pPr><w:sectPr><w:footerReference w:type=\"default\" r:id=\"rId7\"/><w:titlePg/></w:sectPr></w:pPr></w:p>\
             <w:p><w:pPr><w:sectPr w:rsidR=\"1\"/></w:pPr></w:p>\
             <w:p><w:pPr><w:pPrChange><w:pPr/></w:pPrChange></w:pPr><w:sectPrChange><w:sectPr/></w:sectPrChange></w:p>\
             <w:sectPr><w:titlePg w:val=\"0\"/></w:sectPr></w:body></w:document>"
        );
        let footer1 = format!("<w:ftr {W}><w:p><w:r><w:t>Page</w:t></w:r></w:p><w:tbl/><w:p/></w:ftr>");
        let settings = "<w:settings xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><w:evenAndOddHeaders/></w:settings>";
        let up = upload(&doc, Some(settings), &[("word/footer1.xml", &footer1)]);
        let out = inject(&up, URL).unwrap();
        let mut pkg = read(&out);
        let mut linked = linked_footers(&mut pkg);
        linked.sort();
        assert_eq!(linked.len(), 2, "{linked:?}");
        assert!(linked.contains(&"word/footer1.xml".to_string()));
        let f1 = text(&mut pkg, "word/footer1.xml");
        assert!(
            f1.starts_with(&format!("<w:ftr {W}><w:p><w:r><w:t>Page</w:t></w:r></w:p><w:tbl/><w:p><w:r><w:fldChar")),
            "{f1}"
        );
        let new = text(&mut pkg, "word/document.xml");
        let ours = pkg
            .relationships("word/document.xml")
            .unwrap()
            .into_iter()
            .find(|r| r.rel_type == REL_FOOTER && r.id != "rId7")
            .unwrap()
            .id;
        let r = |ty: &str| format!("<w:footerReference w:type=\"{ty}\" r:id=\"{ours}\"/>");
        // Section 1 lacks first and even; section 2 inherits all; the change record is untouched.
        let expected = doc.replacen(
            "<w:sectPr><w:footerReference",
            &format!("<w:sectPr>{}{}<w:footerReference", r("first"), r("even")),
            1,
        );
        assert_eq!(new, expected);
    }

    #[test]
    fn covered_documents_get_no_footer_of_ours_and_unusable_ones_are_refused() {
        let doc = format!("<w:document {W}><w:body><w:p/><w:sectPr><w:footerReference w:type=\"default\" r:id=\"rId7\"/></w:sectPr></w:body></w:document>");
        let footer1 = format!("<w:ftr {W}><w:p/></w:ftr>");
        let out = inject(&upload(&doc, None, &[("word/footer1.xml", &footer1)]), URL).unwrap();
        let mut pkg = read(&out);
        assert_eq!(linked_footers(&mut pkg), ["word/footer1.xml"]);
        assert_eq!(text(&mut pkg, "word/document.xml"), doc, "nothing to reference");
        assert_eq!(pkg.names().filter(|n| n.contains("footer")).count(), 2, "footer1 and its rels only");
        // The reference names a part that is missing: nowhere to put the picture.
        let err = inject(&upload(&doc, None, &[]), URL).unwrap_err().to_string();
        assert_eq!(err, "has no footer that the picture could be added to");
    }

    #[test]
    fn a_body_without_section_properties_gets_one() {
        let doc = format!("<w:document {W}><w:body><w:p/></w:body></w:document>");
        let out = inject(&upload(&doc, None, &[]), URL).unwrap();
        let mut pkg = read(&out);
        let new = text(&mut pkg, "word/document.xml");
        assert!(new.contains("<w:p/><w:sectPr><w:footerReference w:type=\"default\""), "{new}");
        let doc = format!("<w:document {W}><w:body/></w:document>");
        let new = text(&mut read(&inject(&upload(&doc, None, &[]), URL).unwrap()), "word/document.xml");
        assert!(new.contains("<w:body><w:sectPr><w:footerReference"), "{new}");
    }

    #[test]
    fn other_prefixes_get_declarations() {
        let doc = "<document xmlns=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><body><sectPr/></body></document>";
        let out = inject(&upload(doc, None, &[]), URL).unwrap();
        let new = text(&mut read(&out), "word/document.xml");
        assert!(new.starts_with("<document xmlns=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\"><body><sectPr><w:footerReference xmlns:w=\"http://schemas.openxmlformats.org/wordprocessingml/2006/main\" xmlns:r=\"http://schemas.openxmlformats.org/officeDocument/2006/relationships\" w:type=\"default\""), "{new}");
        walk("d", &new, |_| Ok(())).unwrap();
    }

    #[test]
    fn refuses_what_is_not_a_word_document() {
        let err = |b: &[u8]| inject(b, URL).unwrap_err().to_string();
        let (_, xlsx) = crate::kinds::doc_msexcel::generate(URL, &mut rand::thread_rng()).unwrap();
        assert_eq!(
            err(&xlsx),
            "is an Excel workbook (.xlsx), not a Word document (.docx): use a doc-msexcel token for it"
        );
        assert!(err(b"plain text").starts_with("is not an Office Open XML document"));
        let strict = "<w:document xmlns:w=\"http://purl.oclc.org/ooxml/wordprocessingml/main\"><w:body/></w:document>";
        assert!(err(&upload(strict, None, &[])).contains("Strict"));
        assert!(err(&upload("<w:document", None, &[])).contains("not well-formed"));
    }
}
