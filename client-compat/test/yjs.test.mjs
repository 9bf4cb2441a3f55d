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
import { SocketIOProvider } from "y-socket.io";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";
import * as bc from "lib0/broadcastchannel";
import { io, Manager } from "socket.io-client";
import { startServer, token, tempDb, freePort, metric, freshPgDatabase } from "./server.mjs";

const PG = process.env.SWITCHBOARD_TEST_POSTGRES_URL;
const REDIS = process.env.SWITCHBOARD_TEST_REDIS;
const CI = process.env.CI === "true";
const YJS = [];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms = 10000) {
  const by = Date.now() + ms;
  while (!(await cond()) && Date.now() < by) await sleep(25);
  return cond();
}

const providers = [];
const wsProviders = [];
const raws = [];
/** Ends every provider and raw socket (a provider's destroy() leaves a
 * socket that is reconnecting to a stopped server running for good). */
function closeAll() {
  for (const p of providers.splice(0)) {
    p.destroy();
    p.socket.io.reconnection(false);
    p.socket.disconnect();
    // destroy() publishes a goodbye on lib0's BroadcastChannel even with
    // disableBc, which opens a channel that keeps Node running: closed by
    // its last unsubscribe.
    const none = () => {};
    bc.subscribe(p.broadcastChannel, none);
    bc.unsubscribe(p.broadcastChannel, none);
  }
  for (const p of wsProviders.splice(0)) {
    p.destroy();
    p.awareness.destroy();
  }
  raws.splice(0).forEach((s) => s.close());
}
after(closeAll);

/** A provider for `doc` as `sub`; resolves once synced. */
async function editor(url, doc, sub, tok = token(sub)) {
  const ydoc = new Y.Doc();
  const p = new SocketIOProvider(url, doc, ydoc, { auth: { token: tok }, disableBc: true });
  providers.push(p);
  assert.ok(await until(() => p.synced, 10000), `${sub} synced to ${doc}`);
  return { p, ydoc, text: ydoc.getText("t") };
}

/** lib0's varuint. */
function varuint(n) {
  const out = [];
  while (n >= 0x80) {
    out.push((n % 128) + 0x80); // not bitwise: ids go past 32 bits
    n = Math.floor(n / 128);
  }
  out.push(n);
  return out;
}

/** An awareness update by hand: [[clientId, clock, state-or-JSON-text], ...]. */
function awarenessBytes(entries) {
  const out = [...varuint(entries.length)];
  for (const [id, clock, state] of entries) {
    const json = new TextEncoder().encode(typeof state === "string" ? state : JSON.stringify(state));
    out.push(...varuint(id), ...varuint(clock), ...varuint(json.length), ...json);
  }
  return Uint8Array.from(out);
}

const wsUrl = (url) => `${url.replace(/^http/, "ws")}/yjs`;

/** A y-websocket provider for `doc` as `sub`; resolves once synced. */
async function wsEditor(url, doc, sub, tok = token(sub)) {
  const ydoc = new Y.Doc();
  const p = new WebsocketProvider(wsUrl(url), doc, ydoc, { params: { token: tok }, WebSocketPolyfill: WebSocket, disableBc: true });
  wsProviders.push(p);
  assert.ok(await until(() => p.synced, 10000), `${sub} synced to ${doc} over y-websocket`);
  return { p, ydoc, text: ydoc.getText("t") };
}

