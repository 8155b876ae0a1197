//! Kind `pdf-acrobat-reader` (Acrobat PDF): a PDF whose first page, when opened, follows a
//! URI action on the token's NX hostname (`<id>.<nx zone>`). Acrobat Reader looks the host up
//! as the page opens; Trapline's DNS listener records the lookup as the hit and answers
//! NXDOMAIN, so the reader never connects anywhere. Other viewers (Chromium, pdf.js, poppler,
//! Preview) ignore page-open URI actions: see `spec/openers.md` §3.
//!
//! With no upload, the PDF is written here: an internal memo of a page or two, its wording,
//! people, dates, producer, page size and identifiers drawn at random, so that two tokens'
//! files share no fingerprint but their structure. With an uploaded `pdf` (multipart, at most
//! [`MAX_BYTES`]), the action is added to the user's own file by an incremental update
//! ([`crate::artefacts::pdf::inject`]); encrypted or damaged files are refused with a reason.
//! Either way the PDF is made once, on the work pool, and stored as the token's file, which
//! `canarytoken/download` hands out.

use rand::seq::SliceRandom;
use rand::Rng;
use serde::{Deserialize, Serialize};

use super::{params, CreateRequest, Created, Kind, KindContext, KindView, Site, StoredArtefact, ViewContext};
use crate::artefacts::pdf::{self, Block, Info, NewPdf, PdfError};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Token, TokenFile};

pub struct PdfAcrobatReader;

/// The upload's field, and the stored file's name.
const FIELD: &str = "pdf";
/// Largest upload accepted (checked before anything is parsed).
pub const MAX_BYTES: usize = pdf::MAX_INPUT;
const CONTENT_TYPE: &str = "application/pdf";

/// The stored settings (the PDF itself is the token's file).
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct PdfParams {
    /// `generated`, or `uploaded`.
    pdf_source: String,
    /// The name the download goes by.
    pdf_filename: String,
    pdf_bytes: usize,
}

/// The URI the first page opens: a plain address on the token's NX hostname.
pub fn open_uri(site: &Site, token_id: &str) -> String {
    format!("http://{}/", site.nx_hostname(token_id))
}

#[async_trait::async_trait]
impl Kind for PdfAcrobatReader {
    fn name(&self) -> &'static str {
        "pdf-acrobat-reader"
    }

    fn human_name(&self) -> &'static str {
        "Acrobat PDF"
    }

    fn channel(&self) -> Channel {
        Channel::Dns
    }

    async fn create(&self, req: &CreateRequest<'_>, cx: &KindContext) -> CoreResult<Created> {
        let uri = open_uri(&cx.site, req.token_id);
        let mut id = [0u8; 16];
        rand::thread_rng().fill(&mut id);
        let (source, filename, bytes) = match req.uploads.get(FIELD) {
            Some(up) => {
                if up.bytes.len() > MAX_BYTES {
                    return Err(CoreError::TooLarge { name: FIELD, limit: MAX_BYTES });
                }
                let original = up.bytes.clone();
                let bytes = cx.work.run(move || pdf::inject(&original, &uri, id)).await?.map_err(refusal)?;
                ("uploaded", upload_name(&up.filename), bytes)
            }
            None => {
                let (filename, bytes) = cx
                    .work
                    .run(move || {
                        let mut rng = rand::thread_rng();
                        let (doc, filename) = memo(&mut rng, uri, id);
                        (filename, pdf::generate(&doc, &mut rng))
                    })
                    .await?;
                ("generated", filename, bytes)
            }
        };
        let settings = PdfParams { pdf_source: source.into(), pdf_filename: filename, pdf_bytes: bytes.len() };
        let mut created = Created::with(&settings)?;
        created.files.push(TokenFile { name: FIELD.into(), content_type: CONTENT_TYPE.into(), data: bytes });
        Ok(created)
    }

    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let p = params::<PdfParams>(token);
        let view = KindView::default().field("nx_hostname", cx.site.nx_hostname(&token.id));
        if p.pdf_filename.is_empty() {
            return view;
        }
        view.field("pdf_filename", p.pdf_filename).field("pdf_source", p.pdf_source)
    }

    fn stored_artefact(&self, token: &Token) -> Option<StoredArtefact> {
        let name = params::<PdfParams>(token).pdf_filename;
        let filename = if name.is_empty() { "document.pdf".to_string() } else { name };
        Some(StoredArtefact { file: FIELD, filename, content_type: CONTENT_TYPE })
    }
}

