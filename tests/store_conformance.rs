//! The one conformance suite for [`Store`]: every case runs against SQLite (always) and
//! PostgreSQL (when `TRAPLINE_TEST_DATABASE_URL` names a server; `.ci/run` always sets it, and
//! under `CI` a missing URL is a failure, not a skip). Each PostgreSQL case gets a schema of its
//! own, so cases run in parallel without seeing each other.

use std::sync::Arc;

use serde_json::json;
use trapline::model::*;
use trapline::noise::NoiseRules;
use trapline::store::{self, FlockDeletion, HitRules, Store, TokenDeletion};

struct Db {
    store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    /// PostgreSQL only: the server URL and the case's schema, dropped after the case.
    pg: Option<(String, String)>,
}

impl Db {
    async fn cleanup(self) {
        drop(self.store);
        if let Some((url, schema)) = self.pg {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.unwrap();
            sqlx::Executor::execute(&mut conn, format!("DROP SCHEMA {schema} CASCADE").as_str()).await.unwrap();
        }
    }
}

async fn sqlite() -> Db {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    Db { store: store::open(path.to_str().unwrap()).await.unwrap(), _dir: Some(dir), pg: None }
}

async fn postgres() -> Option<Db> {
    let Ok(url) = std::env::var("TRAPLINE_TEST_DATABASE_URL") else {
        assert!(std::env::var("CI").is_err(), "CI must set TRAPLINE_TEST_DATABASE_URL");
        eprintln!("TRAPLINE_TEST_DATABASE_URL not set: PostgreSQL case skipped");
        return None;
    };
    // A fresh schema per case, selected through the connection's search_path.
    let schema = format!("tl_{}", trapline::ids::hex_id(8));
    let mut conn =
        <sqlx::PgConnection as sqlx::Connection>::connect(&url).await.expect("cannot reach the test PostgreSQL");
    sqlx::Executor::execute(&mut conn, format!("CREATE SCHEMA {schema}").as_str()).await.unwrap();
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    Some(Db { store: store::open(&scoped).await.unwrap(), _dir: None, pg: Some((url, schema)) })
}

/// Runs one case against both engines.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite_engine { $( #[tokio::test] async fn $name() { super::$name(super::sqlite().await.store).await } )* }
        mod postgres_engine {
            $( #[tokio::test] async fn $name() {
                if let Some(db) = super::postgres().await {
                    super::$name(db.store.clone()).await;
                    db.cleanup().await;
                }
            } )*
        }
    };
}

conformance!(
    fresh_store_has_default_flock_and_no_keys,
    reopening_does_not_migrate_twice,
    api_keys_round_trip,
    flocks_lifecycle,
    tokens_round_trip_and_update,
    token_listing_filters_and_pages,
    hits_record_only_for_enabled_tokens,
    incidents_filter_acknowledge_delete,
    token_delete_needs_cleared_incidents,
    token_search_by_word_prefix,
    incident_change_sequence,
    incident_filters_text_kinds_hash_and_pages,
    alert_claims_are_taken_back_by_their_node,
    concurrent_batches_all_commit,
    first_key_only_once,
    token_insert_needs_its_flock,
    judgements_ignore_drop_and_dedupe,
    repeats_from_one_source_join_the_open_incident,
    cooldown_and_rate_limit_throttle_but_keep_incidents,
    api_outputs_reach_the_alerter_and_go_with_their_flock,
    install_id_is_made_once,
    concurrent_claims_never_share_an_alert,
    token_files_round_trip,
    reports_attach_once_with_the_right_nonce,
    trigger_keys_name_their_token_until_it_goes,
    api_keys_manage,
    factory_tokens_round_trip,
    fql_queries_over_factories_and_audit,
    settings_round_trip,
    alert_outbox_lifecycle,
    audit_log_newest_first,
    retention_spares_unacknowledged_incidents,
    events_delivered_twice_are_stored_once,
    concurrent_deliveries_of_one_event_store_one_hit,
    trigger_keys_list_a_scheme_for_enabled_and_disabled_tokens,
    poller_state_and_processed_objects,
    leases_are_held_renewed_expired_and_released,
    concurrent_lease_takers_one_wins,
    retirements_are_queued_with_their_delete,
);

/// No outputs configured: alerting hits queue nothing.
fn no_alerts(_: &Token, _: &NewHit, _: &[AlertOutput]) -> Vec<NewAlert> {
    Vec::new()
}

/// A judge and an alerter with grouping and throttling off: every alert-worthy hit is its own
/// alerting incident (the noise cases turn the rules on).
fn rules(
    judge: impl Fn(&Token, &NewHit) -> Judgement + Send + Sync + 'static,
    alerter: impl Fn(&Token, &NewHit, &[AlertOutput]) -> Vec<NewAlert> + Send + Sync + 'static,
) -> HitRules {
    HitRules::new(judge, alerter).with_noise(NoiseRules::none())
}

/// The judge of the plain kinds: every use is an alert.
fn alert_all(_: &Token, _: &NewHit) -> Judgement {
    Judgement::alert()
}

fn audit(action: &str) -> AuditEntry {
    AuditEntry {
        time_us: now_us(),
        actor: "tester".into(),
        action: action.into(),
        target: "t".into(),
        description: "d".into(),
        src_ip: "127.0.0.1".into(),
        dialect: "test".into(),
    }
}

fn token(kind: &str, memo: &str, flock: &str, created_us: Micros) -> Token {
    Token {
        id: trapline::ids::token_id(),
        kind: kind.into(),
        memo: memo.into(),
        flock_id: flock.into(),
        enabled: true,
        created_us,
        updated_id: 1,
        params: json!({"browser_scanner_enabled": true}),
        created_by: "tester".into(),
        triggered_count: 0,
        unacked_count: 0,
        alert_webhook_url: None,
        alert_email: None,
        alert_cooldown_secs: None,
        alert_max_per_hour: None,
        ignore_sources: Vec::new(),
    }
}

fn hit(token_id: &str, ip: &str, time_us: Micros) -> NewHit {
    NewHit {
        token: TokenRef::Id(token_id.into()),
        time_us,
        channel: Channel::Http,
        src_ip: ip.into(),
        src_port: 4242,
        dst_ip: "192.0.2.200".into(),
        dst_port: 8081,
        data: json!({"method": "GET", "headers": {"User-Agent": "curl/8"}, "ünïcode": "✓"}),
        private: None,
        group: None,
    }
}

async fn fresh_store_has_default_flock_and_no_keys(s: Arc<dyn Store>) {
    let flocks = s.list_flocks().await.unwrap();
    assert_eq!(flocks.len(), 1);
    assert_eq!(flocks[0].id, DEFAULT_FLOCK);
    assert_eq!(flocks[0].name, DEFAULT_FLOCK_NAME);
    assert_eq!(s.count_api_keys().await.unwrap(), 0);
    assert!(s.list_audit(10).await.unwrap().is_empty());
}

async fn reopening_does_not_migrate_twice(s: Arc<dyn Store>) {
    // Applying the migrations again (as a second node or a restart would) must be a no-op.
    s.insert_flock(&Flock { id: "flock:x".into(), name: "X".into(), created_us: 1 }, &audit("flock_create"))
        .await
        .unwrap();
    let backend = s.backend();
    assert!(backend == "sqlite" || backend == "postgres");
    assert_eq!(s.list_flocks().await.unwrap().len(), 2);
}

async fn api_keys_round_trip(s: Arc<dyn Store>) {
    let k = ApiKey {
        key_id: "11111111-2222-3333-4444-555555555555".into(),
        secret_hash: "ab".repeat(32),
        role: Role::Analyst,
        flock_id: Some(DEFAULT_FLOCK.into()),
        active: true,
        expire_us: 0,
        description: "ci".into(),
        created_us: 5,
        last_used_us: None,
        created_by: "cli".into(),
        annotations: Vec::new(),
    };
    s.insert_api_key(&k, &audit("key_create")).await.unwrap();
    assert_eq!(s.count_api_keys().await.unwrap(), 1);
    assert_eq!(s.api_key_by_hash(&k.secret_hash).await.unwrap(), Some(k.clone()));
    assert_eq!(s.api_key_by_hash(&"cd".repeat(32)).await.unwrap(), None);
    s.touch_api_key(&k.key_id, 99).await.unwrap();
    assert_eq!(s.api_key_by_hash(&k.secret_hash).await.unwrap().unwrap().last_used_us, Some(99));
    // The same secret hash cannot belong to two keys.
    let mut dup = k.clone();
    dup.key_id = "other".into();
    assert!(s.insert_api_key(&dup, &audit("key_create")).await.is_err());
    assert_eq!(s.count_api_keys().await.unwrap(), 1);
}

