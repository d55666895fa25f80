//! A room's stored messages in seq order on a receiving node, whatever order
//! the broker brings them in and whatever it loses.
//!
//! Each node publishes its own senders' messages of a room in seq order
//! (`sequencer`), but publications of two nodes interleave on the way, and a
//! broker outage loses some. [`SeqOrder`] is the receiving side: it hands on
//! a message only after every lower seq, holds one that comes early, and asks
//! for a fill from the store when a gap does not close by itself within
//! [`GAP_WAIT`] (or when the broker's link is back after an outage). The
//! store is authoritative: a room's seqs are committed in order (SQLite has
//! one writer; PostgreSQL takes them from the room's counter row, locked
//! until commit), so once it shows seq `s`, everything below `s` that will
//! ever exist is there too.
//!
//! Pure state, no I/O: the hub runs the fill (`hub::fill_room`) and delivers
//! what this hands back.

use std::collections::BTreeMap;
use std::time::Duration;

use confab_conn::ws::Utf8Bytes;

/// How long an early message waits for the lower seqs (in flight from other
/// nodes) before the store is asked for them.
pub(crate) const GAP_WAIT: Duration = Duration::from_millis(50);

/// Most early messages a room holds; past it they go out in seq order over
/// the gap (a store that cannot be read for long), rather than grow.
pub(crate) const PENDING_MAX: usize = 1024;

/// A message ready for the room's members: its sender and its frame.
pub(crate) type Ready = (String, Utf8Bytes);

/// What to do after a message arrived.
#[derive(Debug, Default)]
pub(crate) struct Arrival {
    /// Deliver these now, in this order.
    pub(crate) ready: Vec<Ready>,
    /// Start a fill (after [`GAP_WAIT`]): a gap opened and no fill runs.
    pub(crate) start_fill: bool,
}

/// One room's order on this node.
#[derive(Debug)]
pub(crate) struct SeqOrder {
    /// The highest seq handed on (or known delivered when the room was made).
    last: u64,
    /// Messages that came before a lower seq, by seq.
    pending: BTreeMap<u64, Ready>,
    /// A fill task runs for the room.
    filling: bool,
    /// A fill was asked for while one ran: the running one reads once more.
    again: bool,
}

impl SeqOrder {
    /// A room whose members have every message up to `last`.
    pub(crate) fn new(last: u64) -> SeqOrder {
        SeqOrder {
            last,
            pending: BTreeMap::new(),
            filling: false,
            again: false,
        }
    }

