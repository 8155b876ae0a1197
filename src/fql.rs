//! Falcon Query Language (FQL) filters: parsing into an expression tree.
//!
//! Written here because no crate parses FQL. The grammar, as Falcon's APIs use it:
//!
//! ```text
//! filter     := or
//! or         := and ( ',' and )*          -- ',' is OR
//! and        := unit ( '+' unit )*        -- '+' is AND
//! unit       := '(' or ')' | comparison
//! comparison := field ':' op? value
//!             | field ':' '!'? '*'        -- has a value / has none
//! op         := '!' | '>' | '>=' | '<' | '<=' | '~' | '!~' | '*' | '!*'
//! value      := 'quoted' | "quoted" | '[' value (',' value)* ']' | null | true | false | number | word
//! ```
//!
//! `*` and `!*` directly before a value are the wildcard operator as Falcon's own examples write
//! it (`label:*'batch*'`): the same as `:` and `:!`, the wildcards being in the value. With no
//! value after them, `field:*` means the field has a value (not null and, for text, not empty)
//! and `field:!*` that it has none.
//!
//! Quoted text may hold `*` wildcards; `\` escapes a quote. Times are written as text
//! (`'2021-09-22T02:28:11Z'`) or relative (`'now-7d'`, units s m h d w). Every error names the
//! character position where parsing stopped. The store compiles the tree into parameterised
//! SQL (`store::fql_sql`), so no filter text ever reaches a statement.

use std::fmt;

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    /// Case-insensitive "contains" (text).
    Like,
    NotLike,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Text(String),
    Number(f64),
    Bool(bool),
    Null,
    /// `[a, b]`: any of (with `!`: none of).
    List(Vec<Value>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Vec<Expr>),
    Or(Vec<Expr>),
    Cmp {
        field: String,
        op: Op,
        value: Value,
        position: usize,
    },
    /// `field:*` (`present`) or `field:!*`: the field has a value / has none.
    Present {
        field: String,
        present: bool,
        position: usize,
    },
}

/// A filter that does not parse (or names a field or value the query cannot use).
#[derive(Debug, Clone, PartialEq)]
pub struct FqlError {
    /// Character offset (0-based) in the filter.
    pub position: usize,
    pub message: String,
}

impl std::error::Error for FqlError {}

impl fmt::Display for FqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid filter at position {}: {}", self.position, self.message)
    }
}

/// Longest filter accepted, in characters.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting of parentheses accepted.
const MAX_DEPTH: usize = 32;
/// Most comparisons in one filter, each value of a list counting as one. Each becomes a term
/// of an SQL condition, and SQLite refuses conditions nested deeper than 1000.
pub const MAX_TERMS: usize = 256;

struct Parser {
    chars: Vec<char>,
    pos: usize,
    depth: usize,
    terms: usize,
}

pub fn parse(filter: &str) -> Result<Expr, FqlError> {
    if filter.chars().count() > MAX_LEN {
        return Err(FqlError { position: MAX_LEN, message: format!("the filter is longer than {MAX_LEN} characters") });
    }
    let mut p = Parser { chars: filter.chars().collect(), pos: 0, depth: 0, terms: 0 };
    p.skip_ws();
    if p.at_end() {
        return Err(p.error("the filter is empty"));
    }
    let e = p.or()?;
    p.skip_ws();
    if !p.at_end() {
        return Err(p.error(&format!("unexpected {:?}", p.chars[p.pos])));
    }
    Ok(e)
}

