//! What the publisher still has to send: retained state (the truth now), a bounded queue of live events, and
//! the answer lane (command results, [`super::answers`]).
//!
//! Producers never wait for the broker: they put messages here and return. Retained state is a map, so it
//! can never overflow and a reconnect can re-publish all of it; live events share one bounded queue whose
//! oldest entries are dropped (and counted) when it is full, e.g. while the broker is down. Answers to
//! outsiders have their own lane, so they can never take a live event's place.
//!
//! The outbox also follows each message handed to rumqttc until the broker acknowledges it, because rumqttc
//! forgets unacknowledged messages when a clean session reconnects: lost live events are counted as dropped,
//! lost clears (empty retained messages) are kept and sent again.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;

use super::answers::{AnswerLane, ANSWER_LANE, LIVE_PER_ANSWER};

/// One thing the publisher must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A live event: not retained, queued (and possibly dropped) while the broker is away.
    Live { topic: String, payload: Bytes },
    /// Retained state: never dropped; re-published after every broker reconnect.
    Retain { topic: String, payload: Bytes },
    /// The end of retained state: an empty retained message.
    Clear { topic: String },
}

/// Which lane a message comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// Retained state (and clears).
    Retained,
    /// A live event of Plex.
    Live,
    /// An answer to an outsider (a command's result).
    Answer,
}

/// A message ready for the broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    pub topic: String,
    pub payload: Bytes,
    pub lane: Lane,
}

impl Outgoing {
    /// Whether it goes out with the retain flag.
    pub fn retain(&self) -> bool {
        self.lane == Lane::Retained
    }
}

#[derive(Debug)]
struct RetainedEntry {
    /// Empty for a clear that has not been acknowledged yet.
    payload: Bytes,
    /// Waiting in `dirty` to be (re-)sent.
    dirty: bool,
}

/// What a handed-over message was, for the accounting when it is acknowledged or lost (taken before the message
/// itself goes to the client).
#[derive(Debug)]
pub enum Sent {
    Live,
    Answer,
    Retained,
    Clear(String),
}

