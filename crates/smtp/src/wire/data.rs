//! Message data on the wire (RFC 5321 §4.5.2): the decoder that finds the end of data and
//! undoes dot-stuffing, and [`encode_data`], which dot-stuffs a message for sending.
//!
//! Only `CRLF.CRLF` ends the data. A line starts only after CRLF, so a bare LF or bare CR can
//! never make a `.` look like the start of a line: `\n.\n`, `\r.\r` and every mix of them stay
//! inside the message (SMTP smuggling). The decoder notes bare CR, bare LF, NUL bytes and
//! over-long lines, so the session can refuse such a message as a whole, and stops storing bytes
//! past the size limit while it keeps looking for the end.

/// What the decoder saw that makes the message unacceptable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DataFlaws {
    /// A CR not followed by LF, or an LF not preceded by CR.
    pub bare_cr_or_lf: bool,
    /// A NUL byte.
    pub nul: bool,
    /// A line longer than the line limit (without its CRLF).
    pub long_line: bool,
    /// More bytes than the size limit.
    pub too_big: bool,
}

impl DataFlaws {
    /// Whether nothing is wrong.
    pub fn is_clean(&self) -> bool {
        *self == DataFlaws::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At the start of a line (after CRLF, or right after the DATA command).
    LineStart,
    /// Inside a line.
    Text,
    /// Saw CR inside a line.
    Cr,
    /// Saw `.` at the start of a line.
    Dot,
    /// Saw `.` then CR at the start of a line.
    DotCr,
}

/// Incremental DATA decoder; feed it the bytes as they arrive.
#[derive(Debug, Clone)]
pub struct DataDecoder {
    /// DATA content is dot-stuffed and ends at CRLF.CRLF; BDAT content is neither.
    dots: bool,
    state: State,
    line_len: usize,
    max_line: usize,
    max_size: usize,
    out: Vec<u8>,
    flaws: DataFlaws,
}

impl DataDecoder {
    /// A decoder that keeps at most `max_size` bytes of message and flags lines longer than
    /// `max_line` bytes (not counting CRLF).
    pub fn new(max_size: usize, max_line: usize) -> Self {
        DataDecoder {
            dots: true,
            state: State::LineStart,
            line_len: 0,
            max_line,
            max_size,
            out: Vec::with_capacity(max_size.min(64 * 1024)),
            flaws: DataFlaws::default(),
        }
    }

    /// A checker for BDAT chunks (RFC 3030): the same line rules, but no dot-stuffing and no
    /// end marker; `feed` takes every byte and never reports an end.
    pub fn new_chunked(max_size: usize, max_line: usize) -> Self {
        DataDecoder {
            dots: false,
            ..DataDecoder::new(max_size, max_line)
        }
    }

    /// Bytes the decoder holds (its buffer's capacity).
    pub fn held_bytes(&self) -> usize {
        self.out.capacity()
    }

    /// Drops the message received so far and keeps nothing of what follows (it is still read,
    /// and the end of data still found); the message is flagged as too big.
    pub fn stop_keeping(&mut self) {
        self.out = Vec::new();
        self.max_size = 0;
        self.flaws.too_big = true;
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.out.len() + bytes.len() > self.max_size {
            self.flaws.too_big = true;
            return;
        }
        self.out.extend_from_slice(bytes);
    }

    fn text_byte(&mut self, b: u8) {
        match b {
            b'\r' => self.state = State::Cr,
            b'\n' => {
                // A bare LF does not end the line: the next `.` is not at a line start.
                self.flaws.bare_cr_or_lf = true;
                self.emit(b"\n");
                self.bump_line();
                self.state = State::Text;
            }
            _ => {
                if b == 0 {
                    self.flaws.nul = true;
                }
                self.emit(&[b]);
                self.bump_line();
                self.state = State::Text;
            }
        }
    }

    fn bump_line(&mut self) {
        self.line_len += 1;
        if self.line_len > self.max_line {
            self.flaws.long_line = true;
        }
    }

