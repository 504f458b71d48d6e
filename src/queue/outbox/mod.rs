//! The durable outbox: enrollments waiting to be uploaded, in sled.
//!
//! Layout (all keys big-endian so iteration is oldest first):
//! - tree `entries`: id (u64) -> JSON [`Enrollment`] (carries `format_version`)
//! - beside the store, one file of images per entry (`state_dir/images`,
//!   [`files`]): each image sealed with the device key (see
//!   [`crate::queue::seal`]; the associated data is the id and index, so
//!   images cannot be swapped). Queues of format 2 and older kept them in
//!   sled's tree `images` (id ++ index ++ chunk -> up to 4 KiB); they move
//!   to files when first opened.
//! - tree `receipts`: id (u64) -> JSON [`Receipt`] of an uploaded enrollment
//!   (no image), kept for audit until its retention ends or the person
//!   withdraws and the cloud has deleted what it names
//! - beside the store, the ledger (`state_dir/ledger`, [`crate::queue::ledger`])
//!   of what happened to each person
//! - default tree:   `format_version` -> u32 of the database layout, and
//!   `key_check` -> a known value sealed with the device key, so a wrong key
//!   is refused at open instead of failing image by image
//!
//! Rules:
//! - `enqueue` returns only after the record is durable. sled's `flush()`
//!   alone is not enough for power loss: it syncs its log with
//!   `sync_file_range` (no drive cache flush, no file size), and writes pages
//!   over ~128 KiB to files in `blobs/` that it never fsyncs. So `persist()`
//!   flushes, fsyncs every blob file not yet synced and the `blobs/`
//!   directory, then `fdatasync`s the log file.
//! - An entry's image file is durable before its record is written, and
//!   is unlinked only once the record's removal is durable (`persist`).
//! - On open, whatever a crash left in flight goes back to pending, marked
//!   `outcome_unknown` so the uploader checks the cloud before sending again.
//! - The queue is bounded by entries and image bytes; a full queue refuses new
//!   enrollments with `queue_full` and never touches what is queued.
//! - All writes go through one lock, so the usage counters stay exact.
//! - Images are never stored in the clear. Format 1 (plain images) is
//!   migrated to format 2 (sealed) when first opened with a key, format 2
//!   (images in sled) to format 3 (image files).

mod files;
mod forget;
mod migrate;
mod room;
mod salvage;

pub use forget::{CloudDelete, ForgetReport};

use crate::clock::{BootStamp, Clock, UnixMillis};
use crate::model::{
    Consent, Enrollment, EntryState, ErrorCode, FaceScores, Group, ImageMeta, LastError, Provider,
    Receipt, Sealed, Task, UploadProgress, MAX_IMAGES,
};
use crate::queue::ledger::{Ledger, LedgerEvent, LedgerRecord};
use crate::queue::seal::QueueKey;
use crate::queue::spool::Spool;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Layout version of records and database. Bump with a migration in `open`.
pub const FORMAT_VERSION: u32 = 3;

const META_FORMAT_KEY: &[u8] = b"format_version";
const META_KEY_CHECK: &[u8] = b"key_check";
const KEY_CHECK_PLAIN: &[u8] = b"enrolld queue key check";
/// The next queue id (big-endian u64), written with each new entry. Ids
/// are small and increasing: technicians type them.
const META_NEXT_ID: &[u8] = b"next_id";
/// The report of the last rebuild of a damaged store (JSON).
const META_SALVAGE: &[u8] = b"last_salvage";

/// Bytes assumed per entry besides its images (record, keys, seal, tree).
const RECORD_OVERHEAD_BYTES: u64 = 4096;

/// Room for sled to rewrite one large page (its segment size), which it
/// writes in full before it deletes the old copy. sled 0.34 stalls instead
/// of failing when the filesystem runs out during such a write, so the
/// queue must never let it get that far.
const SLED_REWRITE_BYTES: u64 = 512 * 1024;

/// How long opening waits for a lock to be released before it reports
/// `queue_locked`.
const LOCK_WAIT: Duration = Duration::from_secs(2);

/// Image bytes per stored value in queues of format 2 (images in sled).
pub const CHUNK_BYTES: usize = 4 * 1024;

/// One image to enqueue.
#[derive(Debug, Clone)]
pub struct NewImage {
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
}

/// What `enqueue` needs.
#[derive(Debug, Clone)]
pub struct NewEnrollment {
    pub person_id: String,
    pub person_name: Option<String>,
    pub provider: Provider,
    pub group: Group,
    pub images: Vec<NewImage>,
    pub scores: Vec<FaceScores>,
    /// The person's consent (none: `consent.required` is off).
    pub consent: Option<Consent>,
}

/// Capacity limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    pub max_entries: u64,
    pub max_bytes: u64,
    /// Free space kept on the filesystem for uploads, restarts and recovery:
    /// an enrollment that would eat into it is refused with `storage_full`.
    pub reserve_bytes: u64,
}

impl OutboxLimits {
    pub fn from_config(queue: &crate::config::QueueConfig) -> Self {
        Self {
            max_entries: queue.max_entries,
            max_bytes: queue.max_bytes,
            reserve_bytes: queue.reserve_bytes,
        }
    }
}

/// Current use of the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub entries: u64,
    pub bytes: u64,
    pub pending: u64,
    pub in_flight: u64,
    pub dead: u64,
    /// Records that could not be read; kept on disk, never uploaded.
    pub corrupt: u64,
    /// Creation time of the oldest pending entry (the first in queue order).
    pub oldest_pending_ms: Option<UnixMillis>,
    /// Deletes of withdrawn persons' faces ([`Task::Forget`] entries), in
    /// any state: the drain looks for due ones only when there are some.
    #[serde(skip)]
    pub forget_tasks: u64,
}

/// Outbox failures; `code()` gives the stable name.
#[derive(Debug)]
#[non_exhaustive]
pub enum OutboxError {
    /// The queue is at `max_entries` or `max_bytes`.
    QueueFull {
        entries: u64,
        max_entries: u64,
        bytes: u64,
        max_bytes: u64,
        needed: u64,
    },
    /// The filesystem is full.
    StorageFull(String),
    /// Another process has the database open.
    Locked(PathBuf),
    /// No entry with this id.
    NotFound(u64),
    /// The operation does not apply in the entry's state.
    InvalidState {
        id: u64,
        state: &'static str,
        wanted: &'static str,
    },
    /// The request itself is unacceptable (empty person id, no images...).
    InvalidRequest(String),
    /// A record or image failed to parse or its checksum does not match.
    Corrupt { id: u64, why: String },
    /// Written by a newer release.
    UnsupportedFormat { found: u32 },
    /// The device key is not the one this queue was sealed with.
    WrongKey(PathBuf),
    /// sled found its own files damaged (checksum, unreadable page).
    Damaged(String),
    /// Any other storage error.
    Storage(String),
}

impl OutboxError {
    pub fn code(&self) -> ErrorCode {
        match self {
            OutboxError::QueueFull { .. } => ErrorCode::QueueFull,
            OutboxError::StorageFull(_) => ErrorCode::StorageFull,
            OutboxError::Locked(_) => ErrorCode::QueueLocked,
            OutboxError::NotFound(_) => ErrorCode::NotFound,
            OutboxError::InvalidState { .. } => ErrorCode::InvalidState,
            OutboxError::InvalidRequest(_) => ErrorCode::InvalidRequest,
            OutboxError::Corrupt { .. } => ErrorCode::CorruptEntry,
            OutboxError::UnsupportedFormat { .. } => ErrorCode::UnsupportedFormat,
            OutboxError::WrongKey(_) => ErrorCode::WrongQueueKey,
            OutboxError::Damaged(_) => ErrorCode::StorageDamaged,
            OutboxError::Storage(_) => ErrorCode::StorageError,
        }
    }
}

impl From<OutboxError> for crate::model::Failure {
    fn from(e: OutboxError) -> Self {
        crate::model::Failure::new(e.code(), e.to_string())
    }
}

impl fmt::Display for OutboxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutboxError::QueueFull { entries, max_entries, bytes, max_bytes, needed } => write!(
                f,
                "queue full: {entries}/{max_entries} entries, {bytes}/{max_bytes} bytes, this enrollment needs {needed} bytes; \
                 upload or purge entries first"
            ),
            OutboxError::StorageFull(why) => write!(f, "storage full: {why}"),
            OutboxError::Locked(p) => write!(
                f,
                "{}: the queue is in use by another enrolld process (a running daemon takes \
                 commands through its socket, and one photo file per enrollment)",
                p.display()
            ),
            OutboxError::NotFound(id) => write!(f, "no queue entry {id}"),
            OutboxError::InvalidState { id, state, wanted } => write!(f, "entry {id} is {state}; {wanted}"),
            OutboxError::InvalidRequest(why) => write!(f, "{why}"),
            OutboxError::Corrupt { id, why } => write!(f, "entry {id} is corrupt: {why}"),
            OutboxError::UnsupportedFormat { found } => write!(
                f,
                "queue format {found} was written by a newer enrolld (this one reads {FORMAT_VERSION})"
            ),
            OutboxError::WrongKey(p) => write!(
                f,
                "{}: the queue key does not open this queue (it was written with another key); \
                 nothing was changed: configure the key it was written with",
                p.display()
            ),
            OutboxError::Damaged(why) => write!(f, "storage damaged: {why}"),
            OutboxError::Storage(why) => write!(f, "storage error: {why}"),
        }
    }
}

impl std::error::Error for OutboxError {}

fn storage_error(e: sled::Error) -> OutboxError {
    match e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull => {
            OutboxError::StorageFull(io.to_string())
        }
        sled::Error::Io(io) if io.raw_os_error() == Some(28) => {
            OutboxError::StorageFull(io.to_string())
        }
        sled::Error::Io(io)
            if matches!(
                io.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            OutboxError::Damaged(io.to_string())
        }
        // Unsupported: sled reads its settings file (`conf`) as written by
        // a release before 0.29 when that file fails its checksum; this
        // queue was never written by one.
        e @ (sled::Error::Corruption { .. }
        | sled::Error::ReportableBug(_)
        | sled::Error::Unsupported(_)) => OutboxError::Damaged(e.to_string()),
        other => OutboxError::Storage(other.to_string()),
    }
}

fn tx_error(e: sled::transaction::TransactionError<OutboxError>) -> OutboxError {
    match e {
        sled::transaction::TransactionError::Abort(e) => e,
        sled::transaction::TransactionError::Storage(e) => storage_error(e),
    }
}

fn image_key(id: u64, index: u8, chunk: u16) -> [u8; 11] {
    let mut k = [0u8; 11];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8] = index;
    k[9..].copy_from_slice(&chunk.to_be_bytes());
    k
}

/// What a sealed image is bound to: its entry and index.
pub(crate) fn image_aad(id: u64, index: u8) -> [u8; 9] {
    image_prefix(id, index)
}

fn image_prefix(id: u64, index: u8) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8] = index;
    k
}

fn io_error(context: &Path, e: std::io::Error) -> OutboxError {
    if e.kind() == std::io::ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
        OutboxError::StorageFull(format!("{}: {e}", context.display()))
    } else {
        OutboxError::Storage(format!("{}: {e}", context.display()))
    }
}

/// fsync of a directory, so the names of files created in it are durable.
fn sync_dir(dir: &Path) -> Result<(), OutboxError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error(dir, e))
}

