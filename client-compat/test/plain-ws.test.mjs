// Plain WebSocket clients at GET /ws (docs/protocol.md §19), with the `ws`
// package as a browser-style `new WebSocket(url)` client speaking JSON, next
// to the real socket.io-client 4.8 in the same rooms: messages, history,
// presence, private messages, typing, backend emits, authentication, pings,
// and what a hostile or broken client gets (oversized, malformed, flooding,
// not reading, not answering pings, an expiring token).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { startServer, token, next, none, signHs256, metric, tempDb, freePort } from "./server.mjs";
import {
  API_KEY,
  ULID,
  sleep,
  until,
  tokenOf,
  claims,
  plainClient,
  plain,
  joinPlain,
  sio,
  joinSio,
  collect,
  nextWhere,
  api,
  closeClients,
  closedWithin,
  fromSio,
  fromPlain,
} from "./plain-helpers.mjs";

const ROOM_MSG_FIELDS = ["roomId", "id", "seq", "from", "fromName", "content", "time"];
const PRIVATE_MSG_FIELDS = ["id", "seq", "from", "fromName", "to", "content", "time"];
const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);
const hasFields = (m, fields, what) => {
  for (const f of fields) assert.ok(f in m, `${what} lacks ${f}: ${JSON.stringify(m)}`);
};


after(closeClients);

