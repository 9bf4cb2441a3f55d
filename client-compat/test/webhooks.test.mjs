// Webhooks against a real HTTP receiver started here, with the real
// socket.io-client making things happen: each event type arrives signed
// (and a receiver with another secret refuses it), in order, once; a
// document's edits fold into one event per debounce; a receiver that
// answers 500 for a while gets them later, in order; events still in the
// outbox when the server is SIGKILLed are delivered after the restart; two
// nodes on one PostgreSQL deliver each event once; with Redis, online,
// occupied and vacated are counted cluster-wide and a dead node's users are
// reported gone by a survivor.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { connect } from "node:net";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { io } from "socket.io-client";
import { startServer, token, next, tempDb, freePort, freshPgDatabase, signatureValid, metric } from "./server.mjs";

const SECRET = "webhook-test-secret";
const PG = process.env.SWITCHBOARD_TEST_POSTGRES_URL;
const CI = process.env.CI === "true";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const verified = (header, body, secret = SECRET) => signatureValid(header, body, secret);


/** A receiver on `port` (or a free one); `fail` answers 500 while it returns true. */
async function receiver(port = 0, fail = () => false) {
  const events = [];
  const posts = [];
  const srv = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      const sig = req.headers["x-switchboard-signature"];
      posts.push({ signed: verified(sig, body), otherSecret: verified(sig, body, "other"), tampered: verified(sig, body + " ") });
      if (fail()) {
        res.writeHead(500);
        return res.end();
      }
      events.push(...JSON.parse(body).events);
      res.writeHead(204);
      res.end();
    });
  });
  await new Promise((r) => srv.listen(port, "127.0.0.1", r));
  const url = `http://127.0.0.1:${srv.address().port}/hooks`;
  return { url, port: srv.address().port, events, posts, close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(r); }) };
}

async function until(cond, ms = 10000) {
  const by = Date.now() + ms;
  while (!(await cond()) && Date.now() < by) await sleep(50);
  return cond();
}

const sockets = [];
after(() => sockets.splice(0).forEach((s) => s.close()));
async function connected(url, sub) {
  const s = io(url, { auth: { token: token(sub) }, reconnection: false, forceNew: true });
  sockets.push(s);
  await next(s, "connect");
  return s;
}
/** Stops the nodes and the receiver, and drops the test's PostgreSQL database. */
async function stopNodes(nodes, rx, db) {
  await Promise.all(nodes.map((n) => n.stop()));
  await rx.close();
  try {
    db.drop();
  } catch {}
}
const ack = (s, ev, data) => s.timeout(5000).emitWithAck(ev, data);
const flags = (url) => ["--webhook-url", url, "--webhook-secret", SECRET];

