// doc-client.mjs against an in-process fake server that follows the rules of
// docs/protocol.md §15 (versions, rebase past the ops since the op's base,
// opId dedup, `since` with a bounded op log, stale_version), on a simulated
// network with random delays, reordering and disconnects, in virtual time.
// No real server needed. A failure names its seed; SEED=n reruns it.
import { describe, it } from "node:test";
import assert from "node:assert/strict";
import {
  DocClient,
  applyOp,
  scalarIndex,
  scalarLength,
  isWellFormed,
  transform,
  transformPair,
  transformPosition,
  rebase,
  AFTER,
  BEFORE,
} from "../doc-client.mjs";
import { prng } from "./prng.mjs";

// ---- the server's rules, ported again from src/documents/ot.rs independently of the
// module (so a bug in the module's transform is not mirrored here) ----
const chars = (s) => [...s];
const T = {
  apply(text, op) {
    const cs = chars(text);
    if (op.type === "insert") {
      if (op.position > cs.length) throw new RangeError("insert beyond the end");
      cs.splice(op.position, 0, op.content);
    } else {
      if (op.position + op.length > cs.length) throw new RangeError("delete beyond the end");
      cs.splice(op.position, op.length);
    }
    return cs.join("");
  },
  // Rust: transform(op, other, tie) with tie After (the server's rebase).
  rebase(op, other) {
    const len = (s) => chars(s).length;
    if (op.type === "insert" && other.type === "insert") {
      return { ...op, position: other.position <= op.position ? op.position + len(other.content) : op.position };
    }
    if (op.type === "insert") {
      const { position: q, length: l } = other;
      if (op.position <= q) return { ...op };
      if (op.position >= q + l) return { ...op, position: op.position - l };
      return { type: "insert", position: q, content: "" };
    }
    if (other.type === "insert") {
      const n = len(other.content);
      if (other.position <= op.position) return { ...op, position: op.position + n };
      if (other.position >= op.position + op.length) return { ...op };
      return { ...op, length: op.length + n };
    }
    const [p, l, q, m] = [op.position, op.length, other.position, other.length];
    const overlap = Math.max(0, Math.min(p + l, q + m) - Math.max(p, q));
    return { type: "delete", position: q < p ? p - Math.min(m, p - q) : p, length: l - overlap };
  },
};

// ---- virtual time ----
class Sim {
  constructor() {
    this.now = 0;
    this.queue = [];
    this.seq = 0;
  }
  at(time, fn) {
    const ev = { time: Math.max(time, this.now), seq: this.seq++, fn };
    // Binary insertion by (time, seq).
    let lo = 0;
    let hi = this.queue.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const e = this.queue[mid];
      if (e.time < ev.time || (e.time === ev.time && e.seq < ev.seq)) lo = mid + 1;
      else hi = mid;
    }
    this.queue.splice(lo, 0, ev);
  }
  after(delay, fn) {
    this.at(this.now + delay, fn);
  }
  async run() {
    for (let idle = 0; idle < 3; ) {
      if (!this.queue.length) {
        // Real timers (the client's retry pauses) may still add events.
        await new Promise((r) => setTimeout(r, 20));
        idle++;
        continue;
      }
      idle = 0;
      const ev = this.queue.shift();
      this.now = ev.time;
      ev.fn();
      await new Promise((r) => setImmediate(r)); // let promise callbacks run
    }
  }
}

const clone = (x) => (x === undefined ? undefined : JSON.parse(JSON.stringify(x)));
const DOC_ID = /^[A-Za-z0-9_.:@-]{1,128}$/;

