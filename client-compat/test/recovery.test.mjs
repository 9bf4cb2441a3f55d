// Connection state recovery with the real socket.io-client 4.8, unchanged
// and with no option set: a client whose transport dies comes back with
// `socket.recovered === true`, in its rooms, with every chat:message it
// missed exactly once and in order, including those written to the dead
// connection that never arrived; after a SIGKILL and restart on the same
// SQLite file, after a graceful restart, and on another node. And it does
// not when it should not: after socket.disconnect(), after the window, with
// another user's pid or garbage.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import parser from "socket.io-msgpack-parser";
import { startServer, token, next, tempDb, freePort, metric, freshPgDatabase } from "./server.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const RUN = `${process.pid}-${Date.now()}`;
const NO_LIMITS = ["--address-messages-per-sec", "0", "--messages-per-sec", "100000", "--message-burst", "100000", "--events-per-sec", "100000", "--event-burst", "100000"];
const REDIS = process.env.SWITCHBOARD_TEST_REDIS;
const PG = process.env.SWITCHBOARD_TEST_POSTGRES_URL;
const CI = process.env.CI === "true";
const SLOW_SENDS = 3000;


const sockets = [];
function closeAll() {
  for (const s of sockets.splice(0)) s.close();
}

/** A client that notes every chat:message it gets, by room. */
function client(url, sub, opts = {}) {
  const s = io(url, { auth: { token: token(sub) }, reconnectionDelay: 100, reconnectionDelayMax: 300, ...opts });
  s.got = new Map();
  s.on("chat:message", (m) => {
    if (!s.got.has(m.roomId)) s.got.set(m.roomId, []);
    s.got.get(m.roomId).push(m.seq);
  });
  sockets.push(s);
  return s;
}

async function joined(s, ...rooms) {
  if (!s.connected) await next(s, "connect");
  for (const roomId of rooms) {
    const a = await s.timeout(5000).emitWithAck("room:join", { roomId });
    assert.equal(a.success, true, JSON.stringify(a));
  }
  return s;
}

async function send(s, roomId, n, content = "x") {
  for (let i = 0; i < n; i++) {
    const a = await s.timeout(5000).emitWithAck("chat:send", { roomId, content: `${content} ${i}` });
    assert.equal(a.success, true, JSON.stringify(a));
  }
}

/** Waits until `s` holds seq 1..n in `room` (or `ms` pass), then checks it holds exactly that. */
async function holds(s, room, n, ms = 2000) {
  for (let i = 0; i < ms / 20 && (s.got.get(room)?.length ?? 0) < n; i++) await sleep(20);
  await sleep(100); // duplicates would come now
  const want = Array.from({ length: n }, (_, i) => i + 1);
  assert.deepEqual(s.got.get(room) ?? [], want, `${room}: every message once, in order`);
}

/** Drops the client's transport as a network would (the client reconnects by itself). */
async function drop(s) {
  const gone = next(s, "disconnect");
  s.io.engine.close();
  return gone;
}

const PARSERS = { json: { server: [], client: {} }, msgpack: { server: ["--parser", "msgpack"], client: { parser } } };
const TRANSPORTS = { websocket: { transports: ["websocket"] }, polling: { transports: ["polling"] }, "polling then websocket": {} };

for (const [pname, p] of Object.entries(PARSERS)) {
  describe(`recovery, ${pname} parser`, () => {
    let srv;
    before(async () => {
      srv = await startServer(undefined, undefined, [...p.server, ...NO_LIMITS]);
    });
    after(async () => {
      closeAll();
      await srv.stop();
    });

    for (const [tname, t] of Object.entries(TRANSPORTS)) {
      it(`a dropped transport comes back recovered, in its rooms, with what it missed (${tname})`, async () => {
        const [r1, r2] = [`a-${tname.replaceAll(" ", "-")}-1`, `a-${tname.replaceAll(" ", "-")}-2`];
        const alice = await joined(client(srv.url, "alice", { ...t, ...p.client }), r1, r2);
        const bob = await joined(client(srv.url, "bob", { ...t, ...p.client }), r1, r2);
        assert.equal(alice.recovered, false);
        await send(bob, r1, 2);
        await send(bob, r2, 1);
        await holds(alice, r1, 2);
        await drop(alice);
        const back = next(alice, "connect");
        await send(bob, r1, 3);
        await send(bob, r2, 2);
        await back;
        assert.equal(alice.recovered, true, "socket.recovered");
        await holds(alice, r1, 5);
        await holds(alice, r2, 3);
        // Still in both rooms: what comes next arrives live.
        await send(bob, r1, 1);
        await send(bob, r2, 1);
        await holds(alice, r1, 6);
        await holds(alice, r2, 4);
        const members = await bob.timeout(5000).emitWithAck("room:members", { roomId: r1 });
        assert.deepEqual(members.members.map((m) => [m.userId, m.connections]).sort(), [["alice", 1], ["bob", 1]]);
        closeAll();
      });
    }
  });
}

