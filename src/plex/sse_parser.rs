//! An incremental `text/event-stream` parser (WHATWG HTML, "event stream interpretation").
//!
//! Fed with whatever chunks the network delivers: a chunk may end inside a line, inside a multi-byte UTF-8
//! character or between the CR and LF of one line end; lines may end in LF, CRLF or CR. Memory stays bounded
//! by about `max_event_bytes` whatever the server sends: a line or an event larger than that is dropped (and
//! counted) without being buffered, and the events after it are parsed normally.
//!
//! One deliberate deviation from the specification: an event that has an `event:` field but no `data:` is
//! dispatched (with empty data) instead of being discarded, because PMS-style `event: ping` keep-alives must
//! reach the liveness check however a server spells them.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, or `message` when there was none.
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
    /// The last event id seen on the stream so far (it persists across events, as `Last-Event-ID` does).
    pub id: Option<String>,
    /// The `retry:` field of this event, if it had a valid one.
    pub retry: Option<u64>,
}

/// See the module documentation.
#[derive(Debug)]
pub struct SseParser {
    max_event_bytes: usize,
    line: Vec<u8>,
    /// The previous chunk ended with CR: an LF at the start of the next one belongs to the same line end.
    after_cr: bool,
    /// Nothing has been read yet (a leading BOM is skipped).
    at_start: bool,
    /// Dropping the rest of an oversized line.
    skipping_line: bool,
    /// Dropping the rest of an oversized event, up to its blank line.
    skipping_event: bool,
    event: String,
    data: String,
    data_lines: usize,
    event_bytes: usize,
    retry: Option<u64>,
    last_id: Option<String>,
    oversized: u64,
}

impl SseParser {
    /// A parser for a new stream; lines and events over `max_event_bytes` are dropped.
    pub fn new(max_event_bytes: usize) -> Self {
        SseParser {
            max_event_bytes: max_event_bytes.max(1),
            line: Vec::new(),
            after_cr: false,
            at_start: true,
            skipping_line: false,
            skipping_event: false,
            event: String::new(),
            data: String::new(),
            data_lines: 0,
            event_bytes: 0,
            retry: None,
            last_id: None,
            oversized: 0,
        }
    }

    /// Forgets everything, for a new connection (an incomplete event at the end of a stream is discarded).
    pub fn reset(&mut self) {
        *self = SseParser::new(self.max_event_bytes);
    }

    /// Lines or events dropped for being larger than the limit.
    pub fn oversized_dropped(&self) -> u64 {
        self.oversized
    }

