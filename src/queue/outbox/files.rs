//! The store's copy of each entry's images: one file per entry in
//! `state_dir/images/<id>.img`, beside sled rather than inside it.
//!
//! In sled, an image cost the drain twice: every open replayed each image
//! written since sled's last snapshot (sled 0.34 snapshots only when it
//! opens: 17.5 MB of log read and indexed after 100 enqueues), and removing
//! an uploaded image rewrote the leaves its chunks shared with the next
//! image's. A file is written once, read once and unlinked once; sled keeps
//! the small records (entries, receipts) it is good at.
//!
//! A file holds the images sealed one by one with the queue key, each bound
//! to its entry and index (`image_aad`), framed as
//! `"EIMG" 1 <count: u8> (<len: u32 BE> <sealed bytes>)*`. A flipped byte
//! costs that file only; the spool (`crate::queue::spool`) holds the
//! second copy, in another directory.
//!
//! Lifecycle (`Outbox`): the file is written and fsynced, with its
//! directory, before the entry's record goes into sled; it is unlinked only
//! once sled's removal of the entry is durable (an unlink is durable sooner
//! than sled's log, so a crash must not find a live entry without its file);
//! a file without an entry (a crash between the two) is removed at open.

use super::{image_aad, io_error, OutboxError};
use crate::queue::seal::QueueKey;
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 4] = b"EIMG";
const VERSION: u8 = 1;

/// The image files of a state directory.
#[derive(Debug, Clone)]
pub(crate) struct ImageFiles {
    dir: PathBuf,
}

impl ImageFiles {
    pub(crate) fn new(state_dir: &Path) -> ImageFiles {
        ImageFiles {
            dir: state_dir.join("images"),
        }
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.img"))
    }

    /// Writes an entry's sealed images and makes the file and its name
    /// durable. An entry without images has no file.
    pub(crate) fn write(&self, id: u64, sealed: &[Vec<u8>]) -> Result<(), OutboxError> {
        if sealed.is_empty() {
            return Ok(());
        }
        let count = u8::try_from(sealed.len())
            .map_err(|_| OutboxError::InvalidRequest("too many images".into()))?;
        let mut buf = Vec::with_capacity(6 + sealed.iter().map(|s| s.len() + 4).sum::<usize>());
        buf.extend_from_slice(MAGIC);
        buf.push(VERSION);
        buf.push(count);
        for s in sealed {
            let len = u32::try_from(s.len())
                .map_err(|_| OutboxError::InvalidRequest("image too large".into()))?;
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(s);
        }
        let err = |e| io_error(&self.dir, e);
        {
            use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&self.dir)
                .map_err(err)?;
            let path = self.path(id);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| io_error(&path, e))?;
            f.write_all(&buf)
                .and_then(|()| f.sync_all())
                .map_err(|e| io_error(&path, e))?;
        }
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(err)
    }

    /// Seals and writes an entry's images (see [`ImageFiles::write`]).
    pub(crate) fn seal_and_write(
        &self,
        key: &QueueKey,
        id: u64,
        images: &[&[u8]],
    ) -> Result<(), OutboxError> {
        let sealed = images
            .iter()
            .enumerate()
            .map(|(i, img)| key.seal(&image_aad(id, i as u8), img))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| OutboxError::Storage(e.to_string()))?;
        self.write(id, &sealed)
    }

    /// The sealed images of entry `id`, `count` of them, as stored: one
    /// buffer (the file) and where in it each image is. A missing, short or
    /// misframed file is `Corrupt` (the spool's copy is then used).
    pub(crate) fn read_raw(
        &self,
        id: u64,
        count: usize,
    ) -> Result<(Vec<u8>, Vec<std::ops::Range<usize>>), OutboxError> {
        let path = self.path(id);
        let corrupt = |why: String| OutboxError::Corrupt {
            id,
            why: format!("{}: {why}", path.display()),
        };
        let bytes = std::fs::read(&path).map_err(|e| corrupt(e.to_string()))?;
        let header = bytes.get(..6).ok_or_else(|| corrupt("too short".into()))?;
        if &header[..4] != MAGIC || header[4] != VERSION || header[5] as usize != count {
            return Err(corrupt(format!(
                "not an image file of {count} image(s) this release reads"
            )));
        }
        let mut at = 6;
        let mut ranges = Vec::with_capacity(count);
        for i in 0..count {
            let short = || corrupt(format!("image {i} is cut short"));
            let len = bytes
                .get(at..at + 4)
                .and_then(|l| l.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or_else(short)? as usize;
            let body = at + 4..at + 4 + len;
            if body.end > bytes.len() {
                return Err(short());
            }
            at = body.end;
            ranges.push(body);
        }
        if at != bytes.len() {
            return Err(corrupt("has bytes after its last image".into()));
        }
        Ok((bytes, ranges))
    }

    /// [`ImageFiles::read_raw`], each sealed image in a buffer of its own.
    pub(crate) fn read(&self, id: u64, count: usize) -> Result<Vec<Vec<u8>>, OutboxError> {
        let (bytes, ranges) = self.read_raw(id, count)?;
        Ok(ranges.into_iter().map(|r| bytes[r].to_vec()).collect())
    }

    /// Unlinks an entry's file; a missing one is not an error.
    pub(crate) fn remove(&self, id: u64) -> std::io::Result<()> {
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The ids that have a file, in order (other names are left alone).
    pub(crate) fn ids(&self) -> std::io::Result<Vec<u64>> {
        crate::queue::spool::ids_in(&self.dir, ".img", |_, _| {})
    }
}
