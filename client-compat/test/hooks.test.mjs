// Hooks that decide, against a real HTTP backend started here and the real
// socket.io-client: the join hook allows, refuses with the backend's code,
// and its answer is cached; the publish hook refuses and replaces content
// (room and private messages); the rpc hook answers events under `rpc:`;
// every call is signed (X-Switchboard-Signature, HMAC-SHA256). A backend that
// is slow, down, or answers garbage costs a clear error ack, never a hang:
// the circuit opens and later calls fail at once.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { io } from "socket.io-client";
import WebSocket from "ws";
import { startServer, token, next, metric, signatureValid } from "./server.mjs";

const SECRET = "hooks-test-secret";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const verified = (header, body, secret = SECRET) => signatureValid(header, body, secret);


/** The backend: `behave(path, json)` returns [status, answer] or a raw string. */
async function backend(behave) {
  const calls = [];
  const srv = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", async () => {
      const json = JSON.parse(body);
      calls.push({ path: req.url, json, signed: verified(req.headers["x-switchboard-signature"], body), wrongSecret: verified(req.headers["x-switchboard-signature"], body, "other") });
      const out = await behave(req.url, json);
      if (out === "hang") return; // never answers
      const [status, answer] = out;
      res.writeHead(status, { "content-type": "application/json" });
      res.end(typeof answer === "string" ? answer : JSON.stringify(answer));
    });
  });
  await new Promise((r) => srv.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${srv.address().port}`;
  return { url, calls, close: () => new Promise((r) => { srv.closeAllConnections(); srv.close(r); }) };
}


const sockets = [];
async function connected(url, sub, opts = {}) {
  const s = io(url, { auth: { token: token(sub) }, reconnection: false, forceNew: true, ...opts });
  sockets.push(s);
  await next(s, "connect");
  return s;
}
const ack = (s, ev, data) => s.timeout(8000).emitWithAck(ev, data);

describe("hooks that decide", () => {
  let be, srv;
  let mode = "normal";
  before(async () => {
    be = await backend(async (path, j) => {
      if (mode === "slow") await sleep(1500);
      if (mode === "garbage") return [200, path === "/rpc" ? "[not json" : { allow: "yes" }];
      if (mode === "huge") return [200, { allow: true, pad: "x".repeat(200_000) }];
      if (mode === "error") return [500, { oops: true }];
      if (path === "/join") return ["vip", "yjs:secret"].includes(j.roomId) ? [200, { allow: false, code: "members_only", message: "VIP members only" }] : [200, { allow: true }];
      if (path === "/publish") {
        if (j.content.includes("badword")) return [200, { allow: false, code: "moderated", message: "watch your language" }];
        if (j.content.includes("darn")) return [200, { allow: true, content: j.content.replaceAll("darn", "d**n") }];
        return [200, { allow: true }];
      }
      if (path === "/rpc") {
        if (j.event === "rpc:sum") return [200, { result: { sum: j.data.a + j.data.b, by: j.userId } }];
        return [200, { error: { code: "no_such_rpc", message: `unknown ${j.event}` } }];
      }
      return [404, {}];
    });
    srv = await startServer(undefined, undefined, [
      "--join-hook-url", `${be.url}/join`,
      "--publish-hook-url", `${be.url}/publish`,
      "--rpc-hook-url", `${be.url}/rpc`,
      "--webhook-secret", SECRET,
      "--hook-timeout-ms", "500",
      "--join-hook-cache-secs", "60",
    ]);
  });
  after(async () => {
    sockets.splice(0).forEach((s) => s.close());
    await srv.stop();
    await be.close();
  });

  it("join: allowed, refused with the backend's code, answers cached", async () => {
    const alice = await connected(srv.url, "alice");
    assert.equal((await ack(alice, "room:join", { roomId: "lobby" })).success, true);
    assert.deepEqual(await ack(alice, "room:join", { roomId: "vip" }), { success: false, code: "members_only", error: "VIP members only" });
    const asked = be.calls.filter((c) => c.path === "/join").length;
    await ack(alice, "room:leave", { roomId: "lobby" });
    assert.equal((await ack(alice, "room:join", { roomId: "lobby" })).success, true);
    assert.equal(be.calls.filter((c) => c.path === "/join").length, asked, "the second join was answered from the cache");
    const call = be.calls.find((c) => c.path === "/join");
    assert.deepEqual(call.json, { namespace: "/", userId: "alice", roomId: "lobby" });
    assert.ok(call.signed, "signed with the secret");
    assert.ok(!call.wrongSecret, "a receiver with another secret refuses it");
  });

  it("join: Yjs documents are rooms `yjs:<doc>` to the hook, on both providers", async () => {
    const yjs = (doc) =>
      new Promise((resolve) => {
        const s = io(`${srv.url}/yjs|${doc}`, { auth: { token: token("alice") }, transports: ["websocket"], reconnection: false, forceNew: true });
        sockets.push(s);
        s.on("connect", () => resolve("connected"));
        s.on("connect_error", (e) => resolve(e.message));
      });
    assert.equal(await yjs("open-notes"), "connected");
    assert.equal(await yjs("secret"), "Forbidden: VIP members only");
    const ws = new WebSocket(`${srv.url.replace(/^http/, "ws")}/yjs/secret?token=${token("alice")}`);
    const closed = await new Promise((r) => ws.on("close", (code, reason) => r([code, reason.toString()])));
    assert.deepEqual(closed, [4403, "Forbidden: VIP members only"]);
    assert.ok(be.calls.some((c) => c.path === "/join" && c.json.roomId === "yjs:secret" && c.json.namespace === "/"));
  });

  it("publish: refused, replaced (the room sees the new content), private messages too", async () => {
    const alice = await connected(srv.url, "alice");
    const bob = await connected(srv.url, "bob");
    await ack(alice, "room:join", { roomId: "pub" });
    await ack(bob, "room:join", { roomId: "pub" });
    assert.deepEqual(await ack(alice, "chat:send", { roomId: "pub", content: "a badword here" }), { success: false, code: "moderated", error: "watch your language" });
    const seen = next(bob, "chat:message");
    const a = await ack(alice, "chat:send", { roomId: "pub", content: "oh darn" });
    assert.equal(a.success, true);
    assert.equal((await seen).content, "oh d**n");
    const { messages } = await ack(alice, "chat:history", { roomId: "pub" });
    assert.deepEqual(messages.map((m) => m.content), ["oh d**n"], "the refused one was not stored");
    const dm = next(bob, "private:message");
    assert.equal((await ack(alice, "private:send", { toUserId: "bob", content: "darn it" })).success, true);
    assert.equal((await dm).content, "d**n it");
    assert.equal((await ack(alice, "private:send", { toUserId: "bob", content: "badword" })).code, "moderated");
    const call = be.calls.find((c) => c.path === "/publish" && c.json.toUser);
    assert.deepEqual(call.json, { namespace: "/", userId: "alice", toUser: "bob", content: "darn it" });
  });

  it("rpc: the backend's answer is the ack", async () => {
    const alice = await connected(srv.url, "alice");
    assert.deepEqual(await ack(alice, "rpc:sum", { a: 2, b: 3 }), { success: true, result: { sum: 5, by: "alice" } });
    assert.deepEqual(await ack(alice, "rpc:other", {}), { success: false, code: "no_such_rpc", error: "unknown rpc:other" });
    assert.equal((await ack(alice, "other:event", {})).code, "not_found", "outside the prefix: as before");
  });

  it("slow, failing and garbage answers: a clear error ack, fail closed, bounded", async () => {
    const alice = await connected(srv.url, "alice");
    await ack(alice, "room:join", { roomId: "g" });
    for (const m of ["slow", "garbage", "huge", "error"]) {
      mode = m;
      const t0 = Date.now();
      const a = await ack(alice, "chat:send", { roomId: "g", content: `in ${m} mode` });
      assert.equal(a.success, false, m);
      assert.equal(a.code, "unavailable", `${m}: ${JSON.stringify(a)}`);
      assert.ok(Date.now() - t0 < 1500, `${m}: answered within the hook timeout`);
      const r = await ack(alice, "rpc:sum", { a: 1, b: 1 });
      assert.equal(r.code, "unavailable", m);
      mode = "normal";
      // Close the circuit again before the next mode.
      for (let i = 0; i < 30 && (await ack(alice, "chat:send", { roomId: "g", content: "ok" })).success !== true; i++) await sleep(250);
    }
    const { messages } = await ack(alice, "chat:history", { roomId: "g" });
    assert.ok(messages.every((m) => !m.content.includes("mode")), "nothing refused was stored");
  });

  it("a backend that is down: the circuit opens and refusals are immediate", async () => {
    const alice = await connected(srv.url, "alice");
    await ack(alice, "room:join", { roomId: "down" });
    mode = "error";
    for (let i = 0; i < 6; i++) await ack(alice, "chat:send", { roomId: "down", content: "x" });
    const before = be.calls.length;
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) assert.equal((await ack(alice, "chat:send", { roomId: "down", content: "x" })).code, "unavailable");
    const took = Date.now() - t0;
    assert.equal(be.calls.length, before, "not called while the circuit is open");
    assert.ok(took < 1000, `20 refusals took ${took} ms`);
    assert.ok((await metric(srv.url, 'switchboard_hook_calls_total{hook="publish",outcome="circuit_open"}')) >= 20);
    mode = "normal";
  });
});

describe("hooks that fail open", () => {
  it("--join-hook-fail-open and --publish-hook-fail-open let users in and messages through when the backend is down", async () => {
    const srv = await startServer(undefined, undefined, [
      "--join-hook-url", "http://127.0.0.1:9/join",
      "--publish-hook-url", "http://127.0.0.1:9/publish",
      "--join-hook-fail-open", "--publish-hook-fail-open",
      "--hook-timeout-ms", "300",
    ]);
    try {
      const alice = await connected(srv.url, "alice");
      assert.equal((await ack(alice, "room:join", { roomId: "open" })).success, true);
      assert.equal((await ack(alice, "chat:send", { roomId: "open", content: "through" })).success, true);
      alice.close();
    } finally {
      await srv.stop();
    }
  });
});
