//! Reaching and authenticating to an admin endpoint.

use std::sync::Arc;

use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use mxraft_proto::admin::ReadConsistency;
use mxraft_proto::admin::admin_client::AdminClient;
use mxraft_proto::identity::{Bearer, read_token_file};
use mxraft_proto::tls::{Expect, TlsFiles, TlsSource};

use crate::Cli;

/// The read consistency asked for: `--local` reads this node's state as it is.
pub(crate) fn consistency(local: bool) -> i32 {
    if local {
        ReadConsistency::Local as i32
    } else {
        ReadConsistency::Linearizable as i32
    }
}

/// An admin client with the bearer token attached.
pub(crate) type Client = AdminClient<InterceptedService<Channel, Bearer>>;

/// How to reach and authenticate to admin endpoints.
pub(crate) struct Access {
    token: Bearer,
    tls: Option<Arc<TlsSource>>,
}

impl Access {
    pub(crate) fn new(cli: &Cli) -> anyhow::Result<Access> {
        let token = match &cli.token_file {
            None => Bearer::default(),
            Some(path) => read_token_file(path)
                .map_err(|e| anyhow::anyhow!("cannot read the token file {}: {e}", path.display()))?
                .as_deref()
                .and_then(Bearer::new)
                .ok_or_else(|| {
                    anyhow::anyhow!("the token file {} holds no usable token", path.display())
                })?,
        };
        let tls = match &cli.ca_file {
            None => None,
            Some(ca) => Some(Arc::new(TlsSource::load(TlsFiles {
                ca_file: ca.clone(),
                cert_file: cli.cert.clone(),
                key_file: cli.key.clone(),
            })?)),
        };
        Ok(Access { token, tls })
    }

    /// A client for `endpoint`.
    pub(crate) fn connect(&self, endpoint: &str) -> anyhow::Result<Client> {
        let (tls, authority) = match endpoint.split_once("://") {
            Some(("https", rest)) => (true, rest),
            Some(("http", rest)) => (false, rest),
            Some((scheme, _)) => anyhow::bail!("endpoint {endpoint:?}: unknown scheme {scheme}"),
            None => (self.tls.is_some(), endpoint),
        };
        let source = match (tls, &self.tls) {
            (true, Some(t)) => Some(t.clone()),
            (true, None) => anyhow::bail!(
                "endpoint {endpoint:?} is TLS: give the cluster CA with --ca-file (or MXRAFT_CA_FILE)"
            ),
            (false, _) => None,
        };
        let url = format!("http://{}", authority.trim_end_matches('/'));
        let endpoint = Endpoint::from_shared(url.clone())
            .map_err(|e| anyhow::anyhow!("invalid endpoint {url:?}: {e}"))?
            .connect_timeout(std::time::Duration::from_secs(5));
        let channel = mxraft_proto::tls::channel(endpoint, source, Expect::Host);
        Ok(AdminClient::with_interceptor(channel, self.token.clone())
            .max_decoding_message_size(512 * 1024 * 1024))
    }
}
