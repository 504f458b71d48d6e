//! Withdrawal (`person forget`): the person's queued entries and images are
//! destroyed on the device at once, in one transaction with the deletes it
//! queues for the cloud (a `forget` entry per vendor the person may be in),
//! so a crash leaves either nothing done or the shred done and the deletes
//! durable. An upload of the person that is in flight loses its images at
//! once and is marked `withdrawn`: it is never tried again, and whatever it
//! put in the cloud is deleted by the `forget` entry, which the drain runs
//! only once no upload of that person is in flight.

use super::*;
use crate::model::CloudDeletion;
use std::collections::BTreeMap;

/// One vendor's delete, queued by a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CloudDelete {
    pub provider: Provider,
    /// The `forget` entry that sends it.
    pub entry: u64,
}

/// What `person forget` did on the device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForgetReport {
    pub person: String,
    /// Entries destroyed with their images (none was uploaded).
    pub destroyed: Vec<u64>,
    /// Uploads in flight when the person withdrew: their images are gone;
    /// the attempt ends, and what it uploaded is deleted with the rest.
    pub in_flight: Vec<u64>,
    /// Receipts of uploads whose faces the cloud deletes are to remove.
    pub receipts: Vec<u64>,
    /// Deletes queued for the cloud, one per vendor.
    pub cloud: Vec<CloudDelete>,
}

/// What an entry may have put in the cloud, carried into its person's delete.
fn carry(into: &mut UploadProgress, from: &UploadProgress) {
    into.created_person |= from.created_person;
    for id in &from.uploaded_face_ids {
        if !into.uploaded_face_ids.contains(id) {
            into.uploaded_face_ids.push(id.clone());
        }
    }
    if from.outcome_unknown {
        into.outcome_unknown = true;
        if into.face_ids_before.is_none() {
            into.face_ids_before.clone_from(&from.face_ids_before);
        }
    }
}

/// Whether an entry's attempts may have left something in the cloud.
fn touched_cloud(p: &UploadProgress) -> bool {
    p.created_person || p.outcome_unknown || !p.uploaded_face_ids.is_empty()
}

impl Outbox {
    fn seal_aad(id: u64) -> [u8; 15] {
        let mut aad = [0u8; 15];
        aad[..7].copy_from_slice(b"consent");
        aad[7..].copy_from_slice(&id.to_be_bytes());
        aad
    }

    /// Seals a consent record to the entry `id`.
    pub(crate) fn seal_consent(&self, id: u64, c: &Consent) -> Result<Sealed, OutboxError> {
        use base64::Engine;
        let json = serde_json::to_vec(c).map_err(|e| OutboxError::Storage(e.to_string()))?;
        let sealed = self
            .key
            .seal(&Self::seal_aad(id), &json)
            .map_err(|e| OutboxError::Storage(e.to_string()))?;
        Ok(Sealed(
            base64::engine::general_purpose::STANDARD.encode(sealed),
        ))
    }

