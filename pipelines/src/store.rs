//! The run store: SQLite in write-ahead-log mode, the embedded default.
//!
//! Tables: `runs` (one row a run: fingerprint, config, data manifest, status, stop reason),
//! `journal` (the append-only event journal, each record with a checksum), `nodes` (node
//! completions), `artifacts` (what each completion produced) and `strategies` (every trial
//! with its metrics, for queries). A node completion, its artifacts and its strategies are one
//! transaction; an LLM exchange is its own transaction, written before the node sees the
//! answer. A kill at any point loses at most the call in flight.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::journal::{Kind, Record, Sink};

/// A run store failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("run store '{path}': {source}")]
    Sqlite {
        /// The database file.
        path: PathBuf,
        /// The error.
        #[source]
        source: rusqlite::Error,
    },
    /// A record failed its checksum before the end of the journal.
    #[error(
        "run {run}: journal record {seq} is corrupt ({why}); the records after it cannot be trusted. Export what is intact with `lim trace export {run}` or start a new run"
    )]
    Corrupt {
        /// The run.
        run: String,
        /// The record.
        seq: u64,
        /// What is wrong.
        why: String,
    },
    /// No such run.
    #[error("no run '{0}' in the store; `lim runs` lists them")]
    UnknownRun(String),
    /// A prefix that several runs start with.
    #[error("'{prefix}' starts several runs ({}); give more of the id", runs.join(", "))]
    AmbiguousRun {
        /// What was given.
        prefix: String,
        /// The runs it starts (at most the first few).
        runs: Vec<String>,
    },
    /// A file could not be read or written.
    #[error("{action} '{path}': {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What the store knows of a run.
/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Started, not ended (or its process died: see [`RunStatus::Stopped`]).
    Running,
    /// Stopped by Ctrl-C between journal writes; `lim resume` continues it.
    Interrupted,
    /// A node failed; `lim resume` continues after the fix.
    Failed,
    /// Its report is written.
    Finished,
    /// Marked running, but the process working on it is gone (killed, crashed): as people
    /// should read a dead run. Never stored.
    Stopped,
}

impl RunStatus {
    /// The name stored and printed.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Interrupted => "interrupted",
            RunStatus::Failed => "failed",
            RunStatus::Finished => "finished",
            RunStatus::Stopped => "stopped",
        }
    }

    /// The status as it stands now, given the process `owner` that last worked on the run: a
    /// run recorded as running whose process is gone is stopped (read from `/proc`; where
    /// there is none, the recorded status stands).
    pub fn live(self, owner: Option<u32>) -> RunStatus {
        match (self, owner) {
            (RunStatus::Running, Some(pid))
                if Path::new("/proc/self").exists()
                    && !Path::new(&format!("/proc/{pid}")).exists() =>
            {
                RunStatus::Stopped
            }
            _ => self,
        }
    }

    /// Whether `lim resume` has work to continue: the run stopped before its end (interrupted,
    /// failed, or its process gone).
    pub fn resumable(self) -> bool {
        matches!(
            self,
            RunStatus::Interrupted | RunStatus::Failed | RunStatus::Stopped
        )
    }

    /// The inverse of [`RunStatus::as_str`]; an unknown name reads as failed.
    pub fn parse(s: &str) -> RunStatus {
        match s {
            "running" => RunStatus::Running,
            "interrupted" => RunStatus::Interrupted,
            "finished" => RunStatus::Finished,
            "stopped" => RunStatus::Stopped,
            _ => RunStatus::Failed,
        }
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunMeta {
    /// The run's id.
    pub id: String,
    /// Fingerprint of workflow, config and data manifest.
    pub fingerprint: String,
    /// When it was created (run clock, ms since the epoch).
    pub created_ms: i64,
    /// The research goal.
    pub goal: String,
    /// The run's configuration.
    pub config: Value,
    /// The data it reads: datasets, files, sizes.
    pub manifest: Value,
    /// Where it stands.
    pub status: RunStatus,
    /// Why it stopped, once it has.
    pub stop_reason: Option<String>,
}

/// A run and how far it got (see [`Store::overview`]).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunOverview {
    /// The run's id.
    pub id: String,
    /// When it was created (ms since the epoch).
    pub created_ms: i64,
    /// The goal.
    pub goal: String,
    /// Its status as recorded (a running run whose process died still reads "running").
    pub status: RunStatus,
    /// Why it stopped.
    pub stop_reason: Option<String>,
    /// Strategies tried so far.
    pub trials: usize,
    /// The best robust fitness so far.
    pub best_fitness: Option<f64>,
    /// Journal records so far.
    pub records: u64,
    /// The node execution that wrote the last record.
    pub last_exec: Option<String>,
    /// The process that runs it, while one does.
    pub owner: Option<u32>,
}

