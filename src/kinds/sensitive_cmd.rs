//! Kind `sensitive-cmd` (Sensitive Command): a `.reg` file that turns on Windows'
//! SilentProcessExit monitoring for `process_name`. When that program exits, Windows runs the
//! monitor command, which looks up `c<computer>.UN.u<user>.CMD.<8-char invocation id>.<hostname>`.
//! A repeat lookup of an invocation already alerted (resolver retries, a second resolver) is
//! kept but not alerted again.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    needs_dns_field, params, required, Artefact, CreateRequest, Created, DnsData, DnsDecoding, Kind, KindContext,
    KindView, ViewContext,
};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, NewHit, Token};

pub struct SensitiveCmd;

const PARAM: &str = "process_name";

/// The stored settings: the program whose exit is watched.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct SensitiveCmdParams {
    process_name: String,
}

#[async_trait::async_trait]
impl Kind for SensitiveCmd {
    fn name(&self) -> &'static str {
        "sensitive-cmd"
    }

    fn human_name(&self) -> &'static str {
        "Sensitive Command"
    }

    fn channel(&self) -> Channel {
        Channel::Dns
    }

    async fn create(&self, req: &CreateRequest<'_>, _cx: &KindContext) -> CoreResult<Created> {
        let name = validate_process_name(required(req.params, PARAM)?)?;
        Created::with(&SensitiveCmdParams { process_name: name })
    }

    fn view(&self, token: &Token, _cx: &ViewContext<'_>) -> KindView {
        KindView::default().field(PARAM, params::<SensitiveCmdParams>(token).process_name)
    }

    fn artefact(&self, token: &Token, cx: &ViewContext<'_>) -> Option<Artefact> {
        let site = cx.site;
        // Registry Editor 5.00 files are UTF-16 LE with a byte-order mark.
        let mut bytes = vec![0xff, 0xfe];
        let text = reg_text(&params::<SensitiveCmdParams>(token).process_name, &site.hostname(&token.id));
        for unit in text.encode_utf16() {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        let filename = format!("sensitive-cmd-{}.reg", token.id);
        Some(Artefact { filename, content_type: "application/octet-stream", bytes })
    }

    fn judge(&self, _token: &Token, hit: &NewHit) -> Judgement {
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

    fn dns(&self) -> Option<&dyn DnsDecoding> {
        Some(self)
    }
}

impl DnsDecoding for SensitiveCmd {
    fn rank(&self) -> u8 {
        5
    }

    fn decode(&self, labels: &[String]) -> DnsData {
        decode(labels)
    }
}

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
    fn repeat_invocations_share_a_dedupe_key() {
        let token = crate::kinds::testing::token("sensitive-cmd", serde_json::json!({ PARAM: "klist.exe" }));
        let data = serde_json::json!({"sensitive_cmd_user": "alice", "sensitive_cmd_invocation_id": "ab12cd34"});
        let Judgement::Alert { dedupe_key, .. } =
            SensitiveCmd.judge(&token, &crate::kinds::testing::hit(Channel::Dns, data))
        else {
            panic!()
        };
        assert_eq!(dedupe_key.as_deref(), Some("invocation:ab12cd34"));
        let bare = crate::kinds::testing::hit(Channel::Dns, serde_json::json!({}));
        assert!(matches!(SensitiveCmd.judge(&token, &bare), Judgement::Ignore { .. }));
    }

    #[tokio::test]
    async fn create_view_and_artefact_use_the_process_name() {
        use crate::kinds::testing;
        assert!(testing::create(&SensitiveCmd, &[(PARAM, "notepad")]).await.is_err());
        let stored = testing::create(&SensitiveCmd, &[(PARAM, "klist.exe")]).await.unwrap();
        assert_eq!(stored, serde_json::json!({ PARAM: "klist.exe" }));
        let (site, token) = (testing::site(), testing::token("sensitive-cmd", stored));
        assert_eq!(
            SensitiveCmd.view(&token, &crate::kinds::testing::vcx(&site)).fields,
            vec![(PARAM, serde_json::json!("klist.exe"))]
        );
        let a = SensitiveCmd.artefact(&token, &crate::kinds::testing::vcx(&site)).unwrap();
        assert_eq!(a.filename, format!("sensitive-cmd-{}.reg", token.id));
        let units: Vec<u16> = a.bytes[2..].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        assert_eq!(String::from_utf16(&units).unwrap(), reg_text("klist.exe", &site.hostname(&token.id)));
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