describe("recovery, one node", () => {
  let srv;
  before(async () => {
    srv = await startServer(undefined, undefined, NO_LIMITS);
  });
  after(async () => {
    closeAll();
    await srv.stop();
  });

  it("messages written to a connection that died unread are replayed", async () => {
    const room = "inflight";
    const alice = await joined(client(srv.url, "alice", { transports: ["websocket"] }), room, "other");
    const bob = await joined(client(srv.url, "bob", { transports: ["websocket"] }), room, "other");
    await send(bob, room, 1);
    await send(bob, "other", 1);
    await holds(alice, room, 1);
    // Alice's network stops: the server writes into kernel buffers she
    // will never read, then the connection dies.
    const tcp = alice.io.engine.transport.ws._socket;
    tcp.pause();
    await send(bob, room, 40, "y".repeat(2000));
    await send(bob, "other", 3);
    await sleep(200);
    const back = next(alice, "connect");
    tcp.destroy();
    await back;
    assert.equal(alice.recovered, true);
    await holds(alice, room, 41);
    await holds(alice, "other", 4);
    closeAll();
  });

  it("private messages missed are replayed too, once and in order", async () => {
    const alice = await joined(client(srv.url, "alice", { transports: ["websocket"] }), "pm-room");
    const carol = await joined(client(srv.url, "carol"));
    const dms = [];
    alice.on("private:message", (m, offset) => dms.push([m.senderId, m.seq, typeof offset]));
    const dm = async (n, tag) => {
      for (let i = 0; i < n; i++) {
        const a = await carol.timeout(5000).emitWithAck("private:send", { toUserId: "alice", content: `${tag} ${i}` });
        assert.equal(a.success, true, JSON.stringify(a));
      }
    };
    await dm(1, "live");
    for (let i = 0; i < 50 && dms.length < 1; i++) await sleep(20);
    await drop(alice);
    const back = next(alice, "connect");
    await dm(3, "missed");
    await back;
    assert.equal(alice.recovered, true);
    // The replay ends after the connect event; a message sent live before
    // it has ended may come first (docs/protocol.md §17): sent after it.
    for (let i = 0; i < 100 && dms.length < 4; i++) await sleep(20);
    await dm(1, "after");
    for (let i = 0; i < 100 && dms.length < 5; i++) await sleep(20);
    await sleep(100);
    assert.deepEqual(dms, [1, 2, 3, 4, 5].map((seq) => ["carol", seq, "string"]));
    closeAll();
  });

  it("socket.disconnect() is not recovered: the app left", async () => {
    const alice = await joined(client(srv.url, "alice"), "bye");
    const bob = await joined(client(srv.url, "bob"), "bye");
    assert.match(alice._pid, /^[0-9a-f]{32}$/, "a recoverable session to begin with");
    alice.disconnect();
    await send(bob, "bye", 1);
    alice.connect();
    await next(alice, "connect");
    assert.equal(alice.recovered, false);
    await send(bob, "bye", 1);
    await sleep(200);
    assert.equal(alice.got.get("bye"), undefined, "not in the room any more");
    closeAll();
  });

  it("another user's pid, a forged offset and garbage give a fresh session", async () => {
    const room = "forged";
    const alice = await joined(client(srv.url, "alice", { transports: ["websocket"] }), room);
    const bob = await joined(client(srv.url, "bob"), room);
    await send(bob, room, 1);
    await holds(alice, room, 1);
    const before = {};
    for (const o of ["other_user", "malformed", "unknown_session"]) before[o] = await metric(srv.url, `switchboard_recoveries_total{outcome="${o}"}`);
    const pid = alice._pid;
    const offset = alice._lastOffset;
    assert.match(pid, /^[0-9a-f]{32}$/);
    alice.io.opts.reconnection = false;
    alice.io._reconnection = false;
    await drop(alice);
    await send(bob, room, 1);
    // Mallory presents alice's pid and offset: a fresh session of her own.
    const mallory = client(srv.url, "mallory", { auth: { token: token("mallory"), pid, offset }, transports: ["websocket"] });
    await next(mallory, "connect");
    assert.notEqual(mallory._pid, pid);
    await send(bob, room, 1);
    await sleep(200);
    assert.equal(mallory.got.size, 0, "none of alice's rooms or messages");
    const garbage = [
      { pid: 12345 },
      { pid: ["x"] },
      { pid: "x".repeat(100_000) },
      { pid: "../../etc" },
      { pid, offset: {} },
      { pid, offset: "1.zz" },
      { pid, offset: "f".repeat(100_000) },
      { pid: "0".repeat(32), offset },
    ];
    for (const g of garbage) {
      const s = client(srv.url, "mallory", { auth: { token: token("mallory"), ...g }, transports: ["polling"] });
      await next(s, "connect");
      assert.match(s._pid, /^[0-9a-f]{32}$/);
      assert.notEqual(s._pid, g.pid);
      const a = await s.timeout(5000).emitWithAck("room:join", { roomId: "m" });
      assert.equal(a.success, true, "a working session");
      s.close();
    }
    const counted = async (o) => (await metric(srv.url, `switchboard_recoveries_total{outcome="${o}"}`)) - before[o];
    assert.equal(await counted("other_user"), 1);
    assert.equal(await counted("malformed"), 7);
    assert.equal(await counted("unknown_session"), 1);
    // Alice's session is still hers (mallory's attempt did not use it up).
    alice.io._reconnection = true;
    alice.connect();
    await next(alice, "connect");
    assert.equal(alice.recovered, true);
    await holds(alice, room, 3);
    closeAll();
  });

  it("a slow consumer is closed and comes back whole", async () => {
    const slow = await startServer(undefined, undefined, [...NO_LIMITS, "--max-queued-packets", "64", "--write-stall-timeout-ms", "400", "--recovery-max-replay", "10000"]);
    try {
      const room = "slow";
      const alice = await joined(client(slow.url, "alice", { transports: ["websocket"] }), room);
      const bob = await joined(client(slow.url, "bob", { transports: ["websocket"] }), room);
      await send(bob, room, 1);
      await holds(alice, room, 1);
      const tcp = alice.io.engine.transport.ws._socket;
      tcp.pause();
      // Enough that the kernel buffers (several MB on loopback) and the
      // queue fill up.
      const big = "z".repeat(3900);
      // One at a time: bob, in the room too, must keep up himself.
      await send(bob, room, SLOW_SENDS, big);
      for (let i = 0; i < 100 && (await metric(slow.url, "switchboard_slow_consumer_disconnects_total")) < 1; i++) await sleep(50);
      assert.ok((await metric(slow.url, "switchboard_slow_consumer_disconnects_total")) >= 1, "alice was closed as a slow consumer");
      const back = next(alice, "connect", 15000);
      tcp.resume();
      await back;
      const why = (await (await fetch(`${slow.url}/metrics`)).text()).split("\n").filter((l) => l.startsWith("switchboard_recoveries_total") && !l.endsWith(" 0"));
      assert.equal(alice.recovered, true, why.join(", "));
      await holds(alice, room, SLOW_SENDS + 1, 10_000);
      closeAll();
    } finally {
      await slow.stop();
    }
  });

  it("past the window a client gets a fresh, working session", async () => {
    const short = await startServer(undefined, undefined, [...NO_LIMITS, "--recovery-window", "1"]);
    try {
      const alice = await joined(client(short.url, "alice"), "w");
      const bob = await joined(client(short.url, "bob"), "w");
      await send(bob, "w", 1);
      await holds(alice, "w", 1);
      alice.io._reconnection = false;
      await drop(alice);
      await sleep(1500);
      alice.io._reconnection = true;
      alice.connect();
      await next(alice, "connect");
      assert.equal(alice.recovered, false);
      assert.equal(await metric(short.url, 'switchboard_recoveries_total{outcome="unknown_session"}'), 1);
      await joined(alice, "w");
      await send(bob, "w", 1);
      await holds(alice, "w", 2);
      closeAll();
    } finally {
      await short.stop();
    }
  });
});