/// A journal read back: the intact records and what was wrong at its end.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The intact records, in order.
    pub records: Vec<Record>,
    /// Problems found and handled (e.g. a torn final record ignored).
    pub warnings: Vec<String>,
}

/// The run store.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    dir: PathBuf,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY, fingerprint TEXT NOT NULL, created_ms INTEGER NOT NULL,
    goal TEXT NOT NULL, config TEXT NOT NULL, manifest TEXT NOT NULL,
    status TEXT NOT NULL, stop_reason TEXT);
CREATE TABLE IF NOT EXISTS journal (
    run TEXT NOT NULL, seq INTEGER NOT NULL, exec TEXT NOT NULL, kind TEXT NOT NULL,
    n INTEGER NOT NULL, body TEXT NOT NULL, checksum TEXT NOT NULL,
    PRIMARY KEY (run, seq));
CREATE TABLE IF NOT EXISTS nodes (
    run TEXT NOT NULL, exec TEXT NOT NULL, node TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (run, exec));
CREATE TABLE IF NOT EXISTS artifacts (
    run TEXT NOT NULL, exec TEXT NOT NULL, name TEXT NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY (run, exec, name));
CREATE TABLE IF NOT EXISTS owners (
    run TEXT PRIMARY KEY, pid INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS strategies (
    run TEXT NOT NULL, signal TEXT NOT NULL, generation INTEGER, fitness REAL,
    metrics TEXT NOT NULL, PRIMARY KEY (run, signal));
CREATE TABLE IF NOT EXISTS run_data (
    run TEXT PRIMARY KEY, dir TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS findings (
    datasets TEXT NOT NULL, run TEXT NOT NULL, signal TEXT NOT NULL,
    validation_sharpe REAL, body TEXT NOT NULL, PRIMARY KEY (datasets, run, signal));
";

/// The store's database file, in its directory.
const DATABASE: &str = "runs.sqlite";

impl Store {
    /// Whether a store has been made in `dir` (its database is there).
    pub fn exists(dir: &Path) -> bool {
        dir.join(DATABASE).is_file()
    }

    /// Opens (or creates) the store in `dir`: `dir/runs.sqlite`, and a directory per run.
    ///
    /// # Errors
    /// The directory or database cannot be created or opened.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            action: "cannot create the run store directory",
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DATABASE);
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        // Survives a killed process (the WAL is in the OS cache); a power cut may lose the
        // last transactions but never tears one.
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        conn.execute_batch(SCHEMA).map_err(sql)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
            dir: dir.to_path_buf(),
        })
    }

    /// Opens an existing store for reading only (`lim serve`): nothing is created, and
    /// nothing can be written through it.
    ///
    /// # Errors
    /// There is no store in `dir`, or it cannot be opened.
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        let path = dir.join(DATABASE);
        if !Store::exists(dir) {
            return Err(StoreError::Io {
                action: "no run store here (runs.sqlite is missing); pass --store DIR of an existing store",
                path: dir.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let sql = |source| StoreError::Sqlite {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        Ok(Store {
            conn: Mutex::new(conn),
            path,
            dir: dir.to_path_buf(),
        })
    }

    /// Every run with how far it got, newest first, in one query: for lists of many runs.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn overview(&self) -> Result<Vec<RunOverview>, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare(
                "SELECT r.id, r.created_ms, r.goal, r.status, r.stop_reason,
                        (SELECT count(*) FROM strategies s WHERE s.run = r.id),
                        (SELECT max(fitness) FROM strategies s WHERE s.run = r.id),
                        (SELECT max(seq) FROM journal j WHERE j.run = r.id),
                        (SELECT exec FROM journal j WHERE j.run = r.id ORDER BY seq DESC LIMIT 1),
                        (SELECT pid FROM owners o WHERE o.run = r.id)
                 FROM runs r ORDER BY r.created_ms DESC, r.id",
            )
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], |r| {
                Ok(RunOverview {
                    id: r.get(0)?,
                    created_ms: r.get(1)?,
                    goal: r.get(2)?,
                    status: RunStatus::parse(&r.get::<_, String>(3)?),
                    stop_reason: r.get(4)?,
                    trials: r.get::<_, i64>(5)?.max(0) as usize,
                    best_fitness: r.get(6)?,
                    records: r.get::<_, Option<i64>>(7)?.unwrap_or(0).max(0) as u64,
                    last_exec: r.get(8)?,
                    owner: r
                        .get::<_, Option<i64>>(9)?
                        .and_then(|p| u32::try_from(p).ok()),
                })
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    fn err(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The directory of run `id` (report, trace), created if needed.
    ///
    /// # Errors
    /// It cannot be created.
    pub fn run_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        let d = self.dir.join(id);
        std::fs::create_dir_all(&d).map_err(|source| StoreError::Io {
            action: "cannot create the run directory",
            path: d.clone(),
            source,
        })?;
        Ok(d)
    }

    /// Adds a run.
    ///
    /// # Errors
    /// SQLite failed (e.g. the id exists).
    pub fn create_run(&self, m: &RunMeta) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO runs (id, fingerprint, created_ms, goal, config, manifest, status, stop_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![m.id, m.fingerprint, m.created_ms, m.goal, m.config.to_string(), m.manifest.to_string(), m.status.as_str(), m.stop_reason],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Sets a run's status and stop reason.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn set_status(
        &self,
        id: &str,
        status: RunStatus,
        stop_reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE runs SET status = ?2, stop_reason = ?3 WHERE id = ?1",
                params![id, status.as_str(), stop_reason],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records the process now working on run `id` (so `lim runs` can tell a run that died).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn claim(&self, id: &str, pid: u32) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT OR REPLACE INTO owners (run, pid) VALUES (?1, ?2)",
                params![id, i64::from(pid)],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Run `m`'s status as it stands now ([`RunStatus::live`]).
    pub fn live_status(&self, m: &RunMeta) -> RunStatus {
        if m.status != RunStatus::Running {
            return m.status;
        }
        m.status.live(self.owner(&m.id).ok().flatten())
    }

    /// The newest run for which `keep` holds (with its status as it stands now).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn newest(&self, keep: impl Fn(RunStatus) -> bool) -> Result<Option<RunMeta>, StoreError> {
        Ok(self
            .runs()?
            .into_iter()
            .rev()
            .find(|m| keep(self.live_status(m))))
    }

    /// The process that last worked on run `id`.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn owner(&self, id: &str) -> Result<Option<u32>, StoreError> {
        let pid: Option<i64> = self
            .conn()
            .query_row("SELECT pid FROM owners WHERE run = ?1", params![id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        Ok(pid.and_then(|p| u32::try_from(p).ok()))
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunMeta> {
        let json = |s: String| serde_json::from_str(&s).unwrap_or(Value::Null);
        Ok(RunMeta {
            id: r.get(0)?,
            fingerprint: r.get(1)?,
            created_ms: r.get(2)?,
            goal: r.get(3)?,
            config: json(r.get(4)?),
            manifest: json(r.get(5)?),
            status: RunStatus::parse(&r.get::<_, String>(6)?),
            stop_reason: r.get(7)?,
        })
    }

    /// A run by id, or by a unique prefix of one.
    ///
    /// # Errors
    /// No run matches, or SQLite failed.
    pub fn run(&self, id: &str) -> Result<RunMeta, StoreError> {
        let conn = self.conn();
        let exact = conn
            .query_row(
                "SELECT id, fingerprint, created_ms, goal, config, manifest, status, stop_reason FROM runs WHERE id = ?1",
                params![id],
                Store::row,
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if let Some(m) = exact {
            return Ok(m);
        }
        let mut st = conn
            .prepare("SELECT id, fingerprint, created_ms, goal, config, manifest, status, stop_reason FROM runs WHERE id LIKE ?1 || '%' ORDER BY id")
            .map_err(|e| self.err(e))?;
        let found: Vec<RunMeta> = st
            .query_map(params![id], Store::row)
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        match found.len() {
            0 => Err(StoreError::UnknownRun(id.into())),
            1 => Ok(found
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::UnknownRun(id.into()))?),
            _ => Err(StoreError::AmbiguousRun {
                prefix: id.into(),
                runs: found.into_iter().take(5).map(|m| m.id).collect(),
            }),
        }
    }

    /// Every run, oldest first.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn runs(&self) -> Result<Vec<RunMeta>, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT id, fingerprint, created_ms, goal, config, manifest, status, stop_reason FROM runs ORDER BY created_ms, id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map([], Store::row)
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// A new run id for `fingerprint`: `r` and its first 8 hex digits, suffixed `-2`, `-3`…
    /// when taken.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn new_run_id(&self, fingerprint: &str) -> Result<String, StoreError> {
        let base = format!("r{}", &fingerprint[..8.min(fingerprint.len())]);
        let taken = self.runs_with_fingerprint(fingerprint)?;
        let mut id = base.clone();
        let mut k = 1;
        while taken.contains(&id) || self.run(&id).is_ok_and(|m| m.id == id) {
            k += 1;
            id = format!("{base}-{k}");
        }
        Ok(id)
    }

    /// Ids of runs with this fingerprint.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn runs_with_fingerprint(&self, fingerprint: &str) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT id FROM runs WHERE fingerprint = ?1 ORDER BY id")
            .map_err(|e| self.err(e))?;
        let rows = st
            .query_map(params![fingerprint], |r| r.get(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(rows)
    }

    /// The run's journal, checked record by record. A bad final record (a torn write) is
    /// ignored with a warning; a bad record before the end is an error.
    ///
    /// # Errors
    /// SQLite failed, or a record before the last is corrupt.
    pub fn load(&self, run: &str) -> Result<Loaded, StoreError> {
        let conn = self.conn();
        let mut st = conn
            .prepare("SELECT seq, exec, kind, n, body, checksum FROM journal WHERE run = ?1 ORDER BY seq")
            .map_err(|e| self.err(e))?;
        let rows: Vec<(i64, String, String, i64, String, String)> = st
            .query_map(params![run], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(|e| self.err(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))?;
        let total = rows.len();
        let mut out = Loaded::default();
        for (i, (seq, exec, kind, n, body, checksum)) in rows.into_iter().enumerate() {
            let seq = seq as u64;
            let parsed = (|| {
                let kind = Kind::parse(&kind).ok_or_else(|| format!("unknown kind '{kind}'"))?;
                let body: Value =
                    serde_json::from_str(&body).map_err(|e| format!("body is not JSON: {e}"))?;
                let rec = Record {
                    seq,
                    exec,
                    kind,
                    n: n as u32,
                    body,
                };
                if rec.checksum() != checksum {
                    return Err("checksum mismatch".to_string());
                }
                if seq != out.records.len() as u64 + 1 {
                    return Err(format!("expected record {}", out.records.len() + 1));
                }
                Ok(rec)
            })();
            match parsed {
                Ok(rec) => out.records.push(rec),
                Err(why) if i + 1 == total => out.warnings.push(format!(
                    "the final journal record ({seq}) is torn ({why}) and was ignored; its work will be redone"
                )),
                Err(why) => {
                    return Err(StoreError::Corrupt {
                        run: run.to_string(),
                        seq,
                        why,
                    });
                }
            }
        }
        Ok(out)
    }

    /// Removes journal records after `seq` (a torn tail, before appending anew).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn truncate(&self, run: &str, seq: u64) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "DELETE FROM journal WHERE run = ?1 AND seq > ?2",
                params![run, seq as i64],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Appends records to run `run`'s journal in one transaction, indexing node completions,
    /// their artifacts and their trials.
    ///
    /// # Errors
    /// SQLite failed; nothing was written.
    pub fn append(&self, run: &str, records: &[Record]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        for r in records {
            tx.execute(
                "INSERT INTO journal (run, seq, exec, kind, n, body, checksum) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![run, r.seq as i64, r.exec, r.kind.as_str(), r.n as i64, r.body.to_string(), r.checksum()],
            )
            .map_err(|e| self.err(e))?;
            if r.kind != Kind::Node {
                continue;
            }
            let node = r.exec.split('#').next().unwrap_or(&r.exec);
            tx.execute(
                "INSERT OR REPLACE INTO nodes (run, exec, node, seq) VALUES (?1, ?2, ?3, ?4)",
                params![run, r.exec, node, r.seq as i64],
            )
            .map_err(|e| self.err(e))?;
            let Some(outputs) = r.body.get("outputs").and_then(Value::as_object) else {
                continue;
            };
            for (name, value) in outputs {
                tx.execute(
                    "INSERT OR REPLACE INTO artifacts (run, exec, name, value) VALUES (?1, ?2, ?3, ?4)",
                    params![run, r.exec, name, value.to_string()],
                )
                .map_err(|e| self.err(e))?;
            }
            for t in outputs
                .get("trials")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(signal) = t.get("signal").and_then(Value::as_str) else {
                    continue;
                };
                tx.execute(
                    "INSERT OR REPLACE INTO strategies (run, signal, generation, fitness, metrics) VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![
                        run,
                        signal,
                        t.get("generation").and_then(Value::as_i64),
                        t.get("fitness").and_then(Value::as_f64),
                        t.to_string()
                    ],
                )
                .map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Overwrites the body of record `seq` without fixing its checksum (tests of torn writes).
    ///
    /// # Errors
    /// SQLite failed.
    #[doc(hidden)]
    pub fn damage(&self, run: &str, seq: u64, body: &str) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "UPDATE journal SET body = ?3 WHERE run = ?1 AND seq = ?2",
                params![run, seq as i64, body],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// The sink of one run in a store.
#[derive(Debug, Clone)]
pub struct StoreSink {
    store: Arc<Store>,
    run: String,
}

impl StoreSink {
    /// Appends to run `run` of `store`.
    pub fn new(store: Arc<Store>, run: &str) -> StoreSink {
        StoreSink {
            store,
            run: run.to_string(),
        }
    }
}

impl Sink for StoreSink {
    fn append(&self, records: &[Record]) -> Result<(), StoreError> {
        self.store.append(&self.run, records)
    }
}

impl Store {
    /// Adds what a finished run found to the research memory (again for a run already there:
    /// its findings are replaced).
    ///
    /// # Errors
    /// SQLite failed.
    pub fn remember(&self, run: &str, findings: &[lim_tools::Finding]) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction().map_err(|e| self.err(e))?;
        tx.execute("DELETE FROM findings WHERE run = ?1", [run])
            .map_err(|e| self.err(e))?;
        for f in findings {
            let body = serde_json::to_string(f).unwrap_or_default();
            let v = f
                .validation_sharpe
                .is_finite()
                .then_some(f.validation_sharpe);
            tx.execute(
                "INSERT OR REPLACE INTO findings (datasets, run, signal, validation_sharpe, body) VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![f.datasets, f.run, f.signal, v, body],
            )
            .map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Forgets the findings on `datasets` (all when empty); returns how many.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn forget(&self, datasets: &[String]) -> Result<usize, StoreError> {
        let conn = self.conn();
        let n = if datasets.is_empty() {
            conn.execute("DELETE FROM findings", [])
        } else {
            conn.execute(
                "DELETE FROM findings WHERE datasets = ?1",
                [datasets.join("+")],
            )
        };
        n.map_err(|e| self.err(e))
    }

    /// The dataset keys the memory holds findings on (`a+b` for a run on two), with how many
    /// findings each, in name order.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn remembered(&self) -> Result<Vec<(String, usize)>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare("SELECT datasets, COUNT(*) FROM findings GROUP BY datasets ORDER BY datasets")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as usize))
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Findings on `datasets` (all when empty), best robust fitness first (then those
    /// remembered without one, by validation Sharpe).
    ///
    /// # Errors
    /// SQLite failed, or a stored finding is unreadable.
    pub fn recall(
        &self,
        datasets: &[String],
        limit: usize,
    ) -> Result<Vec<lim_tools::Finding>, StoreError> {
        let conn = self.conn();
        let key = datasets.join("+");
        let mut stmt = conn
            .prepare(
                "SELECT body FROM findings WHERE (?1 = '' OR datasets = ?1)
                 ORDER BY json_extract(body, '$.fitness') IS NULL, json_extract(body, '$.fitness') DESC,
                 validation_sharpe IS NULL, validation_sharpe DESC, run, signal LIMIT ?2",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map(rusqlite::params![key, limit as i64], |r| {
                r.get::<_, String>(0)
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for body in rows {
            let body = body.map_err(|e| self.err(e))?;
            if let Ok(f) = serde_json::from_str(&body) {
                out.push(f);
            }
        }
        Ok(out)
    }
}

impl lim_tools::Memory for Store {
    fn findings(
        &self,
        datasets: &[String],
        limit: usize,
    ) -> Result<Vec<lim_tools::Finding>, String> {
        self.recall(datasets, limit).map_err(|e| e.to_string())
    }
}

impl Store {
    /// Remembers the data directory run `run` reads (none: the bundled sample), so that
    /// `lim resume` and `lim replay` find it without being told again.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn set_data_dir(&self, run: &str, dir: Option<&Path>) -> Result<(), StoreError> {
        let conn = self.conn();
        match dir {
            Some(d) => conn.execute(
                "INSERT OR REPLACE INTO run_data (run, dir) VALUES (?1, ?2)",
                rusqlite::params![run, d.to_string_lossy()],
            ),
            None => conn.execute("DELETE FROM run_data WHERE run = ?1", [run]),
        }
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// The data directory run `run` reads, if it is not the bundled sample.
    ///
    /// # Errors
    /// SQLite failed.
    pub fn data_dir(&self, run: &str) -> Result<Option<PathBuf>, StoreError> {
        use rusqlite::OptionalExtension;
        self.conn()
            .query_row("SELECT dir FROM run_data WHERE run = ?1", [run], |r| {
                r.get::<_, String>(0)
            })
            .optional()
            .map(|d| d.map(PathBuf::from))
            .map_err(|e| self.err(e))
    }
}
