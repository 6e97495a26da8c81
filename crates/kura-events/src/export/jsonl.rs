//! [`JsonlSink`]: events as JSON lines in local files, with rotation.
//!
//! The current file is `<prefix>.jsonl` in the configured directory. Before
//! a line would take it past `max_bytes`, or once it is older than
//! `max_age`, it is synced and renamed to `<prefix>-<first seq, 20
//! digits>.jsonl` and a new current file begins; only the newest `keep`
//! rotated files are kept. A batch is acknowledged only after its lines are
//! written and the file (and, after a rotation, the directory) is fsynced.
//! Files are created with mode 0600 and the directory with 0700: events
//! name accounts and addresses. A line torn by a crash is cut off when the
//! file is next opened, so every line in the files is whole; a batch
//! repeated after a crash appears twice, with the same `seq`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use kura_store::events::{Seq, StoredEvent};
use kura_types::Clock;
use parking_lot::Mutex;
use time::{Duration, OffsetDateTime};

use super::{ExportError, ExportSink, export_record};

/// Where and how a [`JsonlSink`] writes.
#[derive(Debug, Clone)]
pub struct JsonlConfig {
    /// The sink's name (its cursor's key).
    pub name: String,
    /// The directory the files live in (created 0700 if missing).
    pub dir: PathBuf,
    /// The file name prefix (`events` gives `events.jsonl`).
    pub prefix: String,
    /// Rotate before the current file would exceed this many bytes.
    pub max_bytes: u64,
    /// Rotate once the current file is this old (by the injected clock).
    pub max_age: Duration,
    /// Rotated files to keep; older ones are deleted.
    pub keep: usize,
}

impl JsonlConfig {
    /// Defaults: prefix `events`, 100 MiB, one day, keep 14.
    pub fn new(name: impl Into<String>, dir: impl Into<PathBuf>) -> Self {
        Self {
            name: name.into(),
            dir: dir.into(),
            prefix: "events".into(),
            max_bytes: 100 * 1024 * 1024,
            max_age: Duration::days(1),
            keep: 14,
        }
    }
}

#[derive(Debug)]
struct Current {
    file: File,
    size: u64,
    first_seq: Option<Seq>,
    opened_at: OffsetDateTime,
}

#[derive(Debug)]
struct Writer {
    config: JsonlConfig,
    current: Option<Current>,
}

/// Exports events to JSON lines files.
#[derive(Debug, Clone)]
pub struct JsonlSink {
    name: String,
    clock: Arc<dyn Clock>,
    writer: Arc<Mutex<Writer>>,
    serial: Arc<tokio::sync::Mutex<()>>,
}

fn io_error(config: &JsonlConfig, path: &Path, e: std::io::Error) -> ExportError {
    ExportError::delivery(config.name.clone(), format!("{}: {e}", path.display()))
}

impl JsonlSink {
    /// Checks the configuration; files are opened at the first batch.
    pub fn new(config: JsonlConfig, clock: Arc<dyn Clock>) -> Result<Self, ExportError> {
        let bad = |detail: &str| ExportError::Config {
            sink: config.name.clone(),
            detail: detail.into(),
        };
        if config.prefix.is_empty()
            || !config
                .prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad("the file prefix must be letters, digits, `_` or `-`"));
        }
        if config.max_bytes == 0 || config.max_age <= Duration::ZERO {
            return Err(bad("max_bytes and max_age must be positive"));
        }
        Ok(Self {
            name: config.name.clone(),
            clock,
            writer: Arc::new(Mutex::new(Writer {
                config,
                current: None,
            })),
            serial: Arc::new(tokio::sync::Mutex::new(())),
        })
    }
}

impl Writer {
    fn current_path(&self) -> PathBuf {
        self.config
            .dir
            .join(format!("{}.jsonl", self.config.prefix))
    }

    fn rotated_name(&self, first_seq: Seq) -> String {
        format!("{}-{first_seq:020}.jsonl", self.config.prefix)
    }

    fn open(&mut self, now: OffsetDateTime) -> Result<(), ExportError> {
        if self.current.is_some() {
            return Ok(());
        }
        let dir = &self.config.dir;
        if !dir.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| io_error(&self.config, dir, e))?;
        }
        let path = self.current_path();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| io_error(&self.config, &path, e))?;
        let (size, first_seq) = repair(&file).map_err(|e| io_error(&self.config, &path, e))?;
        self.current = Some(Current {
            file,
            size,
            first_seq,
            opened_at: now,
        });
        Ok(())
    }

    /// Syncs and renames the current file, then drops rotated files beyond
    /// `keep`.
    fn rotate(&mut self) -> Result<(), ExportError> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        let path = self.current_path();
        current
            .file
            .sync_all()
            .map_err(|e| io_error(&self.config, &path, e))?;
        let target = self
            .config
            .dir
            .join(self.rotated_name(current.first_seq.unwrap_or(0)));
        fs::rename(&path, &target).map_err(|e| io_error(&self.config, &target, e))?;
        let mut rotated: Vec<PathBuf> = fs::read_dir(&self.config.dir)
            .map_err(|e| io_error(&self.config, &self.config.dir, e))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&format!("{}-", self.config.prefix)) && n.ends_with(".jsonl")
                })
            })
            .collect();
        rotated.sort();
        let excess = rotated.len().saturating_sub(self.config.keep);
        for old in rotated.iter().take(excess) {
            fs::remove_file(old).map_err(|e| io_error(&self.config, old, e))?;
        }
        sync_dir(&self.config.dir).map_err(|e| io_error(&self.config, &self.config.dir, e))
    }

    fn write_batch(
        &mut self,
        lines: &[(Seq, String)],
        now: OffsetDateTime,
    ) -> Result<(), ExportError> {
        let mut created = self.current.is_none();
        self.open(now)?;
        for (seq, line) in lines {
            let len = line.len() as u64 + 1;
            let due = self.current.as_ref().is_some_and(|c| {
                c.size > 0
                    && (c.size + len > self.config.max_bytes
                        || now - c.opened_at >= self.config.max_age)
            });
            if due {
                self.rotate()?;
                self.open(now)?;
                created = true;
            }
            let path = self.current_path();
            let Some(current) = self.current.as_mut() else {
                return Err(ExportError::delivery(
                    self.config.name.clone(),
                    "the current file is not open",
                ));
            };
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            if let Err(e) = current.file.write_all(&bytes) {
                // The file may now end in a partial line; reopening repairs it.
                self.current = None;
                return Err(io_error(&self.config, &path, e));
            }
            current.size += len;
            current.first_seq.get_or_insert(*seq);
        }
        let path = self.current_path();
        if let Some(current) = &self.current
            && let Err(e) = current.file.sync_data()
        {
            self.current = None;
            return Err(io_error(&self.config, &path, e));
        }
        if created {
            sync_dir(&self.config.dir).map_err(|e| io_error(&self.config, &self.config.dir, e))?;
        }
        Ok(())
    }
}

