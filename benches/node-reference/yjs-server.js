// The reference for the `yjs` benchmark (benches/yjs/run.mjs): y-socket.io
// 1.1.3's own server, the `YSocketIO` class, on the official socket.io 4.8
// server, with the same HS256 JWT check as switchboard (a token in
// `auth.token`, verified once per connection). Documents live in memory
// (no `levelPersistenceDir`), as y-socket.io's default. Benchmarks only.
//
//   PORT=3200 JWT_SECRET=... node yjs-server.js
import { createServer } from "node:http";
import { Server } from "socket.io";
import { YSocketIO } from "y-socket.io/dist/server";
import jwt from "jsonwebtoken";

const PORT = Number(process.env.PORT || 3200);
const SECRET = process.env.JWT_SECRET || "bench-secret-bench-secret-bench-secret";

const http = createServer((req, res) => {
  // Readiness probe for the driver (switchboard's is /healthz too).
  res.writeHead(req.url === "/healthz" ? 200 : 404).end();
});
const io = new Server(http, { maxHttpBufferSize: 1e6, pingInterval: 25000, pingTimeout: 20000 });

const ysocketio = new YSocketIO(io, {
  authenticate: (handshake) => {
    const token = handshake.auth?.token;
    if (typeof token !== "string") return false;
    try {
      jwt.verify(token, SECRET, { algorithms: ["HS256"] });
      return true;
    } catch {
      return false;
    }
  },
});
ysocketio.initialize();

// With `node --expose-gc`, SIGUSR2 runs a full garbage collection: the
// benchmark's memory step reads RSS as it is and again after one, since V8
// holds on to garbage until it needs the room. It prints what V8 then holds.
if (typeof globalThis.gc === "function")
  process.on("SIGUSR2", () => {
    globalThis.gc();
    console.log(`memory ${JSON.stringify(process.memoryUsage())}`);
  });

http.listen(PORT, "127.0.0.1", () => console.log(`y-socket.io reference listening on http://127.0.0.1:${PORT}`));
