//! Writes the `vbaProject.bin` the macro document kinds embed, for tests that hand it to real
//! programs (olevba, LibreOffice) without going through a kind:
//!
//!     vba_project excel|word <token hostname> <output file>
//!
//! It builds [`trapline::artefacts::vba_macro::open_macro_project`] with
//! [`trapline::artefacts::vba::build`], exactly as a kind does. `cargo test` builds it
//! (target/debug/examples/vba_project), which tests/e2e/test_vba_libreoffice.py uses.

use std::process::ExitCode;

use trapline::artefacts::vba::{build, Host};
use trapline::artefacts::vba_macro::open_macro_project;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [host, hostname, out] = &args[..] else {
        eprintln!("usage: vba_project excel|word <token hostname> <output file>");
        return ExitCode::from(2);
    };
    let host = match host.as_str() {
        "excel" => Host::Excel,
        "word" => Host::Word,
        other => {
            eprintln!("unknown host {other:?}: excel or word");
            return ExitCode::from(2);
        }
    };
    let written = open_macro_project(host, hostname)
        .map_err(|e| e.to_string())
        .and_then(|p| build(&p).map_err(|e| e.to_string()))
        .and_then(|bin| std::fs::write(out, bin).map_err(|e| format!("{out}: {e}")));
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vba_project: {e}");
            ExitCode::FAILURE
        }
    }
}
