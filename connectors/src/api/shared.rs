//! What every request of one `api` account shares (its ingress, feeds, token and the two
//! tokens that end intake and streams), in a file of its own so that the SSE stream and the
//! WebSocket need not import the routes that serve them.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::feed::Feeds;
use crate::context::Ingress;
use crate::media::cache::MediaCache;

/// State shared by every request of one `api` account.
pub(super) struct Shared {
    /// Account id, the `<account>` of envelopes.
    pub account: String,
    /// Required bearer token, if any.
    pub token: Option<String>,
    /// Where posted messages go.
    pub ingress: Ingress,
    /// `qunbridge_messages_received_total` of this account, looked up once.
    pub received: metrics::Counter,
    /// What consumers read.
    pub feeds: Arc<Feeds>,
    /// The media cache that `GET /api/v1/media/<sha256>` serves from (`None`: pictures are
    /// never fetched here, and every such request is `404`).
    pub media: Option<MediaCache>,
    /// Cancelled when the daemon stops taking input: new messages are refused.
    pub intake: CancellationToken,
    /// Cancelled once egress has drained, which ends event streams (so consumers receive
    /// what was still in flight at shutdown).
    pub streams_end: CancellationToken,
}