impl Parser {
    fn error(&self, message: &str) -> FqlError {
        FqlError { position: self.pos, message: message.to_string() }
    }
    fn at_end(&self) -> bool {
        self.pos >= self.chars.len()
    }
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }
    fn eat(&mut self, c: char) -> bool {
        self.skip_ws();
        if self.peek() == Some(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn or(&mut self) -> Result<Expr, FqlError> {
        let mut parts = vec![self.and()?];
        while self.eat(',') {
            parts.push(self.and()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Expr::Or(parts) })
    }

    fn and(&mut self) -> Result<Expr, FqlError> {
        let mut parts = vec![self.unit()?];
        while self.eat('+') {
            parts.push(self.unit()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Expr::And(parts) })
    }

    fn unit(&mut self) -> Result<Expr, FqlError> {
        self.skip_ws();
        if self.eat('(') {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(self.error("parentheses nest too deep"));
            }
            let e = self.or()?;
            if !self.eat(')') {
                return Err(self.error("expected ')'"));
            }
            self.depth -= 1;
            return Ok(e);
        }
        self.comparison()
    }

    /// Counts one more comparison; refuses past [`MAX_TERMS`].
    fn count_term(&mut self, position: usize) -> Result<(), FqlError> {
        self.terms += 1;
        if self.terms > MAX_TERMS {
            return Err(FqlError {
                position,
                message: format!("the filter has more than {MAX_TERMS} comparisons (each value of a list counts)"),
            });
        }
        Ok(())
    }

    fn comparison(&mut self) -> Result<Expr, FqlError> {
        self.skip_ws();
        let position = self.pos;
        self.count_term(position)?;
        let start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(self.error("expected a field name"));
        }
        let field: String = self.chars[start..self.pos].iter().collect();
        if !self.eat(':') {
            return Err(self.error("expected ':' after the field name"));
        }
        if let Some(present) = self.presence() {
            return Ok(Expr::Present { field, present, position });
        }
        let op = self.op();
        let value = self.value()?;
        if matches!(value, Value::List(_)) && !matches!(op, Op::Eq | Op::Ne) {
            return Err(FqlError { position, message: "a list only goes with ':' or ':!'".into() });
        }
        Ok(Expr::Cmp { field, op, value, position })
    }

    /// `*` or `!*` not followed by a value (`field:*`, `field:!*`): Some(has a value).
    /// Otherwise nothing is consumed: `field:*'x*'` is the wildcard operator, read by
    /// [`Parser::op`].
    fn presence(&mut self) -> Option<bool> {
        let (present, len) = match (self.peek(), self.chars.get(self.pos + 1)) {
            (Some('*'), _) => (true, 1),
            (Some('!'), Some('*')) => (false, 2),
            _ => return None,
        };
        if self.chars.get(self.pos + len).is_some_and(|&c| matches!(c, '\'' | '"' | '[') || word_char(c)) {
            return None;
        }
        self.pos += len;
        Some(present)
    }

    fn op(&mut self) -> Op {
        let two: String = self.chars[self.pos..self.chars.len().min(self.pos + 2)].iter().collect();
        let (op, len) = match two.as_str() {
            ">=" => (Op::Ge, 2),
            "<=" => (Op::Le, 2),
            "!~" => (Op::NotLike, 2),
            // The wildcard operator: the same as ':' and ':!' (the wildcards are in the value).
            "!*" => (Op::Ne, 2),
            _ => match self.peek() {
                Some('*') => (Op::Eq, 1),
                Some('!') => (Op::Ne, 1),
                Some('>') => (Op::Gt, 1),
                Some('<') => (Op::Lt, 1),
                Some('~') => (Op::Like, 1),
                _ => (Op::Eq, 0),
            },
        };
        self.pos += len;
        op
    }

    fn value(&mut self) -> Result<Value, FqlError> {
        self.skip_ws();
        match self.peek() {
            None => Err(self.error("expected a value")),
            Some('[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    let item = self.pos;
                    if !items.is_empty() {
                        self.count_term(item)?; // the first is the comparison's own
                    }
                    let v = self.value()?;
                    if matches!(v, Value::List(_)) {
                        return Err(FqlError { position: item, message: "lists do not nest".into() });
                    }
                    items.push(v);
                    if self.eat(',') {
                        continue;
                    }
                    if self.eat(']') {
                        return Ok(Value::List(items));
                    }
                    return Err(self.error("expected ',' or ']' in the list"));
                }
            }
            Some(q @ ('\'' | '"')) => {
                self.pos += 1;
                let mut text = String::new();
                loop {
                    match self.peek() {
                        None => return Err(self.error("unterminated quoted value")),
                        Some('\\') if self.chars.get(self.pos + 1).is_some() => {
                            text.push(self.chars[self.pos + 1]);
                            self.pos += 2;
                        }
                        Some(c) if c == q => {
                            self.pos += 1;
                            return Ok(Value::Text(text));
                        }
                        Some(c) => {
                            text.push(c);
                            self.pos += 1;
                        }
                    }
                }
            }
            Some(_) => {
                let start = self.pos;
                while self.peek().is_some_and(word_char) {
                    self.pos += 1;
                }
                if self.pos == start {
                    return Err(self.error("expected a value"));
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                Ok(match word.to_ascii_lowercase().as_str() {
                    "null" => Value::Null,
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => match word.parse::<f64>() {
                        Ok(n) if n.is_finite() => Value::Number(n),
                        _ => Value::Text(word),
                    },
                })
            }
        }
    }
}

/// A character of an unquoted value (a number, a word, an unquoted time).
fn word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | ':')
}

