//! Bind values for statements built at run time, and the `$N` placeholders that name them.
//!
//! Its own module because both the SQL store ([`super::sql`]) and the FQL compiler
//! ([`super::fql_sql`]) build statements with it; neither needs to import the other for it.

use sqlx::any::AnyArguments;
use sqlx::query::Query;
use sqlx::Any;

/// A bind value for statements built at run time.
#[derive(Debug, Clone)]
pub enum Arg {
    I(i64),
    S(String),
}

/// Collects bind values and hands out their `$N` placeholders.
#[derive(Default)]
pub struct Args(Vec<Arg>);

impl Args {
    /// Starts with `args` bound as `$1`, `$2`, … (for statement text written with them).
    pub fn from_vec(args: Vec<Arg>) -> Args {
        Args(args)
    }
    /// Binds `a`; returns its placeholder.
    pub fn push(&mut self, a: Arg) -> String {
        self.0.push(a);
        format!("${}", self.0.len())
    }
    /// Placeholders for a list of values, for `IN (…)`: `$3, $4, $5`.
    pub fn list(&mut self, items: impl IntoIterator<Item = Arg>) -> String {
        items.into_iter().map(|a| self.push(a)).collect::<Vec<_>>().join(", ")
    }
    /// Binds the collected values to `q`, in order.
    pub fn bind<'q>(&'q self, mut q: Query<'q, Any, AnyArguments<'q>>) -> Query<'q, Any, AnyArguments<'q>> {
        for a in &self.0 {
            q = match a {
                Arg::I(i) => q.bind(*i),
                Arg::S(s) => q.bind(s.as_str()),
            };
        }
        q
    }
}
