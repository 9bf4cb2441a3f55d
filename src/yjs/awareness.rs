//! A loaded document's awareness (cursors, names): what each client's
//! provider says of itself, checked, applied, and whose it is. A client id
//! belongs to the connection whose update gave it a state first; that
//! connection's going removes it, for everyone at once.
//!
//! Providers send back every change they receive (their own echo of the
//! others): only what changes the server's copy is passed on, so a cursor
//! move is sent once to each client, not once per client per client.

use yrs::block::ClientID;
use yrs::sync::awareness::{Awareness, AwarenessUpdate};
use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;

use super::{YDoc, YError};

/// Awareness entries of clients that have gone (yrs keeps each one's last
/// clock) beyond which the awareness is rebuilt from the live ones.
const MAX_GONE_CLIENTS: usize = 256;

/// The JSON text yrs uses for a removed state.
const NULL: &str = "null";

/// Decodes an awareness update whose entries every client can read: ids
/// JavaScript can hold (one that lib0 refuses would make every newcomer
/// drop the whole update), states that are JSON.
fn decode(bytes: &[u8], max: usize) -> Result<AwarenessUpdate, YError> {
    if bytes.len() > max {
        crate::metrics::limit_hit("yjs_max_awareness_bytes");
        return Err(YError::UpdateTooLarge(max));
    }
    super::check::awareness(bytes).map_err(|e| YError::Malformed(e.to_string()))?;
    let update = AwarenessUpdate::decode_v1(bytes).map_err(|e| YError::Malformed(e.to_string()))?;
    for entry in update.clients.values() {
        if serde_json::from_str::<serde::de::IgnoredAny>(&entry.json).is_err() {
            return Err(YError::Malformed("an awareness state is not JSON".into()));
        }
    }
    Ok(update)
}

/// What a connection's awareness update did.
#[derive(Debug, Default)]
pub struct Applied {
    /// The entries it changed, to pass on (None: nothing changed).
    pub changed: Option<Vec<u8>>,
    /// For the sender alone: the removal of clients it spoke for with an
    /// older clock than the server's (see [`YDoc::awareness_apply`]).
    pub reply: Option<Vec<u8>>,
}

impl YDoc {
    /// Applies an awareness update from connection `owner` (at most
    /// `max` bytes, and at most `max_new` clients of its own). Returns the
    /// update to pass on: the entries that changed something, or None.
    ///
    /// A removal of a client this copy never knew is dropped (a provider
    /// whose transport came back sends the removal of everyone it knew,
    /// and yrs would keep an entry for each). A client whose state this
    /// update sets, and that nobody here owns (new, or back on a new
    /// connection), becomes `owner`'s.
    ///
    /// A client back on a new connection soon after it went still has the
    /// clock it had: its state is older than the removal the server keeps,
    /// and yrs ignores it. The sender is then told of that removal
    /// ([`Applied::reply`]); y-protocols answers the removal of its own
    /// state with the state and a newer clock, which is taken.
    pub fn awareness_apply(
        &self,
        bytes: &[u8],
        max: usize,
        owner: &str,
        max_new: usize,
    ) -> Result<Applied, YError> {
        let mut update = decode(bytes, max)?;
        let mut a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        update
            .clients
            .retain(|id, e| a.meta(*id).is_some() || e.json.as_ref() != NULL);
        let claims: Vec<u64> = update
            .clients
            .iter()
            .filter(|(id, e)| {
                e.json.as_ref() != NULL
                    && !owners.contains_key(&id.get())
                    && a.meta(**id).is_none_or(|(clock, _)| e.clock > clock)
            })
            .map(|(id, _)| id.get())
            .collect();
        let stale: Vec<ClientID> = update
            .clients
            .iter()
            .filter(|(id, e)| {
                e.json.as_ref() != NULL
                    && !owners.contains_key(&id.get())
                    && a.state::<serde::de::IgnoredAny>(**id).is_none()
                    && a.meta(**id).is_some_and(|(clock, _)| e.clock <= clock)
            })
            .map(|(id, _)| *id)
            .collect();
        let owned = owners.values().filter(|o| o.as_str() == owner).count();
        if owned + claims.len() > max_new {
            crate::metrics::limit_hit("yjs_awareness_clients");
            return Err(YError::Malformed(format!(
                "more than {max_new} awareness clients on one connection"
            )));
        }
        let summary = a
            .apply_update_summary(update)
            .map_err(|e| YError::Malformed(e.to_string()))?;
        let before = owners.len();
        for id in &claims {
            if a.state::<serde::de::IgnoredAny>(ClientID::new(*id))
                .is_some()
            {
                owners.insert(*id, owner.to_string());
            }
        }
        crate::metrics::yjs_awareness(owners.len() as i64 - before as i64);
        let reply = (!stale.is_empty())
            .then(|| a.update_with_clients(stale).ok().map(|u| u.encode_v1()))
            .flatten();
        Ok(Applied {
            changed: what_changed(&mut a, summary),
            reply,
        })
    }