describe("recovery across restarts (same SQLite file)", () => {
  it("SIGKILL during the gap, restart: recovered", async () => {
    const port = await freePort();
    const db = tempDb();
    let srv = await startServer(port, db, NO_LIMITS);
    try {
      const alice = await joined(client(srv.url, "alice"), "k");
      const bob = await joined(client(srv.url, "bob"), "k");
      await send(bob, "k", 2);
      await holds(alice, "k", 2);
      // Alice stays away until the server is back.
      alice.io._reconnection = false;
      await drop(alice);
      await send(bob, "k", 2);
      await sleep(300); // the session is written in the next batch
      const bobBack = next(bob, "connect", 10000);
      srv.child.kill("SIGKILL");
      await new Promise((r) => srv.child.once("exit", r));
      srv = await startServer(port, db, NO_LIMITS);
      await bobBack;
      alice.io._reconnection = true;
      alice.connect();
      await next(alice, "connect", 10000);
      assert.equal(alice.recovered, true, "alice recovered from the restarted server");
      await holds(alice, "k", 4);
      // Bob was connected when the server died: nothing was kept for him.
      assert.equal(bob.recovered, false);
      await joined(bob, "k");
      await send(bob, "k", 1);
      await holds(alice, "k", 5);
      closeAll();
    } finally {
      closeAll();
      await srv.stop();
    }
  });

  it("a graceful restart (SIGTERM) leaves every socket recoverable", async () => {
    const port = await freePort();
    const db = tempDb();
    let srv = await startServer(port, db, NO_LIMITS);
    try {
      const alice = await joined(client(srv.url, "alice", { transports: ["websocket"] }), "g");
      const bob = await joined(client(srv.url, "bob"), "g");
      await send(bob, "g", 2);
      await holds(alice, "g", 2);
      const down = [next(alice, "disconnect"), next(bob, "disconnect")];
      // Listened for before the restart: a client retrying every 100-300 ms
      // can be back before startServer has seen /healthz answer.
      const back = [next(alice, "connect", 20000), next(bob, "connect", 20000)];
      await srv.stop();
      await Promise.all(down);
      srv = await startServer(port, db, NO_LIMITS);
      await Promise.all(back);
      assert.equal(alice.recovered, true, "alice");
      assert.equal(bob.recovered, true, "bob");
      await send(bob, "g", 1);
      await holds(alice, "g", 3);
      closeAll();
    } finally {
      closeAll();
      await srv.stop();
    }
  });
});

