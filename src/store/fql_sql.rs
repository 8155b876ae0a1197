//! Compiling FQL expression trees ([`crate::fql`]) into SQL WHERE clauses for both engines.
//!
//! Text matching with `*` wildcards and with `~` is case-insensitive (on both engines); plain
//! `:` comparisons are exact. `field:*` (has a value) is NOT NULL and, for text, not empty;
//! `field:!*` is the opposite. Every value becomes a bind parameter; field names map, through a
//! fixed table per entity, to column expressions written here. So a filter can select rows but
//! never change the statement. A field or value the entity cannot use is an [`FqlError`] naming
//! its position.

use super::args::{Arg, Args};
use crate::fql::{parse_time, Expr, FqlError, Op, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    /// Microseconds since the epoch; FQL values are times (`'2021-09-22T02:28:11Z'`, `'now-7d'`).
    Time,
    Int,
}

/// One filterable (and sortable) field: its FQL name and its SQL expression.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    pub name: &'static str,
    pub sql: &'static str,
    pub kind: Kind,
}

/// A token's status as Falcon reports it; `$NOW` is replaced by a bind parameter.
pub const FACTORY_STATUS: &str = "(CASE WHEN revoked_us IS NOT NULL THEN 'revoked' \
     WHEN expires_us IS NOT NULL AND expires_us <= $NOW THEN 'expired' ELSE 'valid' END)";

/// Falcon installation-token fields over `factory_tokens`.
pub const FACTORY_FIELDS: &[Field] = &[
    Field { name: "id", sql: "id", kind: Kind::Text },
    Field { name: "label", sql: "label", kind: Kind::Text },
    Field { name: "status", sql: FACTORY_STATUS, kind: Kind::Text },
    Field { name: "type", sql: "'customer_managed'", kind: Kind::Text },
    Field { name: "created_timestamp", sql: "created_us", kind: Kind::Time },
    Field { name: "expires_timestamp", sql: "expires_us", kind: Kind::Time },
    Field { name: "last_used_timestamp", sql: "last_used_us", kind: Kind::Time },
    Field { name: "revoked_timestamp", sql: "revoked_us", kind: Kind::Time },
];

/// The Falcon name of each factory-token audit action.
pub const AUDIT_ACTION: &str = "(CASE action WHEN 'factory_create' THEN 'token_create' \
     WHEN 'factory_update' THEN 'token_update' WHEN 'factory_revoke' THEN 'token_revoke' \
     WHEN 'factory_restore' THEN 'token_restore' WHEN 'factory_delete' THEN 'token_delete' END)";

/// Falcon audit-event fields over `audit_log` (factory-token actions only).
pub const AUDIT_FIELDS: &[Field] = &[
    Field { name: "id", sql: "id", kind: Kind::Int },
    Field { name: "token_id", sql: "target", kind: Kind::Text },
    Field { name: "action", sql: AUDIT_ACTION, kind: Kind::Text },
    Field { name: "actor", sql: "actor", kind: Kind::Text },
    Field { name: "description", sql: "description", kind: Kind::Text },
    Field { name: "timestamp", sql: "time_us", kind: Kind::Time },
];

/// A field's SQL with `$NOW` bound.
pub(super) fn field_sql(f: &Field, args: &mut Args, now_us: i64) -> String {
    if f.sql.contains("$NOW") {
        f.sql.replace("$NOW", &args.push(Arg::I(now_us)))
    } else {
        f.sql.to_string()
    }
}

pub fn find<'a>(fields: &'a [Field], name: &str) -> Option<&'a Field> {
    fields.iter().find(|f| f.name == name)
}

/// `expr` as SQL over `fields`, values bound into `args`.
pub fn compile(expr: &Expr, fields: &[Field], args: &mut Args, now_us: i64) -> Result<String, FqlError> {
    Ok(match expr {
        Expr::And(parts) => {
            let sql: Result<Vec<_>, _> = parts.iter().map(|p| compile(p, fields, args, now_us)).collect();
            format!("({})", sql?.join(" AND "))
        }
        Expr::Or(parts) => {
            let sql: Result<Vec<_>, _> = parts.iter().map(|p| compile(p, fields, args, now_us)).collect();
            format!("({})", sql?.join(" OR "))
        }
        Expr::Cmp { field, op, value, position } => {
            let f = known(fields, field, *position)?;
            let col = field_sql(f, args, now_us);
            comparison(f, &col, *op, value, *position, args, now_us)?
        }
        Expr::Present { field, present, position } => {
            let f = known(fields, field, *position)?;
            let col = field_sql(f, args, now_us);
            match (f.kind, present) {
                (Kind::Text, true) => format!("({col} IS NOT NULL AND {col} <> {})", args.push(Arg::S(String::new()))),
                (Kind::Text, false) => format!("({col} IS NULL OR {col} = {})", args.push(Arg::S(String::new()))),
                (_, true) => format!("{col} IS NOT NULL"),
                (_, false) => format!("{col} IS NULL"),
            }
        }
    })
}

