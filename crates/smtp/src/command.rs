//! Parsing of SMTP command lines (RFC 5321 §4.1).
//!
//! The session hands over one line without its CRLF; bare CR, bare LF and NUL have already been
//! refused by the line reader. Parsing never allocates for the verb and keeps the arguments as
//! text for the verb handlers.

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`
    Ehlo(String),
    /// `HELO domain`
    Helo(String),
    /// `MAIL FROM:<path> [params]`
    Mail(PathArgs),
    /// `RCPT TO:<path> [params]`
    Rcpt(PathArgs),
    /// `DATA`
    Data,
    /// `RSET`
    Rset,
    /// `NOOP [text]`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY text`
    Vrfy,
    /// `HELP [text]`
    Help,
    /// `ETRN node` (RFC 1985): a request to flush the mail queued for a domain.
    Etrn(String),
    /// `STARTTLS` (RFC 3207).
    StartTls,
    /// `BDAT size [LAST]` (RFC 3030): `size` octets of the message follow the command line.
    Bdat {
        /// Octets in this chunk.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// A command this server knows of but does not offer (e.g. `AUTH`).
    NotImplemented(String),
}

/// The reverse or forward path of `MAIL`/`RCPT` and the ESMTP parameters after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathArgs {
    /// The address between the angle brackets (empty for `<>`).
    pub address: String,
    /// `KEY[=VALUE]` parameters, keys upper-cased.
    pub params: Vec<(String, Option<String>)>,
}

/// Why a command line was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandError {
    /// The verb is unknown.
    Unknown,
    /// The verb is known but its arguments are malformed; the text shows the syntax.
    Syntax(&'static str),
    /// The address between angle brackets is malformed.
    BadPath,
}

/// Parses one command line (without CRLF).
pub fn parse(line: &str) -> Result<Command, CommandError> {
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let arg = rest.trim();
    let upper = verb.to_ascii_uppercase();
    match upper.as_str() {
        "EHLO" | "HELO" => {
            if arg.is_empty() || arg.contains(' ') {
                return Err(CommandError::Syntax(if upper == "EHLO" {
                    "Syntax: EHLO hostname"
                } else {
                    "Syntax: HELO hostname"
                }));
            }
            Ok(if upper == "EHLO" {
                Command::Ehlo(arg.to_owned())
            } else {
                Command::Helo(arg.to_owned())
            })
        }
        "MAIL" => parse_path(rest, "FROM:", "Syntax: MAIL FROM:<address>").map(Command::Mail),
        "RCPT" => parse_path(rest, "TO:", "Syntax: RCPT TO:<address>").map(Command::Rcpt),
        "DATA" if arg.is_empty() => Ok(Command::Data),
        "DATA" => Err(CommandError::Syntax("Syntax: DATA")),
        "RSET" if arg.is_empty() => Ok(Command::Rset),
        "RSET" => Err(CommandError::Syntax("Syntax: RSET")),
        "QUIT" if arg.is_empty() => Ok(Command::Quit),
        "QUIT" => Err(CommandError::Syntax("Syntax: QUIT")),
        "NOOP" => Ok(Command::Noop),
        "VRFY" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        "ETRN" if !arg.is_empty() && !arg.contains(' ') => Ok(Command::Etrn(arg.to_owned())),
        "ETRN" => Err(CommandError::Syntax("Syntax: ETRN domain")),
        "STARTTLS" if arg.is_empty() => Ok(Command::StartTls),
        "STARTTLS" => Err(CommandError::Syntax("Syntax: STARTTLS")),
        "BDAT" => {
            let mut words = arg.split(' ').filter(|w| !w.is_empty());
            let size = words.next().and_then(|w| w.parse::<u64>().ok());
            let last = match words.next() {
                None => Some(false),
                Some(w) if w.eq_ignore_ascii_case("LAST") => Some(true),
                Some(_) => None,
            };
            match (size, last, words.next()) {
                (Some(size), Some(last), None) => Ok(Command::Bdat { size, last }),
                _ => Err(CommandError::Syntax("Syntax: BDAT size [LAST]")),
            }
        }
        "AUTH" | "EXPN" | "TURN" | "ATRN" => Ok(Command::NotImplemented(upper)),
        _ => Err(CommandError::Unknown),
    }
}

