//! Helpers shared by the fuzz targets in `fuzz_targets/`: splitting an input into the parts a
//! target needs (header lines, then a body), and running async production code to completion on
//! a small runtime that lives as long as the fuzzing process.

use std::future::Future;
use std::sync::OnceLock;

/// Splits `data` at the first `n` newlines: `n` lines (without their `\n`) and the rest.
/// Missing lines are empty, so every input maps to some split.
pub fn lines(data: &[u8], n: usize) -> (Vec<&[u8]>, &[u8]) {
    let mut out = Vec::with_capacity(n);
    let mut rest = data;
    for _ in 0..n {
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                out.push(&rest[..i]);
                rest = &rest[i + 1..];
            }
            None => {
                out.push(rest);
                rest = &[];
            }
        }
    }
    (out, rest)
}

/// One current-thread runtime (with timers, as the body readers need) for the whole process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime"))
}

/// Runs `f` to completion on [`runtime`].
pub fn block_on<F: Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// The first maximal run of exactly `len` bytes that satisfy `is`, found the plain way: split
/// at every other byte and take the first piece of that length. The fuzz targets compare
/// production scanners against it.
pub fn first_run(s: &str, len: usize, is: impl Fn(u8) -> bool) -> Option<&str> {
    let mut start = 0;
    for (i, b) in s.bytes().chain(std::iter::once(0xff)).enumerate() {
        if i < s.len() && is(b) {
            continue;
        }
        if i - start == len {
            return Some(&s[start..i]);
        }
        start = i + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines() {
        assert_eq!(lines(b"a\nb\nrest\nmore", 2), (vec![&b"a"[..], &b"b"[..]], &b"rest\nmore"[..]));
        assert_eq!(lines(b"only", 2), (vec![&b"only"[..], &b""[..]], &b""[..]));
    }

    #[test]
    fn first_run_is_exact() {
        let digit = |b: u8| b.is_ascii_digit();
        assert_eq!(first_run("ab123cd45", 2, digit), Some("45"));
        assert_eq!(first_run("12", 2, digit), Some("12"));
        assert_eq!(first_run("123", 2, digit), None);
        assert_eq!(first_run("", 0, digit), Some(""));
    }
}