impl Sent {
    /// What `message` is, for the accounting.
    pub fn of(message: &Outgoing) -> Sent {
        match (message.lane, message.payload.is_empty()) {
            (Lane::Live, _) => Sent::Live,
            (Lane::Answer, _) => Sent::Answer,
            (Lane::Retained, false) => Sent::Retained,
            (Lane::Retained, true) => Sent::Clear(message.topic.clone()),
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    retained: BTreeMap<String, RetainedEntry>,
    dirty: VecDeque<String>,
    live: VecDeque<(String, Bytes)>,
    live_capacity: usize,
    answers: AnswerLane,
    /// Live events sent since the last answer, while answers were waiting ([`LIVE_PER_ANSWER`]).
    live_since_answer: u32,
    handed: VecDeque<Sent>,
    /// What each packet id in flight carries, indexed by the id (the client hands them out from 1 to
    /// `mqtt.max_inflight`): a look-up per acknowledgement without hashing.
    inflight: Vec<Option<Sent>>,
    dropped: u64,
    /// Live events dropped by overflow since the queue was last empty (0: no overflow episode under way).
    episode_dropped: u64,
}

impl Outbox {
    /// An empty outbox holding at most `live_capacity` live events (at least one).
    pub fn new(live_capacity: usize) -> Self {
        Outbox {
            retained: BTreeMap::new(),
            dirty: VecDeque::new(),
            live: VecDeque::new(),
            live_capacity: live_capacity.max(1),
            answers: AnswerLane::new(ANSWER_LANE),
            live_since_answer: 0,
            handed: VecDeque::new(),
            inflight: Vec::new(),
            dropped: 0,
            episode_dropped: 0,
        }
    }

    /// Sets retained state. Publishing the same payload again is a no-op, so callers need not dedupe.
    pub fn retain(&mut self, topic: String, payload: Bytes) {
        if let Some(entry) = self.retained.get_mut(&topic) {
            if entry.payload == payload {
                return;
            }
            entry.payload = payload;
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push_back(topic);
            }
            return;
        }
        self.retained.insert(topic.clone(), RetainedEntry { payload, dirty: true });
        self.dirty.push_back(topic);
    }

    /// Clears retained state with an empty retained message, kept until the broker acknowledges it.
    pub fn clear(&mut self, topic: String) {
        self.retain(topic, Bytes::new());
    }

    /// The current payload of a retained topic (`None` if never set or cleared).
    pub fn retained_payload(&self, topic: &str) -> Option<&Bytes> {
        self.retained.get(topic).map(|e| &e.payload).filter(|p| !p.is_empty())
    }

    /// Retained topics (not cleared) starting with `prefix`.
    pub fn retained_topics(&self, prefix: &str) -> Vec<String> {
        self.retained
            .range(prefix.to_owned()..)
            .take_while(|(topic, _)| topic.starts_with(prefix))
            .filter(|(_, entry)| !entry.payload.is_empty())
            .map(|(topic, _)| topic.clone())
            .collect()
    }

    /// Queues a live event, dropping the oldest one when the queue holds `limit` events already (the capacity
    /// while the broker is unreachable; more while it is connected, when the reader waits for room instead, and
    /// only the items of the frame being read can arrive meanwhile). Returns whether something was dropped.
    pub fn push_live(&mut self, topic: String, payload: Bytes, limit: usize) -> bool {
        let overflow = self.live.len() >= limit.max(1);
        if overflow {
            self.live.pop_front();
            self.dropped += 1;
            self.episode_dropped += 1;
        }
        self.live.push_back((topic, payload));
        overflow
    }

    /// Live events waiting now.
    pub fn live_len(&self) -> usize {
        self.live.len()
    }

    /// How many live events the queue holds before it counts as full.
    pub fn live_capacity(&self) -> usize {
        self.live_capacity
    }

    /// Live events dropped by overflow in the episode under way (since the live queue was last empty).
    pub fn overflow_episode(&self) -> u64 {
        self.episode_dropped
    }

    /// Ends the overflow episode once the live queue has drained: returns how many it dropped (None while the
    /// queue still holds events, or when nothing was dropped).
    pub fn end_overflow_episode(&mut self) -> Option<u64> {
        if self.episode_dropped == 0 || !self.live.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.episode_dropped))
    }

    /// Queues an answer to an outsider in the answer lane (see [`AnswerLane::push`]); false when a refusal found
    /// the lane full (nothing queued).
    pub fn push_answer(&mut self, topic: String, payload: Bytes, always: bool) -> bool {
        self.answers.push(topic, payload, always)
    }

    /// Whether a refusal would find room in the answer lane now.
    pub fn answer_room(&self) -> bool {
        self.answers.has_room()
    }

    /// The next message to send: changed retained state first (it is the truth users act on), then live events
    /// oldest first, with one waiting answer after every [`LIVE_PER_ANSWER`] live events. The caller must hand it
    /// to the client and then call [`Outbox::handed_over`].
    pub fn pop(&mut self) -> Option<Outgoing> {
        while let Some(topic) = self.dirty.pop_front() {
            if let Some(entry) = self.retained.get_mut(&topic) {
                if entry.dirty {
                    entry.dirty = false;
                    let payload = entry.payload.clone();
                    return Some(Outgoing { topic, payload, lane: Lane::Retained });
                }
            }
        }
        let answer_due = self.live.is_empty() || self.live_since_answer >= LIVE_PER_ANSWER;
        if answer_due {
            if let Some((topic, payload)) = self.answers.pop() {
                self.live_since_answer = 0;
                return Some(Outgoing { topic, payload, lane: Lane::Answer });
            }
        }
        let (topic, payload) = self.live.pop_front()?;
        if !self.answers.is_empty() {
            self.live_since_answer += 1;
        }
        Some(Outgoing { topic, payload, lane: Lane::Live })
    }

    /// Records that a message (noted as `sent` before it went) is in the client's channel, in the order the
    /// client will write it.
    pub fn handed_over(&mut self, sent: Sent) {
        self.handed.push_back(sent);
    }

    /// A message was taken from the outbox but not handed to the client (the connection changed first): retained
    /// state and clears are sent again on the next session anyway; a live event is lost and counted as dropped.
    pub fn not_handed_over(&mut self, sent: &Sent) {
        if matches!(sent, Sent::Live) {
            self.dropped += 1;
        }
    }

    /// The client wrote the next handed-over message with this packet id (0 for QoS 0, which is never acked).
    pub fn written(&mut self, pkid: u16) {
        if let Some(sent) = self.handed.pop_front() {
            if pkid == 0 {
                self.settle(sent);
            } else {
                let slot = usize::from(pkid);
                if self.inflight.len() <= slot {
                    self.inflight.resize_with(slot + 1, || None);
                }
                self.inflight[slot] = Some(sent);
            }
        }
    }

    /// The broker acknowledged packet `pkid`.
    pub fn acknowledged(&mut self, pkid: u16) {
        if let Some(sent) = self.inflight.get_mut(usize::from(pkid)).and_then(Option::take) {
            self.settle(sent);
        }
    }

    fn settle(&mut self, sent: Sent) {
        if let Sent::Clear(topic) = sent {
            if self.retained.get(&topic).is_some_and(|e| e.payload.is_empty() && !e.dirty) {
                self.retained.remove(&topic);
            }
        }
    }

    /// The connection was lost: everything handed over but not acknowledged is gone with rumqttc's clean
    /// session. Lost live events are counted as dropped; the number lost is returned.
    pub fn connection_lost(&mut self) -> u64 {
        let lost = self
            .handed
            .drain(..)
            .chain(self.inflight.iter_mut().filter_map(Option::take))
            .filter(|sent| matches!(sent, Sent::Live))
            .count() as u64;
        self.dropped += lost;
        lost
    }

    /// A new broker session began: every retained topic (and every clear not yet acknowledged) is sent again,
    /// because a broker without persistence has forgotten them.
    pub fn resend_all_retained(&mut self) {
        for (topic, entry) in self.retained.iter_mut() {
            if !entry.dirty {
                entry.dirty = true;
                self.dirty.push_back(topic.clone());
            }
        }
    }

    /// Sends again every retained topic (not clears) starting with `prefix`, even if unchanged.
    pub fn resend_matching(&mut self, prefix: &str) {
        for (topic, entry) in self.retained.range_mut(prefix.to_owned()..) {
            if !topic.starts_with(prefix) {
                break;
            }
            if !entry.dirty && !entry.payload.is_empty() {
                entry.dirty = true;
                self.dirty.push_back(topic.clone());
            }
        }
    }

    /// Live events dropped so far (queue overflow plus events lost with a broker connection).
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Answers dropped at the answer lane's hard cap so far (only during a long broker outage).
    pub fn dropped_answers(&self) -> u64 {
        self.answers.dropped()
    }
}

