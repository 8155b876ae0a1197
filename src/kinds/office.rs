//! What the Office document kinds (`doc-msword`, `doc-msexcel`) share: the optional `doc`
//! upload and its size limit, building or injecting the document on the work pool, keeping it
//! as the token's stored file, its download, the hit's note of which document fired, and the
//! plausible people, dates and departments their generated documents are made of. Each kind
//! supplies its own generator and injector (on [`crate::artefacts::ooxml`]).

use chrono::{DateTime, Duration, Utc};
use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{params, CreateRequest, Created, Kind, KindContext, KindView, StoredArtefact, ViewContext};
use crate::artefacts::ooxml::{self, CoreProperties, Package};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, NewHit, Token, TokenFile};

/// The upload's field (as the Console's documentation names it for doc-msword).
pub const FIELD: &str = "doc";
/// Largest upload accepted (also the package limit of [`ooxml::Limits::UPLOAD`]).
pub const MAX_BYTES: usize = ooxml::Limits::UPLOAD.max_bytes;
/// The stored file's name.
const FILE: &str = "document";

/// A document made from scratch: its file name and bytes.
pub type Generated = (String, Vec<u8>);

/// One Office document kind: what its files are and how they are made.
pub struct OfficeKind {
    /// Console name, `doc-msword`.
    pub name: &'static str,
    pub human_name: &'static str,
    /// The file extension, `docx`.
    pub ext: &'static str,
    /// The download's content type.
    pub content_type: &'static str,
    /// What the hit calls it, `Word document (.docx)`.
    pub label: &'static str,
    /// A new document calling `url`.
    pub generate: fn(url: &str) -> ooxml::Result<Generated>,
    /// The upload with `url` injected.
    pub inject: fn(upload: &[u8], url: &str) -> ooxml::Result<Vec<u8>>,
}

/// The stored settings: where the document came from (the document itself is the file).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct DocParams {
    doc_name: String,
    /// `generated` or `uploaded`.
    doc_source: String,
    doc_bytes: usize,
}

#[async_trait::async_trait]
impl Kind for OfficeKind {
    fn name(&self) -> &'static str {
        self.name
    }

    fn human_name(&self) -> &'static str {
        self.human_name
    }

    fn channel(&self) -> Channel {
        Channel::Http
    }

    async fn create(&self, req: &CreateRequest<'_>, cx: &KindContext) -> CoreResult<Created> {
        let url = cx.site.url(req.token_id);
        let (generate, inject) = (self.generate, self.inject);
        let (name, source, bytes) = match req.uploads.get(FIELD) {
            Some(up) => {
                if up.bytes.len() > MAX_BYTES {
                    return Err(CoreError::TooLarge { name: FIELD, limit: MAX_BYTES });
                }
                let upload = up.bytes.clone();
                let bytes = cx.work.run(move || inject(&upload, &url)).await?.map_err(|e| refusal(&e))?;
                (upload_name(&up.filename, self.ext), "uploaded", bytes)
            }
            None => {
                let (name, bytes) = cx.work.run(move || generate(&url)).await?.map_err(|e| refusal(&e))?;
                (name, "generated", bytes)
            }
        };
        let mut created =
            Created::with(&DocParams { doc_name: name, doc_source: source.into(), doc_bytes: bytes.len() })?;
        created.files.push(TokenFile { name: FILE.into(), content_type: self.content_type.into(), data: bytes });
        Ok(created)
    }

    fn view(&self, token: &Token, _cx: &ViewContext<'_>) -> KindView {
        let p = params::<DocParams>(token);
        if p.doc_name.is_empty() {
            return KindView::default();
        }
        KindView::default().field("doc_name", p.doc_name).field("doc_source", p.doc_source)
    }

    fn stored_artefact(&self, token: &Token) -> Option<StoredArtefact> {
        let p = params::<DocParams>(token);
        let filename = if p.doc_name.is_empty() { format!("document.{}", self.ext) } else { p.doc_name };
        Some(StoredArtefact { file: FILE, filename, content_type: self.content_type })
    }

    /// Every fetch alerts, saying which document it was.
    fn judge(&self, token: &Token, _hit: &NewHit) -> Judgement {
        let p = params::<DocParams>(token);
        let mut extra = Map::new();
        extra.insert("document_type".into(), Value::String(self.label.into()));
        if !p.doc_source.is_empty() {
            extra.insert("document_source".into(), Value::String(p.doc_source));
            extra.insert("document_name".into(), Value::String(p.doc_name));
        }
        Judgement::Alert { extra, dedupe_key: None }
    }
}

