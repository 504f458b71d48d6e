//! Retry policy and rate limits: pure functions of (attempts, error class,
//! now). Nothing here sleeps, reads a clock or does I/O.

use crate::clock::UnixMillis;
use crate::model::ErrorClass;

/// Exponential backoff with jitter and a cap.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the first failure.
    pub base_ms: i64,
    /// Longest delay.
    pub max_ms: i64,
    /// Relative jitter: the delay is scaled by a factor in `1 ± jitter`.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            base_ms: 2_000,
            max_ms: 15 * 60_000,
            jitter: 0.2,
        }
    }
}

/// What to do with an entry after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Keep it pending; try again at this time.
    RetryAt(UnixMillis),
    /// Move it to dead: it will never succeed as it is.
    Dead,
    /// Keep it pending and stop uploading to this provider until an operator acts.
    Pause,
}

impl RetryPolicy {
    /// Delay before attempt `attempts + 1`; `unit` in [0, 1) picks the jitter.
    pub fn backoff_ms(&self, attempts: u32, unit: f64) -> i64 {
        let exp = attempts.saturating_sub(1).min(30);
        let raw = (self.base_ms as f64) * 2f64.powi(exp as i32);
        let capped = raw.min(self.max_ms as f64);
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * unit.clamp(0.0, 1.0);
        ((capped * factor).round() as i64).clamp(0, self.max_ms)
    }

    /// The decision for an error of `class` after `attempts` attempts.
    /// A clock error reaching here was already corrected and retried once.
    pub fn decide(
        &self,
        class: ErrorClass,
        attempts: u32,
        now: UnixMillis,
        not_before: Option<UnixMillis>,
        unit: f64,
    ) -> Decision {
        match class {
            ErrorClass::Retry => {
                let at = now + self.backoff_ms(attempts, unit);
                Decision::RetryAt(not_before.map_or(at, |nb| nb.max(at)))
            }
            ErrorClass::Never => Decision::Dead,
            ErrorClass::Operator | ErrorClass::Clock => Decision::Pause,
        }
    }
}

/// When a paused provider is checked again: an operator problem (a lapsed
/// bill, rotated credentials, a renewed CA) is often fixed in the cloud
/// console, far from the device, so a pause is tried again on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PauseRecheck {
    /// Longest wait before the first check after pausing.
    pub min_ms: i64,
    /// Longest wait between later checks.
    pub max_ms: i64,
}

impl Default for PauseRecheck {
    fn default() -> Self {
        Self {
            min_ms: 5 * 60_000,
            max_ms: 60 * 60_000,
        }
    }
}

impl PauseRecheck {
    /// The wait before check `checks + 1` of a pause (`checks` checks found
    /// it still broken): `min_ms` doubled for each of them, at most
    /// `max_ms`, then scaled by a factor in [0.5, 1] that `unit` in [0, 1)
    /// picks. The bound is never passed, and a fleet paused by the same
    /// lapse does not come back to the vendor in step.
    pub fn delay_ms(&self, checks: u32, unit: f64) -> i64 {
        let min = self.min_ms.max(1);
        let max = self.max_ms.max(min);
        let raw = (min as f64) * 2f64.powi(checks.min(30) as i32);
        let capped = raw.min(max as f64);
        let factor = 0.5 + 0.5 * unit.clamp(0.0, 1.0);
        ((capped * factor).round() as i64).clamp(1, max)
    }

    /// When a pause that `checks` checks found still broken, at `now`, is
    /// checked next.
    pub fn next_check_at(&self, now: UnixMillis, checks: u32, unit: f64) -> UnixMillis {
        now.saturating_add(self.delay_ms(checks, unit))
    }
}

/// How long the cloud may still be working on a request that got no
/// answer (a timeout, a dropped connection, a crash mid-upload): its
/// outcome is looked for only after this.
pub const UNANSWERED_SETTLE_MS: UnixMillis = 15_000;

/// The earliest time to look again at an entry planned for `at` whose
/// request went unanswered at `unanswered_at`: once the cloud has settled.
pub fn settled(at: UnixMillis, unanswered_at: UnixMillis) -> UnixMillis {
    at.max(unanswered_at.saturating_add(UNANSWERED_SETTLE_MS))
}

