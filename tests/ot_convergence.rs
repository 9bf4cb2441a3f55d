//! The whole collaborative-document scheme, simulated: one server and 2–5
//! clients that follow "The client's discipline" (docs/protocol.md, section
//! 15), talking over a network that delays every message by a random time,
//! so ops and acks reach a client out of order. Whatever the interleaving,
//! once every message is delivered each client must hold the server's text
//! and version, with nothing pending.
//!
//! `Server` and `Client` below are the reference model of what the real
//! server and the JavaScript client do with `src/documents/ot.rs`; the `Network` and
//! `Sim` around them are test machinery only.
//!
//! On failure proptest prints the shrunk script (`minimal failing input:`)
//! and saves its seed in `tests/ot_convergence.proptest-regressions`, which
//! the next `cargo test --test ot_convergence` replays first (delete that
//! file once fixed, or commit it to keep the case). A printed script can also
//! be pasted into a `#[test]` (lists as `vec![...]`, strings `.into()`) that
//! calls `run_script` on it.

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use switchboard::documents::ot::{self, Op, char_len};

fn ins(pos: usize, text: &str) -> Op {
    Op::Insert {
        pos,
        text: text.into(),
    }
}

fn del(pos: usize, len: usize) -> Op {
    Op::Delete { pos, len }
}

// ---------------------------------------------------------------------------
// The server
// ---------------------------------------------------------------------------

/// One document on the server.
struct Server {
    text: String,
    /// The version of `text`: how many ops have been accepted.
    version: u64,
    /// Every accepted op, as applied: `log[v - 1]` made version `v`.
    log: Vec<Op>,
    /// The text at each version (`history[v]`). Test-only: it lets the model
    /// check that clients send only ops the real server would accept, and
    /// what each client's text must be.
    history: Vec<String>,
}

impl Server {
    fn new(initial: &str) -> Self {
        Server {
            text: initial.to_string(),
            version: 0,
            log: Vec::new(),
            history: vec![initial.to_string()],
        }
    }

    /// Accepts `op`, made by a client on version `base`: rebases it past each
    /// op accepted after `base`, in order, applies it and logs it. Returns its
    /// version and the op as applied; the caller relays `(version, op)` to
    /// every other client and acks `version` to the sender.
    fn receive(&mut self, op: Op, base: u64) -> (u64, Op) {
        // What the real server checks before it accepts an op (otherwise
        // `invalid_payload`): a client following the discipline never fails
        // these.
        assert!(
            base <= self.version,
            "{op:?} based on future version {base}"
        );
        assert!(!op.is_noop(), "a client sent a no-op: {op:?}");
        let base_len = char_len(&self.history[base as usize]);
        assert!(
            op.check(base_len).is_ok(),
            "{op:?} does not fit version {base} ({base_len} characters)"
        );

        let mut op = op;
        for prior in &self.log[base as usize..] {
            op = ot::rebase(&op, prior);
        }
        ot::apply(&mut self.text, &op).expect("a rebased op fits the server's text");
        self.log.push(op.clone());
        self.version += 1;
        self.history.push(self.text.clone());
        (self.version, op)
    }
}

// ---------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------

/// What the server sends a client.
#[derive(Debug, Clone)]
enum FromServer {
    /// Another client's op, accepted as `version`, to apply on `version - 1`.
    Op { version: u64, op: Op },
    /// The client's own in-flight op was accepted as `version`.
    Ack { version: u64 },
}

impl FromServer {
    fn version(&self) -> u64 {
        match self {
            FromServer::Op { version, .. } | FromServer::Ack { version } => *version,
        }
    }
}

/// An op a client sends: made on server version `base`.
#[derive(Debug, Clone)]
struct Outgoing {
    op: Op,
    base: u64,
}

