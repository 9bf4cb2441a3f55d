// examples/echo.rs behaves as the Socket.IO protocol reference server.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { io } from "socket.io-client";
import { BIN, freePort, next } from "./server.mjs";

const ECHO = process.env.SWITCHBOARD_ECHO_BIN || path.join(path.dirname(BIN), "examples", "echo");

describe("examples/echo", () => {
  let child, url;
  before(async () => {
    const port = await freePort();
    child = spawn(ECHO, ["--port", String(port)], { stdio: ["ignore", "pipe", "inherit"] });
    await new Promise((resolve, reject) => {
      child.stdout.once("data", resolve);
      child.once("exit", (c) => reject(new Error(`echo exited ${c}`)));
    });
    url = `http://127.0.0.1:${port}`;
  });
  after(() => child.kill("SIGTERM"));

  for (const transports of [["polling"], ["websocket"], ["polling", "websocket"]]) {
    it(`echoes every argument, binary included (${transports.join("+")})`, async () => {
      const s = io(url, { auth: { hello: "world" }, transports });
      try {
        assert.deepEqual(await next(s, "auth"), { hello: "world" });
        const back = new Promise((resolve) => s.once("message-back", (...args) => resolve(args)));
        s.emit("message", 1, "two", { three: [3] }, Buffer.from([1, 2, 3]));
        const args = await back;
        assert.equal(args.length, 4);
        assert.deepEqual(args.slice(0, 3), [1, "two", { three: [3] }]);
        assert.deepEqual([...args[3]], [1, 2, 3]);
        const acked = await new Promise((resolve) =>
          s.emit("message-with-ack", "a", { nested: Buffer.from([9]) }, (...a) => resolve(a)),
        );
        assert.equal(acked[0], "a");
        assert.deepEqual([...acked[1].nested], [9]);
      } finally {
        s.close();
      }
    });
  }

  it("emits auth on /custom too", async () => {
    const s = io(`${url}/custom`, { auth: { t: 1 }, transports: ["websocket"] });
    try {
      assert.deepEqual(await next(s, "auth"), { t: 1 });
    } finally {
      s.close();
    }
  });
});