fn id_from_key(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.get(..8)?.try_into().ok()?))
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The stored (sealed) bytes of one image, its chunks in order.
pub(crate) fn read_chunks(
    images: &sled::Tree,
    id: u64,
    index: u8,
    len: u64,
) -> Result<Vec<u8>, OutboxError> {
    let mut bytes =
        Vec::with_capacity(usize::try_from(len).unwrap_or(0) + crate::queue::seal::OVERHEAD);
    for chunk in images.scan_prefix(image_prefix(id, index)).values() {
        bytes.extend_from_slice(&chunk.map_err(storage_error)?);
    }
    Ok(bytes)
}

/// The smallest id above every id ever given: the stored counter, and the
/// last entry and receipt (queues written before the counter existed).
fn first_free_id(
    meta: &sled::Tree,
    entries: &sled::Tree,
    receipts: &sled::Tree,
) -> Result<u64, OutboxError> {
    let stored = meta
        .get(META_NEXT_ID)
        .map_err(storage_error)?
        .and_then(|v| id_from_key(&v))
        .unwrap_or(1);
    let mut next = stored.max(1);
    for tree in [entries, receipts] {
        if let Some((k, _)) = tree.last().map_err(storage_error)? {
            if let Some(id) = id_from_key(&k) {
                next = next.max(id.saturating_add(1));
            }
        }
    }
    Ok(next)
}

/// Whether images are the ones an entry describes (length and SHA-256).
pub(crate) fn images_match(entry: &Enrollment, images: &[Vec<u8>]) -> bool {
    entry.images.len() == images.len()
        && entry
            .images
            .iter()
            .zip(images)
            .all(|(m, b)| m.len == b.len() as u64 && m.sha256 == sha256_hex(b))
}

/// Every record of a tree that parses, in key order; unreadable ones are
/// skipped (and counted by `scan_usage`).
fn read_all<T: serde::de::DeserializeOwned>(tree: &sled::Tree) -> Result<Vec<T>, OutboxError> {
    let mut out = Vec::new();
    for item in tree.iter() {
        let (_, value) = item.map_err(storage_error)?;
        if let Ok(record) = serde_json::from_slice::<T>(&value) {
            out.push(record);
        }
    }
    Ok(out)
}

/// What the rebuild of a damaged store kept and lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalvageReport {
    pub at_ms: UnixMillis,
    /// What sled said about its files.
    pub why: String,
    /// Where the damaged store was moved (kept for inspection; delete it
    /// once the queue is known to be right).
    pub moved_to: PathBuf,
    /// Entries read back from the damaged store, with their state.
    pub kept_from_store: u64,
    /// Entries the store had lost, rebuilt from their spool copies (as
    /// pending, outcome unknown: the cloud is asked before sending again).
    pub kept_from_spool: u64,
    pub receipts_kept: u64,
    /// Ids of entries neither the store nor the spool could give back.
    pub lost: Vec<u64>,
}

/// `enrolld queue check`: the health of the store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    pub entries: u64,
    /// Entries whose record, images and spool copy all read back intact.
    pub healthy: u64,
    pub receipts: u64,
    /// Ids of entries whose images cannot be read from anywhere.
    pub lost: Vec<u64>,
    /// One line per problem found.
    pub problems: Vec<String>,
    pub last_salvage: Option<SalvageReport>,
}

/// What `open` found and repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Recovery {
    /// In-flight entries returned to pending.
    pub requeued: u64,
    /// Unreadable records left in place.
    pub corrupt: u64,
}

/// When a write must be on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Before the call returns.
    Now,
    /// With the next durable write, or [`Outbox::sync`] (the drain's pass
    /// does it at its end).
    Deferred,
}

/// The outbox. Cheap to share behind an `Arc`.
pub struct Outbox {
    db: sled::Db,
    /// sled's log file, opened again so it can be fdatasync'ed.
    log_file: std::fs::File,
    /// Blob files already fsynced (sled writes each one once).
    synced_blobs: Mutex<std::collections::HashSet<std::ffi::OsString>>,
    /// The `blobs/` directory's mtime at the last listing, if it was
    /// settled then (see `sync_blobs`).
    blobs_listed: Mutex<Option<std::time::SystemTime>>,
    entries: sled::Tree,
    receipts: sled::Tree,
    /// The store's copy of the images (see [`files`]).
    files: files::ImageFiles,
    /// Entries whose removal from sled is not yet durable: their image
    /// files are unlinked by the next `persist`.
    gone: Mutex<Vec<u64>>,
    limits: OutboxLimits,
    clock: Arc<dyn Clock>,
    key: QueueKey,
    usage: Mutex<Usage>,
    /// The second copy of every entry (see [`crate::queue::spool`]).
    spool: Spool,
    /// The id the next entry gets (taken under the `usage` lock).
    next_id: std::sync::atomic::AtomicU64,
    path: PathBuf,
    ledger: Ledger,
    /// Something was written without `persist` since the last one (see
    /// [`Outbox::sync`]).
    unsynced: std::sync::atomic::AtomicBool,
}

impl Drop for Outbox {
    /// What was left to the next durable write is made durable.
    fn drop(&mut self) {
        if let Err(e) = self.sync() {
            log::error!("outbox {}: {e}", self.path.display());
        }
    }
}