describe("webhooks", () => {
  it("every event type arrives signed, in order, once", async () => {
    const rx = await receiver();
    const srv = await startServer(undefined, undefined, [...flags(rx.url), "--webhook-doc-debounce-ms", "500"]);
    try {
      const alice = await connected(srv.url, "alice");
      const bob = await connected(srv.url, "bob");
      const bobTab = await connected(srv.url, "bob");
      await ack(alice, "room:join", { roomId: "w" });
      await ack(bob, "room:join", { roomId: "w" });
      await ack(bobTab, "room:join", { roomId: "w" });
      for (const c of ["one", "two", "three"]) assert.equal((await ack(alice, "chat:send", { roomId: "w", content: c })).success, true);
      await ack(alice, "private:send", { toUserId: "bob", content: "psst" });
      // Three edits within the debounce: one document.changed, at version 3.
      assert.equal((await ack(alice, "doc:join", { docId: "notes" })).success, true);
      for (let v = 0; v < 3; v++) {
        const r = await ack(alice, "doc:operation", { docId: "notes", version: v, type: "insert", position: v, content: "x" });
        assert.equal(r.success, true, JSON.stringify(r));
      }
      await ack(bob, "room:leave", { roomId: "w" });
      await ack(bobTab, "room:leave", { roomId: "w" });
      // Bob's second tab goes first: he is still online until the last.
      bobTab.disconnect();
      await sleep(200);
      bob.disconnect();
      // Bob's going is reported before Alice acts (they race otherwise: CI
      // once saw her member.left first).
      assert.ok(await until(() => rx.events.some((e) => e.type === "user.offline" && e.data.userId === "bob")), "bob offline");
      await ack(alice, "room:leave", { roomId: "w" });
      alice.disconnect();
      assert.ok(await until(() => rx.events.length >= 15), `got ${JSON.stringify(rx.events.map((e) => e.type))}`);
      await sleep(800);
      const brief = (e) => `${e.type}:${e.data.userId ?? e.data.senderId ?? e.data.docId ?? e.data.roomId}:${e.data.content ?? ""}`;
      const seen = rx.events.filter((e) => e.type !== "document.changed").map(brief);
      assert.deepEqual(seen, [
        "user.online:alice:",
        "user.online:bob:",
        "room.occupied:w:",
        "member.joined:alice:",
        "member.joined:bob:",
        "message.created:alice:one",
        "message.created:alice:two",
        "message.created:alice:three",
        "message.created:alice:psst",
        "member.left:bob:",
        "user.offline:bob:",
        "member.left:alice:",
        "room.vacated:w:",
        "user.offline:alice:",
      ]);
      const docs = rx.events.filter((e) => e.type === "document.changed");
      assert.deepEqual(docs.map((e) => e.data), [{ namespace: "/", docId: "notes", version: 3 }], "edits within the debounce fold into one");
      const created = rx.events.filter((e) => e.type === "message.created");
      assert.deepEqual(created.slice(0, 3).map((e) => [e.data.roomId, e.data.seq, e.data.namespace]), [["w", 1, "/"], ["w", 2, "/"], ["w", 3, "/"]]);
      assert.equal(created[3].data.toUserId, "bob");
      for (const e of rx.events.filter((e) => e.type.startsWith("room.") || e.type.startsWith("member."))) assert.equal(e.data.namespace, "/");
      assert.equal(new Set(rx.events.map((e) => e.id)).size, rx.events.length, "ids are unique");
      for (const e of rx.events) assert.ok(e.id && typeof e.time === "number");
      assert.ok(rx.posts.every((p) => p.signed), "every POST is signed");
      assert.ok(rx.posts.every((p) => !p.otherSecret && !p.tampered), "another secret or a changed body fails the check");
    } finally {
      await srv.stop();
      await rx.close();
    }
  });

  it("--webhook-events picks the types; a document edited past the debounce reports again", async () => {
    const rx = await receiver();
    const srv = await startServer(undefined, undefined, [...flags(rx.url), "--webhook-events", "document.changed,user.offline", "--webhook-doc-debounce-ms", "300"]);
    try {
      const alice = await connected(srv.url, "alice");
      await ack(alice, "room:join", { roomId: "quiet" });
      await ack(alice, "chat:send", { roomId: "quiet", content: "not sent" });
      await ack(alice, "doc:join", { docId: "d" });
      await ack(alice, "doc:operation", { docId: "d", version: 0, type: "insert", position: 0, content: "a" });
      assert.ok(await until(() => rx.events.length >= 1));
      await ack(alice, "doc:operation", { docId: "d", version: 1, type: "insert", position: 1, content: "b" });
      assert.ok(await until(() => rx.events.length >= 2));
      alice.disconnect();
      assert.ok(await until(() => rx.events.length >= 3));
      await sleep(500);
      assert.deepEqual(rx.events.map((e) => `${e.type}:${e.data.version ?? e.data.userId}`), ["document.changed:1", "document.changed:2", "user.offline:alice"]);
    } finally {
      await srv.stop();
      await rx.close();
    }
  });

  it("a receiver that fails for a while gets everything later, in order, once", async () => {
    let failures = 2;
    const rx = await receiver(0, () => failures-- > 0);
    const srv = await startServer(undefined, undefined, [...flags(rx.url), "--webhook-events", "member.joined,message.created"]);
    try {
      const alice = await connected(srv.url, "alice");
      await ack(alice, "room:join", { roomId: "r" });
      for (let i = 1; i <= 5; i++) await ack(alice, "chat:send", { roomId: "r", content: `m${i}` });
      assert.ok(await until(() => rx.events.length >= 6, 15000), `${rx.events.length} events`);
      await sleep(300);
      assert.ok(rx.posts.length >= 3, "retried after the 500s");
      assert.deepEqual(rx.events.map((e) => e.data.content ?? e.type), ["member.joined", "m1", "m2", "m3", "m4", "m5"]);
    } finally {
      await srv.stop();
      await rx.close();
    }
  });

  it("events in the outbox when the server is SIGKILLed are delivered after the restart", async () => {
    const rxPort = await freePort(); // nothing listens yet: deliveries fail
    const port = await freePort();
    const db = tempDb();
    let srv = await startServer(port, db, flags(`http://127.0.0.1:${rxPort}/hooks`));
    let rx;
    try {
      const alice = await connected(srv.url, "alice");
      await ack(alice, "room:join", { roomId: "k" });
      for (let i = 1; i <= 3; i++) assert.equal((await ack(alice, "chat:send", { roomId: "k", content: `k${i}` })).success, true);
      srv.child.kill("SIGKILL");
      await new Promise((r) => srv.child.once("exit", r));
      rx = await receiver(rxPort);
      srv = await startServer(port, db, flags(rx.url));
      assert.ok(await until(() => rx.events.filter((e) => e.type === "message.created").length >= 3, 15000));
      await sleep(300);
      assert.deepEqual(rx.events.filter((e) => e.type === "message.created").map((e) => e.data.content), ["k1", "k2", "k3"]);
    } finally {
      await srv.stop();
      await rx?.close();
    }
  });
});


