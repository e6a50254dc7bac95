//! The database key store (`--key-store database`): keys sealed in the
//! database, one active key for every instance, restarts and rotations that
//! log nobody out, and a wrong key-encryption key that changes nothing.

use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
use tollgate::app::{App, open_key_store};
use tollgate::auth::keystore::KeyState;
use tollgate::store::SealedKeys;
use tollgate::time::UnixMillis;

use crate::helpers::{Backend, Deployment, GatewayClient, PASSWORD, Tokens, header_of};
use crate::on_both_backends;
use crate::process::Process;

fn kid_of(token: &str) -> String {
    header_of(token)["kid"].as_str().unwrap().to_string()
}

/// The database key store as the database holds it.
async fn sealed_keys(deployment: &Deployment) -> SealedKeys {
    deployment
        .database
        .store()
        .await
        .sealed_keys()
        .await
        .unwrap()
}

fn kid_in(keys: &SealedKeys, state: &str) -> String {
    keys.keys
        .iter()
        .find(|key| key.state == state)
        .unwrap_or_else(|| panic!("a {state} key in {keys:?}"))
        .kid
        .clone()
}

fn keys_dir_is_untouched(deployment: &Deployment) -> bool {
    std::fs::read_dir(deployment.keys_dir()).unwrap().count() == 0
}

async fn keys_in_the_database_sign_and_survive_a_restart(backend: Backend) {
    let deployment = Deployment::new(backend).await.with_keys_in_the_database();
    let app = deployment.spawn(&[]).await;
    let tokens = app.signed_up("alice").await;
    assert_eq!(app.me(&tokens.access).await.status, StatusCode::OK);

    let stored = sealed_keys(&deployment).await;
    assert_eq!(stored.keys.len(), 2, "{stored:?}");
    assert_eq!(kid_of(&tokens.access), kid_in(&stored, "active"));
    for key in &stored.keys {
        assert!(
            !key.sealed_private_key.contains("PRIVATE KEY"),
            "the private key is stored sealed"
        );
    }
    assert!(
        keys_dir_is_untouched(&deployment),
        "the keys directory is not used"
    );

    let app = app.stop().await.spawn(&[]).await;
    let me = app.me(&tokens.access).await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.text());
    let refreshed = app.refresh(&tokens.refresh).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.text());
    assert_eq!(
        kid_of(&Tokens::from(&refreshed).access),
        kid_of(&tokens.access),
        "the restarted gateway signs with the same key"
    );
    let after = sealed_keys(&deployment).await;
    assert_eq!(
        after
            .keys
            .iter()
            .map(|key| (&key.kid, &key.state))
            .collect::<Vec<_>>(),
        stored
            .keys
            .iter()
            .map(|key| (&key.kid, &key.state))
            .collect::<Vec<_>>(),
        "a restart adds no key"
    );
    assert!(keys_dir_is_untouched(&deployment));
}

async fn instances_starting_at_once_sign_with_one_key(backend: Backend) {
    let deployment = Deployment::new(backend).await.with_keys_in_the_database();
    // Schema first: concurrent migrations are not what this is about.
    deployment.database.store().await.migrate().await.unwrap();
    let (a, b, c) = tokio::join!(
        deployment.spawn(&[]),
        deployment.spawn(&[]),
        deployment.spawn(&[])
    );
    let stored = sealed_keys(&deployment).await;
    assert_eq!(
        stored.keys.len(),
        2,
        "one active and one next key: {stored:?}"
    );
    let active = kid_in(&stored, "active");
    for instance in [&a, &b, &c] {
        assert_eq!(instance.app.keys.current().signing().kid, active);
    }
    let tokens = a.signed_up("alice").await;
    assert_eq!(kid_of(&tokens.access), active);
    let on_c = Tokens::from(&c.login("alice", PASSWORD).await);
    assert_eq!(kid_of(&on_c.access), active);
    assert_eq!(b.me(&tokens.access).await.status, StatusCode::OK);
    assert_eq!(a.me(&on_c.access).await.status, StatusCode::OK);
}

/// Eight first starts racing to create the keys: exactly one creates them,
/// and every other finds them.
async fn racing_first_starts_create_one_key_set(backend: Backend) {
    let deployment = Deployment::new(backend).await.with_keys_in_the_database();
    deployment.database.store().await.migrate().await.unwrap();
    let config = deployment.config(&[]);
    let mut stores = Vec::new();
    for _ in 0..8 {
        stores.push(deployment.database.store().await);
    }
    let attempts = stores.iter().map(|store| {
        let keys = open_key_store(&config, Some(store)).unwrap();
        async move {
            keys.generate_if_empty(tollgate::auth::KeyAlg::EdDSA, UnixMillis::now())
                .await
                .unwrap()
        }
    });
    let created = futures_util::future::join_all(attempts).await;
    assert_eq!(
        created.iter().filter(|created| **created).count(),
        1,
        "{created:?}"
    );
    assert_eq!(sealed_keys(&deployment).await.keys.len(), 2);
}

