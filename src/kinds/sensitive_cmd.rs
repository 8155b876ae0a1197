//! Kind `sensitive-cmd` (Sensitive Command): a `.reg` file that turns on Windows'
//! SilentProcessExit monitoring for `process_name`. When that program exits, Windows runs the
//! monitor command, which looks up `c<computer>.UN.u<user>.CMD.<8-char invocation id>.<hostname>`.
//! A repeat lookup of an invocation already alerted (resolver retries, a second resolver) is
//! kept but not alerted again.

use serde_json::{json, Map, Value};

use super::{
    gif_answer, needs_dns_field, required, Artefact, Created, DnsData, DnsEncoding, Kind, Params, Site, Uploads,
};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, NewHit, Token};

pub static KIND: Kind = Kind {
    name: "sensitive-cmd",
    human_name: "Sensitive Command",
    channel: Channel::Dns,
    create,
    describe,
    artefact: Some(artefact),
    dns_encoding: Some(DnsEncoding { rank: 5, decode }),
    judge,
    http_answer: gif_answer,
};

const PARAM: &str = "process_name";

/// An executable's file name: letters, digits, `_`, `.`, `-`, ending in `.exe`, at most 64.
pub fn validate_process_name(name: &str) -> CoreResult<String> {
    let ok = name.len() <= 64
        && name.len() > 4
        && name.to_ascii_lowercase().ends_with(".exe")
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(name.to_string())
    } else {
        Err(CoreError::invalid(PARAM, "must be an executable's file name such as klist.exe"))
    }
}

fn create(params: &Params, _uploads: &Uploads) -> CoreResult<Created> {
    let name = validate_process_name(required(params, PARAM)?)?;
    Ok(Created::params(json!({ PARAM: name })))
}

fn process(token: &Token) -> &str {
    token.params.get(PARAM).and_then(Value::as_str).unwrap_or("")
}

fn describe(token: &Token, _site: &Site, out: &mut Map<String, Value>) {
    out.insert(PARAM.into(), process(token).into());
}

/// The PowerShell the monitor runs: computer and user names cleaned to DNS-safe characters,
/// cut to 63, and a fresh 8-character invocation id.
fn monitor_command(hostname: &str) -> String {
    format!(
        "cmd.exe /c start /min powershell.exe -NoProfile -WindowStyle Hidden -Command \
         \"$c=('c'+$env:COMPUTERNAME) -replace '[^a-zA-Z0-9-]','';$u=('u'+$env:USERNAME) -replace '[^a-zA-Z0-9-]','';\
         $i=-join ((48..57)+(97..122)|Get-Random -Count 8|ForEach-Object{{[char]$_}});\
         Resolve-DnsName -DnsOnly -Name ($c.Substring(0,[Math]::Min(63,$c.Length))+'.UN.'+\
         $u.Substring(0,[Math]::Min(63,$u.Length))+'.CMD.'+$i+'.{hostname}')\""
    )
}

/// A `.reg` string value: backslashes and quotes escaped.
fn reg_string(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

pub fn reg_text(process: &str, hostname: &str) -> String {
    let base = r"HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion";
    format!(
        "Windows Registry Editor Version 5.00\r\n\r\n\
         [{base}\\Image File Execution Options\\{process}]\r\n\
         \"GlobalFlag\"=dword:00000200\r\n\r\n\
         [{base}\\SilentProcessExit\\{process}]\r\n\
         \"ReportingMode\"=dword:00000001\r\n\
         \"MonitorProcess\"=\"{}\"\r\n",
        reg_string(&monitor_command(hostname))
    )
}

fn artefact(token: &Token, site: &Site) -> Artefact {
    // Registry Editor 5.00 files are UTF-16 LE with a byte-order mark.
    let mut bytes = vec![0xff, 0xfe];
    for unit in reg_text(process(token), &site.hostname(&token.id)).encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    Artefact { filename: format!("sensitive-cmd-{}.reg", token.id), content_type: "application/octet-stream", bytes }
}

/// `c<computer>.UN.u<user>.CMD[.<8-char id>]`.
fn decode(labels: &[String]) -> DnsData {
    let cmd = labels.iter().rposition(|l| l.eq_ignore_ascii_case("cmd"));
    let Some(cmd) = cmd else { return DnsData::NoMatch };
    let id = match &labels[cmd + 1..] {
        [] => None,
        [id] if id.len() == 8 && id.bytes().all(|b| b.is_ascii_alphanumeric()) => Some(id.to_ascii_lowercase()),
        _ => return DnsData::NoMatch,
    };
    let [c, un, u] = &labels[..cmd] else { return DnsData::Undecodable };
    let computer = c.strip_prefix(['c', 'C']).unwrap_or("");
    let user = u.strip_prefix(['u', 'U']).unwrap_or("");
    if !un.eq_ignore_ascii_case("un") || computer.is_empty() || user.is_empty() {
        return DnsData::Undecodable;
    }
    let mut m = Map::new();
    m.insert("sensitive_cmd_computer".into(), computer.into());
    m.insert("sensitive_cmd_user".into(), user.into());
    if let Some(id) = id {
        m.insert("sensitive_cmd_invocation_id".into(), id.into());
    }
    DnsData::Decoded(m)
}

fn judge(_token: &Token, hit: &NewHit) -> Judgement {
    match needs_dns_field(hit, "sensitive_cmd_user") {
        Judgement::Alert { extra, .. } => {
            let dedupe_key = hit
                .data
                .get("sensitive_cmd_invocation_id")
                .and_then(Value::as_str)
                .map(|id| format!("invocation:{id}"));
            Judgement::Alert { extra, dedupe_key }
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::labels;

    #[test]
    fn process_names() {
        for ok in ["klist.exe", "Net1.EXE", "my_tool-2.exe"] {
            assert!(validate_process_name(ok).is_ok(), "{ok}");
        }
        for bad in
            ["notepad", "../evil.exe", "a;b.exe", r"c:\x.exe", ".exe", "-x.exe", &format!("{}.exe", "a".repeat(300))]
        {
            assert!(validate_process_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decodes_with_and_without_invocation_id() {
        let DnsData::Decoded(m) = decode(&labels("cWS042.UN.ualice.CMD.ab12cd34")) else { panic!() };
        assert_eq!(m["sensitive_cmd_computer"], "WS042");
        assert_eq!(m["sensitive_cmd_user"], "alice");
        assert_eq!(m["sensitive_cmd_invocation_id"], "ab12cd34");
        let DnsData::Decoded(m) = decode(&labels("cPC.un.ubob.cmd")) else { panic!() };
        assert!(m.get("sensitive_cmd_invocation_id").is_none());
        assert_eq!(decode(&labels("CMD")), DnsData::Undecodable);
        assert_eq!(decode(&labels("c.UN.u.CMD.ab12cd34")), DnsData::Undecodable);
        assert_eq!(decode(&labels("www")), DnsData::NoMatch);
    }

    #[test]
    fn reg_file_escapes_the_command() {
        let text = reg_text("klist.exe", "tok.t.test");
        assert!(text.starts_with("Windows Registry Editor Version 5.00\r\n"));
        assert!(text.contains(
            r#"[HKEY_LOCAL_MACHINE\SOFTWARE\Microsoft\Windows NT\CurrentVersion\SilentProcessExit\klist.exe]"#
        ));
        let line = text.lines().find(|l| l.starts_with("\"MonitorProcess\"=")).unwrap();
        assert!(line.contains(r#"-Command \"$c="#), "{line}");
        assert!(line.contains(".tok.t.test')\\\""), "{line}");
    }
}