describe("webhooks under attack", () => {
  it("a flood of joins and leaves while the receiver is down keeps the outbox within --webhook-max-outbox", async () => {
    const dead = await freePort(); // nothing listens there
    const max = 300;
    const limits = ["--events-per-sec", "100000", "--event-burst", "100000", "--max-rooms-per-socket", "100000"];
    const srv = await startServer(undefined, undefined, [...flags(`http://127.0.0.1:${dead}/hooks`), ...limits, "--webhook-max-outbox", String(max)]);
    try {
      const mallory = await connected(srv.url, "mallory");
      const rounds = 1500; // each: room.occupied, member.joined, member.left, room.vacated
      for (let i = 0; i < rounds; i += 100) {
        await Promise.all(Array.from({ length: 100 }, async (_, j) => {
          const roomId = `flood-${i + j}`;
          assert.equal((await ack(mallory, "room:join", { roomId })).success, true);
          assert.equal((await ack(mallory, "room:leave", { roomId })).success, true);
        }));
      }
      // The bound is held every second.
      await sleep(2500);
      const left = await metric(srv.url, "switchboard_webhook_outbox");
      const dropped = await metric(srv.url, 'switchboard_webhook_events_total{outcome="dropped"}');
      assert.ok(left <= max, `${left} events kept, bound ${max}`);
      assert.ok(dropped >= rounds * 4 - max, `${dropped} dropped of ${rounds * 4}`);
      assert.ok((await metric(srv.url, 'switchboard_webhook_events_total{outcome="retried"}')) > 0, "delivery was tried");
      // Still serving.
      assert.equal((await ack(mallory, "room:join", { roomId: "after" })).success, true);
    } finally {
      await srv.stop();
    }
  });
});