async fn a_rotation_in_the_database_reaches_a_running_gateway(backend: Backend) {
    let deployment = Deployment::new(backend).await.with_keys_in_the_database();
    let app = deployment.spawn(&[]).await;
    let before = app.signed_up("alice").await;

    // What `keys rotate` does, from outside the running gateway.
    let rotated = {
        let store = deployment.database.store().await;
        let keys = open_key_store(&deployment.config(&[]), Some(&store)).unwrap();
        keys.rotate(None, UnixMillis::now()).await.unwrap()
    };
    let new_active = rotated
        .iter()
        .find(|key| key.state == KeyState::Active)
        .unwrap()
        .kid
        .clone();
    assert_ne!(new_active, kid_of(&before.access));

    let started = std::time::Instant::now();
    while app.app.keys.current().signing().kid != new_active {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the rotation was not picked up within 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let after = Tokens::from(&app.login("alice", PASSWORD).await);
    assert_eq!(kid_of(&after.access), new_active);
    assert_eq!(
        app.me(&before.access).await.status,
        StatusCode::OK,
        "tokens signed before the rotation still verify"
    );
}

async fn a_wrong_key_encryption_key_refuses_to_start_and_changes_nothing(backend: Backend) {
    let deployment = Deployment::new(backend).await.with_keys_in_the_database();
    let tokens = deployment.spawn(&[]).await.signed_up("alice").await;
    let before = sealed_keys(&deployment).await;

    let wrong = deployment.clone().with_keys_in_the_database();
    let error = match App::build(wrong.config(&[])).await {
        Ok(_) => panic!("a gateway started with the wrong key-encryption key"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("TOLLGATE_KEY_ENCRYPTION_KEY"), "{error}");
    assert!(!error.contains('\n'), "one line: {error}");

    // No command with the wrong key writes either.
    let store = deployment.database.store().await;
    let keys = open_key_store(&wrong.config(&[]), Some(&store)).unwrap();
    assert!(keys.rotate(None, UnixMillis::now()).await.is_err());
    assert!(
        keys.generate_if_empty(tollgate::auth::KeyAlg::EdDSA, UnixMillis::now())
            .await
            .is_err()
    );
    assert!(
        keys.prune(UnixMillis::now(), Default::default())
            .await
            .is_err()
    );

    let after = sealed_keys(&deployment).await;
    assert_eq!(after.generation, before.generation, "nothing was written");
    assert_eq!(after.keys, before.keys);
    assert!(keys_dir_is_untouched(&deployment));

    // With the right key, everything is as it was.
    let app = deployment.spawn(&[]).await;
    assert_eq!(app.me(&tokens.access).await.status, StatusCode::OK);
}

/// The active kid a running gateway reports.
async fn active_kid(gateway: &GatewayClient) -> String {
    let health = gateway.get("/health/detailed").await.json();
    health["keys"]["active_kid"].as_str().unwrap().to_string()
}

/// Guarantee 7: with the database key store, one `tollgate --rotate-key`
/// rotates every instance, and no token signed before it is refused.
async fn one_rotate_key_rotates_every_running_instance_within_ten_seconds(backend: Backend) {
    let deployment = Deployment::new(backend).await.with_keys_in_the_database();
    let a = Process::start(&deployment, &[]).await;
    let b = Process::start(&deployment, &[]).await;
    let from_a = Tokens::from(&a.register("alice", PASSWORD).await);
    let from_b = Tokens::from(&b.login("alice", PASSWORD).await);
    let old_kid = kid_of(&from_a.access);
    assert_eq!(kid_of(&from_b.access), old_kid);
    let next = kid_in(&sealed_keys(&deployment).await, "next");

    let rotated = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("--rotate-key")
        .args(["--database-url", &deployment.database_url])
        .args(deployment.key_store_args())
        .envs(deployment.environment())
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(
        rotated.status.success(),
        "{}",
        String::from_utf8_lossy(&rotated.stderr)
    );
    let rotated_at = Instant::now();
    for instance in [&a, &b] {
        while active_kid(instance).await != next {
            assert!(
                rotated_at.elapsed() < Duration::from_secs(10),
                "an instance still signs with the old key 10 s after the rotation"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let new_from_b = Tokens::from(&b.login("alice", PASSWORD).await);
    assert_eq!(kid_of(&new_from_b.access), next);
    for instance in [&a, &b] {
        for token in [&from_a.access, &from_b.access, &new_from_b.access] {
            let me = instance.me(token).await;
            assert_eq!(me.status, StatusCode::OK, "{}", me.text());
        }
    }
    assert!(keys_dir_is_untouched(&deployment));
}

/// Three processes on one empty Postgres database, started at once, make
/// one set of keys between them.
async fn three_processes_starting_at_once_agree_on_one_active_key(backend: Backend) {
    let deployment = Deployment::new(backend).await.with_keys_in_the_database();
    let (a, b, c) = tokio::join!(
        Process::start(&deployment, &[]),
        Process::start(&deployment, &[]),
        Process::start(&deployment, &[]),
    );
    let stored = sealed_keys(&deployment).await;
    assert_eq!(stored.keys.len(), 2, "{stored:?}");
    let active = kid_in(&stored, "active");
    let tokens = Tokens::from(&a.register("alice", PASSWORD).await);
    for instance in [&a, &b, &c] {
        assert_eq!(active_kid(instance).await, active);
        let login = Tokens::from(&instance.login("alice", PASSWORD).await);
        assert_eq!(kid_of(&login.access), active);
        assert_eq!(instance.me(&tokens.access).await.status, StatusCode::OK);
    }
}

on_both_backends!(
    keys_in_the_database_sign_and_survive_a_restart,
    instances_starting_at_once_sign_with_one_key,
    racing_first_starts_create_one_key_set,
    a_rotation_in_the_database_reaches_a_running_gateway,
    a_wrong_key_encryption_key_refuses_to_start_and_changes_nothing,
    one_rotate_key_rotates_every_running_instance_within_ten_seconds,
);

mod postgres_only {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_processes_starting_at_once_agree_on_one_active_key() {
        super::three_processes_starting_at_once_agree_on_one_active_key(
            crate::helpers::Backend::Postgres,
        )
        .await
    }
}