/// The refusal of an upload the injector cannot take.
fn refusal(e: PdfError) -> CoreError {
    match e {
        PdfError::TooLarge { limit } => CoreError::TooLarge { name: FIELD, limit },
        other => CoreError::invalid(FIELD, other.to_string()),
    }
}

/// The download name of an upload: its own name (without any path), ending in `.pdf`.
fn upload_name(sent: &str) -> String {
    let base = sent.rsplit(['/', '\\']).next().unwrap_or("").trim();
    let base: String = base.chars().filter(|c| !c.is_control()).take(96).collect();
    let stem = base.strip_suffix(".pdf").or_else(|| base.strip_suffix(".PDF")).unwrap_or(&base);
    if stem.trim().is_empty() {
        "document.pdf".into()
    } else {
        format!("{stem}.pdf")
    }
}

// --- the generated memo -------------------------------------------------------------------

const FIRST: &[&str] = &[
    "Sarah", "James", "Priya", "Tom", "Helen", "Daniel", "Aisha", "Mark", "Claire", "Ravi", "Emma", "Owen", "Laura",
    "Marcus", "Fiona", "Chen", "Grace", "Peter", "Nadia", "Robert",
];
const LAST: &[&str] = &[
    "Whitfield",
    "Okafor",
    "Brennan",
    "Lindqvist",
    "Patel",
    "Harcourt",
    "Moreau",
    "Fischer",
    "Gallagher",
    "Nakamura",
    "Ellison",
    "Quinn",
    "Baptiste",
    "Ashworth",
    "Kowalski",
    "Delaney",
    "Sandoval",
    "Thorne",
    "Mbeki",
    "Holloway",
];
const COMPANIES: &[&str] = &[
    "Harrow & Vale",
    "Kestrel Logistics",
    "Brightwater Group",
    "Calder Analytics",
    "Marlow Engineering",
    "Osprey Health Partners",
    "Redfern Capital",
    "Ashdown Retail",
];

/// Writer and producer strings as common office tools set them, with the PDF version each
/// writes; `None` as the creator: the tool sets none.
const PRODUCERS: &[(Option<&str>, &str, &str)] = &[
    (Some("Microsoft\u{ae} Word for Microsoft 365"), "Microsoft\u{ae} Word for Microsoft 365", "1.7"),
    (Some("Microsoft\u{ae} Word 2016"), "Microsoft\u{ae} Word 2016", "1.7"),
    (Some("Writer"), "LibreOffice 7.5", "1.6"),
    (Some("Writer"), "LibreOffice 24.2", "1.7"),
    (Some("Acrobat PDFMaker 23 for Word"), "Adobe PDF Library 23.8.53", "1.6"),
    (Some("Pages"), "macOS Version 14.4.1 (Build 23E224) Quartz PDFContext", "1.4"),
    (None, "Skia/PDF m124 Google Docs Renderer", "1.4"),
];

/// One kind of memo: its title and subject, who it is from, and its paragraphs (`{company}`,
/// `{name}`, `{date}`, `{amount}` and `{pct}` are filled in).
struct Template {
    title: &'static str,
    from_team: &'static str,
    to: &'static [&'static str],
    sections: &'static [(&'static str, &'static [&'static str])],
}

