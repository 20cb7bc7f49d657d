//! The answer lane: what the bridge sends in answer to outsiders (command results and refusals), in a bounded
//! queue of its own beside the live events of Plex, so that nothing an outsider publishes can push a Plex event
//! out or make the bridge's memory grow.
//!
//! Overflow rule: a refusal finds the lane full → it is not queued, and the caller (the command task) counts it
//! into one coalesced notice. The result of a command that ran is always queued (at most `commands.rate_limit`
//! of them per window), up to a hard cap of four times the lane's size, past which the oldest answer
//! is dropped (only during a long broker outage).

use std::collections::VecDeque;

use bytes::Bytes;

/// Answers waiting at most before refusals find the lane full.
pub const ANSWER_LANE: usize = 256;
/// Answers waiting at most, results of commands that ran included.
const HARD_CAP_FACTOR: usize = 4;
/// While both lanes have messages waiting, one answer goes out after this many live events, so answers keep
/// moving under load without taking more than a fifth of the broker link from Plex's events.
pub const LIVE_PER_ANSWER: u32 = 4;

/// The lane (see the module documentation).
#[derive(Debug)]
pub struct AnswerLane {
    queue: VecDeque<(String, Bytes)>,
    capacity: usize,
    /// Answers dropped at the hard cap, in all.
    dropped: u64,
}

impl AnswerLane {
    pub fn new(capacity: usize) -> Self {
        AnswerLane { queue: VecDeque::new(), capacity: capacity.max(1), dropped: 0 }
    }

    /// Queues an answer. A refusal (`always` false) is queued only while the lane has room; the result of a command
    /// that ran (`always`) always is, dropping the oldest answer at the hard cap. Returns whether it was queued.
    pub fn push(&mut self, topic: String, payload: Bytes, always: bool) -> bool {
        if !always && !self.has_room() {
            return false;
        }
        if self.queue.len() >= self.capacity * HARD_CAP_FACTOR {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back((topic, payload));
        true
    }

    /// Whether a refusal would be queued now.
    pub fn has_room(&self) -> bool {
        self.queue.len() < self.capacity
    }

    pub fn pop(&mut self) -> Option<(String, Bytes)> {
        self.queue.pop_front()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Answers dropped at the hard cap, in all.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_stop_at_the_lane_size_results_of_commands_that_ran_do_not() {
        let mut lane = AnswerLane::new(2);
        assert!(lane.push("r".into(), Bytes::from("1"), false));
        assert!(lane.push("r".into(), Bytes::from("2"), false));
        assert!(!lane.push("r".into(), Bytes::from("3"), false), "a full lane refuses a refusal");
        assert!(lane.push("r".into(), Bytes::from("ran"), true));
        for _ in 0..10 {
            lane.push("r".into(), Bytes::from("ran"), true);
        }
        assert_eq!(lane.queue.len(), 2 * HARD_CAP_FACTOR, "bounded even for results");
        assert_eq!(lane.dropped(), 11 + 2 - 2 * HARD_CAP_FACTOR as u64);
    }
}
