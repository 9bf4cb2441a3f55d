// Collaborative documents (docs/protocol.md §15) against the real binary,
// with client-compat/doc-client.mjs as the client: concurrent editors over
// each transport converge on the server's text, across two nodes (Redis +
// PostgreSQL), across a node restart without losing an acked op, and
// malformed ops get their error codes. Random edits come from a seeded PRNG:
// the seed is printed, SEED=n reruns it (timing still varies).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { DocClient, scalarLength } from "../doc-client.mjs";
import { startServer, token, next, freePort, tempDb } from "./server.mjs";
import { prng } from "./prng.mjs";

const SEED = Number(process.env.SEED ?? Math.floor(Math.random() * 1e6));
console.log(`docs.test.mjs: seed ${SEED} (rerun with SEED=${SEED})`);
const API_KEY = "docs-test-api-key-0123456789abcdef";
// The per-user limits lifted: the subject is convergence (the limits have tests of their own).
const FLAGS = [
  ...["--api-key", API_KEY, "--messages-per-sec", "500", "--message-burst", "1000"],
  ...["--address-messages-per-sec", "0"],
  ...["--doc-joins-per-sec", "1000", "--doc-join-burst", "1000", "--doc-creations-per-min", "100000"],
];
const TRANSPORTS = [
  ["ws", { transports: ["websocket"] }],
  ["poll", { transports: ["polling"] }],
  ["dflt", {}],
];
const ALPHABET = ["a", "b", "c", "x", "é", "e\u0301", "😀", "\u0301", " ", "\n"];

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** `promise`, or a failure after `ms` (the timer does not outlive it). */
function within(promise, ms, what) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new assert.AssertionError({ message: `${what}: not within ${ms} ms (seed ${SEED})` })), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function getDoc(url, docId) {
  const r = await fetch(`${url}/api/docs/${encodeURIComponent(docId)}`, { headers: { authorization: `Bearer ${API_KEY}` } });
  const body = await r.json();
  assert.equal(r.status, 200, `GET /api/docs/${docId}: ${JSON.stringify(body)}`);
  return body;
}

