// The shared notes: a <textarea> bound to a Y.Text, kept in step with every
// other page by the y-socket.io provider on the server's /yjs|<doc> namespace
// (docs/protocol.md, "Yjs documents"). Plain DOM, like the chat.
import * as Y from "yjs";
import { SocketIOProvider } from "y-socket.io";

// Transactions made from the textarea carry this origin: the textarea
// already shows them, every other change is drawn into it.
const TEXTAREA = Symbol("textarea");

const $ = (id) => document.getElementById(id);

// Opens document `doc` for the signed-in user. token() gives the current
// token; call tokenChanged() when it changes and close() on sign-out.
export function openEditor({ server, doc, text = "text", token, name }) {
  const area = $("editor-text");
  const ydoc = new Y.Doc();
  const ytext = ydoc.getText(text);
  // Undo and redo are Yjs's, of this user's own edits only: the textarea's
  // own history would restore an old value, and with it undo the others' edits.
  const undo = new Y.UndoManager(ytext, { trackedOrigins: new Set([TEXTAREA]) });

  let sentToken = null; // the token of the latest handshake
  const provider = new SocketIOProvider(server, doc, ydoc, {
    // A function, read at each (re)connect, so that a retry sends the token
    // as refreshed since; the provider passes it to socket.io as it is.
    auth: (cb) => cb({ token: (sentToken = token()) }),
    // The server does the syncing: no shortcut between tabs of one browser,
    // which would also make two tabs agree with the server down.
    disableBc: true,
  });
  const socket = provider.socket;
  provider.awareness.setLocalStateField("user", { name });

  area.value = "";
  area.disabled = true; // until the first sync: the page does not know the text yet
  setState("connecting", "connecting…");

  // ---- the textarea into the Y.Text ---------------------------------------

  // One input event, one edit: what lies between the common prefix and the
  // common suffix of the old and new value is replaced.
  const onInput = () => {
    const before = ytext.toString();
    const after = area.value;
    let start = 0;
    while (start < before.length && start < after.length && before[start] === after[start]) start++;
    let end = 0; // common suffix length, not overlapping the prefix
    while (
      end < before.length - start && end < after.length - start &&
      before[before.length - 1 - end] === after[after.length - 1 - end]
    ) end++;
    // Never split an emoji or another surrogate pair: Yjs would store the halves as U+FFFD.
    if (start > 0 && isHigh(before.charCodeAt(start - 1))) start--;
    if (end > 0 && isLow(before.charCodeAt(before.length - end))) end--;
    ydoc.transact(() => {
      ytext.delete(start, before.length - end - start);
      ytext.insert(start, after.slice(start, after.length - end));
    }, TEXTAREA);
  };
  area.addEventListener("input", onInput);

  const onBeforeInput = (e) => {
    if (e.inputType !== "historyUndo" && e.inputType !== "historyRedo") return;
    e.preventDefault();
    if (e.inputType === "historyUndo") undo.undo();
    else undo.redo();
  };
  area.addEventListener("beforeinput", onBeforeInput);

  // ---- the Y.Text into the textarea ---------------------------------------

  // Someone else's edit (or an undo): the new text, and the caret and
  // selection moved by what was inserted or deleted before them.
  const onChange = (event, tr) => {
    if (tr.origin === TEXTAREA) return;
    const { selectionStart, selectionEnd, selectionDirection, scrollTop } = area;
    const focused = document.activeElement === area;
    area.value = ytext.toString();
    area.scrollTop = scrollTop;
    // Only when focused: on an unfocused textarea it is nobody's caret.
    if (focused) area.setSelectionRange(shift(selectionStart, event.delta), shift(selectionEnd, event.delta), selectionDirection);
  };
  ytext.observe(onChange);

  // ---- the connection -----------------------------------------------------

  // The provider calls itself synced once it has answered the server's sync
  // step 1; the server's answer to its own follows on the same socket.
  provider.on("sync", (synced) => {
    if (!synced) return;
    area.disabled = false; // and stays so: edits made offline are sent on reconnecting
    setState("synced", "synced");
  });
  socket.on("connect", () => setState("connected", "connected"));
  socket.on("disconnect", (reason) => {
    // The server ended the socket (token expired, message refused): socket.io
    // does not retry that by itself.
    if (reason === "io server disconnect") setState("disconnected", "disconnected by the server");
    else setState("reconnecting", "reconnecting…");
  });
  socket.on("connect_error", (err) => {
    if (socket.active) return setState("reconnecting", "reconnecting…"); // retried by itself
    // Refused (e.g. a token from before a restart, or a server without Yjs).
    // If the token changed while that handshake was under way, try the new one.
    if (sentToken !== token()) return provider.connect();
    setState("disconnected", `unavailable: ${err.message}`);
  });

  // Who else has the document open, from the provider's awareness.
  const onAwareness = () => {
    const names = new Set();
    for (const [id, state] of provider.awareness.getStates()) {
      if (id !== ydoc.clientID && state.user?.name) names.add(state.user.name);
    }
    $("editor-people").textContent = names.size ? `Also here: ${[...names].join(", ")}` : "";
  };
  provider.awareness.on("change", onAwareness);

  return {
    // A socket's token is read once, at its handshake, and the server ends
    // the socket when that token expires: a connected socket reconnects with
    // the new one, a refused one tries again.
    tokenChanged() {
      if (socket.connected) {
        if (sentToken !== token()) socket.disconnect().connect();
      } else if (!socket.active) {
        provider.connect();
      }
    },
    close() {
      area.removeEventListener("input", onInput);
      area.removeEventListener("beforeinput", onBeforeInput);
      provider.awareness.off("change", onAwareness);
      provider.destroy();
      // destroy() disconnects only a connected socket: one that is retrying
      // would go on retrying.
      socket.disconnect();
      undo.destroy();
      ydoc.destroy();
      area.value = "";
      area.disabled = true;
      $("editor-people").textContent = "";
      setState("disconnected", "offline");
    },
  };
}

const isHigh = (c) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c) => c >= 0xdc00 && c <= 0xdfff;

// Where position `index` of the old text is in the new one, after `delta`
// (retain / insert / delete, in order). Text inserted right at the index goes
// before it, as when the other person typed there first.
function shift(index, delta) {
  let pos = 0; // where the walk is, in the text as changed so far
  for (const op of delta) {
    if (op.retain) pos += op.retain;
    else if (op.insert) {
      if (pos <= index) index += op.insert.length;
      pos += op.insert.length;
    } else if (op.delete && pos < index) {
      index -= Math.min(op.delete, index - pos);
    }
  }
  return index;
}

function setState(className, label) {
  $("editor-state").textContent = label;
  $("editor-state").className = `state ${className}`;
}