/// One client editing the document.
///
/// Invariant: `text` is the server's text at `version`, then `inflight`,
/// then each op of `buffer` applied (checked after every step by `Sim`).
struct Client {
    text: String,
    /// The last server version applied.
    version: u64,
    /// The op sent and not acked yet, rebased past every server op applied
    /// since (so it applies on the server's text at `version`).
    inflight: Option<Op>,
    /// Local edits not sent yet, each made on the text after the one before
    /// (the first on top of `inflight`).
    buffer: Vec<Op>,
    /// Server messages that arrived before one with a lower version.
    early: BTreeMap<u64, FromServer>,
    /// Test statistics: buffered ops that became no-ops and were not sent.
    dropped_noops: usize,
}

impl Client {
    fn new(initial: &str) -> Self {
        Client {
            text: initial.to_string(),
            version: 0,
            inflight: None,
            buffer: Vec::new(),
            early: BTreeMap::new(),
            dropped_noops: 0,
        }
    }

    /// The user edits: the edit shows at once, and is sent now if nothing
    /// is in flight.
    fn edit(&mut self, op: Op) -> Option<Outgoing> {
        ot::apply(&mut self.text, &op).expect("a local edit fits the local text");
        self.buffer.push(op);
        self.send_next()
    }

    /// With nothing in flight, sends the first buffered op, made on
    /// `version`. A buffered op that a concurrent delete swallowed became a
    /// no-op: the server would refuse it (`invalid_payload`), and it changes
    /// nothing, so it is dropped instead of sent.
    fn send_next(&mut self) -> Option<Outgoing> {
        if self.inflight.is_some() {
            return None;
        }
        while !self.buffer.is_empty() {
            let op = self.buffer.remove(0);
            if op.is_noop() {
                self.dropped_noops += 1;
                continue;
            }
            self.inflight = Some(op.clone());
            return Some(Outgoing {
                op,
                base: self.version,
            });
        }
        None
    }

    /// A message from the server arrives. Ops and acks are handled strictly
    /// in version order: one that comes early waits in `early`, one at or
    /// below `version` (a duplicate) is ignored. Returns the op to send, if
    /// an ack freed the slot.
    fn receive(&mut self, msg: FromServer) -> Option<Outgoing> {
        if msg.version() <= self.version {
            return None;
        }
        self.early.insert(msg.version(), msg);
        let mut out = None;
        while let Some(msg) = self.early.remove(&(self.version + 1)) {
            match msg {
                FromServer::Ack { version } => {
                    // Our op is now version `version`, already in `text`.
                    assert!(
                        self.inflight.is_some(),
                        "ack {version} with nothing in flight"
                    );
                    self.inflight = None;
                    self.version = version;
                    assert!(out.is_none(), "two acks without a send between them");
                    out = self.send_next();
                }
                FromServer::Op { version, op } => {
                    self.apply_remote(op);
                    self.version = version;
                }
            }
        }
        out
    }

    /// Applies another client's op, made on the server's text at `version`,
    /// to a text that also holds our pending ops. The op and each pending op
    /// (in flight first, then the buffer in order) transform each other:
    /// ours move past it (the server accepted it first, so it wins ties), it
    /// moves past ours; what remains of it applies on top of all of them.
    fn apply_remote(&mut self, mut incoming: Op) {
        for local in self.inflight.iter_mut().chain(self.buffer.iter_mut()) {
            let (local_after, incoming_after) = ot::transform_pair(local, &incoming);
            *local = local_after;
            incoming = incoming_after;
        }
        ot::apply(&mut self.text, &incoming).expect("a transformed op fits the client's text");
    }

    /// Whether nothing is pending.
    fn is_idle(&self) -> bool {
        self.inflight.is_none() && self.buffer.is_empty() && self.early.is_empty()
    }
}

// ---------------------------------------------------------------------------
// The network and the simulation (test machinery)
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Msg {
    ToServer { from: usize, out: Outgoing },
    ToClient { to: usize, msg: FromServer },
}

