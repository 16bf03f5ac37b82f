//! Holdfast's own user database: SMB account name -> Unix account + NT hash.
//! NTLM needs the NT hash, which /etc/shadow cannot provide, hence a separate
//! store that is readable by root only.

use std::ffi::CString;
use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use md4::{Digest, Md4};
use rusqlite::{params, Connection, OptionalExtension};

/// File name inside the state directory.
pub const USERS_DB: &str = "users.db";

/// Bumped whenever the schema changes; see [`migrate`].
const SCHEMA_VERSION: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum UserDbError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("user database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("invalid user name {0:?}: 1-64 characters, no control characters or any of \"/\\[]:;|=,+*?<>@")]
    InvalidName(String),
    #[error("empty passwords are not allowed")]
    EmptyPassword,
    #[error("user {0:?} already exists")]
    Exists(String),
    #[error("no such user {0:?}")]
    NotFound(String),
    #[error("no such Unix user {0:?}")]
    NoSuchUnixUser(String),
    #[error("looking up Unix user {name:?}: {source}")]
    UnixLookup { name: String, source: nix::Error },
    #[error("user database schema version {0} is newer than this program understands ({SCHEMA_VERSION})")]
    NewerSchema(i64),
}

pub type Result<T, E = UserDbError> = std::result::Result<T, E>;

/// One account. `Debug` hides the hash so records can be logged safely.
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub unix_user: String,
    pub nt_hash: [u8; 16],
    /// Seconds since the Unix epoch.
    pub created: i64,
    pub disabled: bool,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("unix_user", &self.unix_user)
            .field("nt_hash", &"<redacted>")
            .field("created", &self.created)
            .field("disabled", &self.disabled)
            .finish()
    }
}

/// MD4 of the UTF-16LE password (MS-NLMP 3.3.1 NTOWFv1); NTLMv2 builds on it.
pub fn nt_hash(password: &str) -> [u8; 16] {
    let mut h = Md4::new();
    for unit in password.encode_utf16() {
        h.update(unit.to_le_bytes());
    }
    h.finalize().into()
}

