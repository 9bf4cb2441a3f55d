// Yjs on two nodes: the cursors of a node that died are dropped by the
// other (35 s after their last renewal). A file of its own: it waits ~45 s.
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
import { PG, REDIS, CI, YJS, sleep, until, closeAll, editor, wsEditor, rawWs, wsUrl, varuint, awarenessBytes, raws, wsProviders, twoNodes } from "./yjs-helpers.mjs";

after(closeAll);

describe("yjs: a node that died", { skip: PG && REDIS ? false : CI ? false : "set SWITCHBOARD_TEST_POSTGRES_URL and SWITCHBOARD_TEST_REDIS (scripts/services.sh does)" }, () => {
  // Waits out the 35 s the server gives another node's cursors.
  it("the cursors of a node that died are dropped by the others (newcomers are not sent them)", { timeout: 150_000 }, async () => {
    // Node B keeps the document loaded with nobody on it (a long grace):
    // no client's own awareness timeout removes the dead node's cursor there.
    const nodes = await twoNodes("yjs_dead_node", ["--yjs-unload-grace-ms", "120000"]);
    try {
      const bob = await wsEditor(nodes[0].url, "wake", "bob");
      const carol = await editor(nodes[1].url, "wake", "carol");
      bob.p.awareness.setLocalStateField("user", "bob");
      const hasBob = (e) => [...e.p.awareness.getStates().values()].some((st) => st.user === "bob");
      assert.ok(await until(() => hasBob(carol)), "bob's cursor reaches node B");
      bob.p.shouldConnect = false; // the provider would keep dialling the dead node
      nodes[0].child.kill("SIGKILL");
      await new Promise((r) => nodes[0].child.once("exit", r));
      carol.p.destroy();
      // Past the providers' own 30 s timeout and the server's 35 s.
      await sleep(41_000);
      const dave = await editor(nodes[1].url, "wake", "dave");
      await sleep(500);
      assert.ok(!hasBob(dave), "a newcomer on node B is not sent the dead node's cursor");
    } finally {
      await nodes.stop();
    }
  });
});
