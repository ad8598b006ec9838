//! What the front door asks of the primaries ([`mxraft_smtp::policy::Primary`]): recipient
//! verification by an SMTP callout, and whether a client may ask for ETRN.

use std::net::IpAddr;
use std::time::Duration;

use mxraft_smtp::policy::{Primary, VerifyError};

use crate::{Delivery, client};

impl Delivery {
    /// Verifies `address` with the primary of its domain (an SMTP callout): `Ok(true)` if the
    /// primary would accept it, `Ok(false)` if it refuses it for good, `Err` when the primary
    /// cannot be asked or cannot tell now.
    async fn callout(&self, address: &str) -> Result<bool, VerifyError> {
        let destination = mxraft_queue::destination_of(address);
        let addrs = self
            .resolve_route(&destination)
            .await
            .map_err(|e| VerifyError(e.to_string()))?;
        let timeouts = self.config.timeouts();
        let mut last = VerifyError("no address to try".into());
        for (host, addr) in addrs {
            let opened = client::Connection::open(
                addr,
                &host,
                &self.hostname,
                None,
                &timeouts,
                &client::Cutoff::none(),
            )
            .await;
            match opened {
                Ok(mut conn) => {
                    let result = conn.probe_recipient(address).await;
                    conn.quit().await;
                    return match result {
                        Ok(Some(valid)) => Ok(valid),
                        Ok(None) => Err(VerifyError(format!(
                            "{host}[{addr}] cannot verify {address} now"
                        ))),
                        Err(e) => Err(VerifyError(format!("{host}[{addr}]: {e}"))),
                    };
                }
                Err(e) => last = VerifyError(format!("{host}[{addr}]: {e}")),
            }
        }
        Err(last)
    }
}

impl Primary for Delivery {
    async fn verify_recipient(
        &self,
        address: &str,
        timeout: Duration,
    ) -> Result<bool, VerifyError> {
        tokio::time::timeout(timeout, self.callout(address))
            .await
            .map_err(|_| VerifyError(format!("verification of {address} timed out")))?
    }

    /// `client` may ask for a flush of `domain` when it is in `delivery.etrn_clients`, or it
    /// is one of the addresses of the domain's primary.
    async fn may_etrn(&self, client: IpAddr, domain: &str) -> bool {
        let client = client.to_canonical();
        if self
            .config
            .etrn_clients
            .iter()
            .any(|net| net.contains(&client))
        {
            return true;
        }
        match self.resolve_route(domain).await {
            Ok(addrs) => addrs.iter().any(|(_, a)| a.ip() == client),
            Err(_) => false,
        }
    }
}