/// Messages in transit on a simulated clock, delivered in time order (ties
/// in the order sent). Each message takes the next delay from `delays`
/// (cycled); a server message marked `true` is also delivered a second
/// time, later (as a rejoin with `since` may replay ops a client has).
/// A client's ops reach the server in the order sent: it has at most one in
/// flight.
struct Network {
    now: u64,
    seq: u64,
    queue: BTreeMap<(u64, u64), Msg>,
    delays: Vec<(u64, bool)>,
    next_delay: usize,
}

impl Network {
    fn new(delays: Vec<(u64, bool)>) -> Self {
        assert!(!delays.is_empty());
        Network {
            now: 0,
            seq: 0,
            queue: BTreeMap::new(),
            delays,
            next_delay: 0,
        }
    }

    fn delay(&mut self) -> (u64, bool) {
        let d = self.delays[self.next_delay % self.delays.len()];
        self.next_delay += 1;
        d
    }

    fn push(&mut self, at: u64, msg: Msg) {
        self.seq += 1;
        self.queue.insert((at, self.seq), msg);
    }

    fn send(&mut self, msg: Msg) {
        let (delay, twice) = self.delay();
        let at = self.now + delay;
        if twice && matches!(msg, Msg::ToClient { .. }) {
            self.push(at, msg.clone());
            let (again, _) = self.delay();
            self.push(at + again, msg);
        } else {
            self.push(at, msg);
        }
    }

    /// The next message due at or before `until`, advancing the clock to it.
    fn next_until(&mut self, until: u64) -> Option<Msg> {
        let entry = self.queue.first_entry()?;
        let (at, _) = *entry.key();
        if at > until {
            return None;
        }
        self.now = self.now.max(at);
        Some(entry.remove())
    }
}

/// What happened in a run, to check that the random scripts reach the
/// cases that matter.
#[derive(Debug, Default, Clone)]
struct Stats {
    edits: usize,
    rebased: usize,
    noops_relayed: usize,
    early_ops: usize,
    early_acks: usize,
    duplicates: usize,
    dropped_noops: usize,
    transformed_past_buffer: usize,
}

struct Sim {
    server: Server,
    clients: Vec<Client>,
    net: Network,
    stats: Stats,
}

impl Sim {
    fn new(clients: usize, initial: &str, delays: Vec<(u64, bool)>) -> Self {
        Sim {
            server: Server::new(initial),
            clients: (0..clients).map(|_| Client::new(initial)).collect(),
            net: Network::new(delays),
            stats: Stats::default(),
        }
    }

    // The checks return `Err` rather than panic, so that a failing random
    // run shrinks without printing a panic for every attempt.

    /// Client `c` makes a local edit now.
    fn edit(&mut self, c: usize, op: Op) -> Result<(), String> {
        self.stats.edits += 1;
        if let Some(out) = self.clients[c].edit(op) {
            self.net.send(Msg::ToServer { from: c, out });
        }
        self.check_client(c)
    }

    /// Delivers everything due up to time `t`, then sets the clock to `t`.
    fn run_until(&mut self, t: u64) -> Result<(), String> {
        while let Some(msg) = self.net.next_until(t) {
            self.deliver(msg)?;
        }
        self.net.now = self.net.now.max(t);
        Ok(())
    }

    /// Delivers every message, including those the deliveries cause.
    fn settle(&mut self) -> Result<(), String> {
        while let Some(msg) = self.net.next_until(u64::MAX) {
            self.deliver(msg)?;
        }
        Ok(())
    }

