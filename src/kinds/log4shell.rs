//! Kind `log4shell`: the string `${jndi:ldap://x${hostName}.L4J.<hostname>/a}`. A vulnerable
//! Log4j expands `${hostName}` and looks the name up; the label after the leading `x` is the
//! host's name. Lookups that carry no host name (scanners, resolvers) are kept but not alerted.

use serde_json::{Map, Value};

use super::{gif_answer, needs_dns_field, no_params, renders, DnsData, DnsEncoding, Kind, Site};
use crate::model::{Channel, Judgement, NewHit, Token};

pub static KIND: Kind = Kind {
    name: "log4shell",
    human_name: "Log4Shell",
    channel: Channel::Dns,
    create: no_params,
    describe,
    artefact: None,
    dns_encoding: Some(DnsEncoding { rank: 4, decode }),
    judge,
    http_answer: gif_answer,
};

const FIELD: &str = "log4shell_hostname";

fn describe(token: &Token, site: &Site, out: &mut Map<String, Value>) {
    renders(out, KIND.name, format!("${{jndi:ldap://x${{hostName}}.L4J.{}/a}}", site.hostname(&token.id)));
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

fn judge(_token: &Token, hit: &NewHit) -> Judgement {
    needs_dns_field(hit, FIELD)
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
}
