//! The daemon's decisions about the clients that wait, as state that does no
//! I/O (rumqtt's `state.rs`): each method takes what happened and returns the
//! replies to send, to whom. The main loop sends them; the tests read them.
//!
//! - [`DrainClients`]: `drain` requests, their tickets, and what every pass
//!   since each request did.
//! - [`Followed`]: `enroll` requests that follow their upload, until the
//!   cloud has it, it dies, or the wait ends.
//! - [`on_press`]: whom a button press enrolls.

use crate::config::UnarmedPolicy;
use crate::control::answer::{Answer, Event, UploadFollowed};
use crate::control::Reply;
use crate::model::{ErrorCode, Failure, Receipt};
use crate::queue::drain::{DrainSummary, EntryReport};
use crate::service::deadlines::ArmedPerson;
use std::time::Duration;

/// `drain` clients. A request takes a ticket; a pass that began after the
/// ticket was taken serves it. A pass under way when the request came counts
/// too: its uploads are what the client asked for.
#[derive(Debug)]
pub struct DrainClients<C> {
    waiting: Vec<(u64, C, DrainSummary)>,
}

impl<C> Default for DrainClients<C> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
        }
    }
}

impl<C: Clone> DrainClients<C> {
    /// `client` asked for a drain and holds `ticket`.
    pub fn ask(&mut self, ticket: u64, client: C) {
        self.waiting.push((ticket, client, DrainSummary::default()));
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// An entry's outcome, for every client waiting on a drain.
    pub fn entry(&self, report: &EntryReport) -> Vec<(C, Reply)> {
        self.waiting
            .iter()
            .map(|(_, c, _)| (c.clone(), Reply::Event(Event::DrainEntry(report.clone()))))
            .collect()
    }

    /// A pass that served tickets up to `served` ended: every client adds
    /// it to what it has seen; those it served get the sum.
    pub fn passed(&mut self, summary: &DrainSummary, served: u64) -> Vec<(C, Reply)> {
        let mut replies = Vec::new();
        self.waiting.retain_mut(|(ticket, client, seen)| {
            seen.merge(summary);
            if *ticket > served {
                return true;
            }
            replies.push((
                client.clone(),
                Reply::answer(Answer::Drained(Box::new(seen.clone()))),
            ));
            false
        });
        replies
    }

    /// A pass that served tickets up to `served` could not read the queue.
    pub fn failed(&mut self, failure: &Failure, served: u64) -> Vec<(C, Reply)> {
        let mut replies = Vec::new();
        self.waiting.retain(|(ticket, client, _)| {
            if *ticket > served {
                return true;
            }
            replies.push((client.clone(), Reply::from(failure.clone())));
            false
        });
        replies
    }

    /// The daemon stops: every client is told its drain will not end here.
    pub fn stopping(&mut self) -> Vec<(C, Reply)> {
        self.waiting
            .drain(..)
            .map(|(_, client, _)| {
                (
                    client,
                    Reply::error(
                        ErrorCode::Stopping,
                        "enrolld is stopping; the queue stays as it is and drains once it runs again",
                    ),
                )
            })
            .collect()
    }
}

/// What the queue says of a followed entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fate {
    /// The cloud has it.
    Uploaded(Vec<String>),
    /// It died, with this code.
    Dead(String),
    /// Still waiting.
    Queued,
}

/// `enroll` clients that follow their entry's upload.
#[derive(Debug)]
pub struct Followed<C> {
    waiting: Vec<(u64, C, Duration)>,
}

impl<C> Default for Followed<C> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
        }
    }
}

/// A follower's wait ends this long after its entry was queued.
pub const FOLLOW_TIMEOUT: Duration = Duration::from_secs(60);