// ---- the fake server ----
class FakeServer {
  constructor(sim, { keep = 1000 } = {}) {
    this.sim = sim;
    this.keep = keep;
    this.docs = new Map();
    this.refuseNext = []; // codes to answer the next doc:operation(s) with
  }
  doc(id) {
    if (!this.docs.has(id)) this.docs.set(id, { text: "", version: 0, log: [], seen: new Map(), members: new Set() });
    return this.docs.get(id);
  }
  handle(conn, event, p, ack) {
    const err = (code) => ack?.({ success: false, error: code, code });
    if (event === "doc:join") {
      const docId = typeof p === "string" ? p : p?.docId;
      if (typeof docId !== "string" || !DOC_ID.test(docId)) return err("invalid_payload");
      const d = this.doc(docId);
      d.members.add(conn);
      conn.docs.add(docId);
      const res = { success: true, docId, content: d.text, version: d.version };
      const since = p?.since;
      if (Number.isInteger(since) && since >= 0 && since <= d.version) {
        const oldest = d.log.length ? d.log[0].version : d.version + 1;
        if (since >= oldest - 1) res.ops = d.log.filter((o) => o.version > since).map(clone);
      }
      ack?.(res);
      conn.send("doc:sync", { docId, content: d.text, version: d.version });
      return;
    }
    if (event === "doc:operation") {
      if (!p || typeof p.docId !== "string" || !DOC_ID.test(p.docId)) return err("invalid_payload");
      if (!conn.docs.has(p.docId)) return err("not_in_room");
      const d = this.doc(p.docId);
      if (this.refuseNext.length) return err(this.refuseNext.shift());
      if (p.opId !== undefined && d.seen.has(`${conn.userId}\n${p.opId}`)) {
        return ack?.({ success: true, version: d.seen.get(`${conn.userId}\n${p.opId}`) });
      }
      let op;
      if (p.type === "insert" && typeof p.content === "string" && p.content !== "") op = { type: "insert", position: p.position, content: p.content };
      else if (p.type === "delete" && Number.isInteger(p.length) && p.length >= 1) op = { type: "delete", position: p.position, length: p.length };
      else return err("invalid_payload");
      if (!Number.isInteger(op.position) || op.position < 0 || !Number.isInteger(p.version) || p.version < 0) return err("invalid_payload");
      if (p.version > d.version) return err("invalid_payload");
      const oldest = d.log.length ? d.log[0].version : d.version + 1;
      if (p.version < oldest - 1) return err("stale_version");
      // Check against the text at p.version: replay is not kept, so check
      // the rebased op against the current text instead (same verdict for a
      // well-behaved client, which is all this fake needs).
      for (const prior of d.log) if (prior.version > p.version) op = T.rebase(op, prior);
      try {
        d.text = T.apply(d.text, op);
      } catch {
        return err("invalid_payload");
      }
      d.version++;
      const entry = { docId: p.docId, version: d.version, ...op, userId: conn.userId, ...(p.opId !== undefined ? { opId: p.opId } : {}) };
      d.log.push(entry);
      while (d.log.length > this.keep) d.log.shift();
      if (p.opId !== undefined) d.seen.set(`${conn.userId}\n${p.opId}`, d.version);
      ack?.({ success: true, version: d.version });
      for (const other of d.members) {
        // A relay lost on its way (Redis pub/sub between nodes promises no delivery).
        if (other !== conn && !this.loseRelay?.()) other.send("doc:operation", clone(entry));
      }
      return;
    }
    if (event === "doc:cursor") {
      if (!conn.docs.has(p?.docId)) return err("not_in_room");
      for (const other of this.doc(p.docId).members) {
        if (other !== conn) other.send("doc:cursor", { docId: p.docId, userId: conn.userId, position: p.position });
      }
      return;
    }
    if (event === "doc:leave") {
      const docId = typeof p === "string" ? p : p?.docId;
      if (!conn.docs.has(docId)) return err("not_in_room");
      conn.docs.delete(docId);
      this.doc(docId).members.delete(conn);
      return ack?.({ success: true, docId });
    }
    err("not_found");
  }
  close(conn) {
    for (const id of conn.docs) this.doc(id).members.delete(conn);
    conn.docs.clear();
  }
}

/**
 * The client end of a simulated connection, with the part of the
 * socket.io-client Socket API that DocClient uses. Client→server is FIFO (one
 * connection); server→client is FIFO too unless `reorder`, which models a
 * client whose relays come through another node (any order).
 */