    /// Consumes bytes from `input`. Returns `Some(n)` when the end of data was found, `n` being
    /// the bytes of `input` up to and including the final CRLF; `None` when it needs more.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            if self.state == State::Text {
                // Inside a line: copy the run up to the next CR, LF or NUL at once.
                let run = memchr::memchr3(b'\r', b'\n', 0, &input[i..]).unwrap_or(input.len() - i);
                if run > 0 {
                    self.emit(&input[i..i + run]);
                    self.line_len += run;
                    if self.line_len > self.max_line {
                        self.flaws.long_line = true;
                    }
                    i += run;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            match self.state {
                State::LineStart => match b {
                    b'.' if self.dots => self.state = State::Dot,
                    _ => {
                        self.line_len = 0;
                        self.text_byte(b);
                    }
                },
                State::Text => self.text_byte(b),
                State::Cr => {
                    if b == b'\n' {
                        self.emit(b"\r\n");
                        self.line_len = 0;
                        self.state = State::LineStart;
                    } else {
                        self.flaws.bare_cr_or_lf = true;
                        self.emit(b"\r");
                        self.bump_line();
                        self.text_byte(b);
                    }
                }
                State::Dot => {
                    self.line_len = 0;
                    if b == b'\r' {
                        self.state = State::DotCr;
                    } else {
                        // A leading dot followed by text is transparency: drop the dot.
                        self.bump_line();
                        self.text_byte(b);
                    }
                }
                State::DotCr => {
                    if b == b'\n' {
                        return Some(i);
                    }
                    // `.` CR without LF: the dot was stuffing, the CR is bare.
                    self.flaws.bare_cr_or_lf = true;
                    // Both the stuffing dot and the CR count towards the line length.
                    self.bump_line();
                    self.bump_line();
                    self.emit(b"\r");
                    self.text_byte(b);
                }
            }
        }
        None
    }

    /// Ends chunked (BDAT) content: a final line without CRLF gets one; a trailing lone CR is
    /// a bare CR.
    pub fn finish_chunked(&mut self) {
        match self.state {
            State::Cr => {
                self.flaws.bare_cr_or_lf = true;
                self.bump_line();
                self.emit(b"\r\n");
            }
            State::Text => self.emit(b"\r\n"),
            _ => {}
        }
        self.state = State::LineStart;
    }

    /// What was wrong with the message.
    pub fn flaws(&self) -> DataFlaws {
        self.flaws
    }

    /// The decoded message (valid once `feed` returned `Some`).
    pub fn into_message(self) -> Vec<u8> {
        self.out
    }
}