#[cfg(test)]
mod lane_tests {
    use super::*;

    #[test]
    fn answers_never_take_a_live_events_place_and_still_move_under_load() {
        let mut o = Outbox::new(4);
        for i in 0..4 {
            o.push_live("live".into(), Bytes::from(i.to_string()), 4);
        }
        for _ in 0..1000 {
            o.push_answer("result".into(), Bytes::from("refused"), false);
        }
        assert_eq!(o.dropped(), 0, "a flood of answers drops no live event");
        let mut lanes = Vec::new();
        while let Some(m) = o.pop() {
            lanes.push(m.lane);
            if lanes.len() == 6 {
                break;
            }
        }
        assert_eq!(lanes, [Lane::Live, Lane::Live, Lane::Live, Lane::Live, Lane::Answer, Lane::Answer]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(outbox: &mut Outbox) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        while let Some(m) = outbox.pop() {
            outbox.handed_over(Sent::of(&m));
            out.push((m.topic.clone(), String::from_utf8(m.payload.to_vec()).unwrap(), m.retain()));
        }
        out
    }

    #[test]
    fn retained_state_goes_first_and_keeps_only_the_latest() {
        let mut o = Outbox::new(10);
        o.push_live("live".into(), Bytes::from("1"), 10);
        o.retain("r".into(), Bytes::from("a"));
        o.retain("r".into(), Bytes::from("b"));
        assert_eq!(drain(&mut o), [("r".into(), "b".into(), true), ("live".into(), "1".into(), false)]);
        o.retain("r".into(), Bytes::from("b"));
        assert!(o.pop().is_none(), "an unchanged retained payload is not sent again");
    }

    #[test]
    fn overflow_drops_oldest_live_events_never_retained_state() {
        let mut o = Outbox::new(2);
        o.retain("r".into(), Bytes::from("x"));
        for i in 0..5 {
            o.push_live("live".into(), Bytes::from(i.to_string()), 2);
        }
        assert_eq!(o.dropped(), 3);
        assert_eq!(o.overflow_episode(), 3);
        assert_eq!(o.end_overflow_episode(), None, "the episode lasts while the queue holds events");
        let sent = drain(&mut o);
        assert_eq!(sent.iter().map(|m| m.1.as_str()).collect::<Vec<_>>(), ["x", "3", "4"]);
        assert_eq!(o.end_overflow_episode(), Some(3));
        assert_eq!((o.overflow_episode(), o.end_overflow_episode()), (0, None));
        assert_eq!(o.dropped(), 3, "the total stays");
    }

    #[test]
    fn reconnect_resends_retained_and_unacknowledged_clears() {
        let mut o = Outbox::new(10);
        o.retain("a".into(), Bytes::from("1"));
        o.retain("b".into(), Bytes::from("2"));
        o.clear("b".into());
        o.push_live("live".into(), Bytes::from("e"), 10);
        assert_eq!(drain(&mut o).len(), 3);
        o.written(1);
        o.written(2);
        o.written(3);
        o.acknowledged(1);
        assert_eq!(o.connection_lost(), 1, "the unacknowledged live event is lost and counted");
        assert_eq!(o.dropped(), 1);
        o.resend_all_retained();
        assert_eq!(drain(&mut o), [("a".into(), "1".into(), true), ("b".into(), "".into(), true)]);
        o.written(7);
        o.written(8);
        o.acknowledged(8);
        o.resend_all_retained();
        assert_eq!(drain(&mut o), [("a".into(), "1".into(), true)], "an acknowledged clear is forgotten");
        assert!(o.retained_topics("").contains(&"a".to_owned()));
    }
}
