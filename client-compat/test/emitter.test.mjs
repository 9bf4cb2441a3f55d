// The real @socket.io/redis-emitter 5.x (with `redis` from npm) against two
// switchboard nodes sharing a Redis: every targeted socket gets each emit
// exactly once whichever node it is on, others get nothing, and a malformed
// publish leaves the nodes serving.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { createClient } from "redis";
import { Emitter } from "@socket.io/redis-emitter";
import { startServer, token, next } from "./server.mjs";

const REDIS = process.env.SWITCHBOARD_TEST_REDIS;
const CI = process.env.CI === "true";
const skip = REDIS ? false : CI ? false : "set SWITCHBOARD_TEST_REDIS (host:port) (scripts/services.sh does)";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
// Time for a publish to reach both nodes and every socket (stragglers and
// duplicates included).
const SETTLE_MS = 600;

describe("@socket.io/redis-emitter on two nodes", { skip }, () => {
  const nodes = [];
  const sockets = {};
  let redis;
  let emitter;
  let key;

  /** Connects `user` to `node` (namespace `ns`), records every event, joins `rooms`. */
  async function connect(name, user, node, rooms = [], ns = "") {
    const s = io(`${nodes[node].url}${ns}`, {
      auth: { token: token(user) },
      transports: ["websocket"],
      reconnection: false,
      forceNew: true,
    });
    s.got = [];
    s.onAny((event, ...args) => s.got.push([event, ...args]));
    await next(s, "connect");
    for (const room of rooms) assert.equal((await s.emitWithAck("room:join", room)).success, true);
    sockets[name] = s;
    return s;
  }

  /** Runs `op`, waits, and asserts who got `event` (exactly once, with `args`). */
  async function expect(event, args, receivers, op) {
    for (const s of Object.values(sockets)) s.got = s.got.filter(([e]) => e !== event);
    await op();
    await sleep(SETTLE_MS);
    for (const [name, s] of Object.entries(sockets)) {
      const got = s.got.filter(([e]) => e === event);
      if (receivers.includes(name)) assert.deepEqual(got, [[event, ...args]], `${name} should get ${event} exactly once`);
      else assert.deepEqual(got, [], `${name} should not get ${event}`);
    }
  }

  before(async () => {
    assert.ok(REDIS, "CI=true, but SWITCHBOARD_TEST_REDIS is not set");
    const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
    const unique = `${process.pid}-${Date.now()}`;
    key = `emitter-test-${unique}`;
    const extra = ["--redis-url", redisUrl, "--redis-prefix", `emitter-test-${unique}`, "--emitter-key", key];
    nodes.push(await startServer(undefined, undefined, extra));
    nodes.push(await startServer(undefined, undefined, extra));
    redis = createClient({ url: redisUrl });
    await redis.connect();
    emitter = new Emitter(redis, { key });
    // Node 0: alice (general), bob (random), carol (general, muted).
    await connect("alice0", "alice", 0, ["general"]);
    await connect("bob0", "bob", 0, ["random"]);
    await connect("carol0", "carol", 0, ["general", "muted"]);
    // Node 1: alice's second tab (no room), dave (general), erin (none).
    await connect("alice1", "alice", 1);
    await connect("dave1", "dave", 1, ["general"]);
    await connect("erin1", "erin", 1);
    // Tenant namespace /acme on both nodes.
    await connect("acme0", "alice", 0, ["general"], "/acme");
    await connect("acme1", "bob", 1, [], "/acme");
  });
  after(async () => {
    for (const s of Object.values(sockets)) s.close();
    await redis?.quit();
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it("emits to everyone in the default namespace", async () => {
    await expect("e-all", [{ a: 1 }], ["alice0", "bob0", "carol0", "alice1", "dave1", "erin1"], () => emitter.emit("e-all", { a: 1 }));
  });

  it("emits to one room (both nodes)", async () => {
    await expect("e-room", ["hello", 2], ["alice0", "carol0", "dave1"], () => emitter.to("general").emit("e-room", "hello", 2));
  });

  it("emits to several rooms except one", async () => {
    await expect("e-rooms", [[1, 2]], ["alice0", "bob0", "dave1"], () =>
      emitter.to(["general", "random"]).except("muted").emit("e-rooms", [1, 2]),
    );
  });

  it("emits to a user: every tab on every node", async () => {
    await expect("e-user", [{ unread: 3 }], ["alice0", "alice1"], () => emitter.to("user:alice").emit("e-user", { unread: 3 }));
  });

  it("emits to a tenant namespace", async () => {
    await expect("e-acme", ["t"], ["acme0", "acme1"], () => emitter.of("/acme").emit("e-acme", "t"));
    await expect("e-acme-room", [], ["acme0"], () => emitter.of("acme").to("general").emit("e-acme-room"));
  });

  it("emits volatile", async () => {
    await expect("e-vol", [7], ["bob0"], () => emitter.volatile.to("random").emit("e-vol", 7));
  });

  it("socketsJoin then a room emit reaches the joined sockets; socketsLeave undoes it", async () => {
    emitter.in("user:erin").socketsJoin("vip");
    emitter.in("general").except("user:carol").socketsJoin(["vip"]);
    await sleep(SETTLE_MS);
    await expect("e-vip", ["in"], ["erin1", "alice0", "dave1"], () => emitter.to("vip").emit("e-vip", "in"));
    emitter.in("user:dave").socketsLeave("vip");
    await sleep(SETTLE_MS);
    await expect("e-vip2", [], ["erin1", "alice0"], () => emitter.to("vip").emit("e-vip2"));
  });

  it("serverSideEmit and malformed publishes are dropped; the nodes keep serving", async () => {
    emitter.serverSideEmit("ping", 1);
    await redis.publish(`${key}#/#`, Buffer.from([0xc1, 0x00, 0xff]));
    await redis.publish(`${key}#/#`, "not msgpack");
    await redis.publish(`${key}-request#/#`, "{not json");
    await redis.publish(`${key}-request#/#`, JSON.stringify({ type: 99 }));
    await redis.publish(`${key}-request#/#`, JSON.stringify({ type: 2, opts: { rooms: ["bad room"] }, rooms: ["x"] }));
    await redis.publish(`${key}#/#`, Buffer.alloc(0));
    emitter.of("/nowhere").emit("e-nowhere");
    await expect("e-after", ["ok"], ["alice0", "bob0", "carol0", "alice1", "dave1", "erin1"], () => emitter.emit("e-after", "ok"));
    for (const n of nodes) assert.equal((await fetch(`${n.url}/healthz`)).status, 200);
    for (const s of Object.values(sockets)) assert.equal(s.connected, true);
    assert.ok(Object.values(sockets).every((s) => !s.got.some(([e]) => e === "e-nowhere" || e === "ping")));
  });

  it("to(socketId) reaches that socket on whichever node; except(socketId) leaves it out", async () => {
    // Node backends address sockets by id (every Socket.IO socket is in a
    // room named by its id); the id is what socket.io-client's socket.id says.
    await expect("e-sid", [{ only: "alice1" }], ["alice1"], () => emitter.to(sockets.alice1.id).emit("e-sid", { only: "alice1" }));
    await expect("e-sids", [], ["alice0", "dave1"], () => emitter.to([sockets.alice0.id, sockets.dave1.id]).emit("e-sids"));
    await expect("e-sid-mixed", [2], ["bob0", "erin1"], () => emitter.to(["random", sockets.erin1.id]).emit("e-sid-mixed", 2));
    await expect("e-sid-except", [], ["alice0", "dave1"], () => emitter.to("general").except(sockets.carol0.id).emit("e-sid-except"));
    await expect("e-sid-all-but", [], ["alice0", "bob0", "carol0", "dave1", "erin1"], () => emitter.except(sockets.alice1.id).emit("e-sid-all-but"));
    emitter.in(sockets.erin1.id).socketsJoin("by-sid");
    await sleep(SETTLE_MS);
    await expect("e-by-sid", [], ["erin1"], () => emitter.to("by-sid").emit("e-by-sid"));
  });

  it("disconnectSockets disconnects the targeted sockets only", async () => {
    const gone = next(sockets.dave1, "disconnect");
    emitter.in("user:dave").disconnectSockets(true);
    assert.equal(await gone, "io server disconnect");
    await sleep(SETTLE_MS);
    for (const [name, s] of Object.entries(sockets)) assert.equal(s.connected, name !== "dave1", name);
  });
});