async fn flocks_lifecycle(s: Arc<dyn Store>) {
    let f = Flock { id: "flock:abc".into(), name: "Cape Town".into(), created_us: 10 };
    s.insert_flock(&f, &audit("flock_create")).await.unwrap();
    assert_eq!(s.get_flock("flock:abc").await.unwrap(), Some(f.clone()));
    assert!(s.rename_flock("flock:abc", "Durban", &audit("flock_rename")).await.unwrap());
    assert!(!s.rename_flock("flock:nope", "X", &audit("flock_rename")).await.unwrap());
    assert_eq!(s.get_flock("flock:abc").await.unwrap().unwrap().name, "Durban");

    let t = token("dns", "m", "flock:abc", 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    assert_eq!(s.delete_flock("flock:abc", &audit("flock_delete")).await.unwrap(), FlockDeletion::NotEmpty);
    assert_eq!(s.delete_flock("flock:nope", &audit("flock_delete")).await.unwrap(), FlockDeletion::NotFound);

    s.record_hits(&[hit(&t.id, "10.0.0.1", 5)], &rules(alert_all, no_alerts)).await.unwrap();
    let mut idle = token("http", "idle", "flock:abc", 2);
    idle.enabled = false;
    s.insert_token(&idle, &[], &[], &audit("token_create")).await.unwrap();
    let other = token("dns", "idle too", "flock:abc", 3);
    s.insert_token(&other, &[], &[], &audit("token_create")).await.unwrap();
    let sum = s.flock_summary("flock:abc").await.unwrap();
    assert_eq!(
        sum,
        FlockSummary {
            token_count: 3,
            enabled_token_count: 2,
            triggered_token_count: 1,
            incident_count: 1,
            unacknowledged_incident_count: 1,
            kinds: vec![("dns".into(), 2), ("http".into(), 1)],
        }
    );
    assert_eq!(s.flock_token_ids("flock:abc").await.unwrap(), vec![t.id.clone(), idle.id.clone(), other.id.clone()]);
    assert!(s.flock_token_ids("flock:nope").await.unwrap().is_empty());
    for x in [&idle, &other] {
        assert_eq!(s.delete_token(&x.id, false, &audit("token_delete"), false).await.unwrap(), TokenDeletion::Deleted);
    }

    assert_eq!(s.delete_token(&t.id, true, &audit("token_delete"), false).await.unwrap(), TokenDeletion::Deleted);
    assert_eq!(s.delete_flock("flock:abc", &audit("flock_delete")).await.unwrap(), FlockDeletion::Deleted);
    assert_eq!(s.get_flock("flock:abc").await.unwrap(), None);
}

async fn tokens_round_trip_and_update(s: Arc<dyn Store>) {
    let t = token("http", "under the desk", DEFAULT_FLOCK, 1_000);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    assert_eq!(s.get_token(&t.id).await.unwrap(), Some(t.clone()));
    assert_eq!(s.get_token("nosuchtoken0000000000000a").await.unwrap(), None);

    let change = TokenChange { memo: Some("on the desk".into()), enabled: Some(false), ..Default::default() };
    let u = s.update_token(&t.id, &change, &audit("token_update")).await.unwrap().unwrap();
    assert_eq!(u.memo, "on the desk");
    assert!(!u.enabled);
    assert_eq!(u.updated_id, 2);
    assert_eq!(u.params, t.params);
    let p = TokenChange { params: Some(json!({"browser_scanner_enabled": false})), ..Default::default() };
    let u = s.update_token(&t.id, &p, &audit("token_update")).await.unwrap().unwrap();
    assert_eq!(u.params["browser_scanner_enabled"], false);
    assert_eq!(u.updated_id, 3);
    assert!(s.update_token("nosuchtoken0000000000000a", &change, &audit("x")).await.unwrap().is_none());

    // The noise settings: set, kept by other changes, and cleared back to the defaults.
    let noise = TokenChange {
        alert_cooldown_secs: Some(Some(-1)),
        alert_max_per_hour: Some(Some(12)),
        ignore_sources: Some(vec!["10.0.0.0/8".into(), "192.0.2.7/32".into()]),
        ..Default::default()
    };
    let u = s.update_token(&t.id, &noise, &audit("token_update")).await.unwrap().unwrap();
    assert_eq!((u.alert_cooldown_secs, u.alert_max_per_hour), (Some(-1), Some(12)));
    assert_eq!(u.ignore_sources, ["10.0.0.0/8", "192.0.2.7/32"]);
    let u = s.update_token(&t.id, &change, &audit("token_update")).await.unwrap().unwrap();
    assert_eq!((u.alert_cooldown_secs, u.ignore_sources.len()), (Some(-1), 2));
    let clear = TokenChange {
        alert_cooldown_secs: Some(None),
        alert_max_per_hour: Some(None),
        ignore_sources: Some(vec![]),
        ..Default::default()
    };
    let u = s.update_token(&t.id, &clear, &audit("token_update")).await.unwrap().unwrap();
    assert_eq!((u.alert_cooldown_secs, u.alert_max_per_hour, u.ignore_sources.len()), (None, None, 0));
    let mut with_noise = token("dns", "born noisy", DEFAULT_FLOCK, 2_000);
    with_noise.alert_cooldown_secs = Some(300);
    with_noise.ignore_sources = vec!["198.51.100.0/24".into()];
    s.insert_token(&with_noise, &[], &[], &audit("token_create")).await.unwrap();
    assert_eq!(s.get_token(&with_noise.id).await.unwrap(), Some(with_noise));
}

async fn token_listing_filters_and_pages(s: Arc<dyn Store>) {
    s.insert_flock(&Flock { id: "flock:two".into(), name: "Two".into(), created_us: 1 }, &audit("flock_create"))
        .await
        .unwrap();
    let mut all = Vec::new();
    for i in 0..7 {
        let kind = if i % 2 == 0 { "http" } else { "dns" };
        let flock = if i < 5 { DEFAULT_FLOCK } else { "flock:two" };
        // Two tokens share a creation time to exercise the (created, id) tie-break.
        let t = token(kind, &format!("Memo {i} 100%_done"), flock, 100 + (i / 2) as i64);
        s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
        all.push(t);
    }
    // Newest first, ties by id (descending).
    all.sort_by(|a, b| (b.created_us, &b.id).cmp(&(a.created_us, &a.id)));
    let first = PageStart::default();

    let everything = s.list_tokens(&TokenFilter::default(), &first, 100).await.unwrap();
    assert_eq!(everything.iter().map(|t| &t.id).collect::<Vec<_>>(), all.iter().map(|t| &t.id).collect::<Vec<_>>());
    assert_eq!(s.count_tokens(&TokenFilter::default()).await.unwrap(), 7);

    // Pages of 3 walk the same order with no gaps or repeats, forwards and back.
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut start = PageStart::default();
    loop {
        let page = s.list_tokens(&TokenFilter::default(), &start, 3).await.unwrap();
        if page.is_empty() {
            break;
        }
        start = PageStart { key: page.last().map(|t| (t.created_us, t.id.clone())), backwards: false };
        pages.push(page.into_iter().map(|t| t.id).collect());
    }
    assert_eq!(pages.concat(), all.iter().map(|t| t.id.clone()).collect::<Vec<_>>());
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [3, 3, 1]);
    let last_first = all.iter().find(|t| t.id == pages[2][0]).unwrap();
    let back = PageStart { key: Some((last_first.created_us, last_first.id.clone())), backwards: true };
    let prev = s.list_tokens(&TokenFilter::default(), &back, 3).await.unwrap();
    assert_eq!(prev.into_iter().map(|t| t.id).collect::<Vec<_>>(), pages[1], "the page before, in listing order");

    let by_kind =
        s.list_tokens(&TokenFilter { kind: Some("dns".into()), ..Default::default() }, &first, 100).await.unwrap();
    assert_eq!(by_kind.len(), 3);
    assert!(by_kind.iter().all(|t| t.kind == "dns"));
    let by_flock = s
        .list_tokens(&TokenFilter { flock_id: Some("flock:two".into()), ..Default::default() }, &first, 100)
        .await
        .unwrap();
    assert_eq!(by_flock.len(), 2);
    // Memo search is case-insensitive and takes % and _ literally.
    let memo = |m: &str| TokenFilter { memo_contains: Some(m.into()), ..Default::default() };
    assert_eq!(s.list_tokens(&memo("MEMO 3"), &first, 100).await.unwrap().len(), 1);
    assert_eq!(s.list_tokens(&memo("100%_d"), &first, 100).await.unwrap().len(), 7);
    assert_eq!(s.list_tokens(&memo("1%0"), &first, 100).await.unwrap().len(), 0);
    assert_eq!(s.list_tokens(&memo("memo 1 100%_done!"), &first, 100).await.unwrap().len(), 0);
    // Beyond ASCII too, the same on both engines.
    let t = token("dns", "Serveur de l'ÉCOLE Ünïcode", DEFAULT_FLOCK, 999);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    assert_eq!(s.list_tokens(&memo("école ünï"), &first, 100).await.unwrap().len(), 1);
    s.update_token(&t.id, &TokenChange { memo: Some("ÀÉÎ moved".into()), ..Default::default() }, &audit("u"))
        .await
        .unwrap();
    assert_eq!(s.list_tokens(&memo("àéî"), &first, 100).await.unwrap().len(), 1);
    assert_eq!(s.list_tokens(&memo("école"), &first, 100).await.unwrap().len(), 0);
    s.delete_token(&t.id, true, &audit("d"), false).await.unwrap();

    s.update_token(&all[0].id, &TokenChange { enabled: Some(false), ..Default::default() }, &audit("token_disable"))
        .await
        .unwrap();
    let enabled = s.list_tokens(&TokenFilter { enabled: Some(true), ..Default::default() }, &first, 100).await.unwrap();
    assert_eq!(enabled.len(), 6);
}

async fn hits_record_only_for_enabled_tokens(s: Arc<dyn Store>) {
    let live = token("http", "live", DEFAULT_FLOCK, 1);
    let mut off = token("http", "off", DEFAULT_FLOCK, 2);
    off.enabled = false;
    s.insert_token(&live, &[], &[], &audit("token_create")).await.unwrap();
    s.insert_token(&off, &[], &[], &audit("token_create")).await.unwrap();

    let out = s
        .record_hits(
            &[
                hit(&live.id, "192.0.2.1", 10),
                hit(&off.id, "192.0.2.2", 11),
                hit("nosuchtoken0000000000000a", "192.0.2.3", 12),
                hit(&live.id, "192.0.2.4", 13),
            ],
            &rules(alert_all, no_alerts),
        )
        .await
        .unwrap();
    assert_eq!(out.len(), 4);
    assert!(matches!(&out[0], HitOutcome::Recorded { token, .. } if token.id == live.id && token.kind == "http"));
    assert_eq!(out[1], HitOutcome::Unknown);
    assert_eq!(out[2], HitOutcome::Unknown);
    let (
        HitOutcome::Recorded { incident_id: a, hit_id: ha, .. },
        HitOutcome::Recorded { incident_id: b, hit_id: hb, .. },
    ) = (&out[0], &out[3])
    else {
        panic!("{out:?}")
    };
    assert_ne!(a, b);
    assert_ne!(ha, hb);

    assert_eq!(s.get_token(&live.id).await.unwrap().unwrap().triggered_count, 2);
    assert_eq!(s.get_token(&off.id).await.unwrap().unwrap().triggered_count, 0);

    let incidents = s.list_incidents(&IncidentFilter::default()).await.unwrap();
    assert_eq!(incidents.len(), 2);
    assert_eq!(incidents[0].src_ip, "192.0.2.4", "newest first");
    let first = &incidents[1];
    assert_eq!(first.memo, "live");
    assert_eq!(first.kind, "http");
    assert_eq!(first.channel, Channel::Http);
    assert!(!first.acknowledged);
    assert_eq!(first.events.len(), 1);
    let ev = &first.events[0];
    assert_eq!(ev.src_port, 4242);
    assert_eq!(ev.time_us, 10);
    assert_eq!(ev.data["headers"]["User-Agent"], "curl/8");
    assert_eq!(ev.data["ünïcode"], "✓");
    // Hits leave no audit entries: the audit log is for management actions.
    assert!(s.list_audit(100).await.unwrap().iter().all(|a| a.action == "token_create"));
}

async fn incidents_filter_acknowledge_delete(s: Arc<dyn Store>) {
    let t1 = token("dns", "one", DEFAULT_FLOCK, 1);
    let t2 = token("dns", "two", DEFAULT_FLOCK, 2);
    s.insert_token(&t1, &[], &[], &audit("token_create")).await.unwrap();
    s.insert_token(&t2, &[], &[], &audit("token_create")).await.unwrap();
    s.record_hits(
        &[hit(&t1.id, "198.51.100.1", 1_000), hit(&t1.id, "198.51.100.2", 2_000), hit(&t2.id, "198.51.100.1", 3_000)],
        &rules(alert_all, no_alerts),
    )
    .await
    .unwrap();
    let f = |mut f: IncidentFilter| {
        f.limit = f.limit.or(Some(100));
        f
    };
    let count = |v: Vec<Incident>| v.len();
    assert_eq!(
        count(
            s.list_incidents(&f(IncidentFilter { token_id: Some(t1.id.clone()), ..Default::default() })).await.unwrap()
        ),
        2
    );
    assert_eq!(
        count(
            s.list_incidents(&f(IncidentFilter { src_ip: Some("198.51.100.1".into()), ..Default::default() }))
                .await
                .unwrap()
        ),
        2
    );
    assert_eq!(
        count(
            s.list_incidents(&f(IncidentFilter { created_after_us: Some(1_500), ..Default::default() })).await.unwrap()
        ),
        2
    );
    assert_eq!(
        count(
            s.list_incidents(&f(IncidentFilter { created_before_us: Some(1_500), ..Default::default() }))
                .await
                .unwrap()
        ),
        1
    );
    assert_eq!(
        count(
            s.list_incidents(&f(IncidentFilter { flock_id: Some("flock:other".into()), ..Default::default() }))
                .await
                .unwrap()
        ),
        0
    );
    assert_eq!(count(s.list_incidents(&IncidentFilter { limit: Some(1), ..Default::default() }).await.unwrap()), 1);

    let all = s.list_incidents(&IncidentFilter::default()).await.unwrap();
    let one = all.iter().find(|i| i.token_id == t2.id).unwrap().id;
    let by_id = IncidentFilter { id: Some(one), ..Default::default() };
    assert_eq!(s.set_acknowledged(&by_id, true, &audit("incident_acknowledge")).await.unwrap(), vec![one]);
    let acked = s.list_incidents(&IncidentFilter { acknowledged: Some(true), ..Default::default() }).await.unwrap();
    assert_eq!(acked.iter().map(|i| i.id).collect::<Vec<_>>(), vec![one]);
    assert!(s
        .set_acknowledged(&IncidentFilter { id: Some(-5), ..Default::default() }, true, &audit("x"))
        .await
        .unwrap()
        .is_empty());

    // Delete only acknowledged ones: the hits go with them.
    let acked_only = IncidentFilter { acknowledged: Some(true), ..Default::default() };
    assert_eq!(s.delete_incidents(&acked_only, &audit("incident_delete")).await.unwrap(), vec![one]);
    assert_eq!(s.list_incidents(&IncidentFilter::default()).await.unwrap().len(), 2);
    assert_eq!(s.get_token(&t2.id).await.unwrap().unwrap().triggered_count, 0, "hits deleted with their incident");
    assert_eq!(
        s.set_acknowledged(&IncidentFilter::default(), true, &audit("incident_acknowledge")).await.unwrap().len(),
        2
    );
    assert_eq!(
        s.set_acknowledged(&IncidentFilter::default(), false, &audit("incident_unacknowledge")).await.unwrap().len(),
        2
    );
    assert!(s.list_incidents(&IncidentFilter::default()).await.unwrap().iter().all(|i| !i.acknowledged));
}

