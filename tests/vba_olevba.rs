//! The `vbaProject.bin` Trapline builds, read by a program that did not write it: `olevba`
//! (oletools 0.60.2, the analyser malware triage uses). It must parse the `dir` stream without
//! a warning, decompress every module to the source we wrote, and flag the open macros as
//! AutoExec and the lookup as Shell — what an analyst (or an antivirus) sees in the token.
//!
//! `TRAPLINE_TEST_OLEVBA` names the `olevba` program (`scripts/test` points it at
//! `.venv/bin/olevba`). Without it the tests say they were skipped — except in CI (`CI` set),
//! where that is a failure.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;
use trapline::artefacts::vba::{build, Host, Module, ModuleKind, Project};
use trapline::artefacts::vba_macro::{open_macro_project, open_procedures, STANDARD_MODULE};

fn olevba() -> Option<PathBuf> {
    match std::env::var_os("TRAPLINE_TEST_OLEVBA").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("CI").is_some() => {
            panic!("TRAPLINE_TEST_OLEVBA must name olevba in CI (scripts/test sets it)")
        }
        None => {
            eprintln!("skipped: set TRAPLINE_TEST_OLEVBA to olevba (e.g. .venv/bin/olevba)");
            None
        }
    }
}

/// Runs `olevba -j` on the built project: its report of the file (the JSON entry with
/// `macros`), after checking it complained about nothing.
fn analyse(program: &PathBuf, project: &Project) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vbaProject.bin");
    std::fs::write(&path, build(project).unwrap()).unwrap();
    let out = Command::new(program)
        .arg("-j")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "olevba failed ({}): {stderr}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).expect("olevba -j prints JSON");
    // olevba falls back to scanning streams when the dir stream does not parse, so any
    // complaint (in JSON mode an entry of type "msg") means the project is malformed even
    // if the code shows up.
    let complaints: Vec<&Value> =
        report.as_array().into_iter().flatten().filter(|e| e["type"] == "msg" || e.get("level").is_some()).collect();
    assert!(complaints.is_empty() && !stderr.contains("WARNING"), "olevba complained: {complaints:?}\n{stderr}");
    let entry = report.as_array().and_then(|a| a.iter().find(|e| e.get("macros").is_some())).cloned();
    entry.unwrap_or_else(|| panic!("no macros in olevba's report: {report}"))
}

/// (vba_filename, ole_stream, code) of each macro olevba found.
fn macros(report: &Value) -> Vec<(String, String, String)> {
    let text = |m: &Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    report["macros"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (text(m, "vba_filename"), text(m, "ole_stream"), text(m, "code")))
        .collect()
}

/// The (type, keyword) pairs of olevba's analysis.
fn flags(report: &Value) -> Vec<(String, String)> {
    let items = report["analysis"].as_array().cloned().unwrap_or_default();
    items
        .iter()
        .map(|a| (a["type"].as_str().unwrap().to_string(), a["keyword"].as_str().unwrap().to_string()))
        .collect()
}

fn has(flags: &[(String, String)], kind: &str, keyword: &str) -> bool {
    flags.iter().any(|(t, k)| t == kind && k == keyword)
}

#[test]
fn olevba_reads_the_open_macros_and_flags_them() {
    let Some(program) = olevba() else { return };
    for host in [Host::Excel, Host::Word] {
        let hostname = "k2m4q8v1x3z5b7d9f0h2j4l6n.trapline.example";
        let project = open_macro_project(host, hostname).unwrap();
        let report = analyse(&program, &project);

        // Every module, decompressed by olevba, is the source we wrote (olevba hides the
        // Attribute lines and the last line end).
        let found = macros(&report);
        assert_eq!(found.len(), 2, "{found:?}");
        let doc = host.document_module();
        for (module, ext) in [(doc, "cls"), (STANDARD_MODULE, "bas")] {
            let written = &project.modules.iter().find(|m| m.name == module).unwrap().code;
            let (_, _, code) = found
                .iter()
                .find(|(file, stream, _)| *file == format!("{module}.{ext}") && *stream == format!("VBA/{module}"))
                .unwrap_or_else(|| panic!("{host:?}: no {module}.{ext} from VBA/{module} in {found:?}"));
            assert_eq!(code.replace("\r\n", "\n").trim_end(), written.trim_end(), "{host:?} {module}");
        }
        let standard = &found.iter().find(|m| m.0.starts_with(STANDARD_MODULE)).unwrap().2;
        assert!(standard.contains(&format!(".CMD.\" & i & \".{hostname}.\", 0")), "{standard}");

        let flags = flags(&report);
        let (event, auto) = open_procedures(host);
        for keyword in [event, auto] {
            assert!(has(&flags, "AutoExec", keyword), "{host:?}: {keyword} not flagged AutoExec: {flags:?}");
        }
        assert!(has(&flags, "Suspicious", "Shell"), "{host:?}: {flags:?}");
        assert!(has(&flags, "Suspicious", "Environ"), "{host:?}: {flags:?}");
    }
}

/// A module of many chunks (olevba's decompressor against our compressor across chunk
/// boundaries), with copies that reach far back in each chunk.
#[test]
fn olevba_decompresses_long_modules() {
    let Some(program) = olevba() else { return };
    let mut code = String::from("Option Explicit\n");
    for n in 0..400 {
        code.push_str(&format!(
            "Public Function Figure{n}(x As Long) As Long\n    Figure{n} = x * {} + {n}\nEnd Function\n",
            n * 7919 % 1000
        ));
    }
    assert!(code.len() > 5 * 4096);
    let project = Project {
        host: Host::Excel,
        modules: vec![
            Module { name: "ThisWorkbook".into(), kind: ModuleKind::Document, code: "Option Explicit\n".into() },
            Module { name: "Figures".into(), kind: ModuleKind::Standard, code: code.clone() },
        ],
    };
    let report = analyse(&program, &project);
    let found = macros(&report);
    let (_, _, got) = found.iter().find(|m| m.1 == "VBA/Figures").unwrap_or_else(|| panic!("{found:?}"));
    assert_eq!(got.replace("\r\n", "\n").trim_end(), code.trim_end());
    assert!(flags(&report).iter().all(|(t, _)| t != "AutoExec"), "{:?}", flags(&report));
}