async function postOp(url, docId, body) {
  const r = await fetch(`${url}/api/docs/${encodeURIComponent(docId)}/operations`, {
    method: "POST",
    headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}

/** A backend editing over HTTP meanwhile: reads the document, inserts into it at that version. */
async function backendEdits(url, docId, rng, n) {
  for (let i = 0; i < n; i++) {
    await sleep(rng.int(0, 60));
    const r = await fetch(`${url}/api/docs/${encodeURIComponent(docId)}`, { headers: { authorization: `Bearer ${API_KEY}` } });
    const { content, version } = r.status === 404 ? { content: "", version: 0 } : await r.json();
    const res = await postOp(url, docId, { version, type: "insert", position: rng.int(0, scalarLength(content)), content: "§", userId: "backend" });
    assert.equal(res.status, 200, `seed ${SEED}: POST operations: ${JSON.stringify(res.body)}`);
  }
}

/** An onError report in one line. */
const brief = (e) => `${e.sub}: ${e.code}: ${e.message}`;

let sockets = [];
/** Closes the sockets opened so far (before a server stops: it then need not wait for them). */
function closeSockets() {
  sockets.forEach((s) => s.close());
  sockets = [];
}
function client(url, sub, docId, opts, errors, handlers = {}) {
  const socket = io(url, { auth: { token: token(sub) }, reconnectionDelay: 100, reconnectionDelayMax: 500, ...opts });
  sockets.push(socket);
  const acked = [];
  const doc = new DocClient(socket, docId, {
    onError: (e) => errors.push({ sub, ...e }),
    onAck: (a) => acked.push(a),
    ...handlers,
  });
  return { socket, doc, sub, acked };
}

/** `n` random inserts and deletes, with random pauses of 0..maxPause ms. */
async function randomEdits(doc, rng, n, maxPause = 20) {
  for (let i = 0; i < n; i++) {
    await sleep(rng.int(0, maxPause));
    const len = scalarLength(doc.text);
    if (len > 0 && rng.chance(0.35)) {
      const pos = rng.int(0, len - 1);
      doc.delete(pos, rng.int(1, Math.min(3, len - pos)));
    } else {
      let s = "";
      for (let k = rng.int(1, 3); k > 0; k--) s += rng.pick(ALPHABET);
      doc.insert(rng.int(0, len), s);
    }
  }
}

/** Waits until every client has flushed and reached the server's version, then compares the texts. */
async function converged(clients, urls, docId, ms = 15000) {
  await within(Promise.all(clients.map((c) => c.doc.flushed())), ms, "flushed");
  const deadline = Date.now() + ms;
  for (;;) {
    const server = await getDoc(urls[0], docId);
    if (clients.every((c) => c.doc.version === server.version && !c.doc.pending)) {
      for (const url of urls.slice(1)) assert.deepEqual(await getDoc(url, docId), server, `seed ${SEED}: the other node reads the same`);
      for (const c of clients) assert.equal(c.doc.text, server.content, `seed ${SEED}: ${c.sub}'s text`);
      return server;
    }
    if (Date.now() > deadline) {
      const state = clients.map((c) => `${c.sub} v${c.doc.version}${c.doc.pending ? " (pending)" : ""}`).join(", ");
      assert.fail(`seed ${SEED}: not converged within ${ms} ms: server v${server.version}; ${state}`);
    }
    await sleep(50);
  }
}

after(closeSockets);

describe("collaborative documents", () => {
  let server;
  before(async () => {
    server = await startServer(undefined, undefined, FLAGS);
  });
  after(async () => {
    closeSockets();
    await server?.stop();
  });

  it("3 clients (websocket, polling, default) and a backend editing at once converge on the server's text", async () => {
    const docId = `a-${SEED}`;
    const errors = [];
    const cs = TRANSPORTS.map(([sub, opts]) => client(server.url, sub, docId, opts, errors));
    await within(Promise.all(cs.map((c) => c.doc.join())), 10000, "join");
    const t0 = Date.now();
    await Promise.all([
      ...cs.map((c, i) => randomEdits(c.doc, prng(SEED * 10 + i), 60)),
      backendEdits(server.url, docId, prng(SEED * 10 + 3), 10),
    ]);
    const final = await converged(cs, [server.url], docId);
    assert.deepEqual(errors.map(brief), [], `seed ${SEED}: errors`);
    assert.ok(final.version >= 10, `seed ${SEED}: ${final.version} versions`);
    assert.equal(cs[0].socket.io.engine.transport.name, "websocket");
    assert.equal(cs[1].socket.io.engine.transport.name, "polling");
    console.log(`  a: ${final.version} versions, ${scalarLength(final.content)} characters, ${Date.now() - t0} ms`);
    closeSockets();
  });

  it("malformed ops get error acks with their codes", async () => {
    const docId = `d-${SEED}`;
    const s = io(server.url, { auth: { token: token("mal") }, transports: ["websocket"], reconnection: false });
    const peer = io(server.url, { auth: { token: token("peer") }, transports: ["websocket"], reconnection: false });
    sockets.push(s, peer);
    await Promise.all([next(s, "connect"), next(peer, "connect")]);
    const ask = (sock, ev, p) => sock.timeout(5000).emitWithAck(ev, p);
    const refused = async (ev, p, code, what) => {
      const res = await ask(s, ev, p);
      assert.equal(res?.success, false, `${what}: ${JSON.stringify(res)}`);
      assert.equal(res.code, code, `${what}: ${JSON.stringify(res)}`);
      assert.equal(typeof res.error, "string", what);
    };
    const op = { docId, version: 0, type: "insert", position: 0, content: "a" };

    await refused("doc:operation", op, "not_in_room", "an op before doc:join");
    await refused("doc:cursor", { docId, position: 0 }, "not_in_room", "a cursor before doc:join");
    await refused("doc:leave", { docId }, "not_in_room", "doc:leave before doc:join");

    const joined = await ask(s, "doc:join", docId);
    assert.deepEqual({ ...joined, ops: undefined }, { success: true, docId, content: "", version: 0, ops: undefined });
    assert.equal((await ask(peer, "doc:join", { docId })).success, true);
    const relayed = next(peer, "doc:operation");
    // 6 scalar values, 7 UTF-16 units.
    const first = await ask(s, "doc:operation", { ...op, content: "héllo😀", opId: "first-op" });
    assert.deepEqual(first, { success: true, version: 1 });
    assert.deepEqual(await relayed, { docId, version: 1, type: "insert", position: 0, content: "héllo😀", userId: "mal", opId: "first-op" });
    // The same opId again: acked with its first version, not applied twice.
    assert.deepEqual(await ask(s, "doc:operation", { ...op, content: "héllo😀", opId: "first-op" }), { success: true, version: 1 });

    const v1 = { ...op, version: 1 };
    const bad = [
      ["an insert beyond the text (scalar values: 6, UTF-16 units: 7)", { ...v1, position: 7 }],
      ["a delete beyond the text (valid in UTF-16 units)", { ...v1, type: "delete", position: 5, length: 2, content: undefined }],
      ["a negative length", { ...v1, type: "delete", position: 0, length: -1, content: undefined }],
      ["length 0", { ...v1, type: "delete", position: 0, length: 0, content: undefined }],
      ["a fractional length", { ...v1, type: "delete", position: 0, length: 1.5, content: undefined }],
      ["a delete without length", { ...v1, type: "delete", position: 0, content: undefined }],
      ["a negative position", { ...v1, position: -1 }],
      ["a fractional position", { ...v1, position: 0.5 }],
      ["a string position", { ...v1, position: "0" }],
      ["non-string content", { ...v1, content: 5 }],
      ["an insert without content", { ...v1, content: undefined }],
      ["an empty insert", { ...v1, content: "" }],
      ["an unknown type", { ...v1, type: "replace" }],
      ["no type", { ...v1, type: undefined }],
      ["a version in the future", { ...v1, version: 2 }],
      ["a negative version", { ...v1, version: -1 }],
      ["no version", { ...v1, version: undefined }],
      ["an empty opId", { ...v1, opId: "" }],
      ["an opId of 129 characters", { ...v1, opId: "o".repeat(129) }],
      ["a bad docId", { ...v1, docId: "bad id!" }],
      ["a docId of 129 characters", { ...v1, docId: "d".repeat(129) }],
      ["no docId", { ...v1, docId: undefined }],
      ["a payload that is not an object", "nope"],
    ];
    for (const [what, p] of bad) await refused("doc:operation", p, "invalid_payload", what);
    await refused("doc:operation", { ...v1, content: "a".repeat(65537) }, "too_large", "content over --max-doc-op-bytes");
    await refused("doc:join", "bad id!", "invalid_payload", "doc:join with a bad docId");
    await refused("doc:join", { docId: "" }, "invalid_payload", "doc:join with an empty docId");

    // Nothing of that changed the document.
    assert.deepEqual(await getDoc(server.url, docId), { docId, content: "héllo😀", version: 1 });
    // A delete of the emoji (one scalar value) and an insert after it.
    assert.deepEqual(await ask(s, "doc:operation", { ...v1, type: "delete", position: 5, length: 1, content: undefined }), { success: true, version: 2 });
    assert.deepEqual(await ask(s, "doc:operation", { ...op, version: 2, position: 5, content: "!" }), { success: true, version: 3 });
    assert.deepEqual(await getDoc(server.url, docId), { docId, content: "héllo!", version: 3 });

    // A document never edited: 404 over HTTP.
    const r = await fetch(`${server.url}/api/docs/never-${SEED}`, { headers: { authorization: `Bearer ${API_KEY}` } });
    assert.equal(r.status, 404);
    assert.equal((await r.json()).code, "not_found");

    // A token whose rooms claim does not allow doc:<docId>.
    const lim = io(server.url, { auth: { token: token("lim", ["--room", "doc:allowed-*"]) }, transports: ["websocket"], reconnection: false });
    sockets.push(lim);
    await next(lim, "connect");
    const no = await ask(lim, "doc:join", { docId: `forbidden-${SEED}` });
    assert.equal(no.success, false, JSON.stringify(no));
    assert.equal(no.code, "forbidden_room");
    const yes = await ask(lim, "doc:join", { docId: `allowed-${SEED}` });
    assert.equal(yes.success, true, JSON.stringify(yes));

    assert.deepEqual(await ask(s, "doc:leave", docId), { success: true, docId });
    await refused("doc:operation", { ...op, version: 3 }, "not_in_room", "an op after doc:leave");
    closeSockets();
  });

  it("an op whose ack was lost is recognised in the rejoin's ops; one that was lost is sent again", async () => {
    const docId = `e-${SEED}`;
    const errors = [];
    const c = client(server.url, "lossy", docId, { transports: ["websocket"] }, errors);
    await within(c.doc.join(), 5000, "join");
    const sent = [];
    const emit = c.socket.emit.bind(c.socket);
    let fault = null; // "ack": drop the ack; "op": drop the op; then the connection drops
    c.socket.emit = (ev, p, ack) => {
      if (ev === "doc:operation") sent.push(p);
      if (ev === "doc:operation" && fault) {
        const f = fault;
        fault = null;
        if (f === "op") {
          c.socket.io.engine.close();
          return c.socket;
        }
        return emit(ev, p, () => c.socket.io.engine.close());
      }
      return emit(ev, p, ack);
    };
    fault = "ack";
    c.doc.insert(0, "once");
    await within(c.doc.flushed(), 5000, "flushed after a lost ack");
    assert.equal(sent.length, 1, "not sent again: its opId was among the rejoin's ops");
    assert.deepEqual(c.acked.map((a) => a.version), [1]);
    assert.deepEqual(await getDoc(server.url, docId), { docId, content: "once", version: 1 });

    fault = "op";
    c.doc.insert(4, " more");
    await within(c.doc.flushed(), 5000, "flushed after a lost op");
    assert.equal(sent.length, 3, "sent again after the rejoin");
    assert.equal(sent[1].opId, sent[2].opId);
    assert.deepEqual(c.acked.map((a) => a.version), [1, 2]);
    assert.deepEqual(await getDoc(server.url, docId), { docId, content: "once more", version: 2 });
    assert.equal(c.doc.text, "once more");
    assert.deepEqual(errors.map(brief), []);
    closeSockets();
  });

  it("a client too far behind takes the server's text on rejoin; an op that old is stale_version", async () => {
    const docId = `f-${SEED}`;
    const errors = [];
    const changes = [];
    const c = client(server.url, "behind", docId, { transports: ["websocket"], reconnection: false }, errors, {
      onChange: (text, change) => changes.push(change.type),
    });
    await within(c.doc.join(), 5000, "join");
    c.socket.disconnect();
    c.doc.insert(0, "mine"); // waits for the reconnect
    // 1,010 ops meanwhile (the server keeps the latest 1,000).
    let latest = 0;
    let n = 0;
    const worker = async () => {
      while (n < 1010) {
        n++;
        const res = await postOp(server.url, docId, { version: latest, type: "insert", position: 0, content: "x" });
        assert.equal(res.status, 200, JSON.stringify(res.body));
        latest = Math.max(latest, res.body.version);
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    const stale = await postOp(server.url, docId, { version: 0, type: "insert", position: 0, content: "x" });
    assert.equal(stale.status, 409);
    assert.equal(stale.body.code, "stale_version");
    const raw = io(server.url, { auth: { token: token("raw") }, transports: ["websocket"], reconnection: false });
    sockets.push(raw);
    await next(raw, "connect");
    assert.equal((await raw.timeout(5000).emitWithAck("doc:join", docId)).version, 1010);
    const res = await raw.timeout(5000).emitWithAck("doc:operation", { docId, version: 0, type: "insert", position: 0, content: "x" });
    assert.equal(res.code, "stale_version", JSON.stringify(res));

    c.socket.connect();
    await within(c.doc.flushed(), 5000, "flushed after the rejoin");
    assert.equal(c.doc.version, 1010);
    assert.equal(c.doc.text, "x".repeat(1010));
    assert.deepEqual(changes, ["reset"]);
    assert.deepEqual(
      errors.map((e) => [e.code, e.dropped]),
      [["resync", 1]],
    );
    closeSockets();
  });

  it("a node restart in the middle loses no acked op (insert-only markers, SIGKILL)", async () => {
    const port = await freePort();
    const db = tempDb();
    let srv = await startServer(port, db, FLAGS);
    try {
      const docId = `c-${SEED}`;
      const errors = [];
      const cs = TRANSPORTS.map(([sub, opts]) => client(srv.url, sub, docId, opts, errors));
      await within(Promise.all(cs.map((c) => c.doc.join())), 10000, "join");
      const ackedCount = () => cs.reduce((n, c) => n + c.acked.length, 0);
      // Each edit inserts a unique marker at a marker boundary, so markers
      // never split and each must end up in the text exactly once. Each
      // client makes at least 60 edits, and at least 20 after it reconnected
      // to the restarted node.
      let killed = false;
      const edits = cs.map(async (c, i) => {
        const rng = prng(SEED * 10 + 5 + i);
        let reconnected = false;
        c.socket.io.on("reconnect", () => (reconnected = killed));
        let afterReconnect = 0;
        for (let k = 0; k < 60 || afterReconnect < 20; k++) {
          if (k > 1000) assert.fail(`seed ${SEED}: ${c.sub} did not reconnect`);
          await sleep(rng.int(0, 20));
          if (reconnected) afterReconnect++;
          const boundaries = [0];
          for (let j = 0; j < c.doc.text.length; j++) if (c.doc.text[j] === ">") boundaries.push(j + 1);
          c.doc.insert(rng.pick(boundaries), `<${i}.${k}>`);
          c.made = k + 1;
        }
      });
      // Kill the node once some ops are acked, while the clients keep typing.
      const t0 = Date.now();
      while (ackedCount() < 30) {
        if (Date.now() - t0 > 10000) assert.fail(`seed ${SEED}: only ${ackedCount()} acks in 10 s`);
        await sleep(5);
      }
      const before = ackedCount();
      killed = true;
      srv.child.kill("SIGKILL");
      await new Promise((r) => (srv.child.exitCode !== null || srv.child.signalCode !== null ? r() : srv.child.once("exit", r)));
      await sleep(300);
      srv = await startServer(port, db, FLAGS);
      await Promise.all(edits);
      const final = await converged(cs, [srv.url], docId, 20000);
      assert.deepEqual(errors.map(brief), [], `seed ${SEED}: errors`);

      const markers = final.content.match(/<\d+\.\d+>/g) ?? [];
      assert.equal(markers.join(""), final.content, `seed ${SEED}: the text is markers only`);
      const counts = new Map();
      for (const m of markers) counts.set(m, (counts.get(m) ?? 0) + 1);
      const twice = [...counts].filter(([, n]) => n > 1).map(([m]) => m);
      assert.deepEqual(twice, [], `seed ${SEED}: markers applied twice`);
      for (const c of cs) {
        for (const a of c.acked) {
          for (const m of a.op.content.match(/<\d+\.\d+>/g)) assert.ok(counts.has(m), `seed ${SEED}: acked ${m} (version ${a.version}) is lost`);
        }
      }
      // Nothing was dropped either (no reset happened), so every marker is there.
      const made = cs.reduce((n, c) => n + c.made, 0);
      assert.equal(markers.length, made, `seed ${SEED}`);
      console.log(`  c: ${before} acks before the kill, ${made} markers, ${final.version} versions in all`);
    } finally {
      closeSockets();
      await srv.stop();
    }
  });
});

// Two nodes sharing Redis (relays) and PostgreSQL (ops and versions).
const REDIS = process.env.SWITCHBOARD_TEST_REDIS;
const PG = process.env.SWITCHBOARD_TEST_POSTGRES_URL;
const CI = process.env.CI === "true";
const clusterSkip =
  REDIS && PG ? false : CI ? false : "set SWITCHBOARD_TEST_REDIS (host:port) and SWITCHBOARD_TEST_POSTGRES_URL (scripts/services.sh does)";

describe("collaborative documents on two nodes (Redis + PostgreSQL)", { skip: clusterSkip }, () => {
  const nodes = [];
  before(async () => {
    assert.ok(REDIS && PG, "CI=true, but SWITCHBOARD_TEST_REDIS or SWITCHBOARD_TEST_POSTGRES_URL is not set");
    const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
    const prefix = `docs-test-${process.pid}-${Date.now()}`;
    const extra = [...FLAGS, "--redis-url", redisUrl, "--redis-prefix", prefix];
    nodes.push(await startServer(undefined, PG, extra));
    nodes.push(await startServer(undefined, PG, extra));
  });
  after(async () => {
    closeSockets();
    await Promise.all(nodes.map((n) => n.stop()));
  });

  // KNOWN SERVER BUG (found by this test, not fixed here): a node checks an
  // op's `version` against its own in-memory copy of the document before
  // reading what the other node committed, so a client on node B that
  // applied op v (relayed from node A through Redis) and sends its next op
  // on version v gets `invalid_payload` "version v is newer than the
  // document's (v-1)". src/documents/service.rs rebase_one / run_batch: refresh from the
  // store when an edit's base is newer than the node's version.
  it("an op based on a version relayed from the other node is accepted", async () => {
    const docId = `b1-${SEED}-${Date.now()}`;
    const x = io(nodes[0].url, { auth: { token: token("x") }, transports: ["websocket"], reconnection: false });
    const y = io(nodes[1].url, { auth: { token: token("y") }, transports: ["websocket"], reconnection: false });
    sockets.push(x, y);
    await Promise.all([next(x, "connect"), next(y, "connect")]);
    assert.equal((await x.timeout(5000).emitWithAck("doc:join", docId)).version, 0);
    assert.equal((await y.timeout(5000).emitWithAck("doc:join", docId)).version, 0);
    const relayed = next(y, "doc:operation");
    const ack = await x.timeout(5000).emitWithAck("doc:operation", { docId, version: 0, type: "insert", position: 0, content: "a" });
    assert.deepEqual(ack, { success: true, version: 1 });
    assert.equal((await relayed).version, 1, "relayed to the other node");
    const res = await y.timeout(5000).emitWithAck("doc:operation", { docId, version: 1, type: "insert", position: 1, content: "b" });
    assert.deepEqual(res, { success: true, version: 2 }, "an op on the version just relayed (KNOWN SERVER BUG if invalid_payload)");
    assert.deepEqual(await getDoc(nodes[0].url, docId), { docId, content: "ab", version: 2 });
    closeSockets();
  });

  // Fails with the same server bug (seen as invalid_payload errors, each
  // followed by a resync that drops the client's unsent edits).
  it("3 clients spread over two nodes converge", async () => {
    {
      const docId = `b-${SEED}-${Date.now()}`;
      const errors = [];
      const cs = TRANSPORTS.map(([sub, opts], i) => client(nodes[i % 2].url, sub, docId, opts, errors));
      await within(Promise.all(cs.map((c) => c.doc.join())), 10000, "join");
      const t0 = Date.now();
      await Promise.all(cs.map((c, i) => randomEdits(c.doc, prng(SEED * 10 + 8 + i), 60)));
      const final = await converged(cs, nodes.map((n) => n.url), docId);
      console.log(`  b: ${final.version} versions over two nodes, ${Date.now() - t0} ms, ${errors.length} errors`);
      assert.deepEqual(errors.map(brief), [], `seed ${SEED}: errors`);
      closeSockets();
    }
  });
});
