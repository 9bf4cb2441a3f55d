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
import { BIN, SECRET, startServer, token, next, none, firstOf, freePort, tempDb } from "./server.mjs";

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
  // `from`: the local address the login comes from (the server limits
  // failed logins per address, so the refusal tests use addresses of their own).
  const admin = (auth, from) =>
    open(
      io(`${server.url}/admin`, {
        auth,
        reconnection: false,
        transports: ["websocket"],
        ...(from ? { forceNew: true, localAddress: from } : {}),
      }),
    );
  const chat = (sub, nsp = "") =>
    open(io(`${server.url}${nsp}`, { auth: { token: token(sub) }, reconnection: false, transports: ["websocket"] }));
  const login = async () => {
    const a = admin({ username: "admin", password: PASSWORD });
    const [session, config, all] = await Promise.all([next(a, "session"), next(a, "config"), next(a, "all_sockets")]);
    return { a, session, config, all };
  };

  before(async () => {
    server = await startServer(undefined, undefined, [...ADMIN_ARGS, "--connect-timeout-ms", "3000"]);
  });
  after(async () => {
    sockets.forEach((s) => s.close());
    await server.stop();
  });

  it("refuses a wrong password, a wrong user and no credentials", async () => {
    for (const auth of [{ username: "admin", password: "nope" }, { username: "root", password: PASSWORD }, {}]) {
      const err = await next(admin(auth, "127.0.1.1"), "connect_error");
      assert.equal(err.message, "invalid credentials");
    }
  });

  it("a flood of wrong passwords from one address: checked one at a time, the admin logs in from another during it", async () => {
    const { readFileSync } = await import("node:fs");
    const threads = () => Number(/Threads:\s+(\d+)/.exec(readFileSync(`/proc/${server.child.pid}/status`, "utf8"))[1]);
    const before = threads();
    let most = before;
    const watch = setInterval(() => (most = Math.max(most, threads())), 20);
    const flood = Array.from({ length: 120 }, () => {
      const g = admin({ username: "admin", password: "guess" }, "127.0.2.1");
      return firstOf(g, { connect_error: (e) => e.message, disconnect: (r) => `disconnected (${r})` }, 30000);
    });
    await new Promise((r) => setTimeout(r, 200));
    const t0 = Date.now();
    const real = admin({ username: "admin", password: PASSWORD }, "127.0.2.2");
    const logged = await firstOf(
      real,
      { session: () => "logged in", connect_error: (e) => e.message, disconnect: (r) => `disconnected (${r})` },
      9000,
    ).catch((e) => e.message);
    const loginMs = Date.now() - t0;
    console.log(`admin login during a 120-guess flood from another address: ${logged} after ${loginMs} ms`);
    const t1 = Date.now();
    assert.equal((await fetch(`${server.url}/healthz`)).status, 200);
    const healthMs = Date.now() - t1;
    const errors = await Promise.all(flood);
    clearInterval(watch);
    const count = (m) => errors.filter((e) => e.startsWith(m)).length;
    const checked = count("invalid credentials");
    console.log(
      `the 120 guesses: ${checked} checked, refused at once ${count("a login from your address")} ` +
        `(one at a time) and ${count("too many failed")} (backoff)`,
    );
    // Within --connect-timeout-ms (3 s here): before, it queued behind
    // every guess and was disconnected.
    assert.equal(logged, "logged in");
    assert.ok(loginMs < 2500, `the admin's login took ${loginMs} ms`);
    assert.ok(checked <= 10, `${checked} guesses were checked`);
    assert.equal(count("invalid credentials") + count("a login from your address") + count("too many failed"), 120, errors.join("; "));
    assert.ok(most - before <= 8, `threads grew from ${before} to ${most}`);
    assert.ok(healthMs < 1000, `healthz took ${healthMs} ms during the flood`);
  });

  it("failed logins from one address back off; other addresses are not held up", async () => {
    const from = "127.0.3.1";
    for (let i = 0; i < 5; i++) {
      assert.equal((await next(admin({ username: "admin", password: `guess${i}` }, from), "connect_error")).message, "invalid credentials");
    }
    const t0 = Date.now();
    const waited = await next(admin({ username: "admin", password: PASSWORD }, from), "connect_error");
    assert.match(waited.message, /^too many failed logins from your address: retry in 1 s$/);
    assert.ok(Date.now() - t0 < 1000, "refused without a password check");
    await next(admin({ username: "admin", password: PASSWORD }, "127.0.3.2"), "session");
    const metrics = await (await fetch(`${server.url}/metrics`)).text();
    assert.match(metrics, /switchboard_limit_hits_total\{limit="admin_login_backoff"\} [1-9]/);
  });

  it("a flood from many addresses is refused at once past the checks that may wait", async () => {
    const errors = await Promise.all(
      Array.from({ length: 30 }, (_, i) => {
        const g = admin({ username: "admin", password: "guess" }, `127.0.4.${i + 1}`);
        // a check that waited past --connect-timeout-ms on a loaded machine
        // ends in a disconnect
        return firstOf(g, { connect_error: (e) => e.message, disconnect: (r) => `disconnected (${r})` }, 20000);
      }),
    );
    // 2 running + --admin-login-waiting 8 (the default); the rest at once.
    const full = errors.filter((e) => e === "too many logins being checked: retry in a moment").length;
    assert.ok(full >= 15, errors.join("; "));
  });

  it("the answer takes as long for an unknown user name as for the right one", async () => {
    // One address per try, so that the backoff does not answer instead.
    const time = async (username, i) => {
      const t0 = process.hrtime.bigint();
      const err = await next(admin({ username, password: "wrong" }, `127.0.5.${i}`), "connect_error");
      assert.equal(err.message, "invalid credentials");
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    const known = [];
    const unknown = [];
    for (let i = 1; i <= 5; i++) {
      known.push(await time("admin", 2 * i));
      unknown.push(await time("root", 2 * i + 1));
    }
    // The fastest of each: a loaded machine only adds time.
    const [k, u] = [Math.min(...known), Math.min(...unknown)];
    console.log(`wrong password: known user ${k.toFixed(1)} ms, unknown user ${u.toFixed(1)} ms (fastest of 5)`);
    assert.ok(Math.max(k, u) / Math.min(k, u) < 2, `known ${k.toFixed(1)} ms, unknown ${u.toFixed(1)} ms`);
  });

  it("the JWT is not what opens /admin, and the admin password opens no chat namespace", async () => {
    const err = await next(admin({ token: token("alice") }, "127.0.1.2"), "connect_error");
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
    assert.equal((await next(admin({ sessionId: "0123456789abcdef" }, "127.0.1.3"), "connect_error")).message, "invalid credentials");
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

  it("no token, cookie, *-Authorization or query secret reaches the UI; the address is the peer's", async () => {
    const secrets = {
      query: token("mallory"),
      refresh: token("mallory", ["--ttl-secs", "7200"]),
      field: token("mallory", ["--ttl-secs", "7300"]),
      proxyAuth: "proxy-pass-0f9e8d7c",
      cookie: "cookie-secret-1a2b3c",
      apiKey: "api-key-secret-4d5e6f",
      accessToken: "access-token-secret-7a8b9c",
    };
    // Over polling first (headers on every request), then the upgrade.
    const user = () =>
      open(
        io(server.url, {
          forceNew: true,
          reconnection: false,
          query: { token: secrets.query, access_token: secrets.accessToken, room: "lobby" },
          extraHeaders: {
            "Proxy-Authorization": `Basic ${secrets.proxyAuth}`,
            Cookie: `sid=${secrets.cookie}`,
            "X-Api-Key": secrets.apiKey,
            "X-Forwarded-For": "203.0.113.66",
          },
        }),
      );
    const before = user();
    await next(before, "connect");
    const a = admin({ username: "admin", password: PASSWORD }, "127.0.6.1");
    const seen = [];
    a.onAny((event, ...args) => seen.push([event, args]));
    const all = await next(a, "all_sockets");
    const connected = new Promise((resolve) => a.on("socket_connected", (s) => s.data.userId === "mallory" && s.id !== before.id && resolve(s)));
    const after = user();
    await next(after, "connect");
    const listed = [all.find((s) => s.id === before.id), await connected];
    const refreshed = await after.timeout(5000).emitWithAck("auth:refresh", { token: secrets.refresh });
    assert.equal(refreshed.success, true, JSON.stringify(refreshed));
    const pinged = new Promise((resolve) =>
      a.on("event_received", (nsp, id, args) => id === after.id && args[0] === "ping" && resolve(args)),
    );
    await after.timeout(5000).emitWithAck("ping", { token: secrets.field, n: 1 });
    const [, pingArg] = await pinged;

    const everything = JSON.stringify(seen);
    const leaked = Object.entries(secrets).filter(([, v]) => everything.includes(v));
    const addresses = listed.map((s) => s?.handshake.address);
    console.log(
      `secrets in what the admin received: ${leaked.length ? leaked.map(([k]) => k).join(", ") : "none"}; ` +
        `addresses shown: ${addresses.join(", ")}`,
    );
    assert.deepEqual(leaked.map(([k]) => k), []);
    assert.deepEqual(pingArg, { token: "[redacted]", n: 1 });
    assert.ok(seen.some(([e, [, , args]]) => e === "event_received" && args[0] === "auth:refresh"), "auth:refresh is shown, redacted");
    for (const s of listed) {
      assert.ok(s, "the user socket is listed");
      assert.equal(s.handshake.address, "127.0.0.1", "not the forged X-Forwarded-For");
      assert.equal(s.handshake.headers["proxy-authorization"], "[redacted]");
      assert.equal(s.handshake.query.token, "[redacted]");
      assert.equal(s.handshake.query.room, "lobby");
      assert.match(s.handshake.url, /token=\[redacted\]/);
    }
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

describe("Admin UI behind a trusted proxy (--trusted-proxy 127.0.0.1)", () => {
  it("shows and limits logins by the forwarded address", async () => {
    const server = await startServer(undefined, undefined, [...ADMIN_ARGS, "--trusted-proxy", "127.0.0.1"]);
    const open = [];
    const via = (url, auth, client) => {
      const s = io(url, { auth, forceNew: true, reconnection: false, transports: ["websocket"], extraHeaders: { "X-Forwarded-For": client } });
      open.push(s);
      return s;
    };
    try {
      const user = via(server.url, { token: token("bob") }, "198.51.100.7");
      await next(user, "connect");
      const all = await next(via(`${server.url}/admin`, { username: "admin", password: PASSWORD }, "198.51.100.1"), "all_sockets");
      assert.equal(all.find((s) => s.id === user.id)?.handshake.address, "198.51.100.7");
      for (let i = 0; i < 5; i++) {
        await next(via(`${server.url}/admin`, { username: "admin", password: "guess" }, "198.51.100.66"), "connect_error");
      }
      const refused = await next(via(`${server.url}/admin`, { username: "admin", password: "guess" }, "198.51.100.66"), "connect_error");
      assert.match(refused.message, /too many failed logins/);
      // The proxy's other clients are not held up.
      await next(via(`${server.url}/admin`, { username: "admin", password: PASSWORD }, "198.51.100.2"), "session");
    } finally {
      open.forEach((s) => s.close());
      await server.stop();
    }
  });
});

describe("Admin UI and large events", () => {
  it("an admin watching costs no copy of large payloads: RSS bounded while a user sends 120 × 900 KB events", async () => {
    const { readFileSync } = await import("node:fs");
    const server = await startServer(undefined, undefined, ADMIN_ARGS);
    const rssMb = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${server.child.pid}/status`, "utf8"))[1]) / 1024;
    const open = [];
    try {
      const u = io(server.url, { auth: { token: token("bob") }, reconnection: false, transports: ["websocket"] });
      open.push(u);
      await next(u, "connect");
      const big = "x".repeat(900_000);
      const burst = (n) => Promise.all(Array.from({ length: n }, () => u.timeout(30000).emitWithAck("blob", big)));
      // What the events cost without an admin (the allocator keeps it).
      await burst(40);
      const a = io(`${server.url}/admin`, { auth: { username: "admin", password: PASSWORD }, reconnection: false, transports: ["websocket"] });
      open.push(a);
      await next(a, "all_sockets");
      let shown = 0;
      let largest = 0;
      a.on("event_received", (nsp, id, args) => {
        if (args[0] !== "blob") return;
        shown++;
        largest = Math.max(largest, JSON.stringify(args).length);
      });
      await new Promise((r) => setTimeout(r, 300));
      const base = rssMb();
      let peak = base;
      const watch = setInterval(() => (peak = Math.max(peak, rssMb())), 10);
      await burst(120);
      for (let i = 0; i < 100 && shown < 120; i++) await new Promise((r) => setTimeout(r, 100));
      clearInterval(watch);
      const growth = peak - base;
      console.log(
        `admin watching 120 × 900 KB events: RSS ${base.toFixed(1)} -> peak ${peak.toFixed(1)} MB (+${growth.toFixed(1)} MB), ` +
          `${shown} shown, largest ${largest} bytes`,
      );
      assert.ok(growth < 40, `RSS grew by ${growth.toFixed(1)} MB`);
      assert.ok(shown >= 120, `${shown} of the 120 events shown (as placeholders)`);
      assert.ok(largest < 20_000, `an event_received of ${largest} bytes`);
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const placeholders = Number(/switchboard_limit_hits_total\{limit="admin_event_bytes"\} (\d+)/.exec(metrics)?.[1] ?? 0);
      assert.ok(placeholders >= 120, `${placeholders} placeholders counted`);
    } finally {
      open.forEach((s) => s.close());
      await server.stop();
    }
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