/// Writes `content` dot-stuffed, with every line ending in CRLF (bare CR and bare LF become
/// CRLF), followed by the end-of-data line: the inverse of [`DataDecoder`] for messages whose
/// lines all end in CRLF.
pub fn encode_data(content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + content.len() / 50 + 8);
    let mut line_start = true;
    let mut i = 0;
    while i < content.len() {
        let b = content[i];
        match b {
            b'\r' | b'\n' => {
                out.extend_from_slice(b"\r\n");
                // CRLF is one line end; a lone CR or LF is one too.
                i += if b == b'\r' && content.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                line_start = true;
                continue;
            }
            b'.' if line_start => out.extend_from_slice(b".."),
            _ => out.push(b),
        }
        line_start = false;
        i += 1;
    }
    if !line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_is_dot_stuffed_and_never_carries_bare_cr_or_lf() {
        assert_eq!(
            encode_data(b"a\r\n.b\r\n..c\r\n"),
            b"a\r\n..b\r\n...c\r\n.\r\n"
        );
        assert_eq!(
            encode_data(b"x\n.\ny\r.\rz"),
            b"x\r\n..\r\ny\r\n..\r\nz\r\n.\r\n"
        );
        assert_eq!(encode_data(b""), b".\r\n");
        assert_eq!(encode_data(b".\r\n"), b"..\r\n.\r\n");
        let out = encode_data(b"a\rb\nc\r\n");
        for (i, &b) in out.iter().enumerate() {
            if b == b'\n' {
                assert_eq!(out[i - 1], b'\r', "LF without CR at {i}");
            }
            if b == b'\r' {
                assert_eq!(out.get(i + 1), Some(&b'\n'), "CR without LF at {i}");
            }
        }
    }

    fn decode_all(wire: &[u8]) -> (Option<usize>, Vec<u8>, DataFlaws) {
        let mut d = DataDecoder::new(1 << 20, 998);
        let end = d.feed(wire);
        let flaws = d.flaws();
        (end, d.into_message(), flaws)
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_and_unstuffs() {
        let wire = b"Subject: x\r\n\r\n..leading dot\r\n.\r\nMAIL FROM:<next>\r\n";
        let (end, msg, flaws) = decode_all(wire);
        assert_eq!(end, Some(wire.len() - b"MAIL FROM:<next>\r\n".len()));
        assert_eq!(msg, b"Subject: x\r\n\r\n.leading dot\r\n");
        assert!(flaws.is_clean());
    }

    #[test]
    fn empty_message_ends_immediately() {
        let (end, msg, flaws) = decode_all(b".\r\n");
        assert_eq!(end, Some(3));
        assert!(msg.is_empty());
        assert!(flaws.is_clean());
    }

    #[test]
    fn smuggling_sequences_never_end_the_data() {
        for seq in [
            &b"\n.\n"[..],
            b"\r.\r",
            b"\r.\n",
            b"\n.\r",
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
            b"\r\n\x00.\r\n",
        ] {
            let mut wire = b"Subject: a\r\n\r\nbody".to_vec();
            wire.extend_from_slice(seq);
            wire.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\nsmuggled\r\n");
            let (end, _msg, flaws) = decode_all(&wire);
            assert_eq!(end, None, "{seq:?} ended the data");
            assert!(!flaws.is_clean(), "{seq:?} was not flagged");
            // Only the real terminator ends it, and the message is still flagged.
            let mut d = DataDecoder::new(1 << 20, 998);
            assert_eq!(d.feed(&wire), None);
            assert_eq!(d.feed(b"\r\n.\r\n"), Some(5));
            assert!(!d.flaws().is_clean());
        }
    }

    #[test]
    fn flags_size_and_line_limits_but_keeps_looking_for_the_end() {
        let mut d = DataDecoder::new(10, 998);
        assert_eq!(d.feed(b"0123456789abcdef\r\n.\r\n"), Some(21));
        assert!(d.flaws().too_big);
        let mut d = DataDecoder::new(1 << 20, 5);
        assert_eq!(d.feed(b"123456\r\n.\r\n"), Some(11));
        assert!(d.flaws().long_line);
        let mut d = DataDecoder::new(1 << 20, 5);
        assert_eq!(d.feed(b"12345\r\n.\r\n"), Some(10));
        assert!(d.flaws().is_clean());
        // A stuffing dot and a bare CR count towards the line length like any other octet.
        let mut d = DataDecoder::new(1 << 20, 5);
        assert_eq!(d.feed(b".\r1234\r\n.\r\n"), Some(11));
        assert!(d.flaws().long_line);
        let mut d = DataDecoder::new_chunked(1 << 20, 5);
        d.feed(b"12345\r");
        d.finish_chunked();
        assert!(d.flaws().long_line);
    }

    #[test]
    fn a_line_split_across_reads_is_measured_and_checked_whole() {
        // The run copied at once inside a line continues across reads.
        let mut d = DataDecoder::new(1 << 20, 5);
        assert_eq!(d.feed(b"abc"), None);
        assert_eq!(d.feed(b"def\r\n.\r\n"), Some(8));
        assert!(d.flaws().long_line);
        assert_eq!(d.into_message(), b"abcdef\r\n");
        // A NUL or a bare LF in the middle of a run still stops it and is flagged.
        for (wire, nul, bare) in [
            (&b"ab\x00cd\r\n.\r\n"[..], true, false),
            (b"ab\ncd\r\n.\r\n", false, true),
        ] {
            let (end, msg, flaws) = decode_all(wire);
            assert_eq!(end, Some(wire.len()));
            assert_eq!((flaws.nul, flaws.bare_cr_or_lf), (nul, bare), "{wire:?}");
            assert_eq!(msg, &wire[..wire.len() - 3]);
        }
    }

    #[test]
    fn chunked_content_keeps_dots_and_never_ends() {
        let mut d = DataDecoder::new_chunked(1 << 20, 998);
        assert_eq!(d.feed(b"Subject: x\r\n\r\n.\r\n..b\r\nlast"), None);
        d.finish_chunked();
        assert!(d.flaws().is_clean());
        assert_eq!(d.into_message(), b"Subject: x\r\n\r\n.\r\n..b\r\nlast\r\n");
        let mut d = DataDecoder::new_chunked(1 << 20, 998);
        d.feed(b"a\nb\r\n");
        assert!(d.flaws().bare_cr_or_lf);
    }

    #[test]
    fn round_trips_through_encode_with_any_chunking() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..500 {
            let lines = rng.random_range(0..8);
            let mut msg = Vec::new();
            for _ in 0..lines {
                let len = rng.random_range(0..20);
                for _ in 0..len {
                    msg.push(*b".ab.\t x".get(rng.random_range(0..7)).unwrap_or(&b'a'));
                }
                msg.extend_from_slice(b"\r\n");
            }
            let wire = encode_data(&msg);
            let mut d = DataDecoder::new(1 << 20, 998);
            let mut pos = 0;
            let mut end = None;
            while pos < wire.len() && end.is_none() {
                let n = rng.random_range(1..=(wire.len() - pos));
                end = d.feed(&wire[pos..pos + n]).map(|e| pos + e);
                pos += n;
            }
            assert_eq!(end, Some(wire.len()));
            assert!(d.flaws().is_clean());
            assert_eq!(d.into_message(), msg);
        }
    }
}