fn known<'a>(fields: &'a [Field], name: &str, position: usize) -> Result<&'a Field, FqlError> {
    find(fields, name).ok_or_else(|| FqlError {
        position,
        message: format!(
            "unknown field {name:?} (known: {})",
            fields.iter().map(|f| f.name).collect::<Vec<_>>().join(", ")
        ),
    })
}

fn like_pattern(text: &str, contains: bool) -> String {
    let escaped = text.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_").replace('*', "%");
    if contains {
        format!("%{escaped}%")
    } else {
        escaped
    }
}

fn comparison(
    f: &Field,
    col: &str,
    op: Op,
    value: &Value,
    position: usize,
    args: &mut Args,
    now_us: i64,
) -> Result<String, FqlError> {
    let err = |message: String| FqlError { position, message };
    match value {
        Value::List(items) => {
            let sql: Result<Vec<_>, _> =
                items.iter().map(|v| comparison(f, col, Op::Eq, v, position, args, now_us)).collect();
            let any = format!("({})", sql?.join(" OR "));
            return Ok(if op == Op::Ne { format!("(NOT {any} OR {col} IS NULL)") } else { any });
        }
        Value::Null => {
            return match op {
                Op::Eq => Ok(format!("{col} IS NULL")),
                Op::Ne => Ok(format!("{col} IS NOT NULL")),
                _ => Err(err("null only goes with ':' or ':!'".into())),
            }
        }
        _ => {}
    }
    let bound = match f.kind {
        Kind::Text => {
            let text = match value {
                Value::Text(t) => t.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => unreachable!("lists and null are handled above"),
            };
            match op {
                Op::Like | Op::NotLike => {
                    let p = args.push(Arg::S(like_pattern(&text.to_lowercase(), true)));
                    let cond = format!("LOWER({col}) LIKE {p} ESCAPE '\\'");
                    return Ok(if op == Op::Like { cond } else { format!("({col} IS NULL OR NOT {cond})") });
                }
                Op::Eq | Op::Ne if text.contains('*') => {
                    // Both sides lowered: SQLite's LIKE ignores ASCII case and PostgreSQL's
                    // does not, so only this reads the same on both.
                    let p = args.push(Arg::S(like_pattern(&text.to_lowercase(), false)));
                    let cond = format!("LOWER({col}) LIKE {p} ESCAPE '\\'");
                    return Ok(if op == Op::Eq { cond } else { format!("({col} IS NULL OR NOT {cond})") });
                }
                _ => args.push(Arg::S(text)),
            }
        }
        Kind::Time => {
            let us = match value {
                Value::Text(t) => parse_time(t, now_us).ok_or_else(|| err(format!("{t:?} is not a time")))?,
                Value::Number(n) => (*n as i64).saturating_mul(1_000_000),
                _ => return Err(err(format!("{} takes a time", f.name))),
            };
            if matches!(op, Op::Like | Op::NotLike) {
                return Err(err(format!("{} is a time: use :, :!, :>, :>=, :<, :<=", f.name)));
            }
            args.push(Arg::I(us))
        }
        Kind::Int => {
            let n = match value {
                Value::Number(n) if n.fract() == 0.0 => *n as i64,
                Value::Text(t) => {
                    t.trim().parse::<i64>().map_err(|_| err(format!("{} takes a whole number", f.name)))?
                }
                _ => return Err(err(format!("{} takes a whole number", f.name))),
            };
            if matches!(op, Op::Like | Op::NotLike) {
                return Err(err(format!("{} is a number: use :, :!, :>, :>=, :<, :<=", f.name)));
            }
            args.push(Arg::I(n))
        }
    };
    Ok(match op {
        Op::Eq => format!("{col} = {bound}"),
        Op::Ne => format!("({col} IS NULL OR {col} <> {bound})"),
        Op::Gt => format!("{col} > {bound}"),
        Op::Ge => format!("{col} >= {bound}"),
        Op::Lt => format!("{col} < {bound}"),
        Op::Le => format!("{col} <= {bound}"),
        Op::Like | Op::NotLike => unreachable!("handled per kind above"),
    })
}

