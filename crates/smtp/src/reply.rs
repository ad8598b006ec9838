//! SMTP replies.

use std::fmt;

/// One SMTP reply: a code, an enhanced status code (RFC 3463) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The three-digit reply code.
    pub code: u16,
    /// The enhanced status code, e.g. `2.1.0`; empty for the greeting and EHLO.
    pub enhanced: &'static str,
    /// The text; several lines make a multi-line reply.
    pub lines: Vec<String>,
}

impl Reply {
    /// A one-line reply.
    pub fn new(code: u16, enhanced: &'static str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced,
            lines: vec![text.into()],
        }
    }

    /// Whether the reply reports a client error or a failure (4xx or 5xx).
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Writes the reply in wire form, every line ending in CRLF.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i == last { ' ' } else { '-' };
            let text = if self.enhanced.is_empty() {
                format!("{}{sep}{line}\r\n", self.code)
            } else {
                format!("{}{sep}{} {line}\r\n", self.code, self.enhanced)
            };
            out.extend_from_slice(text.as_bytes());
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
            enhanced: "",
            lines: vec!["mx.test".into(), "PIPELINING".into(), "8BITMIME".into()],
        };
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"250-mx.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n");
        let mut out = Vec::new();
        Reply::new(550, "5.1.1", "user unknown").write_to(&mut out);
        assert_eq!(out, b"550 5.1.1 user unknown\r\n");
    }
}
