//! Snapshot transfer: the leader streams a checkpoint's files, the follower takes it only whole.
//!
//! The stream is a header (the vote, the metadata and the list of files with their sizes),
//! the files in that order in chunks, then an end marker with each file's SHA-256. The
//! receiver writes chunks off the async threads, checks every chunk against the list, and
//! refuses the snapshot — removing what it wrote — when the stream ends early, a file is
//! longer or shorter than listed, or a digest differs. Only a whole, verified snapshot reaches
//! openraft; a refused one is sent again by the leader.

use ring::digest::{Context, SHA256};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use mxraft_proto::cluster::{
    SnapshotChunk, SnapshotEnd, SnapshotFileChunk, SnapshotFileInfo, SnapshotHeader, snapshot_chunk,
};
use mxraft_store::{SnapshotData, SnapshotMeta, SnapshotReceiver, Vote};

use crate::node::RaftNode;

/// Size of one snapshot chunk on the wire.
pub(crate) const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// A snapshot being received: where it goes, what was announced, and how far it got.
struct Incoming {
    receiver: SnapshotReceiver,
    files: Vec<SnapshotFileInfo>,
    /// Index in `files` of the file being written, and its bytes so far.
    current: Option<(usize, u64, Context)>,
    digests: Vec<Vec<u8>>,
}

impl Incoming {
    fn finish_current(&mut self) -> Result<(), String> {
        if let Some((i, written, digest)) = self.current.take() {
            let want = self.files[i].size;
            if written != want {
                return Err(format!(
                    "snapshot file {} ended at {written} bytes, announced {want}",
                    self.files[i].name
                ));
            }
            self.digests.push(digest.finish().as_ref().to_vec());
        }
        Ok(())
    }

    /// Writes one chunk (blocking IO).
    fn chunk(&mut self, chunk: SnapshotFileChunk) -> Result<(), String> {
        let next = self.current.as_ref().map_or(0, |(i, _, _)| *i + 1);
        let same = self
            .current
            .as_ref()
            .is_some_and(|(i, _, _)| self.files[*i].name == chunk.name);
        if !same {
            self.finish_current()?;
            match self.files.get(next) {
                Some(f) if f.name == chunk.name => {
                    self.current = Some((next, 0, Context::new(&SHA256)));
                }
                Some(f) => {
                    return Err(format!(
                        "snapshot file {} sent where {} was announced",
                        chunk.name, f.name
                    ));
                }
                None => return Err(format!("snapshot file {} was not announced", chunk.name)),
            }
        }
        let Some((i, written, digest)) = self.current.as_mut() else {
            return Err("no snapshot file open".into());
        };
        if *written + chunk.data.len() as u64 > self.files[*i].size {
            return Err(format!(
                "snapshot file {} is longer than the {} bytes announced",
                chunk.name, self.files[*i].size
            ));
        }
        self.receiver
            .write_chunk(&chunk.name, chunk.offset, &chunk.data)
            .map_err(|e| e.to_string())?;
        digest.update(&chunk.data);
        *written += chunk.data.len() as u64;
        Ok(())
    }

    /// Checks the end marker and makes the files durable (blocking IO).
    fn end(mut self, end: SnapshotEnd, meta: &SnapshotMeta) -> Result<SnapshotData, String> {
        self.finish_current()?;
        if self.digests.len() != self.files.len() {
            return Err(format!(
                "snapshot stream ended after {} of {} files",
                self.digests.len(),
                self.files.len()
            ));
        }
        if !end
            .sha256
            .iter()
            .map(|d| d.as_ref())
            .eq(self.digests.iter().map(Vec::as_slice))
        {
            return Err("snapshot digests differ from the files received".into());
        }
        self.receiver.finish(meta).map_err(|e| e.to_string())
    }
}