const clusterSkip = REDIS && PG ? false : CI ? false : "set SWITCHBOARD_TEST_REDIS (host:port) and SWITCHBOARD_TEST_POSTGRES_URL (scripts/services.sh does)";

describe("recovery on another node (PostgreSQL + Redis)", { skip: clusterSkip }, () => {
  const nodes = [];
  before(async () => {
    assert.ok(REDIS && PG, "CI=true, but SWITCHBOARD_TEST_REDIS or SWITCHBOARD_TEST_POSTGRES_URL is not set");
    const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
    const extra = [...NO_LIMITS, "--redis-url", redisUrl, "--redis-prefix", `recovery-${RUN}`];
    nodes.push(await startServer(undefined, PG, extra));
    nodes.push(await startServer(undefined, PG, extra));
  });
  after(async () => {
    closeAll();
    await Promise.all(nodes.map((n) => n.stop()));
  });

  for (const [tname, t] of Object.entries({ websocket: { transports: ["websocket"] }, polling: { transports: ["polling"] } })) {
    it(`a client that leaves node A comes back on node B recovered (${tname})`, async () => {
      const room = `x-${RUN}-${tname}`;
      const alice = await joined(client(nodes[0].url, "alice", t), room);
      const bob = await joined(client(nodes[1].url, "bob", t), room);
      await send(bob, room, 2);
      await holds(alice, room, 2);
      // The balancer sends her elsewhere next time.
      alice.io.uri = nodes[1].url;
      alice.io.opts.port = String(nodes[1].port);
      await drop(alice);
      const back = next(alice, "connect", 10000);
      await send(bob, room, 3);
      await back;
      assert.equal(alice.recovered, true);
      await holds(alice, room, 5);
      await send(bob, room, 1);
      await holds(alice, room, 6);
      closeAll();
    });
  }
});


describe("recovery when the store is gone (PostgreSQL)", { skip: PG ? false : CI ? false : "set SWITCHBOARD_TEST_POSTGRES_URL (scripts/services.sh does)" }, () => {
  it("a client whose session cannot be read gets a fresh, working session", async () => {
    assert.ok(PG, "CI=true, but SWITCHBOARD_TEST_POSTGRES_URL is not set");
    const db = freshPgDatabase(PG, "recovery_gone");
    const srv = await startServer(undefined, db.url, NO_LIMITS);
    try {
      const alice = await joined(client(srv.url, "alice"), "gone");
      alice.io._reconnection = false;
      await drop(alice);
      await sleep(300); // her session is written
      db.drop();
      alice.io._reconnection = true;
      alice.connect();
      await next(alice, "connect");
      assert.equal(alice.recovered, false);
      assert.equal(await metric(srv.url, 'switchboard_recoveries_total{outcome="store_unavailable"}'), 1);
      // Working: rooms and presence do not need the store.
      const a = await alice.timeout(5000).emitWithAck("room:join", { roomId: "gone" });
      assert.equal(a.success, true, JSON.stringify(a));
      closeAll();
    } finally {
      closeAll();
      await srv.stop();
      try {
        db.drop();
      } catch {}
    }
  });
});
