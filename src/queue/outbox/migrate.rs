//! Upgrading a queue written by an older enrolld, in place and resumably.

use super::*;

/// Every entry whose record reads, with its id (others are left as they
/// are: `recover` reports them).
fn readable_entries(entries: &sled::Tree) -> Result<Vec<(u64, Enrollment)>, OutboxError> {
    let mut out = Vec::new();
    for item in entries.iter() {
        let (k, value) = item.map_err(storage_error)?;
        if let (Some(id), Ok(entry)) = (
            id_from_key(&k),
            serde_json::from_slice::<Enrollment>(&value),
        ) {
            out.push((id, entry));
        }
    }
    Ok(out)
}

/// Format 1 -> 2: seals every image stored in the clear, one entry per
/// transaction (an interrupted migration resumes: images that already open
/// with the key are left as they are).
pub(super) fn migrate_seal_images(
    entries: &sled::Tree,
    images: &sled::Tree,
    key: &QueueKey,
) -> Result<(), OutboxError> {
    let mut sealed_entries = 0u64;
    for (id, entry) in readable_entries(entries)? {
        let mut rewrite = Vec::new();
        for (i, meta) in entry.images.iter().enumerate() {
            let stored = read_chunks(images, id, i as u8, meta.len)?;
            if key.open(&image_aad(id, i as u8), &stored).is_ok() {
                continue;
            }
            if stored.len() as u64 != meta.len || sha256_hex(&stored) != meta.sha256 {
                log::error!("outbox entry {id}: image {i} is unreadable; left in place");
                continue;
            }
            let sealed = key
                .seal(&image_aad(id, i as u8), &stored)
                .map_err(|e| OutboxError::Storage(e.to_string()))?;
            let old_keys = images
                .scan_prefix(image_prefix(id, i as u8))
                .keys()
                .collect::<Result<Vec<_>, _>>()
                .map_err(storage_error)?;
            rewrite.push((i as u8, sealed, old_keys));
        }
        if rewrite.is_empty() {
            continue;
        }
        images
            .transaction(|tx| {
                for (i, sealed, old_keys) in &rewrite {
                    for k in old_keys {
                        tx.remove(k)?;
                    }
                    for (c, chunk) in sealed.chunks(CHUNK_BYTES).enumerate() {
                        tx.insert(&image_key(id, *i, c as u16), chunk)?;
                    }
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<OutboxError>>(())
            })
            .map_err(tx_error)?;
        sealed_entries += 1;
    }
    if sealed_entries > 0 {
        log::info!(
            "outbox: sealed the images of {sealed_entries} entr(ies) queued by an older enrolld"
        );
    }
    Ok(())
}

/// Format 2 -> 3: every entry's images move from sled's tree `images` to
/// its image file (see [`super::files`]), sealed bytes as they are. Each
/// file is durable before the format is recorded and the tree cleared (by
/// `open_store`); a migration cut short starts again, and an entry whose
/// file already holds its images, or whose chunks are gone, is left as it
/// is.
pub(super) fn move_images_to_files(
    entries: &sled::Tree,
    images: &sled::Tree,
    files: &files::ImageFiles,
) -> Result<(), OutboxError> {
    if images.is_empty() {
        return Ok(());
    }
    let mut moved = 0u64;
    for (id, entry) in readable_entries(entries)? {
        if entry.images.is_empty() || files.read_raw(id, entry.images.len()).is_ok() {
            continue;
        }
        let mut sealed = Vec::with_capacity(entry.images.len());
        for (i, meta) in entry.images.iter().enumerate() {
            sealed.push(read_chunks(images, id, i as u8, meta.len)?);
        }
        if sealed.iter().all(Vec::is_empty) {
            log::error!("outbox entry {id}: no stored image to move; left to its spool copy");
            continue;
        }
        files.write(id, &sealed)?;
        moved += 1;
    }
    if moved > 0 {
        log::info!("outbox: moved the images of {moved} entr(ies) from the store to image files");
    }
    Ok(())
}