const TEMPLATES: &[Template] = &[
    Template {
        title: "Salary review {year}: guidance for line managers",
        from_team: "People & Culture",
        to: &["All line managers", "Heads of department", "Managers, UK and Ireland"],
        sections: &[
            ("Overview", &[
                "This note sets out how the {year} salary review will run and what we need from you. The overall budget agreed by the executive committee is {pct}% of the current pay bill, with a separate pot for promotions and market adjustments.",
                "Proposals are made in the compensation tool by {date}. Please do not share individual figures with your team until letters have been issued; early conversations create expectations we cannot always meet.",
            ]),
            ("How to allocate", &[
                "Use the performance ratings agreed at calibration. As a guide, strong performers should receive between one and a half and two times the budget percentage, and colleagues who are still developing in role around half of it.",
                "Where someone sits below the lower quartile of their band, flag it in the tool rather than using your budget to fix it: market adjustments are funded centrally and reviewed by {name}.",
                "Any proposal above 10% needs a short written justification and sign-off from your director.",
            ]),
            ("Timeline", &[
                "Calibration sessions close at the end of this month. Directors review proposals in the following two weeks, and letters go out with the payroll run on {date}.",
                "If you have questions about a specific case, contact your HR business partner. The full pay band tables are in the attached appendix and on the People hub.",
            ]),
        ],
    },
    Template {
        title: "Supplier bank detail changes: verification procedure",
        from_team: "Finance Operations",
        to: &["Accounts payable team", "Finance and procurement staff", "All budget holders"],
        sections: &[
            ("Why this matters", &[
                "Last quarter we received three requests to change a supplier's bank details that turned out to be fraudulent. One payment of {amount} was stopped by the bank only because the receiving account had already been flagged.",
                "From {date}, no change to supplier bank details will be processed without the call-back check described below, whoever the request appears to come from.",
            ]),
            ("The procedure", &[
                "Call the supplier on the number held in the vendor master record, never on a number given in the request itself. Confirm the old and the new account details with a named contact and record the call in the change ticket.",
                "A second member of the team approves the change in the ERP system. The first payment to new details is held for forty-eight hours and released by {name} or a delegate.",
                "Requests that create urgency, mention confidentiality or come from a senior colleague's personal address should be treated as suspicious and reported to the security desk.",
            ]),
            ("Reporting", &[
                "The monthly controls report will list every bank detail change with its ticket reference. Internal audit will sample these in the {year} review.",
            ]),
        ],
    },
    Template {
        title: "Planned maintenance: VPN and remote access",
        from_team: "IT Operations",
        to: &["All staff", "All remote and hybrid staff", "Service desk and IT support"],
        sections: &[
            ("What is happening", &[
                "We are replacing the remote access gateways on {date} between 19:00 and 23:00. During this window the VPN will be unavailable and remote desktop sessions will be disconnected.",
                "Office connections, e-mail and the intranet are not affected. Please save your work and disconnect before the window starts.",
            ]),
            ("After the change", &[
                "The first time you connect after the upgrade you will be asked to approve a new sign-in request on your authenticator app. The gateway address does not change, so saved profiles keep working.",
                "Administrative jump hosts move to the new management network at the same time. Engineers with privileged accounts will receive their new connection details from {name} separately.",
                "If you cannot connect the next morning, restart your laptop before calling the service desk; most problems clear once the new certificate has been fetched.",
            ]),
        ],
    },
    Template {
        title: "Office move: seating plan and access cards",
        from_team: "Facilities",
        to: &["All head office staff", "Everyone based on floors 3 and 4", "Department coordinators"],
        sections: &[
            ("Moving dates", &[
                "Teams on floors 3 and 4 move to the refurbished east wing over the weekend of {date}. Crates will be delivered on the Wednesday before; please label them with your name and new desk number.",
                "Personal items left on desks after Friday afternoon will be moved to the post room.",
            ]),
            ("Access cards", &[
                "New access cards are needed for the east wing and the new car park barrier. Collect yours from reception with photo ID from Monday; old cards will stop working a week after the move.",
                "Server and comms rooms on every floor now use the same card reader as the main doors. Access to them is granted per person by {name} and reviewed each quarter.",
            ]),
            ("Seating", &[
                "The draft seating plan is attached. Coordinators should send any swaps to Facilities by the end of next week; after that the plan is fixed for the move.",
            ]),
        ],
    },
    Template {
        title: "Q{quarter} board pack: summary of key figures",
        from_team: "Office of the CFO",
        to: &["Executive committee", "Board members", "Finance leadership team"],
        sections: &[
            ("Headlines", &[
                "Revenue for the quarter was {amount}, {pct}% ahead of the same quarter last year and slightly ahead of the reforecast. Gross margin held steady despite higher freight costs.",
                "Operating costs were in line with budget once the one-off restructuring charge is excluded. Headcount at the end of the quarter was unchanged from the previous one.",
            ]),
            ("Items for discussion", &[
                "The refinancing of the revolving credit facility is on the agenda for approval. Terms are summarised in section four of the full pack; the lenders' final offer is expected before the meeting.",
                "We propose to bring forward the systems investment discussed in the spring. {name} will present the business case and the revised phasing.",
            ]),
            ("Outlook", &[
                "We are holding the full-year guidance. The main risks remain customer concentration in the top ten accounts and the timing of the two large renewals due next quarter.",
                "Please treat these figures as strictly confidential until the results announcement on {date}.",
            ]),
        ],
    },
];