const REDIS = process.env.SWITCHBOARD_TEST_REDIS;
const RUN = `${process.pid}-${Date.now()}`;

describe("webhooks from a cluster (PostgreSQL + Redis)", { skip: PG && REDIS ? false : CI ? false : "set SWITCHBOARD_TEST_POSTGRES_URL and SWITCHBOARD_TEST_REDIS (scripts/services.sh does)" }, () => {
  it("online, occupied and vacated once cluster-wide; a dead node's users are reported gone by a survivor", async () => {
    assert.ok(PG && REDIS, "CI=true, but SWITCHBOARD_TEST_POSTGRES_URL or SWITCHBOARD_TEST_REDIS is not set");
    const db = freshPgDatabase(PG, "webhooks_cluster");
    const rx = await receiver();
    const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
    const extra = [...flags(rx.url), "--webhook-events", "user.online,user.offline,room.occupied,room.vacated,member.joined,member.left", "--redis-url", redisUrl, "--redis-prefix", `webhooks-${RUN}`];
    const nodes = [await startServer(undefined, db.url, extra), await startServer(undefined, db.url, extra)];
    const count = (brief) => rx.events.filter((e) => `${e.type}:${e.data.userId ?? e.data.roomId}` === brief).length;
    try {
      const aliceA = await connected(nodes[0].url, "alice");
      const aliceB = await connected(nodes[1].url, "alice");
      const bob = await connected(nodes[1].url, "bob");
      const room = `c-${RUN}`;
      await Promise.all([aliceA, aliceB, bob].map((s) => ack(s, "room:join", { roomId: room })));
      await Promise.all([aliceA, aliceB, bob].map((s) => ack(s, "room:leave", { roomId: room })));
      // Bob alone in a room on node B, which then dies.
      const lonely = `k-${RUN}`;
      await ack(bob, "room:join", { roomId: lonely });
      assert.ok(await until(() => rx.events.length >= 10), `${JSON.stringify(rx.events.map((e) => e.type))}`);
      await sleep(500); // the deliverer has removed what it sent (else it is sent again: at least once)
      nodes[1].child.kill("SIGKILL");
      // The survivor takes the dead node's share back once its heartbeat lapses (10 s).
      assert.ok(await until(() => count("user.offline:bob") >= 1, 25000), `${JSON.stringify(rx.events.map((e) => e.type))}`);
      await sleep(1000);
      const expected = {
        "user.online:alice": 1,
        "user.online:bob": 1,
        [`room.occupied:${room}`]: 1,
        "member.joined:alice": 1,
        "member.joined:bob": 2,
        "member.left:alice": 1,
        "member.left:bob": 2,
        [`room.vacated:${room}`]: 1,
        [`room.occupied:${lonely}`]: 1,
        [`room.vacated:${lonely}`]: 1,
        "user.offline:bob": 1,
        "user.offline:alice": 0,
      };
      const got = Object.fromEntries(Object.keys(expected).map((k) => [k, count(k)]));
      assert.deepEqual(got, expected);
      assert.equal(new Set(rx.events.map((e) => e.id)).size, rx.events.length, "no event twice");
      // The room left by the dead node's user was told, on the survivor.
      const order = rx.events.map((e) => `${e.type}:${e.data.userId ?? e.data.roomId}`);
      assert.ok(order.indexOf(`room.vacated:${lonely}`) > order.lastIndexOf("member.left:bob"), order.join(" "));
    } finally {
      await stopNodes(nodes, rx, db);
    }
  });
});

