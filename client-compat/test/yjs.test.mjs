// Yjs documents through the real providers, y-socket.io (SocketIOProvider
// 1.1.3) and y-websocket (WebsocketProvider 3.x over the `ws` package), with
// yjs 13, on the same documents: clients editing one Y.Text converge over
// both at once, awareness reaches the others and is cleared when a client's
// process is killed, tokens and their `rooms` claim are enforced, a
// document survives a SIGKILL of the server, two nodes share documents, a
// backend reads and writes them over HTTP, and what the server will not
// take (too large, malformed, too fast, too many documents) ends only the
// connection that sent it.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";
import { io, Manager } from "socket.io-client";
import { startServer, token, tempDb, freePort, metric, freshPgDatabase } from "./server.mjs";
import { PG, REDIS, CI, YJS, sleep, until, closeAll, editor, wsEditor, rawWs, wsUrl, varuint, awarenessBytes, raws, wsProviders } from "./yjs-helpers.mjs";

after(closeAll);

describe("yjs over y-socket.io", () => {
  it("two and five editors typing at once converge, over both providers at once", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      for (const n of [2, 5]) {
        const doc = `converge-${n}`;
        // Every other editor on y-websocket.
        const eds = await Promise.all(Array.from({ length: n }, (_, i) => (i % 2 ? wsEditor : editor)(srv.url, doc, `u${i}`)));
        for (let round = 0; round < 20; round++) {
          eds.forEach((e, i) => e.text.insert(Math.min(e.text.length, round), `${i}`));
          await sleep(5);
        }
        const want = () => eds[0].text.toString();
        assert.ok(await until(() => eds.every((e) => e.text.toString() === want() && want().length === n * 20), 10000), eds.map((e) => e.text.toString()).join(" | "));
        eds.forEach((e) => e.p.destroy());
      }
      // 140 edits: an edit that reached the server first inside a sync
      // answer is stored once, so fewer may be counted, but not many fewer.
      const stored = await metric(srv.url, "switchboard_yjs_updates_total");
      assert.ok(stored >= 100 && stored <= 160, `${stored} updates stored`);
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  for (const [bobOn, aliceOn] of [["y-socket.io", wsEditor], ["y-websocket", editor]]) it(`awareness reaches the others and is cleared when a client's process is killed (${bobOn})`, async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      const a = await aliceOn(srv.url, "aware", "alice");
      // Bob runs in a process of his own, killed without a goodbye.
      const args = [fileURLToPath(new URL("./yjs-peer.mjs", import.meta.url)), srv.url, "aware", token("bob"), bobOn === "y-websocket" ? "ws" : "sio"];
      const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] });
      try {
        const bobSeen = () => [...a.p.awareness.getStates().values()].some((s) => s.user === "bob");
        assert.ok(await until(bobSeen, 10000), "bob's cursor reaches alice");
        const killedAt = Date.now();
        child.kill("SIGKILL");
        assert.ok(await until(() => !bobSeen(), 10000), "bob's cursor removed");
        const took = Date.now() - killedAt;
        assert.ok(took < 5000, `removed after ${took} ms (the awareness timeout is 30 s)`);
      } finally {
        child.kill("SIGKILL");
      }
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("a bad token, or one whose rooms claim leaves the document out, is refused on both providers", async () => {
    const srv = await startServer(undefined, undefined, [...YJS, "--connect-timeout-ms", "1500"]);
    try {
      const refused = (doc, auth) =>
        new Promise((resolve, reject) => {
          const s = io(`${srv.url}/yjs|${doc}`, { auth, transports: ["websocket"], reconnection: false, forceNew: true });
          s.on("connect", () => {
            s.close();
            reject(new Error("connected"));
          });
          s.on("connect_error", (e) => {
            s.close();
            resolve(e.message);
          });
        });
      assert.match(await refused("d1", {}), /Authentication failed/);
      assert.match(await refused("d1", { token: "garbage" }), /Authentication failed/);
      assert.match(await refused("d1", { token: token("eve", ["--room", "yjs:other"]) }), /Forbidden/);
      assert.match(await refused("bad name!", { token: token("eve") }), /invalid document name/);
      const ok = await editor(srv.url, "other", "eve", token("eve", ["--room", "yjs:other"]));
      assert.ok(ok.p.synced);
      // y-websocket: "permission denied" with the reason, then a close
      // whose code (4400-4499) stops the provider from retrying.
      const denied = async (doc, query) => {
        const r = rawWs(srv.url, doc, query);
        const { code, reason } = await r.closed;
        return { code, reason, first: r.got[0] };
      };
      let d = await denied("d1", "?token=");
      assert.equal(d.code, 4401);
      assert.match(d.reason, /Authentication failed/);
      assert.deepEqual([...d.first.slice(0, 2)], [2, 0], "y-protocols' permission denied first");
      d = await denied("d1", "?token=garbage");
      assert.equal(d.code, 4401);
      d = await denied("d1", `?token=${token("eve", ["--room", "yjs:other"])}`);
      assert.equal(d.code, 4403);
      assert.match(d.reason, /Forbidden/);
      d = await denied("bad name!", `?token=${token("eve")}`);
      assert.equal(d.code, 4400);
      // The real provider reads the refusal and stops.
      const closed = [];
      const p = new WebsocketProvider(wsUrl(srv.url), "d1", new Y.Doc(), { params: { token: "garbage" }, WebSocketPolyfill: WebSocket, disableBc: true });
      wsProviders.push(p);
      p.on("closed", (c) => closed.push(c));
      assert.ok(await until(() => closed.length === 1, 5000), "the provider is told it is closed for good");
      assert.equal(closed[0].code, 4401);
      await sleep(1000);
      assert.equal(p.shouldConnect, false, "and does not retry");
      // Without a token in the URL, an auth message first (type 2, the token).
      const tok = new TextEncoder().encode(token("eve", ["--room", "yjs:other"]));
      const r = rawWs(srv.url, "other");
      await r.open;
      r.ws.send(Uint8Array.from([2, ...varuint(tok.length), ...tok]));
      assert.ok(await until(() => r.got.length > 0, 5000), "synced after the auth message");
      assert.deepEqual([...r.got[0].slice(0, 2)], [0, 0], "the server's sync step 1");
      // No token at all within --connect-timeout-ms: closed.
      const slow = rawWs(srv.url, "other");
      assert.equal((await slow.closed).code, 4408);
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("a document survives a SIGKILL of the server, snapshots included, and an editor that stayed reconnects and syncs", async () => {
    const port = await freePort();
    const db = tempDb();
    let srv = await startServer(port, db, YJS);
    try {
      const a = await editor(srv.url, "durable", "alice");
      // More updates than one snapshot takes (100), each its own.
      for (let i = 0; i < 250; i++) {
        a.text.insert(a.text.length, String(i % 10));
        await sleep(1);
      }
      const want = a.text.toString();
      assert.ok(await until(async () => (await metric(srv.url, "switchboard_yjs_updates_total")) >= 250), "all stored");
      srv.child.kill("SIGKILL");
      await new Promise((r) => srv.child.once("exit", r));
      // Alice types while the server is down; her provider reconnects to
      // the restarted server by itself and sends what it lacks.
      a.text.insert(a.text.length, "!");
      srv = await startServer(port, db, YJS);
      const b = await wsEditor(srv.url, "durable", "bob");
      assert.ok(await until(() => b.text.toString() === `${want}!`, 10000), `${b.text.toString().length} of ${want.length + 1} characters`);
      b.text.insert(0, "^");
      assert.ok(await until(() => a.text.toString() === `^${want}!`, 5000), "alice, reconnected, gets bob's edit");
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("an update too large, or not Yjs, ends only its socket", async () => {
    const srv = await startServer(undefined, undefined, [...YJS, "--yjs-max-update-bytes", "65536"]);
    try {
      const a = await editor(srv.url, "attack", "alice");
      a.text.insert(0, "kept");
      const raw = (tag) => {
        const s = io(`${srv.url}/yjs|attack`, { auth: { token: token(tag) }, transports: ["websocket"], reconnection: false, forceNew: true });
        raws.push(s);
        return new Promise((resolve) => s.on("connect", () => resolve(s)));
      };
      for (const [what, payload] of [
        ["too large", new Uint8Array(200_000).fill(1)],
        ["not yjs", new Uint8Array([255, 255, 255, 255, 255, 255, 255, 255, 255, 1])],
      ]) {
        const m = await raw("mallory");
        const gone = new Promise((r) => m.on("disconnect", r));
        m.emit("sync-update", payload);
        assert.equal(await Promise.race([gone, sleep(5000).then(() => "still connected")]), "io server disconnect", what);
      }
      assert.ok((await metric(srv.url, "switchboard_yjs_refused_total")) >= 2);
      // The document and its editor are untouched.
      const b = await editor(srv.url, "attack", "bob");
      assert.ok(await until(() => b.text.toString() === "kept"));
      b.text.insert(4, "!");
      assert.ok(await until(() => a.text.toString() === "kept!"));
    } finally {
      closeAll();
      await srv.stop();
    }
  });
});

describe("yjs: the backend's HTTP API, and tenants", () => {
  it("reads a document's state and text, and applies an update that reaches both providers", async () => {
    const KEY = "yjs-test-api-key-0123456789abcdef";
    const srv = await startServer(undefined, undefined, [...YJS, "--api-key", KEY]);
    const api = (path, init = {}) => fetch(`${srv.url}/api/yjs/${path}`, { ...init, headers: { authorization: `Bearer ${KEY}`, ...(init.headers ?? {}) } });
    try {
      assert.equal((await api("nothing-yet")).status, 404);
      const a = await editor(srv.url, "api-doc", "alice");
      const w = await wsEditor(srv.url, "api-doc", "walt");
      a.text.insert(0, "hello");
      assert.ok(await until(() => w.text.toString() === "hello"));
      await sleep(100);
      // The state, as Y.applyUpdate takes it.
      let r = await api("api-doc");
      assert.equal(r.status, 200);
      assert.equal(r.headers.get("content-type"), "application/octet-stream");
      const copy = new Y.Doc();
      Y.applyUpdate(copy, new Uint8Array(await r.arrayBuffer()));
      assert.equal(copy.getText("t").toString(), "hello");
      // The text of one Y.Text.
      r = await api("api-doc?text=t");
      assert.deepEqual(await r.json(), { docId: "api-doc", name: "t", text: "hello" });
      // An update from the backend: stored, and sent to both providers' editors.
      copy.getText("t").insert(5, " from the backend");
      const sv = Y.encodeStateVectorFromUpdate(Y.encodeStateAsUpdate(a.ydoc));
      const update = Y.encodeStateAsUpdate(copy, sv);
      r = await api("api-doc/updates", { method: "POST", body: update, headers: { "content-type": "application/octet-stream" } });
      assert.equal(r.status, 200, await r.clone().text());
      assert.deepEqual(await r.json(), { applied: true });
      const want = "hello from the backend";
      assert.ok(await until(() => a.text.toString() === want && w.text.toString() === want), `${a.text.toString()} / ${w.text.toString()}`);
      // Again: nothing new, nothing stored.
      r = await api("api-doc/updates", { method: "POST", body: update });
      assert.deepEqual(await r.json(), { applied: false });
      // Refusals: JSON with a code.
      r = await api("api-doc/updates", { method: "POST", body: Uint8Array.from([255, 255, 255, 255, 255, 255, 255, 255, 255, 1]) });
      assert.equal(r.status, 400);
      assert.equal((await r.json()).code, "invalid_update");
      r = await api("api-doc/updates", { method: "POST", body: new Uint8Array(2_000_000) });
      assert.equal(r.status, 413);
      assert.equal((await r.json()).code, "too_large");
      r = await fetch(`${srv.url}/api/yjs/api-doc`);
      assert.equal(r.status, 401);
      r = await api("bad%20name!");
      assert.equal(r.status, 400);
      // A tenant's document of the same name is another document.
      r = await api("api-doc?tenant=acme&text=t");
      assert.equal(r.status, 404);
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("two tenants' documents of one name stay apart, on both providers", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      const acme = await editor(srv.url, "same", "ann", token("ann", ["--tenant", "acme"]));
      const acmeWs = await wsEditor(srv.url, "same", "abe", token("abe", ["--tenant", "acme"]));
      const other = await editor(srv.url, "same", "olga", token("olga", ["--tenant", "other"]));
      const otherWs = await wsEditor(srv.url, "same", "otto", token("otto", ["--tenant", "other"]));
      acme.text.insert(0, "acme only");
      other.text.insert(0, "other only");
      assert.ok(await until(() => acmeWs.text.toString() === "acme only" && otherWs.text.toString() === "other only"), `${acmeWs.text.toString()} / ${otherWs.text.toString()}`);
      await sleep(300);
      assert.equal(acme.text.toString(), "acme only");
      assert.equal(other.text.toString(), "other only");
    } finally {
      closeAll();
      await srv.stop();
    }
  });
});
