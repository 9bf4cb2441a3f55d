// The edges of a session with the real socket.io-client: what a chat app's
// logout (`socket.disconnect()`) leaves behind. Two members leave a room at
// the same moment, 30 rounds, over each transport, on one node and across two
// nodes through Redis: no ghost may stay in `GET /api/rooms/{id}/members` or
// `room:members`, and the others hear `room:user-left` for each of them.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { startServer, token, next } from "./server.mjs";

const API_KEY = "lifecycle-test-api-key-0123456789";
const ROUNDS = 30;
const REDIS = process.env.SWITCHBOARD_TEST_REDIS;
const CI = process.env.CI === "true";
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const tokens = new Map();
const tokenOf = (sub) => {
  if (!tokens.has(sub)) tokens.set(sub, token(sub));
  return tokens.get(sub);
};

const TRANSPORTS = {
  websocket: { transports: ["websocket"] },
  polling: { transports: ["polling"] },
};

async function connect(node, sub, transportOpts) {
  const s = io(node.url, { auth: { token: tokenOf(sub) }, reconnection: false, forceNew: true, ...transportOpts });
  await next(s, "connect");
  return s;
}

async function apiMembers(node, room) {
  const r = await fetch(`${node.url}/api/rooms/${room}/members`, { headers: { authorization: `Bearer ${API_KEY}` } });
  assert.equal(r.status, 200);
  return (await r.json()).members;
}

/** Waits up to 2 s for the room to be empty as `node` reports it; returns what it last saw. */
async function settledMembers(node, room) {
  let members;
  for (let i = 0; i < 40; i++) {
    members = await apiMembers(node, room);
    if (members.length === 1) return members; // the observer only
    await sleep(50);
  }
  return members;
}

/**
 * `ROUNDS` rounds: alice and bob (on `nodes[0]` and `nodes[1 % n]`) join a
 * room where the observer sits (on nodes[0]), then both call
 * `socket.disconnect()` in the same tick.
 */
async function rounds(nodes, transportOpts, tag) {
  const observer = await connect(nodes[0], "observer", transportOpts);
  const left = [];
  observer.on("room:user-left", (e) => left.push(e));
  const ghosts = [];
  try {
    for (let round = 0; round < ROUNDS; round++) {
      const room = `lc-${tag}-${process.pid}-${round}`;
      assert.equal((await observer.emitWithAck("room:join", room)).success, true);
      const alice = await connect(nodes[0], "alice", transportOpts);
      const bob = await connect(nodes[1 % nodes.length], "bob", transportOpts);
      assert.equal((await alice.emitWithAck("room:join", room)).success, true);
      const joined = await bob.emitWithAck("room:join", room);
      assert.deepEqual(
        joined.members.map((m) => m.userId),
        ["alice", "bob", "observer"],
      );
      alice.disconnect();
      bob.disconnect();
      for (const node of nodes) {
        const members = await settledMembers(node, room);
        if (members.length !== 1) ghosts.push({ round, node: node.url, members });
      }
      const seen = (await observer.emitWithAck("room:members", room)).members.map((m) => m.userId);
      if (seen.length !== 1) ghosts.push({ round, via: "room:members", seen });
      await observer.emitWithAck("room:leave", room);
    }
    await sleep(200);
  } finally {
    observer.close();
  }
  assert.deepEqual(ghosts, [], `ghost members after socket.disconnect(): ${JSON.stringify(ghosts.slice(0, 3))}`);
  const perUser = { alice: 0, bob: 0 };
  for (const e of left) perUser[e.userId]++;
  assert.deepEqual(perUser, { alice: ROUNDS, bob: ROUNDS }, "room:user-left once per member per round");
}

describe("presence after socket.disconnect() (logout), one node", () => {
  let server;
  before(async () => {
    server = await startServer(undefined, undefined, ["--api-key", API_KEY]);
  });
  after(async () => {
    await server.stop();
  });
  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    it(`two members disconnecting at once leave no ghost (${name}, ${ROUNDS} rounds)`, async () => {
      await rounds([server], opts, `one-${name}`);
    });
  }
});

