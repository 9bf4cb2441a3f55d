// deploy/nginx/switchboard.conf in front of two Redis-backed nodes: a
// long-polling client and a websocket client chat through nginx, and with a
// client on the other node directly.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import { BIN, SECRET, startServer, freePort, token, next, tempDb } from "./server.mjs";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const NGINX = process.env.NGINX_BIN || "/usr/sbin/nginx";

describe("nginx in front of two nodes", () => {
  let nodes = [];
  let nginx, url;
  const sockets = [];
  const open = (u, opts) => {
    const s = io(u, { reconnection: false, ...opts });
    sockets.push(s);
    return s;
  };

  before(async () => {
    const prefix = `compat-nginx-${process.pid}-${Date.now()}`;
    const db = tempDb();
    for (let i = 0; i < 2; i++) {
      nodes.push(await startServer(undefined, db, ["--redis-url", `redis://${process.env.SWITCHBOARD_TEST_REDIS || "127.0.0.1:6379"}`, "--redis-prefix", prefix]));
    }
    const port = await freePort();
    const dir = mkdtempSync(path.join(tmpdir(), "switchboard-nginx-"));
    // The shipped snippet, with this test's ports.
    let snippet = readFileSync(path.join(root, "deploy", "nginx", "switchboard.conf"), "utf8");
    const servers = nodes.map((n) => `    server 127.0.0.1:${n.port};`).join("\n");
    snippet = snippet
      .replace(/(    server 127\.0\.0\.1:300\d;\n)+/, servers + "\n")
      .replace("listen 8080;", `listen 127.0.0.1:${port};`);
    assert.ok(snippet.includes(`server 127.0.0.1:${nodes[1].port};`), "upstream rewritten");
    writeFileSync(path.join(dir, "switchboard.conf"), snippet);
    // A minimal main configuration around it (test-only: runs in the foreground, files in dir).
    writeFileSync(
      path.join(dir, "nginx.conf"),
      `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  include ${dir}/switchboard.conf;
}
`,
    );
    nginx = spawn(NGINX, ["-p", dir, "-c", path.join(dir, "nginx.conf")], { stdio: ["ignore", "inherit", "inherit"] });
    url = `http://127.0.0.1:${port}`;
    const deadline = Date.now() + 10_000;
    for (;;) {
      try {
        if ((await fetch(`${url}/healthz`)).ok) break;
      } catch {}
      if (nginx.exitCode !== null) throw new Error(`nginx exited with ${nginx.exitCode}`);
      if (Date.now() > deadline) throw new Error("nginx did not start");
      await new Promise((r) => setTimeout(r, 50));
    }
  });

  after(async () => {
    sockets.forEach((s) => s.close());
    if (nginx && nginx.exitCode === null) {
      const exited = new Promise((r) => nginx.once("exit", r));
      nginx.kill("SIGQUIT");
      await exited;
    }
    await Promise.all(nodes.map((n) => n.stop()));
  });

  it("a polling client and a websocket client chat through nginx", async () => {
    const polling = open(url, { auth: { token: token("polly") }, transports: ["polling"] });
    const ws = open(url, { auth: { token: token("wes") }, transports: ["websocket"] });
    // And one straight on the second node: messages must cross nodes too.
    const direct = open(nodes[1].url, { auth: { token: token("dina") }, transports: ["websocket"] });
    await Promise.all([next(polling, "connect"), next(ws, "connect"), next(direct, "connect")]);
    assert.equal(polling.io.engine.transport.name, "polling");
    for (const s of [polling, ws, direct]) {
      assert.equal((await s.emitWithAck("room:join", "front")).success, true);
    }
    const members = await polling.emitWithAck("room:members", "front");
    assert.deepEqual(members.members.map((m) => m.userId), ["dina", "polly", "wes"]);

    const atWs = next(ws, "chat:message");
    const atDirect = next(direct, "chat:message");
    const sent = await polling.emitWithAck("chat:send", { roomId: "front", content: "via polling" });
    assert.equal(sent.success, true);
    assert.equal((await atWs).content, "via polling");
    assert.equal((await atDirect).content, "via polling");

    const atPolling = next(polling, "chat:message");
    await direct.emitWithAck("chat:send", { roomId: "front", content: "from node 2" });
    assert.equal((await atPolling).content, "from node 2");
  });

  it("a client whose node is killed reconnects through nginx to the other one", async () => {
    const c = open(url, { auth: { token: token("kim") }, transports: ["websocket"], reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 300 });
    await next(c, "connect");
    await c.emitWithAck("room:join", "front");
    // Which node holds it: the one whose local connection gauge counts it.
    const local = async (n) => {
      const text = await (await fetch(`${n.url}/metrics`)).text();
      const line = text.split("\n").find((l) => l.startsWith('switchboard_connections{namespace="/"}'));
      return Number(line?.split(" ").pop() ?? 0);
    };
    const counts = await Promise.all(nodes.map(local));
    const victim = counts[0] >= counts[1] ? 0 : 1;
    const disconnected = next(c, "disconnect");
    nodes[victim].child.kill("SIGKILL");
    await disconnected;
    await next(c, "connect", 15_000);
    const ack = await c.emitWithAck("room:join", "front");
    assert.equal(ack.success, true);
    const sent = await c.emitWithAck("chat:send", { roomId: "front", content: "still here" });
    assert.equal(sent.success, true);
    assert.ok((await local(nodes[1 - victim])) >= 1, "now on the surviving node");
  });
});

