// socket.io-client 4.8, unchanged, against switchboard: once with default
// transports (polling, then upgrade to websocket) and once websocket-only.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { io } from "socket.io-client";
import { spawn } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { BIN, startServer, token, next, none, signHs256 } from "./server.mjs";

const MODES = {
  "default transports (polling + upgrade)": {},
  "websocket only": { transports: ["websocket"] },
};

for (const [mode, transportOpts] of Object.entries(MODES)) {
  describe(`socket.io-client ${mode}`, () => {
    let server;
    const sockets = [];
    const connect = (sub, opts = {}) => {
      const s = io(server.url, {
        auth: { token: token(sub) },
        reconnectionDelay: 100,
        reconnectionDelayMax: 500,
        ...transportOpts,
        ...opts,
      });
      sockets.push(s);
      return s;
    };
    const connected = async (sub, opts) => {
      const s = connect(sub, opts);
      await next(s, "connect");
      return s;
    };

    before(async () => {
      server = await startServer();
    });
    after(async () => {
      sockets.forEach((s) => s.close());
      await server.stop();
    });

    it("authenticates, and refuses a bad token with a reason", async () => {
      const s = await connected("alice");
      assert.ok(s.connected);
      if (!transportOpts.transports) {
        // The client upgrades from polling to websocket by itself.
        await new Promise((r) => (s.io.engine.transport.name === "websocket" ? r() : s.io.engine.once("upgrade", r)));
        assert.equal(s.io.engine.transport.name, "websocket");
      }
      const bad = connect("x", { auth: { token: "not.a.jwt" }, reconnection: false });
      const err = await next(bad, "connect_error");
      assert.equal(err.message, "Authentication failed: malformed token");
      const now = Math.floor(Date.now() / 1000);
      const refusals = [
        [{}, "Authentication failed: missing token"],
        [{ token: signHs256({ sub: "x", exp: now - 3600 }) }, "Authentication failed: token expired"],
        [{ token: signHs256({ sub: "x", exp: now + 600 }, "another-secret-another-secret-another!") }, "Authentication failed: bad signature"],
      ];
      for (const [auth, message] of refusals) {
        const s = connect("x", { auth, reconnection: false });
        assert.equal((await next(s, "connect_error")).message, message);
      }
    });

    it("tells room members who joins and leaves", async () => {
      const bob = await connected("bob");
      const alice = await connected("alice");
      const joined = await bob.emitWithAck("room:join", "general");
      assert.equal(joined.success, true);
      const seen = next(bob, "room:user-joined");
      const ack = await alice.emitWithAck("room:join", { roomId: "general" });
      assert.equal(ack.success, true);
      assert.deepEqual(ack.members.map((m) => m.userId), ["alice", "bob"]);
      assert.deepEqual(await seen, { userId: "alice", username: "ALICE", roomId: "general" });
      const left = next(bob, "room:user-left");
      assert.deepEqual(await alice.emitWithAck("room:leave", "general"), { success: true, roomId: "general" });
      assert.deepEqual(await left, { userId: "alice", roomId: "general" });
    });

    it("acks chat:send and broadcasts chat:message to the room", async () => {
      const bob = await connected("bob");
      const alice = await connected("alice");
      await bob.emitWithAck("room:join", "chat");
      await alice.emitWithAck("room:join", "chat");
      const atBob = next(bob, "chat:message");
      const atAlice = next(alice, "chat:message");
      const ack = await new Promise((resolve) =>
        alice.emit("chat:send", { roomId: "chat", content: "hello <world>" }, resolve),
      );
      assert.equal(ack.success, true);
      assert.match(ack.messageId, /^[0-9A-Z]{26}$/);
      for (const m of [await atBob, await atAlice]) {
        assert.equal(m.id, ack.messageId);
        assert.equal(m.content, "hello <world>");
        assert.equal(m.senderId, "alice");
        assert.equal(m.roomId, "chat");
      }
      const refused = await alice.emitWithAck("chat:send", { roomId: "chat", content: "" });
      assert.equal(refused.success, false);
      assert.equal(refused.code, "invalid_payload");
      const history = await alice.emitWithAck("chat:history", { roomId: "chat" });
      assert.equal(history.messages.length, 1);
    });

    it("answers event names that need JSON escapes with an error ack, staying connected", async () => {
      const alice = await connected("alice");
      for (const name of ['a"b', "back\\slash", "tab\there"]) {
        const ack = await alice.timeout(5000).emitWithAck(name, {});
        assert.equal(ack.code, "invalid_payload", name);
      }
      assert.equal((await alice.timeout(5000).emitWithAck("é ünï", {})).code, "not_found");
      assert.equal((await alice.timeout(5000).emitWithAck("room:join", "escapes")).success, true);
      assert.ok(alice.connected);
    });

    it("refuses binary data in a payload with an error ack that says so, in order, staying connected", async () => {
      const alice = await connected("alice");
      assert.equal((await alice.emitWithAck("room:join", "bin")).success, true);
      const payloads = [
        { roomId: "bin", content: "hi", file: Buffer.from([1, 2, 3]) },
        { roomId: "bin", content: new Uint8Array([104, 105]).buffer },
        Buffer.from("bin"),
      ];
      for (const payload of payloads) {
        const ack = await alice.timeout(5000).emitWithAck("chat:send", payload);
        assert.equal(ack.success, false);
        assert.equal(ack.code, "invalid_payload");
        assert.match(ack.error, /binary data .* is not accepted/);
      }
      // Its ack keeps its place among the acks of the events around it.
      const acks = await Promise.all([
        alice.timeout(5000).emitWithAck("chat:send", { roomId: "bin", content: "one" }),
        alice.timeout(5000).emitWithAck("room:join", { roomId: "bin", avatar: Buffer.alloc(16) }),
        alice.timeout(5000).emitWithAck("chat:send", { roomId: "bin", content: "two" }),
      ]);
      assert.deepEqual(acks.map((a) => a.success), [true, false, true]);
      assert.equal(acks[0].seq + 1, acks[2].seq);
      const { messages } = await alice.emitWithAck("chat:history", { roomId: "bin" });
      assert.deepEqual(messages.map((m) => m.content), ["one", "two"]);
      assert.ok(alice.connected);
    });

    it("relays typing indicators", async () => {
      const bob = await connected("bob");
      const alice = await connected("alice");
      await bob.emitWithAck("room:join", "typing");
      await alice.emitWithAck("room:join", "typing");
      const typing = next(bob, "typing:user");
      const notSelf = none(alice, "typing:user");
      alice.emit("typing:start", "typing");
      assert.deepEqual(await typing, { userId: "alice", username: "ALICE", roomId: "typing" });
      await notSelf;
      const stopped = next(bob, "typing:stopped");
      alice.emit("typing:stop", "typing");
      assert.deepEqual(await stopped, { userId: "alice", roomId: "typing" });
    });

    it("reconnects and re-authenticates by itself after a server restart", async () => {
      const alice = await connected("alice");
      await alice.emitWithAck("room:join", "restart");
      assert.equal((await alice.emitWithAck("chat:send", { roomId: "restart", content: "before" })).success, true);
      const disconnected = next(alice, "disconnect");
      await server.stop();
      await disconnected;
      const reconnected = next(alice, "connect", 10_000);
      server = await startServer(server.port, server.db);
      await reconnected;
      // A new server process: the client joins again and carries on.
      const ack = await alice.emitWithAck("room:join", "restart");
      assert.equal(ack.success, true);
      const sent = await alice.emitWithAck("chat:send", { roomId: "restart", content: "back" });
      assert.equal(sent.success, true);
      // The message acked before the restart is still in history.
      const { messages } = await alice.emitWithAck("chat:history", { roomId: "restart" });
      assert.deepEqual(messages.map((m) => m.content), ["before", "back"]);
    });
  });
}

