//! Fuzz target `fql`: Falcon Query Language filters and sorts as the Falcon dialect takes them
//! from a query string: [`trapline::fql::parse`], then the store's compilation into SQL over
//! both entities' fields ([`trapline::store::fql_sql::compile`], and
//! [`trapline::store::fql_sql::order_by`] for `sort`), which needs no database.
//!
//! Invariants: no panic; an error names a position inside the filter; a parsed filter makes at
//! most `MAX_TERMS` comparisons (audit F11) and, printed back as FQL, parses to the same tree
//! (positions aside), so the parser reads every filter the one way; compiled SQL is made only of the entity's own column expressions, operators,
//! keywords and `$N` placeholders (no filter text ever reaches a statement), with the
//! placeholders numbered 1..=N, each used; a sort compiles to one column and a direction.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trapline::fql::{parse, Expr, Op, Value, MAX_LEN, MAX_TERMS};
use trapline::store::fql_sql::{compile, order_by, Field, AUDIT_FIELDS, FACTORY_FIELDS};
use trapline::store::args::{Arg, Args};

const NOW: i64 = 1_700_000_000_000_000;

/// FQL text for a value: text quoted with `\` before `\` and `'`.
fn value(v: &Value, out: &mut String) {
    match v {
        Value::Text(t) => {
            out.push('\'');
            for c in t.chars() {
                if c == '\\' || c == '\'' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('\'');
        }
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Null => out.push_str("null"),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                value(item, out);
            }
            out.push(']');
        }
    }
}

/// FQL text for a tree, with parentheses only where the grammar needs them.
fn print(e: &Expr, out: &mut String) {
    let group = |parts: &[Expr], sep: char, needs_parens: fn(&Expr) -> bool, out: &mut String| {
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                out.push(sep);
            }
            if needs_parens(p) {
                out.push('(');
                print(p, out);
                out.push(')');
            } else {
                print(p, out);
            }
        }
    };
    match e {
        Expr::Or(parts) => group(parts, ',', |p| matches!(p, Expr::Or(_)), out),
        Expr::And(parts) => group(parts, '+', |p| matches!(p, Expr::Or(_) | Expr::And(_)), out),
        Expr::Present { field, present, .. } => {
            out.push_str(field);
            out.push_str(if *present { ":*" } else { ":!*" });
        }
        Expr::Cmp { field, op, value: v, .. } => {
            out.push_str(field);
            out.push_str(match op {
                Op::Eq => ":",
                Op::Ne => ":!",
                Op::Gt => ":>",
                Op::Ge => ":>=",
                Op::Lt => ":<",
                Op::Le => ":<=",
                Op::Like => ":~",
                Op::NotLike => ":!~",
            });
            value(v, out);
        }
    }
}

/// The tree with every position set to 0.
/// How many comparisons `e` makes, each value of a list counting as one.
fn terms(e: &Expr) -> usize {
    match e {
        Expr::Or(p) | Expr::And(p) => p.iter().map(terms).sum(),
        Expr::Present { .. } => 1,
        Expr::Cmp { value: Value::List(items), .. } => items.len().max(1),
        Expr::Cmp { .. } => 1,
    }
}

fn unplaced(e: &Expr) -> Expr {
    match e {
        Expr::Or(p) => Expr::Or(p.iter().map(unplaced).collect()),
        Expr::And(p) => Expr::And(p.iter().map(unplaced).collect()),
        Expr::Present { field, present, .. } => Expr::Present { field: field.clone(), present: *present, position: 0 },
        Expr::Cmp { field, op, value, .. } => {
            Expr::Cmp { field: field.clone(), op: *op, value: value.clone(), position: 0 }
        }
    }
}

/// How many values `args` holds (the next placeholder's number, less one).
fn bound(args: &mut Args) -> usize {
    args.push(Arg::I(0)).trim_start_matches('$').parse::<usize>().expect("a placeholder") - 1
}

/// Checks that `sql` is built only of `fields`' SQL, fixed vocabulary and placeholders `$1..=$n`.
fn only_our_sql(sql: &str, fields: &[Field], n: usize) {
    // Placeholders out first (noting which were used), then the column expressions.
    let mut used = vec![false; n + 1];
    let mut rest = String::with_capacity(sql.len());
    let b = sql.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && b.get(i + 1).is_some_and(u8::is_ascii_digit) {
            let start = i + 1;
            i = start;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            let k: usize = sql[start..i].parse().expect("digits");
            assert!((1..=n).contains(&k), "placeholder ${k} of {n} in {sql}");
            used[k] = true;
            rest.push('?');
        } else {
            rest.push(b[i] as char);
            i += 1;
        }
    }
    assert!(used[1..].iter().all(|u| *u), "a bound value no placeholder uses: {sql}");
    let mut columns: Vec<String> = fields.iter().map(|f| f.sql.replace("$NOW", "?")).collect();
    columns.sort_by_key(|c| std::cmp::Reverse(c.len()));
    for c in &columns {
        rest = rest.replace(c.as_str(), " COLUMN ");
    }
    const WORDS: &[&str] = &[
        "AND", "OR", "NOT", "IS", "NULL", "LIKE", "ESCAPE", "'\\'", "LOWER", "COLUMN", "?", "=", "<>", ">", ">=", "<",
        "<=",
    ];
    for word in rest.split(|c: char| c.is_whitespace() || c == '(' || c == ')').filter(|w| !w.is_empty()) {
        assert!(WORDS.contains(&word), "{word:?} in {sql}");
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let chars = text.chars().count();
    let expr = match parse(&text) {
        Ok(e) => e,
        Err(e) => {
            assert!(e.position <= chars.max(MAX_LEN), "error at {} of {chars}", e.position);
            let _ = e.to_string();
            sort(&text);
            return;
        }
    };

    // Audit F11: a filter never makes more comparisons than SQLite's expression depth allows.
    assert!(terms(&expr) <= MAX_TERMS, "{} comparisons in {text:?}", terms(&expr));

    let mut printed = String::new();
    print(&expr, &mut printed);
    if printed.chars().count() <= MAX_LEN {
        match parse(&printed) {
            Ok(again) => assert_eq!(unplaced(&again), unplaced(&expr), "{text:?} printed as {printed:?}"),
            Err(e) => panic!("{text:?} printed as {printed:?} does not parse: {e}"),
        }
    }

    for fields in [FACTORY_FIELDS, AUDIT_FIELDS] {
        let mut args = Args::default();
        match compile(&expr, fields, &mut args, NOW) {
            Ok(sql) => {
                let n = bound(&mut args);
                only_our_sql(&sql, fields, n);
            }
            Err(e) => assert!(e.position <= chars, "error at {} of {chars}", e.position),
        }
    }
    sort(&text);
});

/// The same text as a `sort` parameter.
fn sort(text: &str) {
    for fields in [FACTORY_FIELDS, AUDIT_FIELDS] {
        let mut args = Args::default();
        if let Ok(sql) = order_by(text, fields, &mut args, NOW) {
            let n = bound(&mut args);
            let (column, dir) = sql.rsplit_once(' ').expect("column and direction");
            assert!(dir == "ASC" || dir == "DESC", "{sql}");
            only_our_sql(column, fields, n);
            assert!(fields.iter().any(|f| f.sql.replace("$NOW", "$1") == column), "{sql}");
        }
    }
}