// docs/deployment.md's recipe for several nodes is scripts/cluster.sh, run
// here as a reader would (their Redis and PostgreSQL are this test's): it
// creates the database, starts three nodes and nginx, says when it is ready,
// and stops everything on SIGTERM.
const PG = process.env.SWITCHBOARD_TEST_POSTGRES_URL;
describe(
  "scripts/cluster.sh: the several-nodes recipe of docs/deployment.md",
  { skip: PG ? false : process.env.CI ? false : "set SWITCHBOARD_TEST_POSTGRES_URL (scripts/services.sh does)" },
  () => {
    it("creates the database, serves three nodes through nginx, and stops them all", async () => {
      assert.ok(PG, "CI=true, but SWITCHBOARD_TEST_POSTGRES_URL is not set");
      const ports = [await freePort(), await freePort(), await freePort()];
      const nginxPort = await freePort();
      const database = `cluster_recipe_${process.pid}_${Date.now()}`;
      const script = spawn("bash", [path.join(root, "scripts", "cluster.sh"), "--redis-prefix", `recipe-${process.pid}-${Date.now()}`], {
        env: {
          ...process.env,
          PORTS: ports.join(" "),
          NGINX_PORT: String(nginxPort),
          POSTGRES_URL: PG,
          DATABASE: database,
          REDIS_URL: `redis://${process.env.SWITCHBOARD_TEST_REDIS || "127.0.0.1:6379"}`,
          SWITCHBOARD_BIN: BIN,
          SWITCHBOARD_JWT_SECRET: SECRET,
          RUST_LOG: "warn",
        },
        stdio: ["ignore", "pipe", "inherit"],
      });
      const sockets = [];
      try {
        const ready = await new Promise((resolve, reject) => {
          let out = "";
          const timer = setTimeout(() => reject(new Error(`not ready in 60 s: ${out}`)), 60_000);
          script.stdout.on("data", (d) => {
            out += d;
            const m = /==> ready: (\S+)/.exec(out);
            if (m) {
              clearTimeout(timer);
              resolve(m[1]);
            }
          });
          script.once("exit", (code) => {
            clearTimeout(timer);
            reject(new Error(`cluster.sh exited with ${code}: ${out}`));
          });
        });
        assert.equal(ready, `http://127.0.0.1:${nginxPort}`);
        const open = (u, opts) => {
          const s = io(u, { reconnection: false, auth: { token: token(opts.sub) }, transports: opts.transports });
          sockets.push(s);
          return s;
        };
        const polling = open(ready, { sub: "polly", transports: ["polling"] });
        const direct = open(`http://127.0.0.1:${ports[2]}`, { sub: "dina", transports: ["websocket"] });
        await Promise.all([next(polling, "connect"), next(direct, "connect")]);
        for (const s of [polling, direct]) assert.equal((await s.emitWithAck("room:join", "recipe")).success, true);
        const heard = next(direct, "chat:message");
        assert.equal((await polling.emitWithAck("chat:send", { roomId: "recipe", content: "hello nodes" })).success, true);
        assert.equal((await heard).content, "hello nodes");
      } finally {
        sockets.forEach((s) => s.close());
        const exited = script.exitCode === null ? new Promise((r) => script.once("exit", (code, signal) => r(code ?? signal))) : script.exitCode;
        script.kill("SIGTERM");
        assert.equal(await exited, 0, "cluster.sh stops cleanly on SIGTERM");
        spawnSync("psql", [PG, "-qc", `DROP DATABASE IF EXISTS "${database}"`]);
      }
      for (const port of [...ports, nginxPort]) {
        await assert.rejects(fetch(`http://127.0.0.1:${port}/healthz`), `port ${port} is closed`);
      }
    });
  },
);