/// A time value: RFC 3339 text, a date, `now`, or `now-<n><unit>` / `now+<n><unit>`
/// (units s, m, h, d, w). Returns microseconds since the epoch.
pub fn parse_time(text: &str, now_us: i64) -> Option<i64> {
    let t = text.trim();
    if let Ok(d) = chrono::DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_micros());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
        return d.and_hms_opt(0, 0, 0).map(|dt| dt.and_utc().timestamp_micros());
    }
    let rest = t.strip_prefix("now")?;
    if rest.is_empty() {
        return Some(now_us);
    }
    let (sign, amount) = match rest.chars().next()? {
        '-' => (-1, &rest[1..]),
        '+' => (1, &rest[1..]),
        _ => return None,
    };
    let unit = amount.chars().last()?;
    let n: i64 = amount[..amount.len() - unit.len_utf8()].parse().ok()?;
    let secs = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    now_us.checked_add(sign * n.checked_mul(secs)?.checked_mul(1_000_000)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmp(field: &str, op: Op, value: Value, position: usize) -> Expr {
        Expr::Cmp { field: field.into(), op, value, position }
    }

    #[test]
    fn operators_and_values() {
        assert_eq!(parse("label:'a*b'").unwrap(), cmp("label", Op::Eq, Value::Text("a*b".into()), 0));
        assert_eq!(parse("status:!'revoked'").unwrap(), cmp("status", Op::Ne, Value::Text("revoked".into()), 0));
        assert_eq!(
            parse("created_timestamp:>='now-7d'").unwrap(),
            cmp("created_timestamp", Op::Ge, Value::Text("now-7d".into()), 0)
        );
        assert_eq!(parse("x:<=5").unwrap(), cmp("x", Op::Le, Value::Number(5.0), 0));
        assert_eq!(parse("x:>5").unwrap(), cmp("x", Op::Gt, Value::Number(5.0), 0));
        assert_eq!(parse("x:<5").unwrap(), cmp("x", Op::Lt, Value::Number(5.0), 0));
        assert_eq!(parse("label:~'Fleet'").unwrap(), cmp("label", Op::Like, Value::Text("Fleet".into()), 0));
        assert_eq!(parse("label:!~\"x\"").unwrap(), cmp("label", Op::NotLike, Value::Text("x".into()), 0));
        assert_eq!(parse("expires_timestamp:null").unwrap(), cmp("expires_timestamp", Op::Eq, Value::Null, 0));
        assert_eq!(parse("a:true").unwrap(), cmp("a", Op::Eq, Value::Bool(true), 0));
        assert_eq!(parse("label:'it\\'s'").unwrap(), cmp("label", Op::Eq, Value::Text("it's".into()), 0));
        assert_eq!(
            parse("status:['valid', 'expired']").unwrap(),
            cmp("status", Op::Eq, Value::List(vec![Value::Text("valid".into()), Value::Text("expired".into())]), 0)
        );
    }

    #[test]
    fn and_or_and_grouping() {
        let e = parse("a:1+b:2,c:3").unwrap();
        assert_eq!(
            e,
            Expr::Or(vec![
                Expr::And(vec![cmp("a", Op::Eq, Value::Number(1.0), 0), cmp("b", Op::Eq, Value::Number(2.0), 4)]),
                cmp("c", Op::Eq, Value::Number(3.0), 8),
            ])
        );
        let g = parse("a:1+(b:2,c:3)").unwrap();
        assert!(matches!(&g, Expr::And(v) if matches!(&v[1], Expr::Or(_))), "{g:?}");
        assert!(parse(" ( label:'x' ) + status:'valid' ").is_ok());
    }

    #[test]
    fn errors_name_the_position() {
        for (f, pos) in [
            ("", 0),
            ("label", 5),
            ("label:", 6),
            ("label:'open", 11),
            ("(label:'x'", 10),
            ("label:'x' status:'y'", 10),
            (":'x'", 0),
            ("a:[1,", 5),
            ("a:[1 2]", 5),
            ("a:>[1]", 0),
            ("a:[[1]]", 3),
        ] {
            let e = parse(f).unwrap_err();
            assert_eq!(e.position, pos, "{f:?}: {e}");
        }
        assert!(parse(&"(".repeat(40)).is_err());
        assert!(parse(&"a".repeat(MAX_LEN + 1)).is_err());
        // many comparisons, as a list or as plain terms (audit F11: SQLite refused them deep)
        let list = |n: usize| format!("id:[{}]", vec!["1"; n].join(","));
        let terms = |n: usize| vec!["id:1"; n].join(",");
        assert!(parse(&list(MAX_TERMS)).is_ok() && parse(&terms(MAX_TERMS)).is_ok());
        for f in [list(MAX_TERMS + 1), terms(MAX_TERMS + 1), format!("{}+{}", list(200), terms(57))] {
            let e = parse(&f).unwrap_err();
            assert!(e.message.contains("more than 256 comparisons"), "{e}");
        }
    }

    fn present(field: &str, present: bool, position: usize) -> Expr {
        Expr::Present { field: field.into(), present, position }
    }

    #[test]
    fn has_a_value_and_has_none() {
        assert_eq!(parse("label:*").unwrap(), present("label", true, 0));
        assert_eq!(parse("label:!*").unwrap(), present("label", false, 0));
        assert_eq!(parse(" label:*  ").unwrap(), present("label", true, 1));
        assert_eq!(parse("expires_timestamp:!*").unwrap(), present("expires_timestamp", false, 0));
        // Ends the term before '+', ',' and ')', with or without spaces.
        assert_eq!(
            parse("label:*+status:'valid'").unwrap(),
            Expr::And(vec![present("label", true, 0), cmp("status", Op::Eq, Value::Text("valid".into()), 8)])
        );
        assert_eq!(
            parse("label:!* , id:*").unwrap(),
            Expr::Or(vec![present("label", false, 0), present("id", true, 11)])
        );
        assert_eq!(
            parse("(label:!*)+revoked_timestamp:*").unwrap(),
            Expr::And(vec![present("label", false, 1), present("revoked_timestamp", true, 11)])
        );
    }

    #[test]
    fn wildcard_operator_is_plain_equality() {
        // `field:*'v'` is `field:'v'` and `field:!*'v'` is `field:!'v'`; the wildcards stay in v.
        for (with, without) in [
            ("label:*'batch*'", "label:'batch*'"),
            ("label:*\"*mid*\"", "label:'*mid*'"),
            ("label:!*'batch*'", "label:!'batch*'"),
            ("label:*5", "label:5"),
            ("label:*word", "label:word"),
            ("label:*null", "label:null"),
            ("status:*['valid','expired']", "status:['valid','expired']"),
            ("status:!*['revoked']", "status:!['revoked']"),
            ("label:*'a*'+status:*'valid'", "label:'a*'+status:'valid'"),
        ] {
            let (a, b) = (parse(with).unwrap(), parse(without).unwrap());
            // Same tree; only the positions of later terms may differ.
            match (&a, &b) {
                (Expr::Cmp { op: oa, value: va, .. }, Expr::Cmp { op: ob, value: vb, .. }) => {
                    assert_eq!((oa, va), (ob, vb), "{with}")
                }
                (Expr::And(x), Expr::And(y)) => assert_eq!(x.len(), y.len(), "{with}"),
                _ => panic!("{with}: {a:?} vs {b:?}"),
            }
        }
        assert_eq!(parse("label:*'batch*'").unwrap(), cmp("label", Op::Eq, Value::Text("batch*".into()), 0));
        assert_eq!(parse("label:!*'b*'").unwrap(), cmp("label", Op::Ne, Value::Text("b*".into()), 0));
        assert_eq!(parse("label:*5").unwrap(), cmp("label", Op::Eq, Value::Number(5.0), 0));
    }

    #[test]
    fn presence_and_wildcard_errors_name_the_position() {
        for (f, pos) in [
            ("label:*'", 8),         // unterminated quote after the wildcard operator
            ("label:!*'abc", 12),    // the same, negated
            ("label:**", 7),         // '*' is no value
            ("label:*!", 7),         // nor is '!'
            ("label:!**'x'", 8),     // '!*' then '*'
            ("label:*)", 7),         // ')' with no '(' open
            ("label:* status:*", 8), // two terms without '+' or ','
            ("label:* 'x'", 8),      // the wildcard operator touches its value
            ("label:*+", 8),         // '+' needs a right-hand side
            ("label:*,", 8),         // ',' too
            ("label:*[1", 9),        // unclosed list
            ("label:>*", 7),         // comparisons take no wildcard operator
            ("label: *", 7),         // no space between ':' and the operator
            ("(label:*", 8),
        ] {
            let e = parse(f).unwrap_err();
            assert_eq!(e.position, pos, "{f:?}: {e}");
        }
    }

    #[test]
    fn times() {
        let now = 1_700_000_000_000_000;
        assert_eq!(parse_time("now", now), Some(now));
        assert_eq!(parse_time("now-7d", now), Some(now - 7 * 86_400_000_000));
        assert_eq!(parse_time("now+1h", now), Some(now + 3_600_000_000));
        assert_eq!(parse_time("2021-09-22T02:28:11Z", now), Some(1_632_277_691_000_000));
        assert_eq!(parse_time("2021-09-22", now), Some(1_632_268_800_000_000));
        for bad in ["yesterday", "now-", "now-7x", "now*2d", "2021-13-40"] {
            assert_eq!(parse_time(bad, now), None, "{bad}");
        }
    }
}
