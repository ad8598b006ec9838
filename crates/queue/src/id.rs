//! Queue ids.
//!
//! A [`MessageId`] is 128 bits: the receive time in milliseconds since the Unix epoch (48 bits),
//! the id of the node that received the message (16 bits) and a per-node sequence number (64 bits).
//! Ids are therefore unique across the cluster without coordination, and sort by receive time,
//! which keeps the big-endian RocksDB keys in arrival order. They are shown as 26 characters of
//! Crockford base32, e.g. `01JD3Q4W5X000100000000002A`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Crockford's base32 alphabet: no I, L, O or U, so ids survive being read aloud or retyped.
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// Length of the text form of a [`MessageId`].
pub const ID_TEXT_LEN: usize = 26;

/// The cluster-wide id of a queued message.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct MessageId(u128);

impl MessageId {
    /// Builds an id from its parts. `millis` keeps its low 48 bits and `node` its low 16 bits.
    pub fn new(millis: u64, node: u64, seq: u64) -> Self {
        let millis = u128::from(millis & 0xFFFF_FFFF_FFFF);
        let node = u128::from(node & 0xFFFF);
        MessageId((millis << 80) | (node << 64) | u128::from(seq))
    }

    /// The id from its number.
    pub fn from_u128(raw: u128) -> Self {
        MessageId(raw)
    }

    /// The receive time encoded in the id, in milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        (self.0 >> 80) as u64
    }

    /// The id of the node that received the message ([`crate::DSN_NODE`] for a DSN).
    pub fn node(self) -> u64 {
        ((self.0 >> 64) & 0xFFFF) as u64
    }

    /// The big-endian key used for this id in storage; keys sort like ids.
    pub fn to_key(self) -> [u8; 16] {
        self.0.to_be_bytes()
    }

    /// Reads an id back from its storage key.
    pub fn from_key(key: &[u8]) -> Option<Self> {
        let bytes: [u8; 16] = key.try_into().ok()?;
        Some(MessageId(u128::from_be_bytes(bytes)))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = [0u8; ID_TEXT_LEN];
        // 26 digits of 5 bits hold 130 bits; the first digit carries the top 3 bits.
        for (i, slot) in out.iter_mut().enumerate() {
            let shift = 5 * (ID_TEXT_LEN - 1 - i);
            let digit = ((self.0 >> shift) & 0x1F) as usize;
            *slot = ALPHABET[digit];
        }
        // The alphabet is ASCII, so this cannot fail.
        f.write_str(std::str::from_utf8(&out).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({self})")
    }
}

/// The text was not a queue id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a queue id: {text:?} (expected {ID_TEXT_LEN} characters of Crockford base32)")]
pub struct ParseIdError {
    /// The text that failed to parse.
    pub text: String,
}

impl FromStr for MessageId {
    type Err = ParseIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError { text: s.to_owned() };
        if s.len() != ID_TEXT_LEN {
            return Err(err());
        }
        let mut value: u128 = 0;
        for (i, c) in s.bytes().enumerate() {
            let digit = match c.to_ascii_uppercase() {
                // Crockford decoding folds the look-alike letters.
                b'O' => 0,
                b'I' | b'L' => 1,
                upper => ALPHABET.iter().position(|&a| a == upper).ok_or_else(err)? as u128,
            };
            if i == 0 && digit > 0b111 {
                return Err(err());
            }
            value = (value << 5) | digit;
        }
        Ok(MessageId(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_sorts_like_the_number() {
        let a = MessageId::new(1_732_000_000_000, 3, 41);
        let b = MessageId::new(1_732_000_000_001, 1, 0);
        assert_eq!(a.to_string().len(), ID_TEXT_LEN);
        assert_eq!(a.to_string().parse::<MessageId>(), Ok(a));
        assert_eq!(a.to_string().to_lowercase().parse::<MessageId>(), Ok(a));
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
        assert_eq!(a.millis(), 1_732_000_000_000);
        assert_eq!(MessageId::from_key(&a.to_key()), Some(a));
    }

    #[test]
    fn max_id_round_trips() {
        let max = MessageId::from_u128(u128::MAX);
        assert_eq!(max.to_string(), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
        assert_eq!(max.to_string().parse::<MessageId>(), Ok(max));
    }

    #[test]
    fn rejects_bad_text() {
        for bad in [
            "",
            "short",
            "8ZZZZZZZZZZZZZZZZZZZZZZZZZ",
            "0000000000000000000000000U",
        ] {
            assert_eq!(
                bad.parse::<MessageId>(),
                Err(ParseIdError { text: bad.into() }),
                "{bad}"
            );
        }
    }
}
