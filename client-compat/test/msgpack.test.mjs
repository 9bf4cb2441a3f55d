// `--parser msgpack`: socket.io-client with socket.io-msgpack-parser, unchanged,
// runs the core flows on each transport. One server speaks one parser: a
// client with the other one cannot talk to it (and the server stays up).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import parser from "socket.io-msgpack-parser";
import { startServer, token, next, none, firstOf, metric } from "./server.mjs";

const MODES = {
  "websocket only": { transports: ["websocket"] },
  "polling only": { transports: ["polling"] },
  "default transports (polling + upgrade)": {},
};

const SUCCESS_ACKS = 'switchboard_acks_total{outcome="success"}';

for (const [mode, transportOpts] of Object.entries(MODES)) {
  describe(`socket.io-msgpack-parser, ${mode}`, () => {
    let server;
    const sockets = [];
    const connected = async (sub, path = "") => {
      const s = io(`${server.url}${path}`, {
        auth: { token: token(sub) },
        parser,
        reconnectionDelay: 100,
        reconnectionDelayMax: 500,
        ...transportOpts,
      });
      sockets.push(s);
      await next(s, "connect");
      return s;
    };
    const ask = (s, ev, payload) => s.timeout(5000).emitWithAck(ev, payload);

    before(async () => {
      server = await startServer(undefined, undefined, ["--parser", "msgpack"]);
    });
    after(async () => {
      sockets.forEach((s) => s.close());
      await server.stop();
    });

    it("joins, sends with ack, relays, reads history; every success ack counted once", async () => {
      const before = await metric(server.url, SUCCESS_ACKS);
      const bob = await connected("bob");
      const alice = await connected("alice");
      assert.equal((await ask(bob, "room:join", "chat")).success, true);
      const joined = await ask(alice, "room:join", { roomId: "chat" });
      assert.equal(joined.success, true);
      assert.deepEqual(joined.members.map((m) => m.userId).sort(), ["alice", "bob"]);
      const atBob = next(bob, "chat:message");
      const ack = await new Promise((resolve) =>
        alice.emit("chat:send", { roomId: "chat", content: "hello <msgpack> é😀" }, resolve),
      );
      assert.equal(ack.success, true);
      assert.match(ack.messageId, /^[0-9A-Z]{26}$/);
      assert.equal(typeof ack.seq, "number");
      const m = await atBob;
      assert.equal(m.id, ack.messageId);
      assert.equal(m.content, "hello <msgpack> é😀");
      assert.equal(m.senderId, "alice");
      assert.equal(m.roomId, "chat");
      const history = await ask(bob, "chat:history", { roomId: "chat" });
      assert.equal(history.success, true);
      assert.deepEqual(
        history.messages.map((h) => [h.id, h.content]),
        [[ack.messageId, "hello <msgpack> é😀"]],
      );
      // 2 joins, 1 send, 1 history: counted as written on a websocket (the
      // ack frames are binary under msgpack), as queued on polling.
      let counted = 0;
      for (let i = 0; i < 50 && counted < 4; i++) {
        counted = (await metric(server.url, SUCCESS_ACKS)) - before;
        if (counted < 4) await new Promise((r) => setTimeout(r, 20));
      }
      assert.equal(counted, 4);
    });

    it("relays typing indicators to the others only", async () => {
      const bob = await connected("bob");
      const alice = await connected("alice");
      await ask(bob, "room:join", "typing");
      await ask(alice, "room:join", "typing");
      const typing = next(bob, "typing:user");
      const notSelf = none(alice, "typing:user");
      alice.emit("typing:start", "typing");
      assert.deepEqual(await typing, { userId: "alice", username: "ALICE", roomId: "typing" });
      await notSelf;
      const stopped = next(bob, "typing:stopped");
      alice.emit("typing:stop", "typing");
      assert.deepEqual(await stopped, { userId: "alice", roomId: "typing" });
    });

    it("answers refusals with error acks", async () => {
      const alice = await connected("alice");
      const refused = async (ev, payload, code) => {
        const res = await ask(alice, ev, payload);
        assert.equal(res.success, false, `${ev}: ${JSON.stringify(res)}`);
        assert.equal(res.code, code, `${ev}: ${JSON.stringify(res)}`);
        assert.equal(typeof res.error, "string");
      };
      await refused("chat:send", { roomId: "not-joined", content: "hi" }, "not_in_room");
      await refused("chat:send", { roomId: "x", content: 5 }, "invalid_payload");
      await refused("chat:send", "not an object", "invalid_payload");
      await refused("chat:send", undefined, "invalid_payload");
      await refused("room:join", { roomId: "bad id!" }, "invalid_payload");
      // Binary (msgpack bin) is not JSON: refused with an error that says so.
      await refused("chat:send", { roomId: "x", content: new Uint8Array([1, 2, 3]) }, "invalid_payload");
      const bin = await ask(alice, "room:join", { roomId: "x", avatar: new Uint8Array(8) });
      assert.match(bin.error, /binary data .* is not accepted/);
      await refused("no:such-event", {}, "not_found");
      assert.equal((await ask(alice, "room:join", "after-errors")).success, true);
      assert.ok(alice.connected);
    });

    it("edits a collaborative document", async () => {
      const docId = `msgpack-${Object.keys(MODES).indexOf(mode)}-${Date.now()}`;
      const alice = await connected("alice");
      const bob = await connected("bob");
      const joined = await ask(alice, "doc:join", docId);
      assert.equal(joined.success, true);
      assert.equal(joined.version, 0);
      assert.equal(joined.content, "");
      assert.equal((await ask(bob, "doc:join", { docId })).success, true);
      const relayed = next(bob, "doc:operation");
      const op = { docId, version: 0, type: "insert", position: 0, content: "héllo😀", opId: "op-1" };
      assert.deepEqual(await ask(alice, "doc:operation", op), { success: true, version: 1 });
      assert.deepEqual(await relayed, { docId, version: 1, type: "insert", position: 0, content: "héllo😀", userId: "alice", opId: "op-1" });
      const bad = await ask(alice, "doc:operation", { ...op, version: 1, position: -1 });
      assert.equal(bad.code, "invalid_payload");
      const again = await ask(bob, "doc:join", docId);
      assert.equal(again.content, "héllo😀");
      assert.equal(again.version, 1);
    });

    it("works in a namespace (/acme)", async () => {
      const carol = await connected("carol", "/acme");
      assert.equal((await ask(carol, "room:join", "ns-room")).success, true);
      const sent = await ask(carol, "chat:send", { roomId: "ns-room", content: "in /acme" });
      assert.equal(sent.success, true);
      const { messages } = await ask(carol, "chat:history", { roomId: "ns-room" });
      assert.deepEqual(messages.map((h) => h.content), ["in /acme"]);
    });
  });
}