async fn token_delete_needs_cleared_incidents(s: Arc<dyn Store>) {
    let keep = token("http", "keep", DEFAULT_FLOCK, 1);
    let clear = token("http", "clear", DEFAULT_FLOCK, 2);
    let quiet = token("http", "quiet", DEFAULT_FLOCK, 3);
    for t in [&keep, &clear, &quiet] {
        s.insert_token(t, &[], &[], &audit("token_create")).await.unwrap();
    }
    let ignore = |_: &Token, _: &NewHit| Judgement::Ignore { reason: "kept, no incident".into() };
    s.record_hits(&[hit(&keep.id, "203.0.113.1", 1), hit(&clear.id, "203.0.113.2", 2)], &rules(alert_all, no_alerts))
        .await
        .unwrap();
    s.record_hits(&[hit(&quiet.id, "203.0.113.3", 3)], &rules(ignore, no_alerts)).await.unwrap();

    // A token with incidents stays, with everything it had, unless they are cleared too.
    assert_eq!(
        s.delete_token(&keep.id, false, &audit("token_delete"), false).await.unwrap(),
        TokenDeletion::HasIncidents
    );
    assert!(s.get_token(&keep.id).await.unwrap().is_some());
    assert_eq!(s.token_hits(&keep.id, 10, None).await.unwrap().len(), 1);
    assert_eq!(s.delete_token(&clear.id, true, &audit("token_delete"), false).await.unwrap(), TokenDeletion::Deleted);
    assert_eq!(s.delete_token(&clear.id, true, &audit("token_delete"), false).await.unwrap(), TokenDeletion::NotFound);
    // Without incidents it simply goes, and its hits (which raised none) with it.
    assert_eq!(s.delete_token(&quiet.id, false, &audit("token_delete"), false).await.unwrap(), TokenDeletion::Deleted);
    assert!(s.token_hits(&quiet.id, 10, None).await.unwrap().is_empty());
    let left = s.list_incidents(&IncidentFilter::default()).await.unwrap();
    assert_eq!(left.iter().map(|i| i.token_id.as_str()).collect::<Vec<_>>(), [keep.id.as_str()]);
    let deletes = s.list_audit(10).await.unwrap().into_iter().filter(|a| a.action == "token_delete").count();
    assert_eq!(deletes, 2, "a refused delete leaves no audit entry");
    // A deleted token records nothing more.
    assert_eq!(
        s.record_hits(&[hit(&clear.id, "203.0.113.2", 4)], &rules(alert_all, no_alerts)).await.unwrap(),
        vec![HitOutcome::Unknown]
    );
}

