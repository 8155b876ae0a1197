//! Kind `sql` (SQL Server): T-SQL that installs a trigger (on INSERT, UPDATE or DELETE) or a
//! view over a function (on SELECT). Either, when fired, makes SQL Server resolve a UNC path
//! whose labels carry the base64 of the SQL login (`=` written as `-`, chunks of at most 63)
//! followed by two random digits and the token hostname.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{
    needs_dns_field, params, Artefact, CreateRequest, Created, DnsData, DnsDecoding, Kind, KindContext, KindView,
    ViewContext,
};
use crate::error::{CoreError, CoreResult};
use crate::model::{Channel, Judgement, NewHit, Token};

pub struct Sql;

const FIELD: &str = "sql_username";

/// The stored settings: what fires the script, and the names of the objects it makes.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SqlParams {
    /// INSERT, UPDATE, DELETE (a trigger) or SELECT (a view over a function).
    pub sql_server_sql_action: String,
    pub sql_server_table_name: String,
    pub sql_server_view_name: String,
    pub sql_server_function_name: String,
    pub sql_server_trigger_name: String,
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 128
        && (n.as_bytes()[0].is_ascii_alphabetic() || n.as_bytes()[0] == b'_')
        && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[async_trait::async_trait]
impl Kind for Sql {
    fn name(&self) -> &'static str {
        "sql"
    }

    fn human_name(&self) -> &'static str {
        "SQL Server"
    }

    fn channel(&self) -> Channel {
        Channel::Dns
    }

    async fn create(&self, req: &CreateRequest<'_>, _cx: &KindContext) -> CoreResult<Created> {
        let action = req.params.get("sql_server_sql_action").map(|a| a.trim().to_ascii_uppercase());
        let action = match action.as_deref() {
            None | Some("") => "INSERT".to_string(),
            Some(a @ ("INSERT" | "UPDATE" | "DELETE" | "SELECT")) => a.to_string(),
            Some(_) => {
                return Err(CoreError::invalid("sql_server_sql_action", "must be INSERT, UPDATE, DELETE or SELECT"))
            }
        };
        // An object name, or its default; a plain identifier either way.
        let name = |param: &'static str, default: &'static str| {
            let name = req.params.get(param).map(|v| v.trim()).filter(|v| !v.is_empty()).unwrap_or(default);
            if !valid_name(name) {
                return Err(CoreError::invalid(
                    param,
                    "must be a plain SQL identifier (letters, digits, _; at most 128)",
                ));
            }
            Ok(name.to_string())
        };
        Created::with(&SqlParams {
            sql_server_sql_action: action,
            sql_server_table_name: name("sql_server_table_name", "TABLE1")?,
            sql_server_view_name: name("sql_server_view_name", "VIEW1")?,
            sql_server_function_name: name("sql_server_function_name", "FUNCTION1")?,
            sql_server_trigger_name: name("sql_server_trigger_name", "TRIGGER1")?,
        })
    }

    fn view(&self, token: &Token, cx: &ViewContext<'_>) -> KindView {
        let site = cx.site;
        let p: SqlParams = params(token);
        let text = script(&p, &site.hostname(&token.id));
        KindView::default()
            .field("sql_server_sql_action", p.sql_server_sql_action)
            .field("sql_server_table_name", p.sql_server_table_name)
            .field("sql_server_view_name", p.sql_server_view_name)
            .field("sql_server_function_name", p.sql_server_function_name)
            .field("sql_server_trigger_name", p.sql_server_trigger_name)
            .render(self.name(), text)
    }

    fn artefact(&self, token: &Token, cx: &ViewContext<'_>) -> Option<Artefact> {
        let site = cx.site;
        Some(Artefact {
            filename: format!("sql-server-{}.sql", token.id),
            content_type: "application/sql",
            bytes: script(&params(token), &site.hostname(&token.id)).into_bytes(),
        })
    }

    fn judge(&self, _token: &Token, hit: &NewHit) -> Judgement {
        needs_dns_field(hit, FIELD)
    }

    fn dns(&self) -> Option<&dyn DnsDecoding> {
        Some(self)
    }
}