fn refusal(e: &ooxml::Error) -> CoreError {
    match e {
        ooxml::Error::TooLarge { limit } => CoreError::TooLarge { name: FIELD, limit: *limit },
        e => CoreError::invalid(FIELD, e.to_string()),
    }
}

/// The upload's own name (its last path segment, printable, at most 100 characters), with
/// the kind's extension.
fn upload_name(filename: &str, ext: &str) -> String {
    let base = filename.rsplit(['/', '\\']).next().unwrap_or("");
    let mut name: String = base.chars().filter(|c| !c.is_control()).take(100).collect();
    let name_trim = name.trim();
    if name_trim.is_empty() {
        return format!("document.{ext}");
    }
    name = name_trim.to_string();
    if !name.to_ascii_lowercase().ends_with(&format!(".{ext}")) {
        name = format!("{name}.{ext}");
    }
    name
}

// --- what uploads may be -------------------------------------------------------------------

pub const CT_WORD_MAIN: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml";
pub const CT_EXCEL_MAIN: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml";

/// What a package whose main part has content type `ct` is, for refusals.
fn describe(ct: &str) -> &'static str {
    match ct {
        CT_WORD_MAIN => "a Word document (.docx)",
        "application/vnd.ms-word.document.macroEnabled.main+xml" => "a macro-enabled Word document (.docm)",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml" => "a Word template (.dotx)",
        "application/vnd.ms-word.template.macroEnabledTemplate.main+xml" => "a macro-enabled Word template (.dotm)",
        CT_EXCEL_MAIN => "an Excel workbook (.xlsx)",
        "application/vnd.ms-excel.sheet.macroEnabled.main+xml" => "a macro-enabled Excel workbook (.xlsm)",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml" => "an Excel template (.xltx)",
        "application/vnd.ms-excel.template.macroEnabled.main+xml" => "a macro-enabled Excel template (.xltm)",
        "application/vnd.ms-excel.sheet.binary.macroEnabled.main" => "a binary Excel workbook (.xlsb)",
        "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml" => {
            "a PowerPoint presentation (.pptx)"
        }
        "application/vnd.ms-powerpoint.presentation.macroEnabled.main+xml" => {
            "a macro-enabled PowerPoint presentation (.pptm)"
        }
        _ => "some other Office Open XML document",
    }
}

/// The package's main part, if its type is `expected`; otherwise a refusal saying what the
/// upload is instead.
pub fn main_part_of(pkg: &mut Package<'_>, expected: &str) -> ooxml::Result<String> {
    let (main, ct) = pkg.main_part()?;
    if ct == expected {
        return Ok(main);
    }
    let hint = match ct.as_str() {
        CT_WORD_MAIN => ": use a doc-msword token for it",
        CT_EXCEL_MAIN => ": use a doc-msexcel token for it",
        _ => "",
    };
    Err(ooxml::Error::Refused(format!("is {}, not {}{hint}", describe(&ct), describe(expected))))
}

// --- what generated documents are made of --------------------------------------------------

const FIRST: &[&str] = &[
    "James", "Sarah", "Michael", "Emma", "David", "Olivia", "Daniel", "Sophie", "Thomas", "Laura", "Peter", "Anna",
    "Mark", "Rachel", "Paul", "Claire", "Andrew", "Hannah", "Simon", "Julia", "Martin", "Nina", "Robert", "Karen",
];
const LAST: &[&str] = &[
    "Smith", "Jones", "Taylor", "Brown", "Wilson", "Evans", "Walker", "Wright", "Robinson", "Thompson", "Hughes",
    "Edwards", "Green", "Hall", "Wood", "Harris", "Clarke", "Jackson", "Turner", "Hill", "Moore", "Cooper", "Ward",
    "Morris", "Baker", "Fischer", "Novak", "Costa",
];
pub const DEPARTMENTS: &[&str] =
    &["Finance", "Operations", "Engineering", "Sales", "Marketing", "Legal", "Procurement", "Customer Support", "IT"];
