//! The ledger: what happened to each person on this device, for the
//! processing records the CAC's measures and PIPL ask for. Append-only,
//! without images, one sealed record per line in `state_dir/ledger`:
//! base64 of the record's JSON sealed with the queue key. A damaged line
//! (a rotten byte, a torn write at a power cut) costs that record only:
//! the reader counts it and goes on. The file is apart from the outbox
//! database, so `queue purge` and a rebuild of a damaged store leave it.
//!
//! Records older than `ledger.retention_days` are dropped by rewriting the
//! file (a new file, synced, renamed over the old one), at most once a day.

use crate::clock::UnixMillis;
use crate::model::{Consent, Provider};
use crate::queue::seal::QueueKey;
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The additional data every line is sealed with.
const AAD: &[u8] = b"enrolld ledger v1";
/// Longest line read back; longer ones are damaged.
const MAX_LINE_BYTES: usize = 64 * 1024;
/// Most records one read returns (the newest are kept).
pub const MAX_RECORDS_READ: usize = 10_000;

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum LedgerEvent {
    /// The person's consent, as recorded with the entry.
    ConsentGiven { consent: Consent },
    /// The entry is durable on the device.
    Queued { images: usize },
    /// The cloud has it; the images are gone from the device.
    Uploaded { face_ids: Vec<String> },
    /// The cloud refused it for good.
    Dead { code: String, reason: String },
    /// The entry and its images were deleted on the device (`queue purge`,
    /// dead retention).
    Purged { why: String },
    /// `person forget`: every queued entry and image of the person on the
    /// device was destroyed; deletes in the cloud follow.
    Withdrawn {
        destroyed: Vec<u64>,
        cloud: Vec<Provider>,
    },
    /// The cloud deleted what this device uploaded (`how`: `DeletePerson`
    /// or `DeleteFace`), or no longer had it.
    DeletedInCloud { how: String, face_ids: Vec<String> },
    /// The vendor documents no delete for these faces: an operator must
    /// delete them in its console.
    DeleteByHand { face_ids: Vec<String>, how: String },
}

impl LedgerEvent {
    pub fn name(&self) -> &'static str {
        match self {
            LedgerEvent::ConsentGiven { .. } => "consent_given",
            LedgerEvent::Queued { .. } => "queued",
            LedgerEvent::Uploaded { .. } => "uploaded",
            LedgerEvent::Dead { .. } => "dead",
            LedgerEvent::Purged { .. } => "purged",
            LedgerEvent::Withdrawn { .. } => "withdrawn",
            LedgerEvent::DeletedInCloud { .. } => "deleted_in_cloud",
            LedgerEvent::DeleteByHand { .. } => "delete_by_hand",
        }
    }
}

/// One line of the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    pub at_ms: UnixMillis,
    pub person: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<Provider>,
    /// The queue entry it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<u64>,
    #[serde(flatten)]
    pub event: LedgerEvent,
}

/// What a read found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRead {
    /// Oldest first; at most [`MAX_RECORDS_READ`], the newest.
    pub records: Vec<LedgerRecord>,
    /// Records that matched but were left out (over the limit).
    pub left_out: u64,
    /// Lines that cannot be read (damaged): each costs its one record.
    pub unreadable: u64,
    /// Distinct persons in the readable records (all of them, not only the
    /// ones asked for).
    pub persons: u64,
}

/// Which records a read returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LedgerFilter {
    pub person: Option<String>,
    pub since_ms: Option<UnixMillis>,
}

/// The ledger file.
pub struct Ledger {
    path: PathBuf,
    key: QueueKey,
    file: Mutex<Option<File>>,
    /// Hashes of the persons in the ledger, counted on first use and kept
    /// up to date by appends (8 bytes a person).
    persons: Mutex<Option<std::collections::HashSet<u64>>>,
    /// Lines written and not yet synced.
    unsynced: std::sync::atomic::AtomicBool,
}

impl Drop for Ledger {
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            log::error!("ledger {}: {e}", self.path.display());
        }
    }
}

fn person_hash(person: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same person, the same hash, every run.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    person.hash(&mut h);
    h.finish()
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ledger({})", self.path.display())
    }
}