/// What a template's placeholders stand for in one memo.
struct Facts<'a> {
    company: &'a str,
    contact: &'a str,
    due: &'a str,
    amount: &'a str,
    pct: &'a str,
    year: i32,
    quarter: u32,
}

impl Facts<'_> {
    fn fill(&self, text: &str) -> String {
        text.replace("{company}", self.company)
            .replace("{name}", self.contact)
            .replace("{date}", self.due)
            .replace("{amount}", self.amount)
            .replace("{pct}", self.pct)
            .replace("{year}", &self.year.to_string())
            .replace("{quarter}", &self.quarter.to_string())
    }
}

fn person(rng: &mut impl Rng) -> String {
    format!("{} {}", FIRST.choose(rng).expect("names"), LAST.choose(rng).expect("names"))
}

/// A random memo opening `uri`, and the file name it goes by.
fn memo(rng: &mut impl Rng, uri: String, id: [u8; 16]) -> (NewPdf, String) {
    use chrono::{Datelike, Duration, FixedOffset, Timelike, Utc};
    let t = TEMPLATES.choose(rng).expect("templates");
    let company = *COMPANIES.choose(rng).expect("companies");
    let author = person(rng);
    let contact = person(rng);
    // Where and when it was written: an office time zone, a working hour, months ago.
    let (tz_hours, us) =
        *[(0, false), (1, false), (2, false), (-5, true), (-8, true), (10, false)].choose(rng).expect("zones");
    let tz = FixedOffset::east_opt(tz_hours * 3600).expect("offset in range");
    let base = Utc::now().with_timezone(&tz) - Duration::days(rng.gen_range(5..420));
    let created = base
        .with_hour(rng.gen_range(8..18))
        .and_then(|d| d.with_minute(rng.gen_range(0..60)))
        .and_then(|d| d.with_second(rng.gen_range(0..60)))
        .unwrap_or(base);
    let modified = created + Duration::minutes(rng.gen_range(2..240));
    let later = created + Duration::days(rng.gen_range(7..45));
    let fmt = if us { "%B %-d, %Y" } else { "%-d %B %Y" };
    let (date, due) = (created.format(fmt).to_string(), later.format(fmt).to_string());
    let amount =
        format!("{}{}.{} million", if us { "$" } else { "\u{a3}" }, rng.gen_range(1..90), rng.gen_range(0..10));
    let pct = format!("{}.{}", rng.gen_range(2..7), rng.gen_range(0..10));
    let (year, quarter) = (created.year(), (created.month() - 1) / 3 + 1);
    let facts = Facts { company, contact: &contact, due: &due, amount: &amount, pct: &pct, year, quarter };
    let f = |s: &str| facts.fill(s);

    let title = f(t.title);
    let mut blocks = vec![Block::Title(title.clone())];
    if rng.gen_bool(0.5) {
        blocks.push(Block::Paragraph(format!("{company} | Internal memorandum")));
    }
    blocks.push(Block::Field("To:".into(), t.to.choose(rng).expect("to").to_string()));
    blocks.push(Block::Field("From:".into(), format!("{author}, {}", t.from_team)));
    blocks.push(Block::Field("Date:".into(), date));
    if rng.gen_bool(0.4) {
        blocks.push(Block::Field("Ref:".into(), format!("{}-{:04}", initials(t.from_team), rng.gen_range(100..9999))));
    }
    blocks.push(Block::Rule);
    let headed = rng.gen_bool(0.7);
    for (heading, paragraphs) in t.sections {
        if headed {
            blocks.push(Block::Heading((*heading).into()));
        }
        for p in *paragraphs {
            // Most paragraphs, not always all: the same template gives different lengths.
            if paragraphs.len() < 2 || rng.gen_bool(0.85) {
                blocks.push(Block::Paragraph(f(p)));
            }
        }
    }
    blocks.push(Block::Space);
    blocks.push(Block::Paragraph(author.clone()));
    blocks.push(Block::Paragraph(t.from_team.into()));

    let (creator, producer, version) = *PRODUCERS.choose(rng).expect("producers");
    let footer = match rng.gen_range(0..3) {
        0 => Some(format!("{company} - Confidential")),
        1 => Some("Internal use only".into()),
        _ => None,
    };
    let (size, margin) = if us {
        ((612.0, 792.0), 72.0)
    } else {
        ((595.28, 841.89), *[56.69f32, 70.87, 72.0].choose(rng).expect("margins"))
    };
    let doc = NewPdf {
        version,
        info: Info {
            title: title.clone(),
            author: if creator.is_none() { String::new() } else { author },
            subject: rng.gen_bool(0.3).then(|| t.from_team.to_string()),
            creator: creator.unwrap_or("").to_string(),
            producer: producer.into(),
            created,
            modified,
        },
        size,
        margin,
        blocks,
        footer,
        open_uri: uri,
        id,
    };
    (doc, file_name(&title, rng))
}