    fn deliver(&mut self, msg: Msg) -> Result<(), String> {
        match msg {
            Msg::ToServer { from, out } => {
                if out.base < self.server.version {
                    self.stats.rebased += 1;
                }
                let (version, op) = self.server.receive(out.op, out.base);
                if op.is_noop() {
                    self.stats.noops_relayed += 1;
                }
                for to in 0..self.clients.len() {
                    let msg = if to == from {
                        FromServer::Ack { version }
                    } else {
                        FromServer::Op {
                            version,
                            op: op.clone(),
                        }
                    };
                    self.net.send(Msg::ToClient { to, msg });
                }
                Ok(())
            }
            Msg::ToClient { to, msg } => {
                let client = &self.clients[to];
                let v = msg.version();
                if v <= client.version {
                    self.stats.duplicates += 1;
                } else if v > client.version + 1 {
                    match msg {
                        FromServer::Op { .. } => self.stats.early_ops += 1,
                        FromServer::Ack { .. } => self.stats.early_acks += 1,
                    }
                }
                if matches!(msg, FromServer::Op { .. }) && !client.buffer.is_empty() {
                    self.stats.transformed_past_buffer += 1;
                }
                if let Some(out) = self.clients[to].receive(msg) {
                    self.net.send(Msg::ToServer { from: to, out });
                }
                self.check_client(to)
            }
        }
    }

    /// The client invariant: its text is the server's text at its version
    /// with its pending ops applied.
    fn check_client(&self, c: usize) -> Result<(), String> {
        let client = &self.clients[c];
        let mut expected = self.server.history[client.version as usize].clone();
        for op in client.inflight.iter().chain(&client.buffer) {
            ot::apply(&mut expected, op)
                .map_err(|e| format!("client {c}: pending {op:?} does not fit: {e}"))?;
        }
        if client.text != expected {
            return Err(format!(
                "client {c} at version {}: text {:?}, expected {expected:?} \
                 (server's text at that version, then inflight {:?}, buffer {:?})",
                client.version, client.text, client.inflight, client.buffer
            ));
        }
        Ok(())
    }

    /// After `settle`: every client has the server's text and version and
    /// nothing pending. Returns the text.
    fn converged(&self) -> Result<&str, String> {
        assert!(self.net.queue.is_empty(), "converged() before settle()");
        let server = &self.server;
        for (c, client) in self.clients.iter().enumerate() {
            if client.text != server.text || client.version != server.version {
                return Err(format!(
                    "client {c} has {:?} at version {}, the server {:?} at version {}",
                    client.text, client.version, server.text, server.version
                ));
            }
            if !client.is_idle() {
                return Err(format!(
                    "client {c} still has pending ops: inflight {:?}, buffer {:?}, early {:?}",
                    client.inflight, client.buffer, client.early
                ));
            }
        }
        Ok(&server.text)
    }
}

// ---------------------------------------------------------------------------
// Random scripts
// ---------------------------------------------------------------------------

/// Where an edit starts, resolved against the client's text when made.
#[derive(Debug, Clone)]
enum Place {
    Start,
    /// The end for an insert; the last character for a delete.
    End,
    /// Modulo the valid range.
    At(usize),
}

/// How much a delete removes, resolved against the client's text.
#[derive(Debug, Clone)]
enum Extent {
    One,
    ToEnd,
    /// 1 + this, modulo what is left after the start.
    Some(usize),
}

#[derive(Debug, Clone)]
enum Edit {
    Insert { at: Place, text: String },
    Delete { at: Place, len: Extent },
}

