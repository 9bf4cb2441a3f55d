//! Each node's heartbeat in Redis, and the sweep that removes the users of
//! nodes that died without saying goodbye.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::IoHandle;
use crate::names::client_room;
use crate::on_io;
use crate::presence::cluster::{ClusterPresence, Departed, HEARTBEAT_EVERY};
use crate::realtime::Ctx;
use crate::realtime::broadcast::broadcast;
use crate::realtime::online::ONLINE_ROOM;

/// Runs for the life of the node (only when clustered).
pub async fn run(ctx: Arc<Ctx>, io: IoHandle) {
    let Some(cluster) = &ctx.cluster else { return };
    let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
    let mut was_down = false;
    loop {
        tick.tick().await;
        if cluster.heartbeat().await.is_err() {
            // The driver logs the outage once; keep this node's view meanwhile.
            was_down = true;
            continue;
        }
        if was_down {
            was_down = false;
            for d in resync(&ctx, cluster).await {
                announce(&ctx, &io, &d).await;
            }
        }
        match cluster.reap_dead().await {
            Ok(departed) => {
                for d in departed {
                    announce(&ctx, &io, &d).await;
                }
            }
            Err(_) => was_down = true,
        }
    }
}

/// After an outage this node's counts in Redis may be stale (sockets came
/// and went meanwhile): take its share back and register what it has now.
/// Returns the users who left while Redis was away.
async fn resync(ctx: &Ctx, cluster: &ClusterPresence) -> Vec<Departed> {
    let Ok(gone) = cluster.reap(&cluster.node_id).await else {
        return Vec::new();
    };
    let mut present = HashSet::new();
    let entries = ctx.presence.entries().into_iter();
    for (ns, room, user, name, sockets) in entries.chain(ctx.online.entries()) {
        for _ in 0..sockets {
            let _ = cluster.join(&ns, &room, &user, &name).await;
        }
        present.insert((ns, room, user));
    }
    tracing::info!("presence re-registered in redis after an outage");
    let mut left = Vec::new();
    for mut d in gone {
        if present.contains(&(d.ns.clone(), d.room.clone(), d.user.clone())) {
            continue;
        }
        // Emptied by the reap, but maybe filled again by what this node
        // re-registered since: asked again.
        if d.room_empty {
            d.room_empty = cluster
                .members(&d.ns, &d.room)
                .await
                .is_ok_and(|m| m.is_empty());
        }
        left.push(d);
    }
    left
}

/// Tells the room (on every node) and the backend that `d.user` left it
/// (or went offline, for the online room).
async fn announce(ctx: &Ctx, io: &IoHandle, d: &Departed) {
    if let Some(w) = &ctx.webhooks {
        if d.room == ONLINE_ROOM {
            let data = json!({ "namespace": d.ns, "userId": d.user });
            w.emit("user.offline", data).await;
            return;
        }
        let data = json!({ "namespace": d.ns, "roomId": d.room, "userId": d.user });
        w.emit("member.left", data).await;
        if d.room_empty {
            let data = json!({ "namespace": d.ns, "roomId": d.room });
            w.emit("room.vacated", data).await;
        }
    }
    if d.room == ONLINE_ROOM {
        return;
    }
    let left = json!({ "userId": d.user, "roomId": d.room });
    on_io!(io, io => {
        if let Some(op) = io.of(&d.ns) {
            broadcast(op.clone().to(client_room(&d.room)), "typing:stopped", &left).await;
            broadcast(op.to(client_room(&d.room)), "room:user-left", &left).await;
        }
    });
}