async fn token_search_by_word_prefix(s: Arc<dyn Store>) {
    let payroll = token("dns", "Payroll share (HR-2024)", DEFAULT_FLOCK, 1);
    let backup = token("dns", "backup host: db-payroll", DEFAULT_FLOCK, 2);
    let ecole = token("dns", "Serveur de l'ÉCOLE", DEFAULT_FLOCK, 3);
    for t in [&payroll, &backup, &ecole] {
        s.insert_token(t, &[], &[], &audit("token_create")).await.unwrap();
    }
    let find = |words: &[&str]| {
        let f = TokenFilter { words: words.iter().map(|w| w.to_string()).collect(), ..Default::default() };
        let s = s.clone();
        async move {
            let mut ids: Vec<String> =
                s.list_tokens(&f, &PageStart::default(), 100).await.unwrap().into_iter().map(|t| t.id).collect();
            ids.sort();
            assert_eq!(s.count_tokens(&f).await.unwrap(), ids.len() as i64);
            ids
        }
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(find(&["pay"]).await, sorted(vec![payroll.id.clone(), backup.id.clone()]));
    assert_eq!(find(&["sha"]).await, vec![payroll.id.clone()]);
    assert!(find(&["roll"]).await.is_empty(), "prefixes of words, not substrings");
    assert_eq!(find(&["pay", "db"]).await, vec![backup.id.clone()], "every word must match");
    assert_eq!(find(&["2024"]).await, vec![payroll.id.clone()]);
    assert_eq!(find(&["école"]).await, vec![ecole.id.clone()], "folded beyond ASCII, on both engines");
    assert_eq!(find(&[&payroll.id[..6]]).await, vec![payroll.id.clone()], "the token id's start");
    assert!(find(&["%"]).await.is_empty());
    // A changed memo is found by its new words only.
    s.update_token(
        &ecole.id,
        &TokenChange { memo: Some("moved to the annex".into()), ..Default::default() },
        &audit("u"),
    )
    .await
    .unwrap();
    assert!(find(&["école"]).await.is_empty());
    assert_eq!(find(&["ann"]).await, vec![ecole.id.clone()]);
}

async fn concurrent_batches_all_commit(s: Arc<dyn Store>) {
    let t = token("dns", "busy", DEFAULT_FLOCK, 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..8 {
        let (s1, id) = (s.clone(), t.id.clone());
        tasks.push(tokio::spawn(async move {
            let s = s1;
            for b in 0..5 {
                let batch: Vec<NewHit> =
                    (0..10).map(|i| hit(&id, "127.0.0.1", (w * 1000 + b * 10 + i) as i64)).collect();
                let out = s.record_hits(&batch, &rules(alert_all, no_alerts)).await.unwrap();
                assert!(out.iter().all(|o| matches!(o, HitOutcome::Recorded { .. })));
            }
        }));
        // A management write racing the hits must not fail either.
        let s2 = s.clone();
        tasks.push(tokio::spawn(async move {
            s2.append_audit(&audit("concurrent")).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.get_token(&t.id).await.unwrap().unwrap().triggered_count, 400);
}

async fn audit_log_newest_first(s: Arc<dyn Store>) {
    s.append_audit(&audit("first")).await.unwrap();
    let f = Flock { id: "flock:aud".into(), name: "A".into(), created_us: 1 };
    s.insert_flock(&f, &audit("flock_create")).await.unwrap();
    // A change that does not happen writes no audit entry.
    assert!(!s.rename_flock("flock:missing", "x", &audit("flock_rename")).await.unwrap());
    let log = s.list_audit(10).await.unwrap();
    assert_eq!(log.iter().map(|a| a.action.as_str()).collect::<Vec<_>>(), vec!["flock_create", "first"]);
    assert_eq!(log[0].actor, "tester");
    assert_eq!(log[0].src_ip, "127.0.0.1");
    assert_eq!(s.list_audit(1).await.unwrap().len(), 1);
}

async fn first_key_only_once(s: Arc<dyn Store>) {
    let key = |id: &str| ApiKey {
        key_id: id.into(),
        secret_hash: format!("{id:0>64}"),
        role: Role::Admin,
        flock_id: None,
        active: true,
        expire_us: 0,
        description: String::new(),
        created_us: 1,
        last_used_us: None,
        created_by: "cli".into(),
        annotations: Vec::new(),
    };
    // Several "nodes" race to make the first key: exactly one wins.
    let mut racers = Vec::new();
    for i in 0..6 {
        let s = s.clone();
        let k = key(&format!("k{i}"));
        racers.push(tokio::spawn(async move { s.insert_first_api_key(&k, &audit("key_create")).await.unwrap() }));
    }
    let mut wins = 0;
    for r in racers {
        wins += r.await.unwrap() as i32;
    }
    assert_eq!(wins, 1);
    assert_eq!(s.count_api_keys().await.unwrap(), 1);
    assert_eq!(s.list_audit(10).await.unwrap().len(), 1, "only the winner is audited");
}

async fn token_insert_needs_its_flock(s: Arc<dyn Store>) {
    let t = token("dns", "orphan?", "flock:gone", 1);
    assert!(!s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap());
    assert_eq!(s.get_token(&t.id).await.unwrap(), None);
    assert!(s.list_audit(10).await.unwrap().is_empty());
    // Racing a flock delete against token inserts never leaves a token without its flock.
    s.insert_flock(&Flock { id: "flock:race".into(), name: "R".into(), created_us: 1 }, &audit("flock_create"))
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let t = token("dns", &format!("race {i}"), "flock:race", i);
            s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap()
        }));
    }
    let s2 = s.clone();
    let deleter = tokio::spawn(async move { s2.delete_flock("flock:race", &audit("flock_delete")).await.unwrap() });
    let mut inserted = 0;
    for t in tasks {
        inserted += t.await.unwrap() as usize;
    }
    let deletion = deleter.await.unwrap();
    let left = s
        .list_tokens(
            &TokenFilter { flock_id: Some("flock:race".into()), ..Default::default() },
            &PageStart::default(),
            100,
        )
        .await
        .unwrap();
    assert_eq!(left.len(), inserted);
    match deletion {
        FlockDeletion::Deleted => assert_eq!(inserted, 0, "flock deleted while tokens went in"),
        FlockDeletion::NotEmpty => assert!(s.get_flock("flock:race").await.unwrap().is_some()),
        FlockDeletion::NotFound => panic!("the flock existed"),
    }
}

async fn judgements_ignore_drop_and_dedupe(s: Arc<dyn Store>) {
    let t = token("sensitive-cmd", "judged", DEFAULT_FLOCK, 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    // A judge keyed on the hit's "v": ignore, drop, or alert with a dedupe key and extra data.
    let judge = |_: &Token, h: &NewHit| match h.data["v"].as_str().unwrap_or("") {
        "ignore" => Judgement::Ignore { reason: "no data".into() },
        "drop" => Judgement::Drop,
        key => {
            let mut extra = serde_json::Map::new();
            extra.insert("decoded".into(), json!(key.to_uppercase()));
            Judgement::Alert { extra, dedupe_key: Some(key.to_string()) }
        }
    };
    let h = |v: &str| NewHit { data: json!({ "v": v }), ..hit(&t.id, "192.0.2.9", 1) };
    let out = s
        .record_hits(&[h("ignore"), h("drop"), h("inv1"), h("inv1"), h("inv2")], &rules(judge, no_alerts))
        .await
        .unwrap();
    assert!(matches!(&out[0], HitOutcome::Recorded { incident_id: None, .. }), "{:?}", out[0]);
    assert!(matches!(&out[1], HitOutcome::Dropped { token } if token.id == t.id));
    assert!(matches!(&out[2], HitOutcome::Recorded { incident_id: Some(_), .. }));
    assert!(matches!(&out[3], HitOutcome::Recorded { incident_id: None, .. }), "a repeat of inv1 is not a new alert");
    assert!(matches!(&out[4], HitOutcome::Recorded { incident_id: Some(_), .. }));
    // Dedupe holds across batches too.
    let again = s.record_hits(&[h("inv2")], &rules(judge, no_alerts)).await.unwrap();
    assert!(matches!(&again[0], HitOutcome::Recorded { incident_id: None, .. }));

    let incidents =
        s.list_incidents(&IncidentFilter { token_id: Some(t.id.clone()), ..Default::default() }).await.unwrap();
    assert_eq!(incidents.len(), 2, "only inv1 and inv2 raised incidents");
    let mut decoded: Vec<String> =
        incidents.iter().map(|i| i.events[0].data["decoded"].as_str().unwrap().to_string()).collect();
    decoded.sort();
    assert_eq!(decoded, ["INV1", "INV2"]);
    assert_eq!(s.get_token(&t.id).await.unwrap().unwrap().triggered_count, 2, "ignored hits do not count");
}

async fn token_files_round_trip(s: Arc<dyn Store>) {
    let t = token("web-image", "with a file", DEFAULT_FLOCK, 1);
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let f = TokenFile { name: "web_image".into(), content_type: "image/png".into(), data: bytes };
    assert!(s.insert_token(&t, std::slice::from_ref(&f), &[], &audit("token_create")).await.unwrap());
    assert_eq!(s.get_token_file(&t.id, "web_image").await.unwrap(), Some(f));
    assert_eq!(s.get_token_file(&t.id, "other").await.unwrap(), None);
    s.delete_token(&t.id, false, &audit("token_delete"), false).await.unwrap();
    assert_eq!(s.get_token_file(&t.id, "web_image").await.unwrap(), None, "files go with their token");
}

async fn reports_attach_once_with_the_right_nonce(s: Arc<dyn Store>) {
    let t = token("http", "scanned", DEFAULT_FLOCK, 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    let h = NewHit { private: Some(amend_guard("n0nce")), ..hit(&t.id, "192.0.2.1", 1) };
    let plain = hit(&t.id, "192.0.2.2", 2);
    let out = s.record_hits(&[h, plain], &rules(alert_all, no_alerts)).await.unwrap();
    let [HitOutcome::Recorded { hit_id, .. }, HitOutcome::Recorded { hit_id: plain_id, .. }] = out.as_slice() else {
        panic!("not recorded: {out:?}")
    };
    let report = json!({ "language": "en-GB" });
    assert!(!s.amend_hit(*hit_id, &t.id, "wrong", "browser", report.clone()).await.unwrap());
    assert!(!s.amend_hit(*hit_id, "othertoken000000000000000", "n0nce", "browser", report.clone()).await.unwrap());
    assert!(!s.amend_hit(*plain_id, &t.id, "", "browser", report.clone()).await.unwrap(), "no guard, no amending");
    assert!(!s.amend_hit(*hit_id, &t.id, "n0nce", "method", json!("POST")).await.unwrap(), "data is never replaced");
    assert!(s.amend_hit(*hit_id, &t.id, "n0nce", "browser", report.clone()).await.unwrap());
    assert!(!s.amend_hit(*hit_id, &t.id, "n0nce", "browser", json!({"x": 1})).await.unwrap(), "only once");
    let inc = s.list_incidents(&IncidentFilter { token_id: Some(t.id.clone()), ..Default::default() }).await.unwrap();
    assert_eq!(inc.len(), 2, "a report is no incident of its own");
    let amended = inc.iter().flat_map(|i| &i.events).find(|h| h.id == *hit_id).unwrap();
    assert_eq!(amended.data["browser"], report);
    assert_eq!(amended.data["method"], "GET");
    for h in s.token_hits(&t.id, 10, None).await.unwrap() {
        assert!(!h.data.to_string().contains("n0nce"), "private data is never shown: {}", h.data);
    }
}

async fn trigger_keys_name_their_token_until_it_goes(s: Arc<dyn Store>) {
    let key = |v: &str| TriggerKey { scheme: KeyScheme::WireGuardPublicKey, value: v.into() };
    let by_key = |k: TriggerKey, ip: &str| NewHit { token: TokenRef::Key(k), ..hit("", ip, 5) };
    let t = token("wireguard", "peer", DEFAULT_FLOCK, 1);
    assert!(s.insert_token(&t, &[], &[key("pk-1"), key("pk-2")], &audit("token_create")).await.unwrap());

    // Resolved inside the recording transaction, stored under the token.
    let other_scheme = TriggerKey { scheme: KeyScheme::CertificateSha256, value: "pk-1".into() };
    let hits =
        [by_key(key("pk-2"), "192.0.2.1"), by_key(key("nosuch"), "192.0.2.2"), by_key(other_scheme, "192.0.2.3")];
    let out = s.record_hits(&hits, &rules(alert_all, no_alerts)).await.unwrap();
    assert!(matches!(&out[0], HitOutcome::Recorded { token, status: AlertStatus::Alerted, .. } if token.id == t.id));
    assert_eq!(out[1..], [HitOutcome::Unknown, HitOutcome::Unknown], "an unknown key is like an unknown id");
    let stored = s.token_hits(&t.id, 10, None).await.unwrap();
    assert_eq!(
        stored.iter().map(|h| (h.token_id.as_str(), h.src_ip.as_str())).collect::<Vec<_>>(),
        [(t.id.as_str(), "192.0.2.1")]
    );

    // A key names one token: a second token claiming it is refused, and nothing of it stays.
    let thief = token("wireguard", "thief", DEFAULT_FLOCK, 2);
    assert!(s.insert_token(&thief, &[], &[key("pk-3"), key("pk-1")], &audit("token_create")).await.is_err());
    assert_eq!(s.get_token(&thief.id).await.unwrap(), None, "the whole insert is undone");
    let out = s.record_hits(&[by_key(key("pk-3"), "192.0.2.4")], &rules(alert_all, no_alerts)).await.unwrap();
    assert_eq!(out, [HitOutcome::Unknown], "its other keys were not kept either");

    // The keys go with their token: hits by them are unknown, and they may name another.
    assert_eq!(s.delete_token(&t.id, true, &audit("token_delete"), false).await.unwrap(), TokenDeletion::Deleted);
    let out = s.record_hits(&[by_key(key("pk-1"), "192.0.2.5")], &rules(alert_all, no_alerts)).await.unwrap();
    assert_eq!(out, [HitOutcome::Unknown]);
    let next = token("wireguard", "next", DEFAULT_FLOCK, 3);
    assert!(s.insert_token(&next, &[], &[key("pk-1")], &audit("token_create")).await.unwrap());
    let out = s.record_hits(&[by_key(key("pk-1"), "192.0.2.6")], &rules(alert_all, no_alerts)).await.unwrap();
    assert!(matches!(&out[0], HitOutcome::Recorded { token, .. } if token.id == next.id), "{out:?}");
}

async fn api_keys_manage(s: Arc<dyn Store>) {
    let key = |id: &str, role: Role, by: &str| ApiKey {
        key_id: id.into(),
        secret_hash: format!("{id:0>64}"),
        role,
        flock_id: None,
        active: true,
        expire_us: 0,
        description: String::new(),
        created_us: 1,
        last_used_us: None,
        created_by: by.into(),
        annotations: Vec::new(),
    };
    s.insert_api_key(&key("a", Role::Admin, "bootstrap"), &audit("key_create")).await.unwrap();
    let mut host = key("h", Role::Deploy, "factory:f");
    host.annotations = vec![("owner".into(), "ops ✓".into()), ("rack".into(), "12".into())];
    s.insert_api_key(&host, &audit("host_enrol")).await.unwrap();
    assert_eq!(s.get_api_key("h").await.unwrap(), Some(host.clone()), "annotations are kept, in order");
    assert!(s.delete_api_key("h", &audit("key_delete")).await.unwrap());
    s.insert_api_key(&key("b", Role::Analyst, "provision"), &audit("key_create")).await.unwrap();
    assert_eq!(s.list_api_keys().await.unwrap().iter().map(|k| k.key_id.as_str()).collect::<Vec<_>>(), ["a", "b"]);
    let change =
        KeyChange { role: Some(Role::Admin), active: Some(false), expire_us: Some(5), description: Some("d".into()) };
    let k = s.update_api_key("b", &change, &audit("key_update")).await.unwrap().unwrap();
    assert_eq!((k.role, k.active, k.expire_us, k.description.as_str()), (Role::Admin, false, 5, "d"));
    assert_eq!(s.get_api_key("b").await.unwrap(), Some(k));
    assert!(s.update_api_key("zz", &change, &audit("key_update")).await.unwrap().is_none());
    assert!(s.delete_api_key("b", &audit("key_delete")).await.unwrap());
    assert!(!s.delete_api_key("b", &audit("key_delete")).await.unwrap());
    assert_eq!(s.get_api_key("b").await.unwrap(), None);
    // A key that may be made once: the mark outlives the key.
    assert!(s.insert_api_key_once(&key("p", Role::Admin, "provision"), &audit("key_create"), "once").await.unwrap());
    assert_eq!(s.get_setting("once").await.unwrap().as_deref(), Some("p"));
    assert!(s.delete_api_key("p", &audit("key_delete")).await.unwrap());
    let again = s.insert_api_key_once(&key("q", Role::Admin, "provision"), &audit("key_create"), "once").await;
    assert!(!again.unwrap(), "the mark stays after its key is deleted");
    assert_eq!(s.get_api_key("q").await.unwrap(), None, "and nothing was written");
    let actions: Vec<String> = s.list_audit(10).await.unwrap().into_iter().map(|a| a.action).collect();
    assert_eq!(
        actions,
        [
            "key_delete",
            "key_create",
            "key_delete",
            "key_update",
            "key_create",
            "key_delete",
            "host_enrol",
            "key_create"
        ],
        "misses write no audit"
    );
}

async fn factory_tokens_round_trip(s: Arc<dyn Store>) {
    let f = FactoryToken {
        id: "0123456789abcdef0123456789abcdef".into(),
        value_hash: "ff".repeat(32),
        label: "fleet".into(),
        flock_id: DEFAULT_FLOCK.into(),
        created_us: 10,
        expires_us: Some(1_000),
        revoked_us: None,
        last_used_us: None,
        cidrs: vec!["127.0.0.1/32".into(), "10.0.0.0/8".into()],
        use_count: 0,
        created_by: "k".into(),
        value_sealed: Some("v1.sealed-value".into()),
    };
    s.insert_factory(&f, &audit("factory_create")).await.unwrap();
    assert_eq!(s.factory_by_hash(&f.value_hash).await.unwrap(), Some(f.clone()));
    assert_eq!(s.get_factory(&f.id).await.unwrap(), Some(f.clone()));
    assert_eq!(s.list_factories().await.unwrap(), vec![f.clone()]);
    assert_eq!(f.status(999), FactoryStatus::Valid);
    assert_eq!(f.status(1_000), FactoryStatus::Expired);

    s.touch_factory(&f.id, 50).await.unwrap();
    s.touch_factory(&f.id, 60).await.unwrap();
    let used = s.get_factory(&f.id).await.unwrap().unwrap();
    assert_eq!((used.use_count, used.last_used_us), (2, Some(60)));

    let revoke = FactoryChange { label: Some("renamed".into()), expires_us: Some(None), revoked_us: Some(Some(70)) };
    let r = s.update_factory(&f.id, &revoke, &audit("factory_revoke")).await.unwrap().unwrap();
    assert_eq!((r.label.as_str(), r.expires_us, r.revoked_us), ("renamed", None, Some(70)));
    assert_eq!(r.status(0), FactoryStatus::Revoked);
    let restore = FactoryChange { revoked_us: Some(None), ..Default::default() };
    assert_eq!(
        s.update_factory(&f.id, &restore, &audit("factory_restore")).await.unwrap().unwrap().status(0),
        FactoryStatus::Valid
    );
    assert!(s.update_factory("nope", &restore, &audit("x")).await.unwrap().is_none());
    assert!(s.delete_factory(&f.id, &audit("factory_delete")).await.unwrap());
    assert!(!s.delete_factory(&f.id, &audit("factory_delete")).await.unwrap());
    assert_eq!(s.factory_by_hash(&f.value_hash).await.unwrap(), None);
}

async fn fql_queries_over_factories_and_audit(s: Arc<dyn Store>) {
    let now = now_us();
    let day = 86_400_000_000;
    let mk = |id: &str, label: &str, created: i64, expires: Option<i64>, revoked: Option<i64>| FactoryToken {
        id: format!("{id:0>32}"),
        value_hash: format!("{id:f>64}"),
        label: label.into(),
        flock_id: DEFAULT_FLOCK.into(),
        created_us: created,
        expires_us: expires,
        revoked_us: revoked,
        last_used_us: None,
        cidrs: vec![],
        use_count: 0,
        created_by: "k".into(),
        value_sealed: None,
    };
    for f in [
        mk("a1", "Alpha Fleet", now - 3 * day, None, None),
        mk("b2", "beta", now - 2 * day, Some(now - day), None),
        mk("c3", "gamma 100%_x", now - day, Some(now + day), Some(now - 10)),
        mk("d4", "delta", now - 10 * day, None, None),
    ] {
        s.insert_factory(&f, &audit("factory_create")).await.unwrap();
    }
    let q = |filter: &str| Query {
        filter: Some(trapline::fql::parse(filter).unwrap()),
        sort: Some("label.asc".into()),
        offset: 0,
        limit: 100,
    };
    let ids = |r: (Vec<String>, i64)| r.0.iter().map(|i| i.trim_start_matches('0').to_string()).collect::<Vec<_>>();
    let run = |filter: &'static str| {
        let s = s.clone();
        async move { ids(s.query_factories(&q(filter), now).await.unwrap_or_else(|e| panic!("{filter}: {e}"))) }
    };
    assert_eq!(run("label:'beta'").await, ["b2"]);
    assert_eq!(run("label:~'FLEET'").await, ["a1"]);
    assert_eq!(run("label:'alp*'").await, ["a1"], "wildcard matches ignore case, on both engines");
    assert_eq!(run("label:'Alp*'").await, ["a1"]);
    assert_eq!(run("label:'Beta'").await, [] as [&str; 0], "plain ':' is exact");
    assert_eq!(run("label:'gamma 100%_x'").await, ["c3"], "% and _ are literal");
    assert_eq!(run("label:'gamma 1%'").await, [] as [&str; 0]);
    assert_eq!(run("status:'revoked'").await, ["c3"]);
    assert_eq!(run("status:'expired'").await, ["b2"]);
    assert_eq!(run("status:['valid','expired']").await, ["a1", "b2", "d4"]);
    assert_eq!(run("status:!'valid'").await, ["b2", "c3"]);
    assert_eq!(run("expires_timestamp:null").await, ["a1", "d4"]);
    assert_eq!(run("expires_timestamp:!null").await, ["b2", "c3"]);
    assert_eq!(run("created_timestamp:>'now-4d'").await, ["a1", "b2", "c3"]);
    assert_eq!(run("created_timestamp:<='now-2d'+status:'valid'").await, ["a1", "d4"]);
    assert_eq!(run("(label:'beta',label:'delta')+expires_timestamp:null").await, ["d4"]);
    assert_eq!(run("label:'beta',label:'delta'+expires_timestamp:null").await, ["b2", "d4"], "+ binds tighter than ,");
    assert_eq!(run("type:'customer_managed'").await.len(), 4);
    assert_eq!(run("id:'000000000000000000000000000000a1'").await, ["a1"]);
    assert_eq!(run("label:!~'a'").await, [] as [&str; 0]);
    assert_eq!(run("label:>'c'").await, ["d4", "c3"], "text comparison (sorted by label)");

    // Sorting, paging and the total.
    let mut page = q("created_timestamp:>'now-30d'");
    page.sort = Some("created_timestamp|desc".into());
    page.limit = 2;
    let (first, total) = s.query_factories(&page, now).await.unwrap();
    assert_eq!(total, 4);
    assert_eq!(first.iter().map(|i| i.trim_start_matches('0')).collect::<Vec<_>>(), ["c3", "b2"]);
    page.offset = 2;
    let (second, _) = s.query_factories(&page, now).await.unwrap();
    assert_eq!(second.iter().map(|i| i.trim_start_matches('0')).collect::<Vec<_>>(), ["a1", "d4"]);
    let all = Query { limit: 100, ..Default::default() };
    assert_eq!(s.query_factories(&all, now).await.unwrap().0.len(), 4, "no filter: everything, newest first");

    // What the entity cannot use is a StoreError::Fql naming the position.
    for bad in ["nosuch:'x'", "created_timestamp:'yesterday'", "created_timestamp:~'x'"] {
        let e = s.query_factories(&q(bad), now).await.unwrap_err();
        let trapline::store::StoreError::Fql(fe) = e else { panic!("{bad}: {e}") };
        assert_eq!(fe.position, 0, "{bad}");
    }
    let mut badsort = q("label:'beta'");
    badsort.sort = Some("value.desc".into());
    assert!(matches!(s.query_factories(&badsort, now).await.unwrap_err(), trapline::store::StoreError::Fql(_)));

    // Audit events of factory tokens, with Falcon's action names.
    let target = format!("{:0>32}", "b2");
    s.update_factory(
        &target,
        &FactoryChange { revoked_us: Some(Some(now)), ..Default::default() },
        &AuditEntry { target: target.clone(), ..audit("factory_revoke") },
    )
    .await
    .unwrap();
    s.append_audit(&audit("token_create")).await.unwrap(); // a Canarytoken action: not a factory event
    let aq =
        |filter: &str| Query { filter: Some(trapline::fql::parse(filter).unwrap()), sort: None, offset: 0, limit: 100 };
    let (revokes, n) = s.query_factory_audit(&aq("action:'token_revoke'"), now).await.unwrap();
    assert_eq!((revokes.len(), n), (1, 1));
    let ev = s.factory_audit_events(&revokes).await.unwrap();
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].entry.action.as_str(), ev[0].entry.target.as_str()), ("token_revoke", target.as_str()));
    let (creates, n) = s.query_factory_audit(&aq("action:'token_create'+timestamp:>'now-1h'"), now).await.unwrap();
    assert_eq!((creates.len(), n), (4, 4), "the Canarytoken token_create is not counted");
    assert_eq!(s.query_factory_audit(&aq(&format!("token_id:'{target}'")), now).await.unwrap().1, 1);
    assert_eq!(s.query_factory_audit(&aq(&format!("id:{}", revokes[0])), now).await.unwrap().0, revokes);
}