/// `field.asc`, `field.desc`, `field|asc` or `field` (ascending) → ORDER BY text.
pub fn order_by(sort: &str, fields: &[Field], args: &mut Args, now_us: i64) -> Result<String, FqlError> {
    let s = sort.trim();
    let (name, dir) = match s.rsplit_once(['.', '|']) {
        Some((n, d)) if d.eq_ignore_ascii_case("asc") || d.eq_ignore_ascii_case("desc") => (n, d.to_ascii_uppercase()),
        _ => (s, "ASC".to_string()),
    };
    let f = find(fields, name).ok_or_else(|| FqlError { position: 0, message: format!("cannot sort by {name:?}") })?;
    Ok(format!("{} {dir}", field_sql(f, args, now_us)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fql::parse;

    const NOW: i64 = 1_700_000_000_000_000;

    /// `filter` compiled over `fields`: (SQL, how many values it binds).
    fn compiled(fields: &[Field], filter: &str) -> Result<(String, usize), FqlError> {
        let mut args = Args::default();
        let sql = compile(&parse(filter).unwrap(), fields, &mut args, NOW)?;
        // The next placeholder's number tells how many were handed out.
        let next = args.push(Arg::I(0));
        Ok((sql, next.trim_start_matches('$').parse::<usize>().unwrap() - 1))
    }

    fn token_sql(filter: &str) -> (String, usize) {
        compiled(FACTORY_FIELDS, filter).unwrap_or_else(|e| panic!("{filter}: {e}"))
    }

    #[test]
    fn has_a_value_and_has_none() {
        // Text: not null and not empty (the empty text is bound too).
        assert_eq!(token_sql("label:*"), ("(label IS NOT NULL AND label <> $1)".into(), 1));
        assert_eq!(token_sql("label:!*"), ("(label IS NULL OR label = $1)".into(), 1));
        // Times and numbers: null checks only.
        assert_eq!(token_sql("expires_timestamp:*"), ("expires_us IS NOT NULL".into(), 0));
        assert_eq!(token_sql("expires_timestamp:!*"), ("expires_us IS NULL".into(), 0));
        assert_eq!(
            token_sql("revoked_timestamp:!*+last_used_timestamp:*"),
            ("(revoked_us IS NULL AND last_used_us IS NOT NULL)".into(), 0)
        );
        assert_eq!(compiled(AUDIT_FIELDS, "id:*").unwrap(), ("id IS NOT NULL".into(), 0));
        assert_eq!(compiled(AUDIT_FIELDS, "timestamp:!*").unwrap(), ("time_us IS NULL".into(), 0));
        // A computed field: its $NOW is bound once, then the empty text.
        let (sql, bound) = token_sql("status:*");
        assert_eq!(bound, 2, "{sql}");
        assert!(sql.starts_with("((CASE WHEN") && sql.ends_with("<> $2)"), "{sql}");
        assert!(!sql.contains("$NOW"), "{sql}");
        // Mixed with other terms, the placeholders keep counting.
        assert_eq!(
            token_sql("label:*+label:'x',label:!*"),
            ("(((label IS NOT NULL AND label <> $1) AND label = $2) OR (label IS NULL OR label = $3))".into(), 3)
        );
    }

    #[test]
    fn wildcard_operator_compiles_like_plain_equality() {
        for (with, without) in [
            ("label:*'batch*'", "label:'batch*'"),
            ("label:!*'batch*'", "label:!'batch*'"),
            ("label:*'exact'", "label:'exact'"),
            ("label:*5", "label:'5'"),
            ("status:*['valid','expired']", "status:['valid','expired']"),
            ("created_timestamp:*'2021-09-22T02:28:11Z'", "created_timestamp:'2021-09-22T02:28:11Z'"),
        ] {
            assert_eq!(token_sql(with), token_sql(without), "{with}");
        }
        assert_eq!(token_sql("label:*'batch*'"), ("LOWER(label) LIKE $1 ESCAPE '\\'".into(), 1));
        assert_eq!(token_sql("label:*5"), ("label = $1".into(), 1));
    }

    #[test]
    fn values_are_always_bound() {
        for filter in
            ["label:*'x\\' OR 1=1 --*'", "label:!*'x\\' OR 1=1 --'", "label:*'%_x\\' OR 1=1'", "id:*'1=1',label:!*"]
        {
            let (sql, bound) = token_sql(filter);
            assert!(!sql.contains("1=1") && !sql.contains("--") && !sql.contains('%'), "{filter}: {sql}");
            assert!(bound >= 1, "{filter}: {sql}");
        }
    }

    #[test]
    fn errors_name_the_position() {
        for (fields, filter, position, needle) in [
            (FACTORY_FIELDS, "nosuch:*", 0, "unknown field"),
            (FACTORY_FIELDS, "label:*+nosuch:!*", 8, "unknown field"),
            (FACTORY_FIELDS, "created_timestamp:*'2021*'", 0, "is not a time"),
            (FACTORY_FIELDS, "label:*'a'+expires_timestamp:!*'soon'", 11, "is not a time"),
            (AUDIT_FIELDS, "id:*'x'", 0, "whole number"),
            (AUDIT_FIELDS, "timestamp:*+id:!*'1.5'", 12, "whole number"),
        ] {
            let e = compiled(fields, filter).unwrap_err();
            assert_eq!(e.position, position, "{filter}: {e}");
            assert!(e.message.contains(needle), "{filter}: {e}");
        }
    }
}
