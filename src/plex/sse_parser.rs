//! An incremental `text/event-stream` parser (WHATWG HTML, "event stream interpretation").
//!
//! It is fed whatever chunks the network delivers: a chunk may end inside a line, inside a multi-byte UTF-8
//! character, or between the CR and the LF of one line end; lines may end in LF, CRLF or CR. Bytes are kept
//! until their line is complete and only then decoded, so a split character is never mangled.
//!
//! Memory stays bounded by about `max_event_bytes` whatever the server sends: a line, or an event (data plus
//! event name), larger than that is dropped and counted without being buffered, and parsing resumes at the
//! blank line that ends it, so one bad event costs neither the connection nor the events after it.
//!
//! One deliberate deviation from the specification: a block with an `event:` field but no `data:` is
//! dispatched (with empty data) instead of being discarded, because `event: ping` keep-alives without data
//! must still reach the liveness check.

/// The UTF-8 byte order mark, ignored once at the very start of a stream.
const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

/// How much longer than `max_event_bytes` a line may be: room for the field name, colon and space, so a
/// `data:` line carrying a payload of exactly the limit is not refused for its prefix.
const LINE_SLACK: usize = 16;

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when the block had none (or an empty one).
    pub event: String,
    /// The `data:` lines joined with `\n`; empty for an event without data (see the module docs).
    pub data: String,
    /// The last event id of the stream so far. It persists across events (as `Last-Event-ID` does), so it is
    /// `Some` from the first `id:` field on; `Some("")` means the server cleared it with an empty `id:`.
    pub id: Option<String>,
    /// The `retry:` field of this block, if it had a valid one (milliseconds; saturates at `u64::MAX`).
    pub retry: Option<u64>,
}

/// Incremental parser for one event stream; see the module documentation.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    /// `max_event_bytes` plus [`LINE_SLACK`].
    max_line_bytes: usize,
    /// The bytes of the current, unfinished line (never more than `max_line_bytes`).
    line: Vec<u8>,
    /// The last byte seen was a CR: an LF right after it (maybe in the next chunk) ends no further line.
    after_cr: bool,
    /// `Some(n)` while still at the start of the stream with the first `n` bytes of a BOM seen.
    bom_matched: Option<usize>,
    /// Dropping an oversized event: lines are not buffered, only watched for the blank line that ends it.
    skipping: bool,
    /// While skipping: the current line has bytes, so its end is not a blank line.
    skipped_line_has_bytes: bool,
    /// The event type buffer.
    event: String,
    /// The data buffer: each `data:` value followed by `\n`.
    data: String,
    /// The `retry:` of the current block.
    block_retry: Option<u64>,
    /// The last event ID buffer: set by `id:` lines, committed at the next blank line.
    id_buffer: Option<String>,
    /// The committed last event ID, restored into `id_buffer` when an event is dropped.
    last_id: Option<String>,
    /// The last committed `retry:` value.
    last_retry: Option<u64>,
    oversized: u64,
}

