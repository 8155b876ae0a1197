//! The AWS client (`trapline::aws`) against moto, a local AWS emulator: every IAM, STS, S3 and
//! SQS call it makes, signed and sent for real, with the replies moto gives.
//!
//! `TRAPLINE_TEST_MOTO_SERVER` names the `moto_server` program (`scripts/test` points it at
//! `.venv/bin/moto_server`). Without it the tests say they were skipped — except in CI (`CI`
//! set), where that is a failure. Each test starts its own moto on a free port and kills it at
//! the end.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use trapline::aws::{Aws, AwsError};

/// The operator's keys: moto accepts any.
const OPERATOR_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const OPERATOR_SECRET: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";

/// A running moto_server, killed when dropped.
struct Moto {
    child: Child,
    url: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The moto_server program, or `None` (after saying so) when the tests are to be skipped.
fn moto_server() -> Option<PathBuf> {
    match std::env::var_os("TRAPLINE_TEST_MOTO_SERVER").filter(|p| !p.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None if std::env::var_os("CI").is_some() => {
            panic!("TRAPLINE_TEST_MOTO_SERVER must name moto_server in CI (scripts/test sets it)")
        }
        None => {
            eprintln!("skipped: set TRAPLINE_TEST_MOTO_SERVER to moto_server (e.g. .venv/bin/moto_server)");
            None
        }
    }
}

/// Starts moto on a free port and waits until it answers.
async fn start() -> Option<Moto> {
    let program = moto_server()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = Command::new(&program)
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let mut moto = Moto { child, url: format!("http://127.0.0.1:{port}") };
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(reply) = http.get(format!("{}/moto-api/", moto.url)).send().await {
            if reply.status().is_success() {
                return Some(moto);
            }
        }
        if let Some(status) = moto.child.try_wait().unwrap() {
            panic!("moto_server exited early: {status}");
        }
        assert!(Instant::now() < deadline, "moto_server did not answer within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn operator(moto: &Moto, region: &str) -> Aws {
    Aws::with_static_credentials(OPERATOR_KEY, OPERATOR_SECRET, None, region, Some(&moto.url)).unwrap()
}

fn code(e: &AwsError) -> &str {
    match e {
        AwsError::Service { code, .. } => code,
        other => panic!("not a service error: {other:?}"),
    }
}

#[tokio::test]
async fn iam_and_sts_honey_key_lifecycle() {
    let Some(moto) = start().await else { return };
    let aws = operator(&moto, "us-east-1");
    let name = "svc-backup-reader";
    let tags = vec![("team".to_owned(), "infra".to_owned()), ("purpose".to_owned(), "nightly backup".to_owned())];

    assert_eq!(aws.get_user(name).await.unwrap(), None);
    let user = aws.create_user(name, "/service-accounts/", &tags).await.unwrap();
    assert_eq!(user.name, name);
    assert!(user.arn.ends_with(":user/service-accounts/svc-backup-reader"), "{}", user.arn);
    assert!(!user.user_id.is_empty());
    assert!(user.create_date.is_some());
    let again = aws.get_user(name).await.unwrap().expect("the user exists");
    assert_eq!((again.arn.as_str(), again.user_id.as_str()), (user.arn.as_str(), user.user_id.as_str()));
    let mut got_tags = again.tags.clone();
    got_tags.sort();
    let mut want_tags = tags.clone();
    want_tags.sort();
    assert_eq!(got_tags, want_tags);
    let e = aws.create_user(name, "/", &[]).await.unwrap_err();
    assert_eq!(code(&e), "EntityAlreadyExists");

    let deny_all = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Deny","Action":"*","Resource":"*"}]}"#;
    aws.put_user_policy(name, "deny-all", deny_all).await.unwrap();
    assert_eq!(aws.list_user_policies(name).await.unwrap(), vec!["deny-all".to_owned()]);

    let key = aws.create_access_key(name).await.unwrap();
    assert!(key.access_key_id.starts_with("AKIA"), "{}", key.access_key_id);
    assert!(!key.secret_access_key.expose().is_empty());
    assert!(!format!("{key:?}").contains(key.secret_access_key.expose()));
    assert_eq!(aws.list_access_keys(name).await.unwrap(), vec![(key.access_key_id.clone(), true)]);
    assert_eq!(aws.get_access_key_last_used(&key.access_key_id).await.unwrap(), None);

    // The intruder's view: the honey key itself signs GetCallerIdentity.
    let honey = Aws::with_static_credentials(
        &key.access_key_id,
        key.secret_access_key.expose(),
        None,
        "us-east-1",
        Some(&moto.url),
    )
    .unwrap();
    let identity = honey.caller_identity().await.unwrap();
    assert_eq!(identity.arn, user.arn);
    assert_eq!(identity.account, "123456789012");
    let operator_identity = aws.caller_identity().await.unwrap();
    assert_ne!(operator_identity.arn, user.arn);
    let used = aws.get_access_key_last_used(&key.access_key_id).await.unwrap().expect("the key was used");
    assert_eq!(used.service_name, "sts");
    assert!((chrono::Utc::now() - used.date).num_minutes().abs() < 10, "{:?}", used.date);

    aws.update_access_key(name, &key.access_key_id, false).await.unwrap();
    assert_eq!(aws.list_access_keys(name).await.unwrap(), vec![(key.access_key_id.clone(), false)]);
    aws.update_access_key(name, &key.access_key_id, true).await.unwrap();
    assert_eq!(aws.list_access_keys(name).await.unwrap(), vec![(key.access_key_id.clone(), true)]);

    // IAM refuses to delete a user that still has keys and policies.
    let e = aws.delete_user(name).await.unwrap_err();
    assert_eq!(code(&e), "DeleteConflict");

    aws.delete_access_key(name, &key.access_key_id).await.unwrap();
    assert!(aws.list_access_keys(name).await.unwrap().is_empty());
    aws.delete_user_policy(name, "deny-all").await.unwrap();
    assert!(aws.list_user_policies(name).await.unwrap().is_empty());
    aws.delete_user(name).await.unwrap();
    assert_eq!(aws.get_user(name).await.unwrap(), None);

    let e = aws.delete_user(name).await.unwrap_err();
    assert!(e.is_code("NoSuchEntity"), "{e}");
    assert!(matches!(e, AwsError::Service { service: "iam", status: 404, .. }), "{e:?}");
}

#[tokio::test]
async fn s3_buckets_objects_listing_and_logging() {
    let Some(moto) = start().await else { return };
    let aws = operator(&moto, "us-east-1");

    assert!(!aws.bucket_exists("trail-logs").await.unwrap());
    aws.create_bucket("trail-logs").await.unwrap();
    assert!(aws.bucket_exists("trail-logs").await.unwrap());
    // Outside us-east-1 CreateBucket needs its LocationConstraint.
    let eu = operator(&moto, "eu-west-1");
    eu.create_bucket("eu-trail-logs").await.unwrap();
    assert!(eu.bucket_exists("eu-trail-logs").await.unwrap());

    let keys = ["AWSLogs/1/a.json", "AWSLogs/1/b c.json", "AWSLogs/1/d+e.json", "AWSLogs/2/f.json", "other/x"];
    for key in keys {
        let body = Bytes::from(format!("body of {key}"));
        aws.put_object("trail-logs", key, body, "application/json").await.unwrap();
    }

    // Pages of two, followed through their continuation tokens.
    let mut listed = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let page = aws.list_objects("trail-logs", "AWSLogs/", None, token.as_deref(), None, 2).await.unwrap();
        assert!(page.objects.len() <= 2);
        pages += 1;
        listed.extend(page.objects.iter().map(|o| o.key.clone()));
        match page.next_continuation {
            Some(next) => token = Some(next),
            None => break,
        }
    }
    assert_eq!(listed, keys[..4].to_vec());
    assert_eq!(pages, 2);

    let page = aws.list_objects("trail-logs", "AWSLogs/", Some("AWSLogs/1/b c.json"), None, None, 1000).await.unwrap();
    let after: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(after, ["AWSLogs/1/d+e.json", "AWSLogs/2/f.json"]);
    assert_eq!(page.next_continuation, None);
    let object = &page.objects[0];
    assert_eq!(object.size, "body of AWSLogs/1/d+e.json".len() as u64);
    assert!(!object.etag.is_empty() && !object.etag.contains('"'));

    let folders = aws.list_objects("trail-logs", "AWSLogs/", None, None, Some("/"), 1000).await.unwrap();
    assert!(folders.objects.is_empty());
    assert_eq!(folders.common_prefixes, ["AWSLogs/1/", "AWSLogs/2/"]);

    let body = aws.get_object("trail-logs", "AWSLogs/1/b c.json", 1024).await.unwrap();
    assert_eq!(&body[..], b"body of AWSLogs/1/b c.json");
    let body = aws.get_object("trail-logs", "AWSLogs/1/d+e.json", 1024).await.unwrap();
    assert_eq!(&body[..], b"body of AWSLogs/1/d+e.json");
    let e = aws.get_object("trail-logs", "AWSLogs/1/b c.json", 5).await.unwrap_err();
    assert!(matches!(e, AwsError::TooLarge { limit: 5, .. }), "{e:?}");
    assert!(e.to_string().contains("s3://trail-logs/AWSLogs/1/b c.json"), "{e}");
    let e = aws.get_object("trail-logs", "AWSLogs/missing", 1024).await.unwrap_err();
    assert!(e.is_code("NoSuchKey"), "{e}");
    let e = aws.list_objects("no-such-bucket", "", None, None, None, 10).await.unwrap_err();
    assert!(e.is_code("NoSuchBucket"), "{e}");
    assert!(matches!(aws.list_objects("trail-logs", "", None, None, None, 0).await, Err(AwsError::Invalid(_))));

    // Access logging into a log bucket that lets the logging service write.
    aws.create_bucket("access-logs").await.unwrap();
    let e = aws.put_bucket_logging("trail-logs", "access-logs", "trail-logs/").await.unwrap_err();
    assert_eq!(code(&e), "InvalidTargetBucketForLogging");
    let policy = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"logging.s3.amazonaws.com"},"Action":["s3:PutObject"],"Resource":"arn:aws:s3:::access-logs/*"}]}"#;
    aws.put_bucket_policy("access-logs", policy).await.unwrap();
    assert_eq!(aws.get_bucket_logging("trail-logs").await.unwrap(), None);
    aws.put_bucket_logging("trail-logs", "access-logs", "trail-logs/").await.unwrap();
    assert_eq!(
        aws.get_bucket_logging("trail-logs").await.unwrap(),
        Some(("access-logs".to_owned(), "trail-logs/".to_owned()))
    );
    aws.delete_bucket_logging("trail-logs").await.unwrap();
    assert_eq!(aws.get_bucket_logging("trail-logs").await.unwrap(), None);
}

