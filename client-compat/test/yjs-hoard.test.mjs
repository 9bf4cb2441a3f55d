// Yjs: one user opening 10,000 documents over one connection (y-socket.io
// multiplexes namespaces): bounded by --max-connections-per-user, with a
// clear refusal and bounded memory. A file of its own: it takes ~40 s.
import { describe, it, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";
import { io, Manager } from "socket.io-client";
import { startServer, token, tempDb, freePort, metric, freshPgDatabase } from "./server.mjs";
import { PG, REDIS, CI, YJS, sleep, until, closeAll, editor, wsEditor, rawWs, wsUrl, varuint, awarenessBytes, raws, wsProviders } from "./yjs-helpers.mjs";

after(closeAll);

describe("yjs: 10,000 documents by one user", () => {
  it("10,000 documents opened by one user: past --max-connections-per-user each is refused, memory stays bounded", async () => {
    const srv = await startServer(undefined, undefined, [...YJS, "--max-connections-per-user", "50"]);
    const rss = () => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${srv.child.pid}/status`, "utf8"))[1]) * 1024;
    try {
      const before = rss();
      const tok = token("hoarder");
      // One connection, 10,000 namespaces (y-socket.io multiplexes them).
      const mgr = new Manager(srv.url, { transports: ["websocket"], reconnection: false, forceNew: true });
      let connected = 0;
      const errors = new Map();
      const sockets = [];
      for (let i = 0; i < 10_000; i++) {
        const s = mgr.socket(`/yjs|hoard-${i}`, { auth: { token: tok } });
        s.on("connect", () => connected++);
        s.on("connect_error", (e) => errors.set(e.message, (errors.get(e.message) ?? 0) + 1));
        sockets.push(s);
        s.connect();
        if (i % 500 === 499) await sleep(20);
      }
      raws.push({ close: () => sockets.forEach((s) => s.disconnect()) });
      assert.ok(await until(() => connected + [...errors.values()].reduce((x, y) => x + y, 0) === 10_000, 60_000), `${connected} connected, ${JSON.stringify([...errors])}`);
      assert.equal(connected, 50);
      assert.deepEqual([...errors.keys()].length, 1, JSON.stringify([...errors]));
      assert.match([...errors.keys()][0], /too many connections/i);
      // y-websocket counts against the same cap: closed with 1013 (the
      // provider comes back later).
      const r = rawWs(srv.url, "hoard-ws", `?token=${tok}`);
      assert.equal((await r.closed).code, 1013);
      assert.equal(await metric(srv.url, "switchboard_yjs_documents"), 50);
      const grew = rss() - before;
      assert.ok(grew < 150 * 1024 * 1024, `RSS grew ${grew} bytes`);
      assert.ok((await fetch(`${srv.url}/healthz`)).ok, "the server is alive");
    } finally {
      closeAll();
      await srv.stop();
    }
  });
});
