//! Each node's heartbeat in Redis, and the sweep that removes the users of
//! nodes that died without saying goodbye.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::json;

use super::IoHandle;
use crate::names::client_room;
use crate::on_io;
use crate::presence::cluster::{ClusterPresence, Departed, HEARTBEAT_EVERY, Reported};
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
        // A presence call or a publish found Redis away since the last
        // tick: what this node counted there may be stale.
        was_down |= !cluster.is_up();
        if cluster.heartbeat().await.is_err() {
            // The driver logs the outage once; keep this node's view meanwhile.
            was_down = true;
            continue;
        }
        if was_down {
            was_down = false;
            resync(&ctx, &io, cluster).await;
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
/// and went meanwhile, and a survivor may have taken this node's share back
/// and reported its users gone): take its share back and register what it
/// has now. Reports what thereby changed for the cluster, unless this node
/// reported it from its own view during the outage.
async fn resync(ctx: &Ctx, io: &IoHandle, cluster: &ClusterPresence) {
    let alone = cluster.take_reported_alone();
    // Counted dead by the others, who reported its users gone: those still
    // here are reported back. (Otherwise, Redis restarted empty or this
    // node only lost its link: nobody was reported gone.)
    let reaped = cluster.take_reaped_mark().await.unwrap_or(false);
    let Ok(gone) = cluster.reap(&cluster.node_id).await else {
        return;
    };
    let key = |d: &Departed| (d.ns.clone(), d.room.clone(), d.user.clone());
    let taken_back: HashSet<_> = gone.iter().map(key).collect();
    let mut present = HashSet::new();
    let mut back = Vec::new();
    // Who is online first, so that a user is back online before in a room.
    let entries = ctx.online.entries().into_iter();
    for (ns, room, user, name, sockets) in entries.chain(ctx.presence.entries()) {
        let mut first = None;
        for _ in 0..sockets {
            if let Ok(change) = cluster.join(&ns, &room, &user, &name).await {
                first.get_or_insert(change);
            }
        }
        let k = (ns, room, user);
        // Counted nowhere before, and not because this node just took its
        // own share back: the cluster had lost the user.
        if reaped
            && let Some(change) = first
            && change.user
            && !taken_back.contains(&k)
            && alone.get(&k) != Some(&Reported::Joined)
        {
            back.push((k.clone(), name, change.room));
        }
        present.insert(k);
    }
    tracing::info!("presence re-registered in redis after an outage");
    for ((ns, room, user), name, occupied) in back {
        arrive(ctx, io, &ns, &room, &user, &name, occupied).await;
    }
    let mut left: Vec<Departed> = gone
        .into_iter()
        .filter(|d| !present.contains(&key(d)) && alone.get(&key(d)) != Some(&Reported::Left))
        .collect();
    // A room is vacated once (by its last departure listed), and only if
    // nobody is in it now, on any node.
    let mut rooms = HashSet::new();
    for d in left.iter_mut().rev() {
        let last_of_room = rooms.insert((d.ns.clone(), d.room.clone()));
        d.room_empty = last_of_room
            && d.room != ONLINE_ROOM
            && cluster
                .members(&d.ns, &d.room)
                .await
                .is_ok_and(|m| m.is_empty());
    }
    for d in left {
        announce(ctx, io, &d).await;
    }
}

/// Tells the room and the backend that `user` is back (or online, for the
/// online room) after the cluster had lost them.
async fn arrive(
    ctx: &Ctx,
    io: &IoHandle,
    ns: &str,
    room: &str,
    user: &str,
    name: &str,
    occupied: bool,
) {
    if let Some(w) = &ctx.webhooks {
        if room == ONLINE_ROOM {
            w.emit("user.online", json!({ "namespace": ns, "userId": user }))
                .await;
            return;
        }
        if occupied {
            w.emit("room.occupied", json!({ "namespace": ns, "roomId": room }))
                .await;
        }
        let data = json!({ "namespace": ns, "roomId": room, "userId": user });
        w.emit("member.joined", data).await;
    }
    if room == ONLINE_ROOM {
        return;
    }
    let joined = json!({ "userId": user, "username": name, "roomId": room });
    on_io!(io, io => {
        if let Some(op) = io.of(ns) {
            broadcast(op.to(client_room(room)), "room:user-joined", &joined).await;
        }
    });
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
