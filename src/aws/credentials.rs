//! The operator's AWS credentials: the standard chain, as the AWS CLI and SDKs read it.
//!
//! In order: the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, optional
//! `AWS_SESSION_TOKEN`); then the profile — `--aws-profile`, else `AWS_PROFILE`, else `default` —
//! from the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, else `~/.aws/credentials`,
//! sections `[NAME]`) and the config file (`AWS_CONFIG_FILE`, else `~/.aws/config`, sections
//! `[profile NAME]`, and `[default]`), the credentials file winning key by key.
//!
//! Only static keys are read. Instance metadata (IMDS), ECS task roles, web identity, SSO,
//! `credential_process` and `role_arn`/`source_profile` role assumption are NOT supported: a
//! profile that only uses them is an error that says so, and so is finding nothing (the error
//! names every place it looked).
//!
//! The INI files are parsed by hand: the format is a few lines of rules (sections, `key = value`,
//! `#`/`;` comment lines, indented sub-properties), AWS's dialect differs from generic INI
//! crates in those details, and only three keys are read.
//!
//! Everything takes the environment as a lookup function, so tests pass a map instead of
//! changing the process's environment.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// A secret string (secret access key, session token): its `Debug` and `Display` say
/// `<redacted>`; [`Secret::expose`] is the only way to the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for signing or for handing to the user who owns it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Credentials found by the chain.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
    /// Where they came from (`environment`, `profile NAME in FILE`), never the values.
    pub source: String,
}

