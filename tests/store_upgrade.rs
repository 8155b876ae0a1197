//! A database written by release 605748e opens and upgrades on both engines without losing a
//! hit, a token or a pending alert (issue 11).
//!
//! The fixtures in `tests/fixtures/` are text dumps of what that release wrote (see the README
//! there): three tokens, three hits in two incidents, two alerts pending in the outbox. Each
//! case loads one into a fresh database (a SQLite file; a fresh PostgreSQL schema, skipped
//! without `TRAPLINE_TEST_DATABASE_URL` unless under `CI`, as in the conformance suite), opens it
//! with [`store::open`] and checks that everything is there, that the schema is at the latest
//! step, and that recording a hit and claiming the pending alerts still work.
//!
//! The fixtures' browser did not ask for HTML, so none of their hits has a scanner nonce. Each
//! case therefore adds, before opening, one hit row exactly as that release stored a browser's
//! hit (its `hits` columns, with `_report_nonce` in the data; see `OLD_BROWSER_HIT`), and
//! checks that after the upgrade its report can still be attached and the nonce never shows.

use std::sync::Arc;

use sqlx::Connection;
use trapline::model::*;
use trapline::noise::NoiseRules;
use trapline::store::{self, migrations, HitRules, Store};

/// What release 605748e wrote into one fixture.
struct Release {
    install_id: &'static str,
    /// The token fired over HTTP twice (one incident: the second hit grouped into it).
    web: &'static str,
    /// The token fired over DNS once.
    dns: &'static str,
    /// The token never fired.
    quiet: &'static str,
}

const SQLITE: Release = Release {
    install_id: "eb0fb8ebd4cb",
    web: "dxpi0cx24yvi5y0efh25l47la",
    dns: "4rdi4j5q6rxcef05ygq3l5u4d",
    quiet: "qbv01d17evfm0ge6vxbhvxrj9",
};

const POSTGRES: Release = Release {
    install_id: "ec1dac23f458",
    web: "hiq68zrgfhi7n2b5fie3bpyu6",
    dns: "vzaxaph01q4y26cnzcq5h9p64",
    quiet: "hitezp59ykoqrkmygaol7pir5",
};

/// A browser's hit as release 605748e stored it, for the token `{web}`: the scanner nonce in the
/// data (`data["_report_nonce"] = nonce`, release `src/listeners/http.rs:177`). The engine numbers
/// it (4, after the fixture's three); incident 0 (stored ignored), so no incident count changes.
const OLD_BROWSER_HIT: &str = "INSERT INTO hits (incident_id, token_id, time_us, channel, src_ip, src_port, data, \
     dedupe_key, alert_status, dst_ip, dst_port) VALUES (0, '{web}', 1796305799000000, 'http', '127.0.0.1', 46600, \
     '{\"_report_nonce\":\"0123456789abcdef01234567\",\"headers\":{\"Accept\":\"text/html\",\
     \"User-Agent\":\"fixture-browser/1.0\"},\"method\":\"GET\",\"path\":\"/{web}\",\"query\":\"\",\
     \"useragent\":\"fixture-browser/1.0\"}', NULL, 'ignored', '127.0.0.1', 43021)";
const OLD_NONCE: &str = "0123456789abcdef01234567";

const SQLITE_DUMP: &str = include_str!("fixtures/release-605748e.sqlite.sql");
const POSTGRES_DUMP: &str = include_str!("fixtures/release-605748e.postgres.sql");