impl DnsDecoding for Sql {
    fn rank(&self) -> u8 {
        7
    }

    fn decode(&self, labels: &[String]) -> DnsData {
        decode(labels)
    }
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

/// The T-SQL for these settings.
pub fn script(p: &SqlParams, hostname: &str) -> String {
    let (action, table) = (&p.sql_server_sql_action, &p.sql_server_table_name);
    if action == "SELECT" {
        let (view, function) = (&p.sql_server_view_name, &p.sql_server_function_name);
        format!(
            "-- Reading [{view}] makes SQL Server look up a name that carries the login.\n\
             CREATE FUNCTION [dbo].[{function}]() RETURNS int\nAS\nBEGIN\n{}    RETURN 1;\nEND\nGO\n\
             CREATE VIEW [dbo].[{view}] AS SELECT [dbo].[{function}]() AS [{function}], * FROM [dbo].[{table}];\nGO\n",
            lookup_body(hostname, "    ")
        )
    } else {
        let trigger = &p.sql_server_trigger_name;
        format!(
            "-- An {action} on [{table}] makes SQL Server look up a name that carries the login.\n\
             CREATE TRIGGER [dbo].[{trigger}] ON [dbo].[{table}] AFTER {action}\nAS\nBEGIN\n    SET NOCOUNT ON;\n{}END\nGO\n",
            lookup_body(hostname, "    ")
        )
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[tokio::test]
    async fn scripts_for_each_action() {
        use crate::kinds::testing::create;
        let p = |v: serde_json::Value| -> SqlParams { serde_json::from_value(v).unwrap() };
        let stored = p(create(&Sql, &[("sql_server_sql_action", "update")]).await.unwrap());
        let t = script(&stored, "h.t.test");
        assert!(t.contains("CREATE TRIGGER [dbo].[TRIGGER1] ON [dbo].[TABLE1] AFTER UPDATE"), "{t}");
        assert!(t.contains("'.h.t.test\\a'") && t.contains("xp_dirtree"), "{t}");
        let stored = p(create(&Sql, &[("sql_server_sql_action", "SELECT")]).await.unwrap());
        let s = script(&stored, "h.t.test");
        assert!(s.contains("CREATE FUNCTION [dbo].[FUNCTION1]()") && s.contains("CREATE VIEW [dbo].[VIEW1]"), "{s}");
        assert!(create(&Sql, &[("sql_server_table_name", "x; DROP TABLE y")]).await.is_err());
        assert!(create(&Sql, &[("sql_server_sql_action", "TRUNCATE")]).await.is_err());
    }

    #[tokio::test]
    async fn defaults_are_stored_and_shown_in_order() {
        use crate::kinds::testing;
        let stored = testing::create(&Sql, &[]).await.unwrap();
        let expected = serde_json::json!({
            "sql_server_sql_action": "INSERT",
            "sql_server_table_name": "TABLE1",
            "sql_server_view_name": "VIEW1",
            "sql_server_function_name": "FUNCTION1",
            "sql_server_trigger_name": "TRIGGER1",
        });
        assert_eq!(stored, expected);
        let (site, token) = (testing::site(), testing::token("sql", stored));
        let view = Sql.view(&token, &crate::kinds::testing::vcx(&site));
        let names: Vec<_> = view.fields.iter().map(|(n, _)| *n).collect();
        assert_eq!(names[0], "sql_server_sql_action");
        assert_eq!(names.len(), 5);
        assert!(view.fields.iter().all(|(n, v)| expected[n] == *v));
        assert_eq!(view.renders, vec![("sql", script(&params(&token), &site.hostname(&token.id)))]);
        assert_eq!(
            Sql.artefact(&token, &crate::kinds::testing::vcx(&site)).unwrap().bytes,
            view.renders[0].1.as_bytes()
        );
    }
}
