//! The core's rules, checked through `Core` over a real (SQLite) store: every management
//! action leaves exactly one audit entry, failed authentication is audited, roles and flock
//! scope are enforced in the core (so every dialect gets them), and refused calls change nothing.

use std::sync::Arc;

use trapline::auth::Actor;
use trapline::core::{Core, NewToken};
use trapline::error::CoreError;
use trapline::kinds::Site;
use trapline::model::*;
use trapline::store::{self, Store};

async fn core() -> (Core, Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = store::open(dir.path().join("c.db").to_str().unwrap()).await.unwrap();
    let site = Site { domain: "t.test".into(), nx_domain: "nx.t.test".into(), public_url: "http://h".into() };
    (Core::new(store.clone(), site), store, dir)
}

fn new_token(kind: &str, memo: &str) -> NewToken {
    NewToken { kind: kind.into(), memo: memo.into(), ..Default::default() }
}

async fn actions(store: &Arc<dyn Store>) -> Vec<String> {
    let mut a: Vec<String> = store.list_audit(1000).await.unwrap().into_iter().map(|e| e.action).collect();
    a.reverse();
    a
}

async fn actor_for(core: &Core, role: Role, flock: Option<&str>) -> Actor {
    let k = core.create_key(&Actor::local(), role, flock.map(str::to_string), "t".into()).await.unwrap();
    core.authenticate(Some(&k.secret), "192.0.2.7", "test").await.unwrap()
}

#[tokio::test]
async fn every_management_action_is_audited_once() {
    let (core, store, _d) = core().await;
    let admin = actor_for(&core, Role::Admin, None).await;
    assert_eq!(admin.src_ip, "192.0.2.7");
    let t = core.create_token(&admin, new_token("http", "m")).await.unwrap();
    core.update_memo(&admin, &t.id, "m2").await.unwrap();
    core.set_enabled(&admin, &t.id, false).await.unwrap();
    core.set_enabled(&admin, &t.id, true).await.unwrap();
    let f = core.create_flock(&admin, "Ops").await.unwrap();
    core.rename_flock(&admin, &f.id, "Ops 2").await.unwrap();
    core.delete_flock(&admin, &f.id).await.unwrap();
    store
        .record_hits(
            &[NewHit {
                token: TokenRef::Id(t.id.clone()),
                time_us: now_us(),
                channel: Channel::Http,
                src_ip: "198.51.100.9".into(),
                src_port: 1,
                dst_ip: String::new(),
                dst_port: 0,
                data: serde_json::json!({}),
                private: None,
                group: None,
            }],
            &trapline::store::HitRules::new(
                |_: &Token, _: &NewHit| Judgement::alert(),
                |_: &Token, _: &NewHit, _: &[AlertOutput]| Vec::new(),
            ),
        )
        .await
        .unwrap();
    let inc = core.list_incidents(&admin, IncidentFilter::default()).await.unwrap().incidents[0].id;
    core.set_acknowledged(&admin, IncidentFilter { id: Some(inc), ..Default::default() }, true).await.unwrap();
    core.delete_incidents(&admin, IncidentFilter { id: Some(inc), ..Default::default() }).await.unwrap();
    core.delete_token(&admin, &t.id, false).await.unwrap();
    assert_eq!(
        actions(&store).await,
        [
            "key_create",
            "token_create",
            "token_update",
            "token_disable",
            "token_enable",
            "flock_create",
            "flock_rename",
            "flock_delete",
            "incident_acknowledge",
            "incident_delete",
            "token_delete"
        ]
    );
    let last = &store.list_audit(1).await.unwrap()[0];
    assert_eq!(
        (last.actor.as_str(), last.target.as_str(), last.src_ip.as_str()),
        (admin.id.as_str(), t.id.as_str(), "192.0.2.7")
    );
}

