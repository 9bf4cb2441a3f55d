// Webhooks against a real HTTP receiver started here, with the real
// socket.io-client making things happen: each event type arrives signed
// (and a receiver with another secret refuses it), in order, once; a
// receiver that answers 500 for a while gets them later, in order; events
// still in the outbox when the server is SIGKILLed are delivered after the
// restart; two nodes on one PostgreSQL deliver each event once.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { io } from "socket.io-client";
import { startServer, token, next, tempDb, freePort, freshPgDatabase, signatureValid } from "./server.mjs";

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
  while (!cond() && Date.now() < by) await sleep(50);
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
const ack = (s, ev, data) => s.timeout(5000).emitWithAck(ev, data);
const flags = (url) => ["--webhook-url", url, "--webhook-secret", SECRET];

describe("webhooks", () => {
  it("every event type arrives signed, in order, once", async () => {
    const rx = await receiver();
    const srv = await startServer(undefined, undefined, flags(rx.url));
    try {
      const alice = await connected(srv.url, "alice");
      const bob = await connected(srv.url, "bob");
      await ack(alice, "room:join", { roomId: "w" });
      await ack(bob, "room:join", { roomId: "w" });
      for (const c of ["one", "two", "three"]) assert.equal((await ack(alice, "chat:send", { roomId: "w", content: c })).success, true);
      await ack(alice, "private:send", { toUserId: "bob", content: "psst" });
      await ack(bob, "room:leave", { roomId: "w" });
      assert.ok(await until(() => rx.events.length >= 7), `got ${JSON.stringify(rx.events.map((e) => e.type))}`);
      await sleep(300);
      const seen = rx.events.map((e) => `${e.type}:${e.data.userId ?? e.data.senderId}:${e.data.content ?? ""}`);
      assert.deepEqual(seen, [
        "member.joined:alice:",
        "member.joined:bob:",
        "message.created:alice:one",
        "message.created:alice:two",
        "message.created:alice:three",
        "message.created:alice:psst",
        "member.left:bob:",
      ]);
      const created = rx.events.filter((e) => e.type === "message.created");
      assert.deepEqual(created.slice(0, 3).map((e) => [e.data.roomId, e.data.seq, e.data.namespace]), [["w", 1, "/"], ["w", 2, "/"], ["w", 3, "/"]]);
      assert.equal(created[3].data.toUserId, "bob");
      assert.equal(new Set(rx.events.map((e) => e.id)).size, rx.events.length, "ids are unique");
      for (const e of rx.events) assert.ok(e.id && typeof e.time === "number");
      assert.ok(rx.posts.every((p) => p.signed), "every POST is signed");
      assert.ok(rx.posts.every((p) => !p.otherSecret && !p.tampered), "another secret or a changed body fails the check");
    } finally {
      await srv.stop();
      await rx.close();
    }
  });

  it("a receiver that fails for a while gets everything later, in order, once", async () => {
    let failures = 2;
    const rx = await receiver(0, () => failures-- > 0);
    const srv = await startServer(undefined, undefined, flags(rx.url));
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
      await Promise.all(nodes.map((n) => n.stop()));
      await rx.close();
      try {
        db.drop();
      } catch {}
    }
  });
});
