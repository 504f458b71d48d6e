//! The drain loop: uploads due enrollments, one at a time, within each
//! provider's rate limit, and applies the retry policy to failures.
//!
//! One entry's life in an attempt: claim (in flight, durable) -> prepare
//! (Tencent: snapshot or check faces) -> save progress -> send -> complete
//! (images deleted, receipt kept) or reschedule / dead / pause. A crash at
//! any point leaves the entry in flight, which the next open turns back into
//! pending with `outcome_unknown` set.

use crate::clock::{Clock, UnixMillis};
use crate::cloud::{SkewClock, UploadError, Uploader};
use crate::model::LastError;
use crate::model::Provider;
use crate::model::{ErrorClass, Task, UploadCode};
use crate::queue::outbox::{Durability, Outbox, OutboxError};
use crate::queue::retry::{self, Decision, Jitter, PauseRecheck, RetryPolicy, TokenBucket};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Uploads to a provider stopped by an operator problem (credentials,
/// billing, the device clock): checked again on their own at
/// `next_check_ms`, and at once by a `drain` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub provider: Provider,
    pub code: String,
    pub message: String,
    /// When uploads to the provider first stopped.
    pub since_ms: UnixMillis,
    /// When the drain tries the provider again by itself.
    #[serde(default)]
    pub next_check_ms: UnixMillis,
    /// Checks since `since_ms` that found it still broken.
    #[serde(default)]
    pub checks: u32,
}

/// Builds a provider's uploader anew, reading its secret and CA files again:
/// a pause check picks up files replaced since (rotated credentials, a
/// renewed CA) without a reload.
pub type UploaderFactory = Box<dyn FnMut(Provider) -> Result<Box<dyn Uploader>, UploadError>>;

/// One failed attempt, for the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub id: u64,
    pub class: ErrorClass,
    pub code: String,
    pub message: String,
}

/// What one drain pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainSummary {
    pub uploaded: u64,
    /// Withdrawn persons' deletes done (or handed to an operator).
    #[serde(default)]
    pub deleted: u64,
    pub retried: u64,
    pub dead: u64,
    pub paused: Vec<Pause>,
    /// The most recent failures (at most 20).
    pub failures: Vec<Failure>,
    /// Entries still pending after the pass.
    pub pending: u64,
    /// Of those, the ones waiting to be tried again after a failure (this
    /// pass's or an earlier one's); the others are not due yet.
    #[serde(default)]
    pub pending_failed: u64,
    /// When the next pending entry is due, if any.
    pub next_due_ms: Option<UnixMillis>,
    /// Cloud time minus device time, as measured from answers.
    pub clock_skew_ms: i64,
    pub receipts_expired: usize,
    /// Dead entries (with their images) removed after their retention.
    pub dead_expired: usize,
    /// The pass ended because it was asked to stop.
    pub stopped: bool,
}

const MAX_FAILURES_KEPT: usize = 20;

/// What became of one entry in a pass, told as it happens: `drain` streams
/// one line per entry, with or without a daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum EntryReport {
    /// The cloud has it; the image is gone from the device.
    Uploaded {
        id: u64,
        person: String,
        provider: Provider,
        face_ids: Vec<String>,
    },
    /// It failed and is tried again at `next_attempt_ms`.
    Retry {
        id: u64,
        person: String,
        provider: Provider,
        class: ErrorClass,
        code: String,
        message: String,
        next_attempt_ms: UnixMillis,
    },
    /// The cloud refused it for good: kept, with its images, until purged.
    Dead {
        id: u64,
        person: String,
        provider: Provider,
        code: String,
        message: String,
    },
    /// A withdrawn person's delete is done: the cloud deleted what this
    /// device uploaded, or (`by_hand`) the vendor has no delete and an
    /// operator must delete `face_ids` in its console.
    Deleted {
        id: u64,
        person: String,
        provider: Provider,
        how: String,
        face_ids: Vec<String>,
        by_hand: bool,
    },
    /// Its failure paused every upload to `provider` until the cause is
    /// fixed; it stays pending.
    Paused {
        id: u64,
        person: String,
        provider: Provider,
        code: String,
        message: String,
    },
}

/// Told every [`EntryReport`] of a pass.
pub type EntryObserver = Box<dyn FnMut(&EntryReport) + Send>;

impl DrainSummary {
    /// Adds what a later pass did: its counts add up, its failures follow
    /// (the most recent 20 kept), and the queue's state is the later one's.
    pub fn merge(&mut self, later: &DrainSummary) {
        self.uploaded += later.uploaded;
        self.deleted += later.deleted;
        self.retried += later.retried;
        self.dead += later.dead;
        self.receipts_expired += later.receipts_expired;
        self.dead_expired += later.dead_expired;
        self.failures.extend(later.failures.iter().cloned());
        let excess = self.failures.len().saturating_sub(MAX_FAILURES_KEPT);
        self.failures.drain(..excess);
        self.paused = later.paused.clone();
        self.pending = later.pending;
        self.pending_failed = later.pending_failed;
        self.next_due_ms = later.next_due_ms;
        self.clock_skew_ms = later.clock_skew_ms;
        self.stopped = later.stopped;
    }
}

/// Receipts are expired at most this often (it reads every receipt).
const RECEIPT_EXPIRY_EVERY_MS: i64 = 3_600_000;

/// Per-provider settings of the drain.
#[derive(Debug, Clone, Copy)]
pub struct ProviderLimits {
    pub qps: f64,
}

/// The drain: owns the uploaders, rate limits and pauses.
pub struct Drainer {
    outbox: Arc<Outbox>,
    uploaders: HashMap<Provider, Box<dyn Uploader>>,
    /// Providers that cannot upload at all (no credentials), and why.
    unavailable: HashMap<Provider, UploadError>,
    buckets: HashMap<Provider, TokenBucket>,
    policy: RetryPolicy,
    clock: Arc<dyn Clock>,
    skew: Arc<SkewClock>,
    jitter: Jitter,
    paused: HashMap<Provider, Pause>,
    /// Pauses whose check is under way in this pass: lifted if an upload
    /// succeeds, paused again (one more check) if it fails the same way.
    checking: HashMap<Provider, Pause>,
    recheck: PauseRecheck,
    /// Providers whose host could not be reached (nothing was sent): until
    /// then only the entry that failed is tried again, when its own backoff
    /// ends, instead of every due entry failing the same way in each pass
    /// (800 claims, image reads and flushes a pass with the network down).
    unreachable: HashMap<Provider, UnixMillis>,
    /// The trusted time floor: while the clock is before it, records get
    /// their true times once a cloud's `Date` tells it.
    floor: Option<Arc<crate::cloud::timefloor::TimeFloor>>,
    /// The clock was seen before the floor in this process, or this
    /// process has not looked yet: the records' times are checked.
    times_suspect: bool,
    factory: Option<UploaderFactory>,
    retention: Retention,
    /// When receipts were last expired; at most once an hour, not every pass.
    receipts_expired_at: Option<UnixMillis>,
    observer: Option<EntryObserver>,
}