#[tokio::test]
async fn failed_authentication_is_audited_in_batches() {
    let (core, store, _d) = core().await;
    for secret in [None, Some(""), Some("not-a-key")] {
        assert!(matches!(core.authenticate(secret, "203.0.113.5", "test").await, Err(CoreError::Unauthenticated)));
    }
    assert!(core.authenticate(Some("again"), "203.0.113.6", "test").await.is_err());
    // Nothing written per failure: a flood of bad credentials costs no storage writes...
    assert!(store.list_audit(10).await.unwrap().is_empty());
    // ...until the periodic flush, which writes one entry per source and reason.
    assert_eq!(core.flush_failed_logins().await.unwrap(), 3);
    let mut log: Vec<(String, String)> =
        store.list_audit(10).await.unwrap().into_iter().map(|e| (e.src_ip, e.description)).collect();
    log.sort();
    assert_eq!(
        log,
        [
            ("203.0.113.5".to_string(), "no credential (2 attempts)".to_string()),
            ("203.0.113.5".to_string(), "unknown credential".to_string()),
            ("203.0.113.6".to_string(), "unknown credential".to_string()),
        ]
    );
    assert!(store.list_audit(10).await.unwrap().iter().all(|e| e.action == "auth_failed" && e.actor == "anonymous"));
    assert_eq!(core.flush_failed_logins().await.unwrap(), 0, "a flush empties the counts");
}

#[tokio::test]
async fn roles_are_enforced_and_refusals_are_audited_and_change_nothing() {
    let (core, store, _d) = core().await;
    let admin = actor_for(&core, Role::Admin, None).await;
    let reader = actor_for(&core, Role::ReadOnly, None).await;
    let analyst = actor_for(&core, Role::Analyst, None).await;
    let t = core.create_token(&admin, new_token("dns", "x")).await.unwrap();
    let before = actions(&store).await.len();

    assert!(matches!(core.create_token(&reader, new_token("dns", "y")).await, Err(CoreError::Forbidden(_))));
    assert!(matches!(core.update_memo(&reader, &t.id, "z").await, Err(CoreError::Forbidden(_))));
    assert!(matches!(core.delete_token(&reader, &t.id, true).await, Err(CoreError::Forbidden(_))));
    assert!(matches!(core.create_flock(&analyst, "nope").await, Err(CoreError::Forbidden(_))));
    assert!(matches!(core.create_key(&analyst, Role::Admin, None, String::new()).await, Err(CoreError::Forbidden(_))));
    // Each refusal is audited, and nothing else happened.
    let after = actions(&store).await;
    assert_eq!(after[before..], ["permission_denied"; 5]);
    let denial = &store.list_audit(1).await.unwrap()[0];
    assert_eq!(
        (denial.actor.as_str(), denial.description.as_str()),
        (analyst.id.as_str(), "refused: may not manage API keys")
    );
    assert_eq!(core.get_token(&reader, &t.id).await.unwrap().memo, "x");
    assert!(core.create_token(&analyst, new_token("http", "ok")).await.is_ok());
}

#[tokio::test]
async fn flock_scoped_keys_see_only_their_flock() {
    let (core, _store, _d) = core().await;
    let admin = actor_for(&core, Role::Admin, None).await;
    let f = core.create_flock(&admin, "Branch").await.unwrap();
    let outside = core.create_token(&admin, new_token("dns", "default flock")).await.unwrap();
    let scoped = actor_for(&core, Role::Analyst, Some(&f.id)).await;

    // Created without a flock_id, a scoped key's token lands in its flock.
    let inside = core.create_token(&scoped, new_token("dns", "branch")).await.unwrap();
    assert_eq!(inside.flock_id, f.id);
    let mut elsewhere = new_token("dns", "sneaky");
    elsewhere.flock_id = Some(DEFAULT_FLOCK.into());
    assert!(matches!(core.create_token(&scoped, elsewhere).await, Err(CoreError::FlockNotFound)));

    assert!(matches!(core.get_token(&scoped, &outside.id).await, Err(CoreError::TokenNotFound)));
    assert!(matches!(core.set_enabled(&scoped, &outside.id, false).await, Err(CoreError::TokenNotFound)));
    let page = core.list_tokens(&scoped, TokenFilter::default(), &PageStart::default(), None).await.unwrap();
    assert_eq!(page.tokens.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(), [inside.id.as_str()]);
    assert_eq!(page.total, 1);
    let other = TokenFilter { flock_id: Some(DEFAULT_FLOCK.into()), ..Default::default() };
    assert!(
        matches!(core.list_tokens(&scoped, other, &PageStart::default(), None).await, Err(CoreError::FlockNotFound)),
        "another flock is not revealed, not even as empty"
    );
    assert_eq!(
        core.list_flocks(&scoped).await.unwrap().into_iter().map(|f| f.id).collect::<Vec<_>>(),
        vec![f.id.clone()]
    );
    assert!(matches!(core.flock_summary(&scoped, DEFAULT_FLOCK).await, Err(CoreError::FlockNotFound)));
    assert!(core.get_token(&admin, &outside.id).await.unwrap().enabled, "the refused disable did nothing");
}