describe("plain websocket clients beside Socket.IO (one server)", () => {
  let srv;
  before(async () => {
    srv = await startServer(undefined, undefined, ["--api-key", API_KEY, "--connect-timeout-ms", "1000", "--auth-expiry-warning-secs", "2"]);
  });
  after(async () => {
    closeClients();
    await srv.stop();
  });

  it("a plain client and a Socket.IO client in one room: the same messages, ids and seqs both ways, and the same history", async () => {
    const room = "mix";
    const alice = await plain(srv.url, "alice");
    const bob = await sio(srv.url, "bob");
    const joined = await joinPlain(alice, room);
    assert.deepEqual(joined.members.map((m) => m.userId), ["alice"]);
    await joinSio(bob, room);
    const atBob = collect(bob, "chat:message");
    // Interleaved, without waiting for the answers in between.
    const plainAcks = [];
    const sioAcks = [];
    for (let i = 0; i < 5; i++) {
      plainAcks.push(alice.request({ type: "room_msg", roomId: room, content: `plain ${i}` }));
      sioAcks.push(bob.timeout(5000).emitWithAck("chat:send", { roomId: room, content: `sio ${i}` }));
    }
    const pa = await Promise.all(plainAcks);
    const sa = await Promise.all(sioAcks);
    for (const a of pa) {
      assert.equal(a.type, "ack", JSON.stringify(a));
      assert.equal(a.success, true, JSON.stringify(a));
      assert.match(a.messageId, ULID);
      assert.equal(typeof a.seq, "number");
    }
    for (const a of sa) assert.equal(a.success, true, JSON.stringify(a));
    // One connection's messages are sequenced in the order it sent them.
    assert.deepEqual(pa.map((a) => a.seq), [...pa.map((a) => a.seq)].sort((x, y) => x - y));
    const roomMsgs = () => alice.msgs.filter((m) => m.type === "room_msg");
    assert.ok(await until(() => roomMsgs().length >= 10 && atBob.length >= 10), `alice has ${roomMsgs().length}, bob ${atBob.length}`);
    await sleep(200); // a duplicate would come now
    const atAlice = roomMsgs();
    assert.equal(atAlice.length, 10, alice.summary());
    assert.equal(atBob.length, 10);
    // Each message once on each side, the same fields on both (compared by
    // seq: the order they arrive in is the next test's).
    const bySeq = (list) => [...list].sort((x, y) => x.seq - y.seq);
    assert.deepEqual(bySeq(atAlice).map((m) => m.seq), range(1, 10));
    assert.deepEqual(bySeq(atAlice).map(fromPlain), bySeq(atBob).map(fromSio), "the same messages on both sides");
    // Each sender's own messages arrive in the order it sent them.
    for (const list of [atAlice.map(fromPlain), atBob.map(fromSio)]) {
      assert.deepEqual(list.filter((m) => m.from === "alice").map((m) => m.content), range(0, 4).map((i) => `plain ${i}`));
      assert.deepEqual(list.filter((m) => m.from === "bob").map((m) => m.content), range(0, 4).map((i) => `sio ${i}`));
    }
    for (const [i, a] of pa.entries()) {
      const m = atAlice.find((m) => m.id === a.messageId);
      assert.ok(m, `ack ${JSON.stringify(a)} names a delivered message`);
      assert.equal(m.seq, a.seq);
      assert.equal(m.content, `plain ${i}`);
    }
    for (const [i, a] of sa.entries()) {
      const m = atAlice.find((m) => m.id === a.messageId);
      assert.ok(m, `Socket.IO ack ${JSON.stringify(a)} names a message the plain client got`);
      assert.equal(m.seq, a.seq);
      assert.equal(m.content, `sio ${i}`);
    }
    // The room_msg shape.
    for (const m of atAlice) {
      hasFields(m, ROOM_MSG_FIELDS, "room_msg");
      assert.equal(m.roomId, room);
      assert.match(m.id, ULID);
      assert.equal(m.fromName, m.from.toUpperCase());
      assert.equal(typeof m.time, "number");
      assert.ok(Math.abs(m.time - Date.now()) < 60_000, `time ${m.time} is epoch ms`);
    }
    // History: the same list from both kinds of client, in seq order.
    const h = await alice.request({ type: "history", roomId: room });
    assert.equal(h.type, "ack", JSON.stringify(h));
    assert.equal(h.success, true);
    const sh = await bob.timeout(5000).emitWithAck("chat:history", { roomId: room });
    assert.equal(sh.success, true);
    assert.equal(h.messages.length, 10);
    assert.deepEqual(h.messages.map(fromPlain), sh.messages.map(fromSio));
    assert.deepEqual(h.messages.map(fromPlain), bySeq(atAlice).map(fromPlain));
    for (const m of h.messages) {
      hasFields(m, ROOM_MSG_FIELDS, "history entry");
      assert.ok(!("type" in m), `a history entry has no type: ${JSON.stringify(m)}`);
    }
    // Without an id: a `history` answer, no ack; paging as §7.
    const before = alice.mark();
    alice.send({ type: "history", roomId: room, after: 5, limit: 3 });
    const page = await alice.nextOf("history");
    assert.deepEqual(page.messages.map((m) => m.seq), [6, 7, 8]);
    const older = (await alice.request({ type: "history", roomId: room, before: 3 })).messages;
    assert.deepEqual(older.map((m) => m.seq), [1, 2]);
    await alice.none("ack", (m) => m.id === undefined, 100, before);
    // A request with an id is answered by its ack alone.
    assert.equal(alice.msgs.filter((m) => m.type === "joined").length, 0, "join_room with an id: no `joined` besides the ack");
    assert.equal(alice.msgs.filter((m) => m.type === "history").length, 1, "history with an id: no `history` besides the ack");
    // §19: the answer without an id is { type: "history", roomId | withUserId, messages }.
    assert.equal(page.roomId, room, `the history answer names its room: ${JSON.stringify({ ...page, messages: "…" })}`);
  });

  it("a plain client and a Socket.IO client see the room's messages in the same order, the room's (seq) order", async () => {
    // Two senders (one plain, one Socket.IO) interleaved, a plain and a
    // Socket.IO listener; ten rounds of ten messages.
    const p = await plain(srv.url, "order-p");
    const s = await sio(srv.url, "order-s");
    const pl = await plain(srv.url, "order-pl");
    const sl = await sio(srv.url, "order-sl");
    const seen = [];
    for (let r = 0; r < 10; r++) {
      const room = `order-${r}`;
      for (const c of [p, pl]) await joinPlain(c, room);
      for (const c of [s, sl]) await joinSio(c, room);
      const atS = collect(s, "chat:message");
      const atSl = collect(sl, "chat:message");
      const acks = [];
      for (let i = 0; i < 5; i++) {
        acks.push(p.request({ type: "room_msg", roomId: room, content: `p${i}` }));
        acks.push(s.timeout(5000).emitWithAck("chat:send", { roomId: room, content: `s${i}` }));
      }
      for (const a of await Promise.all(acks)) assert.equal(a.success, true, JSON.stringify(a));
      const inRoom = (c) => c.msgs.filter((m) => m.type === "room_msg" && m.roomId === room);
      assert.ok(await until(() => inRoom(p).length === 10 && inRoom(pl).length === 10 && atS.length === 10 && atSl.length === 10));
      seen.push({
        "plain sender": inRoom(p).map((m) => m.seq),
        "plain listener": inRoom(pl).map((m) => m.seq),
        "Socket.IO sender": atS.map((m) => m.seq),
        "Socket.IO listener": atSl.map((m) => m.seq),
      });
      s.off("chat:message");
      sl.off("chat:message");
    }
    const differ = seen.filter((r) => new Set(Object.values(r).map(String)).size > 1);
    const unordered = seen.filter((r) => Object.values(r).some((l) => l.join() !== range(1, 10).join()));
    assert.equal(differ.length, 0, `${differ.length} of ${seen.length} rounds where the clients saw different orders: ${JSON.stringify(differ)}`);
    assert.equal(unordered.length, 0, `${unordered.length} of ${seen.length} rounds delivered out of seq order: ${JSON.stringify(unordered)}`);
  });

  it("seed style: join + broadcast delivers { type: 'message', room, payload }; broadcast without a room is forbidden_room", async () => {
    const room = "lobby";
    const s1 = await plain(srv.url, "seed1");
    const s2 = await plain(srv.url, "seed2");
    const sub = await plain(srv.url, "seed3");
    const bob = await sio(srv.url, "bob");
    s1.send({ type: "join", room });
    const j = await s1.nextOf("joined");
    assert.equal(j.roomId, room);
    assert.deepEqual(j.members.map((m) => m.userId), ["seed1"]);
    s2.send({ type: "join", room });
    assert.deepEqual((await s2.nextOf("joined")).members.map((m) => m.userId), ["seed1", "seed2"]);
    sub.send({ type: "subscribe", channel: room });
    assert.equal((await sub.nextOf("joined")).roomId, room);
    await joinSio(bob, room);
    const atBob = collect(bob, "chat:message");

    // A non-string payload is stored and delivered as its JSON text.
    s1.send({ type: "broadcast", room, payload: { x: 1 } });
    for (const c of [s1, s2]) {
      const m = await c.nextOf("message");
      hasFields(m, ["room", "payload", "id", "seq", "from", "fromName", "time"], "message");
      assert.equal(m.room, room);
      assert.equal(m.payload, '{"x":1}');
      assert.equal(m.from, "seed1");
      assert.equal(m.fromName, "SEED1");
      assert.equal(m.seq, 1);
      assert.match(m.id, ULID);
      assert.equal(typeof m.time, "number");
    }
    const viaSub = await sub.nextOf("room_msg");
    assert.equal(viaSub.roomId, room, "subscribe gives the room_msg shape");
    assert.equal(viaSub.content, '{"x":1}');
    assert.equal(viaSub.seq, 1);
    assert.ok(await until(() => atBob.length === 1));
    assert.equal(atBob[0].content, '{"x":1}');
    assert.equal(atBob[0].id, viaSub.id);

    // The other content and room fields.
    s2.send({ type: "broadcast", room, payload: "plain text" });
    s2.send({ type: "message", room, text: "as text" });
    s2.send({ type: "chat", channel: room, message: "as message" });
    const got = [];
    for (let i = 0; i < 3; i++) got.push(await s1.nextOf("message"));
    sub.send({ type: "room_msg", roomId: room, content: "as content" });
    got.push(await s1.nextOf("message"));
    assert.deepEqual(got.map((m) => [m.seq, m.from, m.payload]), [
      [2, "seed2", "plain text"],
      [3, "seed2", "as text"],
      [4, "seed2", "as message"],
      [5, "seed3", "as content"],
    ]);
    assert.ok(await until(() => atBob.length === 5));
    assert.deepEqual(atBob.map((m) => m.content), ['{"x":1}', "plain text", "as text", "as message", "as content"]);
    // No ack for requests without an id.
    assert.equal(s1.msgs.filter((m) => m.type === "ack").length, 0, s1.summary());
    assert.equal(s2.msgs.filter((m) => m.type === "ack").length, 0, s2.summary());

    // No "everyone online": a broadcast without a room is refused.
    const from = s1.mark();
    s1.send({ type: "broadcast", payload: "to everyone" });
    const e = await s1.nextOf("error");
    assert.equal(e.code, "forbidden_room", JSON.stringify(e));
    assert.equal(e.request, "broadcast");
    assert.equal(typeof e.message, "string");
    assert.ok(!("id" in e), JSON.stringify(e));
    const withId = await s1.request({ type: "broadcast", payload: "to everyone" });
    assert.equal(withId.type, "error");
    assert.equal(withId.code, "forbidden_room");
    await sleep(200);
    assert.equal(s2.msgs.filter((m) => m.type === "message" && m.payload === "to everyone").length, 0);
    assert.equal(atBob.length, 5, "nothing reached the room");
    await s1.none("message", () => true, 100, from);
    const h = await s1.request({ type: "history", roomId: room });
    assert.equal(h.messages.length, 5);
    // unsubscribe (channel): `left`, and the others hear it.
    sub.send({ type: "unsubscribe", channel: room });
    assert.equal((await sub.nextOf("left")).roomId, room);
    const pl = await s1.nextOf("presence", (m) => m.userId === "seed3" && m.event === "leave");
    assert.deepEqual([pl.event, pl.roomId], ["leave", room]);
  });

  it("presence: both kinds of member are listed and announced, and a plain client that closes or dies is removed", async () => {
    const room = "pres";
    const bob = await sio(srv.url, "bob");
    await joinSio(bob, room);
    const alice = await plain(srv.url, "alice");
    const joinedAtBob = next(bob, "room:user-joined");
    const ack = await joinPlain(alice, room);
    assert.deepEqual(ack.members.map((m) => m.userId).sort(), ["alice", "bob"]);
    assert.deepEqual(await joinedAtBob, { userId: "alice", username: "ALICE", roomId: room });

    alice.send({ type: "members", roomId: room });
    const members = await alice.nextOf("members");
    assert.equal(members.roomId, room);
    assert.deepEqual(
      [...members.members].sort((a, b) => a.userId.localeCompare(b.userId)),
      [
        { userId: "alice", username: "ALICE", connections: 1 },
        { userId: "bob", username: "BOB", connections: 1 },
      ],
    );
    const sioMembers = await bob.timeout(5000).emitWithAck("room:members", room);
    assert.deepEqual(sioMembers.members.map((m) => m.userId).sort(), ["alice", "bob"]);
    assert.deepEqual(sioMembers.members.find((m) => m.userId === "alice"), { userId: "alice", username: "ALICE", connections: 1 });

    // Socket.IO → plain.
    const carol = await sio(srv.url, "carol");
    await joinSio(carol, room);
    const pj = await alice.nextOf("presence", (m) => m.userId === "carol");
    assert.equal(pj.event, "join");
    assert.equal(pj.roomId, room);
    assert.equal(pj.username, "CAROL");

    // A second plain tab of alice: one member with two connections, no new announcement.
    const alice2 = await plain(srv.url, "alice");
    const noJoin = none(bob, "room:user-joined", 400);
    await joinPlain(alice2, room);
    await noJoin;
    const two = await bob.timeout(5000).emitWithAck("room:members", room);
    assert.equal(two.members.find((m) => m.userId === "alice").connections, 2);
    const noLeave = none(bob, "room:user-left", 400);
    alice2.ws.close();
    await alice2.closed;
    await noLeave;

    const pl = alice.nextOf("presence", (m) => m.userId === "carol" && m.event === "leave");
    await carol.timeout(5000).emitWithAck("room:leave", room);
    assert.equal((await pl).roomId, room);

    // A plain client that closes.
    let left = nextWhere(bob, "room:user-left", (e) => e.userId === "alice");
    alice.ws.close(1000, "bye");
    assert.deepEqual(await left, { userId: "alice", roomId: room });
    assert.deepEqual((await bob.timeout(5000).emitWithAck("room:members", room)).members.map((m) => m.userId), ["bob"]);

    // One that is killed (no close frame), and one whose TCP connection is destroyed.
    for (const [sub, kill] of [
      ["dave", (c) => c.ws.terminate()],
      ["erin", (c) => c.ws._socket.destroy()],
    ]) {
      const c = await plain(srv.url, sub);
      const j = nextWhere(bob, "room:user-joined", (e) => e.userId === sub);
      await joinPlain(c, room);
      assert.equal((await j).userId, sub);
      left = nextWhere(bob, "room:user-left", (e) => e.userId === sub);
      kill(c);
      assert.deepEqual(await left, { userId: sub, roomId: room });
      assert.deepEqual((await bob.timeout(5000).emitWithAck("room:members", room)).members.map((m) => m.userId), ["bob"], `${sub} is gone`);
    }

    // leave (no id): `left`, and the others hear it.
    const frank = await plain(srv.url, "frank");
    frank.send({ type: "join", room });
    await frank.nextOf("joined");
    left = nextWhere(bob, "room:user-left", (e) => e.userId === "frank");
    frank.send({ type: "leave", room });
    assert.equal((await frank.nextOf("left")).roomId, room);
    assert.deepEqual(await left, { userId: "frank", roomId: room });
    frank.send({ type: "members", roomId: room });
    assert.deepEqual((await frank.nextOf("members")).members.map((m) => m.userId), ["bob"]);
    // Plain → plain presence, and a plain leave seen by another plain client.
    const gina = await plain(srv.url, "gina");
    await joinPlain(gina, room);
    await joinPlain(frank, room);
    assert.equal((await gina.nextOf("presence", (m) => m.userId === "frank")).event, "join");
    const fl = await frank.request({ type: "leave_room", roomId: room });
    assert.equal(fl.type, "ack", JSON.stringify(fl));
    assert.equal(fl.success, true);
    assert.equal((await gina.nextOf("presence", (m) => m.userId === "frank" && m.event === "leave")).roomId, room);
    // A leave of a room it is not in.
    const notIn = await frank.request({ type: "leave_room", roomId: room });
    assert.equal(notIn.type, "error");
    assert.equal(notIn.code, "not_in_room");
  });

  it("clientMsgId: a retry from a plain client or the user's Socket.IO client returns the first message, stores and sends nothing", async () => {
    const room = "retries";
    const alice = await plain(srv.url, "alice");
    const aliceSio = await sio(srv.url, "alice");
    const bob = await sio(srv.url, "bob");
    await joinPlain(alice, room);
    await joinSio(aliceSio, room);
    await joinSio(bob, room);
    const atBob = collect(bob, "chat:message");
    const first = await alice.request({ type: "room_msg", roomId: room, content: "once", clientMsgId: "c-1" });
    assert.equal(first.success, true, JSON.stringify(first));
    const again = await alice.request({ type: "room_msg", roomId: room, content: "once", clientMsgId: "c-1" });
    assert.deepEqual([again.type, again.success, again.messageId, again.seq], ["ack", true, first.messageId, first.seq]);
    const viaSio = await aliceSio.timeout(5000).emitWithAck("chat:send", { roomId: room, content: "once", clientMsgId: "c-1" });
    assert.deepEqual([viaSio.messageId, viaSio.seq], [first.messageId, first.seq]);
    const bad = await alice.request({ type: "room_msg", roomId: room, content: "x", clientMsgId: "c".repeat(129) });
    assert.equal(bad.code, "invalid_payload", JSON.stringify(bad));
    await sleep(300);
    assert.equal(atBob.length, 1, JSON.stringify(atBob));
    assert.equal(alice.msgs.filter((m) => m.type === "room_msg").length, 1);
    assert.equal((await alice.request({ type: "history", roomId: room })).messages.length, 1);
  });

  it("the token's rooms claim: joins, members and history of other rooms are forbidden_room; a narrower refresh leaves the room first", async () => {
    const narrow = token("rita", ["--room", "team-*", "--room", "lobby-r"]);
    const rita = plainClient(srv.url, { token: narrow });
    await rita.nextOf("connected");
    const watcher = await sio(srv.url, "watcher");
    await joinSio(watcher, "lobby-r");
    await joinPlain(rita, "team-a");
    await joinPlain(rita, "lobby-r");
    for (const msg of [
      { type: "join_room", roomId: "secret" },
      { type: "members", roomId: "secret" },
      { type: "history", roomId: "secret" },
    ]) {
      const e = await rita.request(msg);
      assert.deepEqual([e.type, e.code], ["error", "forbidden_room"], JSON.stringify([msg, e]));
    }
    const left = next(watcher, "room:user-left");
    const wider = token("rita", ["--room", "team-*"]);
    const from = rita.mark();
    const a = await rita.request({ type: "auth", token: wider });
    assert.equal(a.type, "ack", JSON.stringify(a));
    assert.equal(a.success, true);
    assert.equal(a.expiresAt, claims(wider).exp * 1000);
    const after = rita.msgs.slice(from);
    const roomLeft = after.findIndex((m) => m.type === "system" && m.event === "room_left");
    assert.ok(roomLeft >= 0, `system room_left: ${JSON.stringify(after)}`);
    assert.deepEqual(after[roomLeft], { type: "system", event: "room_left", roomId: "lobby-r", reason: "token" });
    assert.ok(roomLeft < after.indexOf(a), "before the refresh's answer");
    assert.deepEqual(await left, { userId: "rita", roomId: "lobby-r" });
    const e = await rita.request({ type: "room_msg", roomId: "lobby-r", content: "x" });
    assert.equal(e.code, "not_in_room", JSON.stringify(e));
    assert.equal((await rita.request({ type: "room_msg", roomId: "team-a", content: "still in" })).success, true);
  });

  it("typing both ways", async () => {
    const room = "typing";
    const alice = await plain(srv.url, "alice");
    const bob = await sio(srv.url, "bob");
    await joinSio(bob, room);
    await joinPlain(alice, room);
    const t = next(bob, "typing:user");
    alice.send({ type: "typing", roomId: room, typing: true });
    assert.deepEqual(await t, { userId: "alice", username: "ALICE", roomId: room });
    const s = next(bob, "typing:stopped");
    alice.send({ type: "typing", roomId: room, typing: false });
    assert.deepEqual(await s, { userId: "alice", roomId: room });
    await bob.timeout(5000).emitWithAck("typing:start", room);
    const pt = await alice.nextOf("typing");
    assert.equal(pt.roomId, room);
    assert.equal(pt.userId, "bob");
    assert.equal(pt.typing, true);
    await bob.timeout(5000).emitWithAck("typing:stop", room);
    const ps = await alice.nextOf("typing");
    assert.equal(ps.userId, "bob");
    assert.equal(ps.typing, false);
    const e = await alice.request({ type: "typing", roomId: "not-joined", typing: true });
    assert.equal(e.type, "error");
    assert.equal(e.code, "not_in_room");
  });

  it("private messages both ways, to the recipient and the sender's other connections, and their history", async () => {
    const a = await plain(srv.url, "pm-a");
    const a2 = await plain(srv.url, "pm-a");
    const b = await sio(srv.url, "pm-b");
    const atB = collect(b, "private:message");
    const from = a.mark();
    const ack = await a.request({ type: "private_msg", toUserId: "pm-b", content: "hi b" });
    assert.equal(ack.type, "ack", JSON.stringify(ack));
    assert.equal(ack.success, true);
    assert.match(ack.messageId, ULID);
    assert.equal(ack.seq, 1);
    assert.ok(await until(() => atB.length === 1));
    assert.equal(atB[0].id, ack.messageId);
    assert.equal(atB[0].senderId, "pm-a");
    assert.equal(atB[0].toUserId, "pm-b");
    assert.equal(atB[0].content, "hi b");
    assert.equal(atB[0].seq, 1);
    const copy = await a2.nextOf("private_msg");
    hasFields(copy, PRIVATE_MSG_FIELDS, "private_msg");
    assert.deepEqual(
      { id: copy.id, seq: copy.seq, from: copy.from, fromName: copy.fromName, to: copy.to, content: copy.content, time: copy.time },
      { id: ack.messageId, seq: 1, from: "pm-a", fromName: "PM-A", to: "pm-b", content: "hi b", time: atB[0].timestamp },
    );
    await a.none("private_msg", () => true, 300, from); // not to the sending connection

    // Socket.IO → plain: every connection of the recipient.
    const back = await b.timeout(5000).emitWithAck("private:send", { toUserId: "pm-a", content: "hi a" });
    assert.equal(back.success, true);
    for (const c of [a, a2]) {
      const m = await c.nextOf("private_msg", (m) => m.from === "pm-b");
      hasFields(m, PRIVATE_MSG_FIELDS, "private_msg");
      assert.equal(m.id, back.messageId);
      assert.equal(m.seq, 2);
      assert.equal(m.fromName, "PM-B");
      assert.equal(m.to, "pm-a");
      assert.equal(m.content, "hi a");
    }

    // The other spellings: `to`, and a `message` with a `receiver` and no room.
    a.send({ type: "private_msg", to: "pm-b", content: "via to" });
    a.send({ type: "message", receiver: "pm-b", content: "via receiver" });
    a.send({ type: "private_msg", toUser: "pm-b", content: "via toUser" });
    a.send({ type: "message", toUserId: "pm-b", content: "message toUserId" });
    assert.ok(await until(() => atB.length === 5), `pm-b got ${JSON.stringify(atB.map((m) => m.content))}`);
    assert.deepEqual(atB.map((m) => [m.seq, m.content]), [
      [1, "hi b"],
      [3, "via to"],
      [4, "via receiver"],
      [5, "via toUser"],
      [6, "message toUserId"],
    ]);

    // The conversation, from both sides.
    const h = await a.request({ type: "history", withUserId: "pm-b" });
    assert.equal(h.type, "ack", JSON.stringify(h));
    assert.deepEqual(h.messages.map((m) => [m.seq, m.from, m.to, m.content]), [
      [1, "pm-a", "pm-b", "hi b"],
      [2, "pm-b", "pm-a", "hi a"],
      [3, "pm-a", "pm-b", "via to"],
      [4, "pm-a", "pm-b", "via receiver"],
      [5, "pm-a", "pm-b", "via toUser"],
      [6, "pm-a", "pm-b", "message toUserId"],
    ]);
    for (const m of h.messages) {
      hasFields(m, PRIVATE_MSG_FIELDS, "conversation entry");
      assert.ok(!("type" in m), JSON.stringify(m));
    }
    const sh = await b.timeout(5000).emitWithAck("chat:history", { withUserId: "pm-a" });
    assert.deepEqual(sh.messages.map((m) => m.id), h.messages.map((m) => m.id));
    a.send({ type: "history", withUserId: "pm-b", after: 3 });
    const page = await a.nextOf("history");
    assert.deepEqual(page.messages.map((m) => m.seq), [4, 5, 6]);
    // §19: the answer without an id is { type: "history", roomId | withUserId, messages }.
    assert.equal(page.withUserId, "pm-b", `the history answer names the conversation: ${JSON.stringify({ ...page, messages: "…" })}`);
  });

  it("authentication: ?token=, a Bearer header, a first auth message; refusals close with 4001 and the reason", async () => {
    // Accepted three ways; `connected` comes first.
    const q = await plain(srv.url, "alice");
    assert.deepEqual(
      { userId: q.msgs[0].userId, name: q.msgs[0].name, namespace: q.msgs[0].namespace },
      { userId: "alice", name: "ALICE", namespace: "/" },
    );
    const h = plainClient(srv.url, {}, { headers: { authorization: `Bearer ${tokenOf("hank")}` } });
    assert.equal((await h.nextOf("connected")).userId, "hank");
    const m = plainClient(srv.url);
    await m.opened;
    m.send({ type: "auth", token: tokenOf("mona") });
    const hello = await m.nextOf("connected");
    assert.equal(m.msgs[0].type, "connected");
    assert.deepEqual({ userId: hello.userId, name: hello.name, namespace: hello.namespace }, { userId: "mona", name: "MONA", namespace: "/" });
    m.send({ type: "ping", ts: 1 });
    await m.nextOf("pong", (p) => p.ts === 1);

    // Refusals.
    const now = Math.floor(Date.now() / 1000);
    const expired = signHs256({ sub: "x", exp: now - 3600 });
    const badSig = signHs256({ sub: "x", exp: now + 600 }, "another-secret-another-secret-another!");
    const refusals = [
      ["?token=not.a.jwt", { token: "not.a.jwt" }, null, "Unauthorized: malformed token"],
      ["?token= bad signature", { token: badSig }, null, "Unauthorized: bad signature"],
      ["?token= expired", { token: expired }, null, "Unauthorized: token expired"],
      ["auth message without a token", {}, { type: "auth" }, "Unauthorized: missing token"],
      ["auth message, bad signature", {}, { type: "auth", token: badSig }, "Unauthorized: bad signature"],
      ["auth message, expired", {}, { type: "auth", token: expired }, "Unauthorized: token expired"],
      ["another message first", {}, { type: "join_room", roomId: "general" }, "Unauthorized: expected an auth message first"],
    ];
    for (const [what, query, first, reason] of refusals) {
      const c = plainClient(srv.url, query);
      if (first) {
        await c.opened;
        c.send(first);
      }
      const closed = await closedWithin(c, 5000);
      assert.deepEqual(closed, { code: 4001, reason }, `${what}: ${c.error?.message ?? ""}`);
      assert.equal(c.msgs.filter((m) => m.type === "connected").length, 0, what);
    }
    // Nothing at all: closed after --connect-timeout-ms (1000).
    const silent = plainClient(srv.url);
    await silent.opened;
    const t0 = Date.now();
    const closed = await closedWithin(silent, 5000);
    const took = Date.now() - t0;
    assert.deepEqual(closed, { code: 4001, reason: "Unauthorized: no auth message within 1000 ms" });
    assert.ok(took >= 800 && took < 3000, `closed after ${took} ms`);
  });

  it("namespaces: ?namespace=/acme is its own world; an unknown one closes 4004, a token for another tenant 4001", async () => {
    const room = "ns-room";
    const acme = await plain(srv.url, "alice", { namespace: "/acme" });
    assert.equal(acme.msgs[0].namespace, "/acme");
    const root = await plain(srv.url, "alice");
    await joinPlain(acme, room);
    await joinPlain(root, room);
    const from = acme.mark();
    assert.equal((await root.request({ type: "room_msg", roomId: room, content: "in /" })).success, true);
    await root.nextOf("room_msg");
    await acme.none("room_msg", () => true, 300, from);
    const sioAcme = await sio(`${srv.url}/acme`, "bob");
    await joinSio(sioAcme, room);
    const got = next(sioAcme, "chat:message");
    assert.equal((await acme.request({ type: "room_msg", roomId: room, content: "in /acme" })).seq, 1);
    assert.equal((await got).content, "in /acme");

    const nope = plainClient(srv.url, { token: tokenOf("alice"), namespace: "/nope" });
    assert.deepEqual(await closedWithin(nope, 5000), { code: 4004, reason: "Invalid namespace" });
    const other = plainClient(srv.url, { token: token("tenant-user", ["--tenant", "globex"]), namespace: "/acme" });
    assert.deepEqual(await closedWithin(other, 5000), { code: 4001, reason: "Unauthorized: wrong tenant" });
    // Names a client may not ask for are refused before any socket exists.
    for (const namespace of ["/admin", "/yjs|notes", "/a,b", `/${"n".repeat(200)}`, "acme"]) {
      const c = plainClient(srv.url, { token: tokenOf("alice"), namespace });
      assert.deepEqual(await closedWithin(c, 5000), { code: 4004, reason: "Invalid namespace" }, namespace.slice(0, 20));
    }
  });

  it("a server SIGKILL: plain clients see the connection drop; after a restart on the same database every acked message is in history", async () => {
    const db = tempDb();
    const port = await freePort();
    const first = await startServer(port, db);
    const c = await plain(first.url, "phoenix");
    await joinPlain(c, "rise");
    const acks = [];
    for (let i = 0; i < 5; i++) acks.push(await c.request({ type: "room_msg", roomId: "rise", content: `m${i}` }));
    assert.ok(acks.every((a) => a.success), JSON.stringify(acks));
    first.child.kill("SIGKILL");
    assert.equal((await closedWithin(c, 5000)).code, 1006);
    const again = await startServer(port, db);
    try {
      const back = await plain(again.url, "phoenix");
      await joinPlain(back, "rise");
      const h = await back.request({ type: "history", roomId: "rise", after: 0 });
      assert.deepEqual(h.messages.map((m) => [m.id, m.seq]), acks.map((a) => [a.messageId, a.seq]));
      const next = await back.request({ type: "room_msg", roomId: "rise", content: "after" });
      assert.equal(next.seq, 6);
    } finally {
      await again.stop();
    }
  });

  it("POST /api/emit and friends reach plain clients as { type: 'event', event, data }", async () => {
    const room = "orders";
    const alice = await plain(srv.url, "alice");
    const bob = await plain(srv.url, "bob");
    const carol = await sio(srv.url, "carol");
    await joinPlain(bob, room);
    await joinSio(carol, room);
    const fromA = alice.mark();
    const fromB = bob.mark();

    let r = await api(srv.url, "/api/emit", { event: "order:update", data: { id: 7 }, users: ["alice"] });
    assert.equal(r.status, 202, JSON.stringify(r.body));
    assert.deepEqual(await alice.nextOf("event"), { type: "event", event: "order:update", data: { id: 7 } });

    const atCarol = next(carol, "news");
    r = await api(srv.url, "/api/emit", { event: "news", data: ["a", 1], rooms: [room] });
    assert.equal(r.status, 202);
    assert.deepEqual(await bob.nextOf("event"), { type: "event", event: "news", data: ["a", 1] });
    assert.deepEqual(await atCarol, ["a", 1]);

    r = await api(srv.url, "/api/users/alice/emit", { event: "confirm", data: { x: 1 } });
    assert.equal(r.status, 202);
    assert.deepEqual(await alice.nextOf("event"), { type: "event", event: "confirm", data: { x: 1 } });
    await alice.none("event", (m) => m.event === "news", 200, fromA);
    await bob.none("event", (m) => m.event !== "news", 1, fromB);

    // A message posted by the backend is a room message like any other.
    r = await api(srv.url, `/api/rooms/${room}/messages`, { content: "from the backend", senderId: "system", senderName: "System" });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    const m = await bob.nextOf("room_msg");
    assert.deepEqual(fromPlain(m), { roomId: room, id: r.body.id, seq: r.body.seq, from: "system", fromName: "System", content: "from the backend", time: r.body.timestamp });

    // A backend's disconnect.
    r = await api(srv.url, "/api/users/bob/disconnect", {});
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(await closedWithin(bob, 5000), { code: 1000, reason: "disconnected by the server" });
  });

  it("a backend's emit with ackTimeoutMs: the event carries an ackId, and event_ack's data is the backend's answer", async () => {
    const c = await plain(srv.url, "acker");
    const pending = api(srv.url, "/api/users/acker/emit", { event: "confirm", data: { order: 7 }, ackTimeoutMs: 5000 });
    const ev = await c.nextOf("event", (m) => m.event === "confirm");
    assert.deepEqual(ev.data, { order: 7 });
    assert.ok(ev.ackId !== undefined && ev.ackId !== null, JSON.stringify(ev));
    c.send({ type: "event_ack", ackId: ev.ackId, data: { ok: true } });
    const r = await pending;
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body, { acks: [{ ok: true }] });
    // The same ackId again, or one never sent: invalid_payload.
    for (const ackId of [ev.ackId, typeof ev.ackId === "number" ? 987654321 : "no-such-ack"]) {
      const e = await c.request({ type: "event_ack", ackId, data: 1 });
      assert.deepEqual([e.type, e.code], ["error", "invalid_payload"], JSON.stringify(e));
    }
    // Without ackTimeoutMs, no ackId; without an answer, the backend's 504.
    assert.equal((await api(srv.url, "/api/users/acker/emit", { event: "fyi", data: 1 })).status, 202);
    const fyi = await c.nextOf("event", (m) => m.event === "fyi");
    assert.ok(!("ackId" in fyi), JSON.stringify(fyi));
    const unanswered = await api(srv.url, "/api/users/acker/emit", { event: "confirm", data: 2, ackTimeoutMs: 300 });
    assert.equal(unanswered.status, 504, JSON.stringify(unanswered.body));
    assert.equal(unanswered.body.code, "ack_timeout");
    assert.ok(c.isOpen());
  });

  it("an auth message with an id gets its ack after connected (ping frames before it do not count); a client's close is answered with its code", async () => {
    const c = plainClient(srv.url, {});
    await c.opened;
    c.ws.ping();
    c.send({ type: "auth", token: tokenOf("closer"), id: "a-1" });
    assert.equal((await c.nextOf("connected")).userId, "closer");
    const ack = await c.nextOf("ack", (m) => m.id === "a-1");
    assert.equal(ack.success, true);
    c.ws.close(4321, "bye");
    assert.deepEqual(await closedWithin(c, 3000), { code: 4321, reason: "bye" });
  });

  it("application ping: { type: 'ping', ts } gets { type: 'pong', ts, serverTs }", async () => {
    const c = await plain(srv.url, "pinger");
    c.send({ type: "ping", ts: 123 });
    const p = await c.nextOf("pong");
    assert.equal(p.ts, 123);
    assert.equal(typeof p.serverTs, "number");
    assert.ok(Math.abs(p.serverTs - Date.now()) < 5000, `serverTs ${p.serverTs}`);
    c.send({ type: "heartbeat" });
    assert.equal((await c.nextOf("pong")).ts, null);
    c.send({ type: "ping", ts: "abc" });
    assert.equal((await c.nextOf("pong")).ts, "abc");
    // With an id: the pong comes all the same, and one ack carries the id.
    const a = await c.request({ type: "ping", ts: 9 });
    assert.equal(a.type, "ack", JSON.stringify(a));
    await c.nextOf("pong", (m) => m.ts === 9);
    await sleep(200);
    assert.equal(c.msgs.filter((m) => m.id === a.id && (m.type === "ack" || m.type === "error")).length, 1, `one answer with the id: ${c.summary()}`);
    // A ts the server will not echo.
    for (const ts of [{ big: "x" }, "y".repeat(65)]) {
      const e = await c.request({ type: "ping", ts });
      assert.equal(e.type, "error", JSON.stringify(e));
      assert.equal(e.code, "invalid_payload");
    }
    await c.none("pong", (m) => typeof m.ts === "object" && m.ts !== null, 100, 0);
  });

  it("token expiry: token_expiring, then system closing token_expired and 4001; an auth refresh keeps the socket past the first exp", async () => {
    const room = "expiry";
    const xTok = token("xena", ["--ttl-secs", "3"]);
    const yTok = token("yuri", ["--ttl-secs", "3"]);
    const x = plainClient(srv.url, { token: xTok });
    const y = plainClient(srv.url, { token: yTok });
    await x.nextOf("connected");
    await y.nextOf("connected");
    await joinPlain(y, room);
    const w = await sio(srv.url, "watcher");
    await joinSio(w, room);
    // --auth-expiry-warning-secs 2: a warning about a second after connecting.
    const xw = await x.nextOf("token_expiring", () => true, 4000);
    assert.equal(xw.expiresAt, claims(xTok).exp * 1000);
    const yw = await y.nextOf("token_expiring", () => true, 4000);
    assert.equal(yw.expiresAt, claims(yTok).exp * 1000);
    // A token for someone else is refused, and changes nothing.
    const wrong = await y.request({ type: "auth", token: tokenOf("mallory") });
    assert.equal(wrong.type, "error", JSON.stringify(wrong));
    assert.equal(wrong.code, "invalid_payload");
    assert.match(wrong.message, /another user/);
    const fresh = token("yuri", ["--ttl-secs", "60"]);
    y.send({ type: "auth", token: fresh });
    const refreshed = await y.nextOf("token_refreshed");
    assert.equal(refreshed.expiresAt, claims(fresh).exp * 1000);

    const xc = await x.nextOf("system", (m) => m.event === "closing", 10_000);
    assert.equal(xc.reason, "token_expired");
    const closed = await closedWithin(x, 12_000);
    assert.deepEqual(closed, { code: 4001, reason: "Unauthorized: token expired" });
    const lag = Date.now() - claims(xTok).exp * 1000;
    const types = x.msgs.map((m) => m.type);
    assert.ok(types.indexOf("token_expiring") < types.indexOf("system"), types.join());
    assert.ok(lag >= 0, `closed ${-lag} ms before exp`);
    // yuri's first token expired as xena's did (at most a second apart):
    // a second after the moment it would have ended him, he is still here.
    await sleep(claims(yTok).exp * 1000 + lag + 1000 - Date.now());
    assert.ok(y.isOpen(), `yuri's socket: ${JSON.stringify(y.closeInfo)}`);
    y.send({ type: "ping", ts: "still" });
    await y.nextOf("pong", (m) => m.ts === "still");
    const said = next(w, "chat:message");
    assert.equal((await y.request({ type: "room_msg", roomId: room, content: "after exp" })).success, true);
    assert.equal((await said).content, "after exp");
    assert.equal(y.msgs.filter((m) => m.type === "system").length, 0, y.summary());
  });
});