/// How long records are kept; 0 keeps them until an operator purges them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Receipts of uploaded enrollments (no images).
    pub receipts_ms: i64,
    /// Dead entries, with their images, counted from when they died.
    pub dead_ms: i64,
    /// Ledger records (`ledger.retention_days`); 0 keeps them all.
    pub ledger_ms: i64,
}

impl Retention {
    pub fn from_config(config: &crate::config::Config) -> Self {
        const DAY_MS: i64 = 86_400_000;
        Self {
            receipts_ms: i64::from(config.upload.receipt_retention_days) * DAY_MS,
            dead_ms: i64::from(config.queue.dead_retention_days) * DAY_MS,
            ledger_ms: i64::from(config.ledger.retention_days) * DAY_MS,
        }
    }
}

impl Drainer {
    pub fn new(
        outbox: Arc<Outbox>,
        policy: RetryPolicy,
        clock: Arc<dyn Clock>,
        skew: Arc<SkewClock>,
        retention: Retention,
    ) -> Self {
        Self {
            outbox,
            uploaders: HashMap::new(),
            unavailable: HashMap::new(),
            buckets: HashMap::new(),
            policy,
            clock,
            skew,
            jitter: Jitter::seeded(),
            paused: HashMap::new(),
            checking: HashMap::new(),
            unreachable: HashMap::new(),
            floor: None,
            times_suspect: true,
            recheck: PauseRecheck::default(),
            factory: None,
            retention,
            receipts_expired_at: None,
            observer: None,
        }
    }

    /// Tells `observer` what becomes of each entry, as it happens.
    pub fn set_observer(&mut self, observer: EntryObserver) {
        self.observer = Some(observer);
    }

    fn tell(&mut self, report: EntryReport) {
        if let Some(observer) = self.observer.as_mut() {
            observer(&report);
        }
    }

    /// Installs the uploader of a provider, or the reason there is none.
    pub fn set_uploader(
        &mut self,
        provider: Provider,
        uploader: Result<Box<dyn Uploader>, UploadError>,
        limits: ProviderLimits,
    ) {
        let now = self.clock.now_ms();
        self.buckets.insert(
            provider,
            TokenBucket::new(limits.qps, limits.qps.clamp(1.0, 10.0), now),
        );
        self.install(provider, uploader);
    }

    /// Puts a provider's uploader in place, or the reason it has none.
    fn install(&mut self, provider: Provider, uploader: Result<Box<dyn Uploader>, UploadError>) {
        match uploader {
            Ok(u) => {
                self.unavailable.remove(&provider);
                self.uploaders.insert(provider, u);
            }
            Err(e) => {
                self.uploaders.remove(&provider);
                self.unavailable.insert(provider, e);
            }
        }
    }

    pub fn with_jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// How often paused providers are checked again.
    pub fn with_recheck(mut self, recheck: PauseRecheck) -> Self {
        self.recheck = recheck;
        self
    }

    /// Builds a paused provider's uploader anew with `factory` before each
    /// check of the pause and on [`Drainer::resume`] (the first ones are
    /// given with [`Drainer::set_uploader`]).
    pub fn set_factory(&mut self, factory: UploaderFactory) {
        self.factory = Some(factory);
    }

    /// Current pauses, by provider.
    pub fn paused(&self) -> Vec<Pause> {
        let mut p: Vec<Pause> = self.paused.values().cloned().collect();
        p.sort_by_key(|p| p.provider.as_str());
        p
    }

    /// Lifts all pauses at once (an operator asked for a `drain`): the
    /// uploaders are built anew and the next pass tries every provider.
    pub fn resume(&mut self) {
        let paused: Vec<Provider> = self.paused.keys().copied().collect();
        for provider in paused {
            self.rebuild(provider);
        }
        self.paused.clear();
    }

    /// The wall clock was set (NTP stepped it, an operator ran `date`):
    /// waits computed in the old time are cut to what they may be in the
    /// new one. After a step back by hours, an entry or a pause check would
    /// otherwise wait those hours on top of its backoff.
    pub fn clock_stepped(&mut self) -> Result<(), OutboxError> {
        let now = self.clock.now_ms();
        self.unreachable.clear();
        self.times_suspect = true;
        let latest_retry = now + self.policy.max_ms;
        for e in self.outbox.list()? {
            if e.state == crate::model::EntryState::Pending && e.next_attempt_at_ms > latest_retry {
                self.outbox.reschedule(
                    e.id,
                    latest_retry,
                    e.last_error.clone(),
                    e.progress.outcome_unknown,
                )?;
            }
        }
        let latest_check = now + self.recheck.max_ms;
        for p in self.paused.values_mut() {
            p.next_check_ms = p.next_check_ms.min(latest_check);
        }
        Ok(())
    }

    /// Turns the pauses whose check is due into checks of this pass.
    fn start_due_checks(&mut self, now: UnixMillis) {
        let due: Vec<Provider> = self
            .paused
            .values()
            .filter(|p| p.next_check_ms <= now)
            .map(|p| p.provider)
            .collect();
        for provider in due {
            let Some(pause) = self.paused.remove(&provider) else {
                continue;
            };
            log::info!(
                "checking uploads to {provider} again (paused {} s ago: {} {}; check {})",
                (now - pause.since_ms).max(0) / 1000,
                pause.code,
                pause.message,
                pause.checks + 1
            );
            self.rebuild(provider);
            self.checking.insert(provider, pause);
        }
    }

    /// Builds a provider's uploader anew, if a factory was given.
    fn rebuild(&mut self, provider: Provider) {
        let Some(factory) = self.factory.as_mut() else {
            return;
        };
        let uploader = factory(provider);
        self.install(provider, uploader);
    }

    /// Stops uploads to `provider` after error `e` at `now`: a new pause, or
    /// one more failed check of the pause being checked.
    fn pause(&mut self, provider: Provider, e: &UploadError, now: UnixMillis) {
        let (since_ms, checks) = match self.checking.remove(&provider) {
            Some(p) => (p.since_ms, p.checks + 1),
            None => (now, 0),
        };
        let next_check_ms = self.recheck.next_check_at(now, checks, self.jitter.unit());
        let when = (next_check_ms - now).max(0) / 1000;
        if checks == 0 {
            log::error!("uploads to {provider} paused: {e}; checking again in {when} s");
        } else {
            log::error!(
                "uploads to {provider} still paused after {checks} check(s): {e}; checking again in {when} s"
            );
        }
        self.paused.insert(
            provider,
            Pause {
                provider,
                code: e.code.clone(),
                message: e.message.clone(),
                since_ms,
                next_check_ms,
                checks,
            },
        );
    }

    /// Ends the checks of this pass that did not pause again: the provider
    /// uploads again (or had nothing to send, which a later pass will try).
    fn end_checks(&mut self, now: UnixMillis) {
        for (provider, pause) in self.checking.drain() {
            log::info!(
                "uploads to {provider} are no longer paused: the check found no operator problem (paused {} s: {} {})",
                (now - pause.since_ms).max(0) / 1000,
                pause.code,
                pause.message
            );
        }
    }

