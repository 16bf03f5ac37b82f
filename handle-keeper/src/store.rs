//! keeper.db: one SQLite row per kept handle (WAL mode), so the records
//! outlive the keeper process; the fds themselves live in memory and in
//! systemd's fd store.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, Row};

use crate::proto::{DurableKind, Guid, HandleState, Record};

pub const DB_FILE: &str = "keeper.db";
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("keeper.db: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state directory {0}: {1}")]
    Dir(PathBuf, std::io::Error),
    #[error("keeper.db has schema version {0}; this keeper knows {SCHEMA_VERSION}")]
    Schema(i64),
    #[error("keeper.db row {0} is corrupt: {1}")]
    Corrupt(u64, &'static str),
    #[error("a kept handle with persistent FileId {0:#x} already exists")]
    DuplicateFileId(u64),
}

pub struct Store {
    db: Connection,
}

const COLUMNS: &str = "id, kind, state, client_guid, create_guid, persistent_file_id, lease_key, \
    lease_state, oplock_level, desired_access, share_access, uid, user_name, share, path, \
    timeout_ms, app_instance_id, client_addr, file_handle, deposited_at_ms, disconnected_at_ms";

fn guid_col(row: &Row<'_>, idx: usize, id: u64) -> Result<Guid, StoreError> {
    let v: Vec<u8> = row.get(idx)?;
    v.try_into()
        .map_err(|_| StoreError::Corrupt(id, "guid length"))
}

fn opt_guid_col(row: &Row<'_>, idx: usize, id: u64) -> Result<Option<Guid>, StoreError> {
    let v: Option<Vec<u8>> = row.get(idx)?;
    v.map(|v| {
        v.try_into()
            .map_err(|_| StoreError::Corrupt(id, "guid length"))
    })
    .transpose()
}

fn from_row(row: &Row<'_>) -> Result<Record, StoreError> {
    let id = row.get::<_, i64>(0)? as u64;
    let kind = DurableKind::from_u8(row.get(1)?).ok_or(StoreError::Corrupt(id, "kind"))?;
    let state = HandleState::from_u8(row.get(2)?).ok_or(StoreError::Corrupt(id, "state"))?;
    Ok(Record {
        id,
        kind,
        state,
        client_guid: guid_col(row, 3, id)?,
        create_guid: guid_col(row, 4, id)?,
        persistent_file_id: row.get::<_, i64>(5)? as u64,
        lease_key: opt_guid_col(row, 6, id)?,
        lease_state: row.get(7)?,
        oplock_level: row.get(8)?,
        desired_access: row.get(9)?,
        share_access: row.get(10)?,
        uid: row.get(11)?,
        user_name: row.get(12)?,
        share: row.get(13)?,
        path: row.get(14)?,
        timeout_ms: row.get(15)?,
        app_instance_id: opt_guid_col(row, 16, id)?,
        client_addr: row.get(17)?,
        file_handle: row.get(18)?,
        deposited_at_ms: row.get::<_, i64>(19)? as u64,
        disconnected_at_ms: row.get::<_, Option<i64>>(20)?.map(|v| v as u64),
    })
}

