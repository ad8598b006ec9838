//! SMTP replies (RFC 5321 §4.2), as the server writes them and as the client reads them.

use std::fmt;

/// One SMTP reply: a code and its lines, each as it follows `NNN-` or `NNN ` on the wire
/// (with the enhanced status code of RFC 3463 at its start when there is one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The text of every line; several lines make a multi-line reply.
    pub lines: Vec<String>,
}

/// A line that is not a reply line: no three-digit code from 200 to 599, or a bad separator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an SMTP reply line: {0:?}")]
pub struct NotAReply(pub String);

/// One line of a reply as read from the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The code.
    pub code: u16,
    /// Whether more lines follow (`NNN-`).
    pub more: bool,
    /// The text after the separator.
    pub text: &'a str,
}

/// Reads one reply line, without its CRLF. A bare code (`250`) is a last line with no text.
pub fn parse_reply_line(line: &str) -> Result<ReplyLine<'_>, NotAReply> {
    let code = line
        .get(..3)
        .filter(|c| c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|c| (200..600).contains(c))
        .ok_or_else(|| NotAReply(line.to_owned()))?;
    let more = match line.as_bytes().get(3) {
        None | Some(b' ') => false,
        Some(b'-') => true,
        Some(_) => return Err(NotAReply(line.to_owned())),
    };
    Ok(ReplyLine {
        code,
        more,
        text: line.get(4..).unwrap_or(""),
    })
}

/// Collects the lines of one reply as they are read.
#[derive(Debug, Default)]
pub struct ReplyReader {
    code: Option<u16>,
    lines: Vec<String>,
}

impl ReplyReader {
    /// Takes the next line; returns the reply when it was the last one. A line whose code
    /// differs from the first line's is an error.
    pub fn push(&mut self, line: &str) -> Result<Option<Reply>, NotAReply> {
        let parsed = parse_reply_line(line)?;
        if self.code.is_some_and(|c| c != parsed.code) {
            return Err(NotAReply(line.to_owned()));
        }
        self.code = Some(parsed.code);
        self.lines.push(parsed.text.to_owned());
        if parsed.more {
            return Ok(None);
        }
        let lines = std::mem::take(&mut self.lines);
        self.code = None;
        Ok(Some(Reply {
            code: parsed.code,
            lines,
        }))
    }
}

impl Reply {
    /// A one-line reply; `enhanced` (e.g. `5.1.1`) is put before the text unless empty.
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        let text = text.into();
        let line = if enhanced.is_empty() {
            text
        } else {
            format!("{enhanced} {text}")
        };
        Reply {
            code,
            lines: vec![line],
        }
    }

    /// The enhanced status code of the first line, if it has one (`x.y.z` with `x` the code's
    /// class).
    pub fn enhanced(&self) -> Option<&str> {
        let first = self.lines.first()?.split(' ').next()?;
        let mut parts = first.split('.');
        let class = parts.next()?;
        let ok = class.len() == 1
            && class.as_bytes()[0] == b'0' + (self.code / 100) as u8
            && parts.clone().count() == 2
            && parts
                .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()));
        ok.then_some(first)
    }

    /// The text of every line, joined by newlines, without the code.
    pub fn text(&self) -> String {
        self.lines.join("\n")
    }

    /// `code text` on one line (multi-line replies joined by spaces), for logs and DSNs.
    pub fn summary(&self) -> String {
        format!("{} {}", self.code, self.lines.join(" ").trim())
    }

    /// Whether the reply is positive (2xx) or intermediate (3xx).
    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    /// Whether the reply is a permanent failure (5xx).
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// Writes the reply in wire form, every line ending in CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes());
        }
        if self.lines.is_empty() {
            out.extend_from_slice(format!("{}\r\n", self.code).as_bytes());
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = Vec::new();
        self.write_to(&mut out);
        f.write_str(String::from_utf8_lossy(&out).trim_end())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_line_reply_uses_dashes_until_the_last_line() {
        let r = Reply {
            code: 250,
            lines: vec!["mx.test".into(), "PIPELINING".into(), "8BITMIME".into()],
        };
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
        let mut out = Vec::new();
        Reply::new(550, "5.1.1", "user unknown").write_to(&mut out);
        assert_eq!(out, b"550 5.1.1 user unknown\r\n");
    }

    #[test]
    fn what_is_written_reads_back_the_same() {
        let sent = Reply {
            code: 250,
            lines: vec!["mx.test".into(), "SIZE 1000".into(), "DSN".into()],
        };
        let mut out = Vec::new();
        sent.write_to(&mut out);
        let mut reader = ReplyReader::default();
        let mut got = None;
        for line in String::from_utf8(out)
            .expect("utf8")
            .split_terminator("\r\n")
        {
            assert!(got.is_none(), "a reply before its last line");
            got = reader.push(line).expect("reply line");
        }
        assert_eq!(got, Some(sent));
    }

    #[test]
    fn reply_lines_are_checked() {
        assert_eq!(
            parse_reply_line("250 2.0.0 Ok").map(|l| (l.code, l.more, l.text)),
            Ok((250, false, "2.0.0 Ok"))
        );
        assert_eq!(parse_reply_line("354").map(|l| l.more), Ok(false));
        for bad in ["", "25", "abc ok", "199 low", "600 high", "250x", "+50 no"] {
            assert!(parse_reply_line(bad).is_err(), "{bad:?}");
        }
        let mut reader = ReplyReader::default();
        assert_eq!(reader.push("250-first"), Ok(None));
        assert!(reader.push("550 other code").is_err());
    }

    #[test]
    fn the_enhanced_code_is_found_only_where_it_is() {
        assert_eq!(
            Reply::new(550, "5.1.1", "unknown").enhanced(),
            Some("5.1.1")
        );
        assert_eq!(Reply::new(250, "", "mx.test").enhanced(), None);
        assert_eq!(Reply::new(450, "", "5.1.1 wrong class").enhanced(), None);
        assert_eq!(Reply::new(550, "5.1.1", "x").summary(), "550 5.1.1 x");
    }
}