impl Edit {
    /// The op this edit is on a text of `n` characters; `None` for a delete
    /// of an empty text (no user can make one).
    fn resolve(&self, n: usize) -> Option<Op> {
        match self {
            Edit::Insert { at, text } => {
                let pos = match at {
                    Place::Start => 0,
                    Place::End => n,
                    Place::At(k) => k % (n + 1),
                };
                Some(ins(pos, text))
            }
            Edit::Delete { at, len } => {
                if n == 0 {
                    return None;
                }
                let pos = match at {
                    Place::Start => 0,
                    Place::End => n - 1,
                    Place::At(k) => k % n,
                };
                let len = match len {
                    Extent::One => 1,
                    Extent::ToEnd => n - pos,
                    Extent::Some(k) => 1 + k % (n - pos),
                };
                Some(del(pos, len))
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Step {
    /// Time that passes (messages delivered) before the edit.
    wait: u64,
    /// Which client edits, modulo the number of clients.
    client: usize,
    edit: Edit,
}

#[derive(Debug, Clone)]
struct Script {
    clients: usize,
    initial: String,
    steps: Vec<Step>,
    delays: Vec<(u64, bool)>,
}

/// Bits of text: ASCII, precomposed, astral (one scalar value, two UTF-16
/// units), a lone combining mark, a decomposed letter (two scalar values).
fn piece() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("a"),
        Just("b"),
        Just("é"),
        Just("😀"),
        Just("\u{301}"),
        Just("e\u{301}"),
        Just("xyz"),
        Just("😀😀"),
    ]
}

fn text(pieces: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = String> {
    prop::collection::vec(piece(), pieces).prop_map(|v| v.concat())
}

fn place() -> impl Strategy<Value = Place> {
    prop_oneof![
        Just(Place::Start),
        Just(Place::End),
        (0..64usize).prop_map(Place::At),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    let extent = prop_oneof![
        Just(Extent::One),
        Just(Extent::ToEnd),
        (0..64usize).prop_map(Extent::Some),
    ];
    prop_oneof![
        3 => (place(), text(1..=3)).prop_map(|(at, text)| Edit::Insert { at, text }),
        2 => (place(), extent).prop_map(|(at, len)| Edit::Delete { at, len }),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    let step =
        (0..=12u64, 0..5usize, edit()).prop_map(|(wait, client, edit)| Step { wait, client, edit });
    (
        2..=5usize,
        prop_oneof![Just(String::new()), text(1..=8)],
        prop::collection::vec(step, 0..=40),
        prop::collection::vec((0..=20u64, prop::bool::weighted(0.05)), 1..=32),
    )
        .prop_map(|(clients, initial, steps, delays)| Script {
            clients,
            initial,
            steps,
            delays,
        })
}

/// Runs a script to the end and checks that everyone converged.
fn run_script(script: &Script) -> Result<Stats, String> {
    let mut sim = Sim::new(script.clients, &script.initial, script.delays.clone());
    for step in &script.steps {
        sim.run_until(sim.net.now + step.wait)?;
        let c = step.client % script.clients;
        if let Some(op) = step.edit.resolve(char_len(&sim.clients[c].text)) {
            sim.edit(c, op)?;
        }
    }
    sim.settle()?;
    sim.converged()?;
    sim.stats.dropped_noops = sim.clients.iter().map(|c| c.dropped_noops).sum();
    Ok(sim.stats)
}

/// Random concurrent edits by 2–5 clients over a reordering network: all
/// converge on the server's text. Also checks that the runs, together,
/// reached reordered ops and acks, duplicates, rebased and no-op ops.
#[test]
fn random_concurrent_edits_converge() {
    // 500 cases (about a second); `PROPTEST_CASES=50000` soaks longer.
    let cases = match std::env::var_os("PROPTEST_CASES") {
        Some(_) => Config::default().cases,
        None => 500,
    };
    let mut runner = TestRunner::new(Config {
        cases,
        // Where a failing case's seed is saved (what `proptest!` sets).
        source_file: Some(file!()),
        ..Config::default()
    });
    let total = RefCell::new(Stats::default());
    let result = runner.run(&script(), |script| {
        let s = run_script(&script).map_err(TestCaseError::fail)?;
        let mut t = total.borrow_mut();
        t.edits += s.edits;
        t.rebased += s.rebased;
        t.noops_relayed += s.noops_relayed;
        t.early_ops += s.early_ops;
        t.early_acks += s.early_acks;
        t.duplicates += s.duplicates;
        t.dropped_noops += s.dropped_noops;
        t.transformed_past_buffer += s.transformed_past_buffer;
        Ok(())
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let t = total.into_inner();
    let reached = [
        t.edits,
        t.rebased,
        t.noops_relayed,
        t.early_ops,
        t.early_acks,
        t.duplicates,
        t.dropped_noops,
        t.transformed_past_buffer,
    ];
    assert!(
        reached.iter().all(|&n| n > 0),
        "a case never happened: {t:?}"
    );
}

// ---------------------------------------------------------------------------
// Edge cases, step by step
// ---------------------------------------------------------------------------

/// Every message takes 10 time units: edits made at times 0..10 are all
/// concurrent (nobody has heard of anyone else's), and the server accepts
/// them in the order made.
fn concurrent(clients: usize, initial: &str, edits: &[(usize, Op)]) -> String {
    let run = || {
        let mut sim = Sim::new(clients, initial, vec![(10, false)]);
        for (t, (c, op)) in edits.iter().enumerate() {
            sim.run_until(t as u64)?;
            sim.edit(*c, op.clone())?;
        }
        sim.settle()?;
        sim.converged().map(str::to_string)
    };
    run().unwrap_or_else(|e| panic!("{edits:?} on {initial:?}: {e}"))
}

#[test]
fn inserts_at_one_position_follow_server_order() {
    // Client 2's op reaches the server first, then 0's, then 1's.
    let edits = [(2, ins(1, "Z")), (0, ins(1, "X")), (1, ins(1, "Y"))];
    assert_eq!(concurrent(3, "ab", &edits), "aZXYb");
    let edits = [(0, ins(1, "X")), (1, ins(1, "Y")), (2, ins(1, "Z"))];
    assert_eq!(concurrent(3, "ab", &edits), "aXYZb");
    // At the end of the text.
    let edits = [(1, ins(2, "Y")), (0, ins(2, "X"))];
    assert_eq!(concurrent(2, "ab", &edits), "abYX");
}

#[test]
fn overlapping_deletes_delete_the_union() {
    for edits in [
        [(0, del(1, 3)), (1, del(2, 3))],
        [(1, del(2, 3)), (0, del(1, 3))],
    ] {
        assert_eq!(concurrent(2, "abcdefg", &edits), "afg");
    }
    // One inside the other, and the same run twice.
    assert_eq!(
        concurrent(2, "abcdefg", &[(0, del(2, 1)), (1, del(0, 7))]),
        ""
    );
    assert_eq!(
        concurrent(2, "abcdefg", &[(0, del(0, 7)), (1, del(2, 1))]),
        ""
    );
    assert_eq!(
        concurrent(2, "abc", &[(0, del(1, 1)), (1, del(1, 1))]),
        "ac"
    );
}

#[test]
fn an_insert_inside_a_concurrent_delete_goes_with_it() -> Result<(), String> {
    // Whichever the server accepts first, the delete wins.
    assert_eq!(
        concurrent(2, "abcde", &[(0, del(1, 3)), (1, ins(2, "XY"))]),
        "ae"
    );
    assert_eq!(
        concurrent(2, "abcde", &[(1, ins(2, "XY")), (0, del(1, 3))]),
        "ae"
    );
    // At either edge of the run, inserts survive next to the gap.
    let edits = [(0, del(1, 3)), (1, ins(1, "X")), (2, ins(4, "Y"))];
    assert_eq!(concurrent(3, "abcde", &edits), "aXYe");
    // A client's buffered insert that a concurrent delete swallows is never
    // sent. Client 1 has "XY" in flight and "Z" buffered (between X and Y),
    // both inside the run client 0 deletes.
    let mut sim = Sim::new(2, "abcde", vec![(10, false)]);
    sim.edit(0, del(1, 3))?;
    sim.edit(1, ins(2, "XY"))?;
    sim.edit(1, ins(3, "Z"))?;
    sim.settle()?;
    assert_eq!(sim.converged()?, "ae");
    assert_eq!(sim.clients[1].dropped_noops, 1);
    assert_eq!(sim.server.version, 2, "the delete and the in-flight insert");
    assert!(sim.server.log[1].is_noop());
    Ok(())
}

#[test]
fn edits_on_an_empty_document() -> Result<(), String> {
    assert_eq!(
        concurrent(2, "", &[(0, ins(0, "hi")), (1, ins(0, "😀"))]),
        "hi😀"
    );
    // Everyone types into the empty document, then one clears it while
    // another appends: the append survives.
    let mut sim = Sim::new(3, "", vec![(10, false)]);
    sim.edit(0, ins(0, "a"))?;
    sim.edit(1, ins(0, "b"))?;
    sim.edit(2, ins(0, "c"))?;
    sim.settle()?;
    assert_eq!(sim.converged()?, "abc");
    sim.edit(0, del(0, 3))?;
    sim.edit(1, ins(3, "!"))?;
    sim.settle()?;
    assert_eq!(sim.converged()?, "!");
    sim.edit(2, del(0, 1))?;
    sim.settle()?;
    assert_eq!(sim.converged()?, "");
    assert_eq!(sim.server.version, 6);
    Ok(())
}

#[test]
fn deletes_to_the_end() {
    // Delete " world" while another deletes "rld" and a third appends "!".
    let edits = [(0, del(5, 6)), (1, ins(11, "!")), (2, del(8, 3))];
    assert_eq!(concurrent(3, "hello world", &edits), "hello!");
    let edits = [(2, del(8, 3)), (1, ins(11, "!")), (0, del(5, 6))];
    assert_eq!(concurrent(3, "hello world", &edits), "hello!");
    // Two clients delete everything.
    assert_eq!(concurrent(2, "abc", &[(0, del(0, 3)), (1, del(0, 3))]), "");
}

#[test]
fn astral_and_combining_characters_count_as_one_each() {
    // "e" + U+0301, "😀", "x": four scalar values (five UTF-16 units).
    let s = "e\u{301}😀x";
    // Remove the combining mark; put one after the emoji; remove the emoji.
    let edits = [(0, del(1, 1)), (1, ins(3, "\u{301}")), (2, del(2, 1))];
    assert_eq!(concurrent(3, s, &edits), "e\u{301}x");
    // Astral inserts at one place, and around an astral character.
    let edits = [(0, ins(1, "😀")), (1, ins(1, "🎉")), (2, ins(2, "\u{301}"))];
    assert_eq!(concurrent(3, "a😀b", &edits), "a😀🎉😀\u{301}b");
    // Deleting one of two code points of a decomposed letter.
    let edits = [(0, del(0, 1)), (1, ins(2, "\u{301}"))];
    assert_eq!(concurrent(2, "e\u{301}", &edits), "\u{301}\u{301}");
}

#[test]
fn out_of_order_acks_and_ops_are_applied_in_version_order() -> Result<(), String> {
    // Client 1's op is version 1, client 0's version 2. Client 0 hears its
    // ack (version 2) long before client 1's op (version 1), and keeps it.
    // Delays are taken in the order messages are sent: 1→server, 0→server,
    // then for version 1: to 0 (30), to 1; for version 2: to 0, to 1.
    let delays = vec![
        (1, false),
        (2, false),
        (30, false),
        (1, false),
        (1, false),
        (1, false),
    ];
    let mut sim = Sim::new(2, "ab", delays);
    sim.edit(1, ins(2, "Y"))?;
    sim.edit(0, ins(0, "X"))?;
    sim.run_until(5)?;
    assert_eq!(sim.server.version, 2);
    assert_eq!(sim.clients[0].version, 0, "ack 2 waits for op 1");
    assert!(sim.clients[0].early.contains_key(&2));
    assert_eq!(sim.clients[0].text, "Xab");
    sim.settle()?;
    assert_eq!(sim.converged()?, "XabY");
    Ok(())
}
