//! The SMTP wire format, for both directions: replies ([`reply`]), message data with
//! dot-stuffing ([`data`]) and xtext ([`is_xtext`]). The front door reads commands and data and
//! writes replies with it; the delivery client writes data and reads replies with it.

pub mod data;
pub mod reply;

pub use data::{DataDecoder, DataFlaws, encode_data};
pub use reply::{NotAReply, Reply, ReplyReader, parse_reply_line};

/// Whether `s` is valid xtext (RFC 3461 §4): printable ASCII, `+` only as `+HH`, no `=`.
pub fn is_xtext(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = |c: Option<&u8>| {
                    c.is_some_and(|c| c.is_ascii_digit() || (b'A'..=b'F').contains(c))
                };
                if !(hex(b.get(i + 1)) && hex(b.get(i + 2))) {
                    return false;
                }
                i += 3;
            }
            b'=' => return false,
            33..=126 => i += 1,
            _ => return false,
        }
    }
    !b.is_empty()
}

#[cfg(test)]
mod tests {
    use super::is_xtext;

    #[test]
    fn xtext() {
        assert!(is_xtext("QQ314159"));
        assert!(is_xtext("a+2Bb"));
        assert!(!is_xtext(""));
        assert!(!is_xtext("a b"));
        assert!(!is_xtext("a=b"));
        assert!(!is_xtext("a+2"));
        assert!(!is_xtext("a+zz"));
    }
}