    /// Opens the consent record sealed to entry `id` (an entry's, or the
    /// receipt it became).
    pub fn open_consent(&self, id: u64, sealed: &Sealed) -> Result<Consent, OutboxError> {
        use base64::Engine;
        let corrupt = |why: String| OutboxError::Corrupt { id, why };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed.0)
            .map_err(|e| corrupt(format!("consent record: {e}")))?;
        let json = self
            .key
            .open(&Self::seal_aad(id), &bytes)
            .map_err(|e| corrupt(format!("consent record: {e}")))?;
        serde_json::from_slice(&json).map_err(|e| corrupt(format!("consent record: {e}")))
    }

    /// The ledger beside this queue.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub(crate) fn ledger_record(&self, e: &Enrollment, event: LedgerEvent) -> LedgerRecord {
        LedgerRecord {
            at_ms: self.clock.now_ms(),
            person: e.person_id.clone(),
            provider: Some(e.provider),
            entry: Some(e.id),
            event,
        }
    }

    /// Withdraws `person`: see the module's description.
    pub fn forget(&self, person: &str) -> Result<ForgetReport, OutboxError> {
        let mut usage = self.lock();
        let mut report = ForgetReport {
            person: person.to_string(),
            ..ForgetReport::default()
        };
        // Per vendor: the delete's group, what it must carry, a delete
        // already queued, and whether the cloud may hold anything.
        struct Slot {
            group: Group,
            carried: UploadProgress,
            task: Option<Enrollment>,
            needed: bool,
        }
        let slot = |group: &Group| Slot {
            group: group.clone(),
            carried: UploadProgress::default(),
            task: None,
            needed: false,
        };
        let mut cloud: BTreeMap<Provider, Slot> = BTreeMap::new();
        for r in self.receipts()?.iter().filter(|r| r.person_id == person) {
            report.receipts.push(r.id);
            cloud
                .entry(r.provider)
                .or_insert_with(|| slot(&r.group))
                .needed = true;
        }
        let mut withdrawn = Vec::new();
        let mut destroyed = Vec::new();
        for e in self.list()?.into_iter().filter(|e| e.person_id == person) {
            let s = cloud.entry(e.provider).or_insert_with(|| slot(&e.group));
            match (e.task, &e.state) {
                (Task::Forget, EntryState::Pending) if s.task.is_none() => {
                    s.needed = true;
                    s.task = Some(e);
                }
                // A delete under way or dead: a new one is queued beside it.
                (Task::Forget, _) => s.needed = true,
                (Task::Enroll, EntryState::InFlight { .. }) => {
                    s.needed = true;
                    if !e.withdrawn {
                        report.in_flight.push(e.id);
                        withdrawn.push(e);
                    }
                }
                (Task::Enroll, _) => {
                    if touched_cloud(&e.progress) {
                        s.needed = true;
                        carry(&mut s.carried, &e.progress);
                    }
                    report.destroyed.push(e.id);
                    destroyed.push(e);
                }
            }
        }
        // Vendors reached only through entries that never got to the cloud
        // need no delete.
        let reached: Vec<Provider> = cloud
            .iter()
            .filter(|(_, s)| s.needed)
            .map(|(p, _)| *p)
            .collect();
        let now = self.clock.now_ms();
        let mut next = self.next_id.load(std::sync::atomic::Ordering::SeqCst);
        let mut tasks = Vec::new();
        for p in &reached {
            let Some(Slot {
                group,
                carried,
                task,
                ..
            }) = cloud.remove(p)
            else {
                continue;
            };
            let task = match task {
                Some(mut t) => {
                    carry(&mut t.progress, &carried);
                    t
                }
                None => {
                    let t = Enrollment {
                        format_version: FORMAT_VERSION,
                        id: next,
                        person_id: person.to_string(),
                        person_name: None,
                        provider: *p,
                        group,
                        created_at_ms: now,
                        created_boot: BootStamp::now(),
                        attempts: 0,
                        next_attempt_at_ms: now,
                        state: EntryState::Pending,
                        last_error: None,
                        progress: carried,
                        images: Vec::new(),
                        scores: Vec::new(),
                        task: Task::Forget,
                        consent: None,
                        withdrawn: false,
                    };
                    next += 1;
                    t
                }
            };
            report.cloud.push(CloudDelete {
                provider: *p,
                entry: task.id,
            });
            tasks.push(task);
        }
        // The copies go first: a copy without its entry would bring the
        // entry back at the next open.
        for e in destroyed.iter().chain(&withdrawn) {
            self.spool
                .remove(e.id)
                .map_err(|x| io_error(self.spool.dir(), x))?;
        }
        let mut records = Vec::new();
        for mut w in withdrawn.clone() {
            w.withdrawn = true;
            w.images.clear();
            records.push((w.id, w));
        }
        for t in &tasks {
            records.push((t.id, t.clone()));
        }
        let records: Vec<([u8; 8], Vec<u8>)> = records
            .iter()
            .map(|(id, e)| {
                serde_json::to_vec(e)
                    .map(|json| (id.to_be_bytes(), json))
                    .map_err(|x| OutboxError::Storage(x.to_string()))
            })
            .collect::<Result<_, _>>()?;
        use sled::Transactional;
        let meta: &sled::Tree = &self.db;
        (&self.entries, meta)
            .transaction(|(entries, meta)| {
                for e in &destroyed {
                    entries.remove(&e.id.to_be_bytes())?;
                }
                for (key, json) in &records {
                    entries.insert(key, json.as_slice())?;
                }
                meta.insert(META_NEXT_ID, &next.to_be_bytes())?;
                Ok::<(), sled::transaction::ConflictableTransactionError<OutboxError>>(())
            })
            .map_err(tx_error)?;
        // The image files go as soon as the records no longer name them.
        for e in destroyed.iter().chain(&withdrawn) {
            self.forget_images(e.id);
        }
        self.persist()?;
        self.next_id
            .fetch_max(next, std::sync::atomic::Ordering::SeqCst);
        for t in &tasks {
            if let Err(e) = self.spool.write(&self.key, t, &[]) {
                // The next open writes it again.
                log::warn!("outbox: spool copy of delete {}: {e}", t.id);
            }
        }
        *usage = self.scan_usage()?;
        drop(usage);
        let mut all: Vec<u64> = report.destroyed.clone();
        all.extend(&report.in_flight);
        self.ledger.note(&[LedgerRecord {
            at_ms: now,
            person: person.to_string(),
            provider: None,
            entry: None,
            event: LedgerEvent::Withdrawn {
                destroyed: all,
                cloud: reached,
            },
        }]);
        Ok(report)
    }

    /// A withdrawn entry whose attempt ended (`outcome_unknown`: without
    /// an answer): destroyed, and what it may have put in the cloud carried
    /// into its person's pending delete.
    /// `None`: the entry is not withdrawn.
    pub(crate) fn end_withdrawn(
        &self,
        id: u64,
        outcome_unknown: bool,
    ) -> Result<Option<Enrollment>, OutboxError> {
        let mut usage = self.lock();
        let mut e = self.get(id)?;
        if !e.withdrawn {
            return Ok(None);
        }
        e.progress.outcome_unknown |= outcome_unknown;
        let task = self.list()?.into_iter().find(|t| {
            t.task == Task::Forget
                && t.person_id == e.person_id
                && t.provider == e.provider
                && t.state == EntryState::Pending
        });
        self.spool
            .remove(id)
            .map_err(|x| io_error(self.spool.dir(), x))?;
        let task_json = match task {
            Some(mut t) => {
                carry(&mut t.progress, &e.progress);
                Some((
                    t.id.to_be_bytes(),
                    serde_json::to_vec(&t).map_err(|x| OutboxError::Storage(x.to_string()))?,
                ))
            }
            None => None,
        };
        self.entries
            .transaction(|entries| {
                entries.remove(&id.to_be_bytes())?;
                if let Some((key, json)) = &task_json {
                    entries.insert(key, json.as_slice())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<OutboxError>>(())
            })
            .map_err(tx_error)?;
        self.forget_images(id);
        self.persist()?;
        *usage = self.scan_usage()?;
        drop(usage);
        self.ledger.note(&[self.ledger_record(
            &e,
            LedgerEvent::Purged {
                why: "withdrawn while its upload was in flight".into(),
            },
        )]);
        Ok(Some(e))
    }

    /// Destroys every withdrawn entry that is not in flight (left by a
    /// restart during its upload): see [`Outbox::end_withdrawn`].
    pub(crate) fn sweep_withdrawn(&self) -> Result<usize, OutboxError> {
        let ids: Vec<u64> = self
            .list()?
            .iter()
            .filter(|e| e.withdrawn && !matches!(e.state, EntryState::InFlight { .. }))
            .map(|e| e.id)
            .collect();
        for id in &ids {
            self.end_withdrawn(*id, false)?;
        }
        Ok(ids.len())
    }

    /// Whether an upload of `person` is in flight.
    pub fn person_in_flight(&self, person: &str) -> Result<bool, OutboxError> {
        Ok(self.list()?.iter().any(|e| {
            e.person_id == person
                && e.task == Task::Enroll
                && matches!(e.state, EntryState::InFlight { .. })
        }))
    }

    /// The receipts of `person` at `provider`: what a delete must remove.
    pub fn person_receipts(
        &self,
        person: &str,
        provider: Provider,
    ) -> Result<Vec<Receipt>, OutboxError> {
        Ok(self
            .receipts()?
            .into_iter()
            .filter(|r| r.person_id == person && r.provider == provider)
            .collect())
    }

    /// The cloud deleted (or an operator must delete) what the `forget`
    /// entry `id` covered: the entry and the receipts it covered go, the
    /// ledger says what became of them.
    pub fn complete_forget(
        &self,
        id: u64,
        receipts: &[u64],
        done: &CloudDeletion,
    ) -> Result<(), OutboxError> {
        let mut usage = self.lock();
        let e = self.get(id)?;
        self.drop_copy(id);
        use sled::Transactional;
        (&self.entries, &self.receipts)
            .transaction(|(entries, rs)| {
                entries.remove(&id.to_be_bytes())?;
                for r in receipts {
                    rs.remove(&r.to_be_bytes())?;
                }
                Ok::<(), sled::transaction::ConflictableTransactionError<OutboxError>>(())
            })
            .map_err(tx_error)?;
        self.persist()?;
        self.account(&mut usage, Some(&e), None)?;
        drop(usage);
        let event = if done.manual {
            LedgerEvent::DeleteByHand {
                face_ids: done.face_ids.clone(),
                how: done.how.clone(),
            }
        } else {
            LedgerEvent::DeletedInCloud {
                how: done.how.clone(),
                face_ids: done.face_ids.clone(),
            }
        };
        self.ledger.note(&[self.ledger_record(&e, event)]);
        Ok(())
    }
}
