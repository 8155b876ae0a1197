//! Where CloudTrail puts its log files in the trail's bucket, and which keys are log files:
//! `[prefix/]AWSLogs/[o-orgid/]<account>/CloudTrail/<region>/YYYY/MM/DD/<account>_CloudTrail_<region>_YYYYMMDDTHHmmZ_<unique>.json.gz`
//! (AWS's documented layout; organization trails add the organization id). Digest files
//! (`CloudTrail-Digest/`), Insights events (`CloudTrail-Insight/`) and anything else in the
//! bucket are not log files. The prefix builders give the listing points a lister walks.

/// What a log file's key says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogKey {
    /// The 12-digit account the records are from.
    pub account: String,
    pub region: String,
    /// The delivery day of the folder it sits in (UTC): year, month, day.
    pub date: (i32, u32, u32),
    /// The organization id (`o-…`) of an organization trail.
    pub org_id: Option<String>,
}

/// The trail's prefix as it stands before `AWSLogs/`: empty, or ending in one `/`.
fn base(prefix: &str) -> String {
    let p = prefix.trim_end_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

/// `[prefix/]AWSLogs/`: under it are the accounts (and organization ids).
pub fn logs_prefix(prefix: &str) -> String {
    format!("{}AWSLogs/", base(prefix))
}

/// `[prefix/]AWSLogs/[org_id/]<account>/CloudTrail/<region>/`: one region's log files.
pub fn region_prefix(prefix: &str, org_id: Option<&str>, account: &str, region: &str) -> String {
    let org = org_id.map(|o| format!("{o}/")).unwrap_or_default();
    format!("{}{org}{account}/CloudTrail/{region}/", logs_prefix(prefix))
}

/// `<region_prefix>YYYY/MM/DD/`: one day's log files of one region.
pub fn day_prefix(region_prefix: &str, date: (i32, u32, u32)) -> String {
    let (y, m, d) = date;
    format!("{region_prefix}{y:04}/{m:02}/{d:02}/")
}

/// The account, region, day and organization of a CloudTrail log file's key under the
/// trail's `prefix` (with or without its trailing `/`); None for every other key.
pub fn parse_log_key(key: &str, prefix: &str) -> Option<LogKey> {
    let rest = key.strip_prefix(logs_prefix(prefix).as_str())?;
    let mut parts = rest.split('/');
    let mut first = parts.next()?;
    let org_id = if is_org_id(first) {
        let org = first.to_string();
        first = parts.next()?;
        Some(org)
    } else {
        None
    };
    let account = first;
    if !is_account(account) || parts.next()? != "CloudTrail" {
        return None;
    }
    let region = parts.next()?;
    if !is_region(region) {
        return None;
    }
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    let date = date_of(y, m, d)?;
    let name = parts.next()?;
    if parts.next().is_some() {
        return None;
    }
    let stamp = name.strip_prefix(account)?.strip_prefix("_CloudTrail_")?.strip_prefix(region)?.strip_prefix('_')?;
    let unique = stamp.get(14..)?.strip_prefix('_')?.strip_suffix(".json.gz")?;
    if !is_stamp(&stamp[..14]) || unique.is_empty() {
        return None;
    }
    Some(LogKey { account: account.to_string(), region: region.to_string(), date, org_id })
}

fn is_account(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// `o-` and 10 to 32 lowercase letters or digits.
fn is_org_id(s: &str) -> bool {
    s.strip_prefix("o-").is_some_and(|r| {
        (10..=32).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    })
}

/// A region name as AWS spells them: lowercase letters, digits and dashes (`us-east-1`,
/// `us-gov-west-1`, `cn-north-1`).
fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn date_of(y: &str, m: &str, d: &str) -> Option<(i32, u32, u32)> {
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(y, 4) && digits(m, 2) && digits(d, 2)) {
        return None;
    }
    let date = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    chrono::NaiveDate::from_ymd_opt(date.0, date.1, date.2)?;
    Some(date)
}

/// `YYYYMMDDTHHmmZ`, a real day and time.
fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 14
        && b[8] == b'T'
        && b[13] == b'Z'
        && date_of(&s[0..4], &s[4..6], &s[6..8]).is_some()
        && s[9..13].bytes().all(|c| c.is_ascii_digit())
        && s[9..11].parse::<u32>().is_ok_and(|h| h < 24)
        && s[11..13].parse::<u32>().is_ok_and(|m| m < 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "123456789012_CloudTrail_us-east-1_20240305T1015Z_aB3dE5fG7hI9jK1l.json.gz";

    fn key() -> LogKey {
        LogKey { account: "123456789012".into(), region: "us-east-1".into(), date: (2024, 3, 5), org_id: None }
    }

    #[test]
    fn parses_log_file_keys() {
        let k = format!("AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/05/{FILE}");
        assert_eq!(parse_log_key(&k, ""), Some(key()));
        assert_eq!(parse_log_key(&k, "/"), Some(key()));
        for prefix in ["trail", "trail/", "a/b/c", "a/b/c/"] {
            let k =
                format!("{}/AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/05/{FILE}", prefix.trim_end_matches('/'));
            assert_eq!(parse_log_key(&k, prefix), Some(key()), "{prefix}");
            assert_eq!(parse_log_key(&k, ""), None, "the prefix must be given");
            assert_eq!(parse_log_key(&k, "other"), None);
        }
        // A prefix is a whole path segment, not the start of one.
        assert_eq!(
            parse_log_key(&format!("trailx/AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/05/{FILE}"), "trail"),
            None
        );
    }

    #[test]
    fn parses_organization_trails() {
        let k = format!("org/AWSLogs/o-exampleorgid/123456789012/CloudTrail/us-east-1/2024/03/05/{FILE}");
        let want = LogKey { org_id: Some("o-exampleorgid".into()), ..key() };
        assert_eq!(parse_log_key(&k, "org/"), Some(want.clone()));
        assert_eq!(parse_log_key(&k, "org"), Some(want));
        let gov = "AWSLogs/o-aa11bb22cc/210987654321/CloudTrail/us-gov-west-1/2023/12/31/\
                   210987654321_CloudTrail_us-gov-west-1_20231231T2359Z_x.json.gz";
        assert_eq!(
            parse_log_key(gov, ""),
            Some(LogKey {
                account: "210987654321".into(),
                region: "us-gov-west-1".into(),
                date: (2023, 12, 31),
                org_id: Some("o-aa11bb22cc".into())
            })
        );
        // Too short an organization id is neither an organization nor an account.
        assert_eq!(parse_log_key(&k.replace("o-exampleorgid", "o-short"), "org"), None);
    }

    #[test]
    fn refuses_everything_else() {
        let ok = format!("AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/05/{FILE}");
        assert!(parse_log_key(&ok, "").is_some());
        let digest = "AWSLogs/123456789012/CloudTrail-Digest/us-east-1/2024/03/05/\
                      123456789012_CloudTrail-Digest_us-east-1_trail_us-east-1_20240305T101500Z.json.gz";
        let insight = format!("AWSLogs/123456789012/CloudTrail-Insight/us-east-1/2024/03/05/{FILE}");
        for k in [
            digest.to_string(),
            insight,
            "AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/05/".into(),
            "AWSLogs/123456789012/CloudTrail/".into(),
            "AWSLogs/".into(),
            "".into(),
            "AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/05/123456789012_CloudTrail_us-east-1_20240305T1015Z_.json.gz".into(),
            ok.replace("123456789012/CloudTrail", "12345678901/CloudTrail"),
            ok.replace("/03/05/", "/02/30/"),
            ok.replace("/03/05/", "/3/5/"),
            ok.replace("20240305T1015Z", "20240305T2515Z"),
            ok.replace("20240305T1015Z", "20240305 1015Z"),
            ok.replace(".json.gz", ".json"),
            ok.replace("_CloudTrail_us-east-1_", "_CloudTrail_eu-west-1_"),
            ok.replace("AWSLogs/123456789012/", "AWSLogs/123456789012/x/"),
            ok.replace("/us-east-1/", "/US-EAST-1/"),
            format!("{ok}/more"),
            format!("x{ok}"),
            ok.replace("Z_aB3d", "ZaB3d"),
            "AWSLogs/123456789012/CloudTrail/us-east-1/2024/03/05/123456789012_CloudTrail_us-east-1_20240305T1015Ẑ_a.json.gz"
                .into(),
        ] {
            assert_eq!(parse_log_key(&k, ""), None, "{k}");
        }
    }

    #[test]
    fn builds_listing_prefixes() {
        assert_eq!(logs_prefix(""), "AWSLogs/");
        assert_eq!(logs_prefix("t/"), "t/AWSLogs/");
        assert_eq!(region_prefix("", None, "123456789012", "eu-west-1"), "AWSLogs/123456789012/CloudTrail/eu-west-1/");
        let r = region_prefix("trail", Some("o-exampleorgid"), "123456789012", "us-east-1");
        assert_eq!(r, "trail/AWSLogs/o-exampleorgid/123456789012/CloudTrail/us-east-1/");
        assert_eq!(region_prefix("trail/", Some("o-exampleorgid"), "123456789012", "us-east-1"), r);
        let d = day_prefix(&r, (2024, 3, 5));
        assert_eq!(d, "trail/AWSLogs/o-exampleorgid/123456789012/CloudTrail/us-east-1/2024/03/05/");
        // What the builders give, the parser reads back.
        let k = parse_log_key(&format!("{d}{FILE}"), "trail").unwrap();
        assert_eq!((k.date, k.org_id.as_deref()), ((2024, 3, 5), Some("o-exampleorgid")));
    }
}