    /// The highest seq handed on.
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    /// Whether messages wait for a lower seq.
    pub(crate) fn has_gap(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Message `seq` arrived from the broker.
    pub(crate) fn arrive(&mut self, seq: u64, sender: String, frame: Utf8Bytes) -> Arrival {
        let mut arrival = Arrival::default();
        if seq <= self.last {
            return arrival; // Delivered already (by a fill, or twice published).
        }
        if seq == self.last + 1 && self.pending.is_empty() {
            self.last = seq;
            arrival.ready.push((sender, frame));
            return arrival;
        }
        self.pending.insert(seq, (sender, frame));
        self.drain(&mut arrival.ready);
        if self.pending.len() > PENDING_MAX {
            self.skip_gap(&mut arrival.ready);
        }
        if self.has_gap() && !self.filling {
            self.filling = true;
            arrival.start_fill = true;
        }
        arrival
    }

    /// Asks for a fill whether or not a gap shows (the broker lost
    /// publications): `true` if the caller must start one (none runs).
    pub(crate) fn request_fill(&mut self) -> bool {
        if self.filling {
            self.again = true;
            return false;
        }
        self.filling = true;
        true
    }

    /// Whether a fill that waited [`GAP_WAIT`] for a gap to close still has
    /// to read the store; if not, the fill is over.
    pub(crate) fn still_needs_fill(&mut self, forced: bool) -> bool {
        if forced || self.has_gap() || self.again {
            return true;
        }
        self.filling = false;
        false
    }

    /// The lowest seq waiting for a lower one, if any: a fill notes it before
    /// it reads (see [`SeqOrder::filled`]).
    pub(crate) fn first_pending(&self) -> Option<u64> {
        self.pending.keys().next().copied()
    }

    /// What the store holds after [`SeqOrder::last`] (ascending; `complete`:
    /// nothing more after the last of them), read when `first_pending` was the
    /// lowest seq waiting. Returns what to deliver, in order, and whether the
    /// fill must read again (`Some(wait)`: after that long).
    ///
    /// A message that waited before the read began was committed before it
    /// was published, so the read saw it and everything below it: a seq below
    /// it the store did not return does not exist (retention removed it), and
    /// is stepped over. A message that came during the read may sit above a
    /// seq committed after the read looked (by another node, on its way): it
    /// waits for the next read, after [`GAP_WAIT`].
    pub(crate) fn filled(
        &mut self,
        stored: Vec<(u64, String, Utf8Bytes)>,
        complete: bool,
        first_pending: Option<u64>,
    ) -> (Vec<Ready>, Option<Duration>) {
        let mut ready = Vec::new();
        for (seq, sender, frame) in stored {
            if seq > self.last {
                self.last = seq;
                ready.push((sender, frame));
            }
        }
        let last = self.last;
        self.pending.retain(|&seq, _| seq > last);
        self.drain(&mut ready);
        if !complete {
            return (ready, Some(Duration::ZERO));
        }
        if let Some(seen) = first_pending {
            if self.last + 1 < seen {
                // Below a message the read could see: nothing more exists.
                self.last = seen - 1;
                self.drain(&mut ready);
            }
        }
        if self.has_gap() {
            return (ready, Some(GAP_WAIT));
        }
        if std::mem::take(&mut self.again) {
            return (ready, Some(Duration::ZERO));
        }
        self.filling = false;
        (ready, None)
    }

    /// A fill that failed (the store unreachable) and gives up for now: what
    /// waits goes out in seq order over the gap rather than be held with no
    /// end (the members' next catch-up by seq brings the rest); the next gap
    /// or reconnect starts another fill.
    pub(crate) fn fill_failed(&mut self) -> Vec<Ready> {
        self.filling = false;
        self.again = false;
        let mut ready = Vec::new();
        self.skip_gap(&mut ready);
        ready
    }

    /// Hands on the pending messages that now follow `last` without a gap.
    fn drain(&mut self, ready: &mut Vec<Ready>) {
        while let Some(entry) = self.pending.first_entry() {
            if *entry.key() != self.last + 1 {
                break;
            }
            self.last += 1;
            ready.push(entry.remove());
        }
    }

    /// Hands on every pending message in seq order, over the gaps.
    fn skip_gap(&mut self, ready: &mut Vec<Ready>) {
        for (seq, msg) in std::mem::take(&mut self.pending) {
            self.last = seq;
            ready.push(msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seq: u64) -> (String, Utf8Bytes) {
        ("s".into(), Utf8Bytes::from(format!("m{seq}")))
    }

    fn texts(ready: &[Ready]) -> Vec<String> {
        ready.iter().map(|(_, f)| f.as_str().to_owned()).collect()
    }

    #[test]
    fn in_order_messages_pass_straight_through() {
        let mut o = SeqOrder::new(4);
        for seq in 5..=7 {
            let (s, f) = msg(seq);
            let a = o.arrive(seq, s, f);
            assert_eq!(texts(&a.ready), [format!("m{seq}")]);
            assert!(!a.start_fill);
        }
        let (s, f) = msg(6);
        assert!(o.arrive(6, s, f).ready.is_empty(), "a repeat is dropped");
        assert_eq!(o.last(), 7);
    }

    /// Every order of arrival hands the messages on in seq order, each once,
    /// and a gap that closes by itself needs no store read.
    #[test]
    fn any_arrival_order_comes_out_in_seq_order() {
        let perms: Vec<Vec<u64>> = vec![
            vec![1, 2, 3, 4],
            vec![2, 1, 4, 3],
            vec![4, 3, 2, 1],
            vec![3, 1, 4, 2],
            vec![2, 4, 1, 3],
            vec![1, 4, 2, 2, 3, 1],
        ];
        for perm in perms {
            let mut o = SeqOrder::new(0);
            let mut out = Vec::new();
            let mut fills = 0;
            for &seq in &perm {
                let (s, f) = msg(seq);
                let a = o.arrive(seq, s, f);
                fills += usize::from(a.start_fill);
                out.extend(texts(&a.ready));
            }
            assert_eq!(out, ["m1", "m2", "m3", "m4"], "{perm:?}");
            assert!(fills <= 1, "one fill at a time: {perm:?}");
            assert!(!o.has_gap());
            if fills == 1 {
                assert!(!o.still_needs_fill(false), "closed by itself: no read");
            }
        }
    }

    /// A gap the broker never fills is filled from the store, and what was
    /// held behind it follows; a repeat from the store is not handed on twice.
    #[test]
    fn a_gap_is_filled_from_the_store() {
        let mut o = SeqOrder::new(3);
        let (s, f) = msg(7);
        let a = o.arrive(7, s, f);
        assert!(a.ready.is_empty() && a.start_fill);
        assert!(o.still_needs_fill(false));
        let stored = (4..=7).map(|seq| {
            let (s, f) = msg(seq);
            (seq, s, f)
        });
        let (ready, again) = o.filled(stored.collect(), true, o.first_pending());
        assert_eq!(texts(&ready), ["m4", "m5", "m6", "m7"]);
        assert!(again.is_none());
        assert_eq!(o.last(), 7);
        let (s, f) = msg(8);
        assert!(!o.arrive(8, s, f).start_fill, "no fill runs, none needed");
    }

    /// After an outage nothing shows a gap: a requested fill reads anyway,
    /// and one asked for while a fill runs makes it read once more.
    #[test]
    fn a_requested_fill_reads_even_without_a_gap_and_once_more_if_asked_again() {
        let mut o = SeqOrder::new(9);
        assert!(o.request_fill());
        assert!(!o.request_fill(), "one runs: it reads again instead");
        assert!(o.still_needs_fill(true));
        let (s, f) = msg(10);
        let (ready, again) = o.filled(vec![(10, s, f)], true, None);
        assert_eq!(texts(&ready), ["m10"]);
        assert_eq!(again, Some(Duration::ZERO), "asked again while it ran");
        let (ready, again) = o.filled(Vec::new(), true, None);
        assert!(ready.is_empty() && again.is_none());
        assert!(o.request_fill(), "over: the next request starts one");
    }

    /// A page that is not the last keeps the fill going; a message that
    /// waited before the read, beyond what the store has (retention removed
    /// the rest), goes out over the gap.
    #[test]
    fn paged_fills_and_gaps_the_store_cannot_fill() {
        let mut o = SeqOrder::new(0);
        let (s, f) = msg(9);
        assert!(o.arrive(9, s, f).start_fill);
        let (s, f) = msg(1);
        let (ready, again) = o.filled(vec![(1, s, f)], false, o.first_pending());
        assert_eq!(texts(&ready), ["m1"]);
        assert_eq!(again, Some(Duration::ZERO));
        let (ready, again) = o.filled(Vec::new(), true, o.first_pending());
        assert_eq!(texts(&ready), ["m9"], "over the gap");
        assert!(again.is_none());
        assert_eq!(o.last(), 9);
    }

    /// The race a review found: a fill reads and sees nothing; meanwhile
    /// another node commits 6 and this node 7, which arrives first (local).
    /// 7 must wait for the next read, not go out over 6.
    #[test]
    fn a_message_that_came_during_the_read_waits_for_the_next_one() {
        let mut o = SeqOrder::new(5);
        assert!(o.request_fill());
        let seen = o.first_pending();
        let (s, f) = msg(7);
        assert!(o.arrive(7, s, f).ready.is_empty(), "held: 6 is on its way");
        let (ready, again) = o.filled(Vec::new(), true, seen);
        assert!(ready.is_empty(), "7 is not handed on over 6");
        assert_eq!(again, Some(GAP_WAIT), "read again after the wait");
        // 6 arrives from the broker meanwhile: both go out, in order.
        let (s, f) = msg(6);
        assert_eq!(texts(&o.arrive(6, s, f).ready), ["m6", "m7"]);
        let (ready, again) = o.filled(Vec::new(), true, o.first_pending());
        assert!(ready.is_empty() && again.is_none());
    }

    /// A fill that gives up sends what waits rather than hold it.
    #[test]
    fn a_failed_fill_releases_what_waits() {
        let mut o = SeqOrder::new(1);
        let (s, f) = msg(3);
        assert!(o.arrive(3, s, f).start_fill);
        assert_eq!(texts(&o.fill_failed()), ["m3"]);
        assert!(o.request_fill(), "no fill runs any more");
    }

    #[test]
    fn pending_is_bounded() {
        let mut o = SeqOrder::new(0);
        let mut out = 0;
        for seq in 2..=(PENDING_MAX as u64 + 2) {
            let (s, f) = msg(seq);
            out += o.arrive(seq, s, f).ready.len();
        }
        assert_eq!(out, PENDING_MAX + 1, "past the bound they go out in order");
        assert!(!o.has_gap());
    }
}
