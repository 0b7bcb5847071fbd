//! The Flight SQL server over the snapshot store.

use std::sync::Arc;

use anyhow::Result;
use schemas::Config;
use tokio_util::sync::CancellationToken;

use crate::open;

/// Serves every data version and the predictions over Flight SQL until `token` is cancelled.
pub async fn run(config: &Config, auth: Arc<serving::auth::JwtAuth>, token: CancellationToken) -> Result<()> {
    let store = open::snapshots(config)?;
    let service = flight::FlightSql::new(
        store,
        &config.snapshot.dataset,
        auth,
        config.flight.max_prepared,
        config.flight.cache_mb << 20,
    );
    flight::serve(config.flight.listen, config.tls.clone(), service, token).await?;
    Ok(())
}
