//! A connection ends when its credential expires: an access token at its `exp`, an API key at
//! its expiry if it has one (keys without one never expire).
//!
//! At that moment the server sends `session:closing` with code `token_expired`, then a
//! Socket.io disconnect: socket.io-client reports `disconnect` with `io server disconnect` and
//! does not reconnect by itself, since its token would be refused. The client refreshes its
//! token, sets `socket.auth`, and calls `socket.connect()`.
//!
//! One timer task per expiring socket, aborted when the socket goes whatever the reason, so a
//! closed socket's timer never fires, and the socket it holds is let go with it.

use std::sync::Arc;
use std::time::Duration;

use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::Closing;
use crate::identity::{Credential, Principal};

/// The timer of a socket's expiry, in its extensions.
#[derive(Debug, Clone)]
pub(super) struct ExpiryTimer(Arc<tokio::task::AbortHandle>);

impl ExpiryTimer {
    pub(super) fn cancel(&self) {
        self.0.abort();
    }
}

/// When `principal`'s credential stops being accepted (Unix ms), if ever.
fn expires_at_ms(principal: &Principal) -> Option<i64> {
    match &principal.credential {
        Credential::AccessToken { claims } => Some(i64::try_from(claims.exp).unwrap_or(i64::MAX).saturating_mul(1000)),
        Credential::ApiKey { expires_at, .. } => *expires_at,
    }
}

/// Arms the socket's expiry timer, if its credential expires.
pub(super) fn arm<A: Adapter>(socket: &SocketRef<A>, principal: &Principal) {
    let Some(at) = expires_at_ms(principal) else { return };
    let left = Duration::from_millis(u64::try_from(at - crate::storage::now_ms()).unwrap_or(0));
    let expiring = socket.clone();
    let timer = tokio::spawn(async move {
        tokio::time::sleep(left).await;
        tracing::info!(target: "atom::realtime", sid = %expiring.id, "socket.io connection closed: its credential expired");
        super::close_socket(expiring, Closing::TokenExpired);
    });
    socket.extensions.insert(ExpiryTimer(Arc::new(timer.abort_handle())));
}
