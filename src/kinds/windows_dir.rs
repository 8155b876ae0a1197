//! Kind `windows-dir` (Windows Folder): a zip of a folder whose hidden, system `desktop.ini`
//! (UTF-16 LE with BOM, as Windows writes it) sets the folder icon to the UNC path
//! `\\%USERNAME%.%COMPUTERNAME%.%USERDOMAIN%.INI.<hostname>\resource.dll`. When Explorer shows
//! the folder it expands the variables and looks the name up: the labels before `INI` are the
//! user, computer and domain.

use std::io::Write;

use serde_json::Map;
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, System, ZipWriter};

use super::{needs_dns_field, Artefact, DnsData, DnsDecoding, Kind, Site, ViewContext};
use crate::model::{Channel, Judgement, NewHit, Token};

pub struct WindowsDir;

impl Kind for WindowsDir {
    fn name(&self) -> &'static str {
        "windows-dir"
    }

    fn human_name(&self) -> &'static str {
        "Windows Folder"
    }

    fn channel(&self) -> Channel {
        Channel::Dns
    }

    fn artefact(&self, token: &Token, cx: &ViewContext<'_>) -> Option<Artefact> {
        let site = cx.site;
        Some(artefact(token, site))
    }

    fn judge(&self, _token: &Token, hit: &NewHit) -> Judgement {
        needs_dns_field(hit, "windows_user")
    }

    fn dns(&self) -> Option<&dyn DnsDecoding> {
        Some(self)
    }
}

impl DnsDecoding for WindowsDir {
    fn rank(&self) -> u8 {
        3
    }

    fn decode(&self, labels: &[String]) -> DnsData {
        decode(labels)
    }
}

/// The folder the zip holds.
const FOLDER: &str = "Confidential";
/// MS-DOS attribute bits (low byte of a zip entry's external attributes).
const DOS_READ_ONLY: u32 = 0x01;
const DOS_HIDDEN: u32 = 0x02;
const DOS_SYSTEM: u32 = 0x04;
const DOS_DIRECTORY: u32 = 0x10;

/// The desktop.ini text (before encoding).
pub fn desktop_ini(hostname: &str) -> String {
    format!(
        "[.ShellClassInfo]\r\nIconResource=\\\\%USERNAME%.%COMPUTERNAME%.%USERDOMAIN%.INI.{hostname}\\resource.dll\r\n"
    )
}

fn utf16le_with_bom(text: &str) -> Vec<u8> {
    let mut out = vec![0xff, 0xfe];
    for unit in text.encode_utf16() {
        out.extend_from_slice(&unit.to_le_bytes());
    }
    out
}

fn artefact(token: &Token, site: &Site) -> Artefact {
    let ini = utf16le_with_bom(&desktop_ini(&site.hostname(&token.id)));
    let dos = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).system(System::Dos);
    let mut zip = ZipWriter::new(std::io::Cursor::new(Vec::new()));
    // Writing to memory cannot fail short of allocation failure.
    zip.add_directory(format!("{FOLDER}/"), dos.external_attributes(DOS_DIRECTORY | DOS_READ_ONLY))
        .expect("zip to memory");
    zip.start_file(format!("{FOLDER}/desktop.ini"), dos.external_attributes(DOS_HIDDEN | DOS_SYSTEM))
        .expect("zip to memory");
    zip.write_all(&ini).expect("zip to memory");
    let bytes = zip.finish().expect("zip to memory").into_inner();
    Artefact { filename: format!("{FOLDER}.zip"), content_type: "application/zip", bytes }
}

/// `<user>.<computer>[.<domain>].INI`. With more than three labels the user name is taken to
/// hold dots (`first.last`): domain and computer are the last two.
fn decode(labels: &[String]) -> DnsData {
    let Some((marker, rest)) = labels.split_last() else { return DnsData::NoMatch };
    if !marker.eq_ignore_ascii_case("ini") {
        return DnsData::NoMatch;
    }
    let (user, computer, domain) = match rest {
        [] | [_] => return DnsData::Undecodable,
        [u, c] => (u.clone(), c.clone(), None),
        [u @ .., c, d] => (u.join("."), c.clone(), Some(d.clone())),
    };
    let mut m = Map::new();
    m.insert("windows_user".into(), user.into());
    m.insert("windows_computer".into(), computer.into());
    if let Some(d) = domain {
        m.insert("windows_domain".into(), d.into());
    }
    DnsData::Decoded(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::labels;
    use std::io::Read;

    #[test]
    fn decodes_user_computer_domain() {
        let DnsData::Decoded(m) = decode(&labels("alice.WS-042.CORP.INI")) else { panic!() };
        assert_eq!((m["windows_user"].as_str(), m["windows_computer"].as_str()), (Some("alice"), Some("WS-042")));
        assert_eq!(m["windows_domain"], "CORP");
        let DnsData::Decoded(m) = decode(&labels("bob.PC1.ini")) else { panic!() };
        assert!(m.get("windows_domain").is_none());
        let DnsData::Decoded(m) = decode(&labels("john.smith.PC1.CORP.INI")) else { panic!() };
        assert_eq!(m["windows_user"], "john.smith");
        assert_eq!(decode(&labels("INI")), DnsData::Undecodable);
        assert_eq!(decode(&labels("x.INI")), DnsData::Undecodable);
        assert_eq!(decode(&labels("x.G12")), DnsData::NoMatch);
    }

    #[test]
    fn zip_holds_a_hidden_system_utf16_desktop_ini() {
        let (site, token) =
            (crate::kinds::testing::site(), crate::kinds::testing::token("windows-dir", serde_json::json!({})));
        let a = artefact(&token, &site);
        let mut zip = zip::ZipArchive::new(std::io::Cursor::new(a.bytes)).unwrap();
        let mut f = zip.by_name("Confidential/desktop.ini").unwrap();
        assert_eq!(f.system(), System::Dos);
        assert_eq!(f.external_attributes() & 0xff, DOS_HIDDEN | DOS_SYSTEM);
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes).unwrap();
        assert_eq!(&bytes[..2], &[0xff, 0xfe]);
        let units: Vec<u16> = bytes[2..].chunks(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
        let text = String::from_utf16(&units).unwrap();
        assert!(text.contains(
            r"IconResource=\\%USERNAME%.%COMPUTERNAME%.%USERDOMAIN%.INI.abcdefghijklmnopqrstuvwxy.t.test\resource.dll"
        ));
    }
}