    /// Parses `chunk`, appending every event it completes to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<SseEvent>) {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(tail) = rest.strip_prefix(b"\n") {
                rest = tail;
            }
        }
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
                None => {
                    self.append(rest);
                    return;
                }
                Some(end) => {
                    self.append(&rest[..end]);
                    self.end_line(out);
                    let after = end + 1;
                    if rest[end] == b'\r' {
                        match rest.get(after) {
                            Some(b'\n') => rest = &rest[after + 1..],
                            Some(_) => rest = &rest[after..],
                            None => {
                                self.after_cr = true;
                                return;
                            }
                        }
                    } else {
                        rest = &rest[after..];
                    }
                }
            }
        }
    }

    /// Adds bytes to the current line, unless it is already too long.
    fn append(&mut self, bytes: &[u8]) {
        if self.skipping_line || bytes.is_empty() {
            return;
        }
        if self.line.len() + bytes.len() > self.max_event_bytes {
            self.line.clear();
            self.skipping_line = true;
            self.drop_event();
            return;
        }
        self.line.extend_from_slice(bytes);
    }

    /// Starts dropping the current event (counted once).
    fn drop_event(&mut self) {
        if !self.skipping_event {
            self.oversized += 1;
            self.skipping_event = true;
        }
        self.clear_event();
    }

    fn clear_event(&mut self) {
        self.event.clear();
        self.data.clear();
        self.data_lines = 0;
        self.event_bytes = 0;
        self.retry = None;
    }

    fn end_line(&mut self, out: &mut Vec<SseEvent>) {
        let was_skipping_line = std::mem::take(&mut self.skipping_line);
        let mut line = std::mem::take(&mut self.line);
        if self.at_start {
            self.at_start = false;
            if line.starts_with("\u{feff}".as_bytes()) {
                line.drain(..3);
            }
        }
        if line.is_empty() && !was_skipping_line {
            if self.skipping_event {
                self.skipping_event = false;
                self.clear_event();
            } else {
                self.dispatch(out);
            }
            return;
        }
        if self.skipping_event || was_skipping_line {
            return;
        }
        self.event_bytes += line.len();
        if self.event_bytes > self.max_event_bytes {
            self.drop_event();
            return;
        }
        let text = String::from_utf8_lossy(&line);
        if text.starts_with(':') {
            return;
        }
        let (field, value) = match text.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (text.as_ref(), ""),
        };
        match field {
            "event" => value.clone_into(&mut self.event),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
                self.data_lines += 1;
            }
            "id" if !value.contains('\0') => self.last_id = Some(value.to_owned()),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                self.retry = value.parse().ok();
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        if self.data_lines == 0 && self.event.is_empty() {
            self.clear_event();
            return;
        }
        let mut data = std::mem::take(&mut self.data);
        if data.ends_with('\n') {
            data.pop();
        }
        let event = if self.event.is_empty() { "message".to_owned() } else { std::mem::take(&mut self.event) };
        out.push(SseEvent { event, data, id: self.last_id.clone(), retry: self.retry });
        self.clear_event();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_chunks(chunks: &[&[u8]], max: usize) -> (Vec<SseEvent>, u64) {
        let mut parser = SseParser::new(max);
        let mut out = Vec::new();
        for chunk in chunks {
            parser.push(chunk, &mut out);
        }
        (out, parser.oversized_dropped())
    }

    fn parse(text: &str) -> Vec<SseEvent> {
        parse_chunks(&[text.as_bytes()], 1 << 20).0
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent { event: event.into(), data: data.into(), id: None, retry: None }
    }

    #[test]
    fn every_line_ending_style() {
        for text in [
            "event: a\ndata: 1\n\n",
            "event: a\r\ndata: 1\r\n\r\n",
            "event: a\rdata: 1\r\r",
            "event: a\r\ndata: 1\r\r\n",
        ] {
            assert_eq!(parse(text), [ev("a", "1")], "{text:?}");
        }
    }

    #[test]
    fn cr_and_lf_split_across_chunks_are_one_line_end() {
        let (events, _) = parse_chunks(&[b"data: x\r", b"\n", b"\r", b"\ndata: y\r", b"\r"], 100);
        assert_eq!(events, [ev("message", "x"), ev("message", "y")]);
    }

    #[test]
    fn utf8_split_inside_a_character() {
        let text = "data: «três»\n\n".as_bytes();
        let (events, _) = parse_chunks(&[&text[..8], &text[8..9], &text[9..]], 100);
        assert_eq!(events, [ev("message", "«três»")]);
    }

    #[test]
    fn comments_multiline_data_and_fields_without_colon() {
        assert_eq!(parse(": hello\ndata: a\ndata:b\ndata\n\n"), [ev("message", "a\nb\n")]);
        assert_eq!(parse("data:  two spaces\n\n"), [ev("message", " two spaces")]);
        assert_eq!(parse("unknown: x\ndata: y\n\n"), [ev("message", "y")]);
    }

    #[test]
    fn id_persists_and_retry_needs_digits() {
        let events = parse("id: 7\ndata: a\n\ndata: b\nretry: 1500\n\nid: a\0b\nretry: 1x\ndata: c\n\n");
        assert_eq!(events[0].id.as_deref(), Some("7"));
        assert_eq!(events[1].id.as_deref(), Some("7"));
        assert_eq!(events[1].retry, Some(1500));
        assert_eq!(events[2].id.as_deref(), Some("7"), "an id with NUL is ignored");
        assert_eq!(events[2].retry, None);
    }

    #[test]
    fn bom_events_without_data_and_empty_blocks() {
        assert_eq!(parse("\u{feff}event: ping\n\n"), [ev("ping", "")]);
        assert_eq!(parse("\n\n\n: c\n\n"), []);
        let (events, _) = parse_chunks(&[&[0xef], &[0xbb, 0xbf], b"data: x\n\n"], 100);
        assert_eq!(events, [ev("message", "x")]);
    }

    #[test]
    fn invalid_utf8_is_replaced_not_fatal() {
        let (events, _) = parse_chunks(&[b"data: \xff\xfe\n\n"], 100);
        assert_eq!(events, [ev("message", "\u{fffd}\u{fffd}")]);
    }

    #[test]
    fn oversized_line_and_oversized_event_are_dropped_and_counted() {
        let long = format!("event: big\ndata: {}\n\nevent: ok\ndata: 1\n\n", "x".repeat(100));
        let (events, dropped) = parse_chunks(&[long.as_bytes()], 50);
        assert_eq!(events, [ev("ok", "1")]);
        assert_eq!(dropped, 1);
        let many = format!("{}\nevent: ok\ndata: 2\n\n", "data: 0123456789\n".repeat(10));
        let pieces: Vec<&[u8]> = many.as_bytes().chunks(7).collect();
        let (events, dropped) = parse_chunks(&pieces, 50);
        assert_eq!(events, [ev("ok", "2")]);
        assert_eq!(dropped, 1);
    }

    #[derive(Debug, Clone)]
    struct Block {
        event: Option<String>,
        data: Vec<String>,
        id: Option<String>,
        comment: Option<String>,
    }

    fn block() -> impl Strategy<Value = Block> {
        let text = "[a-zA-Z0-9 {}\":,._é«»ü€😀-]{0,12}";
        (
            proptest::option::of("[a-z.]{1,10}"),
            proptest::collection::vec(text, 1..4),
            proptest::option::of("[a-z0-9]{1,6}"),
            proptest::option::of(text),
        )
            .prop_map(|(event, data, id, comment)| Block { event, data, id, comment })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
        #[test]
        fn any_split_and_line_ending_gives_the_same_events(
            blocks in proptest::collection::vec(block(), 1..6),
            style in 0usize..4,
            cuts in proptest::collection::vec(0usize..10_000, 0..12),
        ) {
            let endings = ["\n", "\r\n", "\r"];
            let mut text = String::new();
            let mut expected = Vec::new();
            let mut last_id: Option<String> = None;
            // In mixed mode a CR followed by an empty line ended by LF would read as one CRLF: such a pair is
            // written as CR + CRLF instead, which means the same to every reader.
            let mut previous = "";
            for (index, b) in blocks.iter().enumerate() {
                let nl = |i: usize| if style == 3 { endings[i % 3] } else { endings[style] };
                let mut line = 0;
                let mut push = |s: String, text: &mut String| {
                    let mut ending = nl(index + line);
                    if s.is_empty() && previous == "\r" && ending == "\n" {
                        ending = "\r\n";
                    }
                    text.push_str(&s);
                    text.push_str(ending);
                    previous = ending;
                    line += 1;
                };
                if let Some(c) = &b.comment { push(format!(":{c}"), &mut text); }
                if let Some(e) = &b.event { push(format!("event: {e}"), &mut text); }
                if let Some(id) = &b.id { push(format!("id: {id}"), &mut text); last_id = Some(id.clone()); }
                for d in &b.data { push(format!("data: {d}"), &mut text); }
                push(String::new(), &mut text);
                expected.push(SseEvent {
                    event: b.event.clone().unwrap_or_else(|| "message".into()),
                    data: b.data.join("\n"),
                    id: last_id.clone(),
                    retry: None,
                });
            }
            let bytes = text.as_bytes();
            let whole = parse_chunks(&[bytes], 1 << 16).0;
            prop_assert_eq!(&whole, &expected);
            let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
            points.sort_unstable();
            let mut chunks: Vec<&[u8]> = Vec::new();
            let mut start = 0;
            for p in points {
                chunks.push(&bytes[start..p]);
                start = p;
            }
            chunks.push(&bytes[start..]);
            let split = parse_chunks(&chunks, 1 << 16).0;
            prop_assert_eq!(&split, &expected);
            let single_bytes: Vec<&[u8]> = bytes.chunks(1).collect();
            prop_assert_eq!(&parse_chunks(&single_bytes, 1 << 16).0, &expected);
        }
    }
}