impl fmt::Debug for Outbox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Outbox")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Outbox {
    /// Opens (or creates) the outbox in `state_dir/outbox`, recovering what a
    /// crash left in flight. `key` seals the images; a queue written with
    /// another key is refused with [`OutboxError::WrongKey`], untouched.
    ///
    /// A store sled finds damaged is moved aside into `state_dir` and
    /// rebuilt from what is still readable in it and from the spool; see
    /// [`Outbox::last_salvage`] for what was kept and lost.
    pub fn open(
        state_dir: &Path,
        limits: OutboxLimits,
        clock: Arc<dyn Clock>,
        key: QueueKey,
    ) -> Result<(Outbox, Recovery), OutboxError> {
        let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            Self::open_store(state_dir, limits, clock.clone(), key.clone())
        }))
        .unwrap_or_else(|_| {
            Err(OutboxError::Damaged(
                "sled panicked reading its files".into(),
            ))
        });
        match opened {
            Err(OutboxError::Damaged(why)) => {
                let (outbox, recovery) = salvage::rebuild(state_dir, limits, clock, key, &why)?;
                outbox.drop_orphan_images()?;
                Ok((outbox, recovery))
            }
            Ok((outbox, recovery)) => {
                outbox.reconcile_spool()?;
                outbox.drop_orphan_images()?;
                Ok((outbox, recovery))
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the store as it is (no salvage).
    pub(crate) fn open_store(
        state_dir: &Path,
        limits: OutboxLimits,
        clock: Arc<dyn Clock>,
        key: QueueKey,
    ) -> Result<(Outbox, Recovery), OutboxError> {
        let path = state_dir.join("outbox");
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&path)
                .map_err(|e| io_error(&path, e))?;
        }
        let open = || {
            sled::Config::new()
                .path(&path)
                // Small devices: bound the page cache; flush at least every second.
                .cache_capacity(16 * 1024 * 1024)
                .flush_every_ms(Some(1000))
                .open()
                // sled 0.34 reports a held lock only as text (an `Other` io
                // error "could not acquire lock on ..."): its kind says nothing.
                .map_err(|e| match e {
                    sled::Error::Io(io)
                        if io.kind() == std::io::ErrorKind::WouldBlock
                            || io.to_string().contains("lock") =>
                    {
                        OutboxError::Locked(path.clone())
                    }
                    sled::Error::Io(io) => io_error(&path, io),
                    other => storage_error(other),
                })
        };
        // sled's background threads release the file lock a moment after
        // the store is dropped: a queue this process has just closed (one
        // command opening it twice, a reopen after salvage) is waited for,
        // briefly; another process's lock is reported after that wait.
        let waited = std::time::Instant::now();
        let db = loop {
            match open() {
                Err(OutboxError::Locked(_)) if waited.elapsed() < LOCK_WAIT => {
                    std::thread::sleep(Duration::from_millis(25));
                }
                other => break other?,
            }
        };
        // None: a new database.
        let stored = db.get(META_FORMAT_KEY).map_err(storage_error)?.map(|v| {
            v.as_ref()
                .try_into()
                .map(u32::from_be_bytes)
                .unwrap_or(u32::MAX)
        });
        let found = stored.unwrap_or(FORMAT_VERSION);
        if found > FORMAT_VERSION {
            return Err(OutboxError::UnsupportedFormat { found });
        }
        match db.get(META_KEY_CHECK).map_err(storage_error)? {
            Some(check) => {
                if key.open(META_KEY_CHECK, &check).as_deref() != Ok(KEY_CHECK_PLAIN) {
                    return Err(OutboxError::WrongKey(path));
                }
            }
            None => {
                let check = key
                    .seal(META_KEY_CHECK, KEY_CHECK_PLAIN)
                    .map_err(|e| OutboxError::Storage(e.to_string()))?;
                db.insert(META_KEY_CHECK, check).map_err(storage_error)?;
            }
        }
        let entries = db.open_tree("entries").map_err(storage_error)?;
        let images = db.open_tree("images").map_err(storage_error)?;
        let receipts = db.open_tree("receipts").map_err(storage_error)?;
        let files = files::ImageFiles::new(state_dir);
        if found < 2 {
            migrate::migrate_seal_images(&entries, &images, &key)?;
        }
        if found < 3 {
            migrate::move_images_to_files(&entries, &images, &files)?;
        }
        if stored != Some(FORMAT_VERSION) {
            db.insert(META_FORMAT_KEY, &FORMAT_VERSION.to_be_bytes())
                .map_err(storage_error)?;
        }
        db.flush().map_err(storage_error)?;
        // Only once the new format is recorded: a migration cut short finds
        // the chunks it has not moved yet.
        if !images.is_empty() {
            images.clear().map_err(storage_error)?;
            db.flush().map_err(storage_error)?;
        }
        drop(images);
        let log_path = path.join("db");
        let log_file = std::fs::File::open(&log_path).map_err(|e| io_error(&log_path, e))?;
        log_file.sync_all().map_err(|e| io_error(&log_path, e))?;
        sync_dir(&path)?;
        sync_dir(state_dir)?;
        let next_id = first_free_id(&db, &entries, &receipts)?;
        let key_for_ledger = key.clone();
        let outbox = Outbox {
            db,
            log_file,
            synced_blobs: Mutex::new(std::collections::HashSet::new()),
            blobs_listed: Mutex::new(None),
            entries,
            receipts,
            files,
            gone: Mutex::new(Vec::new()),
            limits,
            clock,
            key,
            usage: Mutex::new(Usage::default()),
            next_id: std::sync::atomic::AtomicU64::new(next_id),
            unsynced: std::sync::atomic::AtomicBool::new(false),
            spool: Spool::new(state_dir),
            path,
            ledger: Ledger::new(state_dir, key_for_ledger),
        };
        let recovery = outbox.recover()?;
        Ok((outbox, recovery))
    }

    fn lock(&self) -> MutexGuard<'_, Usage> {
        // A panic while holding the lock cannot leave sled inconsistent (every
        // write is one sled operation or transaction); keep going.
        self.usage.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes everything written so far durable.
    fn persist(&self) -> Result<(), OutboxError> {
        use std::sync::atomic::Ordering;
        // Cleared first: a write that lands during the flush sets it again.
        let was = self.unsynced.swap(false, Ordering::AcqRel);
        let gone = std::mem::take(&mut *self.gone.lock().unwrap_or_else(|p| p.into_inner()));
        let done = self.db.flush().map_err(storage_error).and_then(|_| {
            self.sync_blobs()?;
            self.log_file
                .sync_data()
                .map_err(|e| io_error(&self.path, e))
        });
        if done.is_err() {
            if was {
                self.unsynced.store(true, Ordering::Release);
            }
            self.gone
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(gone);
            return done;
        }
        // The removals are durable: the images can go.
        for id in gone {
            if let Err(e) = self.files.remove(id) {
                log::warn!("outbox: image file of entry {id}: {e}; removed at the next start");
            }
        }
        Ok(())
    }

    /// Makes the writes that were left to the next durable write
    /// ([`Durability::Deferred`]) durable now, if no write has since.
    pub fn sync(&self) -> Result<(), OutboxError> {
        if self.unsynced.load(std::sync::atomic::Ordering::Acquire) {
            self.persist()?;
        }
        Ok(())
    }

    /// Whether a write is waiting for the next durable one.
    #[cfg(test)]
    pub(crate) fn has_unsynced(&self) -> bool {
        self.unsynced.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Persists now, or leaves it to the next durable write.
    fn persist_as(&self, durability: Durability) -> Result<(), OutboxError> {
        match durability {
            Durability::Now => self.persist(),
            Durability::Deferred => {
                self.unsynced
                    .store(true, std::sync::atomic::Ordering::Release);
                Ok(())
            }
        }
    }

    /// fsyncs blob files sled wrote since the last call, and their directory.
    fn sync_blobs(&self) -> Result<(), OutboxError> {
        let dir = self.path.join("blobs");
        // A directory not changed since the last listing (and not within
        // the last second, finer than its mtime can tell) has no new file.
        let mtime = std::fs::metadata(&dir).and_then(|m| m.modified()).ok();
        let settled = mtime.filter(|t| t.elapsed().is_ok_and(|age| age > Duration::from_secs(1)));
        {
            let listed = self.blobs_listed.lock().unwrap_or_else(|p| p.into_inner());
            if settled.is_some() && *listed == settled {
                return Ok(());
            }
        }
        let listing = match std::fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error(&dir, e)),
        };
        let mut synced = self.synced_blobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut present = std::collections::HashSet::new();
        let mut new_files = false;
        for entry in listing {
            let entry = entry.map_err(|e| io_error(&dir, e))?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match std::fs::File::open(entry.path()).and_then(|f| f.sync_all()) {
                    Ok(()) => new_files = true,
                    // Garbage-collected by sled between listing and opening.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(&entry.path(), e)),
                }
            }
            present.insert(name);
        }
        // Forget files sled has removed, so the set stays bounded.
        *synced = present;
        if new_files {
            sync_dir(&dir)?;
        }
        *self.blobs_listed.lock().unwrap_or_else(|p| p.into_inner()) = settled;
        Ok(())
    }

    /// Removes an entry; its image file goes once that is durable.
    fn finish_removal(&self, id: u64) -> Result<(), OutboxError> {
        self.entries
            .remove(id.to_be_bytes())
            .map_err(storage_error)?;
        self.forget_images(id);
        Ok(())
    }

    /// Leaves an entry's image file to the next `persist`, which unlinks it
    /// once the entry's removal (or the clearing of its images) is durable.
    fn forget_images(&self, id: u64) {
        self.gone.lock().unwrap_or_else(|p| p.into_inner()).push(id);
    }

    /// Removes image files that no entry needs: an entry whose removal was
    /// durable just before a crash, one never acknowledged, one lost with
    /// both its records. Called at open, after the spool is reconciled.
    fn drop_orphan_images(&self) -> Result<(), OutboxError> {
        let ids = self
            .files
            .ids()
            .map_err(|e| io_error(self.files.dir(), e))?;
        for id in ids {
            let needed = match self.get(id) {
                Ok(e) => !e.images.is_empty(),
                // An unreadable record keeps what it may still need.
                Err(OutboxError::NotFound(_)) => false,
                Err(_) => true,
            };
            if !needed {
                self.files
                    .remove(id)
                    .map_err(|e| io_error(self.files.dir(), e))?;
            }
        }
        Ok(())
    }

    fn recover(&self) -> Result<Recovery, OutboxError> {
        let mut usage = self.lock();
        let mut rec = Recovery::default();
        let mut finished = 0u64;
        for item in self.entries.iter() {
            let (key, value) = item.map_err(storage_error)?;
            // A receipt next to a live entry: a crash while `complete_as`
            // removed it. The cloud has it; finish the removal.
            if self.receipts.contains_key(&key).map_err(storage_error)? {
                let Some(id) = id_from_key(&key) else {
                    continue;
                };
                let _ = self.spool.remove(id);
                self.finish_removal(id)?;
                finished += 1;
                continue;
            }
            let Ok(mut e) = serde_json::from_slice::<Enrollment>(&value) else {
                rec.corrupt += 1;
                let id = id_from_key(&key).unwrap_or(0);
                log::error!("outbox entry {id} is unreadable; left in place");
                continue;
            };
            if let EntryState::InFlight { since_ms } = e.state {
                e.state = EntryState::Pending;
                e.progress.outcome_unknown = true;
                // The cloud may still be working on the request the crash
                // left unanswered: look for its result only once it is done.
                e.next_attempt_at_ms = crate::queue::retry::settled(e.next_attempt_at_ms, since_ms);
                self.entries
                    .insert(
                        key,
                        serde_json::to_vec(&e).map_err(|x| OutboxError::Storage(x.to_string()))?,
                    )
                    .map_err(storage_error)?;
                rec.requeued += 1;
            }
        }
        if finished > 0 {
            log::info!(
                "outbox: {finished} uploaded entr(ies) interrupted while being removed are removed"
            );
        }
        if rec.requeued > 0 || finished > 0 {
            self.persist()?;
            log::warn!(
                "outbox: {} upload(s) interrupted by a restart are pending again",
                rec.requeued
            );
        }
        *usage = self.scan_usage()?;
        drop(usage);
        self.sweep_withdrawn()?;
        Ok(rec)
    }

    /// Puts back an entry read from a damaged store or the spool, with its
    /// id, state and images, and writes its spool copy unless the caller has
    /// just read an intact one (salvage only; not durable until
    /// [`Outbox::finish_restore`]).
    pub(crate) fn restore(
        &self,
        entry: &Enrollment,
        images: &[Vec<u8>],
        copy_intact: bool,
    ) -> Result<(), OutboxError> {
        let id = entry.id;
        let json = serde_json::to_vec(entry).map_err(|e| OutboxError::Storage(e.to_string()))?;
        let plain: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
        self.files.seal_and_write(&self.key, id, &plain)?;
        self.entries
            .insert(id.to_be_bytes(), json)
            .map_err(storage_error)?;
        if !copy_intact {
            let plain: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
            self.spool
                .write(&self.key, entry, &plain)
                .map_err(|e| io_error(self.spool.dir(), e))?;
        }
        self.next_id
            .fetch_max(id.saturating_add(1), std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    /// Puts back an entry the store does not have from its spool copy:
    /// pending with its outcome unknown (what happened after it was queued
    /// is not known, so the cloud is asked before it is sent again), dead
    /// entries stay dead. `false`: the copy is missing or damaged (it is set
    /// aside, so it is reported once) and the entry is lost.
    pub(crate) fn restore_from_spool(&self, id: u64) -> Result<bool, OutboxError> {
        match self.spool.read(&self.key, id) {
            Ok((mut entry, images)) if images_match(&entry, &images) => {
                if !matches!(entry.state, EntryState::Dead { .. }) {
                    entry.state = EntryState::Pending;
                    entry.progress.outcome_unknown = true;
                }
                log::error!(
                    "outbox: entry {id} was missing from the store; restored from its spool copy"
                );
                self.restore(&entry, &images, true)?;
                Ok(true)
            }
            Ok(_) => {
                log::error!("outbox: entry {id} lost: missing from the store, and its spool copy fails its checksums");
                self.spool.set_aside(id);
                Ok(false)
            }
            Err(e) => {
                log::error!("outbox: entry {id} lost: missing from the store, and {e}");
                self.spool.set_aside(id);
                Ok(false)
            }
        }
    }

    /// Puts back a receipt record as it was stored (salvage only).
    pub(crate) fn restore_receipt(&self, key: &[u8], value: &[u8]) -> Result<(), OutboxError> {
        if let Some(id) = id_from_key(key) {
            self.next_id
                .fetch_max(id.saturating_add(1), std::sync::atomic::Ordering::SeqCst);
        }
        self.receipts.insert(key, value).map_err(storage_error)?;
        Ok(())
    }

    /// Ends a salvage: stores the report and the id counter, makes it all
    /// durable, and counts the queue again (in-flight entries go back to
    /// pending as after any crash).
    pub(crate) fn finish_restore(&self, report: &SalvageReport) -> Result<Recovery, OutboxError> {
        let next = self.next_id.load(std::sync::atomic::Ordering::SeqCst);
        self.db
            .insert(META_NEXT_ID, &next.to_be_bytes())
            .map_err(storage_error)?;
        let json = serde_json::to_vec(report).map_err(|e| OutboxError::Storage(e.to_string()))?;
        self.db.insert(META_SALVAGE, json).map_err(storage_error)?;
        self.persist()?;
        self.recover()
    }

    /// The last rebuild of a damaged store, if there was one.
    pub fn last_salvage(&self) -> Option<SalvageReport> {
        let v = self.db.get(META_SALVAGE).ok()??;
        serde_json::from_slice(&v).ok()
    }

    /// Reads every entry, image, spool copy and receipt and says what is
    /// damaged (`enrolld queue check`). Changes nothing.
    pub fn check(&self) -> Result<HealthReport, OutboxError> {
        let mut r = HealthReport {
            last_salvage: self.last_salvage(),
            ..HealthReport::default()
        };
        for item in self.entries.iter() {
            let (key, value) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    r.problems.push(format!("the store cannot be read on: {e}"));
                    break;
                }
            };
            r.entries += 1;
            let id = id_from_key(&key).unwrap_or(0);
            let Ok(entry) = serde_json::from_slice::<Enrollment>(&value) else {
                r.problems
                    .push(format!("entry {id}: its record does not parse"));
                continue;
            };
            let stored = self.stored_images(&entry);
            let copy = self.spool.read(&self.key, id);
            let copy_ok = matches!(&copy, Ok((_, imgs)) if images_match(&entry, imgs));
            match (&stored, copy_ok) {
                (Ok(_), true) => r.healthy += 1,
                (Ok(_), false) => r.problems.push(format!(
                    "entry {id}: spool copy {}; the store's copy is intact (rewritten at the next salvage)",
                    copy.err().unwrap_or_else(|| "differs".into())
                )),
                (Err(e), true) => r.problems.push(format!(
                    "entry {id}: {e}; the spool copy is intact and is what will be uploaded"
                )),
                (Err(e), false) => {
                    r.problems.push(format!("entry {id}: {e}, and no intact spool copy: lost"));
                    r.lost.push(id);
                }
            }
        }
        for item in self.receipts.iter() {
            match item {
                Ok(_) => r.receipts += 1,
                Err(e) => {
                    r.problems.push(format!("receipts cannot be read on: {e}"));
                    break;
                }
            }
        }
        Ok(r)
    }

    /// Where the database lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn limits(&self) -> OutboxLimits {
        self.limits
    }

    /// Current use of the queue.
    pub fn usage(&self) -> Usage {
        *self.lock()
    }

    /// Adds an enrollment; returns once it is durable on disk.
    pub fn enqueue(&self, new: NewEnrollment) -> Result<Enrollment, OutboxError> {
        new.provider
            .check_person(&new.person_id, new.person_name.as_deref())
            .map_err(|e| OutboxError::InvalidRequest(e.to_string()))?;
        if new.images.is_empty() || new.images.len() > MAX_IMAGES {
            return Err(OutboxError::InvalidRequest(format!(
                "an enrollment holds 1 to {MAX_IMAGES} images, not {}",
                new.images.len()
            )));
        }
        if new.images.iter().any(|i| i.bytes.is_empty()) {
            return Err(OutboxError::InvalidRequest("empty image".into()));
        }
        let needed: u64 = new.images.iter().map(|i| i.bytes.len() as u64).sum();
        let mut usage = self.lock();
        if usage.entries + 1 > self.limits.max_entries
            || usage.bytes + needed > self.limits.max_bytes
        {
            return Err(OutboxError::QueueFull {
                entries: usage.entries,
                max_entries: self.limits.max_entries,
                bytes: usage.bytes,
                max_bytes: self.limits.max_bytes,
                needed,
            });
        }
        self.check_room(&usage, needed)?;
        let id = self.next_id.load(std::sync::atomic::Ordering::SeqCst);
        let now = self.clock.now_ms();
        let consent = new
            .consent
            .as_ref()
            .map(|c| self.seal_consent(id, c))
            .transpose()?;
        let record = Enrollment {
            format_version: FORMAT_VERSION,
            id,
            person_id: new.person_id,
            person_name: new.person_name,
            provider: new.provider,
            group: new.group,
            created_at_ms: now,
            created_boot: BootStamp::now(),
            attempts: 0,
            next_attempt_at_ms: now,
            state: EntryState::Pending,
            last_error: None,
            progress: UploadProgress::default(),
            images: new
                .images
                .iter()
                .map(|i| ImageMeta {
                    len: i.bytes.len() as u64,
                    width: i.width,
                    height: i.height,
                    format: "jpeg".into(),
                    sha256: sha256_hex(&i.bytes),
                })
                .collect(),
            scores: new.scores,
            task: Task::Enroll,
            consent,
            withdrawn: false,
        };
        let json = serde_json::to_vec(&record).map_err(|e| OutboxError::Storage(e.to_string()))?;
        // The second copy first: an entry is acknowledged only with both.
        let plain: Vec<&[u8]> = new.images.iter().map(|i| i.bytes.as_slice()).collect();
        self.spool
            .stage(&self.key, &record, &plain)
            .map_err(|e| io_error(self.spool.dir(), e))?;
        let key = id.to_be_bytes();
        // The images are durable before the record that names them.
        if let Err(e) = self.files.seal_and_write(&self.key, id, &plain) {
            let _ = self.spool.remove(id);
            let _ = self.files.remove(id);
            return Err(e);
        }
        use sled::Transactional;
        let meta: &sled::Tree = &self.db;
        (&self.entries, meta)
            .transaction(|(entries, meta)| {
                entries.insert(&key, json.as_slice())?;
                meta.insert(META_NEXT_ID, &(id + 1).to_be_bytes())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<OutboxError>>(())
            })
            .map_err(|e| {
                let _ = self.spool.remove(id);
                let _ = self.files.remove(id);
                tx_error(e)
            })?;
        if let Err(e) = self.persist().and_then(|()| {
            self.spool
                .commit(id)
                .map_err(|e| io_error(self.spool.dir(), e))
        }) {
            let _ = self.spool.remove(id);
            // Not durable, so not acknowledged: take it back out so a retry by
            // the caller cannot become a duplicate.
            let _ = self.remove_records(id);
            let _ = self.files.remove(id);
            return Err(e);
        }
        self.next_id
            .store(id + 1, std::sync::atomic::Ordering::SeqCst);
        usage.entries += 1;
        usage.bytes += needed;
        usage.pending += 1;
        // The new entry is last in queue order: oldest only if it is alone.
        usage.oldest_pending_ms.get_or_insert(now);
        drop(usage);
        let mut notes = Vec::new();
        if let Some(c) = new.consent {
            notes.push(self.ledger_record(&record, LedgerEvent::ConsentGiven { consent: c }));
        }
        notes.push(self.ledger_record(
            &record,
            LedgerEvent::Queued {
                images: record.images.len(),
            },
        ));
        self.ledger.note(&notes);
        Ok(record)
    }

    /// Removes an entry and its copy; its image file goes with the next
    /// `persist`.
    fn remove_records(&self, id: u64) -> Result<(), OutboxError> {
        // The copy goes first, and if it cannot go the entry stays: a spool
        // file is then never left for an entry that is gone, so one without
        // a store record is one the store lost (see `reconcile_spool`).
        self.spool
            .remove(id)
            .map_err(|e| io_error(self.spool.dir(), e))?;
        self.finish_removal(id)
    }

    /// Removes the spool copy of an uploaded entry. A copy left behind is
    /// removed at the next open (its receipt says the entry is done).
    fn drop_copy(&self, id: u64) {
        if let Err(e) = self.spool.remove(id) {
            log::warn!("outbox: spool copy of entry {id}: {e}; removed at the next start");
        }
    }

    /// Makes the spool and the store agree at open:
    /// - a copy whose id was never given out (a crash before the entry was
    ///   stored, so never acknowledged) is removed;
    /// - a copy of an entry the store does not have is one the store lost
    ///   silently (sled drops a damaged blob page): it is put back, pending
    ///   with its outcome unknown, and reported like a rebuild;
    /// - an entry without a copy (a crash after the copy's removal, or a
    ///   damaged spool) gets one again;
    /// - an entry whose image file is missing (removed by hand, lost by the
    ///   filesystem) gets it again from its spool copy.
    fn reconcile_spool(&self) -> Result<(), OutboxError> {
        let ids = self
            .spool
            .ids()
            .map_err(|e| io_error(self.spool.dir(), e))?;
        let with_file = self
            .files
            .ids()
            .map_err(|e| io_error(self.files.dir(), e))?;
        let mut restored = 0u64;
        let mut lost = Vec::new();
        for id in &ids {
            let id = *id;
            if self
                .entries
                .contains_key(id.to_be_bytes())
                .map_err(storage_error)?
            {
                continue;
            }
            if self
                .receipts
                .contains_key(id.to_be_bytes())
                .map_err(storage_error)?
            {
                self.drop_copy(id);
                continue;
            }
            if self.restore_from_spool(id)? {
                restored += 1;
            } else {
                lost.push(id);
            }
        }
        for item in self.entries.iter() {
            let (key, _) = item.map_err(storage_error)?;
            let Some(id) = id_from_key(&key) else {
                continue;
            };
            if with_file.binary_search(&id).is_err() && ids.binary_search(&id).is_ok() {
                self.restore_image_file(id)?;
            }
            if ids.binary_search(&id).is_err() {
                if let Ok(mut entry) = self.get(id) {
                    // Its copy goes only when it is uploaded or purged: the
                    // store may have rolled back past that, so the cloud is
                    // asked before it is sent again.
                    if entry.state == EntryState::Pending && !entry.progress.outcome_unknown {
                        entry.progress.outcome_unknown = true;
                        self.entries
                            .insert(
                                key.clone(),
                                serde_json::to_vec(&entry)
                                    .map_err(|e| OutboxError::Storage(e.to_string()))?,
                            )
                            .map_err(storage_error)?;
                    }
                    if let Ok(images) = self.stored_images(&entry) {
                        let plain: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
                        self.spool
                            .write(&self.key, &entry, &plain)
                            .map_err(|e| io_error(self.spool.dir(), e))?;
                    }
                }
            }
        }
        if restored > 0 || !lost.is_empty() {
            let report = SalvageReport {
                at_ms: self.clock.now_ms(),
                why: "entries missing from the store".into(),
                moved_to: self.path.clone(),
                kept_from_store: 0,
                kept_from_spool: restored,
                receipts_kept: 0,
                lost,
            };
            self.finish_restore(&report)?;
        }
        Ok(())
    }

    /// Writes an entry's missing image file again from its spool copy, if
    /// the entry has images and the copy is intact.
    fn restore_image_file(&self, id: u64) -> Result<(), OutboxError> {
        let Ok(entry) = self.get(id) else {
            return Ok(());
        };
        if entry.images.is_empty() {
            return Ok(());
        }
        match self.spool.read(&self.key, id) {
            Ok((_, images)) if images_match(&entry, &images) => {
                let plain: Vec<&[u8]> = images.iter().map(Vec::as_slice).collect();
                self.files.seal_and_write(&self.key, id, &plain)?;
                log::warn!("outbox: entry {id}: its image file was missing; written again from its spool copy");
            }
            _ => log::error!(
                "outbox: entry {id}: its image file is missing and its spool copy is not intact"
            ),
        }
        Ok(())
    }

    /// One entry, without images.
    pub fn get(&self, id: u64) -> Result<Enrollment, OutboxError> {
        let value = self
            .entries
            .get(id.to_be_bytes())
            .map_err(storage_error)?
            .ok_or(OutboxError::NotFound(id))?;
        serde_json::from_slice(&value).map_err(|e| OutboxError::Corrupt {
            id,
            why: e.to_string(),
        })
    }

    /// The images of an entry, checked against their stored checksums;
    /// when the store's copy is damaged, the spool's is used.
    pub fn images(&self, id: u64) -> Result<Vec<Vec<u8>>, OutboxError> {
        let entry = self.get(id)?;
        match self.stored_images(&entry) {
            Ok(images) => Ok(images),
            // Damaged, or sled failed reading a damaged blob file.
            Err(
                e @ (OutboxError::Corrupt { .. }
                | OutboxError::Damaged(_)
                | OutboxError::Storage(_)),
            ) => match self.spool.read(&self.key, id) {
                Ok((_, images)) if images_match(&entry, &images) => {
                    log::warn!("outbox: {e}; using the spool copy");
                    Ok(images)
                }
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// The images of an entry as the store holds them, checked.
    fn stored_images(&self, entry: &Enrollment) -> Result<Vec<Vec<u8>>, OutboxError> {
        let id = entry.id;
        let mut out = Vec::with_capacity(entry.images.len());
        if entry.images.is_empty() {
            return Ok(out);
        }
        let (mut file, ranges) = self.files.read_raw(id, entry.images.len())?;
        let single = ranges.len() == 1;
        for (i, (meta, range)) in entry.images.iter().zip(ranges).enumerate() {
            let start = range.start;
            let plain = self
                .key
                .open_in_place(&image_aad(id, i as u8), &mut file[range])
                .map_err(|e| OutboxError::Corrupt {
                    id,
                    why: format!("image {i}: {e}"),
                })?;
            let plain = start + plain.start..start + plain.end;
            // The seal's tag already proves these are the bytes sealed for
            // this entry and index (a flipped bit fails `open`), so the
            // SHA-256 of the record is not computed again on this path.
            if plain.len() as u64 != meta.len {
                return Err(OutboxError::Corrupt {
                    id,
                    why: format!("image {i} is missing or fails its checksum"),
                });
            }
            if single {
                // The file's buffer becomes the image: no copy.
                file.truncate(plain.end);
                file.drain(..plain.start);
                out.push(std::mem::take(&mut file));
            } else {
                out.push(file[plain].to_vec());
            }
        }
        Ok(out)
    }

    /// Every readable entry, oldest first.
    pub fn list(&self) -> Result<Vec<Enrollment>, OutboxError> {
        read_all(&self.entries)
    }

    /// Pending entries whose next attempt is due at `now`, oldest first.
    pub fn due(&self, now: UnixMillis, max: usize) -> Result<Vec<Enrollment>, OutboxError> {
        self.due_where(now, max, |_| true)
    }

    /// Like [`Outbox::due`], only entries `keep` accepts.
    pub fn due_where(
        &self,
        now: UnixMillis,
        max: usize,
        keep: impl Fn(&Enrollment) -> bool,
    ) -> Result<Vec<Enrollment>, OutboxError> {
        let mut out = Vec::new();
        for item in self.entries.iter() {
            if out.len() >= max {
                break;
            }
            let (_, value) = item.map_err(storage_error)?;
            if let Ok(e) = serde_json::from_slice::<Enrollment>(&value) {
                if e.state == EntryState::Pending
                    && !e.withdrawn
                    && e.next_attempt_at_ms <= now
                    && keep(&e)
                {
                    out.push(e);
                }
            }
        }
        Ok(out)
    }

    /// Changes one entry under the write lock and makes it durable.
    fn update(
        &self,
        id: u64,
        f: impl FnOnce(&mut Enrollment) -> Result<(), OutboxError>,
    ) -> Result<Enrollment, OutboxError> {
        self.update_as(id, Durability::Now, f)
    }

    fn update_as(
        &self,
        id: u64,
        durability: Durability,
        f: impl FnOnce(&mut Enrollment) -> Result<(), OutboxError>,
    ) -> Result<Enrollment, OutboxError> {
        let mut usage = self.lock();
        let before = self.get(id)?;
        let mut e = before.clone();
        f(&mut e)?;
        let json = serde_json::to_vec(&e).map_err(|x| OutboxError::Storage(x.to_string()))?;
        self.entries
            .insert(id.to_be_bytes(), json)
            .map_err(storage_error)?;
        self.persist_as(durability)?;
        self.account(&mut usage, Some(&before), Some(&e))?;
        Ok(e)
    }

    /// Rewrites an entry's record as an older release may have written it.
    #[cfg(test)]
    pub(crate) fn rewrite_for_test(
        &self,
        id: u64,
        f: impl FnOnce(&mut Enrollment),
    ) -> Result<Enrollment, OutboxError> {
        self.update(id, |e| {
            f(e);
            Ok(())
        })
    }

    /// Marks a pending entry in flight (an upload starts).
    pub fn claim(&self, id: u64) -> Result<Enrollment, OutboxError> {
        self.claim_with(id, None)
    }

    /// [`Outbox::claim`], storing what the upload learned before it
    /// (`progress`, e.g. the person's faces before the first send) in the
    /// same durable write.
    pub fn claim_with(
        &self,
        id: u64,
        progress: Option<&UploadProgress>,
    ) -> Result<Enrollment, OutboxError> {
        self.claim_as(id, progress, Durability::Now)
    }

    /// Claims several entries, each with its progress, in one durable
    /// write (for a vendor that looks every unanswered upload up before it
    /// sends again: a crash then leaves entries in flight that were never
    /// sent, which costs a lookup each, never a duplicate). One result per
    /// claim, in order; a storage failure fails them all.
    pub fn claim_many(
        &self,
        claims: &[(u64, &UploadProgress)],
    ) -> Result<Vec<Result<Enrollment, OutboxError>>, OutboxError> {
        let out: Vec<_> = claims
            .iter()
            .map(|(id, p)| self.claim_as(*id, Some(p), Durability::Deferred))
            .collect();
        self.persist()?;
        Ok(out)
    }

    /// Gives back a claimed entry that was not sent (its vendor paused or
    /// went away before its turn): pending again, the attempt not counted.
    /// Not durable by itself: a crash before the next durable write leaves
    /// it in flight, and it is looked up before it is sent.
    pub fn release(&self, id: u64) -> Result<Enrollment, OutboxError> {
        if let Some(e) = self.end_withdrawn(id, false)? {
            return Ok(e);
        }
        self.update_as(id, Durability::Deferred, |e| {
            if !matches!(e.state, EntryState::InFlight { .. }) {
                return Err(OutboxError::InvalidState {
                    id,
                    state: e.state.name(),
                    wanted: "only an entry in flight can be released",
                });
            }
            e.state = EntryState::Pending;
            e.attempts = e.attempts.saturating_sub(1);
            Ok(())
        })
    }

    fn claim_as(
        &self,
        id: u64,
        progress: Option<&UploadProgress>,
        durability: Durability,
    ) -> Result<Enrollment, OutboxError> {
        let now = self.clock.now_ms();
        self.update_as(id, durability, |e| {
            if e.state != EntryState::Pending {
                return Err(OutboxError::InvalidState {
                    id,
                    state: e.state.name(),
                    wanted: "only pending entries can be uploaded",
                });
            }
            if e.withdrawn {
                return Err(OutboxError::InvalidState {
                    id,
                    state: "withdrawn",
                    wanted: "the person withdrew: it is never uploaded",
                });
            }
            e.state = EntryState::InFlight { since_ms: now };
            e.attempts += 1;
            if let Some(p) = progress {
                e.progress.clone_from(p);
            }
            Ok(())
        })
    }

    /// Returns an in-flight entry to pending after a failed attempt.
    pub fn reschedule(
        &self,
        id: u64,
        next_attempt_at_ms: UnixMillis,
        error: Option<LastError>,
        outcome_unknown: bool,
    ) -> Result<Enrollment, OutboxError> {
        if let Some(e) = self.end_withdrawn(id, outcome_unknown)? {
            return Ok(e);
        }
        self.update(id, |e| {
            e.state = EntryState::Pending;
            e.next_attempt_at_ms = next_attempt_at_ms;
            e.progress.outcome_unknown = outcome_unknown;
            if error.is_some() {
                e.last_error = error;
            }
            Ok(())
        })
    }

    /// [`Outbox::reschedule`] with what the attempt learned (`progress`,
    /// its `outcome_unknown` included), in the same durable write.
    pub fn reschedule_with(
        &self,
        id: u64,
        next_attempt_at_ms: UnixMillis,
        error: Option<LastError>,
        progress: &UploadProgress,
    ) -> Result<Enrollment, OutboxError> {
        if self.get(id)?.withdrawn {
            // What it learned goes with it into the person's delete.
            self.update(id, |e| {
                e.progress.clone_from(progress);
                Ok(())
            })?;
            return self.reschedule(id, next_attempt_at_ms, error, progress.outcome_unknown);
        }
        self.update(id, |e| {
            e.state = EntryState::Pending;
            e.next_attempt_at_ms = next_attempt_at_ms;
            e.progress.clone_from(progress);
            if error.is_some() {
                e.last_error = error;
            }
            Ok(())
        })
    }

    /// Marks an entry dead: it stays, with its images, until purged or retried.
    pub fn mark_dead(
        &self,
        id: u64,
        reason: &str,
        error: Option<LastError>,
    ) -> Result<Enrollment, OutboxError> {
        if let Some(e) = self.end_withdrawn(id, false)? {
            return Ok(e);
        }
        let now = self.clock.now_ms();
        let message = error
            .as_ref()
            .map(|l| l.message.clone())
            .unwrap_or_default();
        let e = self.update(id, |e| {
            e.state = EntryState::Dead {
                reason: reason.to_string(),
                since_ms: now,
            };
            if error.is_some() {
                e.last_error = error;
            }
            Ok(())
        })?;
        self.ledger.note(&[self.ledger_record(
            &e,
            LedgerEvent::Dead {
                code: reason.to_string(),
                reason: message,
            },
        )]);
        Ok(e)
    }

    /// Makes an entry due now: a dead entry becomes pending again.
    pub fn retry(&self, id: u64) -> Result<Enrollment, OutboxError> {
        let now = self.clock.now_ms();
        self.update(id, |e| {
            if matches!(e.state, EntryState::InFlight { .. }) {
                return Err(OutboxError::InvalidState {
                    id,
                    state: "in_flight",
                    wanted: "wait for the upload to finish",
                });
            }
            e.state = EntryState::Pending;
            e.next_attempt_at_ms = now;
            Ok(())
        })
    }

    /// Records what an upload learned (progress fields only) while in flight.
    pub fn save_progress(&self, progress: &Enrollment) -> Result<Enrollment, OutboxError> {
        let id = progress.id;
        self.update(id, |e| {
            if !matches!(e.state, EntryState::InFlight { .. }) {
                return Err(OutboxError::InvalidState {
                    id,
                    state: e.state.name(),
                    wanted: "progress is only saved during an upload",
                });
            }
            e.progress.clone_from(&progress.progress);
            Ok(())
        })
    }

    /// The cloud has the enrollment: delete its images and the entry, keep a
    /// receipt. One transaction, so there is never an entry without images
    /// or a receipt next to a live entry.
    pub fn complete(&self, id: u64, face_ids: &[String]) -> Result<Receipt, OutboxError> {
        self.complete_as(id, face_ids, Durability::Now)
    }

    /// [`Outbox::complete`], durable now or with the next durable write
    /// (for a vendor that looks an interrupted upload up before it sends
    /// again: a crash first leaves the entry in flight, and the lookup
    /// finds its face).
    pub fn complete_as(
        &self,
        id: u64,
        face_ids: &[String],
        durability: Durability,
    ) -> Result<Receipt, OutboxError> {
        let mut usage = self.lock();
        let e = self.get(id)?;
        let receipt = Receipt {
            id,
            person_id: e.person_id.clone(),
            provider: e.provider,
            group: e.group.clone(),
            face_ids: face_ids.to_vec(),
            created_at_ms: e.created_at_ms,
            uploaded_at_ms: self.clock.now_ms(),
            attempts: e.attempts,
            created_boot: e.created_boot.clone(),
            uploaded_boot: BootStamp::now(),
            consent: e.consent.clone(),
            created_person: e.progress.created_person,
        };
        let json = serde_json::to_vec(&receipt).map_err(|x| OutboxError::Storage(x.to_string()))?;
        self.drop_copy(id);
        // Two plain writes, not a transaction (which makes sled write its
        // log buffer out twice): the receipt first, so a crash between them
        // leaves a live entry next to its receipt, which the next open
        // finishes (see `recover`). The image file goes once both are
        // durable, so there is never an entry without images.
        self.receipts
            .insert(id.to_be_bytes(), json)
            .map_err(storage_error)?;
        self.finish_removal(id)?;
        self.persist_as(durability)?;
        self.account(&mut usage, Some(&e), None)?;
        drop(usage);
        // The receipt holds the same facts, durably: the line waits for the
        // next sync (the end of the drain pass at the latest).
        self.ledger.note_unsynced(&[self.ledger_record(
            &e,
            LedgerEvent::Uploaded {
                face_ids: face_ids.to_vec(),
            },
        )]);
        Ok(receipt)
    }

    /// Entries and receipts of the boot `now` is in whose wall-clock stamp
    /// is off the true time by more than a minute (the clock was wrong when
    /// they were made: a board without a battery clock before NTP) get the
    /// true time: `true_now_ms` less the boot time since. A stamp is judged
    /// by its boot time, not by the floor: a record made a second before the
    /// last `Date` was seen is right. Records of other boots keep their
    /// times (how long those boots lasted is unknown). Returns how many
    /// records changed; receipts are read newest first, up to the first one
    /// of another boot.
    pub fn correct_times(
        &self,
        true_now_ms: UnixMillis,
        now: &BootStamp,
    ) -> Result<usize, OutboxError> {
        const TOLERANCE_MS: i64 = 60_000;
        let _usage = self.lock();
        let fix = |t: &mut UnixMillis, stamp: &Option<BootStamp>| -> bool {
            match stamp {
                Some(b) if b.boot_id == now.boot_id => {
                    let truth = true_now_ms - (now.boot_ms - b.boot_ms).max(0);
                    if (*t - truth).abs() > TOLERANCE_MS {
                        *t = truth;
                        return true;
                    }
                    false
                }
                _ => false,
            }
        };
        let this_boot =
            |stamp: &Option<BootStamp>| stamp.as_ref().is_some_and(|b| b.boot_id == now.boot_id);
        let mut changed = 0;
        for item in self.entries.iter() {
            let (key, value) = item.map_err(storage_error)?;
            let Ok(mut e) = serde_json::from_slice::<Enrollment>(&value) else {
                continue;
            };
            if fix(&mut e.created_at_ms, &e.created_boot) {
                let json =
                    serde_json::to_vec(&e).map_err(|x| OutboxError::Storage(x.to_string()))?;
                self.entries.insert(key, json).map_err(storage_error)?;
                changed += 1;
            }
        }
        for item in self.receipts.iter().rev() {
            let (key, value) = item.map_err(storage_error)?;
            let Ok(mut r) = serde_json::from_slice::<Receipt>(&value) else {
                continue;
            };
            if !this_boot(&r.uploaded_boot) {
                break;
            }
            let created = fix(&mut r.created_at_ms, &r.created_boot);
            let uploaded = fix(&mut r.uploaded_at_ms, &r.uploaded_boot);
            if created || uploaded {
                let json =
                    serde_json::to_vec(&r).map_err(|x| OutboxError::Storage(x.to_string()))?;
                self.receipts.insert(key, json).map_err(storage_error)?;
                changed += 1;
            }
        }
        if changed > 0 {
            self.persist()?;
        }
        Ok(changed)
    }

    /// Every receipt, oldest first.
    pub fn receipts(&self) -> Result<Vec<Receipt>, OutboxError> {
        read_all(&self.receipts)
    }

    /// Deletes receipts uploaded before `before_ms`; returns how many.
    pub fn purge_receipts_before(&self, before_ms: UnixMillis) -> Result<usize, OutboxError> {
        let _usage = self.lock();
        let mut n = 0;
        for item in self.receipts.iter() {
            let (key, value) = item.map_err(storage_error)?;
            let old = serde_json::from_slice::<Receipt>(&value)
                .map_or(true, |r| r.uploaded_at_ms < before_ms);
            if old {
                self.receipts.remove(key).map_err(storage_error)?;
                n += 1;
            }
        }
        if n > 0 {
            self.persist()?;
        }
        Ok(n)
    }

    /// Deletes an entry and its images (not while in flight).
    pub fn purge(&self, id: u64) -> Result<Enrollment, OutboxError> {
        let mut usage = self.lock();
        let e = self.get(id)?;
        if matches!(e.state, EntryState::InFlight { .. }) {
            return Err(OutboxError::InvalidState {
                id,
                state: "in_flight",
                wanted: "wait for the upload to finish",
            });
        }
        self.remove_records(id)?;
        self.persist()?;
        self.account(&mut usage, Some(&e), None)?;
        drop(usage);
        self.ledger.note(&[self.ledger_record(
            &e,
            LedgerEvent::Purged {
                why: "queue purge".into(),
            },
        )]);
        Ok(e)
    }

    /// Deletes every dead entry; returns their ids.
    pub fn purge_dead(&self) -> Result<Vec<u64>, OutboxError> {
        self.purge_dead_before(UnixMillis::MAX)
    }

    /// Deletes the entries (and images) that died before `before_ms`.
    pub fn purge_dead_before(&self, before_ms: UnixMillis) -> Result<Vec<u64>, OutboxError> {
        let mut usage = self.lock();
        let mut purged = Vec::new();
        let mut notes = Vec::new();
        let why = if before_ms == UnixMillis::MAX {
            "queue purge --dead"
        } else {
            "queue.dead_retention_days"
        };
        for e in self.list()? {
            if matches!(e.state, EntryState::Dead { since_ms, .. } if since_ms < before_ms) {
                self.remove_records(e.id)?;
                purged.push(e.id);
                notes.push(self.ledger_record(&e, LedgerEvent::Purged { why: why.into() }));
            }
        }
        self.persist()?;
        *usage = self.scan_usage()?;
        drop(usage);
        if !notes.is_empty() {
            self.ledger.note(&notes);
        }
        Ok(purged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    fn open(dir: &Path, clock: &FakeClock, limits: OutboxLimits) -> Outbox {
        Outbox::open(dir, limits, Arc::new(clock.clone()), test_key())
            .expect("opens")
            .0
    }

    fn test_key() -> QueueKey {
        QueueKey::from_encoded(&[7; 32]).expect("key")
    }

    fn new(person: &str, bytes: Vec<u8>) -> NewEnrollment {
        NewEnrollment {
            person_id: person.into(),
            person_name: None,
            provider: Provider::Jd,
            group: Group {
                id: "g".into(),
                name: String::new(),
            },
            images: vec![NewImage {
                bytes,
                width: 10,
                height: 10,
            }],
            scores: Vec::new(),
            consent: None,
        }
    }

    const BIG: OutboxLimits = OutboxLimits {
        max_entries: 100,
        max_bytes: 1 << 30,
        reserve_bytes: 0,
    };

    #[test]
    fn records_stamped_by_a_wrong_clock_get_the_true_time_and_right_ones_stay() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = crate::clock::SystemClock.now_ms();
        // Booted at 1970: the first entry and its receipt are stamped 1970.
        let clock = FakeClock::new(86_400_000);
        let ob = open(dir.path(), &clock, BIG);
        let wrong = ob.enqueue(new("a", vec![1; 10])).expect("enqueue").id;
        let done = ob.enqueue(new("b", vec![2; 10])).expect("enqueue").id;
        ob.claim(done).expect("claim");
        ob.complete(done, &["f".into()]).expect("complete");
        // NTP ran: the next one is stamped right.
        clock.set(real);
        let right = ob.enqueue(new("c", vec![3; 10])).expect("enqueue").id;
        let now = BootStamp::now().expect("boot stamp");
        assert_eq!(ob.correct_times(real, &now).expect("correct"), 2);
        for id in [wrong, right] {
            let t = ob.get(id).expect("entry").created_at_ms;
            assert!((real - 5_000..=real).contains(&t), "entry {id}: {t}");
        }
        let r = &ob.receipts().expect("receipts")[0];
        assert!((real - 5_000..=real).contains(&r.created_at_ms), "{r:?}");
        assert!((real - 5_000..=real).contains(&r.uploaded_at_ms), "{r:?}");
        assert_eq!(
            ob.correct_times(real, &now).expect("again"),
            0,
            "nothing left"
        );
        // A record of another boot keeps its time.
        let other = BootStamp {
            boot_id: "another-boot".into(),
            boot_ms: now.boot_ms,
        };
        clock.set(86_400_000);
        let old = ob.enqueue(new("d", vec![4; 10])).expect("enqueue").id;
        assert_eq!(ob.correct_times(real, &other).expect("other boot"), 0);
        assert_eq!(ob.get(old).expect("entry").created_at_ms, 86_400_000);
    }

    #[test]
    fn enqueue_get_and_images_round_trip() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(1_000);
        let ob = open(dir.path(), &clock, BIG);
        let e = ob.enqueue(new("张三", vec![1, 2, 3])).expect("enqueue");
        assert_eq!(e.format_version, FORMAT_VERSION);
        assert_eq!(e.person_id, "张三");
        assert_eq!(ob.get(e.id).expect("get"), e);
        assert_eq!(ob.images(e.id).expect("images"), vec![vec![1, 2, 3]]);
        let u = ob.usage();
        assert_eq!((u.entries, u.bytes, u.pending), (1, 3, 1));
    }

    #[test]
    fn ids_are_small_increasing_and_never_reused_across_reopens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(1_000);
        let mut ids = Vec::new();
        for _ in 0..3 {
            let ob = open(dir.path(), &clock, BIG);
            ids.push(ob.enqueue(new("p", vec![1])).expect("enqueue").id);
            ids.push(ob.enqueue(new("p", vec![2])).expect("enqueue").id);
        }
        assert_eq!(ids, [1, 2, 3, 4, 5, 6]);
        // The last entry goes (uploaded, then purged): its id is not given again.
        let ob = open(dir.path(), &clock, BIG);
        ob.complete(6, &["f".into()]).expect("complete");
        ob.purge(5).expect("purge");
        drop(ob);
        let ob = open(dir.path(), &clock, BIG);
        assert_eq!(ob.enqueue(new("p", vec![3])).expect("enqueue").id, 7);
    }

    #[test]
    fn capacity_limits_refuse_without_touching_the_queue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(0);
        let ob = open(
            dir.path(),
            &clock,
            OutboxLimits {
                max_entries: 2,
                max_bytes: 10,
                reserve_bytes: 0,
            },
        );
        let a = ob.enqueue(new("a", vec![0; 4])).expect("a");
        let err = ob.enqueue(new("b", vec![0; 7])).expect_err("bytes");
        assert_eq!(err.code(), "queue_full");
        let b = ob.enqueue(new("b", vec![0; 6])).expect("b fits exactly");
        let err = ob.enqueue(new("c", vec![0; 1])).expect_err("entries");
        assert_eq!(err.code(), "queue_full");
        assert!(err.to_string().contains("2/2 entries"), "{err}");
        assert_eq!(
            ob.list()
                .expect("list")
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>(),
            vec![a.id, b.id]
        );
        ob.purge(a.id).expect("purge");
        ob.enqueue(new("c", vec![0; 1])).expect("room again");
    }

    #[test]
    fn in_flight_goes_back_to_pending_on_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(0);
        let id = {
            let ob = open(dir.path(), &clock, BIG);
            let e = ob.enqueue(new("p", vec![9; 10])).expect("enqueue");
            let claimed = ob.claim(e.id).expect("claim");
            assert_eq!(claimed.attempts, 1);
            assert!(matches!(claimed.state, EntryState::InFlight { .. }));
            e.id
        };
        let (ob, rec) =
            Outbox::open(dir.path(), BIG, Arc::new(clock.clone()), test_key()).expect("reopen");
        assert_eq!(rec.requeued, 1);
        let e = ob.get(id).expect("get");
        assert_eq!(e.state, EntryState::Pending);
        assert!(e.progress.outcome_unknown);
    }

    #[test]
    fn due_respects_next_attempt_and_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(100);
        let ob = open(dir.path(), &clock, BIG);
        let a = ob.enqueue(new("a", vec![1])).expect("a");
        let b = ob.enqueue(new("b", vec![1])).expect("b");
        ob.claim(b.id).expect("claim");
        ob.reschedule(b.id, 5_000, None, false).expect("reschedule");
        assert_eq!(
            ob.due(100, 10)
                .expect("due")
                .iter()
                .map(|e| e.id)
                .collect::<Vec<_>>(),
            vec![a.id]
        );
        assert_eq!(ob.due(5_000, 10).expect("due").len(), 2);
        ob.mark_dead(a.id, "no_face", None).expect("dead");
        assert_eq!(ob.due(5_000, 10).expect("due").len(), 1);
        assert_eq!(ob.usage().dead, 1);
        ob.retry(a.id).expect("retry");
        assert_eq!(ob.get(a.id).expect("get").state, EntryState::Pending);
        ob.mark_dead(a.id, "no_face", None).expect("dead");
        // Retention: only entries dead before the cut-off go.
        let died = ob.get(a.id).expect("get");
        let EntryState::Dead { since_ms, .. } = died.state else {
            panic!("not dead: {died:?}");
        };
        assert!(ob.purge_dead_before(since_ms).expect("none").is_empty());
        assert_eq!(
            ob.purge_dead_before(since_ms + 1).expect("purge"),
            vec![a.id]
        );
        ob.retry(a.id).expect_err("gone");
        assert!(matches!(ob.get(a.id), Err(OutboxError::NotFound(_))));
    }

    #[test]
    fn bad_requests_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ob = open(dir.path(), &FakeClock::new(0), BIG);
        for person in ["", " padded", "a\nb", &"x".repeat(65)] {
            let err = ob.enqueue(new(person, vec![1])).expect_err("invalid");
            assert_eq!(err.code(), "invalid_request", "{person:?}");
        }
        let mut none = new("p", vec![1]);
        none.images.clear();
        assert_eq!(
            ob.enqueue(none).expect_err("no images").code(),
            "invalid_request"
        );
        assert_eq!(ob.usage().entries, 0);
    }

    #[test]
    fn format_version_is_stored_and_newer_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let ob = open(dir.path(), &FakeClock::new(0), BIG);
            let v = ob.db.get(META_FORMAT_KEY).expect("get").expect("present");
            assert_eq!(v.as_ref(), FORMAT_VERSION.to_be_bytes());
            ob.db
                .insert(META_FORMAT_KEY, &(FORMAT_VERSION + 1).to_be_bytes())
                .expect("insert");
            ob.db.flush().expect("flush");
        }
        let err = Outbox::open(dir.path(), BIG, Arc::new(FakeClock::new(0)), test_key())
            .expect_err("newer");
        assert_eq!(err.code(), "unsupported_format");
    }

    #[test]
    fn a_format_1_queue_is_sealed_when_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let plain: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();
        let id = {
            // Write what enrolld 1 wrote: images in the clear, format 1, no key check.
            let ob = open(dir.path(), &FakeClock::new(0), BIG);
            let id = ob.enqueue(new("old", plain.clone())).expect("enqueue").id;
            ob.files.remove(id).expect("no image file");
            let images = ob.db.open_tree("images").expect("tree");
            for (c, chunk) in plain.chunks(CHUNK_BYTES).enumerate() {
                images
                    .insert(image_key(id, 0, c as u16), chunk)
                    .expect("insert");
            }
            ob.db
                .insert(META_FORMAT_KEY, &1u32.to_be_bytes())
                .expect("v1");
            ob.db.remove(META_KEY_CHECK).expect("no check");
            ob.db.flush().expect("flush");
            id
        };
        let ob = open(dir.path(), &FakeClock::new(0), BIG);
        assert_eq!(ob.images(id).expect("readable"), vec![plain.clone()]);
        let stored = ob.files.read(id, 1).expect("moved to its file");
        assert_eq!(stored[0].len(), plain.len() + crate::queue::seal::OVERHEAD);
        assert!(!stored[0].windows(64).any(|w| w == &plain[..64]));
        assert!(ob.db.open_tree("images").expect("tree").is_empty());
        let v = ob.db.get(META_FORMAT_KEY).expect("get").expect("present");
        assert_eq!(v.as_ref(), FORMAT_VERSION.to_be_bytes());
        drop(ob);
        // Opening again changes nothing.
        assert_eq!(
            open(dir.path(), &FakeClock::new(0), BIG)
                .images(id)
                .expect("again"),
            vec![plain]
        );
    }

    #[test]
    fn another_key_is_refused_and_the_queue_is_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = open(dir.path(), &FakeClock::new(0), BIG)
            .enqueue(new("kept", vec![9; 1000]))
            .expect("enqueue")
            .id;
        let other = QueueKey::from_encoded(&[8; 32]).expect("key");
        let err = Outbox::open(dir.path(), BIG, Arc::new(FakeClock::new(0)), other)
            .expect_err("wrong key");
        assert_eq!(err.code(), "wrong_queue_key");
        assert!(err.to_string().contains("nothing was changed"), "{err}");
        let ob = open(dir.path(), &FakeClock::new(0), BIG);
        assert_eq!(ob.images(id).expect("intact"), vec![vec![9; 1000]]);
    }

    #[test]
    fn large_images_round_trip_through_their_file_and_every_blob_file_is_synced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ob = open(dir.path(), &FakeClock::new(0), BIG);
        let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
        let e = ob.enqueue(new("big", big.clone())).expect("enqueue");
        assert_eq!(ob.images(e.id).expect("images"), vec![big]);
        assert_eq!(ob.files.ids().expect("files"), vec![e.id]);
        let blobs = || -> std::collections::HashSet<_> {
            std::fs::read_dir(dir.path().join("outbox").join("blobs"))
                .map(|d| d.flatten().map(|e| e.file_name()).collect())
                .unwrap_or_default()
        };
        assert!(blobs().is_empty(), "the images are not in sled");
        // A page over ~128 KiB (a queue written with 64 KiB chunks) goes to
        // a blob file: it is synced with the next durable write.
        ob.entries
            .insert(u64::MAX.to_be_bytes(), vec![7; 300_000])
            .expect("a large value");
        ob.persist().expect("persist");
        let written = blobs();
        assert!(!written.is_empty(), "premise: sled wrote a blob file");
        let synced = ob.synced_blobs.lock().expect("lock").clone();
        assert!(
            written.is_subset(&synced),
            "unsynced blob files: {written:?} vs {synced:?}"
        );
        ob.entries.remove(u64::MAX.to_be_bytes()).expect("remove");
        ob.purge(e.id).expect("purge");
        assert!(
            ob.files.ids().expect("files").is_empty(),
            "the file is removed"
        );
    }

    /// Format 2 kept each image sealed in sled, in chunks of 4 KiB (64 KiB
    /// in older releases); opening moves them to image files, and a move
    /// cut short (one file already written) is finished.
    #[test]
    fn a_format_2_queue_moves_its_images_to_files_when_opened() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a: Vec<u8> = (0..150_000u32).map(|i| (i % 241) as u8).collect();
        let b = vec![5u8; 70_000];
        let (ida, idb) = {
            let ob = open(dir.path(), &FakeClock::new(0), BIG);
            let ida = ob.enqueue(new("a", a.clone())).expect("enqueue").id;
            let idb = ob.enqueue(new("b", b.clone())).expect("enqueue").id;
            let images = ob.db.open_tree("images").expect("tree");
            for (id, chunk) in [(ida, CHUNK_BYTES), (idb, 64 * 1024)] {
                let sealed = ob.files.read(id, 1).expect("sealed").remove(0);
                for (c, part) in sealed.chunks(chunk).enumerate() {
                    images
                        .insert(image_key(id, 0, c as u16), part)
                        .expect("insert");
                }
            }
            // The move had written `a`'s file when it was cut short.
            ob.files.remove(idb).expect("no file yet");
            ob.db
                .insert(META_FORMAT_KEY, &2u32.to_be_bytes())
                .expect("v2");
            ob.db.flush().expect("flush");
            (ida, idb)
        };
        let ob = open(dir.path(), &FakeClock::new(0), BIG);
        assert_eq!(ob.images(ida).expect("a"), vec![a]);
        assert_eq!(ob.images(idb).expect("b"), vec![b]);
        assert_eq!(ob.files.ids().expect("files"), vec![ida, idb]);
        assert!(ob.db.open_tree("images").expect("tree").is_empty());
        let v = ob.db.get(META_FORMAT_KEY).expect("get").expect("present");
        assert_eq!(v.as_ref(), FORMAT_VERSION.to_be_bytes());
        assert!(ob.check().expect("check").problems.is_empty());
    }

    /// An image file that went missing is written again from the spool at
    /// the next open, so the entry has two copies again.
    #[test]
    fn a_missing_image_file_is_written_again_from_the_spool_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = {
            let ob = open(dir.path(), &FakeClock::new(0), BIG);
            let id = ob.enqueue(new("m", vec![6; 9_000])).expect("enqueue").id;
            std::fs::remove_file(dir.path().join("images").join(format!("{id}.img")))
                .expect("lost");
            assert!(ob.check().expect("check").problems[0].contains("spool copy is intact"));
            id
        };
        let ob = open(dir.path(), &FakeClock::new(0), BIG);
        let report = ob.check().expect("check");
        assert_eq!((report.entries, report.healthy), (1, 1), "{report:?}");
        assert_eq!(ob.files.read(id, 1).expect("written again").len(), 1);
    }

    /// An image file left without an entry (an enqueue cut short before its
    /// record, or a removal whose unlink did not happen) is removed at open.
    #[test]
    fn an_image_file_without_an_entry_is_removed_at_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kept = {
            let ob = open(dir.path(), &FakeClock::new(0), BIG);
            let kept = ob.enqueue(new("k", vec![1; 5_000])).expect("enqueue").id;
            ob.files
                .seal_and_write(&ob.key, kept + 1, &[&[2u8; 5_000][..]])
                .expect("an orphan");
            kept
        };
        let ob = open(dir.path(), &FakeClock::new(0), BIG);
        assert_eq!(ob.files.ids().expect("files"), vec![kept]);
        assert_eq!(ob.images(kept).expect("kept"), vec![vec![1; 5_000]]);
    }

    #[test]
    fn a_damaged_image_is_reported_not_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ob = open(dir.path(), &FakeClock::new(0), BIG);
        let e = ob.enqueue(new("p", vec![7; 100_000])).expect("enqueue");
        let file = dir.path().join("images").join(format!("{}.img", e.id));
        let mut bytes = std::fs::read(&file).expect("read");
        bytes[50_000] ^= 0x01;
        std::fs::write(&file, bytes).expect("damage");
        // The spool copy stands in for the store's.
        assert_eq!(ob.images(e.id).expect("spool copy"), vec![vec![7; 100_000]]);
        let report = ob.check().expect("check");
        assert_eq!((report.entries, report.healthy), (1, 0));
        assert!(report.lost.is_empty() && report.problems[0].contains("spool copy is intact"));
        // Both copies damaged: an error, never wrong bytes.
        let copy = dir.path().join("spool").join(format!("{}.entry", e.id));
        let mut bytes = std::fs::read(&copy).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&copy, bytes).expect("write");
        assert_eq!(
            ob.images(e.id).expect_err("damaged").code(),
            "corrupt_entry"
        );
        assert_eq!(ob.check().expect("check").lost, vec![e.id]);
    }

    /// The upload progress moved into a type of the cloud clients; the
    /// record on the device keeps the fields where earlier releases wrote
    /// them, so a queue written by either reads back the same.
    #[test]
    fn upload_progress_is_stored_in_the_records_shape_of_earlier_releases() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(5_000);
        let ob = open(dir.path(), &clock, BIG);
        let mut e = ob.enqueue(new("p", vec![3; 1_000])).expect("enqueue");
        e.progress.outcome_unknown = true;
        e.progress.done_images = vec![0];
        e.progress.face_ids_before = Some(vec!["f1".into()]);
        let v = serde_json::to_value(&e).expect("json");
        assert!(v.get("progress").is_none(), "{v}");
        assert_eq!(v["outcome_unknown"], true);
        assert_eq!(v["done_images"], serde_json::json!([0]));
        assert_eq!(v["face_ids_before"], serde_json::json!(["f1"]));
        assert_eq!(v["uploaded_face_ids"], serde_json::json!([]));
        let mut old = v.clone();
        let fields = old.as_object_mut().expect("object");
        fields.remove("uploaded_face_ids");
        let back: Enrollment = serde_json::from_value(old).expect("a record without a field");
        assert_eq!(back, e, "missing progress fields default as before");
    }

    #[test]
    fn a_crash_between_the_receipt_and_the_removal_is_finished_at_the_next_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(5_000);
        let (id, kept) = {
            let ob = open(dir.path(), &clock, BIG);
            let done = ob.enqueue(new("p", vec![3; 200_000])).expect("enqueue");
            let kept = ob.enqueue(new("q", vec![4; 1_000])).expect("enqueue").id;
            let claimed = ob.claim(done.id).expect("claim");
            // What `complete_as` has written when the power goes: the
            // receipt, the entry in flight, its spool copy gone, its image
            // file still there.
            let receipt = serde_json::to_vec(&Receipt {
                id: claimed.id,
                person_id: "p".into(),
                provider: Provider::Jd,
                group: claimed.group.clone(),
                face_ids: vec!["f".into()],
                created_at_ms: 5_000,
                uploaded_at_ms: 6_000,
                attempts: 1,
                created_boot: None,
                uploaded_boot: None,
                consent: None,
                created_person: false,
            })
            .expect("json");
            ob.receipts
                .insert(claimed.id.to_be_bytes(), receipt)
                .expect("receipt");
            ob.drop_copy(claimed.id);
            ob.persist().expect("persist");
            (claimed.id, kept)
        };
        let (ob, rec) =
            Outbox::open(dir.path(), BIG, Arc::new(clock.clone()), test_key()).expect("reopens");
        assert_eq!(rec.requeued, 0, "an uploaded entry is not sent again");
        assert!(matches!(ob.get(id), Err(OutboxError::NotFound(_))));
        assert!(
            !ob.files.ids().expect("files").contains(&id),
            "the image file goes"
        );
        assert_eq!(ob.receipts().expect("receipts").len(), 1);
        assert_eq!(ob.usage().entries, 1);
        let other = ob.get(kept).expect("the other entry");
        assert_eq!(
            ob.stored_images(&other).expect("its image"),
            vec![vec![4; 1_000]]
        );
        assert!(!ob.spool.ids().expect("spool").contains(&id));
    }

    #[test]
    fn complete_swaps_the_entry_for_a_receipt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(5_000);
        let ob = open(dir.path(), &clock, BIG);
        let e = ob.enqueue(new("p", vec![3; 200_000])).expect("enqueue");
        let mut claimed = ob.claim(e.id).expect("claim");
        claimed.progress.face_ids_before = Some(vec!["old".into()]);
        claimed.progress.done_images = vec![0];
        ob.save_progress(&claimed).expect("progress");
        assert_eq!(
            ob.get(e.id).expect("get").progress.face_ids_before,
            Some(vec!["old".into()])
        );
        clock.set(9_000);
        let r = ob.complete(e.id, &["face-1".into()]).expect("complete");
        assert_eq!(
            (r.person_id.as_str(), r.uploaded_at_ms, r.attempts),
            ("p", 9_000, 1)
        );
        assert!(matches!(ob.get(e.id), Err(OutboxError::NotFound(_))));
        assert!(
            ob.files.ids().expect("files").is_empty(),
            "the image is deleted from the device"
        );
        assert_eq!(ob.usage().entries, 0);
        assert_eq!(ob.receipts().expect("receipts"), vec![r]);
        assert_eq!(ob.purge_receipts_before(9_000).expect("purge"), 0);
        assert_eq!(ob.purge_receipts_before(9_001).expect("purge"), 1);
        assert!(ob.receipts().expect("receipts").is_empty());
    }

    fn consent() -> Consent {
        Consent {
            reference: "form-7".into(),
            via: crate::model::ConsentVia::CommandLine { uid: 1000 },
            at_ms: 5_000,
            notice_sha256: None,
            scope: crate::model::ConsentScope {
                provider: Provider::Jd,
                region: String::new(),
                group: "g".into(),
            },
        }
    }

    #[test]
    fn the_consent_is_sealed_to_its_entry_kept_in_the_receipt_and_in_the_ledger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(5_000);
        let ob = open(dir.path(), &clock, BIG);
        let e = ob
            .enqueue(NewEnrollment {
                consent: Some(consent()),
                ..new("p", vec![3; 100])
            })
            .expect("enqueue");
        let sealed = e.consent.clone().expect("sealed");
        assert!(!sealed.0.contains("form-7"), "sealed, not in the clear");
        assert_eq!(ob.open_consent(e.id, &sealed).expect("opens"), consent());
        assert!(
            ob.open_consent(e.id + 1, &sealed).is_err(),
            "bound to its entry"
        );
        ob.claim(e.id).expect("claim");
        let r = ob.complete(e.id, &["f1".into()]).expect("complete");
        assert_eq!(
            ob.open_consent(r.id, &r.consent.expect("kept"))
                .expect("opens"),
            consent()
        );
        let events: Vec<&str> = ob
            .ledger()
            .read(&crate::queue::ledger::LedgerFilter::default())
            .expect("ledger")
            .records
            .iter()
            .map(|r| r.event.name())
            .collect();
        assert_eq!(events, ["consent_given", "queued", "uploaded"]);
    }

    #[test]
    fn forget_destroys_the_person_at_once_and_queues_a_delete_that_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(5_000);
        let ob = open(dir.path(), &clock, BIG);
        let uploaded = ob.enqueue(new("p", vec![1; 100])).expect("enqueue");
        ob.claim(uploaded.id).expect("claim");
        ob.complete(uploaded.id, &["f1".into()]).expect("complete");
        let queued = ob.enqueue(new("p", vec![2; 100])).expect("enqueue");
        let flying = ob.enqueue(new("p", vec![3; 100])).expect("enqueue");
        let other = ob.enqueue(new("q", vec![4; 100])).expect("enqueue");
        ob.claim(flying.id).expect("claim");
        let report = ob.forget("p").expect("forget");
        assert_eq!(report.destroyed, vec![queued.id]);
        assert_eq!(report.in_flight, vec![flying.id]);
        assert_eq!(report.receipts, vec![uploaded.id]);
        assert_eq!(report.cloud.len(), 1);
        let task = report.cloud[0].entry;
        assert!(matches!(ob.get(queued.id), Err(OutboxError::NotFound(_))));
        let files = ob.files.ids().expect("files");
        assert!(!files.contains(&queued.id));
        assert!(!files.contains(&flying.id), "in-flight images go at once");
        assert!(files.contains(&other.id));
        assert!(ob.get(flying.id).expect("still in flight").withdrawn);
        assert!(ob.claim(other.id).is_ok(), "another person is untouched");
        // The upload in flight fails: it is not tried again, it is gone.
        ob.reschedule(flying.id, 0, None, true).expect("ends");
        assert!(matches!(ob.get(flying.id), Err(OutboxError::NotFound(_))));
        assert!(
            ob.get(task).expect("task").progress.outcome_unknown,
            "its unknown outcome goes to the delete"
        );
        drop(ob);
        // A crash now: the delete is durable, nothing of p comes back.
        let ob = open(dir.path(), &clock, BIG);
        let left: Vec<(u64, Task)> = ob
            .list()
            .expect("list")
            .iter()
            .map(|e| (e.id, e.task))
            .collect();
        assert_eq!(left, vec![(other.id, Task::Enroll), (task, Task::Forget)]);
        ob.complete_forget(
            task,
            &[uploaded.id],
            &crate::model::CloudDeletion {
                how: "DeletePerson".into(),
                face_ids: vec!["f1".into()],
                manual: false,
            },
        )
        .expect("done");
        assert!(ob.receipts().expect("receipts").is_empty());
        let events: Vec<&str> = ob
            .ledger()
            .read(&crate::queue::ledger::LedgerFilter {
                person: Some("p".into()),
                since_ms: None,
            })
            .expect("ledger")
            .records
            .iter()
            .map(|r| r.event.name())
            .collect();
        assert_eq!(
            events,
            [
                "queued",
                "uploaded",
                "queued",
                "queued",
                "withdrawn",
                "purged",
                "deleted_in_cloud"
            ]
        );
        // Nothing uploaded, nothing to delete in the cloud.
        ob.enqueue(new("r", vec![5; 100])).expect("enqueue");
        assert!(ob.forget("r").expect("forget").cloud.is_empty());
    }

    #[test]
    fn incremental_usage_matches_a_full_scan() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(1_000);
        let ob = open(dir.path(), &clock, BIG);
        let check = |ob: &Outbox| assert_eq!(ob.usage(), ob.scan_usage().expect("scan"));
        let mut ids = Vec::new();
        for i in 0..6u8 {
            clock.advance(10);
            ids.push(
                ob.enqueue(new(&format!("p{i}"), vec![i; 100 + usize::from(i)]))
                    .expect("enqueue")
                    .id,
            );
            check(&ob);
        }
        ob.claim(ids[0]).expect("claim");
        check(&ob);
        ob.reschedule(ids[0], 99_999, None, true)
            .expect("reschedule");
        check(&ob);
        ob.claim(ids[1]).expect("claim");
        ob.complete(ids[1], &[]).expect("complete");
        check(&ob);
        ob.mark_dead(ids[2], "x", None).expect("dead");
        check(&ob);
        ob.purge(ids[3]).expect("purge");
        check(&ob);
        ob.retry(ids[2]).expect("retry");
        check(&ob);
        ob.purge_dead().expect("purge dead");
        check(&ob);
        assert_eq!(ob.usage().oldest_pending_ms, Some(1_010));
    }

    #[test]
    fn in_flight_entries_cannot_be_purged() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ob = open(dir.path(), &FakeClock::new(0), BIG);
        let e = ob.enqueue(new("p", vec![1])).expect("enqueue");
        ob.claim(e.id).expect("claim");
        assert_eq!(
            ob.purge(e.id).expect_err("in flight").code(),
            "invalid_state"
        );
        assert_eq!(ob.claim(e.id).expect_err("twice").code(), "invalid_state");
    }
}