    /// Applies an awareness update another node relayed (its connection
    /// owns the clients there; their removal comes the same way). Returns
    /// what changed, for this node's clients.
    pub fn awareness_apply_relayed(&self, bytes: &[u8]) -> Result<Option<Vec<u8>>, YError> {
        let update = decode(bytes, usize::MAX)?;
        let mut a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        let summary = a
            .apply_update_summary(update)
            .map_err(|e| YError::Malformed(e.to_string()))?;
        Ok(what_changed(&mut a, summary))
    }

    /// Every client's awareness state, encoded (none when nobody has one).
    pub fn awareness_all(&self) -> Option<Vec<u8>> {
        let a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        let update = a.update().ok()?;
        (!update.clients.is_empty()).then(|| update.encode_v1())
    }

    /// Removes the awareness of the clients connection `owner` owns (it is
    /// gone); returns the update that tells the others, if it owned any.
    pub fn awareness_remove(&self, owner: &str) -> Option<Vec<u8>> {
        let mut a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        let mut owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let before = owners.len();
        let mine: Vec<u64> = owners
            .iter()
            .filter(|(_, o)| o.as_str() == owner)
            .map(|(c, _)| *c)
            .collect();
        for c in &mine {
            owners.remove(c);
        }
        crate::metrics::yjs_awareness(owners.len() as i64 - before as i64);
        let live: Vec<ClientID> = mine
            .iter()
            .map(|c| ClientID::new(*c))
            .filter(|c| a.state::<serde::de::IgnoredAny>(*c).is_some())
            .collect();
        if live.is_empty() {
            return None;
        }
        for c in &live {
            a.remove_state(*c);
        }
        let removal = a.update_with_clients(live).ok().map(|u| u.encode_v1());
        prune_gone(&mut a);
        removal
    }

    /// Removes the states nobody on this node owns (another node's clients)
    /// that were not renewed within `max_age_ms`: providers renew theirs
    /// every 15 s, so these are clients of a node that died (or whose
    /// renewals Redis lost). Returns the update that tells this node's
    /// clients, if any went.
    pub fn awareness_expire(&self, max_age_ms: u64) -> Option<Vec<u8>> {
        let mut a = self.awareness.lock().unwrap_or_else(|p| p.into_inner());
        let owners = self.owners.lock().unwrap_or_else(|p| p.into_inner());
        let oldest = crate::store::now_ms().saturating_sub(max_age_ms);
        let stale: Vec<ClientID> = a
            .iter()
            .filter(|(id, st)| {
                st.data.is_some() && st.last_updated < oldest && !owners.contains_key(&id.get())
            })
            .map(|(id, _)| id)
            .collect();
        drop(owners);
        if stale.is_empty() {
            return None;
        }
        for id in &stale {
            a.remove_state(*id);
        }
        a.update_with_clients(stale).ok().map(|u| u.encode_v1())
    }
}

/// The entries an applied update changed, encoded to pass on (None: it
/// changed nothing); then the gone entries pruned.
fn what_changed(
    a: &mut Awareness,
    summary: Option<yrs::sync::awareness::AwarenessUpdateSummary>,
) -> Option<Vec<u8>> {
    let changed = summary.map(|s| s.all_changes()).unwrap_or_default();
    let out = (!changed.is_empty())
        .then(|| a.update_with_clients(changed).ok().map(|u| u.encode_v1()))
        .flatten();
    prune_gone(a);
    out
}

/// yrs keeps an entry (its last clock) for every client that ever had an
/// awareness state: past [`MAX_GONE_CLIENTS`] of those, the awareness
/// keeps only the live ones. (A removal that arrives late for a forgotten
/// client is then dropped, and a stale state a late message brings back
/// expires in the clients after 30 s.)
fn prune_gone(a: &mut Awareness) {
    let gone = a.iter().filter(|(_, s)| s.data.is_none()).count();
    if gone <= MAX_GONE_CLIENTS {
        return;
    }
    let live = a.update();
    let mut fresh = Awareness::new(a.doc().clone());
    if let Ok(live) = live {
        let _ = fresh.apply_update(live);
    }
    *a = fresh;
}