/// Whether a failed upload is tried again at once, in the same pass, after
/// `tries` tries: only a clock error, and only once (the client has learnt
/// the cloud's time from the refusal and signs with it now).
pub fn retry_at_once(class: ErrorClass, tries: u32) -> bool {
    class == ErrorClass::Clock && tries < 2
}

/// How a drain pass ended, for [`next_pass_at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassEnd {
    /// The pass ran; `next_due_ms` is the next pending entry's time (of a
    /// provider that is not paused), `next_check_ms` the earliest time a
    /// paused provider is checked again.
    Done {
        next_due_ms: Option<UnixMillis>,
        next_check_ms: Option<UnixMillis>,
    },
    /// The queue could not be read.
    Failed,
}

/// When the drain loop runs its next pass (unless woken earlier by a new
/// enrollment, a `drain` request or a step of the wall clock): at the next
/// due entry or pause check, whichever comes first, but at least 50 ms and
/// at most a minute from now; 5 s after a pass that could not read the
/// queue.
pub fn next_pass_at(end: PassEnd, now: UnixMillis) -> UnixMillis {
    match end {
        PassEnd::Failed => now + 5_000,
        PassEnd::Done {
            next_due_ms,
            next_check_ms,
        } => {
            let next = match (next_due_ms, next_check_ms) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            now + next.map_or(60_000, |t| (t - now).clamp(50, 60_000))
        }
    }
}

/// A token bucket: `rate` requests per second, bursts of up to `burst`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBucket {
    rate_per_ms: f64,
    burst: f64,
    tokens: f64,
    last_ms: UnixMillis,
}

impl TokenBucket {
    pub fn new(rate_per_s: f64, burst: f64, now: UnixMillis) -> Self {
        let burst = burst.max(1.0);
        Self {
            rate_per_ms: rate_per_s.max(0.001) / 1000.0,
            burst,
            tokens: burst,
            last_ms: now,
        }
    }

    /// Takes one token, or says how many milliseconds until one is available.
    pub fn try_take(&mut self, now: UnixMillis) -> Result<(), i64> {
        let elapsed = (now - self.last_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.rate_per_ms).min(self.burst);
        self.last_ms = now.max(self.last_ms);
        // The epsilon absorbs float rounding at the exact refill instant.
        const EPSILON: f64 = 1e-9;
        if self.tokens >= 1.0 - EPSILON {
            self.tokens = (self.tokens - 1.0).max(0.0);
            Ok(())
        } else {
            Err((((1.0 - self.tokens) / self.rate_per_ms) - 1e-6)
                .ceil()
                .max(1.0) as i64)
        }
    }
}

