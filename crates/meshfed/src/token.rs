//! `meshfed token rotate`: a fresh admin token for the running gateway, through the API.

use std::path::Path;

use meshfed_node::api::models::TokenRotated;

use crate::client::ApiClient;
use crate::failure::Failure;
use crate::gateway::runtime;
use crate::output::outln;

/// Asks the gateway to replace its admin token (authenticating with the current one).
pub(crate) fn rotate(dir: &Path) -> Result<(), Failure> {
    let client = ApiClient::for_dir(dir)?;
    runtime()?.block_on(async move {
        let rotated: TokenRotated = client
            .post("/v1/token/rotate", &serde_json::json!({}))
            .await?;
        outln!(
            "rotated the admin token: the new one is in {}; the old one no longer works",
            rotated.token_file
        )?;
        Ok(())
    })
}
