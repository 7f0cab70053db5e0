//! Wrapped keys in a SQLite file of their own (`keys.sqlite` in the data dir), apart from the
//! index, so that the index can be backed up and the key store not.
//!
//! `secure_delete` overwrites a destroyed key's bytes in the file, and the rollback journal
//! (not WAL, whose file keeps old pages until a checkpoint) is removed after each write.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, params};

use super::keystore::{KeyPage, KeyStoreError, StoredKey, WrappedKeys};
use crate::model::{AppId, Owner, UserId};

pub struct SqliteKeys {
    conn: Arc<Mutex<Connection>>,
}

fn failed(what: &str) -> impl FnOnce(rusqlite::Error) -> KeyStoreError + '_ {
    move |e| KeyStoreError::backend(what, e)
}

impl SqliteKeys {
    /// Opens the key store at `path`, creating it (readable by its owner only) when missing.
    pub async fn open(path: &Path) -> Result<Self, KeyStoreError> {
        let path = path.to_owned();
        let conn = tokio::task::spawn_blocking(move || -> Result<Connection, KeyStoreError> {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
            {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(KeyStoreError::backend("cannot create the key store", e)),
            }
            let conn = Connection::open(&path).map_err(failed("cannot open the key store"))?;
            conn.execute_batch(
                "PRAGMA journal_mode = DELETE;
                 PRAGMA secure_delete = ON;
                 PRAGMA synchronous = FULL;
                 PRAGMA busy_timeout = 5000;
                 CREATE TABLE IF NOT EXISTS participant_keys (
                     app TEXT NOT NULL,
                     participant TEXT NOT NULL,
                     master_id TEXT NOT NULL,
                     wrapped BLOB NOT NULL,
                     PRIMARY KEY (app, participant)
                 ) WITHOUT ROWID;",
            )
            .map_err(failed("cannot set up the key store"))?;
            Ok(conn)
        })
        .await
        .map_err(|e| KeyStoreError::backend("the key store task failed", e))??;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T, F>(&self, f: F) -> Result<T, KeyStoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, KeyStoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            let conn = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&conn)
        })
        .await
        .map_err(|e| KeyStoreError::backend("the key store task failed", e))?
    }
}

fn names(owner: &Owner) -> (String, String) {
    (owner.app.to_string(), owner.participant.to_string())
}

fn read(conn: &Connection, app: &str, user: &str) -> Result<Option<StoredKey>, KeyStoreError> {
    conn.query_row(
        "SELECT master_id, wrapped FROM participant_keys WHERE app = ?1 AND participant = ?2",
        params![app, user],
        |r| {
            Ok(StoredKey {
                master_id: r.get(0)?,
                wrapped: r.get(1)?,
            })
        },
    )
    .optional()
    .map_err(failed("reading a key failed"))
}

#[async_trait]
impl WrappedKeys for SqliteKeys {
    async fn get(&self, owner: &Owner) -> Result<Option<StoredKey>, KeyStoreError> {
        let (app, user) = names(owner);
        self.with(move |conn| read(conn, &app, &user)).await
    }

    async fn put_if_absent(
        &self,
        owner: &Owner,
        key: &StoredKey,
    ) -> Result<StoredKey, KeyStoreError> {
        let (app, user) = names(owner);
        let key = key.clone();
        self.with(move |conn| {
            conn.execute(
                "INSERT OR IGNORE INTO participant_keys (app, participant, master_id, wrapped)
                 VALUES (?1, ?2, ?3, ?4)",
                params![app, user, key.master_id, key.wrapped],
            )
            .map_err(failed("storing a key failed"))?;
            read(conn, &app, &user)?.ok_or_else(|| {
                KeyStoreError::backend("a key stored is gone", std::io::Error::other("missing"))
            })
        })
        .await
    }

    async fn page(&self, after: Option<String>, limit: usize) -> Result<KeyPage, KeyStoreError> {
        // The cursor is the last entry's `app/participant` (neither may hold a `/`).
        let (app, user) = match after.as_deref().and_then(|a| a.split_once('/')) {
            Some((a, u)) => (a.to_owned(), u.to_owned()),
            None => (String::new(), String::new()),
        };
        self.with(move |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT app, participant, master_id, wrapped FROM participant_keys
                     WHERE (app, participant) > (?1, ?2) ORDER BY app, participant LIMIT ?3",
                )
                .map_err(failed("listing keys failed"))?;
            let rows = stmt
                .query_map(
                    params![app, user, i64::try_from(limit).unwrap_or(i64::MAX)],
                    |r| {
                        Ok((
                            r.get::<_, String>(0)?,
                            r.get::<_, String>(1)?,
                            StoredKey {
                                master_id: r.get(2)?,
                                wrapped: r.get(3)?,
                            },
                        ))
                    },
                )
                .map_err(failed("listing keys failed"))?;
            let mut entries = Vec::new();
            let mut last = None;
            for row in rows {
                let (app, user, key) = row.map_err(failed("listing keys failed"))?;
                last = Some(format!("{app}/{user}"));
                let owner = Owner {
                    app: AppId::parse(&app).map_err(|e| KeyStoreError::backend("a bad app", e))?,
                    participant: UserId::parse(&user)
                        .map_err(|e| KeyStoreError::backend("a bad participant", e))?,
                };
                entries.push((owner, key));
            }
            let next = if entries.len() == limit { last } else { None };
            Ok(KeyPage { entries, next })
        })
        .await
    }

    async fn replace(
        &self,
        owner: &Owner,
        old: &StoredKey,
        new: &StoredKey,
    ) -> Result<bool, KeyStoreError> {
        let (app, user) = names(owner);
        let (old, new) = (old.clone(), new.clone());
        self.with(move |conn| {
            conn.execute(
                "UPDATE participant_keys SET master_id = ?3, wrapped = ?4
                 WHERE app = ?1 AND participant = ?2 AND wrapped = ?5",
                params![app, user, new.master_id, new.wrapped, old.wrapped],
            )
            .map(|n| n > 0)
            .map_err(failed("replacing a key failed"))
        })
        .await
    }

    async fn delete(&self, owner: &Owner) -> Result<bool, KeyStoreError> {
        let (app, user) = names(owner);
        self.with(move |conn| {
            conn.execute(
                "DELETE FROM participant_keys WHERE app = ?1 AND participant = ?2",
                params![app, user],
            )
            .map(|n| n > 0)
            .map_err(failed("destroying a key failed"))
        })
        .await
    }
}