/// Rejects names Windows would refuse or that would be ambiguous in
/// "DOMAIN\user" / "user@realm" forms.
pub fn validate_name(name: &str) -> Result<()> {
    let len = name.chars().count();
    let bad = |c: char| c.is_control() || "\"/\\[]:;|=,+*?<>@".contains(c);
    if len == 0 || len > 64 || name.chars().any(bad) {
        return Err(UserDbError::InvalidName(name.to_string()));
    }
    Ok(())
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> UserDbError + '_ {
    move |source| UserDbError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct UserDb {
    conn: Connection,
    path: PathBuf,
}

impl UserDb {
    /// Opens (creating if needed) `users.db` in `state_dir`. The file holds
    /// password-equivalent hashes, so it is forced to mode 0600.
    pub fn open(state_dir: &Path) -> Result<UserDb> {
        if !state_dir.exists() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(state_dir)
                .map_err(io_err(state_dir))?;
        } else {
            let mode = fs::metadata(state_dir)
                .map_err(io_err(state_dir))?
                .permissions()
                .mode();
            // The directory may be shared with other state, so only warn;
            // the database file itself is protected below.
            if mode & 0o022 != 0 {
                tracing::warn!(
                    "state directory {} is group/world writable (mode {:o})",
                    state_dir.display(),
                    mode & 0o7777
                );
            }
        }

        let path = state_dir.join(USERS_DB);
        // Create it ourselves so it never exists with umask-derived permissions.
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io_err(&path))?;
        let meta = fs::symlink_metadata(&path).map_err(io_err(&path))?;
        if !meta.file_type().is_file() {
            return Err(UserDbError::Io {
                path,
                source: std::io::Error::other("not a regular file"),
            });
        }
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(&path, Permissions::from_mode(0o600)).map_err(io_err(&path))?;
        }

        let conn = Connection::open(&path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!("user database journal mode is {mode}, not WAL");
        }
        migrate(&conn)?;
        Ok(UserDb { conn, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Adds a new account; fails with [`UserDbError::Exists`] if the name
    /// (case-insensitively) is taken.
    pub fn add(&self, name: &str, unix_user: &str, password: &str) -> Result<()> {
        validate_name(name)?;
        if password.is_empty() {
            return Err(UserDbError::EmptyPassword);
        }
        let hash = nt_hash(password);
        let res = self.conn.execute(
            "INSERT INTO users (name, unix_user, nt_hash, created, disabled) VALUES (?1, ?2, ?3, ?4, 0)",
            params![name, unix_user, &hash[..], now()],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(UserDbError::Exists(name.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    pub fn set_password(&self, name: &str, password: &str) -> Result<()> {
        if password.is_empty() {
            return Err(UserDbError::EmptyPassword);
        }
        let n = self.conn.execute(
            "UPDATE users SET nt_hash = ?1 WHERE name = ?2",
            params![&nt_hash(password)[..], name],
        )?;
        if n == 0 {
            return Err(UserDbError::NotFound(name.to_string()));
        }
        Ok(())
    }

    /// Returns whether a user was deleted.
    pub fn delete(&self, name: &str) -> Result<bool> {
        let n = self
            .conn
            .execute("DELETE FROM users WHERE name = ?1", params![name])?;
        Ok(n > 0)
    }

    /// All accounts, sorted by name.
    pub fn list(&self) -> Result<Vec<UserRecord>> {
        let mut stmt = self.conn.prepare(
            "SELECT name, unix_user, nt_hash, created, disabled FROM users ORDER BY name",
        )?;
        let rows = stmt.query_map([], row_to_record)?;
        Ok(rows.collect::<Result<Vec<_>, _>>()?)
    }

    /// Case-insensitive (ASCII) lookup, matching how Windows treats names.
    pub fn lookup(&self, name: &str) -> Result<Option<UserRecord>> {
        Ok(self
            .conn
            .query_row(
                "SELECT name, unix_user, nt_hash, created, disabled FROM users WHERE name = ?1",
                params![name],
                row_to_record,
            )
            .optional()?)
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<UserRecord> {
    let blob: Vec<u8> = r.get(2)?;
    let nt_hash: [u8; 16] = blob.as_slice().try_into().map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            2,
            rusqlite::types::Type::Blob,
            format!("nt_hash is {} bytes, expected 16", blob.len()).into(),
        )
    })?;
    Ok(UserRecord {
        name: r.get(0)?,
        unix_user: r.get(1)?,
        nt_hash,
        created: r.get::<_, Option<i64>>(3)?.unwrap_or(0),
        disabled: r.get::<_, Option<i64>>(4)?.unwrap_or(0) != 0,
    })
}

/// Schema migrations keyed on `PRAGMA user_version`; each step runs in a
/// transaction so a crash never leaves a half-migrated database.
fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(UserDbError::NewerSchema(version));
    }
    if version < 1 {
        conn.execute_batch(
            "BEGIN IMMEDIATE;
             CREATE TABLE IF NOT EXISTS users (
                 name TEXT PRIMARY KEY COLLATE NOCASE,
                 unix_user TEXT NOT NULL,
                 nt_hash BLOB NOT NULL CHECK (length(nt_hash) = 16),
                 created INTEGER,
                 disabled INTEGER DEFAULT 0
             );
             PRAGMA user_version = 1;
             COMMIT;",
        )?;
    }
    Ok(())
}

/// The Unix identity a session runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixAccount {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups, including the primary group.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

/// Looks up a Unix account and its group list via NSS.
pub fn resolve_unix_user(name: &str) -> Result<UnixAccount> {
    let lookup_err = |source| UserDbError::UnixLookup {
        name: name.to_string(),
        source,
    };
    let user = nix::unistd::User::from_name(name)
        .map_err(lookup_err)?
        .ok_or_else(|| UserDbError::NoSuchUnixUser(name.to_string()))?;
    let cname = CString::new(name).map_err(|_| UserDbError::NoSuchUnixUser(name.to_string()))?;
    let groups = nix::unistd::getgrouplist(&cname, user.gid)
        .map_err(lookup_err)?
        .into_iter()
        .map(|g| g.as_raw())
        .collect();
    Ok(UnixAccount {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        groups,
        home: user.dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nt_hash_matches_ms_nlmp_example() {
        assert_eq!(
            hex::encode(nt_hash("Password")),
            "a4f49c406510bdcab6824ee7c30fd852"
        );
    }

    #[test]
    fn name_validation() {
        for good in ["alice", "Bob Smith", "x", "élodie", &"a".repeat(64)] {
            validate_name(good).unwrap();
        }
        for bad in [
            "",
            "a/b",
            "a\\b",
            "a@b",
            "a:b",
            "tab\t",
            &"a".repeat(65),
            "a*",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn add_lookup_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let db = UserDb::open(&state).unwrap();
        assert_eq!(
            fs::metadata(&state).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(db.path()).unwrap().permissions().mode() & 0o777,
            0o600
        );
        db.add("Alice", "root", "Password").unwrap();
        assert!(matches!(
            db.add("alice", "root", "x"),
            Err(UserDbError::Exists(_))
        ));
        assert!(matches!(
            db.add("bob", "root", ""),
            Err(UserDbError::EmptyPassword)
        ));
        assert!(matches!(
            db.add("b@b", "root", "x"),
            Err(UserDbError::InvalidName(_))
        ));
        // SQLite gives the WAL file the database file's mode.
        let wal = state.join("users.db-wal");
        assert_eq!(
            fs::metadata(wal).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let rec = db.lookup("ALICE").unwrap().unwrap();
        assert_eq!(rec.name, "Alice");
        assert_eq!(rec.unix_user, "root");
        assert_eq!(rec.nt_hash, nt_hash("Password"));
        assert!(rec.created > 0 && !rec.disabled);
        assert!(!format!("{rec:?}").contains("a4f4"));

        db.set_password("alice", "other").unwrap();
        assert_eq!(
            db.lookup("alice").unwrap().unwrap().nt_hash,
            nt_hash("other")
        );
        assert!(matches!(
            db.set_password("nobody-here", "x"),
            Err(UserDbError::NotFound(_))
        ));

        db.add("bob", "nobody", "pw").unwrap();
        let names: Vec<_> = db.list().unwrap().into_iter().map(|r| r.name).collect();
        assert_eq!(names, vec!["Alice", "bob"]);
        assert!(db.delete("ALICE").unwrap());
        assert!(!db.delete("alice").unwrap());
        drop(db);

        // Reopening keeps data and the schema version.
        let db = UserDb::open(&state).unwrap();
        assert_eq!(db.list().unwrap().len(), 1);
    }

    #[test]
    fn loose_file_mode_is_fixed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(USERS_DB);
        drop(UserDb::open(dir.path()).unwrap());
        fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        drop(UserDb::open(dir.path()).unwrap());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(UserDb::open(dir.path()).unwrap());
        let conn = Connection::open(dir.path().join(USERS_DB)).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            UserDb::open(dir.path()),
            Err(UserDbError::NewerSchema(99))
        ));
    }

    #[test]
    fn resolves_root() {
        let acct = resolve_unix_user("root").unwrap();
        assert_eq!((acct.uid, acct.gid), (0, 0));
        assert!(acct.groups.contains(&0));
        assert!(matches!(
            resolve_unix_user("no-such-user-holdfast"),
            Err(UserDbError::NoSuchUnixUser(_))
        ));
    }
}
