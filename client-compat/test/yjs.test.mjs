// Yjs documents through the real y-socket.io provider (SocketIOProvider
// 1.1.3, yjs 13): clients editing one Y.Text converge, awareness reaches the
// others and is cleared when a client's process is killed, tokens and their
// `rooms` claim are enforced, a document survives a SIGKILL of the server,
// and updates the server will not take (too large, malformed) end only the
// socket that sent them.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";
import * as bc from "lib0/broadcastchannel";
import { io } from "socket.io-client";
import { startServer, token, tempDb, freePort, metric, freshPgDatabase } from "./server.mjs";

const PG = process.env.SWITCHBOARD_TEST_POSTGRES_URL;
const REDIS = process.env.SWITCHBOARD_TEST_REDIS;
const CI = process.env.CI === "true";
const YJS = ["--yjs-socketio"];
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
async function until(cond, ms = 10000) {
  const by = Date.now() + ms;
  while (!(await cond()) && Date.now() < by) await sleep(25);
  return cond();
}

const providers = [];
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

describe("yjs over y-socket.io", () => {
  it("two and five editors typing at once converge", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      for (const n of [2, 5]) {
        const doc = `converge-${n}`;
        const eds = await Promise.all(Array.from({ length: n }, (_, i) => editor(srv.url, doc, `u${i}`)));
        for (let round = 0; round < 20; round++) {
          eds.forEach((e, i) => e.text.insert(Math.min(e.text.length, round), `${i}`));
          await sleep(5);
        }
        const want = () => eds[0].text.toString();
        assert.ok(await until(() => eds.every((e) => e.text.toString() === want() && want().length === n * 20), 10000), eds.map((e) => e.text.toString()).join(" | "));
        eds.forEach((e) => e.p.destroy());
      }
      assert.ok((await metric(srv.url, "switchboard_yjs_updates_total")) >= 140);
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("awareness reaches the others and is cleared when a client's process is killed", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      const a = await editor(srv.url, "aware", "alice");
      // Bob runs in a process of his own, killed without a goodbye.
      const child = spawn(process.execPath, [fileURLToPath(new URL("./yjs-peer.mjs", import.meta.url)), srv.url, "aware", token("bob")], { stdio: ["ignore", "pipe", "inherit"] });
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

  it("a bad token, or one whose rooms claim leaves the document out, is refused", async () => {
    const srv = await startServer(undefined, undefined, YJS);
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
      const b = await editor(srv.url, "durable", "bob");
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
  it("is off unless --yjs-socketio", async () => {
    const srv = await startServer();
    try {
      const s = io(`${srv.url}/yjs|off`, { auth: { token: token("alice") }, transports: ["websocket"], reconnection: false, forceNew: true });
      const err = await new Promise((resolve) => {
        s.on("connect", () => resolve("connected"));
        s.on("connect_error", (e) => resolve(e.message));
      });
      s.close();
      assert.match(err, /Invalid namespace/);
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

  it("a socket is ended when its token expires", async () => {
    const srv = await startServer(undefined, undefined, YJS);
    try {
      const e = await editor(srv.url, "short", "alice", token("alice", ["--ttl-secs", "2"]));
      const reason = await Promise.race([new Promise((r) => e.p.socket.once("disconnect", r)), sleep(8000).then(() => "still connected")]);
      assert.equal(reason, "io server disconnect");
      assert.equal(await metric(srv.url, 'switchboard_server_disconnects_total{reason="token_expired"}'), 1);
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
      a.text.insert(0, "from A ");
      assert.ok(await until(() => b.text.toString() === "from A "), `B has ${JSON.stringify(b.text.toString())}`);
      b.text.insert(b.text.length, "and B");
      assert.ok(await until(() => a.text.toString() === "from A and B"), `A has ${JSON.stringify(a.text.toString())}`);
      // Node B already holds the document: a newcomer there gets A's later edits too.
      a.text.insert(0, ">> ");
      const c = await editor(nodes[1].url, "shared", "carol");
      assert.ok(await until(() => c.text.toString() === ">> from A and B"), `C has ${JSON.stringify(c.text.toString())}`);
    } finally {
      closeAll();
      await Promise.all(nodes.map((n) => n.stop()));
      try {
        db.drop();
      } catch {}
    }
  });
});
