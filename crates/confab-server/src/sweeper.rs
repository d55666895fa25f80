//! The node's background room work: member event batches every 50 ms, stored
//! publications that failed tried again every 500 ms, grace periods and room
//! destruction every second, and forgetting idle rate-limit buckets every
//! minute.

use std::sync::Arc;
use std::time::Duration;

use confab_proto::frame::UserInfo;

use crate::envelope::publish_attribute_deletes;
use crate::rooms::MEMBER_EVENT_INTERVAL;
use crate::state::Shared;

/// Background work of rooms: member event batches, grace expiry, room destruction.
pub(crate) fn spawn_room_tasks(shared: Arc<Shared>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut events = tokio::time::interval(MEMBER_EVENT_INTERVAL);
        let mut sweep = tokio::time::interval(Duration::from_secs(1));
        let mut limiters = tokio::time::interval(Duration::from_secs(60));
        let mut republish = tokio::time::interval(crate::republish::RETRY_EVERY);
        loop {
            tokio::select! {
                _ = republish.tick() => {
                    let sent = shared.republish.retry(shared.broker.as_ref()).await;
                    if sent > 0 {
                        tracing::info!(sent, "stored messages published again");
                    }
                }
                _ = events.tick() => shared.rooms.events.flush(shared.broker.as_ref()).await,
                _ = sweep.tick() => sweep_rooms(&shared).await,
                _ = limiters.tick() => {
                    // Forget the buckets of users who stopped sending (bounded memory).
                    for app in shared.apps.values() {
                        app.user_sends.retain_recent();
                        app.barrage.retain_recent();
                    }
                }
            }
        }
    })
}

async fn sweep_rooms(shared: &Shared) {
    let now = shared.clock.now_ms();
    let grace_ms = i64::try_from(shared.config.limits.room_grace_secs.saturating_mul(1000))
        .unwrap_or(i64::MAX);
    match shared
        .store
        .expire_members(now.saturating_sub(grace_ms))
        .await
    {
        Ok(expired) => {
            for m in expired {
                tracing::debug!(app = m.app_id, room = %m.room_id, user = %m.user_id, "grace period over");
                shared.rooms.events.left(
                    m.app_id,
                    &m.room_id,
                    UserInfo {
                        user_id: m.user_id.clone(),
                        user_name: String::new(),
                    },
                );
                if !m.removed_attributes.is_empty() {
                    publish_attribute_deletes(
                        shared.broker.as_ref(),
                        m.app_id,
                        &m.room_id,
                        &m.removed_attributes,
                    )
                    .await;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "expiring room members failed"),
    }
    match shared.store.destroy_empty_rooms(now).await {
        Ok(destroyed) => {
            for (app_id, room_id) in destroyed {
                tracing::debug!(app = app_id, room = %room_id, "room destroyed");
                shared.rooms.sequencer.forget(&(app_id, room_id)).await;
            }
        }
        Err(e) => tracing::warn!(error = %e, "destroying empty rooms failed"),
    }
}
