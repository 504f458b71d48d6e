//! The daemon's deadlines as plain decisions on a monotonic `now`
//! ([`crate::clock::Timer`]): who the button enrolls and until when, when a
//! `follow_upload` client stops waiting, and how long stopping waits for the
//! workers. The main loop asks them with the timer's time; the tests with a
//! fake one, so no test sleeps to see a deadline pass.

use crate::clock::Timer;
use crate::control::answer::{Answer, UploadFollowed};
use crate::control::Reply;
use std::sync::mpsc::SyncSender;
use std::time::Duration;

/// How long an upload in progress may take to finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// A `follow_upload` client waits at most this long.
pub const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);
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

    /// Whole seconds left at `now` (what `arm` and `status` report).
    pub fn expires_in_s(&self, now: Duration) -> u64 {
        self.until.saturating_sub(now).as_secs()
    }
}

/// Clients waiting for an upload to be confirmed (`follow_upload`).
#[derive(Debug, Default)]
pub struct Followers(Vec<(u64, SyncSender<Reply>, Duration)>);

impl Followers {
    /// A client follows entry `id` from `now`, for [`FOLLOW_TIMEOUT`].
    pub fn add(&mut self, id: u64, reply: SyncSender<Reply>, now: Duration) {
        self.0.push((id, reply, now + FOLLOW_TIMEOUT));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Answers "queued, not uploaded yet" to the clients whose wait is over
    /// at `now`, and forgets them.
    pub fn expire(&mut self, now: Duration) {
        self.0.retain(|(id, reply, until)| {
            if now < *until {
                return true;
            }
            let _ = reply.try_send(Reply::answer(Answer::Followed(UploadFollowed {
                queued: *id,
                uploaded: false,
                face_ids: Vec::new(),
            })));
            false
        });
    }

    /// Keeps the clients for which `answer` (given the entry id and the
    /// client's channel) returns true: it has not answered them yet.
    pub fn retain(&mut self, mut answer: impl FnMut(u64, &SyncSender<Reply>) -> bool) {
        self.0.retain(|(id, reply, _)| answer(*id, reply));
    }

    /// Every client, for the last answer when the daemon stops.
    pub fn take_all(&mut self) -> Vec<(u64, SyncSender<Reply>)> {
        self.0.drain(..).map(|(id, reply, _)| (id, reply)).collect()
    }
}

/// A worker whose end stopping waits for.
pub trait Worker {
    fn is_finished(&self) -> bool;
}

impl<T> Worker for std::thread::JoinHandle<T> {
    fn is_finished(&self) -> bool {
        std::thread::JoinHandle::is_finished(self)
    }
}

/// Waits up to `grace` for every worker to finish, looking every 20 ms;
/// returns the names of those that did not.
pub fn wait_for_workers<'a>(
    workers: &[(&'a str, &dyn Worker)],
    grace: Duration,
    timer: &dyn Timer,
) -> Vec<&'a str> {
    let deadline = timer.elapsed() + grace;
    loop {
        let running: Vec<&str> = workers
            .iter()
            .filter(|(_, w)| !w.is_finished())
            .map(|(name, _)| *name)
            .collect();
        let now = timer.elapsed();
        if running.is_empty() || now >= deadline {
            return running;
        }
        timer.sleep(Duration::from_millis(20).min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::FakeClock;
    use std::sync::mpsc;

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

    #[test]
    fn a_follower_is_told_queued_not_uploaded_when_its_wait_ends() {
        let mut f = Followers::default();
        let (tx, rx) = mpsc::sync_channel(4);
        f.add(7, tx, 5 * S);
        f.expire(5 * S + FOLLOW_TIMEOUT - Duration::from_millis(1));
        assert!(rx.try_recv().is_err(), "answered before its time");
        assert!(!f.is_empty());
        f.expire(5 * S + FOLLOW_TIMEOUT);
        match rx.try_recv() {
            Ok(Reply::Answer {
                result: Answer::Followed(f),
            }) => assert_eq!(
                f,
                UploadFollowed {
                    queued: 7,
                    uploaded: false,
                    face_ids: vec![]
                }
            ),
            other => panic!("{other:?}"),
        }
        assert!(f.is_empty());
    }

    #[test]
    fn followers_answered_by_an_upload_are_forgotten_and_the_rest_kept() {
        let mut f = Followers::default();
        let (tx, _rx) = mpsc::sync_channel(4);
        f.add(1, tx.clone(), S);
        f.add(2, tx, S);
        f.retain(|id, _| id != 1);
        let left: Vec<u64> = f.take_all().into_iter().map(|(id, _)| id).collect();
        assert_eq!(left, vec![2]);
        assert!(f.is_empty());
    }

    /// A worker that ends when the fake clock reaches `at`.
    struct EndsAt(FakeClock, Option<Duration>);
    impl Worker for EndsAt {
        fn is_finished(&self) -> bool {
            self.1.is_some_and(|at| Timer::elapsed(&self.0) >= at)
        }
    }

    #[test]
    fn stopping_waits_for_a_worker_that_ends_within_the_grace() {
        let clock = FakeClock::new(0);
        let drain = EndsAt(clock.clone(), Some(3 * S));
        let capture = EndsAt(clock.clone(), Some(Duration::ZERO));
        let left = wait_for_workers(
            &[("drain", &drain), ("capture", &capture)],
            SHUTDOWN_GRACE,
            &clock,
        );
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
        let stuck = EndsAt(clock.clone(), None);
        let done = EndsAt(clock.clone(), Some(Duration::ZERO));
        let left = wait_for_workers(
            &[("drain", &stuck), ("capture", &done)],
            SHUTDOWN_GRACE,
            &clock,
        );
        assert_eq!(left, vec!["drain"]);
        assert_eq!(Timer::elapsed(&clock), SHUTDOWN_GRACE);
    }
}