#[tokio::test]
async fn sqlite_database_of_release_605748e_upgrades() {
    sqlx::any::install_default_drivers();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("trapline.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    sqlx::Executor::execute(&mut conn, SQLITE_DUMP).await.expect("the SQLite fixture loads");
    sqlx::Executor::execute(&mut conn, OLD_BROWSER_HIT.replace("{web}", SQLITE.web).as_str()).await.unwrap();
    conn.close().await.unwrap();

    let s = store::open(path.to_str().unwrap()).await.expect("the release's database opens");
    check(&s, &SQLITE).await;
    let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
    check_schema(&mut conn).await;
}

#[tokio::test]
async fn postgres_database_of_release_605748e_upgrades() {
    let Ok(url) = std::env::var("TRAPLINE_TEST_DATABASE_URL") else {
        assert!(std::env::var("CI").is_err(), "CI must set TRAPLINE_TEST_DATABASE_URL");
        eprintln!("TRAPLINE_TEST_DATABASE_URL not set: PostgreSQL case skipped");
        return;
    };
    sqlx::any::install_default_drivers();
    let schema = format!("tl_up_{}", trapline::ids::hex_id(8));
    let mut admin = sqlx::PgConnection::connect(&url).await.expect("cannot reach the test PostgreSQL");
    // The dump creates its schema itself; it is written with __SCHEMA__ for its name.
    sqlx::Executor::execute(&mut admin, POSTGRES_DUMP.replace("__SCHEMA__", &schema).as_str())
        .await
        .expect("the PostgreSQL fixture loads");
    let old_hit = OLD_BROWSER_HIT.replace("{web}", POSTGRES.web).replacen(
        "INSERT INTO hits",
        &format!("INSERT INTO {schema}.hits"),
        1,
    );
    sqlx::Executor::execute(&mut admin, old_hit.as_str()).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");

    let s = store::open(&scoped).await.expect("the release's database opens");
    check(&s, &POSTGRES).await;
    let mut conn = sqlx::AnyConnection::connect(&scoped).await.unwrap();
    check_schema(&mut conn).await;
    drop(s);
    sqlx::Executor::execute(&mut admin, format!("DROP SCHEMA {schema} CASCADE").as_str()).await.unwrap();
}

/// Every step is recorded once, the last one included: opening applied what was missing and
/// nothing twice.
async fn check_schema(conn: &mut sqlx::AnyConnection) {
    let row = sqlx::query("SELECT COUNT(*), MAX(version) FROM trapline_schema").fetch_one(&mut *conn).await.unwrap();
    let (count, max): (i64, i64) = (sqlx::Row::get(&row, 0), sqlx::Row::get(&row, 1));
    let latest = migrations::STEPS.len() as i64;
    assert_eq!((count, max), (latest, latest), "schema at the latest step, each step once");
}

async fn check(s: &Arc<dyn Store>, r: &Release) {
    // The tokens, as created.
    assert_eq!(s.count_tokens(&TokenFilter::default()).await.unwrap(), 3);
    for (id, kind, memo) in [
        (r.web, "http", "Upgrade fixture: web bug"),
        (r.dns, "dns", "Upgrade fixture: DNS name"),
        (r.quiet, "http", "Upgrade fixture: never fired"),
    ] {
        let t = s.get_token(id).await.unwrap().unwrap_or_else(|| panic!("token {id} survived"));
        assert_eq!((t.kind.as_str(), t.memo.as_str(), t.enabled), (kind, memo, true), "{id}");
    }
    let words = TokenFilter { words: vec!["never".into()], ..Default::default() };
    assert_eq!(s.count_tokens(&words).await.unwrap(), 1, "search texts survived too");

    // The hits, with what they saw.
    let mut web = s.token_hits(r.web, 10, None).await.unwrap();
    let browser = web.remove(0);
    assert_eq!((browser.id, browser.incident_id, browser.alert_status), (4, 0, AlertStatus::Ignored));
    assert_eq!(browser.data["useragent"], "fixture-browser/1.0", "the old browser hit keeps its data");
    assert!(browser.data.get("_report_nonce").is_none(), "its nonce left the data: {}", browser.data);
    assert_eq!(web.iter().map(|h| (h.id, h.incident_id)).collect::<Vec<_>>(), [(2, 1), (1, 1)]);
    for h in &web {
        assert_eq!(
            (h.channel, h.alert_status),
            (Channel::Http, if h.id == 1 { AlertStatus::Alerted } else { AlertStatus::Grouped })
        );
        assert_eq!(h.data["headers"]["User-Agent"], "fixture-agent/1.0", "{h:?}");
    }
    let dns = s.token_hits(r.dns, 10, None).await.unwrap();
    assert_eq!(dns.len(), 1);
    assert_eq!((dns[0].id, dns[0].channel), (3, Channel::Dns));
    assert_eq!(dns[0].data["query_name"], format!("{}.canary.test", r.dns));
    assert!(s.token_hits(r.quiet, 10, None).await.unwrap().is_empty());

    // The old hit's nonce still guards it: its scanner report can be attached, once, by it only.
    let report = serde_json::json!({"language": "de-CH"});
    assert!(!s.amend_hit(4, r.web, "ffffffffffffffffffffffff", "browser", report.clone()).await.unwrap());
    assert!(s.amend_hit(4, r.web, OLD_NONCE, "browser", report.clone()).await.unwrap());
    assert!(!s.amend_hit(4, r.web, OLD_NONCE, "browser", report.clone()).await.unwrap(), "once");
    let browser = s.token_hits(r.web, 1, None).await.unwrap().remove(0);
    assert_eq!((browser.id, &browser.data["browser"]), (4, &report));
    assert!(!browser.data.to_string().contains(OLD_NONCE), "the nonce never shows: {}", browser.data);

    // The incidents, unacknowledged, with their events.
    let incidents = s.list_incidents(&IncidentFilter::default()).await.unwrap();
    let mut seen: Vec<_> = incidents.iter().map(|i| (i.token_id.as_str(), i.events_count, i.acknowledged)).collect();
    seen.sort();
    let mut want = vec![(r.web, 2, false), (r.dns, 1, false)];
    want.sort();
    assert_eq!(seen, want);

    // The pending alerts, with the keys their receivers dedupe by.
    assert_eq!(s.install_id().await.unwrap(), r.install_id);
    let pending = s.list_alerts(true, 10).await.unwrap();
    let mut keys: Vec<_> = pending.iter().map(|a| (a.idempotency_key.clone(), a.hit_id, a.gave_up_us)).collect();
    keys.sort();
    let want = vec![(format!("{}-hit-1-0", r.install_id), 1, None), (format!("{}-hit-3-0", r.install_id), 3, None)];
    assert_eq!(keys, want);

    // Recording goes on: ids continue after the release's, and the alert joins the outbox.
    let rules = HitRules::new(
        |_: &Token, _: &NewHit| Judgement::alert(),
        |_: &Token, _: &NewHit, _: &[AlertOutput]| {
            vec![NewAlert { output: serde_json::json!({"type": "webhook"}), payload: serde_json::json!({}) }]
        },
    )
    .with_noise(NoiseRules::none())
    .with_key_prefix(&format!("{}-", r.install_id));
    let hit = NewHit {
        token: TokenRef::Id(r.dns.into()),
        time_us: now_us(),
        channel: Channel::Dns,
        src_ip: "192.0.2.7".into(),
        src_port: 5353,
        dst_ip: "192.0.2.1".into(),
        dst_port: 53,
        data: serde_json::json!({"query_name": format!("{}.canary.test", r.dns)}),
        private: None,
        group: None,
    };
    let out = s.record_hits(&[hit], &rules).await.unwrap();
    let [HitOutcome::Recorded { hit_id, incident_id, status, .. }] = out.as_slice() else { panic!("{out:?}") };
    assert_eq!((*hit_id, *incident_id, *status), (5, Some(3), AlertStatus::Alerted));
    assert_eq!(s.token_hits(r.dns, 10, None).await.unwrap().len(), 2);

    // The release's pending alerts are claimed for delivery, oldest first, with the new one.
    let now = now_us();
    let claimed = s.claim_due_alerts(now, 10, now + 60_000_000, "upgrade-test").await.unwrap();
    assert_eq!(claimed.iter().map(|a| a.hit_id).collect::<Vec<_>>(), [1, 3, 5]);
    assert_eq!(claimed[2].idempotency_key, format!("{}-hit-5-0", r.install_id));
}