describe("webhooks through a Redis outage", () => {
  it("what a node reported alone while Redis was down is not reported again when it is back", async () => {
    // A Redis of this test's own (stopping the shared one would disturb the
    // others), persisting every write: it comes back with what it had.
    const redisPort = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-redis-"));
    const args = ["--port", String(redisPort), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "yes", "--appendfsync", "always"];
    const startRedis = async () => {
      const child = spawn("redis-server", args, { stdio: "ignore" });
      for (let i = 0; i < 200; i++) {
        const up = await new Promise((r) => { const c = connect(redisPort, "127.0.0.1", () => { c.end(); r(true); }).on("error", () => r(false)); });
        if (up) return child;
        await sleep(50);
      }
      throw new Error("redis-server did not start");
    };
    let redis = await startRedis();
    const rx = await receiver();
    let srv;
    try {
      srv = await startServer(undefined, undefined, [...flags(rx.url), "--redis-url", `redis://127.0.0.1:${redisPort}`]);
      const alice = await connected(srv.url, "alice");
      const bob = await connected(srv.url, "bob");
      await ack(alice, "room:join", { roomId: "o" });
      await ack(bob, "room:join", { roomId: "o" });
      assert.ok(await until(() => rx.events.length >= 5), JSON.stringify(rx.events.map((e) => e.type)));
      redis.kill("SIGKILL");
      await new Promise((r) => redis.once("exit", r));
      // Redis is away: the node reports from its own view, within its
      // presence call timeout (2 s).
      const t0 = Date.now();
      assert.equal((await bob.timeout(10000).emitWithAck("room:leave", { roomId: "o" })).success, true);
      assert.ok(Date.now() - t0 < 5000, `the leave took ${Date.now() - t0} ms`);
      await alice.timeout(5000).emitWithAck("ping", {}); // still serving
      assert.ok(await until(() => rx.events.some((e) => e.type === "member.left"), 15000), "reported while Redis is away");
      redis = await startRedis();
      // The node is back within a heartbeat or two (3 s), and resyncs then.
      assert.ok(await until(async () => { try { return (await fetch(`${srv.url}/readyz`)).ok; } catch { return false; } }, 15000));
      await sleep(8000);
      const brief = rx.events.map((e) => `${e.type}:${e.data.userId ?? e.data.roomId}`);
      assert.deepEqual(brief.filter((b) => b.startsWith("member.left") || b.startsWith("room.")), ["room.occupied:o", "member.left:bob"], brief.join(" "));
      assert.deepEqual(brief.filter((b) => b.startsWith("user.")), ["user.online:alice", "user.online:bob"], brief.join(" "));
    } finally {
      await srv?.stop();
      redis.kill("SIGKILL");
      await rx.close();
    }
  });
});

describe("webhooks from two nodes (PostgreSQL)", { skip: PG ? false : CI ? false : "set SWITCHBOARD_TEST_POSTGRES_URL (scripts/services.sh does)" }, () => {
  it("each event is delivered once", async () => {
    assert.ok(PG, "CI=true, but SWITCHBOARD_TEST_POSTGRES_URL is not set");
    const db = freshPgDatabase(PG, "webhooks");
    const rx = await receiver();
    const nodes = [await startServer(undefined, db.url, flags(rx.url)), await startServer(undefined, db.url, flags(rx.url))];
    try {
      const a = await connected(nodes[0].url, "alice");
      const b = await connected(nodes[1].url, "bob");
      await ack(a, "room:join", { roomId: "two" });
      await ack(b, "room:join", { roomId: "two" });
      for (let i = 0; i < 20; i++) {
        await ack(a, "chat:send", { roomId: "two", content: `a${i}` });
        await ack(b, "chat:send", { roomId: "two", content: `b${i}` });
      }
      const created = () => rx.events.filter((e) => e.type === "message.created");
      assert.ok(await until(() => created().length >= 40, 15000), `${created().length} message events`);
      await sleep(500);
      assert.equal(created().length, 40, "no event twice");
      assert.equal(new Set(rx.events.map((e) => e.id)).size, rx.events.length);
      assert.deepEqual(created().map((e) => e.data.seq).sort((x, y) => x - y), Array.from({ length: 40 }, (_, i) => i + 1));
    } finally {
      await stopNodes(nodes, rx, db);
    }
  });
});
