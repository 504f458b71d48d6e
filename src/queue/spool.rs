//! A second copy of every queued enrollment, one sealed file per entry in
//! `state_dir/spool/`, written (and fsynced) before the entry is
//! acknowledged and deleted once it is uploaded or purged.
//!
//! sled keeps its data in one log: a single damaged byte there makes sled
//! stop reading at that point, and every entry written after it would be
//! lost with it. The spool is what the outbox rebuilds from when its store
//! is damaged (see `Outbox::open`), and where an image that fails its
//! checksum in the store is read from. Files are independent: a damaged
//! byte costs at most the entry it belongs to, and only if the store lost
//! that entry too.

use crate::model::Enrollment;
use crate::queue::seal::QueueKey;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What one spool file holds (sealed with the queue key, bound to its id).
#[derive(Serialize, Deserialize)]
struct SpoolRecord {
    entry: Enrollment,
    /// The images in the clear (inside the sealed file), base64.
    images: Vec<String>,
}

/// The spool directory of a state directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
}

fn aad(id: u64) -> Vec<u8> {
    let mut a = b"enrolld spool ".to_vec();
    a.extend_from_slice(&id.to_be_bytes());
    a
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

impl Spool {
    pub fn new(state_dir: &Path) -> Spool {
        Spool {
            dir: state_dir.join("spool"),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.entry"))
    }

    /// Writes and commits the copy of an entry (see [`Spool::stage`]).
    pub fn write(
        &self,
        key: &QueueKey,
        entry: &Enrollment,
        images: &[&[u8]],
    ) -> std::io::Result<()> {
        self.stage(key, entry, images)?;
        self.commit(entry.id)
    }

    /// Writes the copy of an entry not yet acknowledged (`<id>.tmp`,
    /// fsynced). Only [`Spool::commit`], once the store has the entry,
    /// makes it a copy; a crash before leaves a `.tmp` that the next open
    /// removes, so an enrollment never acknowledged never comes back.
    pub fn stage(
        &self,
        key: &QueueKey,
        entry: &Enrollment,
        images: &[&[u8]],
    ) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let record = SpoolRecord {
            entry: entry.clone(),
            images: images
                .iter()
                .map(|i| base64::engine::general_purpose::STANDARD.encode(i))
                .collect(),
        };
        let plain = serde_json::to_vec(&record).map_err(std::io::Error::other)?;
        let sealed = key
            .seal(&aad(entry.id), &plain)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let tmp = self.dir.join(format!("{}.tmp", entry.id));
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&sealed)?;
        f.sync_all()
    }

    /// Makes a staged copy the entry's copy, durably.
    pub fn commit(&self, id: u64) -> std::io::Result<()> {
        std::fs::rename(self.dir.join(format!("{id}.tmp")), self.path(id))?;
        sync_dir(&self.dir)
    }

    /// Moves a damaged copy aside (`<id>.damaged`), so it is reported once.
    pub fn set_aside(&self, id: u64) {
        let _ = std::fs::rename(self.path(id), self.dir.join(format!("{id}.damaged")));
    }

    /// Removes the copy (staged or committed) of an entry gone from the queue.
    pub fn remove(&self, id: u64) -> std::io::Result<()> {
        // A committed copy has no staged one beside it (commit renames it).
        for path in [self.path(id), self.dir.join(format!("{id}.tmp"))] {
            match std::fs::remove_file(path) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The entry and its images, if the file is there and intact.
    pub fn read(&self, key: &QueueKey, id: u64) -> Result<(Enrollment, Vec<Vec<u8>>), String> {
        let path = self.path(id);
        let sealed = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let plain = key
            .open(&aad(id), &sealed)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let record: SpoolRecord =
            serde_json::from_slice(&plain).map_err(|e| format!("{}: {e}", path.display()))?;
        if record.entry.id != id {
            return Err(format!(
                "{}: holds entry {}",
                path.display(),
                record.entry.id
            ));
        }
        let images = record
            .images
            .iter()
            .map(|b| base64::engine::general_purpose::STANDARD.decode(b))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok((record.entry, images))
    }

    /// The ids that have a committed copy, in order; staged copies left by
    /// a crash (`*.tmp`, never acknowledged) are removed. Call at open only.
    pub fn ids(&self) -> std::io::Result<Vec<u64>> {
        ids_in(&self.dir, ".entry", |path, name| {
            if name.ends_with(".tmp") {
                let _ = std::fs::remove_file(path);
            }
        })
    }
}

/// The ids of the files `<id><suffix>` in `dir`, in order (none if `dir` is
/// missing); `other` is shown every other name.
pub(crate) fn ids_in(
    dir: &Path,
    suffix: &str,
    mut other: impl FnMut(&Path, &str),
) -> std::io::Result<Vec<u64>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut ids = Vec::new();
    for item in listing {
        let path = item?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        match name.strip_suffix(suffix).and_then(|s| s.parse().ok()) {
            Some(id) => ids.push(id),
            None => other(&path, name),
        }
    }
    ids.sort_unstable();
    Ok(ids)
}
