//! The daemon's deadlines as plain decisions on a monotonic `now`
//! ([`crate::clock::Timer`]): who the button enrolls and until when, how long stopping waits for the
//! workers, and how long the main loop may wait for its next event. The
//! main loop asks them with the timer's time; the tests with a fake one, so
//! no test sleeps to see a deadline pass.

use crate::clock::Timer;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

/// How long an upload in progress may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The longest an `arm` lasts, whatever the client asks.
pub const MAX_ARM: Duration = Duration::from_secs(3600);

/// The person the next button press enrolls (`arm`), until a deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArmedPerson {
    pub person: String,
    pub name: Option<String>,
    until: Duration,
}

impl ArmedPerson {
    /// Armed at `now` for `ttl_s` seconds, taken as 1 s to [`MAX_ARM`].
    pub fn new(person: String, name: Option<String>, ttl_s: u64, now: Duration) -> Self {
        let ttl = Duration::from_secs(ttl_s).clamp(Duration::from_secs(1), MAX_ARM);
        Self {
            person,
            name,
            until: now + ttl,
        }
    }

    /// Whether a press at `now` still enrolls this person.
    pub fn live_at(&self, now: Duration) -> bool {
        now < self.until
    }

    /// When a press stops enrolling this person.
    pub fn until(&self) -> Duration {
        self.until
    }

    /// Whole seconds left at `now` (what `arm` and `status` report).
    pub fn expires_in_s(&self, now: Duration) -> u64 {
        self.until.saturating_sub(now).as_secs()
    }
}

/// How long the main loop may wait for its next event: until the first of
/// `deadlines` (each `None` when it is not set), at once if one has passed,
/// and `None`, with none set, until an event comes.
pub fn wait_for_first(
    now: Duration,
    deadlines: impl IntoIterator<Item = Option<Duration>>,
) -> Option<Duration> {
    deadlines
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_sub(now))
}

/// Where the names of ended workers come from, waiting at most `within`
/// for the next one (each worker says its name as it ends).
pub trait Ended {
    fn next_within(&self, within: Duration) -> Result<&'static str, RecvTimeoutError>;
}

impl Ended for Receiver<&'static str> {
    fn next_within(&self, within: Duration) -> Result<&'static str, RecvTimeoutError> {
        self.recv_timeout(within)
    }
}

/// Waits up to `grace` for the workers `names` to end, woken by each end;
/// returns the names of those that did not.
pub fn wait_for_workers(
    names: &[&'static str],
    ended: &dyn Ended,
    grace: Duration,
    timer: &dyn Timer,
) -> Vec<&'static str> {
    let deadline = timer.elapsed() + grace;
    let mut running = names.to_vec();
    while !running.is_empty() {
        let now = timer.elapsed();
        if now >= deadline {
            break;
        }
        match ended.next_within(deadline - now) {
            Ok(name) => running.retain(|n| *n != name),
            Err(RecvTimeoutError::Timeout) => {}
            // Every worker has ended, and said so.
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    running
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn an_armed_person_is_enrolled_by_a_press_until_the_ttl_ends() {
        let a = ArmedPerson::new("p1".into(), None, 30, 100 * S);
        assert!(a.live_at(100 * S));
        assert!(a.live_at(129 * S + Duration::from_millis(999)));
        assert_eq!(a.expires_in_s(110 * S), 20);
        assert!(!a.live_at(130 * S), "a press at the TTL is too late");
        assert_eq!(a.expires_in_s(200 * S), 0);
    }

    #[test]
    fn an_arm_lasts_one_second_to_an_hour_whatever_is_asked() {
        assert_eq!(
            ArmedPerson::new("p".into(), None, 0, Duration::ZERO).expires_in_s(Duration::ZERO),
            1
        );
        let long = ArmedPerson::new("p".into(), None, u64::MAX, Duration::ZERO);
        assert_eq!(long.expires_in_s(Duration::ZERO), 3600);
        assert!(!long.live_at(MAX_ARM));
    }

    /// Workers that end at given times of a fake clock.
    struct EndsAt(FakeClock, std::cell::RefCell<Vec<(Duration, &'static str)>>);
    impl EndsAt {
        fn new(clock: &FakeClock, mut ends: Vec<(Duration, &'static str)>) -> Self {
            ends.sort();
            Self(clock.clone(), std::cell::RefCell::new(ends))
        }
    }
    impl Ended for EndsAt {
        fn next_within(&self, within: Duration) -> Result<&'static str, RecvTimeoutError> {
            let now = Timer::elapsed(&self.0);
            let mut ends = self.1.borrow_mut();
            match ends.first().copied() {
                Some((at, name)) if at <= now + within => {
                    ends.remove(0);
                    self.0.sleep(at.saturating_sub(now));
                    Ok(name)
                }
                _ => {
                    self.0.sleep(within);
                    Err(RecvTimeoutError::Timeout)
                }
            }
        }
    }

    #[test]
    fn the_main_loop_waits_for_its_first_deadline_or_for_an_event() {
        assert_eq!(wait_for_first(10 * S, [None, None]), None);
        assert_eq!(
            wait_for_first(10 * S, [Some(70 * S), None, Some(25 * S)]),
            Some(15 * S)
        );
        assert_eq!(
            wait_for_first(10 * S, [Some(4 * S)]),
            Some(Duration::ZERO),
            "a deadline passed: at once"
        );
    }

    #[test]
    fn stopping_waits_for_a_worker_that_ends_within_the_grace() {
        let clock = FakeClock::new(0);
        let ended = EndsAt::new(
            &clock,
            vec![(3 * S, "drain"), (Duration::ZERO, "capture"), (S, "led")],
        );
        let left = wait_for_workers(&["drain", "capture"], &ended, SHUTDOWN_GRACE, &clock);
        assert!(left.is_empty(), "{left:?}");
        assert_eq!(
            Timer::elapsed(&clock),
            3 * S,
            "it waited no longer than needed"
        );
    }

    #[test]
    fn stopping_gives_up_on_a_stuck_worker_at_the_grace() {
        let clock = FakeClock::new(0);
        let ended = EndsAt::new(&clock, vec![(Duration::ZERO, "capture")]);
        let left = wait_for_workers(&["drain", "capture"], &ended, SHUTDOWN_GRACE, &clock);
        assert_eq!(left, vec!["drain"]);
        assert_eq!(Timer::elapsed(&clock), SHUTDOWN_GRACE);
    }
}