fn initials(team: &str) -> String {
    team.split(|c: char| !c.is_ascii_alphabetic()).filter_map(|w| w.chars().next()).collect::<String>().to_uppercase()
}

/// A file name from the title, in one of the ways people name files.
fn file_name(title: &str, rng: &mut impl Rng) -> String {
    let words: Vec<String> = title
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(6)
        .map(str::to_string)
        .collect();
    let stem = match rng.gen_range(0..3) {
        0 => words.join("-"),
        1 => words.join("_").to_lowercase(),
        _ => words.join(" "),
    };
    format!("{stem}.pdf")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing;

    fn upload(bytes: &[u8], name: &str) -> crate::kinds::Uploads {
        let up = crate::kinds::Upload { filename: name.into(), content_type: CONTENT_TYPE.into(), bytes: bytes.into() };
        [(FIELD.to_string(), up)].into()
    }

    async fn create(uploads: &crate::kinds::Uploads) -> CoreResult<Created> {
        let params = crate::kinds::Params::new();
        let req = CreateRequest { token_id: "abcdefghijklmnopqrstuvwxy", params: &params, uploads };
        PdfAcrobatReader.create(&req, &testing::context()).await
    }

    #[tokio::test]
    async fn a_generated_pdf_opens_the_nx_hostname_and_is_the_download() {
        let created = create(&crate::kinds::Uploads::new()).await.unwrap();
        let [file] = created.files.as_slice() else { panic!("one file") };
        assert_eq!((file.name.as_str(), file.content_type.as_str()), (FIELD, CONTENT_TYPE));
        let first = pdf::inspect(&file.data).unwrap();
        assert_eq!(first.open_uris, vec![b"http://abcdefghijklmnopqrstuvwxy.nx.t.test/".to_vec()]);
        let token = testing::token("pdf-acrobat-reader", created.params);
        let stored = PdfAcrobatReader.stored_artefact(&token).unwrap();
        assert!(stored.filename.ends_with(".pdf") && stored.filename.len() > 4, "{}", stored.filename);
        assert_eq!((stored.file, stored.content_type), (FIELD, CONTENT_TYPE));
        let site = testing::site();
        let view = PdfAcrobatReader.view(&token, &testing::vcx(&site));
        assert_eq!(view.fields[0], ("nx_hostname", serde_json::json!("abcdefghijklmnopqrstuvwxy.nx.t.test")));
        assert!(view.fields.contains(&("pdf_source", serde_json::json!("generated"))));
    }

    #[tokio::test]
    async fn an_upload_gets_the_action_appended() {
        let mut rng = rand::thread_rng();
        let (doc, _) = memo(&mut rng, "http://x.nx.t.test/".into(), [1; 16]);
        let original = pdf::generate(&doc, &mut rng);
        let created = create(&upload(&original, "C:\\Users\\me\\Q3 report.PDF")).await.unwrap();
        let data = &created.files[0].data;
        assert!(data.starts_with(&original));
        let uris = pdf::inspect(data).unwrap().open_uris;
        assert_eq!(uris[0], b"http://abcdefghijklmnopqrstuvwxy.nx.t.test/");
        assert_eq!(uris[1], b"http://x.nx.t.test/", "the file's own open action still runs, after ours");
        assert_eq!(created.params["pdf_filename"], "Q3 report.pdf");
        assert_eq!(created.params["pdf_source"], "uploaded");
    }

    #[tokio::test]
    async fn bad_uploads_are_refused_with_the_reason() {
        let not_pdf = create(&upload(b"just some text", "x.pdf")).await.unwrap_err();
        assert!(
            matches!(&not_pdf, CoreError::InvalidParam { name: "pdf", reason } if reason.starts_with("is not a PDF")),
            "{not_pdf:?}"
        );
        let big = vec![b'%'; MAX_BYTES + 1];
        assert!(matches!(create(&upload(&big, "x.pdf")).await, Err(CoreError::TooLarge { name: "pdf", .. })));
        let cut = create(&upload(b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\n", "x.pdf")).await.unwrap_err();
        assert!(matches!(&cut, CoreError::InvalidParam { reason, .. } if reason.starts_with("is damaged")), "{cut:?}");
    }

    #[test]
    fn memos_vary_and_stay_readable() {
        let mut rng = rand::thread_rng();
        let mut titles = std::collections::HashSet::new();
        for _ in 0..40 {
            let (doc, name) = memo(&mut rng, "http://h/".into(), [0; 16]);
            assert!(!doc.blocks.is_empty());
            assert!(name.ends_with(".pdf") && !name.contains('/'), "{name}");
            assert!(doc.info.modified > doc.info.created);
            for b in &doc.blocks {
                if let Block::Paragraph(p) = b {
                    assert!(!p.contains('{'), "a placeholder left: {p}");
                }
            }
            titles.insert(doc.info.title.clone());
        }
        assert!(titles.len() > 2, "{titles:?}");
    }

    #[test]
    fn upload_names_keep_the_users_name() {
        assert_eq!(upload_name("report.pdf"), "report.pdf");
        assert_eq!(upload_name("/home/u/Budget.PDF"), "Budget.pdf");
        assert_eq!(upload_name("notes"), "notes.pdf");
        assert_eq!(upload_name(""), "document.pdf");
        assert_eq!(upload_name("dir/.pdf"), "document.pdf");
    }
}
