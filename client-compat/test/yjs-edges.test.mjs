// Yjs: the edges of a session and what a hostile client would do, through
// the real providers (see yjs.test.mjs): providers turned off, floods,
// malformed and oversized messages, token expiry, cursors that drop and
// come back, the unload grace.
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

describe("yjs: the edges", () => {
  it("each provider can be turned off (--no-yjs-socketio, --no-yjs-websocket)", async () => {
    const srv = await startServer(undefined, undefined, ["--no-yjs-socketio", "--no-yjs-websocket"]);
    try {
      const s = io(`${srv.url}/yjs|off`, { auth: { token: token("alice") }, transports: ["websocket"], reconnection: false, forceNew: true });
      const err = await new Promise((resolve) => {
        s.on("connect", () => resolve("connected"));
        s.on("connect_error", (e) => resolve(e.message));
      });
      s.close();
      assert.match(err, /Invalid namespace/);
      const r = rawWs(srv.url, "off", `?token=${token("alice")}`);
      const outcome = await Promise.race([r.open.then(() => "open"), r.closed.then(() => "refused")]);
      assert.equal(outcome, "refused", "no websocket at /yjs");
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("y-websocket: a 50 MB message, a flood and malformed messages end only their connection", async () => {
    const srv = await startServer(undefined, undefined, [...YJS, "--events-per-sec", "50", "--event-burst", "100"]);
    try {
      const a = await wsEditor(srv.url, "ws-edges", "alice");
      a.text.insert(0, "kept");
      const q = `?token=${token("mallory")}`;
      // 50 MB in one message: refused from the frame's header.
      let r = rawWs(srv.url, "ws-edges", q);
      await r.open;
      r.ws.send(new Uint8Array(50_000_000));
      let c = await r.closed;
      assert.ok([1009, 4413].includes(c.code), `closed with ${c.code} ${c.reason}`);
      // Malformed: a type nobody knows, then an update that is not Yjs.
      for (const bad of [[9, 9, 9], [0, 2, 10, 255, 255, 255, 255, 255, 255, 255, 255, 255, 1]]) {
        r = rawWs(srv.url, "ws-edges", q);
        await r.open;
        r.ws.send(Uint8Array.from(bad));
        c = await r.closed;
        assert.equal(c.code, 4400, `${bad}: ${c.reason}`);
      }
      // 1,000 updates at once against 50/s, burst 100: closed with 1008
      // (the provider would come back after its backoff).
      r = rawWs(srv.url, "ws-edges", q);
      await r.open;
      const doc = new Y.Doc();
      for (let i = 0; i < 1000; i++) {
        doc.getText("t").insert(0, "x");
        const u = Y.encodeStateAsUpdate(doc);
        r.ws.send(Uint8Array.from([0, 2, ...varuint(u.length), ...u]));
      }
      c = await r.closed;
      assert.equal(c.code, 1008, c.reason);
      assert.ok((await fetch(`${srv.url}/healthz`)).ok, "the server is alive");
      const b = await editor(srv.url, "ws-edges", "bob");
      assert.ok(await until(() => b.text.toString() === a.text.toString() && b.text.toString().includes("kept")), `${b.text.toString()} / ${a.text.toString()}`);
      assert.ok((await metric(srv.url, "switchboard_yjs_refused_total")) >= 3);
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("made-up document names leave no namespace behind, and a document's goes with its last socket", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      for (let i = 0; i < 50; i++) {
        const s = io(`${srv.url}/yjs|made-up-${i}`, { transports: ["websocket"], reconnection: false, forceNew: true });
        raws.push(s);
        await new Promise((r) => s.on("connect_error", r));
        s.close();
      }
      assert.ok(await until(async () => (await metric(srv.url, "switchboard_namespaces_removed_total")) >= 50), "50 refused names removed");
      const a = await editor(srv.url, "comes-and-goes", "alice");
      a.text.insert(0, "still here");
      await sleep(200);
      closeAll();
      assert.ok(await until(async () => (await metric(srv.url, "switchboard_namespaces_removed_total")) >= 51), "the document's namespace removed");
      const b = await editor(srv.url, "comes-and-goes", "bob");
      assert.ok(await until(() => b.text.toString() === "still here"), b.text.toString());
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("a document stays loaded for --yjs-unload-grace-ms after its last client, unless memory is needed", async () => {
    const srv = await startServer(undefined, undefined, [...YJS, "--yjs-unload-grace-ms", "1500", "--yjs-max-memory-bytes", "3000"]);
    try {
      const loaded = () => metric(srv.url, "switchboard_yjs_documents");
      let a = await editor(srv.url, "graced", "alice");
      a.text.insert(0, "x".repeat(2000));
      await sleep(300);
      closeAll();
      await sleep(300);
      assert.equal(await loaded(), 1, "kept through the grace");
      assert.ok(await until(async () => (await loaded()) === 0, 5000), "unloaded after it");
      // Over --yjs-max-memory-bytes, an idle document makes room at once.
      a = await editor(srv.url, "graced", "alice");
      assert.equal(a.text.length, 2000);
      closeAll();
      await sleep(300);
      assert.equal(await loaded(), 1);
      const b = await wsEditor(srv.url, "another", "bob");
      b.text.insert(0, "y".repeat(1500));
      const c = await editor(srv.url, "another", "carol");
      assert.ok(await until(() => c.text.length === 1500), `carol has ${c.text.length} of 1500 (the update needed the idle document's room)`);
      assert.equal(await loaded(), 1, "the idle document was unloaded for it");
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("a connection is ended when its token expires, on both providers", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      const e = await editor(srv.url, "short", "alice", token("alice", ["--ttl-secs", "2"]));
      const w = await wsEditor(srv.url, "short", "walt", token("walt", ["--ttl-secs", "2"]));
      const closed = new Promise((r) => w.p.once("closed", r));
      const reason = await Promise.race([new Promise((r) => e.p.socket.once("disconnect", r)), sleep(8000).then(() => "still connected")]);
      assert.equal(reason, "io server disconnect");
      // y-websocket: closed with 4401, and the provider does not retry
      // with the token it has.
      const c = await Promise.race([closed, sleep(8000).then(() => ({ code: "still open" }))]);
      assert.equal(c.code, 4401);
      assert.match(c.reason, /token expired/);
      assert.equal(await metric(srv.url, 'switchboard_server_disconnects_total{reason="token_expired"}'), 2);
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("a cursor move reaches each other client once (echoes are not passed on), and a client back on a new connection owns its cursor again", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      const eds = [];
      for (let i = 0; i < 6; i++) eds.push(await (i % 2 ? wsEditor : editor)(srv.url, "echoes", `u${i}`));
      // A listener that never echoes: counts what the server sends.
      const spy = io(`${srv.url}/yjs|echoes`, { auth: { token: token("spy") }, transports: ["websocket"], reconnection: false, forceNew: true });
      raws.push(spy);
      await new Promise((r) => spy.on("connect", r));
      await sleep(500);
      let heard = 0;
      spy.on("awareness-update", () => heard++);
      for (const [i, e] of eds.entries()) e.p.awareness.setLocalStateField("user", `u${i}`);
      const seen = (e) => [...e.p.awareness.getStates().values()].filter((st) => st.user).length;
      assert.ok(await until(() => eds.every((e) => seen(e) === 6)), eds.map(seen).join());
      await sleep(500);
      // One change each (six), not six per client echoed on (36 and more).
      assert.ok(heard >= 6 && heard <= 12, `the spy heard ${heard} awareness updates`);
      // A client id the server knew, gone and back on a new connection with
      // a newer clock: its new connection owns it, and its going removes it.
      const ghost = rawWs(srv.url, "echoes", `?token=${token("ghost")}`);
      await ghost.open;
      ghost.ws.send(Uint8Array.from([1, ...(() => { const b = awarenessBytes([[777, 1, { user: "ghost" }]]); return [...varuint(b.length), ...b]; })()]));
      const ghostSeen = () => [...eds[0].p.awareness.getStates().values()].some((st) => st.user === "ghost");
      assert.ok(await until(ghostSeen), "ghost arrives");
      ghost.ws.close();
      assert.ok(await until(() => !ghostSeen()), "ghost removed with its connection");
      const again = rawWs(srv.url, "echoes", `?token=${token("ghost")}`);
      await again.open;
      again.ws.send(Uint8Array.from([1, ...(() => { const b = awarenessBytes([[777, 5, { user: "ghost" }]]); return [...varuint(b.length), ...b]; })()]));
      assert.ok(await until(ghostSeen), "ghost back");
      again.ws.close();
      assert.ok(await until(() => !ghostSeen()), "ghost removed again: its new connection owned it");
      assert.equal(await metric(srv.url, "switchboard_yjs_awareness_clients"), 6, "the gauge counts the six editors");
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("a client that drops and comes straight back is seen again at once (not after 30 s), on both providers", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      const watcher = await editor(srv.url, "blip", "watcher");
      for (const [name, open] of [["walt", wsEditor], ["sid", editor]]) {
        const e = await open(srv.url, "blip", name);
        e.p.awareness.setLocalStateField("user", name);
        const seen = () => [...watcher.p.awareness.getStates().values()].some((st) => st.user === name);
        assert.ok(await until(seen), `${name} seen`);
        e.p.disconnect();
        assert.ok(await until(() => !seen()), `${name} removed when it drops`);
        e.p.connect();
        const back = Date.now();
        assert.ok(await until(seen, 5000), `${name} seen again after it came back`);
        assert.ok(Date.now() - back < 3000, `${name} seen again after ${Date.now() - back} ms`);
      }
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("ten editors' cursors: each sees the others, nobody is cut off, and one leaving takes only its own", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      const eds = [];
      for (let i = 0; i < 10; i++) {
        const e = await editor(srv.url, "crowd", `u${i}`);
        e.p.awareness.setLocalStateField("user", `u${i}`);
        e.drops = 0;
        e.p.socket.on("disconnect", () => e.drops++);
        eds.push(e);
      }
      const names = (e) => [...e.p.awareness.getStates().values()].map((st) => st.user).filter(Boolean).sort();
      const all = eds.map((_, i) => `u${i}`).sort();
      assert.ok(await until(() => eds.every((e) => names(e).join() === all.join()), 10000), eds.map((e) => names(e).join()).join(" | "));
      eds[0].p.destroy();
      const rest = all.filter((n) => n !== "u0");
      assert.ok(await until(() => eds.slice(1).every((e) => names(e).join() === rest.join()), 5000), eds.slice(1).map((e) => names(e).join()).join(" | "));
      await sleep(300);
      assert.ok(eds.slice(1).every((e) => names(e).join() === rest.join()), "nobody else's cursor removed");
      assert.deepEqual(eds.slice(1).map((e) => e.drops), Array(9).fill(0), "nobody disconnected");
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("a flood of updates, an implausible count, many cursors and deeply nested values end only their socket", async () => {
    const srv = await startServer(undefined, undefined, [...YJS, "--events-per-sec", "50", "--event-burst", "100"]);
    try {
      const a = await editor(srv.url, "edges", "alice");
      a.text.insert(0, "kept");
      const raw = async (tag) => {
        const s = io(`${srv.url}/yjs|edges`, { auth: { token: token(tag) }, transports: ["websocket"], reconnection: false, forceNew: true });
        raws.push(s);
        await new Promise((resolve) => s.on("connect", resolve));
        return s;
      };
      const ended = (s) => Promise.race([new Promise((r) => s.on("disconnect", r)), sleep(5000).then(() => "still connected")]);
      // 1,000 updates at once against 50/s, burst 100.
      const doc = new Y.Doc();
      const flooder = await raw("mallory");
      const gone = ended(flooder);
      for (let i = 0; i < 1000; i++) {
        doc.getText("t").insert(0, "x");
        flooder.emit("sync-update", Y.encodeStateAsUpdate(doc));
      }
      assert.notEqual(await gone, "still connected", "flood");
      // A state vector that declares 2^28 entries in 5 bytes.
      const liar = await raw("mallory");
      const liarGone = ended(liar);
      liar.emit("sync-step-1", new Uint8Array([0x80, 0x80, 0x80, 0x80, 0x01]), () => {});
      assert.equal(await liarGone, "io server disconnect", "implausible count");
      // Nine cursors from one socket.
      const many = await raw("mallory");
      const manyGone = ended(many);
      const aw = new (await import("y-protocols/awareness")).Awareness(new Y.Doc());
      const enc = (await import("y-protocols/awareness")).encodeAwarenessUpdate;
      const states = new Map();
      for (let id = 1; id <= 9; id++) states.set(1000 + id, { clock: 1, lastUpdated: Date.now() });
      aw.states = new Map([...states.keys()].map((k) => [k, { user: "fake" }]));
      aw.meta = states;
      many.emit("awareness-update", enc(aw, [...states.keys()]));
      aw.destroy(); // its check interval would keep the test process alive
      assert.equal(await manyGone, "io server disconnect", "nine cursors");
      // States no client can read: an id JavaScript cannot hold, a state
      // that is not JSON (either would make every newcomer's provider throw).
      for (const [what, entries] of [
        ["id over 2^53", [[2 ** 60, 1, { user: "x" }]]],
        ["not JSON", [[4242, 1, "{not json"]]],
      ]) {
        const bad = await raw("mallory");
        const badGone = ended(bad);
        bad.emit("awareness-update", awarenessBytes(entries));
        assert.equal(await badGone, "io server disconnect", what);
      }
      // Removals of 40 clients the server never knew (what a provider
      // whose transport came back sends first): dropped, not refused.
      const back = await raw("mallory");
      const backGone = ended(back);
      back.emit("awareness-update", awarenessBytes(Array.from({ length: 40 }, (_, i) => [5000 + i, 2, null])));
      assert.equal(await Promise.race([backGone, sleep(700).then(() => "connected")]), "connected", "unknown removals");
      // Values nested 5,000 deep: yrs would recurse once per level (the
      // stack of a server worker ran out at ~10,000 in release builds).
      const deepDoc = new Y.Doc();
      let deep = "leaf";
      for (let i = 0; i < 5000; i++) deep = [deep];
      deepDoc.getMap("m").set("deep", deep);
      const digger = await raw("mallory");
      const diggerGone = ended(digger);
      digger.emit("sync-update", Y.encodeStateAsUpdate(deepDoc));
      assert.equal(await diggerGone, "io server disconnect", "deep values");
      assert.ok((await fetch(`${srv.url}/healthz`)).ok, "the server is alive");
      // The document is whole, and its editors agree (the flood's first
      // updates, within the burst, were taken like anyone's).
      const b = await editor(srv.url, "edges", "bob");
      assert.ok(await until(() => b.text.toString() === a.text.toString() && b.text.toString().includes("kept")), `${b.text.toString()} / ${a.text.toString()}`);
    } finally {
      closeAll();
      await srv.stop();
    }
  });
});