impl<C: Clone> Followed<C> {
    /// `client` follows entry `id`, queued at `now`.
    pub fn add(&mut self, id: u64, client: C, now: Duration) {
        self.waiting.push((id, client, now + FOLLOW_TIMEOUT));
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// When the first client's wait ends.
    pub fn next_deadline(&self) -> Option<Duration> {
        self.waiting.iter().map(|(_, _, until)| *until).min()
    }

    /// "Queued, not uploaded yet" to the clients whose wait is over at `now`.
    pub fn expire(&mut self, now: Duration) -> Vec<(C, Reply)> {
        let mut replies = Vec::new();
        self.waiting.retain(|(id, client, until)| {
            if now < *until {
                return true;
            }
            replies.push((
                client.clone(),
                Reply::answer(Answer::Followed(UploadFollowed {
                    queued: *id,
                    uploaded: false,
                    face_ids: Vec::new(),
                })),
            ));
            false
        });
        replies
    }

    /// Tells each client whose entry `fate` has settled (uploaded or dead).
    pub fn settle(&mut self, fate: impl Fn(u64) -> Fate) -> Vec<(C, Reply)> {
        let mut replies = Vec::new();
        self.waiting.retain(|(id, client, _)| match fate(*id) {
            Fate::Uploaded(face_ids) => {
                replies.push((
                    client.clone(),
                    Reply::Event(Event::Uploaded {
                        id: *id,
                        face_ids: face_ids.clone(),
                    }),
                ));
                replies.push((client.clone(), uploaded(*id, face_ids)));
                false
            }
            Fate::Dead(code) => {
                replies.push((
                    client.clone(),
                    Reply::error(
                        ErrorCode::UploadRefused,
                        format!("entry {id} is dead: {code}"),
                    ),
                ));
                false
            }
            Fate::Queued => true,
        });
        replies
    }

    /// The daemon stops: each client hears whether its upload made it
    /// (`receipts`), or that its entry stays queued.
    pub fn stopping(&mut self, receipts: &[Receipt]) -> Vec<(C, Reply)> {
        self.waiting
            .drain(..)
            .map(|(id, client, _)| {
                let reply = match receipts.iter().find(|r| r.id == id) {
                    Some(r) => uploaded(id, r.face_ids.clone()),
                    None => Reply::error(
                        ErrorCode::Stopping,
                        format!(
                            "enrolld is stopping; entry {id} stays queued and uploads once it runs again"
                        ),
                    ),
                };
                (client, reply)
            })
            .collect()
    }
}

fn uploaded(id: u64, face_ids: Vec<String>) -> Reply {
    Reply::answer(Answer::Followed(UploadFollowed {
        queued: id,
        uploaded: true,
        face_ids,
    }))
}

/// What a button press does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Press {
    /// Enroll this person now.
    Enroll {
        person: String,
        name: Option<String>,
    },
    /// Nobody is armed and `button.unarmed = "reject"`.
    Refuse,
}

