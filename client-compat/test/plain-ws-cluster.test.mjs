// Plain WebSocket clients (GET /ws, docs/protocol.md §19) on two nodes
// sharing PostgreSQL and Redis: a plain client on node A with a Socket.IO
// client on node B, and plain clients on both nodes, in the same rooms:
// messages, history, presence, private messages and backend emits cross
// the nodes.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { next } from "./server.mjs";
import { PG, REDIS, CI, twoNodes } from "./yjs-helpers.mjs";
import { API_KEY, ULID, sleep, until, plain, joinPlain, sio, joinSio, collect, nextWhere, api, closeClients, fromSio, fromPlain } from "./plain-helpers.mjs";

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

after(closeClients);

describe("plain websocket clients on two nodes (PostgreSQL + Redis)", { skip: PG && REDIS ? false : CI ? false : "set SWITCHBOARD_TEST_POSTGRES_URL and SWITCHBOARD_TEST_REDIS (scripts/services.sh does)" }, () => {
  it("a plain client on A and Socket.IO clients on B: presence, messages and history both ways", async () => {
    const nodes = await twoNodes("plain_ws_mixed", ["--api-key", API_KEY]);
    try {
      const [A, B] = nodes;
      const room = "across";
      const bob = await sio(B.url, "bob");
      await joinSio(bob, room);
      const alice = await plain(A.url, "alice");
      // Presence, plain → Socket.IO across nodes.
      const joined = nextWhere(bob, "room:user-joined", (e) => e.userId === "alice");
      const ack = await joinPlain(alice, room);
      assert.deepEqual(ack.members.map((m) => m.userId).sort(), ["alice", "bob"]);
      assert.deepEqual(await joined, { userId: "alice", username: "ALICE", roomId: room });
      alice.send({ type: "members", roomId: room });
      assert.deepEqual((await alice.nextOf("members")).members.map((m) => m.userId).sort(), ["alice", "bob"]);
      assert.deepEqual((await bob.timeout(5000).emitWithAck("room:members", room)).members.map((m) => m.userId).sort(), ["alice", "bob"]);
      // Presence, Socket.IO → plain across nodes.
      const carol = await sio(B.url, "carol");
      await joinSio(carol, room);
      const pj = await alice.nextOf("presence", (m) => m.userId === "carol");
      assert.equal(pj.event, "join");
      assert.equal(pj.roomId, room);

      // Messages both ways, interleaved.
      const atBob = collect(bob, "chat:message");
      const pa = [];
      const sa = [];
      for (let i = 0; i < 4; i++) {
        pa.push(alice.request({ type: "room_msg", roomId: room, content: `A plain ${i}` }));
        sa.push(bob.timeout(5000).emitWithAck("chat:send", { roomId: room, content: `B sio ${i}` }));
      }
      const plainAcks = await Promise.all(pa);
      const sioAcks = await Promise.all(sa);
      for (const a of [...plainAcks, ...sioAcks]) assert.equal(a.success, true, JSON.stringify(a));
      for (const a of plainAcks) assert.match(a.messageId, ULID);
      const roomMsgs = () => alice.msgs.filter((m) => m.type === "room_msg");
      assert.ok(await until(() => roomMsgs().length >= 8 && atBob.length >= 8), `alice ${roomMsgs().length}, bob ${atBob.length}`);
      await sleep(200);
      assert.equal(roomMsgs().length, 8);
      assert.equal(atBob.length, 8);
      // Each message once on each node, the same fields (compared by seq; the
      // order they arrive in is checked last).
      const bySeq = (list) => [...list].sort((x, y) => x.seq - y.seq);
      assert.deepEqual(bySeq(roomMsgs()).map((m) => m.seq), range(1, 8));
      assert.deepEqual(bySeq(roomMsgs()).map(fromPlain), bySeq(atBob).map(fromSio));
      for (const list of [roomMsgs().map(fromPlain), atBob.map(fromSio)]) {
        assert.deepEqual(list.filter((m) => m.from === "alice").map((m) => m.content), range(0, 3).map((i) => `A plain ${i}`));
        assert.deepEqual(list.filter((m) => m.from === "bob").map((m) => m.content), range(0, 3).map((i) => `B sio ${i}`));
      }
      // Across nodes the guarantee is each node's order (§6, §19): what was
      // sent through one node arrives everywhere in seq order; A's and B's
      // messages sent at the same moment may interleave differently.
      const fromNode = (list, sender) => list.filter((m) => (m.from ?? m.senderId) === sender).map((m) => m.seq);
      const orders = {
        "plain on A, A's": fromNode(roomMsgs(), "alice"),
        "plain on A, B's": fromNode(roomMsgs(), "bob"),
        "Socket.IO on B, A's": fromNode(atBob, "alice"),
        "Socket.IO on B, B's": fromNode(atBob, "bob"),
      };
      const sorted = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, [...v].sort((x, y) => x - y)]));
      for (const a of [...plainAcks, ...sioAcks]) assert.equal(roomMsgs().find((m) => m.id === a.messageId)?.seq, a.seq);
      // History, each from its own node.
      const h = await alice.request({ type: "history", roomId: room });
      const sh = await bob.timeout(5000).emitWithAck("chat:history", { roomId: room });
      assert.deepEqual(h.messages.map(fromPlain), sh.messages.map(fromSio));
      assert.deepEqual(h.messages.map(fromPlain), bySeq(roomMsgs()).map(fromPlain));

      // Leaves across nodes, both ways.
      const pl = alice.nextOf("presence", (m) => m.userId === "carol" && m.event === "leave");
      await carol.timeout(5000).emitWithAck("room:leave", room);
      assert.equal((await pl).roomId, room);
      const left = nextWhere(bob, "room:user-left", (e) => e.userId === "alice");
      alice.ws.close();
      assert.deepEqual(await left, { userId: "alice", roomId: room });
      assert.deepEqual((await bob.timeout(5000).emitWithAck("room:members", room)).members.map((m) => m.userId), ["bob"]);
      // Abruptly, too.
      const dave = await plain(A.url, "dave");
      const dj = nextWhere(bob, "room:user-joined", (e) => e.userId === "dave");
      await joinPlain(dave, room);
      assert.equal((await dj).userId, "dave");
      const dl = nextWhere(bob, "room:user-left", (e) => e.userId === "dave");
      dave.ws.terminate();
      assert.deepEqual(await dl, { userId: "dave", roomId: room });
      assert.deepEqual(orders, sorted(orders), "each node's messages arrive in seq order");
    } finally {
      closeClients();
      await nodes.stop();
    }
  });

  it("plain clients on A and on B: messages, seed-style broadcast, presence, private messages and backend emits cross", async () => {
    const nodes = await twoNodes("plain_ws_plain", ["--api-key", API_KEY]);
    try {
      const [A, B] = nodes;
      const room = "plain-across";
      const pa = await plain(A.url, "amy");
      const pb = await plain(B.url, "ben");
      await joinPlain(pa, room);
      await joinPlain(pb, room);
      const pj = await pa.nextOf("presence", (m) => m.userId === "ben");
      assert.equal(pj.event, "join");
      assert.equal(pj.roomId, room);
      pb.send({ type: "members", roomId: room });
      assert.deepEqual((await pb.nextOf("members")).members.map((m) => m.userId).sort(), ["amy", "ben"]);

      const acks = [];
      for (let i = 0; i < 3; i++) {
        acks.push(pa.request({ type: "room_msg", roomId: room, content: `amy ${i}` }));
        acks.push(pb.request({ type: "room_msg", roomId: room, content: `ben ${i}` }));
      }
      for (const a of await Promise.all(acks)) assert.equal(a.success, true, JSON.stringify(a));
      const got = (c) => c.msgs.filter((m) => m.type === "room_msg");
      assert.ok(await until(() => got(pa).length >= 6 && got(pb).length >= 6), `amy ${got(pa).length}, ben ${got(pb).length}`);
      await sleep(200);
      const bySeq = (list) => [...list].sort((x, y) => x.seq - y.seq);
      assert.deepEqual(bySeq(got(pa)).map((m) => m.seq), range(1, 6));
      assert.deepEqual(bySeq(got(pa)).map(fromPlain), bySeq(got(pb)).map(fromPlain));
      // Each node's order (see the first test): amy's through A, ben's through B.
      const fromNode = (list, sender) => list.filter((m) => m.from === sender).map((m) => m.seq);
      const orders = {
        "plain on A, amy's": fromNode(got(pa), "amy"),
        "plain on A, ben's": fromNode(got(pa), "ben"),
        "plain on B, amy's": fromNode(got(pb), "amy"),
        "plain on B, ben's": fromNode(got(pb), "ben"),
      };
      const sorted = (o) => Object.fromEntries(Object.entries(o).map(([k, v]) => [k, [...v].sort((x, y) => x - y)]));

      // Seed style across nodes.
      const sa = await plain(A.url, "sam");
      const sb = await plain(B.url, "sue");
      sa.send({ type: "join", room: "seed-across" });
      await sa.nextOf("joined");
      sb.send({ type: "join", room: "seed-across" });
      await sb.nextOf("joined");
      sb.send({ type: "broadcast", room: "seed-across", payload: "from B" });
      const m = await sa.nextOf("message");
      assert.equal(m.room, "seed-across");
      assert.equal(m.payload, "from B");
      assert.equal(m.from, "sue");
      assert.equal(m.seq, 1);

      // Private, A → B and B → A.
      const dm = await pa.request({ type: "private_msg", toUserId: "ben", content: "psst" });
      assert.equal(dm.success, true, JSON.stringify(dm));
      const atBen = await pb.nextOf("private_msg");
      assert.deepEqual([atBen.id, atBen.seq, atBen.from, atBen.to, atBen.content], [dm.messageId, dm.seq, "amy", "ben", "psst"]);
      pb.send({ type: "private_msg", toUserId: "amy", content: "back" });
      const atAmy = await pa.nextOf("private_msg");
      assert.deepEqual([atAmy.seq, atAmy.from, atAmy.to, atAmy.content], [dm.seq + 1, "ben", "amy", "back"]);

      // A backend emit on node B reaches amy on node A, to her and to the room.
      let r = await api(B.url, "/api/emit", { event: "ping:user", data: { n: 1 }, users: ["amy"] });
      assert.equal(r.status, 202);
      assert.deepEqual(await pa.nextOf("event"), { type: "event", event: "ping:user", data: { n: 1 } });
      r = await api(B.url, "/api/emit", { event: "ping:room", data: "r", rooms: [room] });
      assert.equal(r.status, 202);
      assert.deepEqual(await pa.nextOf("event"), { type: "event", event: "ping:room", data: "r" });
      assert.deepEqual(await pb.nextOf("event"), { type: "event", event: "ping:room", data: "r" });

      // Ben's connection dies: amy hears that he left.
      pb.ws._socket.destroy();
      const pl = await pa.nextOf("presence", (m) => m.userId === "ben" && m.event === "leave");
      assert.equal(pl.roomId, room);
      pa.send({ type: "members", roomId: room });
      assert.deepEqual((await pa.nextOf("members")).members.map((m) => m.userId), ["amy"]);
      assert.deepEqual(orders, sorted(orders), "each node's messages arrive in seq order");
    } finally {
      closeClients();
      await nodes.stop();
    }
  });
  it("a plain client that leaves node A and comes back on node B: presence follows it, and history after its last seq has what it missed", async () => {
    const nodes = await twoNodes("plain_ws_move");
    try {
      const [A, B] = nodes;
      const room = "moving";
      const bob = await sio(A.url, "bob");
      await joinSio(bob, room);
      const walt = await plain(A.url, "walt");
      await joinPlain(walt, room);
      const seen = await walt.request({ type: "room_msg", roomId: room, content: "before" });
      const left = nextWhere(bob, "room:user-left", (e) => e.userId === "walt");
      walt.ws.terminate();
      assert.deepEqual(await left, { userId: "walt", roomId: room });
      // What walt misses while away.
      const missed = [];
      for (let i = 0; i < 3; i++) missed.push(await bob.timeout(5000).emitWithAck("chat:send", { roomId: room, content: `while away ${i}` }));
      const joined = nextWhere(bob, "room:user-joined", (e) => e.userId === "walt");
      const back = await plain(B.url, "walt");
      await joinPlain(back, room);
      assert.equal((await joined).roomId, room);
      const h = await back.request({ type: "history", roomId: room, after: seen.seq });
      assert.deepEqual(h.messages.map((m) => [m.id, m.content]), missed.map((a, i) => [a.messageId, `while away ${i}`]));
      const members = await bob.timeout(5000).emitWithAck("room:members", room);
      assert.deepEqual(members.members.map((m) => [m.userId, m.connections]).sort(), [["bob", 1], ["walt", 1]]);
    } finally {
      closeClients();
      await nodes.stop();
    }
  });
});