describe("plain websocket clients and the backend's hooks", () => {
  it("the join hook and the publish hook decide for plain clients as for Socket.IO", async () => {
    const calls = [];
    const be = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        const j = JSON.parse(body);
        calls.push([req.url, j]);
        let answer = { allow: true };
        if (req.url === "/join" && j.roomId === "vip") answer = { allow: false, code: "members_only", message: "VIP members only" };
        if (req.url === "/publish" && j.content.includes("badword")) answer = { allow: false, code: "moderated", message: "watch your language" };
        else if (req.url === "/publish" && j.content.includes("darn")) answer = { allow: true, content: j.content.replaceAll("darn", "d**n") };
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(answer));
      });
    });
    await new Promise((r) => be.listen(0, "127.0.0.1", r));
    const beUrl = `http://127.0.0.1:${be.address().port}`;
    const srv = await startServer(undefined, undefined, ["--join-hook-url", `${beUrl}/join`, "--publish-hook-url", `${beUrl}/publish`, "--webhook-secret", "plain-ws-hook-secret", "--hook-timeout-ms", "2000"]);
    try {
      const room = "hooked";
      const alice = await plain(srv.url, "alice");
      const bob = await sio(srv.url, "bob");
      const vip = await alice.request({ type: "join_room", roomId: "vip" });
      assert.deepEqual([vip.type, vip.code, vip.message], ["error", "members_only", "VIP members only"]);
      await joinPlain(alice, room);
      await joinSio(bob, room);
      assert.ok(calls.some(([path, j]) => path === "/join" && j.roomId === room && j.userId === "alice"), JSON.stringify(calls));
      const refused = await alice.request({ type: "room_msg", roomId: room, content: "a badword here" });
      assert.deepEqual([refused.type, refused.code, refused.message], ["error", "moderated", "watch your language"]);
      const atBob = next(bob, "chat:message");
      const ok = await alice.request({ type: "room_msg", roomId: room, content: "darn it" });
      assert.equal(ok.success, true, JSON.stringify(ok));
      assert.equal((await atBob).content, "d**n it");
      assert.equal((await alice.nextOf("room_msg")).content, "d**n it");
      const viaSio = await bob.timeout(5000).emitWithAck("chat:send", { roomId: room, content: "badword from bob" });
      assert.equal(viaSio.code, "moderated");
      assert.deepEqual((await alice.request({ type: "history", roomId: room })).messages.map((m) => m.content), ["d**n it"]);
    } finally {
      closeClients();
      await srv.stop();
      be.closeAllConnections();
      await new Promise((r) => be.close(r));
    }
  });
});

