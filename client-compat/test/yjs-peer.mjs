// A y-socket.io editor in a process of its own (the yjs tests kill it):
// node yjs-peer.mjs <url> <doc> <token>
import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";

const [url, doc, token] = process.argv.slice(2);
const ydoc = new Y.Doc();
const p = new SocketIOProvider(url, doc, ydoc, { auth: { token }, disableBc: true });
p.awareness.setLocalStateField("user", "bob");
setInterval(() => {}, 1000);