impl SseParser {
    /// A parser for a new stream. Lines and events larger than `max_event_bytes` are dropped, which is what
    /// bounds memory against a server that streams garbage.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes,
            max_line_bytes: max_event_bytes.saturating_add(LINE_SLACK),
            line: Vec::new(),
            after_cr: false,
            bom_matched: Some(0),
            skipping: false,
            skipped_line_has_bytes: false,
            event: String::new(),
            data: String::new(),
            block_retry: None,
            id_buffer: None,
            last_id: None,
            last_retry: None,
            oversized: 0,
        }
    }

    /// Starts over for a new connection: the unfinished event of the old stream is discarded (as the
    /// specification demands), and the last event id and retry are forgotten (read them first if needed).
    /// [`oversized_dropped`](Self::oversized_dropped) keeps counting, so callers may take differences of it.
    pub fn reset(&mut self) {
        let oversized = self.oversized;
        *self = SseParser::new(self.max_event_bytes);
        self.oversized = oversized;
    }

    /// How many lines or events have been dropped for exceeding the limit (one per dropped event).
    pub fn oversized_dropped(&self) -> u64 {
        self.oversized
    }

    /// The last event id committed by a completed block, to send as `Last-Event-ID` when reconnecting.
    pub fn last_event_id(&self) -> Option<&str> {
        self.last_id.as_deref()
    }

    /// The last valid `retry:` value of a completed block, including blocks that dispatch no event.
    pub fn last_retry(&self) -> Option<u64> {
        self.last_retry
    }

    /// Parses `chunk`, appending every event it completes to `out`. Any bytes are accepted: invalid UTF-8
    /// becomes U+FFFD, and nothing panics.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = chunk;
        if self.bom_matched.is_some() {
            rest = self.skip_bom(rest);
        }
        if self.after_cr {
            if let Some((&first, tail)) = rest.split_first() {
                self.after_cr = false;
                if first == b'\n' {
                    rest = tail;
                }
            }
        }
        while let Some(end) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (content, terminator) = rest.split_at(end);
            self.take_bytes(content);
            self.end_line(out);
            rest = match terminator {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.after_cr = true;
                    return;
                }
                [_, tail @ ..] => tail,
                [] => &[],
            };
        }
        self.take_bytes(rest);
    }

    /// Consumes a leading BOM, which may arrive split over several chunks.
    fn skip_bom<'a>(&mut self, mut rest: &'a [u8]) -> &'a [u8] {
        while let Some(matched) = self.bom_matched {
            let Some((&byte, tail)) = rest.split_first() else {
                break;
            };
            if BOM.get(matched) == Some(&byte) {
                rest = tail;
                self.bom_matched = (matched + 1 < BOM.len()).then_some(matched + 1);
            } else {
                // Not a BOM after all: the bytes held back are ordinary content.
                self.bom_matched = None;
                self.take_bytes(BOM.get(..matched).unwrap_or_default());
            }
        }
        rest
    }

    /// Adds bytes to the current line, or starts dropping the event once the line gets too long.
    fn take_bytes(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if self.skipping {
            self.skipped_line_has_bytes = true;
            return;
        }
        if self.line.len().saturating_add(bytes.len()) > self.max_line_bytes {
            self.line.clear();
            self.drop_event();
            self.skipped_line_has_bytes = true;
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    /// Handles the end of a line: a blank one finishes the block (or the dropped event), others are fields.
    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        if self.skipping {
            if !std::mem::take(&mut self.skipped_line_has_bytes) {
                self.skipping = false;
            }
            return;
        }
        if self.line.is_empty() {
            self.dispatch(out);
            return;
        }
        // Taken out (and put back) so the line can be read while fields are stored; keeps its capacity.
        let line = std::mem::take(&mut self.line);
        self.field(&line);
        self.line = line;
        self.line.clear();
    }

    /// Interprets one complete, non-blank line.
    fn field(&mut self, line: &[u8]) {
        if line.first() == Some(&b':') {
            return;
        }
        let text = String::from_utf8_lossy(line);
        let (name, value) = match text.split_once(':') {
            Some((name, value)) => (name, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match name {
            "event" => {
                if self.too_big(value.len(), self.data.len()) {
                    self.drop_event();
                } else {
                    value.clone_into(&mut self.event);
                }
            }
            "data" => {
                if self.too_big(self.event.len(), self.data.len() + value.len() + 1) {
                    self.drop_event();
                } else {
                    self.data.push_str(value);
                    self.data.push('\n');
                }
            }
            "id" if !value.contains('\0') => match &mut self.id_buffer {
                Some(id) => value.clone_into(id),
                None => self.id_buffer = Some(value.to_owned()),
            },
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                // All digits, so parsing fails only on overflow.
                self.block_retry = Some(value.parse().unwrap_or(u64::MAX));
            }
            _ => {}
        }
    }

    /// Whether an event with this event name and data buffer (one `\n` per data line, the last of which is
    /// removed at dispatch) is over the limit.
    fn too_big(&self, event_len: usize, data_len: usize) -> bool {
        event_len.saturating_add(data_len.saturating_sub(1)) > self.max_event_bytes
    }

    /// Forgets the current event, including its `id:` and `retry:`, and skips to its blank line.
    fn drop_event(&mut self) {
        self.oversized += 1;
        self.skipping = true;
        self.skipped_line_has_bytes = false;
        self.event.clear();
        self.data.clear();
        self.block_retry = None;
        self.id_buffer.clone_from(&self.last_id);
    }

    /// The blank line at the end of a block.
    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.last_id != self.id_buffer {
            self.last_id.clone_from(&self.id_buffer);
        }
        let retry = self.block_retry.take();
        if retry.is_some() {
            self.last_retry = retry;
        }
        // The specification dispatches only when there is data; see the module docs for why an event name
        // alone is enough here.
        if self.data.is_empty() && self.event.is_empty() {
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event = if self.event.is_empty() { "message".to_owned() } else { std::mem::take(&mut self.event) };
        out.push(SseEvent { event, data, id: self.last_id.clone(), retry });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const BIG: usize = 1 << 20;

    fn feed(parser: &mut SseParser, chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out);
        }
        out
    }

    /// Events and the oversized count for `chunks`, with limit `max`.
    fn parse_chunks(chunks: &[&[u8]], max: usize) -> (Vec<SseEvent>, u64) {
        let mut parser = SseParser::new(max);
        let events = feed(&mut parser, chunks);
        (events, parser.oversized_dropped())
    }

    fn parse(text: &str) -> Vec<SseEvent> {
        parse_chunks(&[text.as_bytes()], BIG).0
    }

    /// Parses `bytes` whole, byte by byte, and split at every single point; all must agree.
    fn parse_every_split(bytes: &[u8], max: usize) -> (Vec<SseEvent>, u64) {
        let whole = parse_chunks(&[bytes], max);
        let singles: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(parse_chunks(&singles, max), whole, "byte by byte");
        for at in 0..=bytes.len() {
            let (a, b) = bytes.split_at(at);
            assert_eq!(parse_chunks(&[a, &[], b], max), whole, "split at {at}");
        }
        whole
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), data: data.into(), id: None, retry: None }
    }

    #[test]
    fn lf_crlf_cr_and_mixed_line_ends() {
        for text in [
            "event: a\ndata: 1\n\n",
            "event: a\r\ndata: 1\r\n\r\n",
            "event: a\rdata: 1\r\r",
            "event: a\r\ndata: 1\r\r\n",
            "event: a\ndata: 1\r\n\r",
        ] {
            assert_eq!(parse_every_split(text.as_bytes(), BIG).0, [ev("a", "1")], "{text:?}");
        }
        // LF CR is two line ends, so this is a blank line that dispatches.
        assert_eq!(parse("data: x\n\rdata: y\r\n\n"), [ev("message", "x"), ev("message", "y")]);
    }

    #[test]
    fn cr_and_lf_split_across_chunks_are_one_line_end() {
        let (events, _) = parse_chunks(&[b"data: x\r", b"\n", b"\r", b"\ndata: y\r", b"\r"], 100);
        assert_eq!(events, [ev("message", "x"), ev("message", "y")]);
        // Empty chunks in between do not forget the CR.
        let (events, _) = parse_chunks(&[b"data: x\r", b"", b"", b"\n", b"\r", b"", b"\n"], 100);
        assert_eq!(events, [ev("message", "x")]);
        // A CR at the end of a chunk followed by something other than LF.
        let (events, _) = parse_chunks(&[b"data: x\r", b"data: y\r", b"\r"], 100);
        assert_eq!(events, [ev("message", "x\ny")]);
    }

    #[test]
    fn utf8_characters_split_across_chunks() {
        let text = "event: é€\ndata: «três» 😀\ndata: ü\n\n";
        let (events, _) = parse_every_split(text.as_bytes(), BIG);
        assert_eq!(events, [ev("é€", "«três» 😀\nü")]);
        // Three chunks cutting one 4-byte character in three places.
        let bytes = "data: 😀\n\n".as_bytes();
        let (events, _) = parse_chunks(&[&bytes[..7], &bytes[7..8], &bytes[8..9], &bytes[9..]], 100);
        assert_eq!(events, [ev("message", "😀")]);
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        let (events, _) = parse_chunks(&[b"data: \xff\xfe\n", b"data: a\xe2\x82\n", b"event: \x80x\n\n"], 100);
        assert_eq!(events, [ev("\u{fffd}x", "\u{fffd}\u{fffd}\na\u{fffd}")]);
        // A character cut off by the line end is replaced, and the next line is unaffected.
        assert_eq!(parse_chunks(&[b"data: \xf0\x9f\n\xbf\n\n"], 100).0, [ev("message", "\u{fffd}")]);
    }

    #[test]
    fn comments_are_ignored() {
        assert_eq!(parse(": hello\ndata: a\n:\n: data: b\ndata: c\n\n"), [ev("message", "a\nc")]);
        assert_eq!(parse(":only a comment\n\n"), []);
    }

    #[test]
    fn data_lines_are_joined_with_lf() {
        assert_eq!(parse("data: a\ndata:b\ndata\ndata:\ndata: \n\n"), [ev("message", "a\nb\n\n\n")]);
        assert_eq!(parse("data: one\n\ndata: two\n\n"), [ev("message", "one"), ev("message", "two")]);
        assert_eq!(parse("data\n\n"), [ev("message", "")], "one empty data line is an event");
    }

    #[test]
    fn field_without_colon_has_an_empty_value() {
        assert_eq!(parse("data\ndata\n\n"), [ev("message", "\n")]);
        assert_eq!(parse("event: a\nevent\ndata: x\n\n"), [ev("message", "x")], "event emptied");
        let events = parse("id: 5\ndata: a\n\nid\ndata: b\n\n");
        assert_eq!(events[1].id.as_deref(), Some(""));
    }

    #[test]
    fn only_one_space_after_the_colon_is_stripped() {
        assert_eq!(parse("data:  two spaces\n\n"), [ev("message", " two spaces")]);
        assert_eq!(parse("event:\tx\ndata:no space\n\n"), [ev("\tx", "no space")]);
        assert_eq!(parse("data: a: b:c\n\n"), [ev("message", "a: b:c")], "later colons belong to the value");
        assert_eq!(parse("data : x\n\n"), [], "`data ` is another field");
    }

    #[test]
    fn unknown_fields_are_ignored_and_names_are_case_sensitive() {
        assert_eq!(parse("unknown: x\nData: no\nEVENT: no\ndata: y\n\n"), [ev("message", "y")]);
    }

    #[test]
    fn event_type_resets_after_each_block() {
        assert_eq!(parse("event: a\ndata: 1\n\ndata: 2\n\n"), [ev("a", "1"), ev("message", "2")]);
        assert_eq!(parse("event: a\nevent: b\ndata: 1\n\n"), [ev("b", "1")], "the last event field wins");
    }

    #[test]
    fn id_persists_and_ignores_values_with_nul() {
        let mut parser = SseParser::new(BIG);
        let events = feed(&mut parser, &[b"data: a\n\nid: 7\ndata: b\n\ndata: c\n\nid: x\0y\ndata: d\n\n"]);
        let ids: Vec<_> = events.iter().map(|e| e.id.as_deref()).collect();
        assert_eq!(ids, [None, Some("7"), Some("7"), Some("7")]);
        // A block without data dispatches nothing but still commits its id.
        feed(&mut parser, &[b"id: 8\n\n"]);
        assert_eq!(parser.last_event_id(), Some("8"));
        let events = feed(&mut parser, &[b"data: e\n\nid:\ndata: f\n\n"]);
        assert_eq!(events[0].id.as_deref(), Some("8"));
        assert_eq!(events[1].id.as_deref(), Some(""), "an empty id clears it");
        // Not committed before its blank line.
        feed(&mut parser, &[b"id: 9\ndata: g\n"]);
        assert_eq!(parser.last_event_id(), Some(""));
    }

    #[test]
    fn retry_needs_ascii_digits_only() {
        let mut parser = SseParser::new(BIG);
        let events = feed(
            &mut parser,
            &[b"retry: 1500\ndata: a\n\ndata: b\n\nretry: 1x\ndata: c\n\nretry:\ndata: d\n\nretry: -1\ndata: e\n\n"],
        );
        let retries: Vec<_> = events.iter().map(|e| e.retry).collect();
        assert_eq!(retries, [Some(1500), None, None, None, None]);
        assert_eq!(parser.last_retry(), Some(1500));
        let events = feed(&mut parser, &[b"retry:  5\nretry: 1.5\nretry: \xd9\xa3\ndata: f\n\n"]);
        assert_eq!(events[0].retry, None, "a second space, a dot or non-ASCII digits are not digits");
        let events = feed(&mut parser, &[b"retry: 99999999999999999999999\ndata: g\n\nretry: 20\n\n"]);
        assert_eq!(events[0].retry, Some(u64::MAX), "too large saturates");
        assert_eq!(parser.last_retry(), Some(20), "a retry-only block counts");
    }

    #[test]
    fn leading_bom_is_ignored_once() {
        let mut text = BOM.to_vec();
        text.extend_from_slice(b"data: x\n\n");
        assert_eq!(parse_every_split(&text, BIG).0, [ev("message", "x")]);
        let mut twice = BOM.to_vec();
        twice.extend_from_slice(&text);
        assert_eq!(parse_chunks(&[&twice], BIG).0, [], "a second BOM makes the field name unknown");
        let mut later = b"data: a\n\n".to_vec();
        later.extend_from_slice(&text);
        assert_eq!(parse_chunks(&[&later], BIG).0, [ev("message", "a")], "a BOM after the start is content");
        // Bytes that only start like a BOM are kept.
        let (events, _) = parse_every_split(b"\xef\xbbdata: x\n\n\xef\xbb\xbfdata: y\n\n", BIG);
        assert_eq!(events, []);
        let (events, _) = parse_every_split(b"\xefdata: x\n\n", BIG);
        assert_eq!(events, []);
        let (events, _) = parse_every_split(b"\xef\ndata: x\n\n", BIG);
        assert_eq!(events, [ev("message", "x")], "a partial BOM followed by a line end is one junk line");
    }

    #[test]
    fn event_without_data_is_dispatched() {
        assert_eq!(parse("event: ping\n\n"), [ev("ping", "")]);
        assert_eq!(parse("event: ping\r\n\r\nevent: ping\r\r"), [ev("ping", ""), ev("ping", "")]);
    }

    #[test]
    fn blank_lines_with_nothing_dispatch_nothing() {
        assert_eq!(parse("\n\n\r\n\r\r"), []);
        assert_eq!(parse("event:\n\nid: 1\n\nretry: 5\n\nfoo: bar\n\n"), []);
    }

    #[test]
    fn unfinished_event_is_not_dispatched_and_reset_discards_it() {
        let mut parser = SseParser::new(BIG);
        assert_eq!(feed(&mut parser, &[b"data: a\n\ndata: b\n"]), [ev("message", "a")]);
        parser.reset();
        assert_eq!(feed(&mut parser, &[&BOM, b"data: c\n\n"]), [ev("message", "c")], "b is gone, BOM skipped");
        // A CR pending from the old stream does not swallow the new stream's LF.
        let mut parser = SseParser::new(BIG);
        feed(&mut parser, &[b"data: a\r"]);
        parser.reset();
        assert_eq!(feed(&mut parser, &[b"\ndata: d\n\n"]), [ev("message", "d")]);
    }

    #[test]
    fn oversized_line_is_dropped_and_counted_and_the_next_event_is_intact() {
        let text = format!("event: big\nid: 1\ndata: {}\ndata: more\n\nevent: ok\ndata: 1\n\n", "x".repeat(100));
        for size in [1, 2, 3, 7, 50, 1000] {
            let chunks: Vec<&[u8]> = text.as_bytes().chunks(size).collect();
            let mut parser = SseParser::new(50);
            let events = feed(&mut parser, &chunks);
            assert_eq!(events, [ev("ok", "1")], "chunks of {size}");
            assert_eq!(parser.oversized_dropped(), 1);
            assert_eq!(parser.last_event_id(), None, "the dropped event's id went with it");
        }
        // An oversized comment drops its event too; the line limit counts before any field is parsed.
        let text = format!("data: a\n:{}\ndata: b\n\ndata: c\n\n", "x".repeat(100));
        assert_eq!(parse_every_split(text.as_bytes(), 50), (vec![ev("message", "c")], 1));
    }

    #[test]
    fn oversized_multi_line_event_is_dropped_and_counted_and_the_next_event_is_intact() {
        let text = format!("{}\nevent: ok\ndata: 2\n\n", "data: 0123456789\n".repeat(10));
        assert_eq!(parse_every_split(text.as_bytes(), 50), (vec![ev("ok", "2")], 1));
        // The event name counts as well.
        let text = format!("data: {}\nevent: {}\n\ndata: 3\n\n", "d".repeat(30), "e".repeat(30));
        assert_eq!(parse_every_split(text.as_bytes(), 50), (vec![ev("message", "3")], 1));
        // Two oversized events in a row are counted separately.
        let text = format!("data: {0}\n\ndata: {0}\r\r\ndata: 4\n\n", "z".repeat(60));
        assert_eq!(parse_every_split(text.as_bytes(), 50), (vec![ev("message", "4")], 2));
    }

    #[test]
    fn payload_of_exactly_the_limit_passes() {
        let exact = format!("event: e\ndata: {}\ndata: {}\n\n", "a".repeat(20), "b".repeat(20));
        assert_eq!(parse_chunks(&[exact.as_bytes()], 42).0.len(), 1, "1 + 20 + 1 + 20 bytes");
        assert_eq!(parse_chunks(&[exact.as_bytes()], 41), (vec![], 1));
        let line = format!("data: {}\n\n", "a".repeat(50));
        assert_eq!(parse_chunks(&[line.as_bytes()], 50).0.len(), 1, "the `data: ` prefix is not held against it");
    }

    #[test]
    fn memory_stays_bounded() {
        let max = 1000;
        let mut parser = SseParser::new(max);
        let mut out = Vec::new();
        // An endless line, in small pieces so that some of it is buffered before the limit is hit.
        let garbage = [b'x'; 100];
        for _ in 0..40_000 {
            parser.push(&garbage, &mut out);
        }
        assert!(parser.line.capacity() <= 2 * (max + LINE_SLACK), "{}", parser.line.capacity());
        parser.push(b"\n\n", &mut out);
        // An endless event of short data lines.
        let lines = "data: 0123456789abcdef\r\n".repeat(200);
        for _ in 0..100 {
            parser.push(lines.as_bytes(), &mut out);
        }
        assert!(out.is_empty());
        assert!(parser.line.capacity() <= 2 * (max + LINE_SLACK), "{}", parser.line.capacity());
        assert!(parser.data.capacity() <= 2 * (max + 1), "{}", parser.data.capacity());
        parser.push(b"\r\ndata: fine\n\n", &mut out);
        assert_eq!(out, [ev("message", "fine")]);
        assert_eq!(parser.oversized_dropped(), 2, "one drop per endless event");
    }

    /// One block of a generated stream.
    #[derive(Debug, Clone)]
    struct Block {
        comment: Option<String>,
        event: Option<String>,
        id: Option<String>,
        retry: Option<u64>,
        unknown: Option<(String, String)>,
        /// Each data value with how its line is written: 0 `data: v`, 1 `data:v`, 2 `data` (if v is empty).
        data: Vec<(String, u8)>,
        /// 0 normal, 1 one overlong line, 2 too many data lines; the latter two must be dropped.
        oversized: u8,
    }

    /// Text of any characters, multi-byte ones included, but with CR and LF replaced by U+2028 (which is no
    /// line break to SSE).
    fn text(max: usize) -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![
                3 => proptest::char::any(),
                1 => proptest::sample::select(vec!['a', ' ', ':', 'é', '€', '😀', '\u{feff}', '\0']),
            ]
            .prop_map(|c| if c == '\r' || c == '\n' { '\u{2028}' } else { c }),
            0..max,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    fn block() -> impl Strategy<Value = Block> {
        (
            proptest::option::of(text(12)),
            proptest::option::weighted(0.4, text(8)),
            proptest::option::weighted(0.3, text(6)),
            proptest::option::weighted(0.2, any::<u64>()),
            proptest::option::weighted(
                0.1,
                (proptest::sample::select(vec!["Data", "ID", "events", "x", "retry "]), text(6)),
            ),
            proptest::collection::vec((text(12), 0u8..3), 0..4),
            prop_oneof![8 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        )
            .prop_map(|(comment, event, id, retry, unknown, data, oversized)| Block {
                comment,
                event,
                id,
                retry,
                unknown: unknown.map(|(name, value)| (name.to_owned(), value)),
                data,
                oversized,
            })
    }

    /// Lines of `blocks` (without line ends) and the events and drop count a parser must produce.
    fn expected(blocks: &[Block], max: usize) -> (Vec<String>, Vec<SseEvent>, u64) {
        let mut lines = Vec::new();
        let mut events = Vec::new();
        let mut dropped = 0;
        let mut last_id: Option<String> = None;
        for b in blocks {
            let mut id = last_id.clone();
            if let Some(c) = &b.comment {
                lines.push(format!(":{c}"));
            }
            if let Some(e) = &b.event {
                lines.push(format!("event: {e}"));
            }
            if let Some(i) = &b.id {
                lines.push(format!("id: {i}"));
                if !i.contains('\0') {
                    id = Some(i.clone());
                }
            }
            if let Some(r) = b.retry {
                lines.push(format!("retry: {r}"));
            }
            if let Some((name, value)) = &b.unknown {
                lines.push(format!("{name}: {value}"));
            }
            match b.oversized {
                1 => lines.push(format!("data: {}", "€".repeat(max))),
                2 => lines.extend(std::iter::repeat_n(format!("data: {}", "x".repeat(max / 4)), 5)),
                _ => {}
            }
            for (value, style) in &b.data {
                lines.push(match style {
                    1 if !value.starts_with(' ') => format!("data:{value}"),
                    2 if value.is_empty() => "data".to_owned(),
                    _ => format!("data: {value}"),
                });
            }
            lines.push(String::new());
            if b.oversized != 0 {
                dropped += 1;
                continue;
            }
            last_id = id;
            let event = b.event.clone().filter(|e| !e.is_empty());
            if b.data.is_empty() && event.is_none() {
                continue;
            }
            events.push(SseEvent {
                event: event.unwrap_or_else(|| "message".to_owned()),
                data: b.data.iter().map(|(v, _)| v.as_str()).collect::<Vec<_>>().join("\n"),
                id: last_id.clone(),
                retry: b.retry,
            });
        }
        (lines, events, dropped)
    }

    /// Joins `lines` with line ends chosen by `style` (0 LF, 1 CRLF, 2 CR, 3 per line from `mixed`).
    fn serialise(lines: &[String], bom: bool, style: usize, mixed: &[usize], tail: &str) -> Vec<u8> {
        const ENDS: [&str; 3] = ["\n", "\r\n", "\r"];
        let mut out = if bom { BOM.to_vec() } else { Vec::new() };
        let mut previous = "";
        for (i, line) in lines.iter().enumerate() {
            let choice = if style == 3 { mixed.get(i % mixed.len().max(1)).copied().unwrap_or(0) } else { style };
            let mut end = ENDS[choice % 3];
            // A CR then an empty line ended by LF would read as one CRLF: write CRLF instead.
            if line.is_empty() && previous == "\r" && end == "\n" {
                end = "\r\n";
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(end.as_bytes());
            previous = end;
        }
        // An unfinished block at the end, which must not be dispatched.
        out.extend_from_slice(tail.as_bytes());
        out
    }

    fn split_at_points<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points {
            chunks.push(&bytes[start..p]);
            start = p;
        }
        chunks.push(&bytes[start..]);
        chunks
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn chunking_and_line_ends_do_not_change_the_events(
            blocks in proptest::collection::vec(block(), 0..8),
            bom in any::<bool>(),
            style in 0usize..4,
            mixed in proptest::collection::vec(0usize..3, 1..8),
            tail in prop_oneof![Just(""), Just("data: unfinished"), Just("event: x\ndata: y\n"), Just("data: z\r")],
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
        ) {
            let max = 256;
            let (lines, expected, dropped) = expected(&blocks, max);
            let bytes = serialise(&lines, bom, style, &mixed, tail);

            let whole = parse_chunks(&[&bytes], max);
            prop_assert_eq!(&whole.0, &expected);
            prop_assert_eq!(whole.1, dropped);

            let chunks = split_at_points(&bytes, &cuts);
            prop_assert_eq!(&parse_chunks(&chunks, max), &whole);

            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&parse_chunks(&singles, max), &whole);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_chunking_does_not_matter(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    &b"data"[..], b"event", b"id", b"retry", b":", b" ", b"\r", b"\n", b"\r\n", b"1", b"xyz",
                    b"\xef\xbb\xbf", b"\xef", b"\xc3", b"\xa9", b"\xff", b"\0", "😀".as_bytes(),
                ]),
                0..200,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
            max in 0usize..40,
        ) {
            let bytes = pieces.concat();
            let whole = parse_chunks(&[&bytes], max);
            let chunks = split_at_points(&bytes, &cuts);
            prop_assert_eq!(&parse_chunks(&chunks, max), &whole);
            let singles: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&parse_chunks(&singles, max), &whole);
            for event in &whole.0 {
                let name = if event.event == "message" { 0 } else { event.event.len() };
                prop_assert!(name + event.data.len() <= max, "{:?}", event);
            }
        }
    }
}