describe("tenant namespaces", () => {
  let server;
  const sockets = [];
  before(async () => {
    server = await startServer();
  });
  after(() => {
    sockets.forEach((s) => s.close());
    return server.stop();
  });

  it("opens a tenant namespace and refuses another tenant's token", async () => {
    const open = (...args) => {
      const s = io(...args);
      sockets.push(s);
      return s;
    };
    const ok = open(`${server.url}/acme`, { auth: { token: token("alice", ["--tenant", "acme"]) }, transports: ["websocket"] });
    await next(ok, "connect");
    const wrong = open(server.url, { auth: { token: token("alice", ["--tenant", "acme"]) }, reconnection: false });
    assert.equal((await next(wrong, "connect_error")).message, "Authentication failed: wrong tenant");
    const unknown = open(`${server.url}/nowhere`, { auth: { token: token("alice") }, reconnection: false });
    assert.equal((await next(unknown, "connect_error")).message, "Invalid namespace");
  });
});

describe("dev mode", () => {
  it("prints a token that socket.io-client can use", async () => {
    const env = { ...process.env, RUST_LOG: "warn" };
    delete env.SWITCHBOARD_JWT_SECRET;
    delete env.SWITCHBOARD_JWT_PUBLIC_KEY;
    // Dev mode with the default store: ./switchboard.db in a scratch directory.
    const child = spawn(BIN, ["--listen", "127.0.0.1:0"], {
      cwd: mkdtempSync(path.join(tmpdir(), "switchboard-dev-")),
      env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    const sockets = [];
    try {
      let out = "";
      const { url, tok } = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`no token printed: ${out}`)), 10_000);
        child.stdout.on("data", (d) => {
          out += d;
          const tok = out.split("\n").find((l) => /^[\w-]+\.[\w-]+\.[\w-]+$/.test(l.trim()));
          const url = out.match(/io\('(http:\/\/127\.0\.0\.1:\d+)'/)?.[1];
          if (tok && url) {
            clearTimeout(timer);
            resolve({ url, tok: tok.trim() });
          }
        });
      });
      const s = io(url, { auth: { token: tok }, transports: ["websocket"] });
      sockets.push(s);
      await next(s, "connect");
      const ack = await s.emitWithAck("room:join", "demo");
      assert.deepEqual(ack.members, [{ userId: "demo", username: "Demo User", connections: 1 }]);
    } finally {
      sockets.forEach((s) => s.close());
      child.kill("SIGTERM");
    }
  });
});