/// Finds credentials with the standard chain. `profile` is `--aws-profile`; `env` looks up an
/// environment variable (`HOME` included).
pub fn resolve(profile: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Credentials> {
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let id = var("AWS_ACCESS_KEY_ID");
    let secret = var("AWS_SECRET_ACCESS_KEY");
    match (id, secret) {
        (Some(access_key_id), Some(secret)) => {
            return Ok(Credentials {
                access_key_id,
                secret_access_key: Secret(secret),
                session_token: var("AWS_SESSION_TOKEN").map(Secret),
                source: "environment".to_owned(),
            })
        }
        (Some(_), None) => anyhow::bail!("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not"),
        (None, Some(_)) => anyhow::bail!("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not"),
        (None, None) => {}
    }

    let explicit = profile.map(str::to_owned).or_else(|| var("AWS_PROFILE"));
    let name = explicit.clone().unwrap_or_else(|| "default".to_owned());
    let home = var("HOME").map(PathBuf::from);
    let credentials_file = file_path(var("AWS_SHARED_CREDENTIALS_FILE"), home.as_deref(), "credentials");
    let config_file = file_path(var("AWS_CONFIG_FILE"), home.as_deref(), "config");

    let mut looked = vec!["the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)".to_owned()];
    // Key by key, the credentials file wins over the config file: read the config file first.
    let mut merged: BTreeMap<String, String> = BTreeMap::new();
    let mut found_in = Vec::new();
    for (path, is_config) in [(&config_file, true), (&credentials_file, false)] {
        let Some(path) = path else {
            looked.push(format!("the {} file (no HOME to find it)", if is_config { "config" } else { "credentials" }));
            continue;
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                looked.push(format!("{} (missing)", path.display()));
                continue;
            }
            Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
        };
        let ini = parse_ini(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        looked.push(format!("{} (profile {name})", path.display()));
        if let Some(section) = profile_section(&ini, &name, is_config) {
            found_in.push(path.display().to_string());
            merged.extend(section.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
    }

    let unsupported = ["role_arn", "credential_process", "sso_session", "sso_start_url", "web_identity_token_file"];
    match (merged.get("aws_access_key_id"), merged.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Ok(Credentials {
            access_key_id: id.clone(),
            secret_access_key: Secret(secret.clone()),
            session_token: merged.get("aws_session_token").filter(|t| !t.is_empty()).map(|t| Secret(t.clone())),
            source: format!("profile {name} in {}", found_in.join(" and ")),
        }),
        _ if !found_in.is_empty() => {
            if let Some(key) = unsupported.iter().find(|key| merged.contains_key(**key)) {
                anyhow::bail!(
                    "AWS profile {name} uses {key}, which Trapline does not support: give it \
                     aws_access_key_id and aws_secret_access_key, or set them in the environment"
                )
            }
            anyhow::bail!(
                "AWS profile {name} (in {}) lacks aws_access_key_id or aws_secret_access_key",
                found_in.join(" and ")
            )
        }
        _ if explicit.is_some() => {
            anyhow::bail!("AWS profile {name} not found; looked in {}", looked.join(", "))
        }
        _ => anyhow::bail!(
            "no AWS credentials found; looked in {} (instance metadata, SSO and credential_process are not supported)",
            looked.join(", ")
        ),
    }
}

/// The file from its variable (a leading `~/` is the home directory), else `~/.aws/NAME`.
fn file_path(var: Option<String>, home: Option<&Path>, name: &str) -> Option<PathBuf> {
    match var {
        Some(path) => match (path.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => Some(home.join(rest)),
            _ => Some(PathBuf::from(path)),
        },
        None => home.map(|home| home.join(".aws").join(name)),
    }
}

/// The sections of an AWS INI file: name (as written between the brackets, trimmed) → keys
/// (lower-cased) → values (trimmed).
pub type Ini = BTreeMap<String, BTreeMap<String, String>>;

/// Parses an AWS shared config or credentials file. Full-line comments start with `#` or `;`;
/// a section header may be followed by a comment; indented lines under a key are its
/// sub-properties (`s3 =` then `  max_concurrent_requests = 10`) and are skipped; a key outside
/// any section, or a line that is neither, is an error naming the line.
pub fn parse_ini(text: &str) -> Result<Ini, String> {
    let mut ini = Ini::new();
    let mut current: Option<String> = None;
    let mut in_key = false;
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if line.starts_with([' ', '\t']) && in_key {
            continue; // a sub-property of the key above
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some((name, after)) = rest.split_once(']') else {
                return Err(format!("line {number}: a section header needs a closing ']'"));
            };
            let after = after.trim();
            if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
                return Err(format!("line {number}: unexpected text after the section header"));
            }
            let name = name.trim();
            if name.is_empty() {
                return Err(format!("line {number}: empty section name"));
            }
            ini.entry(name.to_owned()).or_default();
            current = Some(name.to_owned());
            in_key = false;
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err(format!("line {number}: expected `key = value` or `[section]`"));
        };
        let Some(section) = &current else {
            return Err(format!("line {number}: a key before any [section]"));
        };
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() {
            return Err(format!("line {number}: empty key"));
        }
        ini.entry(section.clone()).or_default().insert(key, value.trim().to_owned());
        in_key = true;
    }
    Ok(ini)
}

/// The section of profile `name`: `[name]` in the credentials file; `[profile name]` in the
/// config file (and `[default]` for the default profile, which may also be `[profile default]`).
pub fn profile_section<'a>(ini: &'a Ini, name: &str, is_config: bool) -> Option<&'a BTreeMap<String, String>> {
    if !is_config {
        return ini.get(name);
    }
    let prefixed = ini.iter().find_map(|(section, keys)| {
        let rest = section.strip_prefix("profile")?;
        (rest.starts_with([' ', '\t']) && rest.trim() == name).then_some(keys)
    });
    prefixed.or_else(|| if name == "default" { ini.get("default") } else { None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn ini_sections_keys_comments_and_sub_properties() {
        let ini = parse_ini(
            "# comment\n[default]\naws_access_key_id = AKID1\nAWS_Secret_Access_Key=s1 \n; other\n\
             [profile dev] # dev account\nregion = eu-west-1\ns3 =\n  max_concurrent_requests = 10\n\
             aws_access_key_id = AKID2\n",
        )
        .unwrap();
        assert_eq!(ini["default"]["aws_access_key_id"], "AKID1");
        assert_eq!(ini["default"]["aws_secret_access_key"], "s1");
        assert_eq!(ini["profile dev"]["region"], "eu-west-1");
        assert_eq!(ini["profile dev"]["s3"], "");
        assert_eq!(ini["profile dev"]["aws_access_key_id"], "AKID2");
        assert!(!ini["profile dev"].contains_key("max_concurrent_requests"));
    }

    #[test]
    fn ini_errors_name_the_line() {
        assert_eq!(parse_ini("key = v\n").unwrap_err(), "line 1: a key before any [section]");
        assert_eq!(parse_ini("[a]\njunk\n").unwrap_err(), "line 2: expected `key = value` or `[section]`");
        assert!(parse_ini("[a\n").is_err());
        assert!(parse_ini("[]\n").is_err());
        assert!(parse_ini("[a] trailing\n").is_err());
    }

    #[test]
    fn config_file_sections() {
        let ini = parse_ini("[default]\nk = 1\n[profile  dev ]\nk = 2\n[dev]\nk = 3\n[profilex]\nk = 4\n").unwrap();
        assert_eq!(profile_section(&ini, "default", true).unwrap()["k"], "1");
        assert_eq!(profile_section(&ini, "dev", true).unwrap()["k"], "2");
        assert_eq!(profile_section(&ini, "dev", false).unwrap()["k"], "3");
        assert!(profile_section(&ini, "x", true).is_none());
    }

    #[test]
    fn environment_comes_first() {
        let env = env_of(&[
            ("AWS_ACCESS_KEY_ID", "AKIAENV"),
            ("AWS_SECRET_ACCESS_KEY", "envsecret"),
            ("AWS_SESSION_TOKEN", "tok"),
            ("HOME", "/nonexistent"),
        ]);
        let c = resolve(Some("ignored"), &env).unwrap();
        assert_eq!(c.access_key_id, "AKIAENV");
        assert_eq!(c.secret_access_key.expose(), "envsecret");
        assert_eq!(c.session_token.as_ref().unwrap().expose(), "tok");
        assert_eq!(c.source, "environment");
        let debug = format!("{c:?}");
        assert!(!debug.contains("envsecret") && !debug.contains("tok\""), "{debug}");
        let half = env_of(&[("AWS_ACCESS_KEY_ID", "AKIAENV")]);
        let e = resolve(None, &half).unwrap_err().to_string();
        assert_eq!(e, "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
    }

    #[test]
    fn files_under_home_with_profiles() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "[default]\naws_access_key_id = AKIADEF\naws_secret_access_key = defsecret\n\
             [ops]\naws_access_key_id = AKIAOPS\naws_secret_access_key = opssecret\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = us-east-1\n[profile ops]\naws_access_key_id = AKIAOLD\naws_session_token = opstok\n\
             [profile cfgonly]\naws_access_key_id = AKIACFG\naws_secret_access_key = cfgsecret\n\
             [profile sso]\nsso_session = corp\n",
        )
        .unwrap();
        let home_str = home.path().to_str().unwrap();

        let c = resolve(None, &env_of(&[("HOME", home_str)])).unwrap();
        assert_eq!((c.access_key_id.as_str(), c.secret_access_key.expose()), ("AKIADEF", "defsecret"));
        assert!(c.session_token.is_none());

        // The credentials file wins key by key; the token comes from the config file.
        let c = resolve(Some("ops"), &env_of(&[("HOME", home_str), ("AWS_PROFILE", "default")])).unwrap();
        assert_eq!(c.access_key_id, "AKIAOPS");
        assert_eq!(c.session_token.unwrap().expose(), "opstok");
        assert!(c.source.starts_with("profile ops in "), "{}", c.source);

        let c = resolve(None, &env_of(&[("HOME", home_str), ("AWS_PROFILE", "cfgonly")])).unwrap();
        assert_eq!(c.access_key_id, "AKIACFG");

        let e = resolve(Some("sso"), &env_of(&[("HOME", home_str)])).unwrap_err().to_string();
        assert!(e.contains("sso_session") && e.contains("not support"), "{e}");
        let e = resolve(Some("nope"), &env_of(&[("HOME", home_str)])).unwrap_err().to_string();
        assert!(e.contains("profile nope not found") && e.contains(".aws/credentials"), "{e}");
    }

    #[test]
    fn file_variables_and_nothing_found() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("creds.ini");
        std::fs::write(&creds, "[x]\naws_access_key_id = AKIAX\naws_secret_access_key = xs\n").unwrap();
        let env = env_of(&[
            ("AWS_SHARED_CREDENTIALS_FILE", creds.to_str().unwrap()),
            ("AWS_CONFIG_FILE", dir.path().join("missing").to_str().unwrap()),
            ("AWS_PROFILE", "x"),
        ]);
        assert_eq!(resolve(None, &env).unwrap().access_key_id, "AKIAX");

        let empty = tempfile::tempdir().unwrap();
        let e = resolve(None, &env_of(&[("HOME", empty.path().to_str().unwrap())])).unwrap_err().to_string();
        assert!(e.starts_with("no AWS credentials found"), "{e}");
        assert!(e.contains("AWS_ACCESS_KEY_ID") && e.contains(".aws/credentials (missing)"), "{e}");
        assert!(e.contains("credential_process are not supported"), "{e}");

        let bad = dir.path().join("bad.ini");
        std::fs::write(&bad, "[x]\nnonsense\n").unwrap();
        let e = resolve(None, &env_of(&[("AWS_SHARED_CREDENTIALS_FILE", bad.to_str().unwrap())])).unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn tilde_expands_to_home() {
        assert_eq!(
            file_path(Some("~/keys/c".into()), Some(Path::new("/home/op")), "credentials"),
            Some(PathBuf::from("/home/op/keys/c"))
        );
        assert_eq!(file_path(None, Some(Path::new("/h")), "config"), Some(PathBuf::from("/h/.aws/config")));
        assert_eq!(file_path(None, None, "config"), None);
    }
}
