//! Kind `sql` (SQL Server): T-SQL that installs a trigger (on INSERT, UPDATE or DELETE) or a
//! view over a function (on SELECT). Either, when fired, makes SQL Server resolve a UNC path
//! whose labels carry the base64 of the SQL login (`=` written as `-`, chunks of at most 63)
//! followed by two random digits and the token hostname.

use base64::Engine;
use serde_json::{json, Map, Value};

use super::{
    gif_answer, needs_dns_field, renders, Artefact, Created, DnsData, DnsEncoding, Kind, Params, Site, Uploads,
};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, NewHit, Token};

pub static KIND: Kind = Kind {
    name: "sql",
    human_name: "SQL Server",
    channel: Channel::Dns,
    create,
    describe,
    artefact: Some(artefact),
    dns_encoding: Some(DnsEncoding { rank: 7, decode }),
    judge,
    http_answer: gif_answer,
};

const FIELD: &str = "sql_username";
/// (parameter, default) for each object name the script uses.
const NAMES: [(&str, &str); 4] = [
    ("sql_server_table_name", "TABLE1"),
    ("sql_server_view_name", "VIEW1"),
    ("sql_server_function_name", "FUNCTION1"),
    ("sql_server_trigger_name", "TRIGGER1"),
];

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && (n.as_bytes()[0].is_ascii_alphabetic() || n.as_bytes()[0] == b'_')
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn create(params: &Params, _uploads: &Uploads) -> CoreResult<Created> {
    let action = params.get("sql_server_sql_action").map(|a| a.trim().to_ascii_uppercase());
    let action = match action.as_deref() {
        None | Some("") => "INSERT".to_string(),
        Some(a @ ("INSERT" | "UPDATE" | "DELETE" | "SELECT")) => a.to_string(),
        Some(_) => return Err(CoreError::invalid("sql_server_sql_action", "must be INSERT, UPDATE, DELETE or SELECT")),
    };
    let mut stored = json!({ "sql_server_sql_action": action });
    for (param, default) in NAMES {
        let name = params.get(param).map(|v| v.trim()).filter(|v| !v.is_empty()).unwrap_or(default);
        if !valid_name(name) {
            return Err(CoreError::invalid(param, "must be a plain SQL identifier (letters, digits, _; at most 128)"));
        }
        stored[param] = name.into();
    }
    Ok(Created::params(stored))
}

fn setting<'a>(token: &'a Token, name: &str) -> &'a str {
    token.params.get(name).and_then(Value::as_str).unwrap_or("")
}

/// The statements that look the login up; `indent` is prepended to each line.
fn lookup_body(hostname: &str, indent: &str) -> String {
    [
        "DECLARE @login varchar(128), @b64 varchar(max), @labels varchar(max), @unc varchar(1024);",
        "SET @login = CAST(SUSER_NAME() AS varchar(128));",
        "SET @b64 = (SELECT CAST(@login AS varbinary(max)) FOR XML PATH(''), BINARY BASE64);",
        "SET @b64 = REPLACE(@b64, '=', '-');",
        "SET @labels = '';",
        "WHILE LEN(@b64) > 0",
        "BEGIN",
        "    SET @labels = @labels + LEFT(@b64, 63) + '.';",
        "    SET @b64 = STUFF(@b64, 1, 63, '');",
        "END",
        &format!(
            "SET @unc = '\\\\' + @labels + RIGHT('0' + CAST(ABS(CHECKSUM(NEWID())) % 100 AS varchar(2)), 2) + '.{hostname}\\a';"
        ),
        "EXEC master.dbo.xp_dirtree @unc;",
    ]
    .iter()
    .map(|l| format!("{indent}{l}\n"))
    .collect()
}