/** A raw websocket to `/yjs/<doc>`: its messages, and how it closed. */
function rawWs(url, doc, query = "") {
  const ws = new WebSocket(`${wsUrl(url)}/${encodeURIComponent(doc)}${query}`);
  ws.binaryType = "nodebuffer";
  raws.push(ws);
  const got = [];
  ws.on("message", (m) => got.push(new Uint8Array(m)));
  ws.on("error", () => {});
  const closed = new Promise((r) => ws.on("close", (code, reason) => r({ code, reason: reason.toString() })));
  const open = new Promise((r) => ws.on("open", r));
  return { ws, got, closed, open };
}

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

  it("10,000 documents opened by one user: past --max-connections-per-user each is refused, memory stays bounded", async () => {
    const srv = await startServer(undefined, undefined, [...YJS, "--max-connections-per-user", "50"]);
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${srv.child.pid}/status`, "utf8"))[1]) * 1024;
    try {
      const before = rss();
      const tok = token("hoarder");
      // One connection, 10,000 namespaces (y-socket.io multiplexes them).
      const mgr = new Manager(srv.url, { transports: ["websocket"], reconnection: false, forceNew: true });
      let connected = 0;
      const errors = new Map();
      const sockets = [];
      for (let i = 0; i < 10_000; i++) {
        const s = mgr.socket(`/yjs|hoard-${i}`, { auth: { token: tok } });
        s.on("connect", () => connected++);
        s.on("connect_error", (e) => errors.set(e.message, (errors.get(e.message) ?? 0) + 1));
        sockets.push(s);
        s.connect();
        if (i % 500 === 499) await sleep(20);
      }
      raws.push({ close: () => sockets.forEach((s) => s.disconnect()) });
      assert.ok(await until(() => connected + [...errors.values()].reduce((x, y) => x + y, 0) === 10_000, 60_000), `${connected} connected, ${JSON.stringify([...errors])}`);
      assert.equal(connected, 50);
      assert.deepEqual([...errors.keys()].length, 1, JSON.stringify([...errors]));
      assert.match([...errors.keys()][0], /too many connections/i);
      // y-websocket counts against the same cap: closed with 1013 (the
      // provider comes back later).
      const r = rawWs(srv.url, "hoard-ws", `?token=${tok}`);
      assert.equal((await r.closed).code, 1013);
      assert.equal(await metric(srv.url, "switchboard_yjs_documents"), 50);
      const grew = rss() - before;
      assert.ok(grew < 150 * 1024 * 1024, `RSS grew ${grew} bytes`);
      assert.ok((await fetch(`${srv.url}/healthz`)).ok, "the server is alive");
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

describe("yjs on two nodes (PostgreSQL + Redis)", { skip: PG && REDIS ? false : CI ? false : "set SWITCHBOARD_TEST_POSTGRES_URL and SWITCHBOARD_TEST_REDIS (scripts/services.sh does)" }, () => {
  it("an edit on one node reaches a client on the other, and a client joining later loads it all", async () => {
    assert.ok(PG && REDIS, "CI=true, but SWITCHBOARD_TEST_POSTGRES_URL or SWITCHBOARD_TEST_REDIS is not set");
    const db = freshPgDatabase(PG, "yjs_cluster");
    const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
    const extra = [...YJS, "--redis-url", redisUrl, "--redis-prefix", `yjs-${process.pid}-${Date.now()}`];
    const nodes = [await startServer(undefined, db.url, extra), await startServer(undefined, db.url, extra)];
    try {
      const a = await editor(nodes[0].url, "shared", "alice");
      const b = await editor(nodes[1].url, "shared", "bob");
      // y-websocket on both nodes too: they hear the others only through the relay.
      const aw = await wsEditor(nodes[0].url, "shared", "amy");
      const bw = await wsEditor(nodes[1].url, "shared", "ben");
      const all = [a, b, aw, bw];
      const agree = (want) => until(() => all.every((e) => e.text.toString() === want));
      const texts = () => all.map((e) => JSON.stringify(e.text.toString())).join(" | ");
      a.text.insert(0, "from A ");
      assert.ok(await agree("from A "), texts());
      b.text.insert(b.text.length, "and B");
      assert.ok(await agree("from A and B"), texts());
      bw.text.insert(0, "[ws B] ");
      assert.ok(await agree("[ws B] from A and B"), texts());
      // Cursors cross nodes and providers.
      bw.p.awareness.setLocalStateField("user", "ben");
      assert.ok(await until(() => [...a.p.awareness.getStates().values()].some((st) => st.user === "ben")), "ben's cursor reaches alice on the other node");
      // Node B already holds the document: a newcomer there gets A's later edits too.
      aw.text.insert(0, ">> ");
      const c = await editor(nodes[1].url, "shared", "carol");
      const d = await wsEditor(nodes[1].url, "shared", "dave");
      const want = ">> [ws B] from A and B";
      assert.ok(await until(() => c.text.toString() === want && d.text.toString() === want), `C has ${JSON.stringify(c.text.toString())}, D ${JSON.stringify(d.text.toString())}`);
    } finally {
      closeAll();
      await Promise.all(nodes.map((n) => n.stop()));
      try {
        db.drop();
      } catch {}
    }
  });

  it("the cursors of a node that died are dropped by the others (newcomers are not sent them)", async () => {
    assert.ok(PG && REDIS, "CI=true, but SWITCHBOARD_TEST_POSTGRES_URL or SWITCHBOARD_TEST_REDIS is not set");
    const db = freshPgDatabase(PG, "yjs_dead_node");
    const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
    // Node B keeps the document loaded with nobody on it (a long grace):
    // no client's own awareness timeout removes the dead node's cursor there.
    const extra = [...YJS, "--redis-url", redisUrl, "--redis-prefix", `yjs-dead-${process.pid}-${Date.now()}`, "--yjs-unload-grace-ms", "120000"];
    const nodes = [await startServer(undefined, db.url, extra), await startServer(undefined, db.url, extra)];
    try {
      const bob = await wsEditor(nodes[0].url, "wake", "bob");
      const carol = await editor(nodes[1].url, "wake", "carol");
      bob.p.awareness.setLocalStateField("user", "bob");
      const hasBob = (e) => [...e.p.awareness.getStates().values()].some((st) => st.user === "bob");
      assert.ok(await until(() => hasBob(carol)), "bob's cursor reaches node B");
      bob.p.shouldConnect = false; // the provider would keep dialling the dead node
      nodes[0].child.kill("SIGKILL");
      await new Promise((r) => nodes[0].child.once("exit", r));
      carol.p.destroy();
      // Past the providers' own 30 s timeout and the server's 35 s.
      await sleep(41_000);
      const dave = await editor(nodes[1].url, "wake", "dave");
      await sleep(500);
      assert.ok(!hasBob(dave), "a newcomer on node B is not sent the dead node's cursor");
    } finally {
      closeAll();
      await Promise.all(nodes.map((n) => n.stop()));
      try {
        db.drop();
      } catch {}
    }
  });

  it("a node that missed relayed updates (a full queue to Redis) reads the store's tail and sends it to its clients", async () => {
    assert.ok(PG && REDIS, "CI=true, but SWITCHBOARD_TEST_POSTGRES_URL or SWITCHBOARD_TEST_REDIS is not set");
    const db = freshPgDatabase(PG, "yjs_gaps");
    const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
    const extra = [...YJS, "--redis-url", redisUrl, "--redis-prefix", `yjs-gap-${process.pid}-${Date.now()}`];
    // Node A's queue to Redis holds one message: a burst loses most.
    const nodes = [await startServer(undefined, db.url, [...extra, "--max-redis-queue-bytes", "1", "--events-per-sec", "1000", "--event-burst", "1000"]), await startServer(undefined, db.url, extra)];
    try {
      const a = await editor(nodes[0].url, "gaps", "alice");
      const b = await editor(nodes[1].url, "gaps", "bob");
      const bw = await wsEditor(nodes[1].url, "gaps", "ben");
      for (let i = 0; i < 200; i++) a.text.insert(a.text.length, String(i % 10));
      assert.ok(await until(async () => (await metric(nodes[0].url, 'switchboard_redis_dropped_total{path="yjs",reason="queue_full"}')) > 0, 5000), "some relayed updates were dropped");
      await sleep(500);
      // One more, alone: it goes, and its seq shows node B the gap.
      a.text.insert(a.text.length, "!");
      const want = a.text.toString();
      assert.ok(await until(() => b.text.toString() === want && bw.text.toString() === want, 10000), `B's clients have ${b.text.length} and ${bw.text.length} of ${want.length} characters`);
    } finally {
      closeAll();
      await Promise.all(nodes.map((n) => n.stop()));
      try {
        db.drop();
      } catch {}
    }
  });
});