#[tokio::test]
async fn unusable_keys_are_refused() {
    let (core, store, _d) = core().await;
    let k = core.create_key(&Actor::local(), Role::Admin, None, String::new()).await.unwrap();
    // Take the key out of service directly in the store (key management API arrives later).
    let mut key = store.api_key_by_hash(&trapline::auth::hash_secret(&k.secret)).await.unwrap().unwrap();
    assert!(core.authenticate(Some(&k.secret), "h", "test").await.is_ok());
    key.active = false;
    key.key_id = "inactive".into();
    key.secret_hash = trapline::auth::hash_secret("inactive-secret");
    store
        .insert_api_key(
            &key,
            &AuditEntry {
                time_us: 0,
                actor: "t".into(),
                action: "key_create".into(),
                target: String::new(),
                description: String::new(),
                src_ip: String::new(),
                dialect: "t".into(),
            },
        )
        .await
        .unwrap();
    assert!(matches!(core.authenticate(Some("inactive-secret"), "h", "test").await, Err(CoreError::Unauthenticated)));
    core.flush_failed_logins().await.unwrap();
    let e = &store.list_audit(1).await.unwrap()[0];
    assert_eq!(
        (e.action.as_str(), e.target.as_str(), e.description.as_str()),
        ("auth_failed", "inactive", "key is inactive")
    );
}

#[tokio::test]
async fn factory_tokens_mint_and_download_in_their_flock_only() {
    let (core, store, _d) = core().await;
    let admin = actor_for(&core, Role::Admin, None).await;
    let branch = core.create_flock(&admin, "Branch").await.unwrap();
    let outside = core.create_token(&admin, new_token("windows-dir", "default flock")).await.unwrap();
    let made = core.create_factory(&admin, "fleet", Some(&branch.id), None, &[]).await.unwrap();
    assert_eq!(made.value.len(), 64);
    assert_ne!(made.factory.value_hash, made.value, "only the hash is kept");

    let (f, fac) = core.authenticate_factory(Some(&made.value), "192.0.2.1", "test").await.unwrap();
    assert_eq!((f.role, f.flock_id.as_deref()), (Role::Deploy, Some(branch.id.as_str())));
    assert_eq!(fac.id, made.factory.id);
    let t = core.create_token(&f, new_token("windows-dir", "host 1")).await.unwrap();
    assert_eq!(t.flock_id, branch.id);
    assert!(core.download(&f, &t.id).await.is_ok());
    // Nothing else: no reading, listing, changing, or reaching outside the flock.
    assert!(matches!(core.get_token(&f, &t.id).await, Err(CoreError::Forbidden(_))));
    assert!(matches!(
        core.list_tokens(&f, TokenFilter::default(), &PageStart::default(), None).await,
        Err(CoreError::Forbidden(_))
    ));
    assert!(matches!(core.set_enabled(&f, &t.id, false).await, Err(CoreError::Forbidden(_))));
    assert!(matches!(core.delete_token(&f, &t.id, false).await, Err(CoreError::Forbidden(_))));
    assert!(matches!(core.list_incidents(&f, IncidentFilter::default()).await, Err(CoreError::Forbidden(_))));
    assert!(matches!(core.list_factories(&f).await, Err(CoreError::Forbidden(_))));
    assert!(matches!(core.download(&f, &outside.id).await, Err(CoreError::TokenNotFound)));
    let mut elsewhere = new_token("dns", "x");
    elsewhere.flock_id = Some(DEFAULT_FLOCK.into());
    assert!(matches!(core.create_token(&f, elsewhere).await, Err(CoreError::FlockNotFound)));
    assert_eq!(store.get_factory(&made.factory.id).await.unwrap().unwrap().use_count, 1);
}

