//! Generated gRPC code of mxraft.
//!
//! - [`admin`]: the public admin API `mxraft.v1.Admin` (served by `mxraft-admin`, used by
//!   `mxraftctl`).
//! - [`cluster`]: the internal service `mxraft.cluster.v1.Cluster` between nodes (Raft RPCs,
//!   snapshot transfer, write forwarding, membership), served and used by `mxraft-cluster`.
//!
//! The `.proto` sources are in `proto/mxraft/v1/` at the top of the repository.

#![allow(missing_docs, clippy::all, clippy::pedantic)]

/// The public admin API.
pub mod admin {
    tonic::include_proto!("mxraft.v1");
}

/// The internal cluster service.
pub mod cluster {
    tonic::include_proto!("mxraft.cluster.v1");
}