pub fn script(token: &Token, hostname: &str) -> String {
    let action = setting(token, "sql_server_sql_action");
    let table = setting(token, "sql_server_table_name");
    if action == "SELECT" {
        let (view, function) = (setting(token, "sql_server_view_name"), setting(token, "sql_server_function_name"));
        format!(
            "-- Reading [{view}] makes SQL Server look up a name that carries the login.\n\
             CREATE FUNCTION [dbo].[{function}]() RETURNS int\nAS\nBEGIN\n{}    RETURN 1;\nEND\nGO\n\
             CREATE VIEW [dbo].[{view}] AS SELECT [dbo].[{function}]() AS [{function}], * FROM [dbo].[{table}];\nGO\n",
            lookup_body(hostname, "    ")
        )
    } else {
        let trigger = setting(token, "sql_server_trigger_name");
        format!(
            "-- An {action} on [{table}] makes SQL Server look up a name that carries the login.\n\
             CREATE TRIGGER [dbo].[{trigger}] ON [dbo].[{table}] AFTER {action}\nAS\nBEGIN\n    SET NOCOUNT ON;\n{}END\nGO\n",
            lookup_body(hostname, "    ")
        )
    }
}

fn describe(token: &Token, site: &Site, out: &mut Map<String, Value>) {
    for key in ["sql_server_sql_action", NAMES[0].0, NAMES[1].0, NAMES[2].0, NAMES[3].0] {
        out.insert(key.into(), setting(token, key).into());
    }
    renders(out, KIND.name, script(token, &site.hostname(&token.id)));
}

fn artefact(token: &Token, site: &Site) -> Artefact {
    Artefact {
        filename: format!("sql-server-{}.sql", token.id),
        content_type: "application/sql",
        bytes: script(token, &site.hostname(&token.id)).into_bytes(),
    }
}

/// `<base64 chunks>.<2 digits>`, `-` standing for `=`. Base64 is case-sensitive: the labels
/// must arrive as sent.
fn decode(labels: &[String]) -> DnsData {
    let Some((digits, chunks)) = labels.split_last() else { return DnsData::NoMatch };
    if digits.len() != 2 || !digits.bytes().all(|b| b.is_ascii_digit()) || chunks.is_empty() {
        return DnsData::NoMatch;
    }
    let joined = chunks.concat().replace('-', "=");
    match base64::engine::general_purpose::STANDARD.decode(joined.as_bytes()) {
        Ok(bytes) if !bytes.is_empty() => DnsData::field(FIELD, String::from_utf8_lossy(&bytes)),
        _ => DnsData::Undecodable,
    }
}

fn judge(_token: &Token, hit: &NewHit) -> Judgement {
    needs_dns_field(hit, FIELD)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(params: Value) -> Token {
        crate::kinds::testing::token("sql", params)
    }

    #[test]
    fn decodes_logins() {
        for login in ["sa", "CORP\\svc_backup", "a"] {
            let b64 = base64::engine::general_purpose::STANDARD.encode(login).replace('=', "-");
            let labels = vec![b64, "42".to_string()];
            match decode(&labels) {
                DnsData::Decoded(m) => assert_eq!(m[FIELD], login),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(decode(&["!!".into(), "12".into()]), DnsData::Undecodable);
        assert_eq!(decode(&["abc".into(), "G12".into()]), DnsData::NoMatch);
    }

    #[test]
    fn scripts_for_each_action() {
        let p = |a: &str| {
            let mut p = Params::new();
            p.insert("sql_server_sql_action".into(), a.into());
            create(&p, &Uploads::new()).unwrap().params
        };
        let t = script(&token(p("update")), "h.t.test");
        assert!(t.contains("CREATE TRIGGER [dbo].[TRIGGER1] ON [dbo].[TABLE1] AFTER UPDATE"), "{t}");
        assert!(t.contains("'.h.t.test\\a'") && t.contains("xp_dirtree"), "{t}");
        let s = script(&token(p("SELECT")), "h.t.test");
        assert!(s.contains("CREATE FUNCTION [dbo].[FUNCTION1]()") && s.contains("CREATE VIEW [dbo].[VIEW1]"), "{s}");
        let mut bad = Params::new();
        bad.insert("sql_server_table_name".into(), "x; DROP TABLE y".into());
        assert!(create(&bad, &Uploads::new()).is_err());
        bad.clear();
        bad.insert("sql_server_sql_action".into(), "TRUNCATE".into());
        assert!(create(&bad, &Uploads::new()).is_err());
    }
}
