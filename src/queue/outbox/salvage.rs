//! Rebuilding a damaged queue store (an SD card that rotted a byte).
//!
//! 1. The damaged store (`state_dir/outbox`) is moved aside, whole, to
//!    `state_dir/damaged-<unix ms>`: nothing is deleted.
//! 2. A scratch copy of it is opened without its snapshot and settings file
//!    (sled then replays its log up to the damage) and every record that still reads
//!    back, with images that pass their checksums, is kept with its state.
//! 3. A new store is made; the kept entries and receipts go in, then every
//!    spool copy of an entry the store lost (see [`crate::queue::spool`]), as
//!    pending with its outcome unknown, so the cloud is asked before the
//!    enrollment is sent again.
//! 4. The report (kept, lost by id, where the damaged files went) is stored
//!    in the new store, logged, and shown by `status` and `queue check`.
//!
//! An entry is lost only when both its store record and its spool copy are
//! damaged.

use super::files::ImageFiles;
use super::{
    image_aad, images_match, read_chunks, Outbox, OutboxError, OutboxLimits, Recovery,
    SalvageReport,
};
use crate::clock::Clock;
use crate::model::Enrollment;
use crate::queue::seal::QueueKey;
use crate::queue::spool::Spool;
use std::path::Path;
use std::sync::Arc;

/// What could be read back from the damaged store.
#[derive(Default)]
struct Readable {
    /// Entries, with their images when those passed their checksums.
    entries: Vec<(Enrollment, Option<Vec<Vec<u8>>>)>,
    receipts: Vec<(Vec<u8>, Vec<u8>)>,
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for item in std::fs::read_dir(from)? {
        let item = item?;
        let target = to.join(item.file_name());
        if item.file_type()?.is_dir() {
            copy_dir(&item.path(), &target)?;
        } else {
            std::fs::copy(item.path(), target)?;
        }
    }
    Ok(())
}

/// Opens a scratch copy of the damaged store, less its snapshot and
/// settings file, and reads
/// what it can. Errors end a tree's reading; panics (sled on some damage)
/// give up on the store: the spool still has every entry.
fn read_damaged(damaged: &Path, scratch: &Path, key: &QueueKey, files: &ImageFiles) -> Readable {
    let _ = std::fs::remove_dir_all(scratch);
    if let Err(e) = copy_dir(damaged, scratch) {
        log::error!("outbox salvage: cannot copy {}: {e}", damaged.display());
        return Readable::default();
    }
    if let Ok(listing) = std::fs::read_dir(scratch) {
        for item in listing.flatten() {
            // The snapshot and the settings file are rebuilt by sled (the
            // queue uses sled's default settings); the log is what holds data.
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with("snap.") || name == "conf" {
                let _ = std::fs::remove_file(item.path());
            }
        }
    }
    let read = std::panic::catch_unwind(|| -> Result<Readable, sled::Error> {
        let db = sled::Config::new().path(scratch).open()?;
        let entries = db.open_tree("entries")?;
        let images = db.open_tree("images")?;
        let receipts = db.open_tree("receipts")?;
        let mut out = Readable::default();
        for item in entries.iter() {
            let Ok((_, value)) = item else { break };
            let Ok(entry) = serde_json::from_slice::<Enrollment>(&value) else {
                continue;
            };
            let imgs = read_images(files, &images, key, &entry);
            out.entries.push((entry, imgs));
        }
        for item in receipts.iter() {
            let Ok((k, v)) = item else { break };
            out.receipts.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    });
    let _ = std::fs::remove_dir_all(scratch);
    match read {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            log::error!(
                "outbox salvage: the damaged store does not open even without its snapshot: {e}"
            );
            Readable::default()
        }
        Err(_) => {
            log::error!("outbox salvage: sled panicked reading the damaged store");
            Readable::default()
        }
    }
}

