// `--admin-ui`: the `/admin` namespace speaks the protocol of
// @socket.io/admin-ui 0.5 (its `instrument()`), checked here with
// socket.io-client as the UI uses it: login, config, all_sockets,
// server_stats, the lifecycle events and the emit/join/leave/_disconnect
// commands. The bcrypt hash comes from bcryptjs, as the UI's README has it.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { io } from "socket.io-client";
import { BIN, SECRET, startServer, token, next, none, freePort, tempDb } from "./server.mjs";

const require = createRequire(import.meta.url);
const bcrypt = require("bcryptjs");
const UI_DIR = path.join(path.dirname(require.resolve("@socket.io/admin-ui/package.json")), "ui", "dist");

const PASSWORD = "s3cret-admin";
const HASH = bcrypt.hashSync(PASSWORD, 10);
const ADMIN_ARGS = ["--admin-ui", "--admin-username", "admin", "--admin-password-hash", HASH, "--admin-ui-dir", UI_DIR];

describe("Admin UI protocol (/admin)", () => {
  let server;
  const sockets = [];
  const open = (s) => {
    sockets.push(s);
    return s;
  };
  const admin = (auth) => open(io(`${server.url}/admin`, { auth, reconnection: false, transports: ["websocket"] }));
  const chat = (sub, nsp = "") =>
    open(io(`${server.url}${nsp}`, { auth: { token: token(sub) }, reconnection: false, transports: ["websocket"] }));
  const login = async () => {
    const a = admin({ username: "admin", password: PASSWORD });
    const [session, config, all] = await Promise.all([next(a, "session"), next(a, "config"), next(a, "all_sockets")]);
    return { a, session, config, all };
  };

  before(async () => {
    server = await startServer(undefined, undefined, ADMIN_ARGS);
  });
  after(async () => {
    sockets.forEach((s) => s.close());
    await server.stop();
  });

  it("refuses a wrong password, a wrong user and no credentials", async () => {
    for (const auth of [{ username: "admin", password: "nope" }, { username: "root", password: PASSWORD }, {}]) {
      const err = await next(admin(auth), "connect_error");
      assert.equal(err.message, "invalid credentials");
    }
  });

  it("a flood of wrong passwords is checked a few at a time: threads stay bounded, health answers", async () => {
    const { readFileSync } = await import("node:fs");
    const threads = () => Number(/Threads:\s+(\d+)/.exec(readFileSync(`/proc/${server.child.pid}/status`, "utf8"))[1]);
    const before = threads();
    const flood = Array.from({ length: 60 }, () => next(admin({ username: "admin", password: "guess" }), "connect_error", 30000));
    let most = before;
    const watch = setInterval(() => (most = Math.max(most, threads())), 20);
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    const healthMs = Date.now() - t0;
    const errors = await Promise.all(flood);
    clearInterval(watch);
    assert.ok(errors.every((e) => e.message === "invalid credentials"));
    // Without the bound every check took a blocking thread of its own (60+).
    assert.ok(most - before <= 8, `threads grew from ${before} to ${most}`);
    assert.ok(healthMs < 1000, `healthz took ${healthMs} ms during the flood`);
  });

  it("the JWT is not what opens /admin, and the admin password opens no chat namespace", async () => {
    const err = await next(admin({ token: token("alice") }), "connect_error");
    assert.equal(err.message, "invalid credentials");
    const s = open(io(server.url, { auth: { username: "admin", password: PASSWORD }, reconnection: false }));
    assert.match((await next(s, "connect_error")).message, /Authentication failed/);
  });

  it("logs in: session, config, all_sockets with the sockets and their rooms, server_stats", async () => {
    const bob = chat("bob");
    await next(bob, "connect");
    assert.equal((await bob.timeout(5000).emitWithAck("room:join", "lobby")).success, true);
    const acme = chat("carol", "/acme");
    await next(acme, "connect");
    const { a, session, config, all } = await login();
    assert.match(session, /^[0-9a-f]{16}$/);
    for (const f of ["EMIT", "JOIN", "LEAVE", "DISCONNECT", "MJOIN", "MLEAVE", "MDISCONNECT", "AGGREGATED_EVENTS", "ALL_EVENTS"]) {
      assert.ok(config.supportedFeatures.includes(f), f);
    }
    const b = all.find((s) => s.id === bob.id);
    assert.ok(b, "bob is listed");
    assert.equal(b.nsp, "/");
    assert.equal(b.transport, "websocket");
    assert.ok(b.rooms.includes(bob.id));
    assert.ok(b.rooms.includes("room:lobby"), JSON.stringify(b.rooms));
    assert.equal(b.data.userId, "bob");
    assert.equal(typeof b.handshake.headers, "object");
    assert.equal(b.handshake.headers.authorization, undefined);
    assert.equal(b.handshake.query.token, undefined);
    const c = all.find((s) => s.id === acme.id);
    assert.equal(c?.nsp, "/acme");
    assert.ok(!all.some((s) => s.nsp === "/admin"), "the admin sockets are not listed");

    const stats = await next(a, "server_stats", 3000);
    for (const k of ["serverId", "hostname", "pid", "uptime", "clientsCount", "pollingClientsCount", "aggregatedEvents", "namespaces"]) {
      assert.ok(k in stats, k);
    }
    assert.equal(typeof stats.pid, "number");
    assert.ok(stats.clientsCount >= 3);
    assert.ok(Array.isArray(stats.aggregatedEvents));
    const root = stats.namespaces.find((n) => n.name === "/");
    assert.ok(root.socketsCount >= 1);
    // and again 2 s later
    const again = await next(a, "server_stats", 3000);
    assert.ok(again.uptime >= stats.uptime);

    // the session id logs in without the password
    const bySession = admin({ sessionId: session });
    await next(bySession, "config");
    assert.equal((await next(admin({ sessionId: "0123456789abcdef" }), "connect_error")).message, "invalid credentials");
  });

  it("socket_connected, room_joined, event_received, room_left, socket_disconnected", async () => {
    const { a } = await login();
    const seen = new Promise((resolve) => a.once("socket_connected", (...args) => resolve(args)));
    const dave = chat("dave");
    const [[connected, at]] = await Promise.all([seen, next(dave, "connect")]);
    assert.equal(connected.id, dave.id);
    assert.equal(connected.nsp, "/");
    assert.equal(connected.data.userId, "dave");
    assert.ok(connected.rooms.includes(dave.id));
    assert.ok(!Number.isNaN(Date.parse(at)));

    const joined = new Promise((resolve) => a.once("room_joined", (...args) => resolve(args)));
    assert.equal((await dave.timeout(5000).emitWithAck("room:join", "ops")).success, true);
    const [nsp, room, id, when] = await joined;
    assert.deepEqual([nsp, room, id], ["/", "room:ops", dave.id]);
    assert.ok(!Number.isNaN(Date.parse(when)));

    const received = new Promise((resolve) => a.once("event_received", (...args) => resolve(args)));
    await dave.timeout(5000).emitWithAck("ping", { n: 7 });
    const [enp, eid, eargs, ewhen] = await received;
    assert.deepEqual([enp, eid, eargs], ["/", dave.id, ["ping", { n: 7 }]]);
    assert.ok(!Number.isNaN(Date.parse(ewhen)));

    const left = new Promise((resolve) => a.once("room_left", (...args) => resolve(args)));
    assert.equal((await dave.timeout(5000).emitWithAck("room:leave", "ops")).success, true);
    assert.deepEqual((await left).slice(0, 3), ["/", "room:ops", dave.id]);

    const gone = new Promise((resolve) => a.once("socket_disconnected", (...args) => resolve(args)));
    const daveId = dave.id;
    dave.disconnect();
    const [dnsp, did, reason] = await gone;
    assert.deepEqual([dnsp, did, reason], ["/", daveId, "client namespace disconnect"]);
  });

  it("commands: emit, join, leave, _disconnect on the sockets the filter selects", async () => {
    const { a } = await login();
    const erin = chat("erin");
    const frank = chat("frank");
    await Promise.all([next(erin, "connect"), next(frank, "connect")]);

    // emit to one socket id: only that one gets it, with every argument
    const got = new Promise((resolve) => erin.once("admin:hello", (...args) => resolve(args)));
    const notFrank = none(frank, "admin:hello", 500);
    a.emit("emit", "/", erin.id, "admin:hello", { n: 1 }, "two");
    assert.deepEqual(await got, [{ n: 1 }, "two"]);
    await notFrank;

    // join by socket id, then emit to that room reaches it
    const joined = new Promise((resolve) => a.once("room_joined", (...args) => resolve(args)));
    a.emit("join", "/", "vip", frank.id);
    assert.deepEqual((await joined).slice(0, 3), ["/", "vip", frank.id]);
    const inRoom = next(frank, "admin:vip");
    const notErin = none(erin, "admin:vip", 500);
    a.emit("emit", "/", "vip", "admin:vip", 42);
    assert.equal(await inRoom, 42);
    await notErin;

    // leave
    const left = new Promise((resolve) => a.once("room_left", (...args) => resolve(args)));
    a.emit("leave", "/", "vip", frank.id);
    assert.deepEqual((await left).slice(0, 3), ["/", "vip", frank.id]);
    const noLonger = none(frank, "admin:vip", 500);
    a.emit("emit", "/", "vip", "admin:vip", 43);
    await noLonger;

    // _disconnect one socket: it is disconnected by the server, the other stays
    const erinId = erin.id;
    const reason = next(erin, "disconnect");
    const gone = new Promise((resolve) => a.once("socket_disconnected", (...args) => resolve(args)));
    a.emit("_disconnect", "/", false, erin.id);
    assert.equal(await reason, "io server disconnect");
    assert.equal((await gone)[1], erinId);
    assert.equal(frank.connected, true);
    assert.equal((await frank.timeout(5000).emitWithAck("ping", {})) !== undefined, true);
  });

  it("serves the UI bundle at /admin-ui/", async () => {
    const r = await fetch(`${server.url}/admin-ui/`);
    assert.equal(r.status, 200);
    assert.match(await r.text(), /Socket\.IO Admin UI/);
    const redirect = await fetch(`${server.url}/admin-ui`, { redirect: "manual" });
    assert.equal(redirect.status, 301);
    assert.equal((await fetch(`${server.url}/admin-ui/favicon.png`)).status, 200);
  });
});