/// Parses `FROM:<addr> params` or `TO:<addr> params`, accepting a space after the colon.
fn parse_path(rest: &str, keyword: &str, syntax: &'static str) -> Result<PathArgs, CommandError> {
    let head = rest
        .get(..keyword.len())
        .ok_or(CommandError::Syntax(syntax))?;
    if !head.eq_ignore_ascii_case(keyword) {
        return Err(CommandError::Syntax(syntax));
    }
    let after = rest[keyword.len()..].trim_start_matches(' ');
    if !after.starts_with('<') {
        return Err(CommandError::Syntax(syntax));
    }
    let close = find_path_end(after).ok_or(CommandError::BadPath)?;
    let address = &after[1..close];
    let tail = &after[close + 1..];
    if !tail.is_empty() && !tail.starts_with(' ') {
        return Err(CommandError::Syntax(syntax));
    }
    let mut params = Vec::new();
    for word in tail.split(' ').filter(|w| !w.is_empty()) {
        let (key, value) = match word.find('=') {
            Some(i) => (&word[..i], Some(word[i + 1..].to_owned())),
            None => (word, None),
        };
        let valid_key = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && key.as_bytes()[0].is_ascii_alphanumeric();
        if !valid_key {
            return Err(CommandError::Syntax(syntax));
        }
        params.push((key.to_ascii_uppercase(), value));
    }
    Ok(PathArgs {
        address: address.to_owned(),
        params,
    })
}

/// Finds the `>` closing a path that starts with `<`, skipping quoted strings.
fn find_path_end(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    let mut quoted = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quoted => i += 1,
            b'"' => quoted = !quoted,
            b'>' if !quoted => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(addr: &str, params: &[(&str, Option<&str>)]) -> PathArgs {
        PathArgs {
            address: addr.into(),
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn parses_the_transaction_commands() {
        assert_eq!(
            parse("EHLO client.test"),
            Ok(Command::Ehlo("client.test".into()))
        );
        assert_eq!(
            parse("helo client.test"),
            Ok(Command::Helo("client.test".into()))
        );
        assert_eq!(
            parse("MAIL FROM:<a@b.test> SIZE=100 body=8BITMIME"),
            Ok(Command::Mail(path(
                "a@b.test",
                &[("SIZE", Some("100")), ("BODY", Some("8BITMIME"))]
            )))
        );
        assert_eq!(parse("mail from: <>"), Ok(Command::Mail(path("", &[]))));
        assert_eq!(
            parse("RCPT TO:<u@x.test>"),
            Ok(Command::Rcpt(path("u@x.test", &[])))
        );
        assert_eq!(
            parse("RCPT TO:<\"a>b\"@x.test>"),
            Ok(Command::Rcpt(path("\"a>b\"@x.test", &[])))
        );
        assert_eq!(parse("DATA"), Ok(Command::Data));
        assert_eq!(parse("rset"), Ok(Command::Rset));
        assert_eq!(parse("NOOP anything"), Ok(Command::Noop));
        assert_eq!(parse("QUIT"), Ok(Command::Quit));
        assert_eq!(parse("STARTTLS"), Ok(Command::StartTls));
    }

    #[test]
    fn refuses_malformed_commands() {
        assert_eq!(
            parse("EHLO"),
            Err(CommandError::Syntax("Syntax: EHLO hostname"))
        );
        assert_eq!(
            parse("MAIL a@b"),
            Err(CommandError::Syntax("Syntax: MAIL FROM:<address>"))
        );
        assert_eq!(
            parse("MAIL FROM:a@b"),
            Err(CommandError::Syntax("Syntax: MAIL FROM:<address>"))
        );
        assert_eq!(parse("MAIL FROM:<a@b"), Err(CommandError::BadPath));
        assert_eq!(
            parse("MAIL FROM:<a@b>x"),
            Err(CommandError::Syntax("Syntax: MAIL FROM:<address>"))
        );
        assert_eq!(
            parse("RCPT TO:<a@b> =x"),
            Err(CommandError::Syntax("Syntax: RCPT TO:<address>"))
        );
        assert_eq!(parse("DATA now"), Err(CommandError::Syntax("Syntax: DATA")));
        assert_eq!(parse("XYZZY"), Err(CommandError::Unknown));
        assert_eq!(parse(""), Err(CommandError::Unknown));
    }
}