async fn settings_round_trip(s: Arc<dyn Store>) {
    assert_eq!(s.get_setting("max_active_tokens").await.unwrap(), None);
    s.set_setting("max_active_tokens", "5", &audit("settings_update")).await.unwrap();
    s.set_setting("max_active_tokens", "7", &audit("settings_update")).await.unwrap();
    assert_eq!(s.get_setting("max_active_tokens").await.unwrap().as_deref(), Some("7"));
}

async fn alert_outbox_lifecycle(s: Arc<dyn Store>) {
    let t = token("dns", "alerting", DEFAULT_FLOCK, 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    let two = |_: &Token, h: &NewHit, _: &[AlertOutput]| {
        ["https://a.example/h", "https://b.example/h"]
            .iter()
            .map(|u| NewAlert { output: json!({"type": "webhook", "url": u}), payload: json!({"src": h.src_ip}) })
            .collect::<Vec<_>>()
    };
    let ignore = |_: &Token, _: &NewHit| Judgement::Ignore { reason: "no".into() };
    // Ignored hits raise no alerts; alerting hits one per output, in the same commit.
    s.record_hits(&[hit(&t.id, "192.0.2.50", 100)], &rules(ignore, two)).await.unwrap();
    assert!(s.due_alerts(now_us(), 10).await.unwrap().is_empty());
    let HitOutcome::Recorded { hit_id, incident_id: Some(inc), .. } =
        s.record_hits(&[hit(&t.id, "192.0.2.51", 200)], &rules(alert_all, two)).await.unwrap().remove(0)
    else {
        panic!()
    };
    let due = s.due_alerts(now_us(), 10).await.unwrap();
    assert_eq!(due.len(), 2);
    let a = &due[0];
    assert_eq!((a.incident_id, a.hit_id, a.token_id.as_str(), a.attempts), (inc, hit_id, t.id.as_str(), 0));
    assert_eq!(a.payload["src"], "192.0.2.51");
    assert_eq!(a.payload["idempotency_key"], a.idempotency_key.as_str());
    assert_eq!(a.payload["incident_id"], inc);
    assert_ne!(due[0].idempotency_key, due[1].idempotency_key);

    // Claiming is exclusive: what one worker claimed is not due for the next.
    let lease = now_us() + 60_000_000;
    let first = s.claim_due_alerts(now_us(), 1, lease, "node-a").await.unwrap();
    assert_eq!(first.iter().map(|x| x.id).collect::<Vec<_>>(), vec![a.id], "oldest first, at most `limit`");
    assert_eq!(first[0].payload, a.payload);
    let second = s.claim_due_alerts(now_us(), 10, lease, "node-a").await.unwrap();
    assert_eq!(second.iter().map(|x| x.id).collect::<Vec<_>>(), vec![due[1].id]);
    assert!(s.claim_due_alerts(now_us(), 10, lease, "node-b").await.unwrap().is_empty(), "leased alerts are not due");
    assert!(s.due_alerts(now_us(), 10).await.unwrap().is_empty());

    let failed = |id, attempts, error: &str, gave_up| AlertResult {
        id,
        attempts,
        outcome: AlertOutcome::Failed { error: error.into(), next_attempt_us: now_us() - 1, gave_up_us: gave_up },
    };
    s.finish_alerts(&[failed(a.id, 1, "HTTP 503", None)]).await.unwrap();
    let again = s.due_alerts(now_us(), 10).await.unwrap();
    let f = again.iter().find(|x| x.id == a.id).unwrap();
    assert_eq!((f.attempts, f.last_error.as_deref()), (1, Some("HTTP 503")));
    s.finish_alerts(&[
        AlertResult { id: a.id, attempts: 2, outcome: AlertOutcome::Delivered { when: now_us() } },
        failed(due[1].id, 5, "timeout", Some(now_us())),
    ])
    .await
    .unwrap();
    s.finish_alerts(&[]).await.unwrap();
    assert!(s.due_alerts(now_us(), 10).await.unwrap().is_empty(), "delivered and given-up alerts are done");
    let one = IncidentFilter { id: Some(inc), ..Default::default() };
    assert!(s.list_incidents(&one).await.unwrap()[0].notified, "an alert of it was delivered");
    let pending = s.list_alerts(true, 10).await.unwrap();
    assert_eq!(pending.iter().map(|x| x.id).collect::<Vec<_>>(), vec![due[1].id], "given up is still undelivered");
    assert!(pending[0].gave_up_us.is_some());
    assert_eq!(s.list_alerts(false, 10).await.unwrap().len(), 2);

    // Test alerts belong to no hit.
    s.insert_alerts(
        &[NewAlert { output: json!({"type": "webhook", "url": "https://c.example"}), payload: json!({"test": true}) }],
        "test-x",
        &audit("test_alert"),
    )
    .await
    .unwrap();
    let t = s.due_alerts(now_us(), 10).await.unwrap();
    assert_eq!((t.len(), t[0].idempotency_key.as_str(), t[0].incident_id), (1, "test-x-0", 0));
}

/// One alert output per call, naming the outputs it was given (to see them reach the alerter).
fn one_alert(_: &Token, h: &NewHit, managed: &[AlertOutput]) -> Vec<NewAlert> {
    let names: Vec<&str> = managed.iter().map(|o| o.id.as_str()).collect();
    vec![NewAlert {
        output: json!({"type": "webhook", "url": "https://a.example/"}),
        payload: json!({"src": h.src_ip, "managed": names}),
    }]
}

fn statuses(out: &[HitOutcome]) -> Vec<Option<AlertStatus>> {
    out.iter()
        .map(|o| match o {
            HitOutcome::Recorded { status, .. } => Some(*status),
            _ => None,
        })
        .collect()
}

async fn repeats_from_one_source_join_the_open_incident(s: Arc<dyn Store>) {
    let t = token("dns", "grouped", DEFAULT_FLOCK, 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    let r = HitRules::new(alert_all, one_alert).with_noise(NoiseRules { group_window_secs: 60, ..NoiseRules::none() });
    let sec = 1_000_000;
    // A then AAAA from one resolver in one batch, another source, then the first source again
    // 59 s after its last hit (the window slides), then after a quiet minute.
    let out = s
        .record_hits(
            &[
                hit(&t.id, "192.0.2.1", 100 * sec),
                hit(&t.id, "192.0.2.1", 101 * sec),
                hit(&t.id, "192.0.2.2", 102 * sec),
            ],
            &r,
        )
        .await
        .unwrap();
    use AlertStatus::*;
    assert_eq!(statuses(&out), [Some(Alerted), Some(Grouped), Some(Alerted)]);
    let out = s.record_hits(&[hit(&t.id, "192.0.2.1", 160 * sec)], &r).await.unwrap();
    assert_eq!(statuses(&out), [Some(Grouped)]);
    let out = s.record_hits(&[hit(&t.id, "192.0.2.1", 221 * sec)], &r).await.unwrap();
    assert_eq!(statuses(&out), [Some(Alerted)], "61 s after the last hit is a new incident");
    assert_eq!(s.due_alerts(now_us(), 100).await.unwrap().len(), 3, "grouped hits raise no alert");

    let incidents =
        s.list_incidents(&IncidentFilter { token_id: Some(t.id.clone()), ..Default::default() }).await.unwrap();
    let mut shape: Vec<(String, usize)> = incidents.iter().map(|i| (i.src_ip.clone(), i.events.len())).collect();
    shape.sort();
    assert_eq!(shape, [("192.0.2.1".to_string(), 1), ("192.0.2.1".to_string(), 3), ("192.0.2.2".to_string(), 1)]);
    let big = incidents.iter().find(|i| i.events.len() == 3).unwrap();
    assert_eq!(big.events.iter().map(|h| h.alert_status).collect::<Vec<_>>(), [Alerted, Grouped, Grouped]);
    assert!(big.alerted);

    // An acknowledged incident is closed: the next repeat opens a new one.
    s.set_acknowledged(&IncidentFilter { id: Some(incidents[0].id), ..Default::default() }, true, &audit("ack"))
        .await
        .unwrap();
    let out = s.record_hits(&[hit(&t.id, "192.0.2.1", 222 * sec)], &r).await.unwrap();
    assert_eq!(statuses(&out), [Some(Alerted)]);

    // Every hit is listed with its status, ignored ones too.
    let ign = HitRules::new(|_: &Token, _: &NewHit| Judgement::Ignore { reason: "listed".into() }, one_alert);
    assert_eq!(statuses(&s.record_hits(&[hit(&t.id, "192.0.2.9", 223 * sec)], &ign).await.unwrap()), [Some(Ignored)]);
    let hits = s.token_hits(&t.id, 100, None).await.unwrap();
    assert_eq!(hits.len(), 7);
    assert_eq!(
        (hits[0].alert_status, hits[0].incident_id, hits[0].data["ignored"].as_str()),
        (Ignored, 0, Some("listed"))
    );
    assert_eq!(s.token_hits(&t.id, 2, None).await.unwrap().len(), 2);
    // paging: the next page starts below the last id seen, until none are left
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s.token_hits(&t.id, 3, before).await.unwrap();
        if page.is_empty() {
            break;
        }
        before = page.last().map(|h| h.id);
        seen.extend(page.into_iter().map(|h| h.id));
    }
    assert_eq!(seen, hits.iter().map(|h| h.id).collect::<Vec<_>>(), "every hit once, newest first");
}

async fn cooldown_and_rate_limit_throttle_but_keep_incidents(s: Arc<dyn Store>) {
    use AlertStatus::*;
    let sec = 1_000_000;
    let r = HitRules::new(alert_all, one_alert).with_noise(NoiseRules::none());
    // -1: the first incident alerts, later ones (other sources) are throttled but stored.
    let mut once = token("dns", "once", DEFAULT_FLOCK, 1);
    once.alert_cooldown_secs = Some(-1);
    s.insert_token(&once, &[], &[], &audit("token_create")).await.unwrap();
    let out = s.record_hits(&[hit(&once.id, "192.0.2.1", sec), hit(&once.id, "192.0.2.2", 2 * sec)], &r).await.unwrap();
    assert_eq!(statuses(&out), [Some(Alerted), Some(Throttled)]);
    let out = s.record_hits(&[hit(&once.id, "192.0.2.3", 100_000 * sec)], &r).await.unwrap();
    assert_eq!(statuses(&out), [Some(Throttled)]);
    let inc =
        s.list_incidents(&IncidentFilter { token_id: Some(once.id.clone()), ..Default::default() }).await.unwrap();
    assert_eq!(inc.len(), 3, "throttled incidents are stored");
    assert_eq!(inc.iter().filter(|i| i.alerted).count(), 1);
    assert!(inc
        .iter()
        .filter(|i| !i.alerted)
        .all(|i| i.events[0].data["throttled"].as_str().unwrap().contains("once")));

    // 300 s cooldown from the server default, and back to alerting once it has passed.
    let cool = token("dns", "cool", DEFAULT_FLOCK, 2);
    s.insert_token(&cool, &[], &[], &audit("token_create")).await.unwrap();
    let r300 = HitRules::new(alert_all, one_alert).with_noise(NoiseRules { cooldown_secs: 300, ..NoiseRules::none() });
    let out = s
        .record_hits(
            &[
                hit(&cool.id, "192.0.2.1", 1_000 * sec),
                hit(&cool.id, "192.0.2.2", 1_299 * sec),
                hit(&cool.id, "192.0.2.3", 1_300 * sec),
            ],
            &r300,
        )
        .await
        .unwrap();
    assert_eq!(statuses(&out), [Some(Alerted), Some(Throttled), Some(Alerted)]);
    // The token's own 0 overrides the default: every incident alerts.
    s.update_token(&cool.id, &TokenChange { alert_cooldown_secs: Some(Some(0)), ..Default::default() }, &audit("u"))
        .await
        .unwrap();
    let out = s.record_hits(&[hit(&cool.id, "192.0.2.4", 1_301 * sec)], &r300).await.unwrap();
    assert_eq!(statuses(&out), [Some(Alerted)]);

    // At most 2 alerts in any hour.
    let mut capped = token("dns", "capped", DEFAULT_FLOCK, 3);
    capped.alert_max_per_hour = Some(2);
    s.insert_token(&capped, &[], &[], &audit("token_create")).await.unwrap();
    let hits: Vec<NewHit> =
        (0..4).map(|i| hit(&capped.id, &format!("192.0.2.{}", 10 + i), (5_000 + i) * sec)).collect();
    assert_eq!(
        statuses(&s.record_hits(&hits, &r).await.unwrap()),
        [Some(Alerted), Some(Alerted), Some(Throttled), Some(Throttled)]
    );
    let later = s.record_hits(&[hit(&capped.id, "192.0.2.20", 5_000 * sec + noise_hour())], &r).await.unwrap();
    assert_eq!(statuses(&later), [Some(Alerted)], "an hour later the limit has room again");
    let alerts = s.due_alerts(now_us(), 100).await.unwrap();
    assert_eq!(alerts.len(), 1 + 3 + 3, "one outbox row per alerting incident, none for throttled ones");
}

fn noise_hour() -> Micros {
    trapline::noise::HOUR_US
}

async fn api_outputs_reach_the_alerter_and_go_with_their_flock(s: Arc<dyn Store>) {
    s.insert_flock(&Flock { id: "flock:ops".into(), name: "Ops".into(), created_us: 1 }, &audit("flock_create"))
        .await
        .unwrap();
    let out = |id: &str, flock: Option<&str>| AlertOutput {
        id: id.into(),
        flock_id: flock.map(str::to_string),
        output: json!({"type": "webhook", "url": format!("https://{id}.example/")}),
        created_us: 5,
        created_by: "tester".into(),
    };
    s.insert_alert_output(&out("out_all", None), &audit("output_add")).await.unwrap();
    s.insert_alert_output(&out("out_ops", Some("flock:ops")), &audit("output_add")).await.unwrap();
    assert_eq!(s.list_alert_outputs().await.unwrap(), vec![out("out_all", None), out("out_ops", Some("flock:ops"))]);

    let t = token("dns", "routed", DEFAULT_FLOCK, 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    let r = HitRules::new(alert_all, one_alert).with_noise(NoiseRules::none()).with_key_prefix("inst1-");
    let HitOutcome::Recorded { hit_id, .. } = s.record_hits(&[hit(&t.id, "192.0.2.1", 1)], &r).await.unwrap().remove(0)
    else {
        panic!()
    };
    let due = s.due_alerts(now_us(), 10).await.unwrap();
    assert_eq!(due[0].payload["managed"], json!(["out_all", "out_ops"]), "the alerter sees every API output");
    assert_eq!(due[0].idempotency_key, format!("inst1-hit-{hit_id}-0"));

    assert!(s.delete_alert_output("out_all", &audit("output_delete")).await.unwrap());
    assert!(!s.delete_alert_output("out_all", &audit("output_delete")).await.unwrap());
    assert_eq!(s.delete_flock("flock:ops", &audit("flock_delete")).await.unwrap(), FlockDeletion::Deleted);
    assert!(s.list_alert_outputs().await.unwrap().is_empty(), "a flock's outputs go with it");
    let actions: Vec<String> = s.list_audit(10).await.unwrap().into_iter().map(|a| a.action).collect();
    assert!(
        actions.iter().filter(|a| *a == "output_add").count() == 2 && actions.contains(&"output_delete".to_string())
    );
}

async fn install_id_is_made_once(s: Arc<dyn Store>) {
    let a = s.install_id().await.unwrap();
    assert_eq!(a.len(), 12);
    assert_eq!(s.install_id().await.unwrap(), a);
}

async fn concurrent_claims_never_share_an_alert(s: Arc<dyn Store>) {
    let alerts: Vec<NewAlert> = (0..60)
        .map(|i| NewAlert { output: json!({"type": "webhook", "url": "https://a.example/"}), payload: json!({"n": i}) })
        .collect();
    s.insert_alerts(&alerts, "many", &audit("test_alert")).await.unwrap();
    let lease = now_us() + 60_000_000;
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = s.claim_due_alerts(now_us(), 7, lease, "node-x").await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|a| a.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        all.extend(w.await.unwrap());
    }
    all.sort_unstable();
    let before = all.len();
    all.dedup();
    assert_eq!((before, all.len()), (60, 60), "every alert claimed exactly once");
}

async fn incident_change_sequence(s: Arc<dyn Store>) {
    let t = token("dns", "polled", DEFAULT_FLOCK, 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    let grouping = HitRules::new(alert_all, no_alerts).with_noise(NoiseRules {
        group_window_secs: 60,
        cooldown_secs: 0,
        max_per_hour: 0,
    });
    let by_token = || IncidentFilter { token_id: Some(t.id.clone()), ..Default::default() };
    let since = |n: i64| IncidentFilter { updated_after: Some(n), order: IncidentOrder::Updated, ..by_token() };
    // One batch, two new incidents: one change, so one shared updated_id.
    s.record_hits(&[hit(&t.id, "192.0.2.1", 1_000_000), hit(&t.id, "192.0.2.2", 1_000_001)], &grouping).await.unwrap();
    let two = s.list_incidents(&since(0)).await.unwrap();
    assert_eq!(two.len(), 2);
    assert!(two[0].updated_id > 0 && two[0].updated_id == two[1].updated_id, "{two:?}");
    let mark = two[0].updated_id;
    assert!(s.list_incidents(&since(mark)).await.unwrap().is_empty(), "nothing changed since");
    // A repeat joining the first incident moves it (and only it) past the mark.
    s.record_hits(&[hit(&t.id, "192.0.2.1", 2_000_000)], &grouping).await.unwrap();
    let moved = s.list_incidents(&since(mark)).await.unwrap();
    assert_eq!(moved.len(), 1);
    assert_eq!((moved[0].src_ip.as_str(), moved[0].events.len()), ("192.0.2.1", 2));
    let mark = moved[0].updated_id;
    // Acknowledging changes it; acknowledging it again changes nothing.
    let one = IncidentFilter { id: Some(moved[0].id), ..Default::default() };
    assert_eq!(s.set_acknowledged(&one, true, &audit("ack")).await.unwrap(), vec![moved[0].id]);
    let acked = s.list_incidents(&since(mark)).await.unwrap();
    assert_eq!(acked.iter().map(|i| (i.id, i.acknowledged)).collect::<Vec<_>>(), vec![(moved[0].id, true)]);
    let mark = acked[0].updated_id;
    assert_eq!(s.set_acknowledged(&one, true, &audit("ack")).await.unwrap(), vec![moved[0].id], "still named");
    assert!(s.list_incidents(&since(mark)).await.unwrap().is_empty(), "but not changed");
    s.set_acknowledged(&one, false, &audit("unack")).await.unwrap();
    let back = s.list_incidents(&since(mark)).await.unwrap();
    assert_eq!(back.iter().map(|i| (i.id, i.acknowledged)).collect::<Vec<_>>(), vec![(moved[0].id, false)]);
    // Oldest change first; the greatest updated_id of a listing is the latest change.
    let all = s.list_incidents(&since(0)).await.unwrap();
    assert_eq!(s.count_incidents(&since(0)).await.unwrap(), (2, Some(back[0].updated_id)));
    assert_eq!(s.count_incidents(&since(back[0].updated_id)).await.unwrap(), (0, None));
    assert!(all.windows(2).all(|w| (w[0].updated_id, w[0].id) < (w[1].updated_id, w[1].id)), "{all:?}");
    assert_eq!(all.last().unwrap().id, moved[0].id);
    // The first hit's ports and destination are the incident's.
    assert_eq!((all[0].src_port, all[0].dst_ip.as_str(), all[0].dst_port), (4242, "192.0.2.200", 8081));
    assert_eq!((all[0].events[0].dst_ip.as_str(), all[0].events[0].dst_port), ("192.0.2.200", 8081));
    assert!(!all[0].notified);
}

async fn incident_filters_text_kinds_hash_and_pages(s: Arc<dyn Store>) {
    let web = token("fast-redirect", "Wiki ADMIN page", DEFAULT_FLOCK, 1);
    let name = token("dns", "backup host", DEFAULT_FLOCK, 2);
    s.insert_token(&web, &[], &[], &audit("token_create")).await.unwrap();
    s.insert_token(&name, &[], &[], &audit("token_create")).await.unwrap();
    let mut hits = Vec::new();
    for i in 0..5 {
        hits.push(hit(&web.id, &format!("198.51.100.{i}"), 100 + i));
    }
    hits.push(hit(&name.id, "203.0.113.9", 200));
    hits.push(hit(&name.id, "203.0.113.9", 201));
    s.record_hits(&hits, &rules(alert_all, no_alerts)).await.unwrap();
    let ids = |v: Vec<Incident>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    let text = |t: &str| IncidentFilter { text: Some(t.into()), ..Default::default() };
    assert_eq!(s.count_incidents(&text("admin")).await.unwrap().0, 5, "memo, folded");
    assert_eq!(s.count_incidents(&text("203.0.113")).await.unwrap().0, 2, "source address");
    assert_eq!(s.count_incidents(&text(&web.id[3..12])).await.unwrap().0, 5, "token id");
    assert_eq!(s.count_incidents(&text("redirect")).await.unwrap().0, 5, "kind");
    assert_eq!(s.count_incidents(&text("nomatch")).await.unwrap().0, 0);
    assert_eq!(s.count_incidents(&text("%")).await.unwrap().0, 0, "wildcards are literal");
    let by_name = IncidentFilter { text_kinds: vec!["dns".into()], ..text("No Such Memo") };
    assert_eq!(s.count_incidents(&by_name).await.unwrap().0, 2, "or one of the kinds named");
    let kinds =
        |k: &[&str]| IncidentFilter { kinds: Some(k.iter().map(|x| x.to_string()).collect()), ..Default::default() };
    assert_eq!(s.count_incidents(&kinds(&["dns"])).await.unwrap().0, 2);
    assert_eq!(s.count_incidents(&kinds(&["dns", "fast-redirect"])).await.unwrap().0, 7);
    assert_eq!(s.count_incidents(&kinds(&[])).await.unwrap().0, 0, "no kinds: nothing");
    assert_eq!(
        s.incident_sources(&IncidentFilter::default()).await.unwrap()[0],
        ("203.0.113.9".to_string(), 2),
        "most incidents first"
    );

    // By hash id, and hash ids differ.
    let all = s.list_incidents(&IncidentFilter::default()).await.unwrap();
    let mut hashes: Vec<&str> = all.iter().map(|i| i.hash_id.as_str()).collect();
    assert!(hashes.iter().all(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit())));
    hashes.sort_unstable();
    hashes.dedup();
    assert_eq!(hashes.len(), 7);
    let found = s
        .list_incidents(&IncidentFilter { hash_id: Some(all[3].hash_id.clone()), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(ids(found), vec![all[3].id]);

    // Keyset pages, newest first, forwards and back; and by change order.
    let page = |key: Option<(i64, i64)>, backwards: bool, order: IncidentOrder| IncidentFilter {
        order,
        start: PageStart { key, backwards },
        limit: Some(3),
        ..Default::default()
    };
    let p1 = s.list_incidents(&page(None, false, IncidentOrder::Newest)).await.unwrap();
    let key = |i: &Incident| Some((i.created_us, i.id));
    let p2 = s.list_incidents(&page(key(p1.last().unwrap()), false, IncidentOrder::Newest)).await.unwrap();
    let p3 = s.list_incidents(&page(key(p2.last().unwrap()), false, IncidentOrder::Newest)).await.unwrap();
    assert_eq!((p1.len(), p2.len(), p3.len()), (3, 3, 1));
    assert_eq!([ids(p1.clone()), ids(p2.clone()), ids(p3)].concat(), ids(all.clone()));
    let back = s.list_incidents(&page(key(&p2[0]), true, IncidentOrder::Newest)).await.unwrap();
    assert_eq!(ids(back), ids(p1));
    let up = s.list_incidents(&page(None, false, IncidentOrder::Updated)).await.unwrap();
    assert_eq!(up.len(), 3);
    let rest = s
        .list_incidents(&IncidentFilter {
            start: PageStart { key: Some((up[2].updated_id, up[2].id)), backwards: false },
            ..page(None, false, IncidentOrder::Updated)
        })
        .await
        .unwrap();
    assert!(rest.iter().all(|i| (i.updated_id, i.id) > (up[2].updated_id, up[2].id)));

    // Bulk actions name what they touched.
    let deleted = s.delete_incidents(&kinds(&["dns"]), &audit("incident_delete")).await.unwrap();
    assert_eq!(deleted.len(), 2);
    assert!(s.delete_incidents(&text("nomatch"), &audit("incident_delete")).await.unwrap().is_empty());
    assert_eq!(s.count_incidents(&IncidentFilter::default()).await.unwrap().0, 5);
}

async fn alert_claims_are_taken_back_by_their_node(s: Arc<dyn Store>) {
    let alerts: Vec<NewAlert> = (0..3)
        .map(|i| NewAlert { output: json!({"type": "webhook", "url": "https://a.example/"}), payload: json!({"n": i}) })
        .collect();
    s.insert_alerts(&alerts, "claims", &audit("test_alert")).await.unwrap();
    let lease = now_us() + 600_000_000;
    let mine = s.claim_due_alerts(now_us(), 2, lease, "node-1").await.unwrap();
    let theirs = s.claim_due_alerts(now_us(), 2, lease, "node-2").await.unwrap();
    assert_eq!((mine.len(), theirs.len()), (2, 1));
    // node-1 finished one before it died; the other is taken back at once when it starts.
    s.finish_alerts(&[AlertResult {
        id: mine[0].id,
        attempts: 1,
        outcome: AlertOutcome::Delivered { when: now_us() },
    }])
    .await
    .unwrap();
    assert_eq!(s.release_claims("node-1", now_us()).await.unwrap(), 1);
    let due = s.claim_due_alerts(now_us(), 10, lease, "node-1").await.unwrap();
    assert_eq!(due.iter().map(|a| a.id).collect::<Vec<_>>(), vec![mine[1].id], "node-2's lease still holds");
    // A failure in backoff is no claim: releasing does not make it due early.
    s.finish_alerts(&[AlertResult {
        id: due[0].id,
        attempts: 1,
        outcome: AlertOutcome::Failed {
            error: "503".into(),
            next_attempt_us: now_us() + 600_000_000,
            gave_up_us: None,
        },
    }])
    .await
    .unwrap();
    assert_eq!(s.release_claims("node-1", now_us()).await.unwrap(), 0);
    assert!(s.claim_due_alerts(now_us(), 10, lease, "node-1").await.unwrap().is_empty());
}

async fn retention_spares_unacknowledged_incidents(s: Arc<dyn Store>) {
    let t = token("http", "kept", DEFAULT_FLOCK, 1);
    let other = token("http", "other", DEFAULT_FLOCK, 2);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    s.insert_token(&other, &[], &[], &audit("token_create")).await.unwrap();
    let r = rules(alert_all, no_alerts);
    // t: ten incidents of one hit each (grouping is off), at times 1..=10; other: one old one
    let hits: Vec<NewHit> = (1..=10).map(|i| hit(&t.id, "192.0.2.1", i * 1_000)).collect();
    s.record_hits(&hits, &r).await.unwrap();
    s.record_hits(&[hit(&other.id, "192.0.2.2", 500)], &r).await.unwrap();
    let ignore = |_: &Token, _: &NewHit| Judgement::Ignore { reason: "test".into() };
    s.record_hits(&[hit(&t.id, "192.0.2.3", 1_500)], &rules(ignore, no_alerts)).await.unwrap();
    // acknowledge t's first six incidents (hits at 1..=6) and other's
    let first_six = IncidentFilter { created_before_us: Some(6_500), ..Default::default() };
    s.set_acknowledged(&first_six, true, &audit("ack")).await.unwrap();
    let times = |hits: Vec<Hit>| {
        let mut v: Vec<Micros> = hits.iter().map(|h| h.time_us).collect();
        v.sort_unstable();
        v
    };
    let all = IncidentFilter { limit: Some(100), ..Default::default() };
    assert_eq!(s.list_incidents(&all).await.unwrap().len(), 11);

    // nothing to do: no rule given, or nothing old enough
    assert_eq!(s.prune(None, None, 2).await.unwrap(), 0);
    assert_eq!(s.prune(Some(100), None, 2).await.unwrap(), 0);

    // by age: hits before 3.5 go if their incident is acknowledged, or they raised none
    // (the ignored hit at 1.5); chunks of 2 take several rounds
    assert_eq!(s.prune(Some(3_500), None, 2).await.unwrap(), 5, "1, 1.5, 2, 3 of t and 0.5 of other");
    assert_eq!(
        times(s.token_hits(&t.id, 100, None).await.unwrap()),
        [4_000, 5_000, 6_000, 7_000, 8_000, 9_000, 10_000]
    );
    assert!(s.token_hits(&other.id, 100, None).await.unwrap().is_empty());
    assert_eq!(s.list_incidents(&all).await.unwrap().len(), 7, "acknowledged incidents with no hits left go");

    // by count: keep the newest 2 of each token, but never a hit of an unacknowledged incident
    assert_eq!(s.prune(None, Some(2), 2).await.unwrap(), 3, "4, 5 and 6 are acknowledged");
    assert_eq!(times(s.token_hits(&t.id, 100, None).await.unwrap()), [7_000, 8_000, 9_000, 10_000]);
    // once acknowledged, they go too
    s.set_acknowledged(&IncidentFilter::default(), true, &audit("ack")).await.unwrap();
    assert_eq!(s.prune(None, Some(2), 100).await.unwrap(), 2);
    assert_eq!(times(s.token_hits(&t.id, 100, None).await.unwrap()), [9_000, 10_000]);
    assert_eq!(s.list_incidents(&all).await.unwrap().len(), 2);
    assert_eq!(s.prune(Some(i64::MAX), Some(0), 100).await.unwrap(), 2, "everything acknowledged may go");
    assert!(s.list_incidents(&all).await.unwrap().is_empty());
}

/// A CloudTrail-like judge: each hit is the event `data.event_id`, kept without incident when
/// `data.inactive` (an inactive honey key).
fn once_per_event(_: &Token, h: &NewHit) -> Judgement {
    Judgement::Once {
        event_id: h.data["event_id"].as_str().unwrap_or_default().to_string(),
        extra: serde_json::Map::from_iter([("via".to_string(), json!("cloudtrail"))]),
        ignore: h.data["inactive"].as_bool().unwrap_or(false).then(|| "the key is inactive".to_string()),
    }
}

fn aws_event(token_id: &str, event_id: &str, inactive: bool, time_us: Micros) -> NewHit {
    NewHit {
        channel: Channel::Aws,
        data: json!({"event_id": event_id, "event_name": "GetCallerIdentity", "inactive": inactive}),
        ..hit(token_id, "198.51.100.77", time_us)
    }
}

async fn events_delivered_twice_are_stored_once(s: Arc<dyn Store>) {
    let t = token("aws-id", "honey key", DEFAULT_FLOCK, 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    let r = rules(once_per_event, no_alerts);
    let dropped = |o: &HitOutcome| matches!(o, HitOutcome::Dropped { token } if token.id == t.id);
    // Twice in one batch: the repeat sees the hit stored earlier in the same transaction.
    let out =
        s.record_hits(&[aws_event(&t.id, "ev-1", false, 1), aws_event(&t.id, "ev-1", false, 2)], &r).await.unwrap();
    assert!(matches!(&out[0], HitOutcome::Recorded { status: AlertStatus::Alerted, incident_id: Some(_), .. }));
    assert!(dropped(&out[1]), "{:?}", out[1]);
    // Again in a later batch, with a new event and an inactive key's event twice.
    let out = s
        .record_hits(
            &[aws_event(&t.id, "ev-1", false, 3), aws_event(&t.id, "ev-2", true, 4), aws_event(&t.id, "ev-2", true, 5)],
            &r,
        )
        .await
        .unwrap();
    assert!(dropped(&out[0]), "committed earlier: {:?}", out[0]);
    assert!(matches!(&out[1], HitOutcome::Recorded { status: AlertStatus::Ignored, incident_id: None, .. }));
    assert!(dropped(&out[2]), "{:?}", out[2]);
    let out = s.record_hits(&[aws_event(&t.id, "ev-2", false, 6)], &r).await.unwrap();
    assert!(dropped(&out[0]), "an ignored event is still the event: {:?}", out[0]);

    let stored = s.token_hits(&t.id, 10, None).await.unwrap();
    let got: Vec<_> = stored.iter().map(|h| (h.channel, h.alert_status, h.data["event_id"].clone())).collect();
    assert_eq!(
        got,
        [(Channel::Aws, AlertStatus::Ignored, json!("ev-2")), (Channel::Aws, AlertStatus::Alerted, json!("ev-1"))]
    );
    assert_eq!(stored[1].data["via"], "cloudtrail", "the extra fields are stored");
    assert_eq!(stored[0].data["ignored"], "the key is inactive");
    assert_eq!(s.count_incidents(&IncidentFilter::default()).await.unwrap().0, 1);
    let incident = s.list_incidents(&IncidentFilter::default()).await.unwrap().remove(0);
    assert_eq!((incident.channel, incident.events_count), (Channel::Aws, 1));

    // The same event id of another token is another event.
    let other = token("aws-id", "another key", DEFAULT_FLOCK, 2);
    s.insert_token(&other, &[], &[], &audit("token_create")).await.unwrap();
    let out = s.record_hits(&[aws_event(&other.id, "ev-1", false, 7)], &r).await.unwrap();
    assert!(matches!(&out[0], HitOutcome::Recorded { status: AlertStatus::Alerted, .. }), "{out:?}");
}

async fn concurrent_deliveries_of_one_event_store_one_hit(s: Arc<dyn Store>) {
    let t = token("aws-id", "raced", DEFAULT_FLOCK, 1);
    s.insert_token(&t, &[], &[], &audit("token_create")).await.unwrap();
    let r = Arc::new(rules(once_per_event, no_alerts));
    // Several transactions at once (several nodes, or a lease that ran out mid-batch): one
    // stores the event; the others drop it or, on PostgreSQL, fail on the unique event key and
    // drop it when tried again, as the recorder does.
    let tasks: Vec<_> = (0..6)
        .map(|i| {
            let (s, r, id) = (s.clone(), r.clone(), t.id.clone());
            tokio::spawn(async move { s.record_hits(&[aws_event(&id, "ev-race", false, i)], &r).await })
        })
        .collect();
    let (mut recorded, mut dropped, mut failed) = (0, 0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(out) => match &out[0] {
                HitOutcome::Recorded { .. } => recorded += 1,
                HitOutcome::Dropped { .. } => dropped += 1,
                other => panic!("{other:?}"),
            },
            Err(_) => failed += 1,
        }
    }
    assert_eq!((recorded, recorded + dropped + failed), (1, 6), "one delivery stored it");
    let again = s.record_hits(&[aws_event(&t.id, "ev-race", false, 9)], &r).await.unwrap();
    assert!(matches!(&again[0], HitOutcome::Dropped { .. }), "{again:?}");
    assert_eq!(s.token_hits(&t.id, 10, None).await.unwrap().len(), 1);
}

async fn trigger_keys_list_a_scheme_for_enabled_and_disabled_tokens(s: Arc<dyn Store>) {
    let akid = |v: &str| TriggerKey { scheme: KeyScheme::AwsAccessKeyId, value: v.into() };
    let bucket = |v: &str| TriggerKey { scheme: KeyScheme::S3Bucket, value: v.into() };
    let on = token("aws-id", "on", DEFAULT_FLOCK, 1);
    let mut off = token("aws-id", "off", DEFAULT_FLOCK, 2);
    off.enabled = false;
    let b = token("aws-s3", "bucket", DEFAULT_FLOCK, 3);
    assert!(s.insert_token(&on, &[], &[akid("AKIAZZZ")], &audit("token_create")).await.unwrap());
    assert!(s.insert_token(&off, &[], &[akid("AKIAAAA")], &audit("token_create")).await.unwrap());
    assert!(s.insert_token(&b, &[], &[bucket("honey-bucket"), akid("AKIAMMM")], &audit("token_create")).await.unwrap());
    assert_eq!(
        s.trigger_keys(KeyScheme::AwsAccessKeyId).await.unwrap(),
        [("AKIAAAA".to_string(), off.id.clone()), ("AKIAMMM".into(), b.id.clone()), ("AKIAZZZ".into(), on.id.clone())],
        "every token's, by value"
    );
    assert_eq!(s.trigger_keys(KeyScheme::S3Bucket).await.unwrap(), [("honey-bucket".to_string(), b.id.clone())]);
    assert!(s.trigger_keys(KeyScheme::WireGuardPublicKey).await.unwrap().is_empty());
    s.delete_token(&b.id, false, &audit("token_delete"), false).await.unwrap();
    assert!(s.trigger_keys(KeyScheme::S3Bucket).await.unwrap().is_empty(), "keys go with their token");
    assert_eq!(s.trigger_keys(KeyScheme::AwsAccessKeyId).await.unwrap().len(), 2);
}

async fn poller_state_and_processed_objects(s: Arc<dyn Store>) {
    assert_eq!(s.get_poller_state("cloudtrail:start").await.unwrap(), None);
    s.put_poller_state("cloudtrail:start", "AWSLogs/1/CloudTrail/us-east-1/2030/01/01/").await.unwrap();
    s.put_poller_state("cloudtrail:start", "AWSLogs/1/CloudTrail/us-east-1/2030/01/02/").await.unwrap();
    s.put_poller_state("other", "ünï ✓").await.unwrap();
    assert_eq!(
        s.get_poller_state("cloudtrail:start").await.unwrap().as_deref(),
        Some("AWSLogs/1/CloudTrail/us-east-1/2030/01/02/")
    );
    assert_eq!(s.get_poller_state("other").await.unwrap().as_deref(), Some("ünï ✓"));

    // More keys than one statement looks up, some done, per source.
    let keys: Vec<String> = (0..1_200).map(|i| format!("AWSLogs/1/CloudTrail/obj-{i:04}.json.gz")).collect();
    assert!(s.objects_done("s3://trail", &keys).await.unwrap().is_empty());
    assert!(s.objects_done("s3://trail", &[]).await.unwrap().is_empty());
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 300 == 7) {
        s.mark_object_done("s3://trail", k, 1_000 + i as i64).await.unwrap();
    }
    s.mark_object_done("s3://trail", &keys[7], 1_000 + 7).await.unwrap(); // twice is fine
    s.mark_object_done("s3://logs", &keys[8], 5_000).await.unwrap();
    let done = s.objects_done("s3://trail", &keys).await.unwrap();
    let mut done: Vec<&str> = done.iter().map(String::as_str).collect();
    done.sort_unstable();
    assert_eq!(done, [&keys[7], &keys[307], &keys[607], &keys[907]].map(String::as_str));
    assert_eq!(s.objects_done("s3://logs", &keys).await.unwrap().len(), 1, "another source's ledger");

    // Pruning forgets what was done before the cut: 7 and 307 (done at 1007 and 1307).
    assert_eq!(s.prune_objects_done(1_308).await.unwrap(), 2);
    assert_eq!(s.objects_done("s3://trail", &keys).await.unwrap().len(), 2);
    assert_eq!(s.prune_objects_done(1_308).await.unwrap(), 0);
    assert!(s.list_audit(10).await.unwrap().is_empty(), "machine bookkeeping is not audited");
}

async fn leases_are_held_renewed_expired_and_released(s: Arc<dyn Store>) {
    const SEC: Micros = 1_000_000;
    let ttl = 30 * SEC;
    assert!(s.try_lease("cloudtrail", "node-a", 100 * SEC, ttl).await.unwrap(), "free");
    assert!(!s.try_lease("cloudtrail", "node-b", 110 * SEC, ttl).await.unwrap(), "held by a");
    assert!(s.try_lease("other-job", "node-b", 110 * SEC, ttl).await.unwrap(), "leases are by name");
    assert!(s.try_lease("cloudtrail", "node-a", 120 * SEC, ttl).await.unwrap(), "renewed, to 150 s");
    assert!(!s.try_lease("cloudtrail", "node-b", 149 * SEC, ttl).await.unwrap(), "still a's after its first end");
    assert!(s.try_lease("cloudtrail", "node-b", 150 * SEC, ttl).await.unwrap(), "expired: b takes it");
    assert!(!s.try_lease("cloudtrail", "node-a", 151 * SEC, ttl).await.unwrap(), "a lost it");
    s.release_lease("cloudtrail", "node-a").await.unwrap();
    assert!(!s.try_lease("cloudtrail", "node-a", 152 * SEC, ttl).await.unwrap(), "only the holder releases");
    s.release_lease("cloudtrail", "node-b").await.unwrap();
    assert!(s.try_lease("cloudtrail", "node-a", 153 * SEC, ttl).await.unwrap(), "released: free at once");
    assert!(s.list_audit(10).await.unwrap().is_empty(), "machine bookkeeping is not audited");
}

async fn concurrent_lease_takers_one_wins(s: Arc<dyn Store>) {
    let now = now_us();
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.try_lease("ingest", &format!("node-{i}"), now, 60_000_000).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += task.await.unwrap() as usize;
    }
    assert_eq!(winners, 1, "exactly one of 20 concurrent takers holds the lease");
    // And when it has expired, again exactly one of many.
    let later = now + 60_000_000;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            tokio::spawn(async move { s.try_lease("ingest", &format!("late-{i}"), later, 60_000_000).await.unwrap() })
        })
        .collect();
    let mut winners = 0;
    for task in tasks {
        winners += task.await.unwrap() as usize;
    }
    assert_eq!(winners, 1);
}