describe("plain websocket clients: hostile and broken clients", () => {
  it("a message over --max-payload-bytes is closed with 1009; one over 65,536 bytes gets too_large; the server carries on", async () => {
    const srv = await startServer(undefined, undefined, ["--max-payload-bytes", "100000"]);
    try {
      const bystander = await plain(srv.url, "bystander");
      const c = await plain(srv.url, "mallory");
      c.sendRaw(JSON.stringify({ type: "room_msg", roomId: "r", content: "x".repeat(150_000) }));
      assert.deepEqual(await closedWithin(c, 5000), { code: 1009, reason: "message larger than 100000 bytes" });
      // Within --max-payload-bytes: 65,536 bytes is a request like another
      // (its content is over --max-message-chars), one byte more is refused
      // whole; the connection stays.
      const d = await plain(srv.url, "mallory");
      await joinPlain(d, "r");
      const sized = (id, bytes) => {
        const base = JSON.stringify({ type: "room_msg", roomId: "r", id, content: "" });
        const text = JSON.stringify({ type: "room_msg", roomId: "r", id, content: "x".repeat(bytes - base.length) });
        assert.equal(Buffer.byteLength(text), bytes);
        return text;
      };
      d.sendRaw(sized(100, 65_536));
      const atLimit = await d.nextOf("error", (m) => m.id === 100);
      assert.equal(atLimit.code, "too_large", JSON.stringify(atLimit));
      assert.doesNotMatch(atLimit.message, /65536 bytes/, "refused for its content, not its size");
      d.sendRaw(sized(101, 65_537));
      const over = await d.nextOf("error", (m) => m.code === "too_large" && /65536 bytes/.test(m.message));
      d.send({ type: "ping", ts: "after" });
      await d.nextOf("pong", (m) => m.ts === "after");
      assert.ok(d.isOpen());
      assert.ok((await fetch(`${srv.url}/healthz`)).ok);
      bystander.send({ type: "ping", ts: 1 });
      await bystander.nextOf("pong", (m) => m.ts === 1);
      assert.ok(bystander.isOpen());
      // §19: "A request with an id is answered by exactly one message: ... { type: "error", id, code, message }".
      assert.equal(over.id, 101, `the too_large refusal of request 101 carries its id: ${JSON.stringify(over)}`);
    } finally {
      closeClients();
      await srv.stop();
    }
  });

  it("malformed JSON, non-objects, unknown types, bad ids and binary get an error, and the connection stays", async () => {
    const srv = await startServer();
    try {
      const c = await plain(srv.url, "mallory");
      const raw = [
        ["{not json", "invalid_payload"],
        ["[1,2,3]", "invalid_payload"],
        ["42", "invalid_payload"],
        ['"a string"', "invalid_payload"],
        ["null", "invalid_payload"],
        [JSON.stringify({ id: "no-type" }), "invalid_payload"],
        [JSON.stringify({ type: "dance" }), "not_found"],
        [JSON.stringify({ type: "ping", id: { a: 1 } }), "invalid_payload"],
        [JSON.stringify({ type: "ping", id: "z".repeat(129) }), "invalid_payload"],
        [JSON.stringify({ type: 7 }), "invalid_payload"],
      ];
      for (const [text, code] of raw) {
        c.sendRaw(text);
        const e = await c.nextOf("error");
        assert.equal(e.code, code, `${text}: ${JSON.stringify(e)}`);
        assert.equal(typeof e.message, "string", text);
      }
      // The refusal without an id names the request.
      c.send({ type: "dance" });
      assert.equal((await c.nextOf("error")).request, "dance");
      // With an id (a number or a string), the error carries it.
      const unknown = await c.request({ type: "moonwalk" });
      assert.equal(unknown.type, "error");
      assert.equal(unknown.code, "not_found");
      c.send({ type: "moonwalk", id: "s-1" });
      assert.equal((await c.nextOf("error", (m) => m.id === "s-1")).code, "not_found");
      c.send({ type: "ping", id: "x".repeat(128), ts: 2 });
      assert.equal((await c.nextOf("ack", (m) => m.id === "x".repeat(128))).type, "ack", "an id of 128 characters is fine");
      // Binary.
      c.sendRaw(Buffer.from([1, 2, 3]), { binary: true });
      assert.equal((await c.nextOf("error")).code, "invalid_payload");
      c.sendRaw(Buffer.from(JSON.stringify({ type: "ping", ts: 3 })), { binary: true });
      assert.equal((await c.nextOf("error")).code, "invalid_payload");
      // Bad requests of known types.
      for (const [msg, code] of [
        [{ type: "join_room", roomId: "bad room!" }, "invalid_payload"],
        [{ type: "room_msg", roomId: "never-joined", content: "x" }, "not_in_room"],
        [{ type: "history", roomId: "r", limit: 101 }, "invalid_payload"],
        [{ type: "history", roomId: "r", withUserId: "bob" }, "invalid_payload"],
        [{ type: "history", roomId: "r", before: 5, after: 1 }, "invalid_payload"],
        [{ type: "private_msg", toUserId: "u".repeat(129), content: "x" }, "invalid_payload"],
      ]) {
        const e = await c.request(msg);
        assert.equal(e.type, "error", JSON.stringify([msg, e]));
        assert.equal(e.code, code, JSON.stringify([msg, e]));
      }
      await joinPlain(c, "r");
      for (const [content, code] of [
        ["   ", "invalid_payload"],
        ["", "invalid_payload"],
        ["x".repeat(4001), "too_large"],
      ]) {
        const e = await c.request({ type: "room_msg", roomId: "r", content });
        assert.equal(e.type, "error");
        assert.equal(e.code, code, JSON.stringify(e));
      }
      c.send({ type: "ping", ts: "alive" });
      await c.nextOf("pong", (m) => m.ts === "alive");
      assert.ok(c.isOpen());
      assert.equal(c.binary, 0, "the server speaks text");
      assert.equal(c.msgs.filter((m) => m.type === "<not json>").length, 0);
      const ok = await c.request({ type: "room_msg", roomId: "r", content: "still works" });
      assert.equal(ok.seq, 1);
    } finally {
      closeClients();
      await srv.stop();
    }
  });

  it("a flood gets rate_limited errors, then system closing rate_limited and close 1008; the server and others carry on", async () => {
    const srv = await startServer(undefined, undefined, ["--api-key", API_KEY]);
    try {
      const room = "flood";
      const watcher = await sio(srv.url, "watcher");
      await joinSio(watcher, room);
      const c = await plain(srv.url, "flooder");
      await joinPlain(c, room);
      const N = 3000;
      const first = c.nextId;
      for (let i = 0; i < N; i++) c.send({ type: "room_msg", roomId: room, content: `m${i}`, id: c.nextId++ });
      const closed = await closedWithin(c, 20_000);
      assert.deepEqual(closed, { code: 1008, reason: "rate_limited" });
      const answers = c.msgs.filter((m) => (m.type === "ack" || m.type === "error") && m.id >= first);
      const oks = answers.filter((m) => m.type === "ack");
      const limited = answers.filter((m) => m.type === "error" && m.code === "rate_limited");
      const closing = c.msgs.findIndex((m) => m.type === "system");
      console.log(`plain flood: ${JSON.stringify({ answers: answers.length, ok: oks.length, rate_limited: limited.length })}`);
      assert.ok(closing >= 0, "system closing came");
      assert.deepEqual(c.msgs[closing], { type: "system", event: "closing", reason: "rate_limited" });
      assert.equal(c.msgs.filter((m) => m.type === "system").length, 1);
      assert.ok(limited.length > 100, `${limited.length} rate_limited errors`);
      assert.equal(new Set(answers.map((m) => m.id)).size, answers.length, "one answer per id");
      assert.equal(answers.length, N, "every request answered before the close");
      assert.equal(oks.length + limited.length, N, "acks and rate_limited errors only");
      const lastOk = c.msgs.findLastIndex((m) => m.type === "ack");
      assert.ok(lastOk < closing, "every ack of a stored message before system closing");
      // What was acked was stored, and nothing else.
      const r = await fetch(`${srv.url}/api/rooms/${room}/messages?limit=100`, { headers: { authorization: `Bearer ${API_KEY}` } });
      const stored = (await r.json()).messages;
      assert.ok(oks.length < 100, `${oks.length} stored`);
      assert.equal(stored.length, oks.length);
      assert.deepEqual(stored.map((m) => m.id), oks.map((a) => a.messageId));

      assert.ok((await fetch(`${srv.url}/healthz`)).ok, "the server is alive");
      assert.ok(watcher.connected, "the Socket.IO member is still connected");
      const fresh = await plain(srv.url, "newcomer");
      await joinPlain(fresh, room);
      const said = next(watcher, "chat:message");
      const a = await fresh.request({ type: "room_msg", roomId: room, content: "after the flood" });
      assert.equal(a.type, "ack", JSON.stringify(a));
      assert.equal(a.seq, oks.length + 1);
      assert.equal((await said).content, "after the flood");
    } finally {
      closeClients();
      await srv.stop();
    }
  });

  it("a slow reader (its TCP socket paused while the room fills) is closed 1008 slow consumer; the others carry on", async () => {
    const srv = await startServer(undefined, undefined, [
      "--api-key", API_KEY,
      "--max-queued-packets", "64",
      "--write-stall-timeout-ms", "400",
      "--address-messages-per-sec", "0",
    ]);
    try {
      const room = "slow";
      const c = await plain(srv.url, "sloth");
      await joinPlain(c, room);
      const bob = await sio(srv.url, "bob");
      await joinSio(bob, room);
      let heard = 0;
      bob.on("big", () => heard++);
      c.ws._socket.pause();
      const big = "z".repeat(200_000);
      // Until the server gives up on it (the metric, or its presence gone).
      const given_up = async () =>
        (await metric(srv.url, "switchboard_slow_consumer_disconnects_total")) >= 1 ||
        !(await (await fetch(`${srv.url}/api/users/sloth/presence`, { headers: { authorization: `Bearer ${API_KEY}` } })).json()).online;
      let posts = 0;
      while (posts < 300) {
        const r = await api(srv.url, "/api/emit", { event: "big", data: big, rooms: [room] });
        assert.equal(r.status, 202);
        posts++;
        if (posts % 5 === 0 && (await given_up())) break;
      }
      assert.ok(await given_up(), `not closed as a slow consumer after ${posts} emits of 200 KB`);
      assert.equal(await metric(srv.url, "switchboard_slow_consumer_disconnects_total"), 1);
      c.ws._socket.resume();
      const closed = await closedWithin(c, 10_000);
      assert.deepEqual(closed, { code: 1008, reason: "slow consumer: reconnect and catch up with chat:history" });
      assert.ok(c.msgs.filter((m) => m.type === "event").length < posts, "it did not get everything");
      // Bob, reading, got every emit and is still here.
      assert.ok(await until(() => heard === posts, 10_000), `bob heard ${heard} of ${posts}`);
      assert.ok(bob.connected);
      assert.ok((await fetch(`${srv.url}/healthz`)).ok);
      // It comes back and catches up with history.
      assert.equal((await bob.timeout(5000).emitWithAck("chat:send", { roomId: room, content: "missed" })).success, true);
      const back = await plain(srv.url, "sloth");
      const h = await back.request({ type: "history", roomId: room, after: 0 });
      assert.deepEqual(h.messages.map((m) => m.content), ["missed"]);
    } finally {
      closeClients();
      await srv.stop();
    }
  });

  it("websocket heartbeats: a client that answers no ping frame is closed 4008; one that does stays", async () => {
    const srv = await startServer(undefined, undefined, ["--ping-interval-ms", "300", "--ping-timeout-ms", "300"]);
    try {
      const good = await plain(srv.url, "good");
      const mute = plainClient(srv.url, { token: tokenOf("mute") }, { autoPong: false });
      await mute.nextOf("connected");
      const t0 = Date.now();
      const closed = await closedWithin(mute, 5000);
      const took = Date.now() - t0;
      assert.deepEqual(closed, { code: 4008, reason: "ping timeout" });
      assert.ok(mute.pings >= 1, "it was pinged");
      assert.ok(took >= 400 && took < 3000, `closed after ${took} ms (interval 300 + timeout 300)`);
      await sleep(1000 - Math.min(1000, Date.now() - t0));
      assert.ok(good.pings >= 3, `the good client got ${good.pings} pings`);
      assert.ok(good.isOpen(), JSON.stringify(good.closeInfo));
      const s = await sio(srv.url, "sio-user");
      await sleep(800);
      assert.ok(s.connected, "Socket.IO clients answer their own pings");
    } finally {
      closeClients();
      await srv.stop();
    }
  });

  it("connections per user count plain and Socket.IO together: the one too many is closed 1013", async () => {
    const srv = await startServer(undefined, undefined, ["--max-connections-per-user", "2"]);
    try {
      const a = await plain(srv.url, "crowd");
      await sio(srv.url, "crowd");
      const third = plainClient(srv.url, { token: tokenOf("crowd") });
      assert.deepEqual(await closedWithin(third, 5000), { code: 1013, reason: "too many connections for this user" });
      assert.equal(third.msgs.filter((m) => m.type === "connected").length, 0);
      await assert.rejects(sio(srv.url, "crowd"), /too many connections for this user/);
      // A place frees when one ends.
      a.ws.close();
      await a.closed;
      await sleep(200);
      await plain(srv.url, "crowd");
    } finally {
      closeClients();
      await srv.stop();
    }
  });

  it("the message rate is the user's, plain and Socket.IO together", async () => {
    const srv = await startServer(undefined, undefined, ["--messages-per-sec", "1", "--message-burst", "3"]);
    try {
      const room = "quota";
      const p = await plain(srv.url, "quota");
      const s = await sio(srv.url, "quota");
      await joinPlain(p, room);
      await joinSio(s, room);
      const answers = [];
      answers.push((await s.timeout(5000).emitWithAck("chat:send", { roomId: room, content: "1" })).success);
      answers.push((await p.request({ type: "room_msg", roomId: room, content: "2" })).success);
      answers.push((await s.timeout(5000).emitWithAck("chat:send", { roomId: room, content: "3" })).success);
      const fourth = await p.request({ type: "room_msg", roomId: room, content: "4" });
      const fifth = await s.timeout(5000).emitWithAck("chat:send", { roomId: room, content: "5" });
      assert.deepEqual(answers, [true, true, true]);
      assert.deepEqual([fourth.type, fourth.code], ["error", "rate_limited"], JSON.stringify(fourth));
      assert.equal(fifth.code, "rate_limited", JSON.stringify(fifth));
      assert.ok(p.isOpen());
    } finally {
      closeClients();
      await srv.stop();
    }
  });

  it("a server shutting down closes plain clients with 1001", async () => {
    const srv = await startServer();
    let stopped;
    try {
      const c = await plain(srv.url, "alice");
      stopped = srv.stop();
      assert.deepEqual(await closedWithin(c, 10_000), { code: 1001, reason: "server going away" });
    } finally {
      closeClients();
      await (stopped ?? srv.stop());
    }
  });

  it("/ws is on by default; --no-plain-websocket and --parser msgpack turn it off (404)", async () => {
    for (const flags of [[], ["--no-plain-websocket"], ["--parser", "msgpack"]]) {
      const srv = await startServer(undefined, undefined, flags);
      try {
        if (flags.length === 0) {
          await plain(srv.url, "alice");
          continue;
        }
        const c = plainClient(srv.url, { token: tokenOf("alice") });
        await assert.rejects(c.opened);
        assert.match(c.error?.message ?? "", /Unexpected server response: 404/, flags.join(" "));
        const r = await fetch(`${srv.url}/ws`);
        assert.equal(r.status, 404, flags.join(" "));
        if (flags[0] === "--no-plain-websocket") await sio(srv.url, "alice");
      } finally {
        closeClients();
        await srv.stop();
      }
    }
  });
});
