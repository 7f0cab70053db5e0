//! The participants' key store, on SQLite (a file of its own) and on DynamoDB (moto): a key is
//! made once and agreed on by racing first uses, is stored only wrapped, unwraps for no other
//! participant and no other master key, and is gone for good once destroyed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use participant_files::encryption::{
    DynamoKeys, KeyStore, KeyStoreError, MasterKey, SqliteKeys, StoredKey, WrappedKeys,
};
use participant_files::model::{AppId, Owner, UserId};

fn owner(user: &str) -> Owner {
    Owner {
        app: AppId::parse("study").unwrap(),
        participant: UserId::parse(user).unwrap(),
    }
}

async fn conformance(raw: Arc<dyn WrappedKeys>) {
    let master = MasterKey::generate().unwrap();
    let keys = KeyStore::new(&master, Arc::clone(&raw));
    let (alice, bob) = (owner("alice"), owner("bob"));
    assert!(keys.existing(&alice).await.unwrap().is_none());

    // Racing first uses agree on one key.
    let racing: Vec<_> = (0..8)
        .map(|_| {
            let (keys, alice) = (keys.clone(), alice.clone());
            tokio::spawn(async move { keys.key_for(&alice).await.unwrap() })
        })
        .collect();
    let mut made = Vec::new();
    for r in racing {
        made.push(r.await.unwrap());
    }
    assert!(made.windows(2).all(|w| w[0] == w[1]));
    let key = made.pop().unwrap();
    assert_eq!(keys.key_for(&alice).await.unwrap(), key);
    assert_eq!(keys.existing(&alice).await.unwrap(), Some(key.clone()));
    assert_ne!(keys.key_for(&bob).await.unwrap(), key);

    // Stored only wrapped.
    let stored = raw.get(&alice).await.unwrap().unwrap();
    assert_eq!(stored.wrapped.len(), 73);
    assert!(
        !stored
            .wrapped
            .windows(32)
            .any(|w| w == key.bytes().as_slice())
    );

    // Another master key cannot unwrap it.
    let other = KeyStore::new(&MasterKey::generate().unwrap(), Arc::clone(&raw));
    assert!(matches!(
        other.key_for(&alice).await,
        Err(KeyStoreError::Unwrap { .. })
    ));
    // Nor does it unwrap as another participant's.
    let carol = owner("carol");
    raw.put_if_absent(&carol, &stored).await.unwrap();
    assert!(matches!(
        keys.existing(&carol).await,
        Err(KeyStoreError::Unwrap { .. })
    ));

    // Destroyed: gone, and a later use makes another key.
    assert!(keys.destroy(&alice).await.unwrap());
    assert!(!keys.destroy(&alice).await.unwrap());
    assert!(keys.existing(&alice).await.unwrap().is_none());
    assert_ne!(keys.key_for(&alice).await.unwrap(), key);
    assert!(keys.existing(&bob).await.unwrap().is_some());

    // Pages (of one, to cross page ends) give every key once, for `keys rotate`.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = raw.page(after, 1).await.unwrap();
        seen.extend(page.entries.iter().map(|(o, _)| o.participant.to_string()));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    seen.sort();
    assert_eq!(seen, ["alice", "bob", "carol"]);
    // A replace happens only over the key it read: never over another, never after an erase.
    let now = raw.get(&alice).await.unwrap().unwrap();
    let other = StoredKey {
        master_id: "0123456789abcdef".to_owned(),
        wrapped: vec![1; 73],
    };
    assert!(!raw.replace(&alice, &other, &other).await.unwrap());
    assert!(raw.replace(&alice, &now, &other).await.unwrap());
    assert_eq!(raw.get(&alice).await.unwrap(), Some(other.clone()));
    let bobs = raw.get(&bob).await.unwrap().unwrap();
    assert!(keys.destroy(&bob).await.unwrap());
    assert!(!raw.replace(&bob, &bobs, &other).await.unwrap());
    assert!(raw.get(&bob).await.unwrap().is_none());
}