#[tokio::test]
async fn factory_tokens_refused_when_revoked_expired_or_out_of_network() {
    let (core, _store, _d) = core().await;
    let admin = actor_for(&core, Role::Admin, None).await;
    let nets = ["127.0.0.1".to_string(), "10.1.0.0/16".to_string()];
    let made = core.create_factory(&admin, "limited", None, None, &nets).await.unwrap();
    assert_eq!(made.factory.cidrs, ["127.0.0.1/32", "10.1.0.0/16"]);
    let ok = |ip: &'static str| core.authenticate_factory(Some(&made.value), ip, "test");
    assert!(ok("127.0.0.1").await.is_ok());
    assert!(ok("10.1.200.3").await.is_ok());
    assert!(ok("::ffff:127.0.0.1").await.is_ok(), "IPv4-mapped addresses count as IPv4");
    assert!(matches!(ok("127.0.0.2").await, Err(CoreError::Unauthenticated)));
    assert!(matches!(ok("10.2.0.1").await, Err(CoreError::Unauthenticated)));

    let revoke = FactoryChange { revoked_us: Some(Some(now_us())), ..Default::default() };
    core.update_factory(&admin, &made.factory.id, revoke).await.unwrap();
    assert!(matches!(ok("127.0.0.1").await, Err(CoreError::Unauthenticated)));
    let restore = FactoryChange { revoked_us: Some(None), ..Default::default() };
    core.update_factory(&admin, &made.factory.id, restore).await.unwrap();
    assert!(ok("127.0.0.1").await.is_ok());
    let expire = FactoryChange { expires_us: Some(Some(now_us() - 1)), ..Default::default() };
    core.update_factory(&admin, &made.factory.id, expire).await.unwrap();
    assert!(matches!(ok("127.0.0.1").await, Err(CoreError::Unauthenticated)));

    assert!(core.authenticate_factory(Some("not-a-factory"), "127.0.0.1", "test").await.is_err());
    assert!(core.authenticate_factory(None, "127.0.0.1", "test").await.is_err());
    // Bad networks are refused at creation, naming the network probably meant.
    let err = core.create_factory(&admin, "bad", None, None, &["192.0.2.1/24".to_string()]).await.unwrap_err();
    assert!(err.to_string().contains("192.0.2.0/24"), "{err}");
    assert!(core.create_factory(&admin, "bad", None, None, &["nonsense".to_string()]).await.is_err());
    assert!(core.create_factory(&admin, "past", None, Some(now_us() - 1), &[]).await.is_err());
    let analyst = actor_for(&core, Role::Analyst, None).await;
    assert!(matches!(core.create_factory(&analyst, "no", None, None, &[]).await, Err(CoreError::Forbidden(_))));
}

#[tokio::test]
async fn provision_key_creates_keys_until_it_has_made_an_admin() {
    let (core, _store, _d) = core().await;
    let core = core.with_provision_key("p".repeat(64).as_str());
    assert!(core.authenticate_provision("wrong", "h", "test").await.is_err());
    let p = core.authenticate_provision(&"p".repeat(64), "h", "test").await.unwrap();
    let analyst = core.create_key(&p, Role::Analyst, None, String::new()).await.unwrap();
    assert_eq!(analyst.key.created_by, "provision");
    // The provision key manages nothing else.
    assert!(matches!(core.list_keys(&p).await, Err(CoreError::Forbidden(_))));
    let p = core.authenticate_provision(&"p".repeat(64), "h", "test").await.unwrap();
    core.create_key(&p, Role::Admin, None, String::new()).await.unwrap();
    assert!(matches!(core.authenticate_provision(&"p".repeat(64), "h", "test").await, Err(CoreError::Unauthenticated)));
}