/// A small xorshift generator for jitter, seeded differently in every process
/// so a fleet of devices does not retry in step.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn seeded() -> Self {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        Self(h.finish() | 1)
    }

    pub fn with_seed(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A value in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_loop_waits_for_the_next_due_entry_within_bounds() {
        let now = 1_000_000;
        let done = |next_due_ms, next_check_ms| PassEnd::Done {
            next_due_ms,
            next_check_ms,
        };
        assert_eq!(
            next_pass_at(done(Some(now + 2_000), None), now),
            now + 2_000
        );
        assert_eq!(
            next_pass_at(done(Some(now - 10), None), now),
            now + 50,
            "overdue"
        );
        assert_eq!(
            next_pass_at(done(Some(now + 3_600_000), None), now),
            now + 60_000
        );
        assert_eq!(next_pass_at(done(None, None), now), now + 60_000, "empty");
        assert_eq!(
            next_pass_at(done(None, Some(now + 7_000)), now),
            now + 7_000,
            "a paused provider's check wakes the loop"
        );
        assert_eq!(
            next_pass_at(done(Some(now + 9_000), Some(now + 7_000)), now),
            now + 7_000,
            "whichever comes first"
        );
        assert_eq!(next_pass_at(PassEnd::Failed, now), now + 5_000);
    }

    #[test]
    fn a_pause_is_checked_within_its_bound_then_backs_off_to_the_cap() {
        let r = PauseRecheck::default();
        // The first check: at most 5 minutes after pausing, at least half that.
        assert_eq!(r.delay_ms(0, 1.0), 300_000);
        assert_eq!(r.delay_ms(0, 0.0), 150_000);
        // Then doubling, never past an hour.
        let upper: Vec<i64> = (0..8).map(|c| r.delay_ms(c, 1.0)).collect();
        assert_eq!(
            upper,
            [300_000, 600_000, 1_200_000, 2_400_000, 3_600_000, 3_600_000, 3_600_000, 3_600_000]
        );
        assert_eq!(r.delay_ms(u32::MAX, 1.0), 3_600_000);
        // Ten thousand devices paused at the same moment spread over the
        // band instead of coming back together.
        let mut j = Jitter::with_seed(7);
        let mut minutes = std::collections::BTreeMap::new();
        for _ in 0..10_000 {
            let d = r.delay_ms(0, j.unit());
            assert!((150_000..=300_000).contains(&d), "{d}");
            *minutes.entry(d / 60_000).or_insert(0u32) += 1;
        }
        assert!(minutes.len() >= 3, "{minutes:?}");
        assert!(minutes.values().all(|&n| n < 5_000), "{minutes:?}");
        // A bound below the first wait is still a bound.
        let tight = PauseRecheck {
            min_ms: 1_000,
            max_ms: 500,
        };
        assert_eq!(tight.delay_ms(3, 1.0), 1_000);
        assert_eq!(r.next_check_at(1_000, 0, 0.0), 151_000);
    }

    #[test]
    fn a_clock_error_is_retried_once_at_once_and_unanswered_uploads_settle_first() {
        assert!(retry_at_once(ErrorClass::Clock, 1));
        assert!(!retry_at_once(ErrorClass::Clock, 2));
        for class in [ErrorClass::Retry, ErrorClass::Operator, ErrorClass::Never] {
            assert!(!retry_at_once(class, 1), "{class:?}");
        }
        assert_eq!(settled(5_000, 1_000), 1_000 + UNANSWERED_SETTLE_MS);
        assert_eq!(settled(60_000, 1_000), 60_000, "a later plan stands");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        let delays: Vec<i64> = (1..=12).map(|a| p.backoff_ms(a, 0.5)).collect();
        assert_eq!(&delays[..4], &[2_000, 4_000, 8_000, 16_000]);
        assert_eq!(*delays.last().expect("last"), 900_000);
        assert!(delays.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(p.backoff_ms(u32::MAX, 0.5), 900_000);
    }

    #[test]
    fn jitter_stays_within_its_band() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff_ms(3, 0.0), 6_400);
        assert_eq!(p.backoff_ms(3, 0.5), 8_000);
        assert_eq!(p.backoff_ms(3, 1.0), 9_600);
        let mut j = Jitter::with_seed(42);
        for _ in 0..1000 {
            let u = j.unit();
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn decisions_by_class() {
        let p = RetryPolicy {
            jitter: 0.0,
            ..RetryPolicy::default()
        };
        assert_eq!(
            p.decide(ErrorClass::Retry, 1, 1_000, None, 0.5),
            Decision::RetryAt(3_000)
        );
        // JD's quota: not before the next day, even if backoff is shorter.
        assert_eq!(
            p.decide(ErrorClass::Retry, 1, 1_000, Some(50_000), 0.5),
            Decision::RetryAt(50_000)
        );
        assert_eq!(p.decide(ErrorClass::Never, 1, 0, None, 0.5), Decision::Dead);
        assert_eq!(
            p.decide(ErrorClass::Operator, 1, 0, None, 0.5),
            Decision::Pause
        );
        assert_eq!(
            p.decide(ErrorClass::Clock, 1, 0, None, 0.5),
            Decision::Pause
        );
    }

    #[test]
    fn token_bucket_limits_the_rate() {
        let mut b = TokenBucket::new(4.0, 2.0, 0);
        assert_eq!(b.try_take(0), Ok(()));
        assert_eq!(b.try_take(0), Ok(()));
        assert_eq!(b.try_take(0), Err(250));
        assert_eq!(b.try_take(249), Err(1));
        assert_eq!(b.try_take(250), Ok(()));
        // Over a simulated minute, at most rate * 60 + burst requests pass.
        let mut b = TokenBucket::new(4.0, 2.0, 0);
        let passed = (0..60_000)
            .step_by(10)
            .filter(|&t| b.try_take(t).is_ok())
            .count();
        assert!((240..=242).contains(&passed), "{passed}");
        // A clock stepping back does not mint tokens.
        let mut b = TokenBucket::new(1.0, 1.0, 10_000);
        assert_eq!(b.try_take(10_000), Ok(()));
        assert!(b.try_take(0).is_err());
    }
}