class FakeSocket {
  constructor(sim, server, userId, rng, { maxDelay = 15, reorder = false } = {}) {
    Object.assign(this, { sim, server, userId, rng, maxDelay, reorder });
    this.connected = false;
    this.listeners = new Map();
    this.conn = null;
    this.violations = [];
    this.sent = [];
  }
  on(ev, fn) {
    if (!this.listeners.has(ev)) this.listeners.set(ev, new Set());
    this.listeners.get(ev).add(fn);
    return this;
  }
  off(ev, fn) {
    this.listeners.get(ev)?.delete(fn);
    return this;
  }
  fire(ev, ...args) {
    for (const fn of [...(this.listeners.get(ev) ?? [])]) fn(...args);
  }
  get volatile() {
    return { emit: (ev, p) => this.connected && this.emit(ev, p) };
  }
  delay() {
    return this.rng.int(0, this.maxDelay);
  }
  emit(ev, payload, ack) {
    if (!this.connected) {
      // socket.io-client would buffer it and send it on reconnect, before
      // the client could rejoin: the DocClient must not do that.
      this.violations.push(`emit ${ev} while disconnected`);
      return this;
    }
    if (ev === "doc:operation") this.sent.push(clone(payload));
    const conn = this.conn;
    const p = clone(payload);
    conn.upAt = Math.max(conn.upAt, this.sim.now + this.delay());
    this.sim.at(conn.upAt, () => {
      if (!conn.alive) return;
      this.server.handle(conn, ev, p, ack && ((res) => conn.deliver(() => ack(clone(res)))));
    });
    return this;
  }
  connect() {
    const conn = {
      alive: true,
      userId: this.userId,
      docs: new Set(),
      upAt: 0,
      downAt: 0,
      deliver: (fn) => {
        const at = this.reorder ? this.sim.now + this.delay() : (conn.downAt = Math.max(conn.downAt, this.sim.now + this.delay()));
        this.sim.at(at, () => conn.alive && fn());
      },
      send: (ev, data) => conn.deliver(() => this.fire(ev, clone(data))),
    };
    this.sim.after(this.delay(), () => {
      this.conn = conn;
      this.connected = true;
      this.fire("connect");
    });
  }
  /** The connection drops: whatever is on the wire either way is lost. */
  drop() {
    if (!this.connected) return;
    this.conn.alive = false;
    this.server.close(this.conn);
    this.connected = false;
    this.fire("disconnect", "transport close");
  }
}

const ALPHABET = ["a", "b", "c", "x", "é", "e\u0301", "😀", "\u0301", "🇫🇷", " "];

