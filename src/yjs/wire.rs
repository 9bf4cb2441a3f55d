//! The y-websocket provider's messages (y-protocols' sync, awareness and
//! auth encodings): a lib0 varuint message type, then its payload, each
//! binary part a varuint length and its bytes. Pure: the socket is in
//! `realtime::yjs_ws`.

/// Outer message types.
const SYNC: u64 = 0;
const AWARENESS: u64 = 1;
const AUTH: u64 = 2;
const QUERY_AWARENESS: u64 = 3;

/// Sync message types.
const STEP1: u64 = 0;
const STEP2: u64 = 1;
const UPDATE: u64 = 2;

/// y-protocols' auth message "permission denied".
const PERMISSION_DENIED: u64 = 0;

/// One message from a client.
#[derive(Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A state vector: answer with what the client lacks.
    SyncStep1(&'a [u8]),
    /// What the server lacked (the answer to its step 1): an update.
    SyncStep2(&'a [u8]),
    Update(&'a [u8]),
    Awareness(&'a [u8]),
    /// The token, for a client that does not put it in the URL: message
    /// type 2 (auth) and the token as a varstring, sent first.
    Auth(&'a str),
    QueryAwareness,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("truncated message")]
    Truncated,
    #[error("unknown message type {0}")]
    Unknown(u64),
    #[error("the token is not UTF-8")]
    NotUtf8,
}

/// Reads one lib0 varuint from `bytes` at `*at`.
fn varuint(bytes: &[u8], at: &mut usize) -> Result<u64, WireError> {
    let mut value: u64 = 0;
    for shift in 0..10 {
        let b = *bytes.get(*at).ok_or(WireError::Truncated)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << (7 * shift);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(WireError::Truncated)
}

/// Reads a varuint length and that many bytes.
fn var_bytes<'a>(bytes: &'a [u8], at: &mut usize) -> Result<&'a [u8], WireError> {
    let len = varuint(bytes, at)?;
    let left = (bytes.len() - *at) as u64;
    if len > left {
        return Err(WireError::Truncated);
    }
    let part = &bytes[*at..*at + len as usize];
    *at += len as usize;
    Ok(part)
}

/// Decodes a client's message (what follows its first part is ignored, as
/// the providers do).
pub fn decode(bytes: &[u8]) -> Result<Message<'_>, WireError> {
    let at = &mut 0;
    match varuint(bytes, at)? {
        SYNC => match varuint(bytes, at)? {
            STEP1 => Ok(Message::SyncStep1(var_bytes(bytes, at)?)),
            STEP2 => Ok(Message::SyncStep2(var_bytes(bytes, at)?)),
            UPDATE => Ok(Message::Update(var_bytes(bytes, at)?)),
            t => Err(WireError::Unknown(t)),
        },
        AWARENESS => Ok(Message::Awareness(var_bytes(bytes, at)?)),
        AUTH => std::str::from_utf8(var_bytes(bytes, at)?)
            .map(Message::Auth)
            .map_err(|_| WireError::NotUtf8),
        QUERY_AWARENESS => Ok(Message::QueryAwareness),
        t => Err(WireError::Unknown(t)),
    }
}

fn write_varuint(out: &mut Vec<u8>, mut n: u64) {
    while n >= 0x80 {
        out.push((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn message(kinds: &[u64], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 8);
    for k in kinds {
        write_varuint(&mut out, *k);
    }
    write_varuint(&mut out, payload.len() as u64);
    out.extend_from_slice(payload);
    out
}

/// The server's sync step 1 (its state vector).
pub fn sync_step1(sv: &[u8]) -> Vec<u8> {
    message(&[SYNC, STEP1], sv)
}

/// The answer to a client's step 1: what it lacks.
pub fn sync_step2(update: &[u8]) -> Vec<u8> {
    message(&[SYNC, STEP2], update)
}

/// An update for the client.
pub fn update(update: &[u8]) -> Vec<u8> {
    message(&[SYNC, UPDATE], update)
}

/// An awareness update for the client.
pub fn awareness(update: &[u8]) -> Vec<u8> {
    message(&[AWARENESS], update)
}

/// y-protocols' "permission denied" with its reason (the provider logs it).
pub fn permission_denied(reason: &str) -> Vec<u8> {
    message(&[AUTH, PERMISSION_DENIED], reason.as_bytes())
}

/// The token message a client sends first (see [`Message::Auth`]).
pub fn auth(token: &str) -> Vec<u8> {
    message(&[AUTH], token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_server_writes_reads_back() {
        let big = vec![7u8; 300];
        assert_eq!(
            decode(&sync_step1(&[1, 2])),
            Ok(Message::SyncStep1(&[1, 2]))
        );
        assert_eq!(decode(&sync_step2(&big)), Ok(Message::SyncStep2(&big[..])));
        assert_eq!(decode(&update(&[])), Ok(Message::Update(&[])));
        assert_eq!(decode(&awareness(&[9])), Ok(Message::Awareness(&[9])));
        assert_eq!(decode(&auth("t.o.k")), Ok(Message::Auth("t.o.k")));
        assert_eq!(decode(&[3]), Ok(Message::QueryAwareness));
        // The 300-byte length takes two bytes.
        assert_eq!(&sync_step2(&big)[..4], &[0, 1, 0xac, 0x02]);
    }

    #[test]
    fn the_bytes_y_protocols_writes_decode() {
        // y-protocols' writeSyncStep1 of an empty document: [0, 0, 1, 0].
        assert_eq!(decode(&[0, 0, 1, 0]), Ok(Message::SyncStep1(&[0])));
        // "permission denied" as y-protocols/auth writes it.
        assert_eq!(permission_denied("no"), vec![2, 0, 2, b'n', b'o']);
    }

    #[test]
    fn broken_messages_are_refused() {
        assert_eq!(decode(&[]), Err(WireError::Truncated));
        assert_eq!(decode(&[0]), Err(WireError::Truncated));
        assert_eq!(decode(&[0, 2, 5, 1]), Err(WireError::Truncated));
        assert_eq!(
            decode(&[0, 2, 0xff, 0xff, 0xff, 0xff, 0x0f]),
            Err(WireError::Truncated)
        );
        assert_eq!(decode(&[0xff; 11]), Err(WireError::Truncated));
        assert_eq!(decode(&[0, 9, 0]), Err(WireError::Unknown(9)));
        assert_eq!(decode(&[7]), Err(WireError::Unknown(7)));
        assert_eq!(decode(&[2, 1, 0xff]), Err(WireError::NotUtf8));
    }
}