const skip = REDIS ? false : CI ? false : "set SWITCHBOARD_TEST_REDIS (host:port) (scripts/services.sh does)";

describe("presence after socket.disconnect() (logout), two nodes", { skip }, () => {
  const nodes = [];
  before(async () => {
    assert.ok(REDIS, "CI=true, but SWITCHBOARD_TEST_REDIS is not set");
    const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
    const prefix = `lifecycle-${process.pid}-${Date.now()}`;
    const extra = ["--api-key", API_KEY, "--redis-url", redisUrl, "--redis-prefix", prefix];
    nodes.push(await startServer(undefined, undefined, extra));
    nodes.push(await startServer(undefined, undefined, extra));
  });
  after(async () => {
    for (const n of nodes) await n.stop();
  });
  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    it(`two members on two nodes disconnecting at once leave no ghost (${name}, ${ROUNDS} rounds)`, async () => {
      await rounds(nodes, opts, `two-${name}`);
    });
  }
});

// A client that pipelines more than its rate allows is disconnected, but
// first it gets the ack of every message that was stored, an answer to
// every other send, and `server:closing` (before: none of these arrived,
// only the end of the connection).
describe("a rate-limited client is told everything before the close", () => {
  let server;
  before(async () => {
    server = await startServer(undefined, undefined, ["--api-key", API_KEY]);
  });
  after(async () => {
    await server.stop();
  });
  for (const [name, opts] of Object.entries(TRANSPORTS)) {
    it(`400 pipelined chat:send (${name})`, async () => {
      const room = `flood-${name}-${process.pid}`;
      const s = await connect(server, `flooder-${name}`, opts);
      assert.equal((await s.emitWithAck("room:join", room)).success, true);
      const order = [];
      s.on("server:closing", (e) => order.push(["closing", e.reason]));
      const closed = new Promise((r) => s.on("disconnect", (reason) => (order.push(["disconnect", reason]), r())));
      const sends = [];
      for (let i = 0; i < 400; i++) {
        sends.push(
          s
            .timeout(10_000)
            .emitWithAck("chat:send", { roomId: room, content: `m${i}` })
            .then((a) => (order.push([a.success ? "ok" : a.code]), a))
            .catch((e) => (order.push(["lost"]), { lost: e.message })),
        );
      }
      const acks = await Promise.all(sends);
      await closed;
      const r = await fetch(`${server.url}/api/rooms/${room}/messages?limit=100`, {
        headers: { authorization: `Bearer ${API_KEY}` },
      });
      const stored = (await r.json()).messages.length;
      const count = (k) => order.filter(([e]) => e === k).length;
      const summary = { ok: count("ok"), rate_limited: count("rate_limited"), lost: count("lost"), stored };
      console.log(`flood over ${name}: ${JSON.stringify(summary)}, then ${JSON.stringify(order.slice(-2))}`);
      assert.equal(count("lost"), 0, `sends without an answer: ${JSON.stringify(acks.find((a) => a.lost))}`);
      assert.ok(stored > 0);
      assert.equal(count("ok"), stored, "a success ack for every stored message, and no more");
      assert.equal(count("ok") + count("rate_limited"), 400);
      const closing = order.findIndex(([e]) => e === "closing");
      const disconnect = order.findIndex(([e]) => e === "disconnect");
      assert.ok(closing >= 0, "server:closing arrived");
      assert.deepEqual(order[closing], ["closing", "rate_limited"]);
      assert.deepEqual(order[disconnect], ["disconnect", "io server disconnect"]);
      assert.ok(closing < disconnect, "server:closing before the disconnect");
      assert.ok(
        order.slice(disconnect + 1).every(([e]) => e !== "ok"),
        "every success ack came before the disconnect",
      );
      assert.equal(count("closing"), 1, "one server:closing");
    });
  }
});