async function scenario(seed, { clients = 3, edits = 60, keep = 1000, reorder = false, drops = 0, maxDelay = 15, lose = 0 } = {}) {
  const rng = prng(seed);
  const sim = new Sim();
  const server = new FakeServer(sim, { keep });
  // Relays are lost only in the first part: a lost last op is only noticed
  // when a later one arrives.
  let lost = 0;
  if (lose) server.loseRelay = () => sim.now < 300 && rng.chance(lose) && ++lost > 0;
  const docId = "notes";
  const errors = [];
  const all = [];
  for (let i = 0; i < clients; i++) {
    const socket = new FakeSocket(sim, server, `user${i}`, rng, { maxDelay, reorder: reorder && i !== 0 });
    const doc = new DocClient(socket, docId, {
      onError: (e) => errors.push({ client: i, ...e }),
      onChange: (text, change) => {
        // The text passed is the client's text, and the change fits.
        assert.equal(text, doc.text);
        assert.ok(change.type === "reset" || change.version === doc.version);
      },
      retryDelayMs: 1,
      gapTimeoutMs: 5,
    });
    all.push({ socket, doc, joined: false });
    socket.connect();
    sim.after(0, () => doc.join().then(() => (all[i].joined = true)));
    // Edits at random times.
    let t = rng.int(0, 20);
    for (let e = 0; e < edits; e++) {
      t += rng.int(0, 20);
      sim.at(t, () => {
        if (!all[i].joined) return;
        const n = scalarLength(doc.text);
        if (n > 0 && rng.chance(0.4)) {
          const pos = rng.int(0, n - 1);
          doc.delete(pos, rng.int(1, Math.min(3, n - pos)));
        } else {
          let s = "";
          for (let k = rng.int(1, 3); k > 0; k--) s += rng.pick(ALPHABET);
          doc.insert(rng.int(0, n), s);
        }
        if (rng.chance(0.1)) doc.cursor(rng.int(0, scalarLength(doc.text)));
      });
    }
    // Connection drops, each followed by a reconnect.
    for (let k = 0; k < drops; k++) {
      const at = rng.int(10, t);
      const down = rng.int(1, 150);
      sim.at(at, () => {
        if (!socket.connected) return;
        socket.drop();
        sim.after(down, () => socket.connect());
      });
    }
  }
  await sim.run();
  const d = server.docs.get(docId);
  const where = `seed ${seed}`;
  for (const [i, { socket, doc }] of all.entries()) {
    assert.deepEqual(socket.violations, [], `${where}: client ${i}`);
    assert.equal(doc.pending, false, `${where}: client ${i} still has edits pending`);
    assert.equal(doc.version, d.version, `${where}: client ${i} version`);
    assert.equal(doc.text, d.text, `${where}: client ${i} text`);
    await doc.flushed();
  }
  // Only resyncs after a too-old rejoin are expected (and only with a short log).
  const unexpected = errors.filter((e) => !(e.code === "resync" && keep < 1000));
  assert.deepEqual(unexpected, [], `${where}: unexpected errors`);
  return { version: d.version, text: d.text, errors, lost, sent: all.map((c) => c.socket.sent.length) };
}

// SEED=n runs seed n; SEEDS=a-b runs seeds a..b (a longer stress run).
function seeds() {
  if (process.env.SEED) return [Number(process.env.SEED)];
  const [a, b] = (process.env.SEEDS ?? "1-12").split("-").map(Number);
  return Array.from({ length: b - a + 1 }, (_, i) => a + i);
}
const SEEDS = seeds();