const COMPANIES: &[&str] = &["", "", "Northwind Ltd", "Harbour Group", "Contoso", "Fabrikam", "Brightline"];
pub const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A random full name.
pub fn person(rng: &mut impl Rng) -> String {
    format!("{} {}", FIRST.choose(rng).unwrap_or(&"Alex"), LAST.choose(rng).unwrap_or(&"Miller"))
}

pub fn pick<'a>(rng: &mut impl Rng, from: &[&'a str]) -> &'a str {
    from.choose(rng).copied().unwrap_or("")
}

/// A company name, often none (as most documents have).
pub fn company(rng: &mut impl Rng) -> &'static str {
    pick(rng, COMPANIES)
}

/// Core properties for a document titled `title`: an author, sometimes another last editor,
/// created between a week and two years ago and last saved some time after.
pub fn core_properties(rng: &mut impl Rng, title: &str) -> CoreProperties {
    let now = Utc::now();
    let created: DateTime<Utc> = now - Duration::seconds(rng.gen_range(7 * 86_400..730 * 86_400));
    let span = (now - created).num_seconds().min(60 * 86_400);
    let modified = created + Duration::seconds(rng.gen_range(600..span.max(601)));
    let creator = person(rng);
    let last_modified_by = if rng.gen_bool(0.4) { person(rng) } else { creator.clone() };
    CoreProperties {
        title: title.to_string(),
        creator,
        last_modified_by,
        revision: rng.gen_range(2..40),
        created,
        modified,
    }
}

/// A download name for a document titled `title`: `Salary_Review_2026.docx`.
pub fn file_name(title: &str, ext: &str) -> String {
    let words: Vec<String> =
        title.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_string).collect();
    format!("{}.{ext}", words.join("_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_keep_the_users_name() {
        assert_eq!(upload_name("C:\\Users\\x\\Payroll 2026.DOCX", "docx"), "Payroll 2026.DOCX");
        assert_eq!(upload_name("../../report", "docx"), "report.docx");
        assert_eq!(upload_name("", "xlsx"), "document.xlsx");
        assert_eq!(upload_name("a\u{7}b.xlsx", "xlsx"), "ab.xlsx");
        assert_eq!(upload_name(&"x".repeat(300), "docx").len(), 105);
    }

    #[test]
    fn generated_names_and_dates_are_plausible() {
        assert_eq!(file_name("Salary Review – 2026", "docx"), "Salary_Review_2026.docx");
        let mut rng = rand::thread_rng();
        for _ in 0..50 {
            let c = core_properties(&mut rng, "t");
            assert!(c.created < c.modified && c.modified <= Utc::now(), "{c:?}");
            assert!(c.creator.contains(' '));
        }
    }

    #[test]
    fn the_judge_names_the_document() {
        let kind = OfficeKind {
            name: "doc-msword",
            human_name: "MS Word Document",
            ext: "docx",
            content_type: "x/y",
            label: "Word document (.docx)",
            generate: |_| unreachable!(),
            inject: |_, _| unreachable!(),
        };
        let t = crate::kinds::testing::token(
            "doc-msword",
            serde_json::json!({"doc_name": "a.docx", "doc_source": "uploaded", "doc_bytes": 3}),
        );
        let hit = crate::kinds::testing::hit(Channel::Http, serde_json::json!({}));
        let Judgement::Alert { extra, .. } = kind.judge(&t, &hit) else { panic!() };
        assert_eq!(extra["document_type"], "Word document (.docx)");
        assert_eq!(
            (extra["document_source"].as_str(), extra["document_name"].as_str()),
            (Some("uploaded"), Some("a.docx"))
        );
        let d = kind.stored_artefact(&t).unwrap();
        assert_eq!((d.file, d.filename.as_str(), d.content_type), (FILE, "a.docx", "x/y"));
        let bare = crate::kinds::testing::token("doc-msword", serde_json::json!({}));
        assert_eq!(kind.stored_artefact(&bare).unwrap().filename, "document.docx");
    }
}