/// An entry's images from its image file, or from the damaged store's
/// image tree (a store of format 2), if all pass their checks.
fn read_images(
    files: &ImageFiles,
    tree: &sled::Tree,
    key: &QueueKey,
    entry: &Enrollment,
) -> Option<Vec<Vec<u8>>> {
    let open = |sealed: Vec<Vec<u8>>| -> Option<Vec<Vec<u8>>> {
        let out = sealed
            .iter()
            .enumerate()
            .map(|(i, s)| key.open(&image_aad(entry.id, i as u8), s).ok())
            .collect::<Option<Vec<_>>>()?;
        images_match(entry, &out).then_some(out)
    };
    if let Some(out) = files.read(entry.id, entry.images.len()).ok().and_then(open) {
        return Some(out);
    }
    let sealed = entry
        .images
        .iter()
        .enumerate()
        .map(|(i, meta)| read_chunks(tree, entry.id, i as u8, meta.len).ok())
        .collect::<Option<Vec<_>>>()?;
    open(sealed)
}

/// Moves the damaged store aside and builds a new one from what is
/// readable in it and from the spool.
pub(super) fn rebuild(
    state_dir: &Path,
    limits: OutboxLimits,
    clock: Arc<dyn Clock>,
    key: QueueKey,
    why: &str,
) -> Result<(Outbox, Recovery), OutboxError> {
    let store = state_dir.join("outbox");
    let at_ms = clock.now_ms();
    let moved_to = state_dir.join(format!("damaged-{at_ms}"));
    log::error!(
        "outbox: the store is damaged ({why}); moving it to {} and rebuilding the queue",
        moved_to.display()
    );
    std::fs::rename(&store, &moved_to).map_err(|e| {
        OutboxError::Damaged(format!(
            "{why}; and it cannot be moved aside to {}: {e}",
            moved_to.display()
        ))
    })?;
    let readable = read_damaged(
        &moved_to,
        &state_dir.join("salvage.tmp"),
        &key,
        &ImageFiles::new(state_dir),
    );
    let spool = Spool::new(state_dir);
    let (outbox, _) = Outbox::open_store(state_dir, limits, clock, key.clone())?;

    let mut report = SalvageReport {
        at_ms,
        why: why.to_string(),
        moved_to,
        kept_from_store: 0,
        kept_from_spool: 0,
        receipts_kept: 0,
        lost: Vec::new(),
    };
    let mut done = std::collections::BTreeSet::new();
    for (entry, images) in &readable.entries {
        let copy = spool
            .read(&key, entry.id)
            .ok()
            .map(|(_, i)| i)
            .filter(|i| images_match(entry, i));
        let copy_intact = copy.is_some();
        match images.clone().or(copy) {
            Some(images) => {
                outbox.restore(entry, &images, copy_intact)?;
                report.kept_from_store += 1;
            }
            None => {
                log::error!(
                    "outbox salvage: entry {} ({}) lost: its images are damaged in the store and the spool",
                    entry.id,
                    entry.person_id
                );
                report.lost.push(entry.id);
            }
        }
        done.insert(entry.id);
    }
    let ids = spool.ids().unwrap_or_default();
    for id in ids.into_iter().filter(|id| !done.contains(id)) {
        if outbox.restore_from_spool(id)? {
            report.kept_from_spool += 1;
        } else {
            report.lost.push(id);
        }
    }
    for (k, v) in &readable.receipts {
        outbox.restore_receipt(k, v)?;
        report.receipts_kept += 1;
    }
    report.lost.sort_unstable();
    report.lost.dedup();
    let recovery = outbox.finish_restore(&report)?;
    log::error!(
        "outbox salvage: kept {} entries from the store and {} from the spool, {} receipts; lost {} {:?}; \
         the damaged files are in {}",
        report.kept_from_store,
        report.kept_from_spool,
        report.receipts_kept,
        report.lost.len(),
        report.lost,
        report.moved_to.display()
    );
    Ok((outbox, recovery))
}