/// Receives the files announced in `files` from `stream` and returns the verified snapshot,
/// with its size in bytes.
pub(crate) async fn receive_snapshot(
    node: &RaftNode,
    files: &[SnapshotFileInfo],
    meta: &SnapshotMeta,
    stream: &mut Streaming<SnapshotChunk>,
) -> Result<(SnapshotData, u64), Status> {
    let refused = |why: String| {
        tracing::warn!(reason = %why, "snapshot refused");
        Status::invalid_argument(format!("snapshot refused: {why}"))
    };
    let mut names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(refused("a file is announced twice".into()));
    }
    let receiver = node
        .state_machine()
        .snapshot_receiver()
        .map_err(|e| Status::internal(format!("cannot receive snapshot: {e}")))?;
    let mut incoming = Incoming {
        receiver,
        files: files.to_vec(),
        current: None,
        digests: Vec::new(),
    };
    let mut bytes = 0u64;
    loop {
        let item = match stream.message().await? {
            None => return Err(refused("the stream ended without its end marker".into())),
            Some(SnapshotChunk { item: None }) => {
                return Err(refused("an empty message".into()));
            }
            Some(SnapshotChunk { item: Some(item) }) => item,
        };
        match item {
            snapshot_chunk::Item::Header(_) => {
                return Err(refused("a second header".into()));
            }
            snapshot_chunk::Item::File(chunk) => {
                bytes += chunk.data.len() as u64;
                let (back, result) = tokio::task::spawn_blocking(move || {
                    let r = incoming.chunk(chunk);
                    (incoming, r)
                })
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
                incoming = back;
                result.map_err(refused)?;
            }
            snapshot_chunk::Item::End(end) => {
                let meta = meta.clone();
                let data = tokio::task::spawn_blocking(move || incoming.end(end, &meta))
                    .await
                    .map_err(|e| Status::internal(e.to_string()))?
                    .map_err(refused)?;
                return Ok((data, bytes));
            }
        }
    }
}

/// Feeds the snapshot stream of `data` into `tx`: header, chunks, end marker. Returns `None`
/// when the consumer went away, a send waited longer than `idle`, or a file could not be read.
pub(crate) async fn produce(
    vote: &Vote,
    meta: &SnapshotMeta,
    data: SnapshotData,
    tx: mpsc::Sender<SnapshotChunk>,
    idle: std::time::Duration,
) -> Option<()> {
    let files = {
        let d = data.clone();
        tokio::task::spawn_blocking(move || d.files())
            .await
            .ok()?
            .ok()?
    };
    let send = |msg: SnapshotChunk| {
        let tx = tx.clone();
        async move { tokio::time::timeout(idle, tx.send(msg)).await.ok()?.ok() }
    };
    send(SnapshotChunk {
        item: Some(snapshot_chunk::Item::Header(SnapshotHeader {
            vote: mxraft_queue::encode(vote).into(),
            meta: mxraft_queue::encode(meta).into(),
            files: files
                .iter()
                .map(|f| SnapshotFileInfo {
                    name: f.name.clone(),
                    size: f.size,
                })
                .collect(),
        })),
    })
    .await?;
    let mut digests = Vec::with_capacity(files.len());
    for file in files {
        let mut offset = 0u64;
        let mut digest = Context::new(&SHA256);
        loop {
            let d = data.clone();
            let name = file.name.clone();
            let (chunk, back) = tokio::task::spawn_blocking(move || {
                let mut buf = vec![0u8; SNAPSHOT_CHUNK];
                let n = d.read_at(&name, offset, &mut buf);
                if let Ok(n) = n {
                    buf.truncate(n);
                    digest.update(&buf);
                }
                (n.map(|_| buf), digest)
            })
            .await
            .ok()?;
            digest = back;
            let chunk = chunk.ok()?;
            let last = chunk.len() < SNAPSHOT_CHUNK;
            let len = chunk.len() as u64;
            // Every file is announced by its first chunk, even when it is empty.
            if len > 0 || offset == 0 {
                send(SnapshotChunk {
                    item: Some(snapshot_chunk::Item::File(SnapshotFileChunk {
                        name: file.name.clone(),
                        offset,
                        data: chunk.into(),
                    })),
                })
                .await?;
            }
            offset += len;
            if last {
                break;
            }
        }
        if offset != file.size {
            tracing::warn!(file = %file.name, size = file.size, read = offset, "snapshot file changed while it was sent");
            return None;
        }
        digests.push(bytes::Bytes::copy_from_slice(digest.finish().as_ref()));
    }
    send(SnapshotChunk {
        item: Some(snapshot_chunk::Item::End(SnapshotEnd { sha256: digests })),
    })
    .await
}