#[tokio::test]
async fn sqs_long_poll_and_delete() {
    let Some(moto) = start().await else { return };
    let aws = operator(&moto, "us-east-1");

    let queue = aws.create_queue("trail-notifications").await.unwrap();
    assert!(queue.ends_with("/trail-notifications"), "{queue}");
    let note =
        r#"{"s3Bucket":"trail-logs","s3ObjectKey":["AWSLogs/123456789012/CloudTrail/us-east-1/2024/05/01/x.json.gz"]}"#;
    let first = aws.send_message(&queue, note).await.unwrap();
    let second = aws.send_message(&queue, "second").await.unwrap();
    assert_ne!(first, second);

    let mut received = Vec::new();
    for _ in 0..5 {
        received.extend(aws.receive_messages(&queue, 10, 1, Some(30)).await.unwrap());
        if received.len() >= 2 {
            break;
        }
    }
    received.sort_by_key(|m| m.message_id != first);
    assert_eq!(received.len(), 2, "{received:?}");
    assert_eq!((received[0].message_id.as_str(), received[0].body.as_str()), (first.as_str(), note));
    assert_eq!((received[1].message_id.as_str(), received[1].body.as_str()), (second.as_str(), "second"));
    for message in &received {
        aws.delete_message(&queue, &message.receipt_handle).await.unwrap();
    }

    // An empty queue: the long poll waits, then answers nothing.
    let started = Instant::now();
    assert!(aws.receive_messages(&queue, 10, 2, None).await.unwrap().is_empty());
    assert!(started.elapsed() >= Duration::from_millis(1500), "{:?}", started.elapsed());

    let missing = format!("{}/123456789012/no-such-queue", moto.url);
    let e = aws.receive_messages(&missing, 1, 0, None).await.unwrap_err();
    assert!(e.is_code("QueueDoesNotExist"), "{e}");
    assert!(matches!(aws.receive_messages(&queue, 11, 0, None).await, Err(AwsError::Invalid(_))));
    assert!(matches!(aws.receive_messages(&queue, 1, 21, None).await, Err(AwsError::Invalid(_))));
}

#[tokio::test]
async fn an_endpoint_that_does_not_answer_is_a_transport_error() {
    // Not moto: a port with nothing behind it.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let aws = Aws::with_static_credentials(
        OPERATOR_KEY,
        OPERATOR_SECRET,
        None,
        "us-east-1",
        Some(&format!("http://127.0.0.1:{port}")),
    )
    .unwrap();
    let e = aws.caller_identity().await.unwrap_err();
    assert!(matches!(e, AwsError::Transport(_)), "{e:?}");
    assert!(!e.to_string().contains(OPERATOR_SECRET));
}
