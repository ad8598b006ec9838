//! The wire of mxraft, shared by the nodes and `mxraftctl` (which links no RocksDB):
//!
//! - [`admin`]: the public admin API `mxraft.v1.Admin` (served by `mxraft-admin`, used by
//!   `mxraftctl`), generated code.
//! - [`cluster`]: the internal service `mxraft.cluster.v1.Cluster` between nodes (Raft RPCs,
//!   snapshot transfer, write forwarding, membership), served and used by `mxraft-cluster`,
//!   generated code.
//! - [`identity`]: the identities certificates carry (node ids, admin roles) and the metadata
//!   keys of requests.
//! - [`tls`]: TLS for the cluster and admin ports, both ends, with certificates reloaded from
//!   their files.
//!
//! The `.proto` sources are in `proto/mxraft/v1/` at the top of the repository.

pub mod identity;
pub mod tls;

/// The public admin API.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod admin {
    tonic::include_proto!("mxraft.v1");
}

/// The internal cluster service.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod cluster {
    tonic::include_proto!("mxraft.cluster.v1");
}
