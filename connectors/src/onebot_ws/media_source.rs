//! A OneBot account as the media service's source of the pictures it saw: the service asks
//! it for what only the implementation can give (a fresh QQ URL through `get_image`, a WeChat
//! file's bytes through `get_file`), and it asks on whichever session takes actions, the way
//! egress does. It holds the account weakly: a stopped account answers "gone".

use std::sync::{Arc, Weak};

use futures_util::future::BoxFuture;

use super::link::AccountLink;
use super::version::{ActionSender, Version};
use crate::media::service::{MediaSource, Resolved};
use crate::media::Locator;

/// The media source of one OneBot account.
pub struct SessionSource<V: Version, A: ActionSender> {
    /// The account's sessions (weak: the source must not keep a stopped account alive).
    link: Weak<AccountLink<V>>,
    /// The version's sender, which knows the action to call.
    sender: Arc<A>,
}

impl<V: Version, A: ActionSender> SessionSource<V, A> {
    /// The source of the account behind `link`, asking through `sender`.
    pub fn new(link: &Arc<AccountLink<V>>, sender: Arc<A>) -> SessionSource<V, A> {
        SessionSource {
            link: Arc::downgrade(link),
            sender,
        }
    }
}

impl<V: Version, A: ActionSender> MediaSource for SessionSource<V, A> {
    fn resolve<'a>(&'a self, locator: &'a Locator) -> BoxFuture<'a, Result<Resolved, String>> {
        Box::pin(async move {
            let session = self
                .link
                .upgrade()
                .and_then(|link| link.sessions.for_actions())
                .ok_or_else(|| "the account has no connection to its implementation".to_owned())?;
            self.sender.resolve_media(&session, locator).await
        })
    }
}