#[tokio::test]
async fn deploy_keys_need_a_flock() {
    let (core, _store, _d) = core().await;
    assert!(matches!(
        core.create_key(&Actor::local(), Role::Deploy, None, String::new()).await,
        Err(CoreError::InvalidParam { name: "flock", .. })
    ));
    let k = core.create_key(&Actor::local(), Role::Deploy, Some(DEFAULT_FLOCK.into()), String::new()).await.unwrap();
    assert_eq!(k.key.flock_id.as_deref(), Some(DEFAULT_FLOCK));
}

/// Audit F2: a listing stops early, saying more follow, once its events' data passes the
/// budget; the rest comes page by page, each incident once, in either direction.
#[tokio::test]
async fn listings_stay_within_their_memory_budget() {
    let (core, store, _d) = core().await;
    let admin = actor_for(&core, Role::Admin, None).await;
    let t = core.create_token(&admin, new_token("http", "m")).await.unwrap();
    let rules = trapline::store::HitRules::new(
        |_: &Token, _: &NewHit| Judgement::alert(),
        |_: &Token, _: &NewHit, _: &[AlertOutput]| Vec::new(),
    )
    .with_noise(trapline::noise::NoiseRules::none());
    // 450 incidents of one 1 KiB hit each (grouping off), so more than two store chunks
    let hits: Vec<NewHit> = (0..450)
        .map(|i| NewHit {
            token: TokenRef::Id(t.id.clone()),
            time_us: 1_000_000 + i,
            channel: Channel::Http,
            src_ip: "198.51.100.9".into(),
            src_port: 1,
            dst_ip: String::new(),
            dst_port: 0,
            data: serde_json::json!({ "ua": "u".repeat(1024) }),
            private: None,
            group: None,
        })
        .collect();
    store.record_hits(&hits, &rules).await.unwrap();
    let all = IncidentFilter { event_limit: Some(100), ..Default::default() };
    let (every, more) = core.fill_listing(all.clone(), 10_000, usize::MAX).await.unwrap();
    assert_eq!((every.len(), more), (450, false));
    // a budget of ~250 hits' data: the first answer ends after the chunk that passed it
    let (first, more) = core.fill_listing(all.clone(), 10_000, 250 * 1024).await.unwrap();
    assert!(more && first.len() == 400, "{} {more}", first.len());
    let last = first.last().unwrap();
    let mut next = all.clone();
    next.start = PageStart { key: Some((last.created_us, last.id)), backwards: false };
    let (rest, more) = core.fill_listing(next, 10_000, 250 * 1024).await.unwrap();
    assert!(!more);
    let ids: Vec<i64> = first.iter().chain(&rest).map(|i| i.id).collect();
    assert_eq!(ids, every.iter().map(|i| i.id).collect::<Vec<_>>(), "each once, in order");
    // backwards from the end of the first answer: the ones before it, in listing order
    let mut back = all.clone();
    back.start = PageStart { key: Some((last.created_us, last.id)), backwards: true };
    let (before, more) = core.fill_listing(back.clone(), 10_000, 250 * 1024).await.unwrap();
    let ids = |v: &[Incident]| v.iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!((ids(&before), more), (ids(&first[..399]), false));
    // and with a smaller budget it stops early there too, keeping the nearest ones
    let (near, more) = core.fill_listing(back, 10_000, 100 * 1024).await.unwrap();
    assert_eq!((ids(&near), more), (ids(&first[199..399]), true));
    // a limit ends it too
    let (some, more) = core.fill_listing(all, 30, usize::MAX).await.unwrap();
    assert_eq!((some.len(), more), (30, true));
}