async fn retirements_are_queued_with_their_delete(s: Arc<dyn Store>) {
    let mut key = token("aws-id", "honey key", DEFAULT_FLOCK, 1);
    key.params = json!({"username": "svc-backup", "access_key_id": "AKIAEXAMPLE"});
    let busy = token("aws-id", "has incidents", DEFAULT_FLOCK, 2);
    let plain = token("http", "nothing outside", DEFAULT_FLOCK, 3);
    for t in [&key, &busy, &plain] {
        s.insert_token(t, &[], &[], &audit("token_create")).await.unwrap();
    }
    s.record_hits(&[hit(&busy.id, "192.0.2.1", 1)], &rules(alert_all, no_alerts)).await.unwrap();

    // Refused, missing, or not retiring: nothing queued.
    assert_eq!(
        s.delete_token(&busy.id, false, &audit("token_delete"), true).await.unwrap(),
        TokenDeletion::HasIncidents
    );
    assert_eq!(
        s.delete_token("nosuchtoken0000000000000a", true, &audit("token_delete"), true).await.unwrap(),
        TokenDeletion::NotFound
    );
    assert_eq!(s.delete_token(&plain.id, false, &audit("token_delete"), false).await.unwrap(), TokenDeletion::Deleted);
    assert!(s.list_retirements().await.unwrap().is_empty());

    // A delete with retire queues exactly one row, with the token's kind and settings.
    let mut deleting = audit("token_delete");
    deleting.time_us = 5_000;
    assert_eq!(s.delete_token(&key.id, false, &deleting, true).await.unwrap(), TokenDeletion::Deleted);
    assert_eq!(s.delete_token(&key.id, false, &deleting, true).await.unwrap(), TokenDeletion::NotFound);
    let queued = s.list_retirements().await.unwrap();
    assert_eq!(queued.len(), 1);
    let r = &queued[0];
    assert_eq!(
        (r.token_id.as_str(), r.kind.as_str(), &r.params, r.created_us, r.attempts, r.last_error.as_deref()),
        (key.id.as_str(), "aws-id", &key.params, 5_000, 0, None)
    );
    assert_eq!(s.get_token(&key.id).await.unwrap(), None);

    // Due at once; a failure counts, keeps its error and moves the next try.
    assert_eq!(s.due_retirements(4_999, 10).await.unwrap(), [], "not before the delete");
    assert_eq!(s.due_retirements(5_000, 10).await.unwrap(), queued);
    s.retirement_failed(r.id, "AccessDenied: iam:DeleteUser ✗", 9_000).await.unwrap();
    assert!(s.due_retirements(8_999, 10).await.unwrap().is_empty(), "in backoff");
    let due = s.due_retirements(9_000, 10).await.unwrap();
    assert_eq!(
        due.iter().map(|d| (d.id, d.attempts, d.last_error.as_deref())).collect::<Vec<_>>(),
        [(r.id, 1, Some("AccessDenied: iam:DeleteUser ✗"))]
    );
    s.retirement_failed(r.id, &"x".repeat(100_000), 10_000).await.unwrap();
    let listed = s.list_retirements().await.unwrap();
    assert_eq!(listed[0].attempts, 2);
    assert!(listed[0].last_error.as_ref().unwrap().len() <= 4096, "a long error is cut");

    // A second queued token: oldest due first, limited.
    let mut other = token("aws-id", "second", DEFAULT_FLOCK, 4);
    other.params = json!({"username": "svc-other"});
    s.insert_token(&other, &[], &[], &audit("token_create")).await.unwrap();
    let mut later = audit("token_delete");
    later.time_us = 6_000;
    s.delete_token(&other.id, false, &later, true).await.unwrap();
    let due = s.due_retirements(20_000, 10).await.unwrap();
    assert_eq!(due.iter().map(|d| d.token_id.as_str()).collect::<Vec<_>>(), [other.id.as_str(), key.id.as_str()]);
    assert_eq!(s.due_retirements(20_000, 1).await.unwrap().len(), 1);
    assert_eq!(s.list_retirements().await.unwrap().iter().map(|d| d.created_us).collect::<Vec<_>>(), [5_000, 6_000]);

    // Done: the row goes.
    s.retirement_done(r.id).await.unwrap();
    let left = s.list_retirements().await.unwrap();
    assert_eq!(left.iter().map(|d| d.token_id.as_str()).collect::<Vec<_>>(), [other.id.as_str()]);
    let deletes = s.list_audit(20).await.unwrap().into_iter().filter(|a| a.action == "token_delete").count();
    assert_eq!(deletes, 3, "the deletes are audited, the queue's bookkeeping is not");
}