describe("Admin UI off and misconfigured", () => {
  it("without --admin-ui there is no /admin namespace and no /admin-ui/", async () => {
    const server = await startServer(undefined, undefined, []);
    try {
      const a = io(`${server.url}/admin`, { auth: { username: "admin", password: PASSWORD }, reconnection: false });
      const err = await next(a, "connect_error");
      a.close();
      assert.match(err.message, /Invalid namespace/);
      assert.notEqual((await fetch(`${server.url}/admin-ui/`)).status, 200);
    } finally {
      await server.stop();
    }
  });

  it("refuses to start with --admin-ui and no credentials outside dev mode, or with a bad hash", () => {
    const base = ["--listen", "127.0.0.1:0", "--jwt-secret", SECRET, "--database-url", "memory"];
    let r = spawnSync(BIN, [...base, "--admin-ui"], { encoding: "utf8" });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /--admin-ui needs --admin-username and --admin-password-hash/);
    r = spawnSync(BIN, [...base, "--admin-ui", "--admin-username", "a", "--admin-password-hash", "plain"], {
      encoding: "utf8",
    });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /bcrypt/);
  });
});

describe("Admin UI modes", () => {
  it("--admin-ui-mode production: config without ALL_EVENTS, no all_sockets, no lifecycle events, stats", async () => {
    const server = await startServer(undefined, undefined, [...ADMIN_ARGS, "--admin-ui-mode", "production"]);
    const open = [];
    try {
      const a = io(`${server.url}/admin`, { auth: { username: "admin", password: PASSWORD }, reconnection: false });
      open.push(a);
      const noList = none(a, "all_sockets", 1500);
      const config = await next(a, "config");
      assert.ok(!config.supportedFeatures.includes("ALL_EVENTS"));
      assert.ok(config.supportedFeatures.includes("AGGREGATED_EVENTS"));
      assert.ok("serverId" in (await next(a, "server_stats", 3000)));
      const noEvent = none(a, "socket_connected", 1000);
      const bob = io(server.url, { auth: { token: token("bob") }, reconnection: false });
      open.push(bob);
      await next(bob, "connect");
      await noEvent;
      await noList;
    } finally {
      open.forEach((s) => s.close());
      await server.stop();
    }
  });

  it("dev mode (no JWT key) allows --admin-ui without credentials", async () => {
    const port = await freePort();
    const env = { ...process.env, RUST_LOG: "warn" };
    for (const k of ["SWITCHBOARD_JWT_SECRET", "SWITCHBOARD_JWT_PUBLIC_KEY", "SWITCHBOARD_LISTEN", "SWITCHBOARD_ADMIN_USERNAME", "SWITCHBOARD_ADMIN_PASSWORD_HASH"]) delete env[k];
    const child = (await import("node:child_process")).spawn(
      BIN,
      ["--listen", `127.0.0.1:${port}`, "--database-url", "memory", "--admin-ui"],
      { env, stdio: ["ignore", "ignore", "inherit"] },
    );
    try {
      const url = `http://127.0.0.1:${port}`;
      for (let i = 0; ; i++) {
        try {
          if ((await fetch(`${url}/healthz`)).ok) break;
        } catch {}
        assert.ok(i < 200, "dev server did not start");
        await new Promise((r) => setTimeout(r, 50));
      }
      const a = io(`${url}/admin`, { reconnection: false });
      const config = await next(a, "config");
      assert.ok(config.supportedFeatures.includes("ALL_EVENTS"));
      a.close();
    } finally {
      child.kill("SIGTERM");
    }
  });
});

