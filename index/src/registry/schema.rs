//! The registry's SQLite schema and its migrations, numbered by `PRAGMA user_version`.
//!
//! A migration is appended, never edited: a database at version `n` runs migrations
//! `n..` in one transaction each. A database newer than this build is refused rather
//! than guessed at.

use rusqlite::Connection;

/// `MIGRATIONS[i]` takes the schema from version `i` to `i + 1`.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: adapters, their files and their indexed texts (with vectors), and the generation.
    "CREATE TABLE adapters (
        id TEXT PRIMARY KEY NOT NULL,
        folder TEXT NOT NULL UNIQUE,
        description TEXT NOT NULL,
        tags TEXT NOT NULL,          -- JSON array of strings
        config TEXT NOT NULL,        -- JSON ConfigSummary
        revision INTEGER NOT NULL,
        created_at_ms INTEGER NOT NULL,
        updated_at_ms INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE files (
        adapter_id TEXT NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        bytes INTEGER NOT NULL,
        PRIMARY KEY (adapter_id, name)
    ) STRICT;
    CREATE TABLE texts (
        adapter_id TEXT NOT NULL REFERENCES adapters(id) ON DELETE CASCADE,
        ord INTEGER NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('description', 'example')),
        text TEXT NOT NULL,
        embedder TEXT,               -- which embedder computed `vector`
        vector BLOB,                 -- little-endian f32s
        PRIMARY KEY (adapter_id, ord)
    ) STRICT;
    CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) STRICT;
    INSERT INTO meta (key, value) VALUES ('generation', 0);",
];

pub(crate) const VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings `conn` to [`VERSION`]. Returns the version found, or `Err(found)` (as
/// `Ok(Err)`) when the database is newer than this build.
pub(crate) fn migrate(conn: &mut Connection) -> rusqlite::Result<Result<i64, i64>> {
    let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if found > VERSION {
        return Ok(Err(found));
    }
    for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", from as i64 + 1)?;
        tx.commit()?;
    }
    Ok(Ok(found))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_an_empty_database_once() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), Ok(0));
        assert_eq!(migrate(&mut conn).unwrap(), Ok(VERSION));
        let g: i64 = conn
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(g, 0);
    }

    #[test]
    fn refuses_a_newer_database() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "user_version", VERSION + 1)
            .unwrap();
        assert_eq!(migrate(&mut conn).unwrap(), Err(VERSION + 1));
    }
}
