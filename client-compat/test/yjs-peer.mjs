// A Yjs editor in a process of its own (the yjs tests kill it), over
// y-socket.io, or y-websocket with "ws":
// node yjs-peer.mjs <url> <doc> <token> [ws]
import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";
import { WebsocketProvider } from "y-websocket";
import WebSocket from "ws";

const [url, doc, token, transport] = process.argv.slice(2);
const ydoc = new Y.Doc();
const p =
  transport === "ws"
    ? new WebsocketProvider(`${url.replace(/^http/, "ws")}/yjs`, doc, ydoc, { params: { token }, WebSocketPolyfill: WebSocket, disableBc: true })
    : new SocketIOProvider(url, doc, ydoc, { auth: { token }, disableBc: true });
p.awareness.setLocalStateField("user", "bob");
setInterval(() => {}, 1000);
