//! The versioned binary encoding of everything mxraft stores or replicates.
//!
//! Each record is one version byte followed by the `postcard` encoding of the value. A reader
//! refuses a version it does not know instead of guessing, so a node never silently misreads a
//! record written by a newer release. Enum variants are only ever appended, which keeps old
//! records decodable without a version bump.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The version byte written in front of every record.
pub const FORMAT_VERSION: u8 = 1;

/// A stored or replicated record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The record is empty.
    #[error("empty record")]
    Empty,
    /// The record was written in a format this release does not know.
    #[error(
        "record format version {found} is not supported (this release reads version {FORMAT_VERSION})"
    )]
    UnknownVersion {
        /// The version byte found.
        found: u8,
    },
    /// The record bytes do not decode.
    #[error("corrupt record: {0}")]
    Corrupt(#[from] postcard::Error),
}

/// Encodes `value` as a versioned record.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let out = vec![FORMAT_VERSION];
    // Serializing into a Vec only fails for types serde cannot represent, which ours are not.
    match postcard::to_extend(value, out) {
        Ok(v) => v,
        Err(e) => unreachable!("postcard cannot encode an mxraft record: {e}"),
    }
}

/// Decodes a versioned record.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&FORMAT_VERSION, rest)) => Ok(postcard::from_bytes(rest)?),
        Some((&found, _)) => Err(CodecError::UnknownVersion { found }),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::{Enqueue, MailParams, MessageId, QueueCommand};

    #[test]
    fn command_round_trips() {
        let cmd = QueueCommand::Enqueue(Enqueue {
            id: MessageId::new(5, 1, 2),
            received_at_ms: 5,
            received_by: 1,
            sender: "a@b.example".into(),
            params: MailParams::default(),
            recipients: vec![("c@d.example".into(), crate::RcptParams::default())],
            trace_header: "Received: x\r\n".into(),
            body: Bytes::from_static(b"Subject: hi\r\n\r\nbody\r\n"),
        });
        let bytes = encode(&cmd);
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<QueueCommand>(&bytes).expect("decodes"), cmd);
    }

    #[test]
    fn refuses_unknown_version_and_garbage() {
        let mut bytes = encode(&QueueCommand::Delete {
            id: MessageId::new(1, 1, 1),
            at_ms: 9,
        });
        bytes[0] = 2;
        assert!(matches!(
            decode::<QueueCommand>(&bytes),
            Err(CodecError::UnknownVersion { found: 2 })
        ));
        assert!(matches!(
            decode::<QueueCommand>(&[]),
            Err(CodecError::Empty)
        ));
        assert!(matches!(
            decode::<QueueCommand>(&[FORMAT_VERSION, 0xFF, 0xFF]),
            Err(CodecError::Corrupt(_))
        ));
    }
}
