//! The DATA decoder fed arbitrary bytes in arbitrary chunks.
//!
//! Checks, against a plain reference decoder written here:
//! - the result does not depend on how the input is split into reads;
//! - the data ends exactly at the first `CRLF.CRLF` (or a `.CRLF` first line), never elsewhere,
//!   so no bare CR/LF mix can end a message early (SMTP smuggling);
//! - the message is the input with its leading dots unstuffed; bare CR/LF, NUL, long lines and
//!   the size limit are flagged exactly when present;
//! - `encode_data` followed by decoding gives back any CRLF-clean message;
//! - BDAT chunks are kept byte for byte, with the same flags.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxraft_smtp::wire::{DataDecoder, DataFlaws, encode_data};

const MAX_LINE: usize = 40;

/// Feeds `wire` in reads of the given sizes; returns the end offset if one was found.
fn feed_chunked(decoder: &mut DataDecoder, wire: &[u8], sizes: &[u8]) -> Option<usize> {
    let mut at = 0;
    let whole = [u8::MAX];
    let sizes = if sizes.is_empty() { &whole[..] } else { sizes };
    let mut sizes = sizes.iter().cycle();
    while at < wire.len() {
        let n = usize::from(*sizes.next().expect("cycled"))
            .max(1)
            .min(wire.len() - at);
        if let Some(end) = decoder.feed(&wire[at..at + n]) {
            return Some(at + end);
        }
        at += n;
    }
    None
}

/// Where the data ends: the first `.CRLF` line.
fn reference_end(wire: &[u8]) -> Option<usize> {
    if wire.starts_with(b".\r\n") {
        return Some(3);
    }
    wire.windows(5)
        .position(|w| w == b"\r\n.\r\n")
        .map(|p| p + 5)
}

/// Lines split after each CRLF (the last one may lack it).
fn lines(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..bytes.len() {
        if bytes[i - 1] == b'\r' && bytes[i] == b'\n' {
            out.push(&bytes[start..=i]);
            start = i + 1;
        }
    }
    if start < bytes.len() {
        out.push(&bytes[start..]);
    }
    out
}

fn has_bare_cr_or_lf(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        (b == b'\r' && bytes.get(i + 1) != Some(&b'\n'))
            || (b == b'\n' && (i == 0 || bytes[i - 1] != b'\r'))
    })
}

fn has_long_line(bytes: &[u8]) -> bool {
    lines(bytes)
        .iter()
        .any(|l| l.strip_suffix(b"\r\n").unwrap_or(l).len() > MAX_LINE)
}

fn check_dot_stuffed(wire: &[u8], sizes: &[u8], max_size: usize) {
    let mut whole = DataDecoder::new(max_size, MAX_LINE);
    let end = whole.feed(wire);
    let mut split = DataDecoder::new(max_size, MAX_LINE);
    assert_eq!(
        feed_chunked(&mut split, wire, sizes),
        end,
        "end depends on the reads"
    );
    assert_eq!(split.flaws(), whole.flaws(), "flaws depend on the reads");
    assert_eq!(end, reference_end(wire), "end of data");
    let Some(end) = end else {
        return;
    };
    let body = &wire[..end - 3];
    let expected: Vec<u8> = lines(body)
        .iter()
        .flat_map(|l| l.strip_prefix(b".").unwrap_or(l).iter().copied())
        .collect();
    let flaws = whole.flaws();
    let want = DataFlaws {
        bare_cr_or_lf: has_bare_cr_or_lf(body),
        nul: body.contains(&0),
        long_line: has_long_line(body),
        too_big: expected.len() > max_size,
    };
    assert_eq!(flaws, want, "flaws of {body:?}");
    if !flaws.too_big {
        assert_eq!(split.into_message(), expected, "split decode");
        assert_eq!(whole.into_message(), expected, "whole decode");
    }
}

fn check_round_trip(raw: &[u8], sizes: &[u8]) {
    // A CRLF-clean message made from the raw bytes.
    let mut message = Vec::new();
    for piece in raw.split(|&b| b == b'\n') {
        message.extend(piece.iter().filter(|&&b| b != b'\r' && b != 0));
        message.extend_from_slice(b"\r\n");
    }
    let mut wire = encode_data(&message);
    let end = wire.len();
    wire.extend_from_slice(raw);
    let mut d = DataDecoder::new(usize::MAX, usize::MAX);
    assert_eq!(
        feed_chunked(&mut d, &wire, sizes),
        Some(end),
        "end after encode"
    );
    assert!(d.flaws().is_clean(), "flaws after encode: {:?}", d.flaws());
    assert_eq!(d.into_message(), message, "round trip");
}

fn check_chunked(raw: &[u8], sizes: &[u8]) {
    let mut d = DataDecoder::new_chunked(usize::MAX, MAX_LINE);
    assert_eq!(
        feed_chunked(&mut d, raw, sizes),
        None,
        "BDAT content has no end marker"
    );
    d.finish_chunked();
    let flaws = d.flaws();
    let want = DataFlaws {
        bare_cr_or_lf: has_bare_cr_or_lf(raw),
        nul: raw.contains(&0),
        long_line: has_long_line(raw),
        too_big: false,
    };
    assert_eq!(flaws, want, "BDAT flaws of {raw:?}");
    let message = d.into_message();
    assert!(message.starts_with(raw), "BDAT content changed");
    assert!(message.len() - raw.len() <= 2);
    assert!(
        message.is_empty() || message.ends_with(b"\r\n"),
        "BDAT message ends without CRLF"
    );
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>, u16)| {
    let (wire, sizes, max_size) = input;
    check_dot_stuffed(&wire, &sizes, usize::from(max_size));
    check_round_trip(&wire, &sizes);
    check_chunked(&wire, &sizes);
});