/// A press at `now`: the armed person if the arming is still live (it is
/// used up either way), else the id the template makes, or a refusal.
pub fn on_press(
    armed: &mut Option<ArmedPerson>,
    now: Duration,
    unarmed: UnarmedPolicy,
    from_template: impl FnOnce() -> String,
) -> Press {
    match (armed.take().filter(|a| a.live_at(now)), unarmed) {
        (Some(a), _) => Press::Enroll {
            person: a.person,
            name: a.name,
        },
        (None, UnarmedPolicy::Template) => Press::Enroll {
            person: from_template(),
            name: None,
        },
        (None, UnarmedPolicy::Reject) => Press::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{FakeClock, Timer};

    const S: Duration = Duration::from_secs(1);

    fn summary(uploaded: u64) -> DrainSummary {
        DrainSummary {
            uploaded,
            ..DrainSummary::default()
        }
    }

    fn drained(reply: &Reply) -> Option<u64> {
        match reply {
            Reply::Answer {
                result: Answer::Drained(s),
            } => Some(s.uploaded),
            _ => None,
        }
    }

    #[test]
    fn a_press_enrolls_the_armed_person_once_then_follows_the_policy() {
        let clock = FakeClock::new(0);
        let mut armed = Some(ArmedPerson::new(
            "p-1".into(),
            Some("Ann".into()),
            60,
            clock.elapsed(),
        ));
        let template = || "kiosk-1700000000".to_string();
        assert_eq!(
            on_press(&mut armed, clock.elapsed(), UnarmedPolicy::Reject, template),
            Press::Enroll {
                person: "p-1".into(),
                name: Some("Ann".into())
            }
        );
        assert!(armed.is_none(), "an arming is used once");
        assert_eq!(
            on_press(&mut armed, clock.elapsed(), UnarmedPolicy::Reject, template),
            Press::Refuse
        );
        // An arming that ran out is not used, and is gone.
        armed = Some(ArmedPerson::new("p-2".into(), None, 5, clock.elapsed()));
        clock.sleep(5 * S);
        assert_eq!(
            on_press(
                &mut armed,
                clock.elapsed(),
                UnarmedPolicy::Template,
                template
            ),
            Press::Enroll {
                person: "kiosk-1700000000".into(),
                name: None
            }
        );
        assert!(armed.is_none());
    }

    #[test]
    fn a_drain_client_gets_the_sum_of_every_pass_since_it_asked() {
        let mut d = DrainClients::default();
        // Ticket 1 came while pass 0 (serving tickets up to 0) was under way.
        d.ask(1, "a");
        assert!(d.passed(&summary(30), 0).is_empty(), "not served yet");
        d.ask(2, "b");
        let first = d.passed(&summary(2), 1);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].0, "a");
        assert_eq!(drained(&first[0].1), Some(32), "both passes it saw");
        let second = d.passed(&summary(0), 2);
        assert_eq!(
            drained(&second[0].1),
            Some(2),
            "the pass under way when b asked, then its own"
        );
        assert!(d.is_empty());
    }

    #[test]
    fn entries_reach_every_drain_client_and_a_failure_only_the_served() {
        let mut d = DrainClients::default();
        d.ask(1, "a");
        d.ask(2, "b");
        let report = EntryReport::Dead {
            id: 7,
            person: "p".into(),
            provider: crate::model::Provider::Jd,
            code: "10043".into(),
            message: "no face".into(),
        };
        let told: Vec<&str> = d.entry(&report).into_iter().map(|(c, _)| c).collect();
        assert_eq!(told, ["a", "b"]);
        let failed = d.failed(&Failure::new(ErrorCode::StorageError, "disk"), 1);
        assert_eq!(failed.len(), 1);
        assert!(matches!(
            failed[0].1,
            Reply::Error {
                code: ErrorCode::StorageError,
                ..
            }
        ));
        let left = d.stopping();
        assert_eq!(left.len(), 1);
        assert!(matches!(
            left[0].1,
            Reply::Error {
                code: ErrorCode::Stopping,
                ..
            }
        ));
    }

    #[test]
    fn a_follower_hears_its_upload_its_death_or_the_end_of_its_wait() {
        let clock = FakeClock::new(0);
        let mut f = Followed::default();
        f.add(1, "up", clock.elapsed());
        f.add(2, "dead", clock.elapsed());
        clock.sleep(10 * S);
        f.add(3, "slow", clock.elapsed());
        assert_eq!(f.next_deadline(), Some(FOLLOW_TIMEOUT));
        let settled = f.settle(|id| match id {
            1 => Fate::Uploaded(vec!["f1".into()]),
            2 => Fate::Dead("10043".into()),
            _ => Fate::Queued,
        });
        let to: Vec<&str> = settled.iter().map(|(c, _)| *c).collect();
        assert_eq!(to, ["up", "up", "dead"], "an event, then the answer");
        assert!(
            matches!(&settled[1].1, Reply::Answer { result: Answer::Followed(u) } if u.uploaded)
        );
        assert!(matches!(
            &settled[2].1,
            Reply::Error {
                code: ErrorCode::UploadRefused,
                ..
            }
        ));
        clock.sleep(FOLLOW_TIMEOUT - S);
        assert!(
            f.expire(clock.elapsed()).is_empty(),
            "59 s after it was queued"
        );
        clock.sleep(S);
        let expired = f.expire(clock.elapsed());
        assert!(matches!(
            &expired[..],
            [("slow", Reply::Answer { result: Answer::Followed(u) })] if !u.uploaded
        ));
        assert!(f.is_empty() && f.next_deadline().is_none());
    }

    #[test]
    fn followers_left_at_a_stop_hear_whether_their_upload_made_it() {
        let mut f = Followed::default();
        f.add(1, "a", Duration::ZERO);
        f.add(2, "b", Duration::ZERO);
        let receipt = Receipt {
            id: 1,
            person_id: "p".into(),
            provider: crate::model::Provider::Jd,
            group: crate::model::Group::default(),
            face_ids: vec!["f1".into()],
            created_at_ms: 0,
            uploaded_at_ms: 0,
            attempts: 1,
            created_boot: None,
            uploaded_boot: None,
            consent: None,
            created_person: false,
        };
        let told = f.stopping(&[receipt]);
        assert!(matches!(&told[0].1, Reply::Answer { result: Answer::Followed(u) } if u.uploaded));
        assert!(matches!(
            &told[1].1,
            Reply::Error {
                code: ErrorCode::Stopping,
                ..
            }
        ));
    }
}
