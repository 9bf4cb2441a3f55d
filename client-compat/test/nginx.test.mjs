// deploy/nginx/switchboard.conf in front of two Redis-backed nodes: a
// long-polling client and a websocket client chat through nginx, and with a
// client on the other node directly.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { io } from "socket.io-client";
import { startServer, freePort, token, next, tempDb } from "./server.mjs";

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