impl Store {
    /// Opens (creating if needed) `dir/keeper.db`; `dir` is created mode 0700.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        }
        let path = dir.join(DB_FILE);
        let db = Connection::open(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Dir(dir.to_path_buf(), e))?;
        Store::init(db)
    }

    /// An in-memory store (unit tests).
    pub fn open_in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(db: Connection) -> Result<Store, StoreError> {
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        let version: i64 = db.pragma_query_value(None, "user_version", |r| r.get(0))?;
        match version {
            0 => {
                db.execute_batch(
                    "BEGIN;
                     CREATE TABLE handles (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        kind INTEGER NOT NULL,
                        state INTEGER NOT NULL,
                        client_guid BLOB NOT NULL,
                        create_guid BLOB NOT NULL,
                        persistent_file_id INTEGER NOT NULL UNIQUE,
                        lease_key BLOB,
                        lease_state INTEGER NOT NULL,
                        oplock_level INTEGER NOT NULL,
                        desired_access INTEGER NOT NULL,
                        share_access INTEGER NOT NULL,
                        uid INTEGER NOT NULL,
                        user_name TEXT NOT NULL,
                        share TEXT NOT NULL,
                        path TEXT NOT NULL,
                        timeout_ms INTEGER NOT NULL,
                        app_instance_id BLOB,
                        client_addr TEXT NOT NULL,
                        file_handle BLOB NOT NULL,
                        deposited_at_ms INTEGER NOT NULL,
                        disconnected_at_ms INTEGER
                     );
                     CREATE INDEX handles_create_guid ON handles(create_guid);
                     PRAGMA user_version = 1;
                     COMMIT;",
                )?;
            }
            SCHEMA_VERSION => {}
            other => return Err(StoreError::Schema(other)),
        }
        Ok(Store { db })
    }

    /// Stores a new record as connected; returns it with its new id.
    pub fn insert(&self, rec: &Record, now_ms: u64) -> Result<Record, StoreError> {
        if self.by_file_id(rec.persistent_file_id)?.is_some() {
            return Err(StoreError::DuplicateFileId(rec.persistent_file_id));
        }
        self.db.execute(
            &format!(
                "INSERT INTO handles ({COLUMNS}) VALUES (NULL, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
                 ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, NULL)"
            ),
            params![
                rec.kind as u8,
                HandleState::Connected as u8,
                &rec.client_guid[..],
                &rec.create_guid[..],
                rec.persistent_file_id as i64,
                rec.lease_key.as_ref().map(|g| &g[..]),
                rec.lease_state,
                rec.oplock_level,
                rec.desired_access,
                rec.share_access,
                rec.uid,
                rec.user_name,
                rec.share,
                rec.path,
                rec.timeout_ms,
                rec.app_instance_id.as_ref().map(|g| &g[..]),
                rec.client_addr,
                rec.file_handle,
                now_ms as i64,
            ],
        )?;
        let mut out = rec.clone();
        out.id = self.db.last_insert_rowid() as u64;
        out.state = HandleState::Connected;
        out.deposited_at_ms = now_ms;
        out.disconnected_at_ms = None;
        Ok(out)
    }

    fn query_one(
        &self,
        clause: &str,
        p: impl rusqlite::Params,
    ) -> Result<Option<Record>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(&format!("SELECT {COLUMNS} FROM handles WHERE {clause}"))?;
        let mut rows = stmt.query(p)?;
        match rows.next()? {
            Some(row) => Ok(Some(from_row(row)?)),
            None => Ok(None),
        }
    }

    pub fn get(&self, id: u64) -> Result<Option<Record>, StoreError> {
        self.query_one("id = ?1", params![id as i64])
    }

    pub fn by_file_id(&self, persistent_file_id: u64) -> Result<Option<Record>, StoreError> {
        self.query_one(
            "persistent_file_id = ?1",
            params![persistent_file_id as i64],
        )
    }

    /// The oldest kept v2/persistent handle with this CreateGUID.
    pub fn by_create_guid(&self, create_guid: &Guid) -> Result<Option<Record>, StoreError> {
        self.query_one(
            "create_guid = ?1 AND kind != 1 ORDER BY id LIMIT 1",
            params![&create_guid[..]],
        )
    }

    pub fn all(&self) -> Result<Vec<Record>, StoreError> {
        let mut stmt = self
            .db
            .prepare_cached(&format!("SELECT {COLUMNS} FROM handles ORDER BY id"))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(from_row(row)?);
        }
        Ok(out)
    }

    /// Marks a handle disconnected at `at_ms`; false if there is no such row.
    pub fn set_disconnected(&self, id: u64, at_ms: u64) -> Result<bool, StoreError> {
        Ok(self.db.execute(
            "UPDATE handles SET state = ?2, disconnected_at_ms = ?3 WHERE id = ?1",
            params![id as i64, HandleState::Disconnected as u8, at_ms as i64],
        )? == 1)
    }

    pub fn set_connected(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self.db.execute(
            "UPDATE handles SET state = ?2, disconnected_at_ms = NULL WHERE id = ?1",
            params![id as i64, HandleState::Connected as u8],
        )? == 1)
    }

    pub fn delete(&self, id: u64) -> Result<bool, StoreError> {
        Ok(self
            .db
            .execute("DELETE FROM handles WHERE id = ?1", params![id as i64])?
            == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(fid: u64) -> Record {
        let mut r = Record::new(DurableKind::V2, fid);
        r.client_guid = [1; 16];
        r.create_guid = [fid as u8; 16];
        r.lease_key = Some([7; 16]);
        r.uid = 1000;
        r.user_name = "smbtest".into();
        r.share = "share".into();
        r.path = "a/b.txt".into();
        r.timeout_ms = 60_000;
        r.file_handle = vec![1, 2, 3];
        r
    }

    #[test]
    fn insert_get_update_delete() {
        let s = Store::open_in_memory().unwrap();
        let a = s.insert(&rec(10), 1000).unwrap();
        let b = s.insert(&rec(11), 2000).unwrap();
        assert!(b.id > a.id);
        assert_eq!(s.get(a.id).unwrap().unwrap(), a);
        assert_eq!(s.by_file_id(11).unwrap().unwrap(), b);
        assert_eq!(s.by_create_guid(&[11; 16]).unwrap().unwrap().id, b.id);
        assert!(s.by_create_guid(&[99; 16]).unwrap().is_none());

        assert!(s.set_disconnected(a.id, 5000).unwrap());
        let got = s.get(a.id).unwrap().unwrap();
        assert_eq!(got.state, HandleState::Disconnected);
        assert_eq!(got.disconnected_at_ms, Some(5000));
        assert!(s.set_connected(a.id).unwrap());
        assert_eq!(s.get(a.id).unwrap().unwrap(), a);

        assert!(matches!(
            s.insert(&rec(10), 3000),
            Err(StoreError::DuplicateFileId(10))
        ));
        assert!(s.delete(a.id).unwrap());
        assert!(!s.delete(a.id).unwrap());
        assert!(!s.set_connected(a.id).unwrap());
        assert_eq!(s.all().unwrap(), vec![b]);
    }

    #[test]
    fn ids_are_never_reused_and_rows_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let first;
        {
            let s = Store::open(dir.path()).unwrap();
            first = s.insert(&rec(1), 1).unwrap();
            s.set_disconnected(first.id, 77).unwrap();
            let gone = s.insert(&rec(2), 2).unwrap();
            s.delete(gone.id).unwrap();
        }
        let s = Store::open(dir.path()).unwrap();
        let journal: String =
            s.db.pragma_query_value(None, "journal_mode", |r| r.get(0))
                .unwrap();
        assert_eq!(journal, "wal");
        let all = s.all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].disconnected_at_ms, Some(77));
        let next = s.insert(&rec(3), 3).unwrap();
        // AUTOINCREMENT: a deleted id (an fd-store name) is never handed out again.
        assert_eq!(next.id, first.id + 2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn corrupt_rows_are_reported_not_panicked_on() {
        let s = Store::open_in_memory().unwrap();
        let a = s.insert(&rec(1), 1).unwrap();
        s.db.execute(
            "UPDATE handles SET client_guid = x'01' WHERE id = ?1",
            [a.id as i64],
        )
        .unwrap();
        assert!(matches!(s.get(a.id), Err(StoreError::Corrupt(_, _))));
        s.db.execute("UPDATE handles SET kind = 9 WHERE id = ?1", [a.id as i64])
            .unwrap();
        assert!(matches!(s.all(), Err(StoreError::Corrupt(_, "kind"))));
    }
}
