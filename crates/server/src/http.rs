//! The node's HTTP endpoint (`[metrics] listen`): `/metrics` for Prometheus, `/readyz` and
//! `/livez` for probes. It reveals no mail content, so it needs no authentication.
//!
//! - `/livez`: 200 while the process serves and its Raft runs. It never depends on the other
//!   nodes, so a cluster without quorum is not restarted pod by pod.
//! - `/readyz`: 200 when this node answers for the cluster (a member, in contact with a leader
//!   holding a quorum, caught up); otherwise 503 with the reason.
//!
//! A small HTTP/1.1 responder: one request per connection, bounded in size and time.

use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use mxraft_cluster::RaftNode;

/// Committed entries a ready node may still have to apply.
pub const READY_SLACK: u64 = 1000;

/// Serves `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    node: RaftNode,
    metrics: Option<PrometheusHandle>,
    stop: CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "HTTP accept failed");
                    continue;
                }
            },
        };
        let node = node.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                answer(stream, &node, metrics.as_ref()),
            )
            .await;
        });
    }
}

async fn answer(
    mut stream: TcpStream,
    node: &RaftNode,
    metrics: Option<&PrometheusHandle>,
) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, content_type, body) = if method != "GET" && method != "HEAD" {
        (
            "405 Method Not Allowed",
            "text/plain",
            "GET only\n".to_owned(),
        )
    } else {
        match path {
            "/livez" => match node.fatal_error() {
                None => ("200 OK", "text/plain", "ok\n".to_owned()),
                Some(e) => (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("raft stopped: {e}\n"),
                ),
            },
            "/readyz" => match node.current(READY_SLACK) {
                Ok(()) => ("200 OK", "text/plain", "ready\n".to_owned()),
                Err(e) => (
                    "503 Service Unavailable",
                    "text/plain",
                    format!("not ready: {e}\n"),
                ),
            },
            "/metrics" | "/" => match metrics {
                Some(m) => ("200 OK", "text/plain; version=0.0.4", m.render()),
                None => (
                    "404 Not Found",
                    "text/plain",
                    "no metrics recorder\n".to_owned(),
                ),
            },
            _ => (
                "404 Not Found",
                "text/plain",
                "try /metrics, /readyz or /livez\n".to_owned(),
            ),
        }
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await?;
    if method != "HEAD" {
        stream.write_all(body.as_bytes()).await?;
    }
    stream.shutdown().await
}