impl Ledger {
    /// The ledger of `state_dir` (created on the first record).
    pub fn new(state_dir: &Path, key: QueueKey) -> Ledger {
        Ledger {
            path: state_dir.join("ledger"),
            key,
            file: Mutex::new(None),
            persons: Mutex::new(None),
            unsynced: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Distinct persons in the readable records (`status`, metrics).
    pub fn persons(&self) -> std::io::Result<u64> {
        let mut guard = self.persons.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let mut set = std::collections::HashSet::new();
            self.scan(|_, r| {
                if let Some(r) = r {
                    set.insert(person_hash(&r.person));
                }
            })?;
            *guard = Some(set);
        }
        Ok(guard.as_ref().map_or(0, |s| s.len() as u64))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_append(&self) -> std::io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
    }

    /// Appends records and makes them durable (one `fdatasync`).
    pub fn append(&self, records: &[LedgerRecord]) -> std::io::Result<()> {
        self.write(records, true)
    }

    /// Makes what [`Ledger::note_unsynced`] wrote durable.
    pub fn sync(&self) -> std::io::Result<()> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if !self
            .unsynced
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Ok(());
        }
        match guard.as_mut() {
            Some(f) => f.sync_data(),
            None => Ok(()),
        }
    }

    /// Appends without waiting for the disk: for records whose facts the
    /// store already holds durably (an upload's receipt). They are synced
    /// with the next durable record, at the end of a drain pass
    /// ([`Ledger::sync`]) or when the ledger is closed.
    pub fn note_unsynced(&self, records: &[LedgerRecord]) {
        if let Err(e) = self.write(records, false) {
            log::error!(
                "ledger {}: {e}; {} record(s) not written",
                self.path.display(),
                records.len()
            );
        }
    }

    fn write(&self, records: &[LedgerRecord], durable: bool) -> std::io::Result<()> {
        let mut text = Vec::new();
        for r in records {
            let json = serde_json::to_vec(r).map_err(std::io::Error::other)?;
            let sealed = self
                .key
                .seal(AAD, &json)
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            use base64::Engine;
            let line = base64::engine::general_purpose::STANDARD.encode(&sealed);
            text.extend_from_slice(line.as_bytes());
            text.push(b'\n');
        }
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let new = !self.path.exists();
            let f = self.open_append()?;
            if new {
                if let Some(dir) = self.path.parent() {
                    File::open(dir)?.sync_all()?;
                }
            }
            *guard = Some(f);
        }
        let Some(f) = guard.as_mut() else {
            return Err(std::io::Error::other("ledger not open"));
        };
        let written = f.write_all(&text).and_then(|()| {
            if durable {
                self.unsynced
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                f.sync_data()
            } else {
                self.unsynced
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Ok(())
            }
        });
        if written.is_err() {
            // Reopen next time: a torn line stays one damaged record.
            *guard = None;
        }
        drop(guard);
        if let Some(set) = self
            .persons
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
        {
            set.extend(records.iter().map(|r| person_hash(&r.person)));
        }
        written
    }

    /// Appends, and on failure says so in the journal: the state change it
    /// records has happened and is not undone.
    pub fn note(&self, records: &[LedgerRecord]) {
        if let Err(e) = self.append(records) {
            log::error!(
                "ledger {}: {e}; {} record(s) not written ({})",
                self.path.display(),
                records.len(),
                records
                    .iter()
                    .map(|r| format!("{} {}", r.event.name(), r.person))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }

    fn open_line(&self, line: &[u8]) -> Option<LedgerRecord> {
        use base64::Engine;
        let sealed = base64::engine::general_purpose::STANDARD
            .decode(line)
            .ok()?;
        let json = self.key.open(AAD, &sealed).ok()?;
        serde_json::from_slice(&json).ok()
    }

    /// Visits every line: `Some(record)`, or `None` for a damaged one.
    fn scan(&self, mut visit: impl FnMut(&[u8], Option<LedgerRecord>)) -> std::io::Result<()> {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut reader = BufReader::new(file);
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = reader
                .by_ref()
                .take(MAX_LINE_BYTES as u64 + 1)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(());
            }
            if line.last() != Some(&b'\n') && n > MAX_LINE_BYTES {
                // Skip the rest of an overlong line.
                let mut rest = Vec::new();
                reader.read_until(b'\n', &mut rest)?;
                visit(&line, None);
                continue;
            }
            let text = line.strip_suffix(b"\n").unwrap_or(&line);
            if text.is_empty() {
                continue;
            }
            let record = self.open_line(text);
            visit(text, record);
        }
    }

    /// The records `filter` asks for, oldest first (the newest
    /// [`MAX_RECORDS_READ`]), with the count of damaged lines.
    pub fn read(&self, filter: &LedgerFilter) -> std::io::Result<LedgerRead> {
        let mut out = LedgerRead::default();
        let mut persons = std::collections::HashSet::new();
        let mut kept = std::collections::VecDeque::new();
        self.scan(|_, record| match record {
            None => out.unreadable += 1,
            Some(r) => {
                if !persons.contains(&r.person) {
                    persons.insert(r.person.clone());
                }
                let wanted = filter.person.as_ref().is_none_or(|p| *p == r.person)
                    && filter.since_ms.is_none_or(|t| r.at_ms >= t);
                if wanted {
                    if kept.len() == MAX_RECORDS_READ {
                        kept.pop_front();
                        out.left_out += 1;
                    }
                    kept.push_back(r);
                }
            }
        })?;
        out.records = kept.into();
        out.persons = persons.len() as u64;
        Ok(out)
    }

    /// Drops the records made before `before_ms`; damaged lines are kept
    /// as they are (they may be someone's only record). Returns how many
    /// records were dropped.
    pub fn expire(&self, before_ms: UnixMillis) -> std::io::Result<usize> {
        let mut guard = self.file.lock().unwrap_or_else(|p| p.into_inner());
        let mut keep = Vec::new();
        let mut dropped = 0;
        self.scan(|line, record| match record {
            Some(r) if r.at_ms < before_ms => dropped += 1,
            _ => {
                keep.extend_from_slice(line);
                keep.push(b'\n');
            }
        })?;
        if dropped == 0 {
            return Ok(0);
        }
        let tmp = self.path.with_extension("new");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&keep)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            File::open(dir)?.sync_all()?;
        }
        // Appends go to the new file; persons are counted again.
        *guard = None;
        *self.persons.lock().unwrap_or_else(|p| p.into_inner()) = None;
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(person: &str, at_ms: UnixMillis) -> LedgerRecord {
        LedgerRecord {
            at_ms,
            person: person.into(),
            provider: Some(Provider::Tencent),
            entry: Some(1),
            event: LedgerEvent::Queued { images: 1 },
        }
    }

    fn key() -> QueueKey {
        QueueKey::from_encoded(&[b'7'; 64]).expect("key")
    }

    #[test]
    fn a_flipped_byte_costs_the_one_record_it_touches() {
        let dir = tempfile::tempdir().expect("dir");
        let ledger = Ledger::new(dir.path(), key());
        for i in 0..5 {
            ledger
                .append(&[record(&format!("p{i}"), i)])
                .expect("append");
        }
        let mut bytes = std::fs::read(ledger.path()).expect("read");
        let second_line = bytes.iter().position(|b| *b == b'\n').expect("line") + 10;
        bytes[second_line] ^= 0x04;
        std::fs::write(ledger.path(), &bytes).expect("write");
        let read = ledger.read(&LedgerFilter::default()).expect("read");
        assert_eq!(read.unreadable, 1);
        let persons: Vec<&str> = read.records.iter().map(|r| r.person.as_str()).collect();
        assert_eq!(persons, ["p0", "p2", "p3", "p4"]);
        // Another key reads nothing, and says so.
        let other = Ledger::new(
            dir.path(),
            QueueKey::from_encoded(&[b'8'; 64]).expect("key"),
        );
        assert_eq!(
            other
                .read(&LedgerFilter::default())
                .expect("read")
                .unreadable,
            5
        );
    }

    #[test]
    fn filters_and_expiry() {
        let dir = tempfile::tempdir().expect("dir");
        let ledger = Ledger::new(dir.path(), key());
        ledger
            .append(&[record("a", 10), record("b", 20), record("a", 30)])
            .expect("append");
        let only_a = ledger
            .read(&LedgerFilter {
                person: Some("a".into()),
                since_ms: None,
            })
            .expect("read");
        assert_eq!(only_a.records.len(), 2);
        assert_eq!(only_a.persons, 2);
        assert_eq!(ledger.persons().expect("count"), 2);
        ledger.append(&[record("z", 35)]).expect("append");
        assert_eq!(ledger.persons().expect("count"), 3, "kept up to date");
        let since = ledger
            .read(&LedgerFilter {
                person: None,
                since_ms: Some(20),
            })
            .expect("read");
        assert_eq!(since.records.len(), 3, "b, a and z");
        assert_eq!(ledger.expire(25).expect("expire"), 2);
        ledger
            .append(&[record("c", 40)])
            .expect("append after expiry");
        let all = ledger.read(&LedgerFilter::default()).expect("read");
        let at: Vec<i64> = all.records.iter().map(|r| r.at_ms).collect();
        assert_eq!(at, [30, 35, 40]);
        assert_eq!(ledger.persons().expect("count"), 3, "a, z and c");
    }
}
