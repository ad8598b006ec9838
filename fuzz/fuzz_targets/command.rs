//! The SMTP command parser and the mailbox parser on arbitrary command lines.
//!
//! Checks, besides "never panics":
//! - the verb is case-insensitive;
//! - a parsed `MAIL`/`RCPT` path written back out parses to the same path and parameters;
//! - a parsed mailbox written in canonical form parses to the same mailbox;
//! - a mailbox the relay policy accepts is for the protected domain and routes nowhere else.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mxraft_smtp::DomainPolicy;
use mxraft_smtp::address::{normalize_domain, parse_mailbox, parse_mailbox_utf8};
use mxraft_smtp::command::{Command, PathArgs, parse};

fn swap_verb_case(line: &str) -> String {
    let end = line.find(' ').unwrap_or(line.len());
    let verb: String = line[..end]
        .chars()
        .map(|c| {
            if c.is_ascii_uppercase() {
                c.to_ascii_lowercase()
            } else {
                c.to_ascii_uppercase()
            }
        })
        .collect();
    format!("{verb}{}", &line[end..])
}

fn render(keyword: &str, path: &PathArgs) -> String {
    let mut line = format!("{keyword}<{}>", path.address);
    for (key, value) in &path.params {
        line.push(' ');
        line.push_str(key);
        if let Some(v) = value {
            line.push('=');
            line.push_str(v);
        }
    }
    line
}

fn check_mailbox(address: &str) {
    let policy = DomainPolicy::new(["example.test"]);
    if let Ok(m) = parse_mailbox(address) {
        assert_eq!(
            parse_mailbox(&m.address()),
            Ok(m.clone()),
            "canonical form of {address:?}"
        );
        if policy.accepts(&m) {
            assert!(
                !m.local.contains(['%', '!', '@']) && !m.domain.starts_with('['),
                "routed address accepted: {address:?}"
            );
            assert_eq!(normalize_domain(&m.domain), "example.test");
        }
    }
    if let Ok(m) = parse_mailbox_utf8(address)
        && policy.accepts(&m)
    {
        assert!(
            !m.local.contains(['%', '!', '@']),
            "routed address accepted: {address:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else {
        return;
    };
    // The line reader refuses these before the parser sees a line.
    if line.contains(['\r', '\n', '\0']) {
        return;
    }
    let parsed = parse(line);
    assert_eq!(
        parse(&swap_verb_case(line)),
        parsed,
        "verb case changed the result of {line:?}"
    );
    match &parsed {
        Ok(Command::Mail(path)) => {
            assert_eq!(
                parse(&render("MAIL FROM:", path)),
                parsed,
                "MAIL round trip of {line:?}"
            );
            check_mailbox(&path.address);
        }
        Ok(Command::Rcpt(path)) => {
            assert_eq!(
                parse(&render("RCPT TO:", path)),
                parsed,
                "RCPT round trip of {line:?}"
            );
            check_mailbox(&path.address);
        }
        _ => check_mailbox(line),
    }
});