describe("scalar values", () => {
  it("counts code points, not UTF-16 units", () => {
    assert.equal(scalarLength("😀"), 1);
    assert.equal(scalarLength("e\u0301"), 2);
    assert.equal(scalarLength("a😀c"), 3);
    assert.equal(scalarLength("🇫🇷"), 2); // two regional indicators
    assert.equal(scalarLength("\ud800"), 1); // a lone surrogate counts as one
    assert.equal(scalarIndex("a😀c", 2), 3);
    assert.equal(scalarIndex("a😀c", 3), 4);
    assert.equal(scalarIndex("a😀c", 4), -1);
    assert.equal(scalarIndex("abc", 4), -1);
    assert.ok(isWellFormed("a😀"));
    assert.ok(!isWellFormed("a\ud83d"));
    assert.ok(!isWellFormed("\ude00a"));
  });

  it("applies ops like src/documents/ot.rs apply_counts_scalar_values", () => {
    const ins = (position, content) => ({ type: "insert", position, content });
    const del = (position, length) => ({ type: "delete", position, length });
    assert.equal(applyOp("", ins(0, "abc")), "abc");
    assert.equal(applyOp("abc", ins(3, "d")), "abcd");
    assert.equal(applyOp("a😀c", ins(2, "b")), "a😀bc");
    assert.equal(applyOp("a😀c", del(1, 1)), "ac");
    assert.equal(applyOp("😀😀😀", del(1, 2)), "😀");
    assert.equal(applyOp("e\u0301x", del(1, 1)), "ex");
    assert.equal(applyOp("abc", del(0, 3)), "");
    assert.throws(() => applyOp("ab", ins(3, "x")), RangeError);
    assert.throws(() => applyOp("ab", del(1, 2)), RangeError);
    assert.throws(() => applyOp("a😀", del(1, 2)), RangeError);
  });

  it("DocClient edits in scalar positions", async () => {
    const sim = new Sim();
    const server = new FakeServer(sim);
    const socket = new FakeSocket(sim, server, "u", prng(1));
    const doc = new DocClient(socket, "d");
    socket.connect();
    sim.after(0, () => doc.join());
    await sim.run();
    doc.insert(0, "😀e\u0301z");
    assert.equal(scalarLength(doc.text), 4);
    doc.insert(1, "|"); // after the emoji, not inside its surrogate pair
    assert.equal(doc.text, "😀|e\u0301z");
    doc.delete(3, 1); // the combining mark alone
    assert.equal(doc.text, "😀|ez");
    doc.delete(0, 1); // the whole emoji
    assert.equal(doc.text, "|ez");
    assert.throws(() => doc.insert(4, "x"), RangeError);
    assert.throws(() => doc.delete(2, 2), RangeError);
    assert.throws(() => doc.insert(0, "\ud83d"), TypeError);
    await sim.run();
    assert.equal(server.docs.get("d").text, "|ez");
    assert.equal(doc.version, server.docs.get("d").version);
  });

  it("update(text) sends the changed run only, never half a surrogate pair", async () => {
    const sim = new Sim();
    const server = new FakeServer(sim);
    const socket = new FakeSocket(sim, server, "u", prng(2));
    const doc = new DocClient(socket, "d");
    socket.connect();
    sim.after(0, () => doc.join());
    await sim.run();
    const steps = [
      ["a😀b", [{ type: "insert", position: 0, content: "a😀b" }]],
      // 😀 is D83D DE00, 😃 is D83D DE03: the shared high surrogate is not a common prefix.
      ["a😃b", [{ type: "delete", position: 1, length: 1 }, { type: "insert", position: 1, content: "😃" }]],
      ["a😃😃b", [{ type: "insert", position: 2, content: "😃" }]],
      ["ab", [{ type: "delete", position: 1, length: 2 }]],
      ["xab", [{ type: "insert", position: 0, content: "x" }]],
      ["xab", []],
      ["e\u0301", [{ type: "delete", position: 0, length: 3 }, { type: "insert", position: 0, content: "e\u0301" }]],
      ["e", [{ type: "delete", position: 1, length: 1 }]],
    ];
    for (const [text, ops] of steps) {
      const before = socket.sent.length;
      doc.update(text);
      assert.equal(doc.text, text);
      await sim.run();
      assert.deepEqual(
        socket.sent.slice(before).map(({ type, position, content, length }) => JSON.parse(JSON.stringify({ type, position, content, length }))),
        ops,
        JSON.stringify(text),
      );
      assert.equal(server.docs.get("d").text, text);
    }
    assert.throws(() => doc.update("\ud83d"), TypeError);
  });
});

describe("transform (port of src/documents/ot.rs)", () => {
  const ins = (position, content) => ({ type: "insert", position, content });
  const del = (position, length) => ({ type: "delete", position, length });

  it("keeps the unit cases of src/documents/ot.rs", () => {
    const [x, y] = [ins(1, "x"), ins(1, "y")];
    assert.equal(applyOp(applyOp("ab", x), rebase(y, x)), "axyb");
    assert.equal(applyOp(applyOp("ab", y), transformPair(y, x)[1]), "axyb");
    const [d, i] = [del(1, 3), ins(2, "XY")];
    assert.deepEqual(rebase(i, d), ins(1, ""));
    assert.deepEqual(rebase(d, i), del(1, 5));
    assert.equal(applyOp(applyOp("abcde", d), rebase(i, d)), "ae");
    assert.equal(applyOp(applyOp("abcde", i), rebase(d, i)), "ae");
    assert.equal(applyOp(applyOp("abcde", d), rebase(ins(1, "X"), d)), "aXe");
    assert.equal(applyOp(applyOp("abcde", d), rebase(ins(4, "X"), d)), "aXe");
    assert.deepEqual(rebase(del(1, 3), del(2, 3)), del(1, 1));
    assert.deepEqual(rebase(del(2, 3), del(1, 3)), del(1, 1));
    assert.deepEqual(rebase(del(2, 1), del(0, 5)), del(0, 0));
    // Ties: AFTER shifts past an insert at the same place, BEFORE does not.
    assert.deepEqual(transform(ins(1, "a"), ins(1, "😀b"), AFTER), ins(3, "a"));
    assert.deepEqual(transform(ins(1, "a"), ins(1, "😀b"), BEFORE), ins(1, "a"));
    assert.equal(transformPosition(3, ins(1, "😀")), 4);
    assert.equal(transformPosition(1, ins(1, "😀")), 1);
    assert.equal(transformPosition(4, del(1, 2)), 2);
    assert.equal(transformPosition(2, del(1, 5)), 1);
  });

  it("TP1 holds and matches the independent port, on random pairs", () => {
    const rng = prng(42);
    const pieces = ["a", "b", "é", "\u0301", "😀"];
    const text = () => Array.from({ length: rng.int(0, 11) }, () => rng.pick(pieces)).join("");
    const op = (n) => {
      if (rng.chance(0.5)) return ins(rng.int(0, n), text());
      const p = rng.int(0, n);
      return del(p, rng.int(0, n - p));
    };
    for (let k = 0; k < 4000; k++) {
      const s = text();
      const n = scalarLength(s);
      const [a, b] = [op(n), op(n)];
      const left = applyOp(applyOp(s, a), rebase(b, a));
      const right = applyOp(applyOp(s, b), transformPair(b, a)[1]);
      assert.equal(left, right, `case ${k}: ${JSON.stringify([s, a, b])}`);
      assert.deepEqual(rebase(b, a), T.rebase(b, a), `case ${k}`);
    }
  });
});