describe("one server, one parser", () => {
  for (const [serverArgs, clientOpts, what] of [
    [["--parser", "msgpack"], {}, "a JSON client against a msgpack server"],
    [[], { parser }, "a msgpack client against a JSON server"],
  ]) {
    for (const transports of [["websocket"], ["polling"]]) {
      it(`${what} (${transports[0]}) does not connect, and the server stays up`, async () => {
        // The JSON server keeps a msgpack polling client's session (it never
        // sends a CONNECT it can read) until --connect-timeout-ms, and a
        // shutdown waits for it: not what is tested here.
        const server = await startServer(undefined, undefined, [...serverArgs, "--shutdown-timeout-secs", "1"]);
        try {
          const s = io(server.url, { auth: { token: token("alice") }, transports, reconnection: false, ...clientOpts });
          try {
            if (clientOpts.parser) {
              await none(s, "connect", 1500);
            } else {
              // The msgpack server says why: a polling POST gets 400 with the
              // reason, a websocket closes with 1003 and it.
              const why = await firstOf(s, {
                connect_error: (e) => e.context?.responseText ?? "",
                disconnect: (_r, d) => `${d?.context?.code} ${d?.context?.reason}`,
              });
              assert.match(why, /socket\.io-msgpack-parser/);
              if (transports[0] === "websocket") assert.match(why, /^1003 /);
              else assert.match(JSON.parse(why).code, /^parser_mismatch$/);
            }
            assert.equal(s.connected, false);
          } finally {
            s.close();
          }
          assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
          // A client with the right parser still gets in.
          const ok = io(server.url, {
            auth: { token: token("bob") },
            transports,
            reconnection: false,
            ...(clientOpts.parser ? {} : { parser }),
          });
          try {
            await next(ok, "connect");
            assert.equal((await ok.timeout(5000).emitWithAck("room:join", "r")).success, true);
          } finally {
            ok.close();
          }
        } finally {
          await server.stop();
        }
      });
    }
  }
});