// Two nodes through Redis (SWITCHBOARD_TEST_REDIS=host:port, as the emitter
// test): an admin on node 0 gets the server_stats of both nodes and the
// socket_connected of a socket on node 1.
const REDIS = process.env.SWITCHBOARD_TEST_REDIS;
describe("Admin UI on two nodes", { skip: REDIS ? false : process.env.CI ? false : "set SWITCHBOARD_TEST_REDIS (host:port)" }, () => {
  it("every node reports its stats; lifecycle events of every node reach the UI", async () => {
    assert.ok(REDIS, "CI=true, but SWITCHBOARD_TEST_REDIS is not set");
    const redisUrl = /^rediss?:\/\//.test(REDIS) ? REDIS : `redis://${REDIS}`;
    const extra = [...ADMIN_ARGS, "--redis-url", redisUrl, "--redis-prefix", `admin-test-${process.pid}-${Date.now()}`];
    const nodes = [await startServer(undefined, tempDb(), extra), await startServer(undefined, tempDb(), extra)];
    const open = [];
    try {
      const a = io(`${nodes[0].url}/admin`, { auth: { username: "admin", password: PASSWORD }, reconnection: false });
      open.push(a);
      await next(a, "config");
      const ids = new Set();
      const deadline = Date.now() + 8000;
      while (ids.size < 2 && Date.now() < deadline) ids.add((await next(a, "server_stats", 5000)).serverId);
      assert.equal(ids.size, 2, `server ids seen: ${[...ids]}`);

      const seen = new Promise((resolve) => a.once("socket_connected", (s) => resolve(s)));
      const bob = io(nodes[1].url, { auth: { token: token("bob") }, reconnection: false });
      open.push(bob);
      const [s] = await Promise.all([seen, next(bob, "connect")]);
      assert.equal(s.id, bob.id);
    } finally {
      open.forEach((s) => s.close());
      await Promise.all(nodes.map((n) => n.stop()));
    }
  });
});