describe("DocClient against a fake server", () => {
  it("3 clients, random delays: all converge", async () => {
    for (const seed of SEEDS) await scenario(seed);
  });

  it("3 clients, relays out of order (as through other nodes): all converge", async () => {
    for (const seed of SEEDS) await scenario(1000 + seed, { reorder: true });
  });

  it("3 clients, connection drops and reconnects: all converge, nothing applied twice", async () => {
    for (const seed of SEEDS) {
      const r = await scenario(2000 + seed, { drops: 4, reorder: seed % 2 === 0 });
      assert.ok(r.version > 0);
    }
  });

  it("3 clients, relays lost between nodes: a gap is noticed and filled by rejoining with since", async () => {
    let lost = 0;
    for (const seed of SEEDS) {
      const r = await scenario(4000 + seed, { lose: 0.05, reorder: seed % 2 === 0 });
      lost += r.lost;
    }
    assert.ok(lost > 0, "some relays were lost");
  });

  it("a short op log: rejoins that are too old reset the text and report dropped edits", async () => {
    let resyncs = 0;
    for (const seed of SEEDS) {
      const r = await scenario(3000 + seed, { drops: 5, keep: 5, reorder: seed % 2 === 0 });
      resyncs += r.errors.filter((e) => e.code === "resync").length;
    }
    assert.ok(resyncs > 0, "some rejoin was too old");
  });

  it("merges consecutive typing and backspacing while an op is in flight", async () => {
    const sim = new Sim();
    const server = new FakeServer(sim);
    const socket = new FakeSocket(sim, server, "u", prng(3), { maxDelay: 5 });
    const doc = new DocClient(socket, "d");
    socket.connect();
    sim.after(0, () => doc.join());
    await sim.run();
    for (const ch of "hello") doc.insert(scalarLength(doc.text), ch); // 'h' in flight, "ello" merged
    doc.delete(4, 1); // backspace inside the buffered insert
    doc.delete(3, 1);
    doc.insert(3, "p!");
    await sim.run();
    assert.equal(doc.text, "help!");
    assert.equal(server.docs.get("d").text, "help!");
    assert.deepEqual(
      socket.sent.map(({ type, position, content, version }) => ({ type, position, content, version })),
      [
        { type: "insert", position: 0, content: "h", version: 0 },
        { type: "insert", position: 1, content: "elp!", version: 1 },
      ],
    );
    assert.ok(socket.sent.every((p) => typeof p.opId === "string" && p.opId.length >= 1 && p.opId.length <= 128));
    assert.notEqual(socket.sent[0].opId, socket.sent[1].opId);
    // Deletes merge too: backspaces, then a forward delete.
    doc.delete(4, 1); // in flight
    doc.delete(3, 1);
    doc.delete(2, 1);
    doc.delete(0, 1); // not adjacent: a new op
    doc.delete(0, 1); // forward delete, merged with the previous one
    await sim.run();
    assert.equal(doc.text, "");
    assert.deepEqual(
      socket.sent.slice(2).map(({ type, position, length }) => ({ type, position, length })),
      [
        { type: "delete", position: 4, length: 1 },
        { type: "delete", position: 2, length: 2 },
        { type: "delete", position: 0, length: 2 },
      ],
    );
  });

  it("refusals: rate_limited is retried, stale_version rejoins, too_large resyncs and reports", async () => {
    const sim = new Sim();
    const server = new FakeServer(sim);
    const socket = new FakeSocket(sim, server, "u", prng(4));
    const errors = [];
    const changes = [];
    const doc = new DocClient(socket, "d", {
      onError: (e) => errors.push(e),
      onChange: (text, c) => changes.push([text, c.type]),
      retryDelayMs: 1,
    });
    socket.connect();
    sim.after(0, () => doc.join());
    await sim.run();
    server.refuseNext.push("rate_limited", "unavailable");
    doc.insert(0, "abc");
    await sim.run();
    assert.equal(server.docs.get("d").text, "abc");
    assert.deepEqual(errors, []);

    server.refuseNext.push("stale_version");
    doc.insert(3, "d");
    await sim.run();
    assert.equal(server.docs.get("d").text, "abcd");
    assert.equal(doc.text, "abcd");
    assert.deepEqual(errors, []);

    server.refuseNext.push("too_large");
    doc.insert(4, "TOO BIG");
    await sim.run();
    assert.equal(doc.text, "abcd");
    assert.equal(doc.version, server.docs.get("d").version);
    assert.deepEqual(
      errors.map((e) => e.code),
      ["too_large"],
    );
    assert.deepEqual(errors[0].op, { type: "insert", position: 4, content: "TOO BIG" });
    assert.deepEqual(changes.at(-1), ["abcd", "reset"]);
    await doc.flushed();
  });

  it("an op that reached the server before the connection dropped is not applied twice", async () => {
    const sim = new Sim();
    const server = new FakeServer(sim);
    const socket = new FakeSocket(sim, server, "u", prng(5), { maxDelay: 10 });
    const acks = [];
    const doc = new DocClient(socket, "d", { onAck: (a) => acks.push(a) });
    socket.connect();
    sim.after(0, () => doc.join());
    await sim.run();
    // Drop the connection right after the server applied the op, before the ack arrives.
    const handle = server.handle.bind(server);
    server.handle = (conn, ev, p, ack) => {
      handle(conn, ev, p, ack);
      if (ev === "doc:operation") sim.after(0, () => socket.drop());
    };
    doc.insert(0, "once");
    sim.after(50, () => {
      server.handle = handle;
      socket.connect();
    });
    await sim.run();
    assert.equal(server.docs.get("d").text, "once");
    assert.equal(doc.text, "once");
    assert.equal(doc.version, 1);
    assert.equal(socket.sent.length, 1, "recognised in the replayed ops by its opId, not resent");
    assert.deepEqual(acks, [{ op: { type: "insert", position: 0, content: "once" }, opId: socket.sent[0].opId, version: 1 }]);
  });

  it("leave() resolves flushed(), removes listeners, and answers", async () => {
    const sim = new Sim();
    const server = new FakeServer(sim);
    const socket = new FakeSocket(sim, server, "u", prng(6));
    const doc = new DocClient(socket, "d");
    socket.connect();
    sim.after(0, () => doc.join());
    await sim.run();
    let ack;
    doc.leave().then((a) => (ack = a));
    await sim.run();
    assert.deepEqual(ack, { success: true, docId: "d" });
    assert.equal([...socket.listeners.values()].reduce((n, s) => n + s.size, 0), 0);
    assert.throws(() => doc.insert(0, "x"), /left/);
  });
});