#[tokio::test]
async fn sqlite_key_store() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.sqlite");
    conformance(Arc::new(SqliteKeys::open(&path).await.unwrap())).await;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "{mode:o}");
}

/// A destroyed key's wrapped bytes are not left in the file's free pages, nor in a journal.
#[tokio::test]
async fn sqlite_overwrites_a_destroyed_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys.sqlite");
    let raw = Arc::new(SqliteKeys::open(&path).await.unwrap());
    let keys = KeyStore::new(&MasterKey::generate().unwrap(), raw.clone());
    for i in 0..50 {
        keys.key_for(&owner(&format!("p{i}"))).await.unwrap();
    }
    let alice = owner("alice");
    keys.key_for(&alice).await.unwrap();
    let wrapped = raw.get(&alice).await.unwrap().unwrap().wrapped;
    let holds = || {
        std::fs::read_dir(dir.path()).unwrap().flatten().any(|f| {
            std::fs::read(f.path())
                .unwrap()
                .windows(73)
                .any(|w| w == wrapped)
        })
    };
    assert!(holds(), "the wrapped key is in the file before");
    assert!(keys.destroy(&alice).await.unwrap());
    assert!(
        !holds(),
        "the destroyed key's bytes are still in the key store's files"
    );
}

#[tokio::test]
async fn dynamodb_key_store_made_by_setup_without_point_in_time_recovery() {
    common::aws_env();
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .load()
        .await;
    let client = aws_sdk_dynamodb::Client::new(&sdk);
    let table = DynamoKeys::table_for(&common::unique_name("pf"));
    let keys = DynamoKeys::new(client.clone(), table.clone());
    let report = keys.setup().await.unwrap();
    assert!(
        report[0].starts_with(&format!("created the key table {table}")),
        "{report:?}"
    );
    assert!(
        report[1].contains("point-in-time recovery off"),
        "{report:?}"
    );
    let backups = client
        .describe_continuous_backups()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    assert_ne!(
        backups
            .continuous_backups_description()
            .and_then(|d| d.point_in_time_recovery_description())
            .and_then(|p| p.point_in_time_recovery_status()),
        Some(&aws_sdk_dynamodb::types::PointInTimeRecoveryStatus::Enabled)
    );
    // Someone turned it on: setup says what that means, and leaves the table as it is.
    client
        .update_continuous_backups()
        .table_name(&table)
        .point_in_time_recovery_specification(
            aws_sdk_dynamodb::types::PointInTimeRecoverySpecification::builder()
                .point_in_time_recovery_enabled(true)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let report = keys.setup().await.unwrap();
    assert_eq!(report[0], format!("the key table {table} exists"));
    assert!(
        report[1].starts_with("WARNING") && report[1].contains("keep the keys that erase destroys"),
        "{report:?}"
    );
    conformance(Arc::new(keys)).await;
}

/// `participant-files setup` with `PF_ENCRYPTION` makes the key store beside the index.
#[tokio::test]
async fn setup_makes_the_key_store_beside_the_index() {
    common::aws_env();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("master.key");
    std::fs::write(&key, MasterKey::generate().unwrap().to_file_text()).unwrap();
    let setup = |index: String| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_participant-files"))
            .arg("setup")
            .env("PF_INDEX", index)
            .env("PF_STORE", "local")
            .env("PF_DATA_DIR", dir.path().join("data"))
            .env("PF_ENCRYPTION", format!("file://{}", key.display()))
            .env("PF_JWT_SECRET", common::JWT_SECRET)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let out = setup("sqlite".to_owned());
    let file = dir.path().join("data/keys.sqlite");
    assert!(
        out.contains(&format!("the key store {} is ready", file.display())),
        "{out}"
    );
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o077,
        0
    );
    let table = common::unique_name("pf");
    let out = setup(format!("dynamodb://{table}"));
    assert!(
        out.contains(&format!("created the key table {table}-keys"))
            && out.contains("point-in-time recovery off"),
        "{out}"
    );
}
