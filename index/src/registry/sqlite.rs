//! `SqliteCatalog`: the [`Catalog`] in one SQLite file (WAL, `synchronous=FULL`).
//!
//! Writes run in `BEGIN IMMEDIATE` transactions, so two processes registering at once
//! are serialized by SQLite's own lock, and a kill at any instant leaves either the old
//! or the new state (SQLite's journal makes the commit atomic).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::catalog::{Catalog, Change, LockedStep};
use super::record::{AdapterRecord, ConfigSummary, FileRecord, StoredTexts};
use super::schema;
use crate::vectors::TextKind;
use crate::{AdapterId, IndexError, Result};

pub struct SqliteCatalog {
    conn: Connection,
    path: PathBuf,
}

impl SqliteCatalog {
    pub fn open(path: &Path) -> Result<Self> {
        let db = |e| IndexError::db(path, e);
        let mut conn = Connection::open(path).map_err(db)?;
        conn.busy_timeout(Duration::from_secs(30)).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.pragma_update(None, "foreign_keys", "ON").map_err(db)?;
        if let Err(found) = schema::migrate(&mut conn).map_err(db)? {
            return Err(IndexError::SchemaTooNew {
                path: path.to_path_buf(),
                found,
                supported: schema::VERSION,
            });
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn db(&self, e: rusqlite::Error) -> IndexError {
        IndexError::db(&self.path, e)
    }

    fn corrupt(&self, reason: String) -> IndexError {
        IndexError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    fn read_record(&self, row: RawRow) -> Result<AdapterRecord> {
        let id = AdapterId::new(&row.id).map_err(|e| self.corrupt(e.to_string()))?;
        let tags: Vec<String> = serde_json::from_str(&row.tags)
            .map_err(|e| self.corrupt(format!("{id}: tags: {e}")))?;
        let config: ConfigSummary = serde_json::from_str(&row.config)
            .map_err(|e| self.corrupt(format!("{id}: config: {e}")))?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT name, sha256, bytes FROM files WHERE adapter_id = ?1 ORDER BY name",
            )
            .map_err(|e| self.db(e))?;
        let files = stmt
            .query_map([&row.id], |r| {
                Ok(FileRecord {
                    name: r.get(0)?,
                    sha256: r.get(1)?,
                    bytes: r.get::<_, i64>(2)? as u64,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.db(e))?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT text FROM texts WHERE adapter_id = ?1 AND kind = 'example' ORDER BY ord",
            )
            .map_err(|e| self.db(e))?;
        let examples = stmt
            .query_map([&row.id], |r| r.get(0))
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<String>>>())
            .map_err(|e| self.db(e))?;
        Ok(AdapterRecord {
            id,
            folder: row.folder,
            description: row.description,
            examples,
            tags,
            config,
            files,
            revision: row.revision,
            created_at_ms: row.created,
            updated_at_ms: row.updated,
        })
    }

    fn records(&self, filter: Option<&AdapterId>) -> Result<Vec<AdapterRecord>> {
        let sql =
            "SELECT id, folder, description, tags, config, revision, created_at_ms, updated_at_ms \
                   FROM adapters WHERE ?1 IS NULL OR id = ?1 ORDER BY id";
        let mut stmt = self.conn.prepare_cached(sql).map_err(|e| self.db(e))?;
        let raw = stmt
            .query_map([filter.map(AdapterId::as_str)], |r| {
                Ok(RawRow {
                    id: r.get(0)?,
                    folder: r.get(1)?,
                    description: r.get(2)?,
                    tags: r.get(3)?,
                    config: r.get(4)?,
                    revision: r.get(5)?,
                    created: r.get(6)?,
                    updated: r.get(7)?,
                })
            })
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
            .map_err(|e| self.db(e))?;
        raw.into_iter().map(|row| self.read_record(row)).collect()
    }
}

struct RawRow {
    id: String,
    folder: String,
    description: String,
    tags: String,
    config: String,
    revision: i64,
    created: i64,
    updated: i64,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

fn vector_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn blob_vector(b: &[u8]) -> Option<Vec<f32>> {
    (b.len().is_multiple_of(4)).then(|| {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    })
}

impl Catalog for SqliteCatalog {
    fn list(&self) -> Result<Vec<AdapterRecord>> {
        self.records(None)
    }

    fn get(&self, id: &AdapterId) -> Result<Option<AdapterRecord>> {
        Ok(self.records(Some(id))?.pop())
    }

    fn generation(&self) -> Result<i64> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.db(e))
    }

    fn texts(&self, embedder: &str) -> Result<Vec<StoredTexts>> {
        let sql = "SELECT t.adapter_id, a.revision, t.kind, t.text, CASE WHEN t.embedder = ?1 THEN t.vector END \
                   FROM texts t JOIN adapters a ON a.id = t.adapter_id ORDER BY t.adapter_id, t.ord";
        let mut stmt = self.conn.prepare(sql).map_err(|e| self.db(e))?;
        let mut rows = stmt.query([embedder]).map_err(|e| self.db(e))?;
        let mut out: Vec<StoredTexts> = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.db(e))? {
            let get = |e| IndexError::db(&self.path, e);
            let id: String = r.get(0).map_err(get)?;
            let revision: i64 = r.get(1).map_err(get)?;
            let kind: String = r.get(2).map_err(get)?;
            let text: String = r.get(3).map_err(get)?;
            let blob: Option<Vec<u8>> = r.get(4).map_err(get)?;
            let kind = TextKind::parse(&kind)
                .ok_or_else(|| self.corrupt(format!("{id}: text kind {kind:?}")))?;
            let vector =
                match blob {
                    Some(b) => Some(blob_vector(&b).ok_or_else(|| {
                        self.corrupt(format!("{id}: vector of {} bytes", b.len()))
                    })?),
                    None => None,
                };
            if out.last().is_none_or(|s| s.id.as_str() != id) {
                let key = AdapterId::new(&id).map_err(|e| self.corrupt(e.to_string()))?;
                out.push(StoredTexts {
                    id: key,
                    revision,
                    texts: Vec::new(),
                });
            }
            if let Some(last) = out.last_mut() {
                last.texts.push((kind, text, vector));
            }
        }
        Ok(out)
    }

    fn put_vectors(&mut self, id: &AdapterId, embedder: &str, vectors: &[Vec<f32>]) -> Result<()> {
        let path = self.path.clone();
        let db = |e| IndexError::db(&path, e);
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut stmt = tx
                .prepare("UPDATE texts SET embedder = ?1, vector = ?2 WHERE adapter_id = ?3 AND ord = ?4")
                .map_err(db)?;
            for (ord, v) in vectors.iter().enumerate() {
                stmt.execute(params![embedder, vector_blob(v), id.as_str(), ord as i64])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    fn write(&mut self, change: Change<'_>, step: LockedStep<'_>) -> Result<i64> {
        let path = self.path.clone();
        let db = |e| IndexError::db(&path, e);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let folders: Vec<(AdapterId, String)> = {
            let mut stmt = tx.prepare("SELECT id, folder FROM adapters").map_err(db)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
                .map_err(db)?;
            rows.into_iter()
                .filter_map(|(id, folder)| AdapterId::new(&id).ok().map(|k| (k, folder)))
                .collect()
        };
        let mut generation: i64 = tx
            .query_row("SELECT value FROM meta WHERE key = 'generation'", [], |r| {
                r.get(0)
            })
            .map_err(db)?;
        let existing_created: Option<i64> = match change {
            Change::Put { record, replace } => {
                let created = tx
                    .query_row(
                        "SELECT created_at_ms FROM adapters WHERE id = ?1",
                        [record.id.as_str()],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(db)?;
                if created.is_some() && !replace {
                    return Err(IndexError::Duplicate {
                        id: record.id.to_string(),
                    });
                }
                created
            }
            _ => None,
        };
        step(&folders)?;
        match change {
            Change::Nothing => return tx.commit().map(|_| generation).map_err(db),
            Change::Remove { ids } => {
                generation += 1;
                for id in ids {
                    tx.execute("DELETE FROM adapters WHERE id = ?1", [id.as_str()])
                        .map_err(db)?;
                }
            }
            Change::Put { record, .. } => {
                generation += 1;
                let now = now_ms();
                let tags =
                    serde_json::to_string(&record.tags).map_err(|e| IndexError::BadMetadata {
                        id: record.id.to_string(),
                        reason: e.to_string(),
                    })?;
                let config =
                    serde_json::to_string(&record.config).map_err(|e| IndexError::BadMetadata {
                        id: record.id.to_string(),
                        reason: e.to_string(),
                    })?;
                // Deleting first cascades to the old files and texts of a replaced adapter.
                tx.execute("DELETE FROM adapters WHERE id = ?1", [record.id.as_str()])
                    .map_err(db)?;
                tx.execute(
                    "INSERT INTO adapters (id, folder, description, tags, config, revision, created_at_ms, updated_at_ms) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        record.id.as_str(),
                        record.folder,
                        record.description,
                        tags,
                        config,
                        generation,
                        existing_created.unwrap_or(now),
                        now
                    ],
                )
                .map_err(db)?;
                for f in &record.files {
                    tx.execute(
                        "INSERT INTO files (adapter_id, name, sha256, bytes) VALUES (?1, ?2, ?3, ?4)",
                        params![record.id.as_str(), f.name, f.sha256, f.bytes as i64],
                    )
                    .map_err(db)?;
                }
                for (ord, (kind, text)) in record.texts().enumerate() {
                    let vector = record.vectors.get(ord).map(|v| vector_blob(v));
                    tx.execute(
                        "INSERT INTO texts (adapter_id, ord, kind, text, embedder, vector) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        params![record.id.as_str(), ord as i64, kind.as_str(), text, vector.as_ref().map(|_| &record.embedder), vector],
                    )
                    .map_err(db)?;
                }
            }
        }
        tx.execute(
            "UPDATE meta SET value = ?1 WHERE key = 'generation'",
            [generation],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(generation)
    }
}