describe("a token in an Authorization header", () => {
  // The server keeps only the handshake headers it reads later (the Admin
  // UI is off here): Authorization must be among them, over polling,
  // through the upgrade, and again after a reconnect.
  let server;
  before(async () => {
    server = await startServer();
  });
  after(() => server.stop());

  it("connects over polling, upgrades, and reconnects with it", async () => {
    const s = io(server.url, {
      extraHeaders: { authorization: `Bearer ${token("header-user")}`, cookie: "session=abc; theme=dark" },
      transports: ["polling", "websocket"],
      reconnectionDelay: 100,
      reconnectionDelayMax: 200,
    });
    try {
      await next(s, "connect");
      if (s.io.engine.transport.name !== "websocket") await next(s.io.engine, "upgrade");
      const joined = await s.timeout(5000).emitWithAck("room:join", { roomId: "hdr" });
      assert.equal(joined.success, true, JSON.stringify(joined));
      // The transport dies; the client comes back with the same headers.
      s.io.engine.close();
      await next(s, "connect");
      // Recovered (connection state recovery is on by default): still in the room.
      assert.equal(s.recovered, true);
      const again = await s.timeout(5000).emitWithAck("chat:send", { roomId: "hdr", content: "back" });
      assert.equal(again.success, true, JSON.stringify(again));
    } finally {
      s.close();
    }
  });
});