    /// Uploads everything due now. `wait` sleeps for rate limits and returns
    /// false when the caller wants the pass to stop.
    pub fn drain(
        &mut self,
        wait: &mut dyn FnMut(Duration) -> bool,
    ) -> Result<DrainSummary, OutboxError> {
        let mut summary = DrainSummary::default();
        let now = self.clock.now_ms();
        let expiry_due = self
            .receipts_expired_at
            .is_none_or(|t| now - t >= RECEIPT_EXPIRY_EVERY_MS);
        if expiry_due {
            if self.retention.receipts_ms > 0 {
                summary.receipts_expired = self
                    .outbox
                    .purge_receipts_before(now - self.retention.receipts_ms)?;
            }
            if self.retention.dead_ms > 0 {
                let expired = self
                    .outbox
                    .purge_dead_before(now - self.retention.dead_ms)?;
                if !expired.is_empty() {
                    log::warn!(
                        "{} dead entr(ies) reached queue.dead_retention_days and were deleted: {expired:?}",
                        expired.len()
                    );
                }
                summary.dead_expired = expired.len();
            }
            if self.retention.ledger_ms > 0 {
                let ledger = self.outbox.ledger();
                match ledger.expire(now - self.retention.ledger_ms) {
                    Ok(0) => {}
                    Ok(n) => log::info!(
                        "{n} ledger record(s) reached ledger.retention_days and were dropped"
                    ),
                    Err(e) => log::warn!("ledger {}: {e}", ledger.path().display()),
                }
            }
            self.receipts_expired_at = Some(now);
        }
        self.start_due_checks(now);
        'passes: loop {
            let now = self.clock.now_ms();
            self.unreachable.retain(|_, until| *until > now);
            let paused: Vec<Provider> = self.paused.keys().copied().collect();
            let held: Vec<Provider> = self.unreachable.keys().copied().collect();
            let open = |e: &crate::model::Enrollment| {
                !paused.contains(&e.provider) && !held.contains(&e.provider)
            };
            // A withdrawn person's deletes go before the uploads: the law
            // asks for them without delay, and nothing of that person is
            // left to upload.
            let mut due = Vec::new();
            if self.outbox.usage().forget_tasks > 0 {
                due = self
                    .outbox
                    .due_where(now, 32, |e| e.task == Task::Forget && open(e))?;
            }
            if due.is_empty() {
                due = self.outbox.due_where(now, 32, open)?;
            }
            if due.is_empty() {
                break;
            }
            for batch in self.batches(due) {
                if !self.attempt_batch(&batch, &mut summary, wait)? {
                    summary.stopped = true;
                    break 'passes;
                }
            }
        }
        self.end_checks(self.clock.now_ms());
        // The outcomes left to the next durable write (see `batches`).
        self.outbox.sync()?;
        if let Err(e) = self.outbox.ledger().sync() {
            log::error!("ledger {}: {e}", self.outbox.ledger().path().display());
        }
        self.correct_times()?;
        summary.paused = self.paused();
        let usage = self.outbox.usage();
        summary.pending = usage.pending;
        let entries = self.outbox.list()?;
        summary.pending_failed = entries
            .iter()
            .filter(|e| e.state == crate::model::EntryState::Pending && e.last_error.is_some())
            .count() as u64;
        summary.next_due_ms = entries
            .iter()
            .filter(|e| {
                e.state == crate::model::EntryState::Pending
                    && !self.paused.contains_key(&e.provider)
            })
            .map(|e| {
                let held = self.unreachable.get(&e.provider).copied();
                held.map_or(e.next_attempt_at_ms, |t| t.max(e.next_attempt_at_ms))
            })
            .min();
        summary.clock_skew_ms = self.skew.offset_ms();
        Ok(summary)
    }

    /// Uses `floor` to tell when the wall clock is wrong and what the true
    /// time is.
    pub fn set_time_floor(&mut self, floor: Arc<crate::cloud::timefloor::TimeFloor>) {
        self.floor = Some(floor);
    }

    /// Gives records stamped while the clock was wrong their true times, as
    /// soon as the true time is known; says in the journal when the clock
    /// goes wrong and when it is right again.
    fn correct_times(&mut self) -> Result<(), OutboxError> {
        let Some(floor) = self.floor.clone() else {
            return Ok(());
        };
        let behind = floor.clock_behind().is_some();
        if behind && !self.times_suspect {
            if let Some(w) = floor.warning() {
                log::warn!("{w}");
            }
        }
        if !(self.times_suspect || behind) {
            return Ok(());
        }
        if let (Some(true_now), Some(stamp)) = (floor.true_now_ms(), crate::clock::BootStamp::now())
        {
            let n = self.outbox.correct_times(true_now, &stamp)?;
            if n > 0 {
                log::info!(
                    "{n} record(s) stamped while the clock was wrong now carry the true time ({})",
                    crate::clock::rfc3339(true_now)
                );
            }
            self.times_suspect = behind;
        }
        Ok(())
    }

    fn take_token(&mut self, provider: Provider, wait: &mut dyn FnMut(Duration) -> bool) -> bool {
        loop {
            let now = self.clock.now_ms();
            let Some(bucket) = self.buckets.get_mut(&provider) else {
                return true;
            };
            match bucket.try_take(now) {
                Ok(()) => return true,
                Err(ms) => {
                    if !wait(Duration::from_millis(ms.max(1) as u64)) {
                        return false;
                    }
                }
            }
        }
    }

    /// The due entries in the order they are tried: a delete alone; for a
    /// vendor that looks every unanswered upload up before it sends again
    /// ([`Uploader::looks_up_before_resend`]), uploads in batches of up to
    /// [`BATCH`] (claimed in one durable write, their outcomes written with
    /// the next one: a crash costs lookups, never a duplicate); for one that
    /// does not (JD), one upload at a time, each claim and outcome durable
    /// before the next send. A batch holds one entry per person, so that no
    /// entry's snapshot of the person's faces misses a face another entry
    /// of the batch adds (an entry left out waits for the next round).
    fn batches(&self, due: Vec<crate::model::Enrollment>) -> Vec<Vec<u64>> {
        let mut out: Vec<Vec<u64>> = Vec::new();
        let mut open: HashMap<Provider, (usize, Vec<String>)> = HashMap::new();
        for e in due {
            let batched = e.task == Task::Enroll
                && self
                    .uploaders
                    .get(&e.provider)
                    .is_some_and(|u| u.looks_up_before_resend());
            if !batched {
                out.push(vec![e.id]);
                continue;
            }
            match open.get_mut(&e.provider) {
                Some((i, persons)) if out[*i].len() < BATCH => {
                    if !persons.contains(&e.person_id) {
                        out[*i].push(e.id);
                        persons.push(e.person_id);
                    }
                }
                Some(_) => {}
                None => {
                    open.insert(e.provider, (out.len(), vec![e.person_id]));
                    out.push(vec![e.id]);
                }
            }
        }
        out
    }

    /// One attempt at each entry of a batch (see [`Drainer::batches`]):
    /// prepare each (lookups only), claim them all, send each. False when
    /// `wait` said stop.
    fn attempt_batch(
        &mut self,
        ids: &[u64],
        summary: &mut DrainSummary,
        wait: &mut dyn FnMut(Duration) -> bool,
    ) -> Result<bool, OutboxError> {
        let mut ready = Vec::new();
        for &id in ids {
            let entry = match self.outbox.get(id) {
                Ok(e) if e.state == crate::model::EntryState::Pending && !e.withdrawn => e,
                // Purged or changed since it was listed.
                Ok(_) | Err(OutboxError::NotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            if self.held(entry.provider) {
                break;
            }
            if !self.take_token(entry.provider, wait) {
                self.send_batch(ready, summary)?;
                return Ok(false);
            }
            if entry.task == Task::Forget {
                let entry = match self.outbox.claim(id) {
                    Ok(e) => e,
                    Err(OutboxError::NotFound(_) | OutboxError::InvalidState { .. }) => continue,
                    Err(e) => return Err(e),
                };
                self.attempt_forget(entry, summary)?;
                continue;
            }
            if let Some(r) = self.prepare(entry, summary)? {
                ready.push(r);
            }
        }
        self.send_batch(ready, summary)?;
        Ok(true)
    }

    /// A vendor paused or held back by an unreachable network.
    fn held(&self, provider: Provider) -> bool {
        self.paused.contains_key(&provider) || self.unreachable.contains_key(&provider)
    }

    /// Everything before the claim: the vendor rules, the images, the
    /// uploader's lookups. `None` when the entry is done with (dead,
    /// found uploaded, or failed before anything was sent).
    fn prepare(
        &mut self,
        mut entry: crate::model::Enrollment,
        summary: &mut DrainSummary,
    ) -> Result<Option<Ready>, OutboxError> {
        let (id, provider) = (entry.id, entry.provider);
        // Written by an older release that did not know a vendor rule: the
        // cloud would refuse it for good, so it dies here, unsent.
        if let Err(v) = crate::model::rules::check_entry(&entry) {
            let err = UploadError::new(ErrorClass::Never, v.code().as_str(), v.to_string());
            self.give_up(summary, &entry, &err)?;
            return Ok(None);
        }
        let images = match self.outbox.images(id) {
            Ok(i) => i,
            Err(e @ OutboxError::Corrupt { .. }) => {
                let err =
                    UploadError::new(ErrorClass::Never, UploadCode::CorruptEntry, e.to_string());
                self.give_up(summary, &entry, &err)?;
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let started = std::time::Instant::now();
        let mut tries = 1;
        let result = match self.uploaders.get_mut(&provider) {
            None => Err(self.no_uploader(provider)),
            Some(uploader) => {
                // Lookups only: nothing is sent that could land.
                let mut result = uploader.prepare(&mut entry);
                while matches!(&result, Err(e) if retry::retry_at_once(e.class, tries)) {
                    log::warn!("entry {id}: the cloud says the device clock is wrong; retrying with the corrected time");
                    tries += 1;
                    result = uploader.prepare(&mut entry);
                }
                result
            }
        };
        match result {
            Ok(None) => Ok(Some(Ready {
                entry,
                images,
                started,
                tries,
            })),
            Ok(Some(done)) => {
                summary.uploaded += 1;
                self.succeeded(&entry, &images, &done, started, Durability::Now)?;
                Ok(None)
            }
            Err(e) => {
                // A failure before anything was sent still counts as an attempt.
                match self.outbox.claim_with(id, Some(&entry.progress)) {
                    Ok(stored) => entry.attempts = stored.attempts,
                    Err(OutboxError::NotFound(_) | OutboxError::InvalidState { .. }) => {
                        return Ok(None)
                    }
                    Err(e) => return Err(e),
                }
                self.failed(&mut entry, &e, summary)?;
                Ok(None)
            }
        }
    }

    /// Claims the prepared entries (in flight, with what their lookups
    /// learned, in one durable write), then sends each.
    fn send_batch(
        &mut self,
        ready: Vec<Ready>,
        summary: &mut DrainSummary,
    ) -> Result<(), OutboxError> {
        if ready.is_empty() {
            return Ok(());
        }
        let claims: Vec<(u64, &crate::model::UploadProgress)> = ready
            .iter()
            .map(|r| (r.entry.id, &r.entry.progress))
            .collect();
        let claimed = self.outbox.claim_many(&claims)?;
        for (i, (mut r, stored)) in ready.into_iter().zip(claimed).enumerate() {
            let id = r.entry.id;
            match stored {
                Ok(stored) => {
                    r.entry.attempts = stored.attempts;
                    r.entry.state = stored.state;
                }
                // Purged or withdrawn since it was prepared.
                Err(OutboxError::NotFound(_) | OutboxError::InvalidState { .. }) => continue,
                Err(e) => return Err(e),
            }
            if i > 0 {
                // Its turn comes after other sends: its vendor may have
                // paused, or its person withdrawn, meanwhile.
                if self.held(r.entry.provider) {
                    self.outbox.release(id)?;
                    continue;
                }
                if self.outbox.get(id).is_ok_and(|e| e.withdrawn) {
                    self.outbox
                        .reschedule(id, self.clock.now_ms(), None, false)?;
                    continue;
                }
            }
            self.send(r, summary)?;
        }
        Ok(())
    }

    /// Sends one claimed entry and stores the outcome.
    fn send(&mut self, r: Ready, summary: &mut DrainSummary) -> Result<(), OutboxError> {
        let Ready {
            mut entry,
            images,
            started,
            mut tries,
        } = r;
        let (id, provider) = (entry.id, entry.provider);
        let mut durability = Durability::Now;
        let result = match self.uploaders.get_mut(&provider) {
            None => Err(self.no_uploader(provider)),
            Some(uploader) => {
                if uploader.looks_up_before_resend() {
                    durability = Durability::Deferred;
                }
                let mut result = uploader.send(&mut entry, &images);
                if let Err(e) = &result {
                    entry.progress.outcome_unknown |= e.outcome_unknown;
                }
                while matches!(&result, Err(e) if retry::retry_at_once(e.class, tries)) {
                    log::warn!("entry {id}: the cloud says the device clock is wrong; retrying with the corrected time");
                    tries += 1;
                    result = run_upload(uploader.as_mut(), &mut entry, &images, &self.outbox);
                }
                result
            }
        };
        match result {
            Ok(uploaded) => {
                summary.uploaded += 1;
                self.succeeded(&entry, &images, &uploaded, started, durability)
            }
            Err(e) => self.failed(&mut entry, &e, summary),
        }
    }

    /// Stores an upload's success and says so.
    fn succeeded(
        &mut self,
        entry: &crate::model::Enrollment,
        images: &[Vec<u8>],
        uploaded: &crate::cloud::Uploaded,
        started: std::time::Instant,
        durability: Durability,
    ) -> Result<(), OutboxError> {
        let (id, provider) = (entry.id, entry.provider);
        self.outbox
            .complete_as(id, &uploaded.face_ids, durability)?;
        log::info!(
            "entry {id} uploaded to {provider} (person {}, attempt {}, {} image(s), {} bytes, {} ms): face id(s) {}",
            entry.person_id,
            entry.attempts,
            images.len(),
            images.iter().map(Vec::len).sum::<usize>(),
            started.elapsed().as_millis(),
            uploaded.face_ids.join(", ")
        );
        self.tell(EntryReport::Uploaded {
            id,
            person: entry.person_id.clone(),
            provider,
            face_ids: uploaded.face_ids.clone(),
        });
        self.unreachable.remove(&provider);
        if let Some(pause) = self.checking.remove(&provider) {
            log::info!(
                "uploads to {provider} resumed: entry {id} was uploaded; they were paused {} s ({} {})",
                (self.clock.now_ms() - pause.since_ms).max(0) / 1000,
                pause.code,
                pause.message
            );
        }
        Ok(())
    }

    /// A withdrawn person's delete at one vendor: once no upload of the
    /// person is in flight, what the receipts and interrupted uploads name
    /// is deleted; the receipts go with the entry.
    fn attempt_forget(
        &mut self,
        mut entry: crate::model::Enrollment,
        summary: &mut DrainSummary,
    ) -> Result<(), OutboxError> {
        let (id, provider) = (entry.id, entry.provider);
        self.outbox.sweep_withdrawn()?;
        if self.outbox.person_in_flight(&entry.person_id)? {
            // Another drainer's upload of this person: after it.
            let at = self.clock.now_ms() + 1_000;
            self.outbox.reschedule(id, at, None, false)?;
            return Ok(());
        }
        // What an interrupted upload carried into the delete is read again:
        // the claim's copy may predate it.
        entry.progress = self.outbox.get(id)?.progress;
        let receipts = self.outbox.person_receipts(&entry.person_id, provider)?;
        let mut req = crate::cloud::ForgetRequest {
            person_id: entry.person_id.clone(),
            face_ids: entry.progress.uploaded_face_ids.clone(),
            created_person: entry.progress.created_person,
            faces_before: entry
                .progress
                .outcome_unknown
                .then(|| entry.progress.face_ids_before.clone())
                .flatten(),
        };
        for r in &receipts {
            req.created_person |= r.created_person;
            for f in &r.face_ids {
                if !req.face_ids.contains(f) {
                    req.face_ids.push(f.clone());
                }
            }
        }
        let result = match self.uploaders.get_mut(&provider) {
            None => Err(self.no_uploader(provider)),
            Some(uploader) => {
                let mut result = uploader.forget(&req);
                if matches!(&result, Err(e) if retry::retry_at_once(e.class, 1)) {
                    result = uploader.forget(&req);
                }
                result
            }
        };
        match result {
            Ok(done) => {
                let ids: Vec<u64> = receipts.iter().map(|r| r.id).collect();
                self.outbox.complete_forget(id, &ids, &done)?;
                summary.deleted += 1;
                if done.manual {
                    log::warn!("entry {id}: {} withdrew; {}", entry.person_id, done.how);
                } else {
                    log::info!(
                        "entry {id}: {} withdrew; deleted in {provider} ({}): face id(s) {}",
                        entry.person_id,
                        done.how,
                        done.face_ids.join(", ")
                    );
                }
                self.tell(EntryReport::Deleted {
                    id,
                    person: entry.person_id.clone(),
                    provider,
                    how: done.how,
                    face_ids: done.face_ids,
                    by_hand: done.manual,
                });
                self.unreachable.remove(&provider);
                self.checking.remove(&provider);
            }
            Err(e) => self.failed(&mut entry, &e, summary)?,
        }
        Ok(())
    }

    fn no_uploader(&self, provider: Provider) -> UploadError {
        self.unavailable.get(&provider).cloned().unwrap_or_else(|| {
            UploadError::new(
                ErrorClass::Operator,
                UploadCode::NoUploader,
                format!("no uploader for {provider}"),
            )
        })
    }

    /// A failed attempt: retried later, dead, or a pause of its vendor.
    fn failed(
        &mut self,
        entry: &mut crate::model::Enrollment,
        e: &UploadError,
        summary: &mut DrainSummary,
    ) -> Result<(), OutboxError> {
        let (id, provider) = (entry.id, entry.provider);
        entry.progress.outcome_unknown |= e.outcome_unknown;
        self.record(summary, id, e);
        let now = self.clock.now_ms();
        let last = self.last_error(e);
        match self.policy.decide(
            e.class,
            entry.attempts,
            now,
            e.not_before_ms,
            self.jitter.unit(),
        ) {
            Decision::RetryAt(at) => {
                // An unanswered request may still be applied: check
                // its outcome only after the cloud has settled.
                let at = if e.outcome_unknown {
                    retry::settled(at, now)
                } else {
                    at
                };
                self.outbox
                    .reschedule_with(id, at, Some(last), &entry.progress)?;
                summary.retried += 1;
                log::warn!(
                    "entry {id} to {provider}: {e}; attempt {} failed, next at {}",
                    entry.attempts,
                    crate::clock::rfc3339(at)
                );
                self.tell(EntryReport::Retry {
                    id,
                    person: entry.person_id.clone(),
                    provider,
                    class: e.class,
                    code: e.code.clone(),
                    message: e.message.clone(),
                    next_attempt_ms: at,
                });
                if e.code == UploadCode::Network && !e.outcome_unknown {
                    if !self.unreachable.contains_key(&provider) {
                        log::warn!(
                            "{provider} cannot be reached ({}); entry {id} tries again in {} s, the others wait for it",
                            e.message,
                            (at - now).max(0) / 1000
                        );
                    }
                    self.unreachable.insert(provider, at);
                }
            }
            Decision::Dead => {
                // Faces some images got stay known (a retry by an operator
                // sends only the others).
                self.outbox.save_progress(entry)?;
                self.outbox.mark_dead(id, &e.code, Some(last))?;
                summary.dead += 1;
                log::warn!(
                    "entry {id} to {provider} is dead: {e}; kept with its images (enrolld queue show {id})"
                );
                self.tell(EntryReport::Dead {
                    id,
                    person: entry.person_id.clone(),
                    provider,
                    code: e.code.clone(),
                    message: e.message.clone(),
                });
            }
            Decision::Pause => {
                self.outbox
                    .reschedule_with(id, now, Some(last), &entry.progress)?;
                self.pause(provider, e, now);
                self.tell(EntryReport::Paused {
                    id,
                    person: entry.person_id.clone(),
                    provider,
                    code: e.code.clone(),
                    message: e.message.clone(),
                });
            }
        }
        Ok(())
    }

    /// Turns an entry dead without sending it.
    fn give_up(
        &mut self,
        summary: &mut DrainSummary,
        entry: &crate::model::Enrollment,
        err: &UploadError,
    ) -> Result<(), OutboxError> {
        let id = entry.id;
        log::warn!("entry {id} is dead without a request: {err}");
        self.record(summary, id, err);
        self.outbox
            .mark_dead(id, &err.code, Some(self.last_error(err)))?;
        summary.dead += 1;
        self.tell(EntryReport::Dead {
            id,
            person: entry.person_id.clone(),
            provider: entry.provider,
            code: err.code.clone(),
            message: err.message.clone(),
        });
        Ok(())
    }

    fn last_error(&self, e: &UploadError) -> LastError {
        LastError {
            class: e.class,
            code: e.code.clone(),
            message: e.message.clone(),
            at_ms: self.clock.now_ms(),
        }
    }

    fn record(&self, summary: &mut DrainSummary, id: u64, e: &UploadError) {
        if summary.failures.len() >= MAX_FAILURES_KEPT {
            summary.failures.remove(0);
        }
        summary.failures.push(Failure {
            id,
            class: e.class,
            code: e.code.clone(),
            message: e.message.clone(),
        });
    }
}

/// Uploads at most this many entries per claim (see [`Drainer::batches`]).
pub const BATCH: usize = 8;

/// An entry ready to be claimed and sent: what `prepare` read and learned.
struct Ready {
    entry: crate::model::Enrollment,
    images: Vec<Vec<u8>>,
    started: std::time::Instant,
    /// Requests tried so far (a clock error is retried at once, once).
    tries: u32,
}

/// The retry of a claimed entry after the cloud said the clock was wrong:
/// prepare again, store what it learned, send.
fn run_upload(
    uploader: &mut dyn Uploader,
    entry: &mut crate::model::Enrollment,
    images: &[Vec<u8>],
    outbox: &Outbox,
) -> Result<crate::cloud::Uploaded, UploadError> {
    let storage =
        |e: OutboxError| UploadError::new(ErrorClass::Retry, e.code().as_str(), e.to_string());
    // Lookups only: nothing is sent that could land.
    if let Some(done) = uploader.prepare(entry)? {
        return Ok(done);
    }
    outbox.save_progress(entry).map_err(storage)?;
    let result = uploader.send(entry, images);
    if let Err(e) = &result {
        entry.progress.outcome_unknown |= e.outcome_unknown;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use crate::cloud::Uploaded;
    use crate::model::{EntryState, Group};
    use crate::queue::outbox::{NewEnrollment, NewImage, OutboxLimits};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// Answers with scripted results and records what it was sent.
    struct Scripted {
        provider: Provider,
        results: Arc<Mutex<VecDeque<Result<Uploaded, UploadError>>>>,
        sent: Arc<Mutex<Vec<u64>>>,
    }

    impl Uploader for Scripted {
        fn provider(&self) -> Provider {
            self.provider
        }
        fn send(
            &mut self,
            entry: &mut crate::model::Enrollment,
            _: &[Vec<u8>],
        ) -> Result<Uploaded, UploadError> {
            self.sent.lock().expect("lock").push(entry.id);
            self.results
                .lock()
                .expect("lock")
                .pop_front()
                .unwrap_or(Ok(Uploaded {
                    face_ids: vec!["f".into()],
                }))
        }
    }

    /// Logs every `prepare` and `send`; looks up before resending as
    /// `looks` says; the first `fail` sends fail with `class`.
    struct Logging {
        provider: Provider,
        looks: bool,
        fail: usize,
        class: ErrorClass,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl Uploader for Logging {
        fn provider(&self) -> Provider {
            self.provider
        }
        fn looks_up_before_resend(&self) -> bool {
            self.looks
        }
        fn prepare(
            &mut self,
            entry: &mut crate::model::Enrollment,
        ) -> Result<Option<Uploaded>, UploadError> {
            let call = format!("prepare {}", entry.person_id);
            self.calls.lock().expect("lock").push(call);
            Ok(None)
        }
        fn send(
            &mut self,
            entry: &mut crate::model::Enrollment,
            _: &[Vec<u8>],
        ) -> Result<Uploaded, UploadError> {
            let call = format!("send {}", entry.person_id);
            self.calls.lock().expect("lock").push(call);
            if self.fail > 0 {
                self.fail -= 1;
                return Err(UploadError::new(self.class, "code", "m"));
            }
            Ok(Uploaded {
                face_ids: vec![format!("face-{}", entry.id)],
            })
        }
    }

    fn logging(
        r: &mut Rig,
        looks: bool,
        fail: usize,
        class: ErrorClass,
    ) -> Arc<Mutex<Vec<String>>> {
        let calls = Arc::new(Mutex::new(Vec::new()));
        r.drainer.set_uploader(
            Provider::Tencent,
            Ok(Box::new(Logging {
                provider: Provider::Tencent,
                looks,
                fail,
                class,
                calls: calls.clone(),
            })),
            ProviderLimits { qps: 1000.0 },
        );
        calls
    }

    #[test]
    fn a_vendor_that_looks_up_is_claimed_in_batches_of_one_entry_per_person() {
        let mut r = rig();
        let calls = logging(&mut r, true, 0, ErrorClass::Retry);
        for p in ["p1", "p2", "p1", "p3"] {
            enqueue(&r, p, Provider::Tencent);
        }
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 4, "{s:?}");
        // All lookups of a batch before its sends; the second entry of p1
        // waits for a batch after the first one's send.
        let want = [
            "prepare p1",
            "prepare p2",
            "prepare p3",
            "send p1",
            "send p2",
            "send p3",
            "prepare p1",
            "send p1",
        ];
        assert_eq!(*calls.lock().expect("lock"), want);
        assert_eq!(r.outbox.receipts().expect("receipts").len(), 4);
        assert!(r.outbox.list().expect("list").is_empty());
    }

    #[test]
    fn a_vendor_without_a_lookup_is_claimed_and_sent_one_at_a_time() {
        let mut r = rig();
        let calls = logging(&mut r, false, 0, ErrorClass::Retry);
        for p in ["p1", "p2"] {
            enqueue(&r, p, Provider::Tencent);
        }
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 2, "{s:?}");
        let want = ["prepare p1", "send p1", "prepare p2", "send p2"];
        assert_eq!(*calls.lock().expect("lock"), want);
    }

    #[test]
    fn a_pause_in_a_batch_gives_the_unsent_claims_back_without_an_attempt() {
        let mut r = rig();
        let calls = logging(&mut r, true, 1, ErrorClass::Operator);
        let ids: Vec<u64> = ["p1", "p2", "p3"]
            .iter()
            .map(|p| enqueue(&r, p, Provider::Tencent))
            .collect();
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!((s.uploaded, s.paused.len()), (0, 1), "{s:?}");
        let want = ["prepare p1", "prepare p2", "prepare p3", "send p1"];
        assert_eq!(*calls.lock().expect("lock"), want);
        let attempts: Vec<(EntryState, u32)> = ids
            .iter()
            .map(|id| {
                let e = r.outbox.get(*id).expect("kept");
                (e.state, e.attempts)
            })
            .collect();
        assert_eq!(
            attempts,
            [
                (EntryState::Pending, 1),
                (EntryState::Pending, 0),
                (EntryState::Pending, 0)
            ]
        );
        r.drainer.resume();
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 3, "{s:?}");
    }

    #[test]
    fn an_outcome_left_to_the_next_write_is_durable_when_the_pass_ends() {
        let mut r = rig();
        logging(&mut r, true, 0, ErrorClass::Retry);
        let id = enqueue(&r, "p1", Provider::Tencent);
        r.drainer.drain(&mut no_wait).expect("drain");
        // The pass ended with a sync: nothing is waiting for a durable write.
        assert!(!r.outbox.has_unsynced());
        assert!(matches!(r.outbox.get(id), Err(OutboxError::NotFound(_))));
    }

    struct Rig {
        _dir: tempfile::TempDir,
        outbox: Arc<Outbox>,
        clock: FakeClock,
        drainer: Drainer,
        results: Arc<Mutex<VecDeque<Result<Uploaded, UploadError>>>>,
        sent: Arc<Mutex<Vec<u64>>>,
    }

    fn rig() -> Rig {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = FakeClock::new(1_000_000);
        let outbox = Arc::new(
            Outbox::open(
                dir.path(),
                OutboxLimits {
                    max_entries: 100,
                    max_bytes: 1 << 30,
                    reserve_bytes: 0,
                },
                Arc::new(clock.clone()),
                crate::queue::seal::QueueKey::from_encoded(&[7; 32]).expect("key"),
            )
            .expect("open")
            .0,
        );
        let skew = Arc::new(SkewClock::new(Arc::new(clock.clone())));
        let policy = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let mut drainer = Drainer::new(
            outbox.clone(),
            policy,
            Arc::new(clock.clone()),
            skew,
            Retention::default(),
        );
        let results = Arc::new(Mutex::new(VecDeque::new()));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let scripted = Scripted {
            provider: Provider::Jd,
            results: results.clone(),
            sent: sent.clone(),
        };
        drainer.set_uploader(
            Provider::Jd,
            Ok(Box::new(scripted)),
            ProviderLimits { qps: 1000.0 },
        );
        Rig {
            _dir: dir,
            outbox,
            clock,
            drainer,
            results,
            sent,
        }
    }

    fn enqueue(r: &Rig, person: &str, provider: Provider) -> u64 {
        r.outbox
            .enqueue(NewEnrollment {
                person_id: person.into(),
                person_name: None,
                provider,
                group: Group {
                    id: "g".into(),
                    name: String::new(),
                },
                images: vec![NewImage {
                    bytes: vec![1, 2, 3],
                    width: 100,
                    height: 100,
                }],
                scores: vec![],
                consent: None,
            })
            .expect("enqueue")
            .id
    }

    /// Installs a factory of scripted JD uploaders; the count of its builds.
    fn counting_factory(r: &mut Rig) -> Arc<Mutex<u32>> {
        let builds = Arc::new(Mutex::new(0u32));
        let (results, sent, b) = (r.results.clone(), r.sent.clone(), builds.clone());
        let mut factory: UploaderFactory = Box::new(move |provider| {
            *b.lock().expect("lock") += 1;
            Ok(Box::new(Scripted {
                provider,
                results: results.clone(),
                sent: sent.clone(),
            }) as Box<dyn Uploader>)
        });
        let first = factory(Provider::Jd);
        r.drainer
            .set_uploader(Provider::Jd, first, ProviderLimits { qps: 1000.0 });
        r.drainer.set_factory(factory);
        builds
    }

    fn err(class: ErrorClass, code: &str) -> Result<Uploaded, UploadError> {
        Err(UploadError::new(class, code, "m"))
    }

    /// The next upload of the scripted uploader fails with `class` `code`.
    fn fail_next(r: &Rig, class: ErrorClass, code: &str) {
        r.results.lock().expect("lock").push_back(err(class, code));
    }

    fn no_wait(_: Duration) -> bool {
        true
    }

    #[test]
    fn success_deletes_the_entry_and_keeps_a_receipt() {
        let mut r = rig();
        let id = enqueue(&r, "a", Provider::Jd);
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!((s.uploaded, s.retried, s.dead), (1, 0, 0));
        assert!(r.outbox.get(id).is_err());
        assert_eq!(
            r.outbox.receipts().expect("receipts")[0].face_ids,
            vec!["f".to_string()]
        );
    }

    #[test]
    fn retryable_failures_back_off_and_keep_the_entry() {
        let mut r = rig();
        let id = enqueue(&r, "a", Provider::Jd);
        fail_next(&r, ErrorClass::Retry, "10043");
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!((s.uploaded, s.retried), (0, 1));
        let e = r.outbox.get(id).expect("kept");
        assert_eq!(e.state, EntryState::Pending);
        assert_eq!(e.next_attempt_at_ms, 1_000_000 + 2_000);
        assert_eq!(
            e.last_error.as_ref().map(|l| l.code.as_str()),
            Some("10043")
        );
        assert_eq!(s.next_due_ms, Some(1_002_000));
        // Not due yet: nothing is sent.
        r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(r.sent.lock().expect("lock").len(), 1);
        r.clock.advance(2_000);
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 1);
    }

    #[test]
    fn an_unreachable_host_is_tried_through_one_entry_until_it_answers() {
        let mut r = rig();
        let ids: Vec<u64> = (0..5)
            .map(|i| enqueue(&r, &format!("p{i}"), Provider::Jd))
            .collect();
        let tencent = enqueue(&r, "t", Provider::Tencent);
        fail_next(&r, ErrorClass::Retry, UploadCode::Network.as_str());
        fail_next(&r, ErrorClass::Retry, UploadCode::Network.as_str());
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.retried, 1, "one failure, not five");
        assert_eq!(*r.sent.lock().expect("lock"), vec![ids[0]]);
        // The others wait for the failed entry's backoff, not longer.
        assert_eq!(s.next_due_ms, Some(1_002_000));
        // Another vendor is not held: its entry was still tried (it has no
        // uploader in this rig, so it paused its own vendor instead).
        assert!(r.outbox.get(tencent).is_ok());
        assert!(
            s.paused
                .iter()
                .any(|p| p.provider == Provider::Tencent && p.code == "no_uploader"),
            "{:?}",
            s.paused
        );
        r.clock.advance(1_000);
        r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(r.sent.lock().expect("lock").len(), 1, "still held");
        r.clock.advance(1_000);
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.retried, 1);
        assert_eq!(*r.sent.lock().expect("lock"), vec![ids[0], ids[0]]);
        assert_eq!(
            s.next_due_ms,
            Some(1_002_000 + 4_000),
            "the probe backs off"
        );
        r.clock.advance(4_000);
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 5, "the host answers: everything goes");
    }

    #[test]
    fn a_clock_stepped_back_by_hours_cuts_the_waits_computed_in_the_old_time() {
        let mut r = rig();
        let id = enqueue(&r, "a", Provider::Jd);
        fail_next(&r, ErrorClass::Retry, "10043");
        r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(
            r.outbox.get(id).expect("kept").next_attempt_at_ms,
            1_002_000
        );
        // The clock was 5 hours ahead; NTP steps it back.
        let max = RetryPolicy::default().max_ms;
        r.clock.set(1_002_000 - 5 * 3_600_000);
        r.drainer.clock_stepped().expect("stepped");
        let now = r.clock.now_ms();
        assert_eq!(
            r.outbox.get(id).expect("kept").next_attempt_at_ms,
            now + max
        );
        r.clock.advance(max);
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 1, "uploaded within one longest backoff");
    }

    #[test]
    fn an_entry_an_older_release_queued_against_the_rules_dies_unsent() {
        let mut r = rig();
        let id = enqueue(&r, "emp-42", Provider::Jd);
        let legal = enqueue(&r, "emp-43", Provider::Jd);
        r.outbox
            .rewrite_for_test(id, |e| e.person_id = "emp 42 ".into())
            .expect("rewrite");
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!((s.uploaded, s.dead), (1, 1));
        assert_eq!(
            *r.sent.lock().expect("lock"),
            vec![legal],
            "only the legal one is sent"
        );
        let e = r.outbox.get(id).expect("entry kept");
        assert!(matches!(e.state, EntryState::Dead { .. }), "{e:?}");
        let last = e.last_error.expect("reason");
        assert_eq!(last.code, "invalid_person");
        assert!(last.message.contains("white space"), "{}", last.message);
    }

    #[test]
    fn never_goes_dead_with_the_vendor_code() {
        let mut r = rig();
        let id = enqueue(&r, "a", Provider::Jd);
        r.results
            .lock()
            .expect("lock")
            .push_back(err(ErrorClass::Never, "status:1"));
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.dead, 1);
        assert!(
            matches!(r.outbox.get(id).expect("kept").state, EntryState::Dead { ref reason, .. } if reason == "status:1")
        );
        assert_eq!(
            r.outbox.images(id).expect("images kept"),
            vec![vec![1, 2, 3]]
        );
    }

    #[test]
    fn operator_errors_pause_one_provider_and_keep_everything() {
        let mut r = rig();
        let a = enqueue(&r, "a", Provider::Jd);
        let b = enqueue(&r, "b", Provider::Jd);
        let t = enqueue(&r, "t", Provider::Tencent);
        r.results
            .lock()
            .expect("lock")
            .push_back(err(ErrorClass::Operator, "10001"));
        r.drainer.set_uploader(
            Provider::Tencent,
            Err(UploadError::new(
                ErrorClass::Operator,
                "credentials",
                "tencent.secret_id: not set",
            )),
            ProviderLimits { qps: 10.0 },
        );
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 0);
        assert_eq!(s.paused.len(), 2, "{s:?}");
        // Only the first JD entry was tried; everything is still pending.
        assert_eq!(*r.sent.lock().expect("lock"), vec![a]);
        for id in [a, b, t] {
            assert_eq!(r.outbox.get(id).expect("kept").state, EntryState::Pending);
        }
        // After the operator fixed it, uploads resume.
        r.drainer.resume();
        r.drainer.set_uploader(
            Provider::Tencent,
            Ok(Box::new(Scripted {
                provider: Provider::Tencent,
                results: r.results.clone(),
                sent: r.sent.clone(),
            })),
            ProviderLimits { qps: 10.0 },
        );
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 3);
    }

    #[test]
    fn a_pause_checks_itself_again_with_a_fresh_uploader_and_backs_off() {
        let mut r = rig();
        let recheck = PauseRecheck {
            min_ms: 300_000,
            max_ms: 3_600_000,
        };
        r.drainer = std::mem::replace(
            &mut r.drainer,
            Drainer::new(
                r.outbox.clone(),
                RetryPolicy::default(),
                Arc::new(r.clock.clone()),
                Arc::new(SkewClock::new(Arc::new(r.clock.clone()))),
                Retention::default(),
            ),
        )
        .with_recheck(recheck)
        .with_jitter(Jitter::with_seed(3));
        // The factory is what re-reads the secret: count its builds.
        let builds = counting_factory(&mut r);
        assert_eq!(*builds.lock().expect("lock"), 1);
        let a = enqueue(&r, "a", Provider::Jd);
        let t0 = r.clock.now_ms();
        r.results
            .lock()
            .expect("lock")
            .push_back(err(ErrorClass::Operator, "10010"));
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        let p = &s.paused[0];
        assert_eq!((p.code.as_str(), p.since_ms, p.checks), ("10010", t0, 0));
        let first = p.next_check_ms;
        assert!((t0 + 150_000..=t0 + 300_000).contains(&first), "{first}");
        assert_eq!(
            s.next_due_ms, None,
            "a paused provider's entries are not due"
        );
        // Before the check is due, nothing is sent.
        r.clock.set(first - 1);
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(r.sent.lock().expect("lock").len(), 1);
        assert_eq!(s.paused.len(), 1);
        // The check finds it still broken: paused since the start, the next
        // check further off.
        r.clock.set(first);
        r.results
            .lock()
            .expect("lock")
            .push_back(err(ErrorClass::Operator, "10010"));
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(r.sent.lock().expect("lock").len(), 2);
        assert_eq!(*builds.lock().expect("lock"), 2, "built anew for the check");
        let p = &s.paused[0];
        assert_eq!((p.since_ms, p.checks), (t0, 1));
        let second = p.next_check_ms;
        assert!(
            (first + 300_000..=first + 600_000).contains(&second),
            "{second}"
        );
        // The bill is paid: the next check uploads and the pause is gone.
        r.clock.set(second);
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 1);
        assert!(s.paused.is_empty(), "{s:?}");
        assert!(r.outbox.get(a).is_err(), "uploaded entries leave the queue");
        assert_eq!(*builds.lock().expect("lock"), 3);
    }

    #[test]
    fn an_operator_drain_lifts_pauses_with_a_fresh_uploader() {
        let mut r = rig();
        let builds = counting_factory(&mut r);
        enqueue(&r, "a", Provider::Jd);
        r.results
            .lock()
            .expect("lock")
            .push_back(err(ErrorClass::Operator, "10001"));
        assert_eq!(
            r.drainer.drain(&mut no_wait).expect("drain").paused.len(),
            1
        );
        r.drainer.resume();
        assert_eq!(*builds.lock().expect("lock"), 2);
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!((s.uploaded, s.paused.len()), (1, 0));
    }

    #[test]
    fn a_clock_error_is_retried_once_at_once_then_pauses() {
        let mut r = rig();
        enqueue(&r, "a", Provider::Jd);
        r.results
            .lock()
            .expect("lock")
            .push_back(err(ErrorClass::Clock, "10045"));
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.uploaded, 1, "the immediate retry succeeded");
        assert_eq!(r.sent.lock().expect("lock").len(), 2);
        enqueue(&r, "b", Provider::Jd);
        r.results.lock().expect("lock").extend([
            err(ErrorClass::Clock, "10045"),
            err(ErrorClass::Clock, "10045"),
        ]);
        let s = r.drainer.drain(&mut no_wait).expect("drain");
        assert_eq!(s.paused.len(), 1);
        assert_eq!(s.paused[0].code, "10045");
    }

    #[test]
    fn an_unknown_outcome_is_remembered_for_the_next_attempt() {
        let mut r = rig();
        let id = enqueue(&r, "a", Provider::Jd);
        let mut e = UploadError::new(ErrorClass::Retry, "no_answer", "timeout");
        e.outcome_unknown = true;
        r.results.lock().expect("lock").push_back(Err(e));
        r.drainer.drain(&mut no_wait).expect("drain");
        assert!(r.outbox.get(id).expect("kept").progress.outcome_unknown);
    }

    #[test]
    fn the_rate_limit_waits_between_uploads() {
        let mut r = rig();
        r.drainer.set_uploader(
            Provider::Jd,
            Ok(Box::new(Scripted {
                provider: Provider::Jd,
                results: r.results.clone(),
                sent: r.sent.clone(),
            })),
            ProviderLimits { qps: 2.0 },
        );
        for i in 0..5 {
            enqueue(&r, &format!("p{i}"), Provider::Jd);
        }
        let clock = r.clock.clone();
        let mut waited = Duration::ZERO;
        let s = r
            .drainer
            .drain(&mut |d| {
                waited += d;
                clock.advance(d.as_millis() as i64);
                true
            })
            .expect("drain");
        assert_eq!(s.uploaded, 5);
        // Burst of 2, then 3 more at 2 per second.
        assert_eq!(waited, Duration::from_millis(1_500));
    }
}