/// Cuts a torn last line off `file` and returns its size and the `seq` of
/// its first line.
fn repair(file: &File) -> std::io::Result<(u64, Option<Seq>)> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok((0, None));
    }
    let mut reader = BufReader::new(file);
    let mut whole: u64 = 0;
    let mut first_seq = None;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        if first_seq.is_none() {
            first_seq = serde_json::from_slice::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v.get("seq").and_then(serde_json::Value::as_u64));
        }
        whole += n as u64;
    }
    if whole < len {
        file.set_len(whole)?;
        file.sync_all()?;
    }
    Ok((whole, first_seq))
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[async_trait]
impl ExportSink for JsonlSink {
    fn name(&self) -> &str {
        &self.name
    }

    async fn deliver(&self, batch: &[StoredEvent]) -> Result<(), ExportError> {
        let lines = batch
            .iter()
            .map(|s| Ok((s.seq, export_record(s)?)))
            .collect::<Result<Vec<_>, ExportError>>()?;
        let now = self.clock.now();
        // One batch at a time; the blocking write finishes even if the
        // caller stops waiting, so a file never holds half a line.
        let _turn = self.serial.lock().await;
        let writer = Arc::clone(&self.writer);
        tokio::task::spawn_blocking(move || writer.lock().write_batch(&lines, now))
            .await
            .map_err(|e| ExportError::delivery(self.name.clone(), e))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kura_types::{Action, Actor, ManualClock, Outcome, SecurityEvent};
    use std::os::unix::fs::PermissionsExt as _;

    fn stored(seq: Seq) -> StoredEvent {
        StoredEvent {
            seq,
            hash: [seq as u8; 32],
            event: SecurityEvent::new(
                OffsetDateTime::UNIX_EPOCH,
                Actor::Anonymous,
                Action::parse("auth.signin.failed").unwrap(),
                Outcome::Failure,
            ),
        }
    }

    fn seqs_in(path: &Path) -> Vec<u64> {
        fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn age_rotation_uses_the_injected_clock_and_torn_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(OffsetDateTime::UNIX_EPOCH + Duration::days(20_000));
        let mut config = JsonlConfig::new("files", dir.path().join("out"));
        config.max_age = Duration::hours(1);
        let sink = JsonlSink::new(config.clone(), Arc::new(clock.clone())).unwrap();
        sink.deliver(&[stored(1), stored(2)]).await.unwrap();
        clock.advance(Duration::minutes(59));
        sink.deliver(&[stored(3)]).await.unwrap();
        clock.advance(Duration::minutes(2));
        sink.deliver(&[stored(4)]).await.unwrap();
        let out = dir.path().join("out");
        assert_eq!(
            seqs_in(&out.join("events-00000000000000000001.jsonl")),
            [1, 2, 3]
        );
        assert_eq!(seqs_in(&out.join("events.jsonl")), [4]);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&out.join("events.jsonl")), 0o600);
        assert_eq!(mode(&out), 0o700);

        // A crash mid-line leaves a torn tail; a restarted sink cuts it.
        let mut f = OpenOptions::new()
            .append(true)
            .open(out.join("events.jsonl"))
            .unwrap();
        f.write_all(b"{\"seq\":5,\"ha").unwrap();
        let again = JsonlSink::new(config, Arc::new(clock.clone())).unwrap();
        again.deliver(&[stored(5)]).await.unwrap();
        assert_eq!(seqs_in(&out.join("events.jsonl")), [4, 5]);
    }

    #[test]
    fn unusable_configurations_are_refused() {
        let clock: Arc<dyn Clock> = Arc::new(kura_types::SystemClock);
        let mut c = JsonlConfig::new("x", "/tmp/x");
        c.prefix = "../evil".into();
        assert!(JsonlSink::new(c, clock.clone()).is_err());
        let mut c = JsonlConfig::new("x", "/tmp/x");
        c.max_bytes = 0;
        assert!(JsonlSink::new(c, clock).is_err());
    }
}
