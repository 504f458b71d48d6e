//! Room accounting: the counters behind `usage()` kept up to date entry by
//! entry, the full scan that checks them, and the refusal of an enrollment
//! that would not fit in `queue.max_entries`, `queue.max_bytes` or the disk.

use super::*;

impl Outbox {
    /// Applies one entry's change (`None`: absent) to the counters, without
    /// reading the whole queue: state changes are O(1), and the oldest
    /// pending entry is found from the front of the queue.
    pub(super) fn account(
        &self,
        usage: &mut Usage,
        before: Option<&Enrollment>,
        after: Option<&Enrollment>,
    ) -> Result<(), OutboxError> {
        fn slot<'u>(u: &'u mut Usage, e: &Enrollment) -> &'u mut u64 {
            match e.state {
                EntryState::Pending => &mut u.pending,
                EntryState::InFlight { .. } => &mut u.in_flight,
                EntryState::Dead { .. } => &mut u.dead,
            }
        }
        if let Some(b) = before {
            let n = slot(usage, b);
            *n = n.saturating_sub(1);
            if after.is_none() {
                usage.entries = usage.entries.saturating_sub(1);
                usage.bytes = usage.bytes.saturating_sub(b.image_bytes());
                if b.task == Task::Forget {
                    usage.forget_tasks = usage.forget_tasks.saturating_sub(1);
                }
            }
        }
        if let Some(a) = after {
            *slot(usage, a) += 1;
            if before.is_none() {
                usage.entries += 1;
                usage.bytes += a.image_bytes();
                if a.task == Task::Forget {
                    usage.forget_tasks += 1;
                }
            }
        }
        let pending = |e: Option<&Enrollment>| e.is_some_and(|e| e.state == EntryState::Pending);
        if pending(before) || pending(after) {
            usage.oldest_pending_ms = self.first_pending_created()?;
        }
        Ok(())
    }
    /// Creation time of the first pending entry in queue order (ids grow
    /// with time); stops at the first one, so it reads only the in-flight
    /// and dead entries ahead of it.
    pub(super) fn first_pending_created(&self) -> Result<Option<UnixMillis>, OutboxError> {
        for item in self.entries.iter() {
            let (_, value) = item.map_err(storage_error)?;
            if let Ok(e) = serde_json::from_slice::<Enrollment>(&value) {
                if e.state == EntryState::Pending {
                    return Ok(Some(e.created_at_ms));
                }
            }
        }
        Ok(None)
    }
    pub(super) fn scan_usage(&self) -> Result<Usage, OutboxError> {
        let mut u = Usage::default();
        for item in self.entries.iter() {
            let (_, value) = item.map_err(storage_error)?;
            u.entries += 1;
            match serde_json::from_slice::<Enrollment>(&value) {
                Ok(e) => {
                    u.bytes += e.image_bytes();
                    if e.task == Task::Forget {
                        u.forget_tasks += 1;
                    }
                    match e.state {
                        EntryState::Pending => {
                            u.pending += 1;
                            // The first pending entry in queue order, as `account` keeps it.
                            u.oldest_pending_ms.get_or_insert(e.created_at_ms);
                        }
                        EntryState::InFlight { .. } => u.in_flight += 1,
                        EntryState::Dead { .. } => u.dead += 1,
                    }
                }
                Err(_) => u.corrupt += 1,
            }
        }
        Ok(u)
    }
    /// Refuses an enrollment of `needed` image bytes that would leave less
    /// than `reserve_bytes` free for the queue. The room is the filesystem's
    /// free space plus what sled can reuse inside its file (it does not give
    /// space back to the filesystem when entries go, but writes into it
    /// again), estimated conservatively: twice the live records are
    /// assumed to be in use. Images are in files of their own, which give
    /// their space back when they are unlinked.
    pub(super) fn check_room(&self, usage: &Usage, needed: u64) -> Result<(), OutboxError> {
        if self.limits.reserve_bytes == 0 {
            return Ok(());
        }
        let vfs = rustix::fs::statvfs(&self.path)
            .map_err(|e| io_error(&self.path, std::io::Error::from(e)))?;
        let fs_free = vfs.f_bavail.saturating_mul(vfs.f_frsize);
        let file_len = self.log_file.metadata().map(|m| m.len()).unwrap_or(0);
        let live = usage.entries.saturating_mul(RECORD_OVERHEAD_BYTES);
        let room = fs_free.saturating_add(file_len.saturating_sub(live.saturating_mul(2)));
        // The image file (sealed, whole blocks), the record written twice by
        // sled (log, then page rewrite), sled's rewrite of a large page
        // (up to a segment) before it deletes the old one, and the spool
        // copy: base64 inside a sealed file.
        let wanted = needed
            .saturating_add(RECORD_OVERHEAD_BYTES)
            .saturating_add(RECORD_OVERHEAD_BYTES.saturating_mul(2))
            .saturating_add(needed.saturating_mul(4) / 3 + RECORD_OVERHEAD_BYTES)
            .saturating_add(SLED_REWRITE_BYTES)
            .saturating_add(self.limits.reserve_bytes);
        if room < wanted {
            return Err(OutboxError::StorageFull(format!(
                "{}: about {} KiB free for the queue; this enrollment needs about {} KiB \
                 plus the {} KiB kept free for uploads (queue.reserve_bytes); \
                 enrollments are accepted again once queued ones are uploaded or space is freed",
                self.path.display(),
                room / 1024,
                (wanted - self.limits.reserve_bytes) / 1024,
                self.limits.reserve_bytes / 1024
            )));
        }
        Ok(())
    }
}
